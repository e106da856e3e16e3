#!/usr/bin/env bash
# Runs the benchmark suite in a venv of its own (.venv-bench), apart from the test env, so
# peer packages never disturb it. Installs what it needs: the pinned requirements and (as
# root, with apt) wrk for the end-to-end part. Arguments go to `python -m benchmarks`,
# e.g. `bash benchmarks/run.sh --quick`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
  else
    echo "note: wrk not found; the e2e section reports itself as not run." >&2
  fi
fi

if [ ! -x .venv-bench/bin/python ]; then
  python3 -m venv .venv-bench
fi
.venv-bench/bin/python -m pip install -q --upgrade pip
.venv-bench/bin/python -m pip install -q -r benchmarks/requirements.txt
exec .venv-bench/bin/python -m benchmarks "$@"
