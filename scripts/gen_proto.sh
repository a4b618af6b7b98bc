#!/usr/bin/env bash
# Regenerates the Python code for proto/avatar/v1 (messages, type stubs, gRPC stubs) next to the .proto files.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-.venv/bin/python}"
out=proto
rm -f "$out"/avatar/v1/*_pb2*.py "$out"/avatar/v1/*_pb2*.pyi
"$py" -m grpc_tools.protoc -Iproto -Ithird_party/googleapis \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  proto/avatar/v1/*.proto
touch "$out"/avatar/__init__.py "$out"/avatar/v1/__init__.py
