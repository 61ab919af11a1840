#!/usr/bin/env bash
# Fails when gen/ (or go.mod/go.sum) differ from what scripts/generate.sh
# writes from proto/, so a stale gen/ never lands.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/generate.sh
if ! git diff --exit-code -- gen go.mod go.sum || [ -n "$(git status --porcelain -- gen)" ]; then
	echo "checkgenerate: gen/ is stale; run scripts/generate.sh and commit the result" >&2
	git status --porcelain -- gen >&2
	exit 1
fi
echo "checkgenerate: gen/ is up to date"
