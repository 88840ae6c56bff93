#!/usr/bin/env bash
# Set up (.venv with the dev, encoder and ray extras, CPU torch) and run the whole test suite.
set -euo pipefail
. "$(dirname "$0")/_venv.sh" "dev,encoder,ray,serve"
# The serve browser test drives Debian's Chromium (never a browser download): install it when
# missing and apt can, without failing the run where it cannot (the test then says it skipped).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "note: could not install chromium; the serve browser test will be skipped" >&2
fi
exec python -m pytest "$@"
