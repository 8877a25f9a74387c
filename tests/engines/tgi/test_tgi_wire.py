"""The TGI adapter against a fake TGI v3.3.7 server (ORCH-3056, ORCH-3058, ORCH-3032).

TGI cannot run on this machine (container images only), so these tests drive
:class:`TgiAdapter` against :mod:`tests.support.fake_tgi`, which reproduces the routes and
bytes of TGI v3.3.7's router: properties and identity, health, slots from the metrics,
token counts, templates, the streamed text and counts, seeds, special tokens, stop
strings, in-band error frames, refused bodies, cancel, malformed frames, and the sampler
profile values TGI cannot honour.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from orchestratord_server.adapters.base import (
    SAMPLER_PROFILE_V1,
    AdapterSettings,
    CompletionRequest,
    EngineError,
    EngineProps,
    FinalChunk,
    SlotUsage,
    StreamChunk,
    TokenChunk,
)
from orchestratord_server.adapters.digest import sha256_path
from orchestratord_server.adapters.http import HttpTimeouts
from orchestratord_server.adapters.registry import make_adapter
from orchestratord_server.adapters.sse import SseEvent
from orchestratord_server.adapters.tgi import (
    SEED_RANGE,
    StopTrimmer,
    TgiAdapter,
    busy_from_metrics,
    engine_seed,
    generate_body,
    parse_frame,
    sampling_parameters,
)
from tests.support.fake_tgi import EOS_TEXT, GIT_SHA, VERSION, Behaviour, FakeTgi, Mode, fake_tgi

#: Profile v1 without min-p, the one v1 value TGI has no counterpart for.
TGI_PROFILE = dataclasses.replace(SAMPLER_PROFILE_V1, version="tgi-test", min_p=0.0)
GREEDY = dataclasses.replace(TGI_PROFILE, temperature=0.0)
T = TypeVar("T")
FAST = HttpTimeouts(connect_s=2.0, request_s=5.0, health_s=1.0, stream_read_s=5.0)


def request(prompt: str = "Once upon a time", **fields: Any) -> CompletionRequest:
    settings: dict[str, Any] = {"max_tokens": 8, "seed": 7, "sampler": TGI_PROFILE}
    settings.update(fields)
    return CompletionRequest(prompt=prompt, **settings)


async def chunks_of(adapter: TgiAdapter, req: CompletionRequest) -> list[StreamChunk]:
    return [chunk async for chunk in adapter.stream(req)]


async def collect(adapter: TgiAdapter, req: CompletionRequest) -> tuple[str, FinalChunk]:
    """The stream's text and final chunk; checks the chunk order on the way."""
    *tokens, final = await chunks_of(adapter, req)
    assert isinstance(final, FinalChunk)
    assert all(isinstance(c, TokenChunk) and c.text for c in tokens)
    return "".join(c.text for c in tokens if isinstance(c, TokenChunk)), final


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeTgi]:
    with fake_tgi(max_total_tokens=2048, max_input_tokens=2000) as server:
        yield server


@pytest.fixture
def tgi(engine: FakeTgi) -> Iterator[FakeTgi]:
    """The shared fake, reset to a well-behaved engine after each test."""
    yield engine
    engine.behaviour = Behaviour()
    engine.ready = True
    engine.chat_template = True
    engine.keep_alive_s = 15.0


def run(
    tgi: FakeTgi,
    scenario: Callable[[TgiAdapter], Awaitable[T]],
    timeouts: HttpTimeouts = FAST,
    **settings: Any,
) -> T:
    """Run ``scenario`` with a fresh adapter of the fake, closed afterwards."""

    async def main() -> T:
        adapter = TgiAdapter(AdapterSettings(base_url=tgi.base_url, **settings), timeouts)
        try:
            return await scenario(adapter)
        finally:
            await adapter.close()

    return asyncio.run(main())


# -- identity, health, slots, tokens, templates (ORCH-3056, ORCH-3032) ------------------


def test_props_report_the_engine_version_context_and_model(tgi: FakeTgi) -> None:
    """ORCH-3032: the version and build commit of /info; ctx is max_total_tokens."""
    props = run(tgi, TgiAdapter.props)
    assert props.engine == "tgi"
    assert props.engine_version == f"{VERSION}+{GIT_SHA}"
    assert props.ctx_limit == tgi.max_total_tokens
    assert props.slots_total == tgi.max_concurrent_requests
    assert props.model_name == tgi.model_id
    assert (props.model_path, props.model_digest) == (None, None)


def test_props_without_a_build_commit_report_the_bare_version(tgi: FakeTgi) -> None:
    tgi.sha = None
    try:
        assert run(tgi, TgiAdapter.props).engine_version == VERSION
    finally:
        tgi.sha = GIT_SHA


def test_settings_override_version_and_slots_and_give_the_digest(
    tgi: FakeTgi, tmp_path: Path
) -> None:
    """ORCH-3032: the digest is of the local model, file or directory, not model_sha."""
    model_file = tmp_path / "model.safetensors"
    model_file.write_bytes(b"weights")
    (tmp_path / "config.json").write_text("{}")

    async def scenario(adapter: TgiAdapter) -> tuple[EngineProps, SlotUsage]:
        return await adapter.props(), await adapter.slots()

    for path in (model_file, tmp_path):
        props, slots = run(tgi, scenario, model_path=path, engine_version="tgi-custom", slots=4)
        assert props.engine_version == "tgi-custom"
        assert props.slots_total == slots.total == 4
        assert props.model_path == str(path)
        assert props.model_digest == sha256_path(path)
    assert sha256_path(model_file) == "sha256:" + hashlib.sha256(b"weights").hexdigest()


def test_the_registry_builds_the_tgi_adapter(tgi: FakeTgi) -> None:
    async def scenario() -> int:
        adapter = make_adapter("tgi", AdapterSettings(base_url=tgi.base_url, slots=2))
        try:
            assert isinstance(adapter, TgiAdapter)
            return (await adapter.props()).slots_total
        finally:
            await adapter.close()

    assert asyncio.run(scenario()) == 2


def test_health_follows_the_engine(tgi: FakeTgi) -> None:
    assert run(tgi, TgiAdapter.health).ready
    tgi.ready = False
    health = run(tgi, TgiAdapter.health)
    assert health.live and not health.ready
    assert "unhealthy" in health.detail
    tgi.port, port = 9, tgi.port
    try:
        assert not run(tgi, TgiAdapter.health).live
    finally:
        tgi.port = port


def test_slots_count_the_requests_in_flight(tgi: FakeTgi) -> None:
    """ORCH-3019: busy slots come from tgi_queue_size + tgi_batch_current_size."""
    tgi.behaviour = Behaviour(mode="stall", after=1)

    async def scenario(adapter: TgiAdapter) -> tuple[SlotUsage, SlotUsage]:
        stream = adapter.stream(request())
        assert isinstance(await anext(stream), TokenChunk)
        during = await adapter.slots()
        await stream.aclose()
        await wait_for(lambda: tgi.stats.active == 0, "the fake to see the disconnect")
        return during, await adapter.slots()

    during, after = run(tgi, scenario)
    assert (during.total, during.busy) == (tgi.max_concurrent_requests, 1)
    assert after.busy == 0


def test_busy_is_read_from_the_gauges_only() -> None:
    text = (
        "# TYPE tgi_queue_size gauge\ntgi_queue_size 2\n"
        'tgi_batch_current_size{shard="0"} 3\ntgi_request_count 40\n'
    )
    assert busy_from_metrics(text) == 5
    assert busy_from_metrics("tgi_request_count 1\n") == 0
    with pytest.raises(EngineError) as caught:
        busy_from_metrics("tgi_queue_size many\n")
    assert caught.value.kind == "ENGINE_ERROR"


def test_token_counts_agree_with_the_generation(tgi: FakeTgi) -> None:
    """ORCH-3015: /tokenize counts what the generation reports as input_length."""
    prompt = "The quick brown fox jumps"

    async def scenario(adapter: TgiAdapter) -> tuple[int, FinalChunk]:
        return await adapter.count_tokens(prompt), (await collect(adapter, request(prompt)))[1]

    counted, final = run(tgi, scenario)
    assert counted == final.tokens_in == 5


def test_chat_template_renders_or_is_absent(tgi: FakeTgi) -> None:
    messages = [{"role": "user", "content": "Hello"}]

    async def scenario(adapter: TgiAdapter) -> str | None:
        return await adapter.apply_template(messages)

    assert run(tgi, scenario) == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    tgi.chat_template = False
    assert run(tgi, scenario) is None


# -- streams (ORCH-3056, ORCH-3058) ------------------------------------------------------


def stream_of(tgi: FakeTgi, req: CompletionRequest) -> tuple[str, FinalChunk]:
    return run(tgi, lambda adapter: collect(adapter, req))


def test_a_stream_gives_the_text_and_the_engines_counts(tgi: FakeTgi) -> None:
    text, final = stream_of(tgi, request(max_tokens=12))
    assert text
    assert final == FinalChunk(finish_reason="length", tokens_in=4, tokens_out=12, seed=7)
    sent = tgi.stats.bodies[-1]
    assert sent["inputs"] == "Once upon a time"
    assert sent["parameters"]["details"] is True
    assert sent["parameters"]["decoder_input_details"] is False


def test_same_seed_same_text_other_seed_other_text(tgi: FakeTgi) -> None:
    """ORCH-3045: a seed selects one token stream; seeds map into TGI's u64 range."""
    first, _ = stream_of(tgi, request(seed=11, max_tokens=16))
    again, _ = stream_of(tgi, request(seed=11, max_tokens=16))
    wrapped, final = stream_of(tgi, request(seed=11 + SEED_RANGE, max_tokens=16))
    other, _ = stream_of(tgi, request(seed=12, max_tokens=16))
    assert first == again == wrapped
    assert final.seed == 11
    assert other != first
    assert engine_seed(-1) == SEED_RANGE - 1


def test_greedy_decoding_ignores_the_seed(tgi: FakeTgi) -> None:
    one, final = stream_of(tgi, request(seed=1, sampler=GREEDY))
    two, _ = stream_of(tgi, request(seed=2, sampler=GREEDY))
    assert one == two
    assert final.seed is None
    assert tgi.stats.bodies[-1]["parameters"]["do_sample"] is False
    assert "temperature" not in tgi.stats.bodies[-1]["parameters"]


def test_special_tokens_are_dropped(tgi: FakeTgi) -> None:
    """ORCH-3058: the EOS token of an eos_token finish is not text."""
    tgi.behaviour = Behaviour(eos_after=3)
    chunks = run(tgi, lambda adapter: chunks_of(adapter, request()))
    texts = [c.text for c in chunks if isinstance(c, TokenChunk)]
    assert len(texts) == 3
    assert all(EOS_TEXT not in text for text in texts)
    assert chunks[-1] == FinalChunk(finish_reason="stop", tokens_in=4, tokens_out=4, seed=7)


def test_stop_strings_end_the_text_without_appearing_in_it(tgi: FakeTgi) -> None:
    """TGI keeps the stop sequence in its output; the adapter cuts it off (ORCH-3058)."""
    reference = run(tgi, lambda adapter: chunks_of(adapter, request(max_tokens=20, seed=3)))
    words = [c.text for c in reference if isinstance(c, TokenChunk)]
    full = "".join(words)
    # A stop string from the end of the second token through the third (TGI matches a
    # stop sequence at the end of the output, so it must end where a token ends).
    end = sum(len(word) for word in words[:3])
    stop = full[len(words[0]) + len(words[1]) - 1 : end]
    text, final = stream_of(tgi, request(max_tokens=20, seed=3, stop=(stop,)))
    assert text == full[: full.index(stop)]
    assert final.finish_reason == "stop"
    assert tgi.stats.bodies[-1]["parameters"]["stop"] == [stop]


def test_the_trimmer_releases_a_held_prefix_that_was_not_a_stop() -> None:
    trimmer = StopTrimmer(["END", "xyz"])
    assert trimmer.push("abcE") == "abc"
    assert trimmer.push("N") == ""
    assert trimmer.push("!") == "EN!"
    assert trimmer.push("x") == ""
    assert trimmer.finish(stopped_on_sequence=False) == "x"
    assert trimmer.push("done EN") == "done "
    assert trimmer.push("D") == ""
    assert trimmer.finish(stopped_on_sequence=True) == ""
    assert StopTrimmer([]).push("E") == "E"


# -- failures ---------------------------------------------------------------------------


def failure_of(tgi: FakeTgi, req: CompletionRequest, timeouts: HttpTimeouts = FAST) -> EngineError:
    """The EngineError a stream of ``req`` ends with."""
    with pytest.raises(EngineError) as caught:
        run(tgi, lambda adapter: collect(adapter, req), timeouts)
    return caught.value


def test_an_error_frame_mid_stream_is_the_mapped_error(tgi: FakeTgi) -> None:
    """A generation error after 3 tokens: the tokens, then WORKER_RESET (HTTP 424)."""
    tgi.behaviour = Behaviour(mode="error", after=3)
    seen: list[StreamChunk] = []

    async def scenario(adapter: TgiAdapter) -> None:
        async for chunk in adapter.stream(request()):
            seen.append(chunk)

    with pytest.raises(EngineError) as caught:
        run(tgi, scenario)
    assert len(seen) == 3
    assert (caught.value.kind, caught.value.status) == ("WORKER_RESET", 424)
    assert "CUDA out of memory" in caught.value.message


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [
        ("validation", "INVALID_PARAMS"),
        ("overloaded", "ENGINE_ERROR"),
        ("incomplete_generation_stream", "WORKER_RESET"),
        ("something_new", "ENGINE_ERROR"),
    ],
)
def test_error_types_map_to_error_kinds(tgi: FakeTgi, error_type: str, kind: str) -> None:
    tgi.behaviour = Behaviour(mode="error", after=0, error_type=error_type)
    assert failure_of(tgi, request()).kind == kind


def test_requests_tgi_refuses_are_invalid_params(tgi: FakeTgi) -> None:
    """TGI refuses in-band (HTTP 200, a validation frame) and, for a body its JSON
    extractor rejects, with HTTP 422; both are INVALID_PARAMS."""
    long_prompt = failure_of(tgi, request("word " * 2001, max_tokens=4))
    assert long_prompt.kind == "INVALID_PARAMS"
    assert "`inputs` must have less than 2000 tokens" in long_prompt.message
    over_budget = failure_of(tgi, request(max_tokens=2047))
    assert over_budget.kind == "INVALID_PARAMS"
    assert "`max_new_tokens` must be <= 2048" in over_budget.message
    rejected = failure_of(tgi, request(max_tokens=2**32))
    assert (rejected.kind, rejected.status) == ("INVALID_PARAMS", 422)
    assert "expected u32" in rejected.message


def test_cancel_closes_the_engines_request(tgi: FakeTgi) -> None:
    """ORCH-3017: closing the stream is seen by the engine as a client going away."""
    tgi.behaviour = Behaviour(mode="stall", after=2)
    before = tgi.stats.disconnected

    async def scenario(adapter: TgiAdapter) -> None:
        stream = adapter.stream(request())
        assert isinstance(await anext(stream), TokenChunk)
        assert isinstance(await anext(stream), TokenChunk)
        await stream.aclose()
        await wait_for(
            lambda: tgi.stats.disconnected == before + 1, "the fake to see the disconnect"
        )

    run(tgi, scenario)
    assert tgi.stats.active == 0


def test_keep_alives_hold_a_stalled_stream_open(tgi: FakeTgi) -> None:
    """TGI sends ``:`` comments while a generation is silent; they are not frames, and
    they reset the read timeout, so a stall with keep-alives is no DECODE_TIMEOUT."""
    tgi.behaviour = Behaviour(mode="stall", after=1)
    tgi.keep_alive_s = 0.05

    async def scenario(adapter: TgiAdapter) -> None:
        stream = adapter.stream(request())
        try:
            assert isinstance(await anext(stream), TokenChunk)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(stream), timeout=1.0)
        finally:
            await stream.aclose()

    run(tgi, scenario, dataclasses.replace(FAST, stream_read_s=0.3))


def test_a_silent_stall_is_a_decode_timeout(tgi: FakeTgi) -> None:
    tgi.behaviour = Behaviour(mode="stall", after=1)
    quick = dataclasses.replace(FAST, stream_read_s=0.3)
    assert failure_of(tgi, request(), quick).kind == "DECODE_TIMEOUT"


@pytest.mark.parametrize("mode", ["drop", "raw"])
def test_a_stream_cut_before_its_last_frame_is_a_worker_reset(tgi: FakeTgi, mode: Mode) -> None:
    tgi.behaviour = Behaviour(mode=mode, after=2)
    assert failure_of(tgi, request()).kind == "WORKER_RESET"


TOKEN = '{"id":5,"text":"a","logprob":-0.5,"special":false}'
GARBAGE = {
    "unparseable": b'data: {"index":1,"token\n\n',
    "not-an-object": b"data: [1,2]\n\n",
    "no-token": b'data: {"index":1,"generated_text":null,"details":null}\n\n',
    "special-not-bool": (
        b'data: {"index":1,"token":{"id":5,"text":"a","logprob":-0.5,"special":"no"},'
        b'"generated_text":null,"details":null}\n\n'
    ),
    "last-frame-without-details": (
        f'data: {{"index":1,"token":{TOKEN},"generated_text":"a","details":null}}\n\n'
    ).encode(),
    "unknown-finish-reason": (
        f'data: {{"index":1,"token":{TOKEN},"generated_text":"a","details":'
        '{"finish_reason":"banana","generated_tokens":1,"seed":1,"input_length":1}}\n\n'
    ).encode(),
    "negative-count": (
        f'data: {{"index":1,"token":{TOKEN},"generated_text":"a","details":'
        '{"finish_reason":"length","generated_tokens":-1,"seed":1,"input_length":1}}\n\n'
    ).encode(),
    "invalid-utf8": b"data: \xff\xfe\n\n",
}


@pytest.mark.parametrize("garbage", sorted(GARBAGE))
def test_malformed_frames_are_internal(tgi: FakeTgi, garbage: str) -> None:
    tgi.behaviour = Behaviour(mode="raw", after=1, raw=GARBAGE[garbage])
    assert failure_of(tgi, request()).kind == "ENGINE_ERROR"


# -- sampler profiles (ORCH-3058) -------------------------------------------------------


def test_profile_values_map_onto_tgi_parameters() -> None:
    """Non-neutral values are sent, neutral ones left out (TGI refuses top_p 1.0,
    top_k 0 and temperature 0); temperature 0 is greedy decoding."""
    assert sampling_parameters(TGI_PROFILE) == {
        "do_sample": True,
        "temperature": 0.8,
        "top_k": 40,
        "top_p": 0.95,
    }
    everything = dataclasses.replace(
        TGI_PROFILE, top_k=0, top_p=1.0, typical_p=0.9, repetition_penalty=1.1, repeat_last_n=-1
    )
    assert sampling_parameters(everything) == {
        "repetition_penalty": 1.1,
        "do_sample": True,
        "temperature": 0.8,
        "typical_p": 0.9,
    }
    greedy_v1 = dataclasses.replace(SAMPLER_PROFILE_V1, temperature=0.0)
    assert sampling_parameters(greedy_v1) == {"do_sample": False}
    body = generate_body(request(seed=SEED_RANGE + 3, stop=("\n",)))
    assert body["parameters"]["seed"] == 3
    assert body["parameters"]["stop"] == ["\n"]
    assert body["parameters"]["max_new_tokens"] == 8


@pytest.mark.parametrize(
    "change",
    [
        {"min_p": 0.05},
        {"presence_penalty": 0.5},
        {"frequency_penalty": 0.5},
        {"repetition_penalty": 1.1, "repeat_last_n": 64},
        {"temperature": 0.0, "typical_p": 0.9},
        {"temperature": -1.0},
        {"top_p": 1.5},
        {"top_k": -1},
    ],
    ids=json.dumps,
)
def test_profile_values_tgi_cannot_honour_are_invalid_params(
    tgi: FakeTgi, change: dict[str, float]
) -> None:
    """The adapter refuses before sending: TGI would ignore an unknown field silently."""
    profile = dataclasses.replace(TGI_PROFILE, **change)  # type: ignore[arg-type]
    before = tgi.stats.requests
    assert failure_of(tgi, request(sampler=profile)).kind == "INVALID_PARAMS"
    assert tgi.stats.requests == before


def test_profile_v1_cannot_run_on_tgi(tgi: FakeTgi) -> None:
    """v1 filters with min_p 0.05, which TGI has no counterpart for."""
    error = failure_of(tgi, request(sampler=SAMPLER_PROFILE_V1))
    assert error.kind == "INVALID_PARAMS"
    assert "min_p" in error.message


# -- the fake itself speaks TGI's bytes --------------------------------------------------


def test_the_fake_frames_and_headers_are_tgis(tgi: FakeTgi) -> None:
    """The fake's answer has TGI v3.3.7's headers and serde/axum frame bytes."""
    body = {"inputs": "Hi", "parameters": {"max_new_tokens": 2, "seed": 1, "details": True}}

    async def fetch() -> tuple[int, dict[str, str], bytes]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(tgi.base_url + "/generate_stream", json=body) as response,
        ):
            headers = {name.lower(): value for name, value in response.headers.items()}
            return response.status, headers, await response.read()

    status, headers, raw = asyncio.run(fetch())
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    assert headers["x-compute-characters"] == "2"
    frames = raw.split(b"\n\n")
    assert frames[-1] == b""
    assert all(frame.startswith(b'data: {"index":') for frame in frames[:-1])
    first, last = (json.loads(frame[len(b"data: ") :]) for frame in frames[:2])
    assert list(first) == ["index", "token", "generated_text", "details"]
    assert list(first["token"]) == ["id", "text", "logprob", "special"]
    assert first["index"] == 1 and first["details"] is None
    assert list(last["details"]) == ["finish_reason", "generated_tokens", "seed", "input_length"]
    events = [SseEvent("message", frame[len(b"data: ") :].decode()) for frame in frames[:2]]
    assert parse_frame(events[0])[1] is None
    assert parse_frame(events[1])[1] is not None
