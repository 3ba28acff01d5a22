#!/usr/bin/env bash
# Set up the benchmarks on a fresh machine: the project in .venv, and ngIRCd
# (a C IRC server, measured alongside ours and the asyncio baseline) from
# Debian's packages. Run from anywhere; uses sudo when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]' --config-settings editable_mode=compat
if ! command -v ngircd >/dev/null 2>&1 && [ ! -x /usr/sbin/ngircd ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q ngircd
fi
echo "ready: .venv/bin/python -m bench --help"
