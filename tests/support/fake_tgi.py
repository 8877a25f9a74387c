"""A fake Text Generation Inference server that speaks TGI v3.3.7's wire format (ORCH-3056).

TGI runs only from container images or a Rust + CUDA source build, neither of which this
machine has, so the TGI adapter is tested against this stand-in. It follows the router
of tag ``v3.3.7`` (commit ``dfb3fbe7``; ``router/src/server.rs``, ``router/src/lib.rs``,
``router/src/validation.rs``, ``router/src/infer/mod.rs``) and axum 0.7.9's SSE encoder:

- ``GET /health``: 200 with an empty body, or 503
  ``{"error":"unhealthy","error_type":"healthcheck"}`` while :attr:`FakeTgi.ready` is false.
- ``GET /info``: the ``Info`` object, fields in TGI's order; ``version`` is
  ``3.3.6-dev0``, what a v3.3.7 build reports (its workspace version was not bumped).
- ``POST /tokenize``: a JSON array of ``{"id","text","start","stop"}``.
- ``POST /chat_tokenize``: ``{"tokenize_response": [...], "templated_text": ...}`` with a
  ChatML template, or 422 ``template_error`` when the model has no template.
- ``GET /metrics``: Prometheus text with ``tgi_request_count``, ``tgi_queue_size`` and
  ``tgi_batch_current_size`` (gauges absent until first set, as in TGI).
- ``POST /generate_stream``: HTTP 200 ``text/event-stream`` with TGI's headers
  (``cache-control: no-cache``, ``x-compute-type``, ``x-compute-characters``,
  ``x-accel-buffering: no``); one ``data: {json}\\n\\n`` frame per token, serialised as
  serde does (compact, non-ASCII unescaped; logprobs are multiples of 1/16 so that
  Python and Rust print them alike), ``index`` from 1, the last frame with
  ``generated_text`` and ``details``; ``:\\n\\n`` keep-alives every
  :attr:`FakeTgi.keep_alive_s`; failures as an in-band ``{"error","error_type"}`` frame
  after which the stream ends, validated in TGI's order with TGI's messages (best_of and
  decoder_input_details, the concurrency limit → ``overloaded``, then the parameters and
  token budgets). A body the JSON extractor refuses gets axum's plain-text 415/400/422.

Generation is a deterministic pseudo-model: the token texts come from a small vocabulary
(with a non-ASCII word and characters JSON must escape) drawn by a PRNG keyed on the
prompt, the sampling parameters and, when sampling, the seed: same request, same output;
another seed, another output; greedy decoding ignores the seed and reports ``seed: null``,
as TGI does. Stop sequences end the generation as TGI's ``StoppingCriteria`` does, with the
stop text kept in the output. Prompts are split into tokens at word starts.

What a generation does beyond that is its :class:`Behaviour`, read when the request
arrives: end with the EOS token after some tokens, or after ``after`` tokens send an error
frame, stall (sending only keep-alives) until the client leaves, write raw bytes, or drop
the connection. :class:`FakeTgiStats` counts requests, concurrency and disconnects, so a
test can tell that a client really closed an upstream request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from tests.support.background_app import serving

Mode = Literal["normal", "error", "stall", "raw", "drop"]

VERSION = "3.3.6-dev0"
GIT_SHA = "dfb3fbe78e0d1d69251bd33065591c61bafdfaa8"
EOS_TEXT = "<|im_end|>"
EOS_ID = 2
#: Words the pseudo-model generates (token ids are their index plus :data:`FIRST_ID`).
VOCAB = (
    " the",
    " a",
    " quick",
    " brown",
    " fox",
    " jumps",
    " over",
    " lazy",
    " dog",
    " and",
    " then",
    " café",
    ",",
    ".",
    "\n",
    ' "quoted"',
    " back\\slash",
    " tab\t",
    " once",
    " upon",
    " time",
)
FIRST_ID = 100
_WORDS = re.compile(r"\s*\S+|\s+")
_STREAM_HEADERS = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    "x-compute-type": "gpu+optimized",
    "x-accel-buffering": "no",
}


@dataclass(frozen=True)
class Behaviour:
    """What the next generations do (see the module doc).

    ``eos_after``: end with the EOS token after that many word tokens (finish
    ``eos_token``). ``mode`` other than normal takes effect after ``after`` tokens:
    ``error`` sends ``{"error": error_message, "error_type": error_type}``; ``stall`` sends
    nothing but keep-alives; ``raw`` writes ``raw`` and ends the response; ``drop``
    aborts the connection.
    """

    mode: Mode = "normal"
    after: int = 0
    error_type: str = "generation"
    error_message: str = "Request failed during generation: CUDA out of memory"
    raw: bytes = b""
    eos_after: int | None = None
    token_delay_s: float = 0.0


@dataclass
class FakeTgiStats:
    """What the server saw. ``disconnected``: generations whose client went away."""

    requests: int = 0
    finished: int = 0
    failed: int = 0
    disconnected: int = 0
    active: int = 0
    peak_active: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)


def dumps(payload: object) -> bytes:
    """JSON as serde_json writes it: compact, non-ASCII characters unescaped."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def sse_frame(payload: object) -> bytes:
    """One event as axum 0.7.9's ``Event::json_data`` encodes it."""
    return b"data: " + dumps(payload) + b"\n\n"


def tokenize(text: str) -> list[dict[str, Any]]:
    """The fake tokenizer: one token per word with its leading whitespace."""
    tokens = []
    for match in _WORDS.finditer(text):
        start = len(text[: match.start()].encode())
        stop = start + len(match.group().encode())
        digest = hashlib.sha256(match.group().encode()).digest()
        tokens.append(
            {
                "id": 1000 + int.from_bytes(digest[:2]),
                "text": match.group(),
                "start": start,
                "stop": stop,
            }
        )
    return tokens


class _Invalid(Exception):
    """A request TGI's validation refuses; the message is TGI's."""


class _Rejected(Exception):
    """A body axum's JSON extractor refuses: status and plain-text body."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


_FLOAT_PARAMS = ("temperature", "repetition_penalty", "frequency_penalty", "top_p", "typical_p")
#: The Rust integer type of each integer parameter, and its range.
_INT_TYPES = {
    "best_of": "usize",
    "top_k": "i32",
    "max_new_tokens": "u32",
    "truncate": "usize",
    "seed": "u64",
    "top_n_tokens": "u32",
}
_BOUNDS = {
    "usize": (0, 2**64 - 1),
    "u64": (0, 2**64 - 1),
    "i32": (-(2**31), 2**31 - 1),
    "u32": (0, 2**32 - 1),
}
_INT_RANGES = {name: _BOUNDS[kind] for name, kind in _INT_TYPES.items()}
_BOOL_PARAMS = ("do_sample", "return_full_text", "watermark", "details", "decoder_input_details")


def _deserialize(body: bytes, content_type: str) -> dict[str, Any]:
    """The GenerateRequest axum would extract, or :class:`_Rejected` as axum answers."""
    if content_type != "application/json":
        raise _Rejected(415, "Expected request with `Content-Type: application/json`")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise _Rejected(400, f"Failed to parse the request body as JSON: {exc}") from None

    def wrong(path: str, what: str) -> _Rejected:
        return _Rejected(
            422,
            f"Failed to deserialize the JSON body into the target type: {path}: invalid type, "
            f"expected {what}",
        )

    if not isinstance(payload, dict):
        raise wrong("", "struct GenerateRequest")
    if not isinstance(payload.get("inputs"), str):
        raise wrong("inputs", "a string")
    params = payload.get("parameters", {"do_sample": True})
    if not isinstance(params, dict):
        raise wrong("parameters", "struct GenerateParameters")
    for name in _FLOAT_PARAMS:
        value = params.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise wrong(f"parameters.{name}", "f32")
    for name in _INT_TYPES:
        value = params.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise wrong(f"parameters.{name}", "an integer")
        low, high = _INT_RANGES[name]
        if isinstance(value, int) and not low <= value <= high:
            raise _Rejected(
                422,
                "Failed to deserialize the JSON body into the target type: "
                f"parameters.{name}: invalid value: integer `{value}`, expected {_INT_TYPES[name]}",
            )
    for name in _BOOL_PARAMS:
        if name in params and not isinstance(params[name], bool):
            raise wrong(f"parameters.{name}", "a boolean")
    stop = params.get("stop", [])
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise wrong("parameters.stop", "a sequence of strings")
    return payload


@dataclass
class FakeTgi:
    """A fake TGI server; use :func:`fake_tgi` to run one."""

    model_id: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model_sha: str | None = "12fd25f77366fa6b3b4b768ec3050bf629380bac"
    version: str = VERSION
    sha: str | None = GIT_SHA
    max_concurrent_requests: int = 128
    max_stop_sequences: int = 4
    max_input_tokens: int = 4095
    max_total_tokens: int = 4096
    chat_template: bool = True
    ready: bool = True
    keep_alive_s: float = 15.0
    behaviour: Behaviour = field(default_factory=Behaviour)
    stats: FakeTgiStats = field(default_factory=FakeTgiStats)
    port: int = 0
    _queue_gauges: bool = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/info", self._info)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_post("/chat_tokenize", self._chat_tokenize)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/generate_stream", self._generate_stream)
        return app

    def info(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "model_sha": self.model_sha,
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": self.max_concurrent_requests,
            "max_best_of": 2,
            "max_stop_sequences": self.max_stop_sequences,
            "max_input_tokens": self.max_input_tokens,
            "max_total_tokens": self.max_total_tokens,
            "validation_workers": 2,
            "max_client_batch_size": 4,
            "router": "text-generation-router",
            "version": self.version,
            "sha": self.sha,
            "docker_label": None,
        }

    @staticmethod
    def _json(payload: object, status: int = 200) -> web.Response:
        return web.Response(body=dumps(payload), status=status, content_type="application/json")

    @staticmethod
    def _error(message: str, error_type: str, status: int) -> web.Response:
        return FakeTgi._json({"error": message, "error_type": error_type}, status)

    async def _health(self, _request: web.Request) -> web.Response:
        if not self.ready:
            return self._error("unhealthy", "healthcheck", 503)
        return web.Response(status=200)

    async def _info(self, _request: web.Request) -> web.Response:
        return self._json(self.info())

    async def _tokenize(self, request: web.Request) -> web.Response:
        try:
            body = _deserialize(await request.read(), request.content_type)
        except _Rejected as exc:
            return web.Response(status=exc.status, text=exc.text)
        return self._json(tokenize(body["inputs"]))

    async def _chat_tokenize(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        messages = body.get("messages")
        if not isinstance(messages, list):
            return web.Response(
                status=422,
                text="Failed to deserialize the JSON body into the target type: missing field "
                "`messages`",
            )
        if not self.chat_template:
            return self._error("Template error: template not found", "template_error", 422)
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        text += "<|im_start|>assistant\n"
        return self._json({"tokenize_response": tokenize(text), "templated_text": text})

    async def _metrics(self, _request: web.Request) -> web.Response:
        lines = [
            "# HELP tgi_request_count Total number of requests",
            "# TYPE tgi_request_count counter",
            f"tgi_request_count {self.stats.requests}",
            "",
        ]
        if self._queue_gauges:
            lines += [
                "# HELP tgi_batch_current_size Current batch size",
                "# TYPE tgi_batch_current_size gauge",
                f"tgi_batch_current_size {self.stats.active}",
                "",
                "# HELP tgi_queue_size Current queue size",
                "# TYPE tgi_queue_size gauge",
                "tgi_queue_size 0",
                "",
            ]
        return web.Response(text="\n".join(lines), content_type="text/plain")

    def _validate(self, body: dict[str, Any]) -> tuple[int, int]:
        """TGI's ``validate`` and ``validate_input``: (input length, new tokens)."""
        params: dict[str, Any] = body.get("parameters", {"do_sample": True})
        temperature = params.get("temperature")
        if temperature is not None and temperature <= 0.0:
            raise _Invalid("`temperature` must be strictly positive")
        penalty = params.get("repetition_penalty")
        if penalty is not None and penalty <= 0.0:
            raise _Invalid("`repetition_penalty` must be strictly positive")
        frequency = params.get("frequency_penalty")
        if frequency is not None and not -2.0 <= frequency <= 2.0:
            raise _Invalid("`frequency_penalty` must be >= -2.0 and <= 2.0")
        for name in ("top_p", "typical_p"):
            value = params.get(name)
            if value is not None and not 0.0 < value < 1.0:
                raise _Invalid(f"`{name}` must be > 0.0 and < 1.0")
        top_k = params.get("top_k")
        if top_k is not None and top_k <= 0:
            raise _Invalid("`top_k` must be strictly positive")
        if params.get("max_new_tokens") == 0:
            raise _Invalid("`max_new_tokens` must be strictly positive")
        stop = params.get("stop", [])
        if len(stop) > self.max_stop_sequences:
            raise _Invalid(
                f"`stop` supports up to {self.max_stop_sequences} stop sequences. "
                f"Given: {len(stop)}"
            )
        if not body["inputs"]:
            raise _Invalid("`inputs` cannot be empty")
        input_length = len(tokenize(body["inputs"]))
        wanted = params.get("max_new_tokens")
        new_tokens = wanted if wanted is not None else self.max_total_tokens - input_length
        if input_length + new_tokens > self.max_total_tokens:
            raise _Invalid(
                f"`inputs` tokens + `max_new_tokens` must be <= {self.max_total_tokens}. "
                f"Given: {input_length} `inputs` tokens and {new_tokens} `max_new_tokens`"
            )
        if input_length > self.max_input_tokens:
            raise _Invalid(
                f"`inputs` must have less than {self.max_input_tokens} tokens. "
                f"Given: {input_length}"
            )
        return input_length, new_tokens

    async def _generate_stream(self, request: web.Request) -> web.StreamResponse:
        try:
            body = _deserialize(await request.read(), request.content_type)
        except _Rejected as exc:
            return web.Response(status=exc.status, text=exc.text)
        behaviour = self.behaviour
        self.stats.requests += 1
        self.stats.bodies.append(body)
        headers = {**_STREAM_HEADERS, "x-compute-characters": str(len(body["inputs"]))}
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        params = body.get("parameters", {"do_sample": True})
        if params.get("best_of", 1) != 1:
            return await self._fail(
                response,
                "Input validation error: `best_of` != 1 is not supported when streaming tokens",
                "validation",
            )
        if params.get("decoder_input_details", False):
            return await self._fail(
                response,
                "Input validation error: `decoder_input_details` == true is not "
                "supported when streaming tokens",
                "validation",
            )
        if self.stats.active >= self.max_concurrent_requests:
            return await self._fail(response, "Model is overloaded", "overloaded")
        try:
            input_length, new_tokens = self._validate(body)
        except _Invalid as exc:
            return await self._fail(response, f"Input validation error: {exc}", "validation")
        self.stats.active += 1
        self.stats.peak_active = max(self.stats.peak_active, self.stats.active)
        self._queue_gauges = True
        try:
            await self._generate(request, response, behaviour, body, input_length, new_tokens)
        except ConnectionError:
            self.stats.disconnected += 1
        except asyncio.CancelledError:
            self.stats.disconnected += 1
            raise
        finally:
            self.stats.active -= 1
        return response

    async def _fail(
        self, response: web.StreamResponse, message: str, kind: str
    ) -> web.StreamResponse:
        self.stats.failed += 1
        await response.write(sse_frame({"error": message, "error_type": kind}))
        await response.write_eof()
        return response

    async def _generate(
        self,
        request: web.Request,
        response: web.StreamResponse,
        behaviour: Behaviour,
        body: dict[str, Any],
        input_length: int,
        new_tokens: int,
    ) -> None:
        params: dict[str, Any] = body.get("parameters", {"do_sample": True})
        sampling = bool(params.get("do_sample")) or any(
            params.get(name) is not None for name in ("temperature", "top_k", "top_p", "typical_p")
        )
        seed = params.get("seed")
        if seed is None:
            seed = random.getrandbits(64)
        knobs = [params.get(n) for n in (*_FLOAT_PARAMS, "top_k")]
        key = f"{body['inputs']}\0{seed if sampling else 'greedy'}\0{knobs}"
        rng = random.Random(hashlib.sha256(key.encode()).digest())
        stops: list[str] = params.get("stop", [])
        output = ""
        for index in range(1, new_tokens + 1):
            if behaviour.mode != "normal" and index - 1 == behaviour.after:
                await self._misbehave(request, response, behaviour)
                return
            if behaviour.token_delay_s:
                await asyncio.sleep(behaviour.token_delay_s)
            logprob = -rng.randrange(1, 64) / 16
            eos = behaviour.eos_after is not None and index - 1 == behaviour.eos_after
            if eos:
                token = {"id": EOS_ID, "text": EOS_TEXT, "logprob": logprob, "special": True}
            else:
                word = rng.randrange(len(VOCAB))
                token = {
                    "id": FIRST_ID + word,
                    "text": VOCAB[word],
                    "logprob": logprob,
                    "special": False,
                }
                output += VOCAB[word]
            # TGI's StoppingCriteria order: length, then EOS, then stop sequences.
            reason: str | None = None
            if index == new_tokens:
                reason = "length"
            elif eos:
                reason = "eos_token"
            elif any(output.endswith(stop) for stop in stops):
                reason = "stop_sequence"
            frame: dict[str, Any] = {
                "index": index,
                "token": token,
                "generated_text": None,
                "details": None,
            }
            if reason is not None:
                frame["generated_text"] = output
                frame["details"] = {
                    "finish_reason": reason,
                    "generated_tokens": index,
                    "seed": seed if sampling else None,
                    "input_length": input_length,
                }
            await response.write(sse_frame(frame))
            if reason is not None:
                break
        await response.write_eof()
        self.stats.finished += 1

    async def _misbehave(
        self, request: web.Request, response: web.StreamResponse, behaviour: Behaviour
    ) -> None:
        transport = request.transport
        if behaviour.mode == "error":
            await self._fail(response, behaviour.error_message, behaviour.error_type)
        elif behaviour.mode == "raw":
            await response.write(behaviour.raw)
            await response.write_eof()
        elif behaviour.mode == "drop" and transport is not None:
            transport.abort()
        elif behaviour.mode == "stall":
            waited = 0.0
            while transport is not None and not transport.is_closing():
                await asyncio.sleep(0.02)
                waited += 0.02
                if waited >= self.keep_alive_s:
                    waited = 0.0
                    await response.write(b":\n\n")
            raise ConnectionResetError("the client went away during a stall")


@contextmanager
def fake_tgi(**settings: Any) -> Iterator[FakeTgi]:
    """Run a :class:`FakeTgi` on a loopback port in a background thread."""
    engine = FakeTgi(**settings)
    with serving(engine.app(), "fake-tgi") as port:
        engine.port = port
        yield engine
