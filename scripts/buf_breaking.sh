#!/usr/bin/env bash
# `buf breaking` against the previous commit (needs git history; says so when it has none).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if ! git rev-parse --verify -q HEAD~1 >/dev/null; then
  echo "buf breaking: no previous commit in this clone; skipped"
  exit 0
fi
if ! git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then
  echo "buf breaking: the previous commit has no buf.yaml; skipped"
  exit 0
fi
.venv/bin/buf breaking --against ".git#ref=HEAD~1"
echo "buf breaking: no breaking change against HEAD~1"
