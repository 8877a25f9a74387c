"""A tiny random-weight llama GGUF for fast tests against a real llama.cpp server.

The model is a 2-layer llama (n_embd 64) with a GPT-2 style byte-level BPE vocabulary:
256 byte tokens, a handful of merges and two control tokens (266 in all). Weights come
from a fixed RNG seed, so the same file bytes are written every time.

Only printable ASCII (and the newline) may ever be generated: hidden dimension 0 of every
token embedding is a large constant that survives the final RMS norm, and the output rows
of every other token (control tokens, the remaining bytes) carry a strongly negative
weight on that dimension. Their logits sit far below the rest, so under any sampler the
model never ends early on EOS and never emits a partial UTF-8 sequence (which the server
would merge into one event, making token counts drift).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_FF = 128
TRAIN_CTX = 4096
DEFAULT_SEED = 20240531

_MERGES: tuple[tuple[str, str], ...] = (
    ("Ġ", "t"),
    ("h", "e"),
    ("i", "n"),
    ("e", "r"),
    ("o", "n"),
    ("Ġ", "a"),
    ("r", "e"),
    ("Ġt", "he"),
)
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"
_BANNED_BIAS = -12.0


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    visible = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table: dict[int, str] = {b: chr(b) for b in visible}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _vocab() -> tuple[list[str], list[int], list[bool]]:
    """Token texts, token types and whether each token may be generated."""
    table = _byte_to_unicode()
    tokens: list[str] = []
    types: list[int] = []
    allowed: list[bool] = []
    for b in range(256):
        tokens.append(table[b])
        types.append(gguf.TokenType.NORMAL)
        allowed.append(0x20 <= b <= 0x7E or b == 0x0A)
    for left, right in _MERGES:
        tokens.append(left + right)
        types.append(gguf.TokenType.NORMAL)
        allowed.append(True)
    for special in (BOS_TOKEN, EOS_TOKEN):
        tokens.append(special)
        types.append(gguf.TokenType.CONTROL)
        allowed.append(False)
    return tokens, types, allowed


def write_tiny_gguf(path: Path, *, seed: int = DEFAULT_SEED) -> Path:
    """Write the tiny model to ``path`` (deterministic for a given seed) and return it."""
    rng = np.random.default_rng(seed)
    tokens, types, allowed = _vocab()
    n_vocab = len(tokens)

    def normal(*shape: int, std: float) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("orchestratord-tiny-random")
    writer.add_context_length(TRAIN_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([f"{left} {right}" for left, right in _MERGES])
    writer.add_bos_token_id(tokens.index(BOS_TOKEN))
    writer.add_eos_token_id(tokens.index(EOS_TOKEN))
    writer.add_add_bos_token(False)

    embeddings = normal(n_vocab, N_EMBD, std=0.02)
    embeddings[:, 0] = 1.0
    writer.add_tensor("token_embd.weight", embeddings)
    for layer in range(N_LAYER):
        prefix = f"blk.{layer}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{prefix}.{name}.weight", normal(N_EMBD, N_EMBD, std=0.02))
        writer.add_tensor(f"{prefix}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"{prefix}.ffn_gate.weight", normal(N_FF, N_EMBD, std=0.02))
        writer.add_tensor(f"{prefix}.ffn_up.weight", normal(N_FF, N_EMBD, std=0.02))
        writer.add_tensor(f"{prefix}.ffn_down.weight", normal(N_EMBD, N_FF, std=0.02))
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    output = normal(n_vocab, N_EMBD, std=0.5)
    output[:, 0] = np.where(np.array(allowed), 0.0, _BANNED_BIAS).astype(np.float32)
    writer.add_tensor("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
