#!/usr/bin/env bash
# Runs the README walkthrough against a freshly started presenced on the
# README's addresses (127.0.0.1:9090 and :8080) and fails when any output
# differs from the README. Pass -update to write the real outputs into the
# README instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
bin=$(mktemp -d)
log=$(mktemp)
pid=
cleanup() {
	# The README starts clients in the background (presencectl watch,
	# grpcurl); a client still running would reconnect to the next
	# presenced on these ports, another run's. Stop this run's.
	for p in $(pgrep -x presencectl; pgrep -x grpcurl); do
		case "$(readlink "/proc/$p/exe" 2>/dev/null)" in "$bin"/*) kill "$p" 2>/dev/null || true ;; esac
	done
	if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
	rm -rf "$bin" "$log"
}
trap cleanup EXIT

go build -o "$bin/presenced" ./cmd/presenced
go build -o "$bin/presencectl" ./cmd/presencectl 2>/dev/null || true
go build -modfile=tools/go.mod -o "$bin/grpcurl" github.com/fullstorydev/grpcurl/cmd/grpcurl
export PATH="$bin:$PATH"

if curl -s -o /dev/null 127.0.0.1:8080/ 2>/dev/null; then
	echo "walkthrough: something already listens on 127.0.0.1:8080; stop it first (the README's outputs must come from a fresh presenced)" >&2
	exit 1
fi
"$bin/presenced" >"$log" 2>&1 &
pid=$!
for _ in $(seq 50); do
	if curl -sf 127.0.0.1:8080/healthz >/dev/null 2>&1; then break; fi
	sleep 0.1
done
if ! kill -0 "$pid" 2>/dev/null; then
	# Another process answers on the README's ports: the outputs would be its.
	echo "walkthrough: presenced exited (are 127.0.0.1:9090 or :8080 taken?):" >&2
	cat "$log" >&2
	exit 1
fi
if ! curl -sf 127.0.0.1:8080/healthz >/dev/null; then
	echo "walkthrough: presenced did not start:" >&2
	cat "$log" >&2
	exit 1
fi
status=0
go run ./scripts/readmecheck -presenced "$bin/presenced" "$@" README.md || status=$?
if [ "$status" -ne 0 ]; then
	echo "--- presenced log" >&2
	cat "$log" >&2
fi
exit "$status"
