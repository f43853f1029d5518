#!/usr/bin/env bash
# Set up (venv, pinned packages, Debian chromium for the browser tests) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver fonts-dejavu-core >/dev/null
fi
if [ -z "${CTGEN_DATA_MIRROR:-}" ] && [ -d ../shared/data ]; then
  export CTGEN_DATA_MIRROR="$(cd ../shared/data && pwd)"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
