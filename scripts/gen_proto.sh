#!/usr/bin/env bash
# Regenerates the Python code for proto/avatar/v1 (messages, type stubs, gRPC stubs) next to the .proto files.
# `scripts/gen_proto.sh --check` regenerates into a temporary folder and fails if the committed code differs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-.venv/bin/python}"
generate() {
  "$py" -m grpc_tools.protoc -Iproto -Ithird_party/googleapis \
    --python_out="$1" --pyi_out="$1" --grpc_python_out="$1" proto/avatar/v1/*.proto
}
if [ "${1:-}" = "--check" ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  generate "$tmp"
  stale=0
  for f in "$tmp"/avatar/v1/*; do
    if ! cmp -s "$f" "proto/avatar/v1/$(basename "$f")"; then
      echo "stale generated code: proto/avatar/v1/$(basename "$f") (run scripts/gen_proto.sh)" >&2
      stale=1
    fi
  done
  for f in proto/avatar/v1/*_pb2*.py*; do
    [ -e "$tmp/avatar/v1/$(basename "$f")" ] || { echo "generated file without a .proto: $f" >&2; stale=1; }
  done
  exit $stale
fi
rm -f proto/avatar/v1/*_pb2*.py proto/avatar/v1/*_pb2*.pyi
generate proto
touch proto/avatar/__init__.py proto/avatar/v1/__init__.py
