#!/usr/bin/env bash
# Runs the whole test suite. Installs what it needs: a virtualenv in .venv with the
# package and its test dependencies, and (as root, with apt) Debian's `prometheus`
# package for `promtool` and the real Prometheus server. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian's prometheus package (promtool, prometheus)..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "note: promtool/prometheus not found: install Debian's 'prometheus' package;" \
         "the tests that need them are skipped (and fail under CI=true)." >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
exec .venv/bin/python -m pytest "$@"
