#!/usr/bin/env bash
# Installs what the project needs on a fresh machine: Debian packages, a venv, Python packages.
# Idempotent and quiet when everything is already in place.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

need_apt=()
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
# the browser viewer (viewer/browser): Debian's Chromium, and npm for livekit-client
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if ((${#need_apt[@]})); then
  echo "bootstrap: installing Debian packages: ${need_apt[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv" >&2
  python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing Python packages (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[dev]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

lock=viewer/browser/package-lock.json
npm_stamp=viewer/browser/node_modules/.installed-$(sha256sum "$lock" | cut -c1-16)
if [ ! -f "$npm_stamp" ]; then
  echo "bootstrap: installing the browser viewer's npm packages" >&2
  (cd viewer/browser && npm ci --no-audit --no-fund --silent >/dev/null)
  rm -f viewer/browser/node_modules/.installed-*
  touch "$npm_stamp"
fi
