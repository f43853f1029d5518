#!/usr/bin/env bash
# Set up, load the sample data (mirror) into the store if it is empty, and start the dashboard
# on the embedded default (mirror data + embedded model). Store: CTGEN_DB or data/ctgen.duckdb.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if ! .venv/bin/python -m core stats --json >/dev/null 2>&1 || \
   [ "$(.venv/bin/python -m core stats --json | tail -n1 | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["trials"])')" = "0" ]; then
  .venv/bin/python -m core sample-data
fi
exec .venv/bin/python -m streamlit run app.py "$@"
