#!/usr/bin/env bash
# Starts the demo: the FastAPI example app on http://127.0.0.1:8000 with a little generated
# traffic; its metrics are at http://127.0.0.1:8000/metrics. Installs what it needs in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[demo]'
exec .venv/bin/python -m example_apps.fastapi_app "$@"
