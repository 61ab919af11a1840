#!/usr/bin/env bash
# Fetches google/api/annotations.proto and google/api/http.proto into
# third_party/googleapis (git-ignored). They come from the Go module
# github.com/grpc-ecosystem/grpc-gateway v1.16.0, which carries them under
# third_party/googleapis; the Go module proxy serves it and go.sum's checksum
# database verifies it, so no step needs the buf.build registry or GitHub.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
mod=github.com/grpc-ecosystem/grpc-gateway@v1.16.0
dir=$(cd tools && go mod download -json "$mod" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$dir" ] || [ ! -f "$dir/third_party/googleapis/google/api/annotations.proto" ]; then
	echo "fetch-googleapis: could not download $mod" >&2
	exit 1
fi
mkdir -p third_party/googleapis/google/api
for f in annotations.proto http.proto; do
	install -m 0644 "$dir/third_party/googleapis/google/api/$f" "third_party/googleapis/google/api/$f"
done
