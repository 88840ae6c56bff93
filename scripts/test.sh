#!/usr/bin/env bash
# Set up (.venv with the dev and encoder extras, CPU torch) and run the whole test suite.
set -euo pipefail
. "$(dirname "$0")/_venv.sh" "dev,encoder"
exec python -m pytest "$@"
