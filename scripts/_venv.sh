# Sourced by demo.sh and test.sh: make (or reuse) .venv and install the project into it.
# Usage: . scripts/_venv.sh EXTRAS   (EXTRAS like "" or "dev,encoder")
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "tessera-search needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
stamp=".venv/.installed-${1:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VPY" -m pip install -q --upgrade pip >/dev/null
  if [[ "${1:-}" == *encoder* ]]; then
    # The CPU build of torch first: it satisfies the encoder extra, so pip never pulls a
    # multi-GB CUDA build on a CPU machine.
    "$VPY" -m pip install -q "torch==2.13.0"
  fi
  "$VPY" -m pip install -q -e ".${1:+[$1]}"
  touch "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
