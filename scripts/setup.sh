#!/usr/bin/env bash
# Create .venv and install the pinned requirements (add "dev" for the test tools).
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] >= (3, 11), "Python 3.11+ is needed"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
req=requirements.txt
[ "${1:-}" = "dev" ] && req=requirements-dev.txt
stamp=.venv/.installed-$(cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)-${1:-app}
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip wheel
  # llama-cpp-python builds from source (several minutes on 2 cores, cached by pip afterwards).
  .venv/bin/python -m pip install -q -r "$req"
  touch "$stamp"
fi
# The data mirror: CTGEN_DATA_MIRROR, else ../shared/data where it exists (core/config.py).
if [ -z "${CTGEN_DATA_MIRROR:-}" ] && [ ! -d ../shared/data ]; then
  echo "note: no data mirror (set CTGEN_DATA_MIRROR); data will be downloaded from upstream" >&2
fi
