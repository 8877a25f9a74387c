"""The tiny test model: written fast, byte-for-byte reproducible, byte-level vocabulary
with only printable ASCII generable (so test engines never stop early, ORCH-3054)."""

from __future__ import annotations

import time
from pathlib import Path

import gguf
import numpy as np

from tests.support.tiny_gguf import N_EMBD, write_tiny_gguf


def test_written_quickly_and_reproducibly(tmp_path: Path) -> None:
    began = time.monotonic()
    first = write_tiny_gguf(tmp_path / "a.gguf")
    elapsed = time.monotonic() - began
    second = write_tiny_gguf(tmp_path / "b.gguf")
    other_seed = write_tiny_gguf(tmp_path / "c.gguf", seed=1)
    assert elapsed < 1.0
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other_seed.read_bytes()


def test_vocabulary_and_banned_output_rows(tmp_path: Path) -> None:
    reader = gguf.GGUFReader(write_tiny_gguf(tmp_path / "tiny.gguf"))
    tokens = reader.fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) == 266
    output = next(t for t in reader.tensors if t.name == "output.weight")
    weights = np.asarray(output.data).reshape(266, N_EMBD)
    generable = (weights[:, 0] == 0.0).tolist()
    printable = [0x20 <= byte <= 0x7E or byte == 0x0A for byte in range(256)]
    # Bytes first (only printable ASCII and the newline generable), then the 8 merges,
    # then the two control tokens, which are never generated.
    assert generable == [*printable, *[True] * 8, False, False]
