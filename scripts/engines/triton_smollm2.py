"""SmolLM2 behind a real Triton Inference Server, as a decoupled streaming model (ORCH-3057).

Run by the Python of the Triton venv that ``scripts/engines/install-triton.sh`` makes
(nvidia-pytriton 0.7.0 bundles Triton Inference Server 2.51.0 and runs it on the CPU):

    .engines/triton/venv/bin/python scripts/engines/triton_smollm2.py --model M.gguf \\
        --http-port 8000 --grpc-port 8001 --metrics-port 8002

Triton listens on 127.0.0.1 only and serves two models:

``smollm2`` (``--model-name``), decoupled: one request streams one response per
generated token. Inputs, all shape ``[1]`` unless said otherwise: ``text_input`` (BYTES,
the prompt), ``max_tokens`` (INT64), ``seed`` (INT64, optional, 0 .. 2^32-2; absent means
a random seed), the sampler parameters ``temperature``, ``top_p``, ``min_p``,
``typical_p``, ``repetition_penalty``, ``presence_penalty``, ``frequency_penalty`` (FP64)
and ``top_k``, ``repeat_last_n`` (INT64), and ``stop`` (BYTES, shape ``[-1]``, optional).
Outputs: every response has ``text_output`` (BYTES, the token's text, possibly empty); the
last one adds ``finish_reason`` (``stop`` | ``length``), ``tokens_in`` and ``tokens_out``
(the engine's own counts) and ``seed``. Over ``generate_stream`` each response is one
``data: {...}`` event; a failure is a ``data: {"error": "..."}`` event. The model config
publishes ``parameters.ctx_limit`` (tokens one request may use) and ``parameters.slots``
(concurrent generations, llama.cpp's ``n_parallel``). The model has one instance: its
infer function is an async generator, so that instance runs every request at once (a
second instance would not add capacity, and pytriton 0.7.0 starts several instances of
one model racily: the second may look for the first one's handshake socket too early).

``smollm2_tokenize``: ``text_input`` → ``tokens_in`` (INT64), the prompt's token count.

Why llama.cpp in-process: xllamacpp (a prebuilt llama.cpp wheel) offers
``Server.handle_completions(body, callback)``, llama.cpp's own completion handler called
directly, with the callback getting each streamed chunk and able to stop the generation
by returning True. The infer function runs it in a worker thread and relays the chunks,
so the sampling is exactly llama.cpp's (every sampler pinned, seeded, deterministic), the
model is the real SmolLM2 GGUF, and no second server process is needed. The embedded
llama.cpp HTTP listener (which xllamacpp always starts) binds an ephemeral loopback port
and serves only the token counts of ``smollm2_tokenize``.

Access: pytriton's defaults stay: the model repository, shared-memory, statistics, trace
and logging APIs need a token only this process knows (so nobody unloads the models).

Cancel: closing a ``generate_stream`` response makes Triton cancel the request, but
pytriton 0.7.0 does not tell the infer function, so the generation runs on to its end
(at most ``max_tokens``) and only then frees its slot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import threading
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xllamacpp
from pytriton.model_config import ModelConfig, Tensor
from pytriton.proxy.types import Request
from pytriton.triton import Triton, TritonConfig

#: llama.cpp's "pick a random seed" value; valid seeds are below it.
RANDOM_SEED = 0xFFFFFFFF
#: The samplers, in order, a request's profile drives; llama.cpp's others are switched off.
SAMPLER_ORDER = ("penalties", "top_k", "typ_p", "top_p", "min_p", "temperature")
FLOAT_SAMPLERS = (
    "temperature",
    "top_p",
    "min_p",
    "typical_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
)
INT_SAMPLERS = ("top_k", "repeat_last_n")
#: llama.cpp's names for the inputs whose names differ.
LLAMA_NAMES = {"repetition_penalty": "repeat_penalty"}

Chunk = Mapping[str, Any]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="triton_smollm2", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the SmolLM2 GGUF file")
    parser.add_argument("--model-name", default="smollm2")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--slots", type=int, default=2, help="concurrent generations")
    parser.add_argument("--ctx", type=int, default=2048, help="context tokens per slot")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if not args.model.is_file():
        parser.error(f"no model file at {args.model}")
    if args.slots < 1 or args.ctx < 16:
        parser.error("--slots must be at least 1 and --ctx at least 16")
    return args


def start_llama(args: argparse.Namespace) -> xllamacpp.Server:
    """llama.cpp on the GGUF, ``slots`` sequences of ``ctx`` tokens each."""
    params = xllamacpp.CommonParams()
    params.model.path = str(args.model)
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.n_ctx = args.ctx * args.slots
    params.n_parallel = args.slots
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.cache_ram_mib = 0
    params.ui = False
    return xllamacpp.Server(params)


class InvalidRequest(ValueError):
    """The request cannot be served as asked; its message goes back to the client."""


def _scalar(request: Request, name: str) -> Any:
    value = request[name]
    if value.size != 1:
        raise InvalidRequest(f"input {name!r} must hold one value, not {value.size}")
    return value.reshape(-1)[0]


def _text(value: Any, name: str) -> str:
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(f"input {name!r} is not UTF-8") from None


def completion_body(request: Request) -> dict[str, Any]:
    """The llama.cpp completion request for one Triton request, every sampler pinned."""
    max_tokens = int(_scalar(request, "max_tokens"))
    if max_tokens < 1:
        raise InvalidRequest(f"max_tokens must be at least 1, not {max_tokens}")
    body: dict[str, Any] = {
        "prompt": _text(_scalar(request, "text_input"), "text_input"),
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "cache_prompt": False,
        "samplers": list(SAMPLER_ORDER),
        "dynatemp_range": 0.0,
        "dynatemp_exponent": 1.0,
        "top_n_sigma": -1.0,
        "xtc_probability": 0.0,
        "dry_multiplier": 0.0,
        "mirostat": 0,
        "ignore_eos": False,
        "n_probs": 0,
        "min_keep": 0,
        "n_keep": 0,
    }
    for name in FLOAT_SAMPLERS:
        body[LLAMA_NAMES.get(name, name)] = float(_scalar(request, name))
    for name in INT_SAMPLERS:
        body[LLAMA_NAMES.get(name, name)] = int(_scalar(request, name))
    stop = request.data.get("stop")
    body["stop"] = [] if stop is None else [_text(word, "stop") for word in stop.reshape(-1)]
    if any(not word for word in body["stop"]):
        raise InvalidRequest("stop strings must not be empty")
    seed = request.data.get("seed")
    if seed is not None:
        value = int(_scalar(request, "seed"))
        if not 0 <= value < RANDOM_SEED:
            raise InvalidRequest(f"seed must be in 0..{RANDOM_SEED - 1}, not {value}")
        body["seed"] = value
    return body


def _error_message(chunk: Chunk) -> str | None:
    error = chunk.get("error")
    if error is None:
        return None
    if isinstance(error, Mapping):
        return str(error.get("message") or error)
    return str(error)


class Generation:
    """One llama.cpp completion running in a worker thread, its chunks relayed to a loop."""

    def __init__(self, llama: xllamacpp.Server, body: dict[str, Any]) -> None:
        self._llama = llama
        self._body = body
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Chunk | None] = asyncio.Queue()
        self._stop = threading.Event()

    def _on_chunk(self, chunk: Chunk) -> bool:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, chunk)
        return self._stop.is_set()

    def _run(self) -> None:
        try:
            self._llama.handle_completions(self._body, self._on_chunk)
        except Exception as exc:  # relayed to the client as this request's error
            self._on_chunk({"error": f"llama.cpp failed: {exc}"})
        finally:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, None)

    async def chunks(self) -> AsyncIterator[Chunk]:
        """llama.cpp's chunks until it is done; leaving early stops the generation."""
        worker = threading.Thread(target=self._run, name="llama-completion", daemon=True)
        worker.start()
        try:
            while (chunk := await self._queue.get()) is not None:
                yield chunk
        finally:
            self._stop.set()


def _bytes(text: str) -> np.ndarray:
    return np.array([text.encode("utf-8")], dtype=np.bytes_)


def _int(value: int) -> np.ndarray:
    return np.array([value], dtype=np.int64)


def final_outputs(chunk: Chunk, seed: int | None) -> dict[str, np.ndarray]:
    """The outputs only the last response carries, from llama.cpp's final chunk."""
    usage = chunk.get("usage")
    if not isinstance(usage, Mapping):
        raise RuntimeError(f"llama.cpp's final chunk has no usage: {chunk!r}")
    return {
        "finish_reason": _bytes(str(chunk["choices"][0]["finish_reason"])),
        "tokens_in": _int(int(usage["prompt_tokens"])),
        "tokens_out": _int(int(usage["completion_tokens"])),
        "seed": _int(RANDOM_SEED if seed is None else seed),
    }


def make_generate(
    llama: xllamacpp.Server,
) -> Callable[[list[Request]], AsyncIterator[list[dict[str, np.ndarray]]]]:
    """The decoupled infer function: one response per token, the counts on the last."""

    async def generate(requests: list[Request]) -> AsyncIterator[list[dict[str, np.ndarray]]]:
        if len(requests) != 1:
            raise InvalidRequest(f"one request at a time, not {len(requests)}")
        body = completion_body(requests[0])
        finish: Chunk | None = None
        async for chunk in Generation(llama, body).chunks():
            message = _error_message(chunk)
            if message is not None:
                raise InvalidRequest(message)
            choices = chunk.get("choices") or [{}]
            text = choices[0].get("text") or ""
            if choices[0].get("finish_reason") is not None:
                finish = chunk
            elif "usage" in chunk and finish is not None:
                finish = {**finish, "usage": chunk["usage"]}
            if text:
                yield [{"text_output": _bytes(text)}]
        if finish is None:
            raise RuntimeError("llama.cpp ended the completion without a finish reason")
        yield [{"text_output": _bytes(""), **final_outputs(finish, body.get("seed"))}]

    return generate


def make_tokenize(llama: xllamacpp.Server) -> Callable[[list[Request]], list[dict[str, Any]]]:
    """Prompt token counts from llama.cpp's own tokenizer (its ``/tokenize`` route)."""
    url = llama.listening_address.rstrip("/") + "/tokenize"

    def tokenize(requests: list[Request]) -> list[dict[str, Any]]:
        results = []
        for request in requests:
            text = _text(_scalar(request, "text_input"), "text_input")
            body = json.dumps({"content": text, "add_special": True}).encode()
            post = urllib.request.Request(url, body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(post, timeout=30) as answer:
                tokens = json.load(answer)["tokens"]
            results.append({"tokens_in": _int(len(tokens))})
        return results

    return tokenize


def publish_parameters(triton: Triton, model_name: str, parameters: Mapping[str, str]) -> None:
    """Add ``parameters`` to a bound model's Triton config (``config.parameters``).

    pytriton 0.7.0 has no public way to set model config parameters; its model keeps the
    config it will load in ``_get_triton_model_config()``, whose ``backend_parameters``
    become the config's ``parameters``. Call after ``bind`` and before serving.
    """
    for model in triton._model_manager.models:
        if model.model_name == model_name:
            model._get_triton_model_config().backend_parameters.update(parameters)
            return
    raise LookupError(f"no bound model {model_name!r}")


def serve(args: argparse.Namespace, workspace: Path) -> None:
    llama = start_llama(args)
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_address="127.0.0.1",
        metrics_port=args.metrics_port,
        allow_cpu_metrics=False,
        exit_timeout_secs=5,
    )
    sampler_inputs = [Tensor(name=n, dtype=np.float64, shape=(1,)) for n in FLOAT_SAMPLERS] + [
        Tensor(name=n, dtype=np.int64, shape=(1,)) for n in INT_SAMPLERS
    ]
    triton = Triton(config=config, workspace=workspace)
    # Bound (and so loaded) first: once the text model is ready, its tokenizer is too.
    triton.bind(
        model_name=f"{args.model_name}_tokenize",
        infer_func=make_tokenize(llama),
        inputs=[Tensor(name="text_input", dtype=np.bytes_, shape=(1,))],
        outputs=[Tensor(name="tokens_in", dtype=np.int64, shape=(1,))],
        config=ModelConfig(batching=False),
    )
    triton.bind(
        model_name=args.model_name,
        infer_func=make_generate(llama),
        inputs=[
            Tensor(name="text_input", dtype=np.bytes_, shape=(1,)),
            Tensor(name="max_tokens", dtype=np.int64, shape=(1,)),
            Tensor(name="seed", dtype=np.int64, shape=(1,), optional=True),
            Tensor(name="stop", dtype=np.bytes_, shape=(-1,), optional=True),
            *sampler_inputs,
        ],
        outputs=[
            Tensor(name="text_output", dtype=np.bytes_, shape=(1,)),
            Tensor(name="finish_reason", dtype=np.bytes_, shape=(1,)),
            Tensor(name="tokens_in", dtype=np.int64, shape=(1,)),
            Tensor(name="tokens_out", dtype=np.int64, shape=(1,)),
            Tensor(name="seed", dtype=np.int64, shape=(1,)),
        ],
        config=ModelConfig(batching=False, decoupled=True),
    )
    publish_parameters(
        triton, args.model_name, {"ctx_limit": str(args.ctx), "slots": str(args.slots)}
    )
    # serve() stops Triton (and its children) on KeyboardInterrupt; SIGTERM means the same.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        triton.serve()
    finally:
        triton.stop()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="triton-smollm2-") as workspace:
        serve(args, Path(workspace) / "pytriton")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
