"""What a running task asks its engine, and how the engine's chunks become its tokens.

`engine_request` builds the `CompletionRequest` of a task: its prompt (a chat rendered by
the model's own template on the engine, with the tool protocol's instruction when it
has tools, or plainly where the engine renders no templates), the sampler, the JSON
Schema its answer is decoded under, and its log-probability request.

`ToolAnswerChunks` turns the stream of a task with tools into tool calls: the answer is
protocol JSON (`adapters.tool_calls`), which no client should see as text, so each token
goes on with empty text (keeping its index and log-probabilities) and the last token
carries the parsed answer: its tool calls, with ids derived from the task id (the same
on a re-run, so migration stays exact), or its text.
"""

from __future__ import annotations

from orchestratord_server.adapters import tool_calls
from orchestratord_server.adapters.base import (
    CompletionRequest,
    EngineAdapter,
    StreamChunk,
    TokenChunk,
    sampler_profile,
)
from orchestratord_server.adapters.chat import (
    answer_schema,
    plain_prompt,
    prompt_messages,
    response_schema,
    turns,
)
from orchestratord_server.generated.models import Determinism, TaskRequest
from orchestratord_server.runtime.tasks import TaskContext


async def engine_request(engine: EngineAdapter, task: TaskContext, seed: int) -> CompletionRequest:
    """What the engine is asked for ``task``; raises EngineError when the engine cannot
    render its chat."""
    request = task.request
    prompt = request.prompt or ""
    if request.messages is not None:
        messages = prompt_messages(request)
        rendered = await engine.apply_template(turns(messages))
        prompt = rendered if rendered is not None else plain_prompt(messages)
    return CompletionRequest(
        prompt=prompt,
        max_tokens=request.max_tokens,
        seed=seed,
        sampler=task.options.sampler(sampler_profile(task.pool.sampler_profile_version)),
        stop=task.options.stop,
        reuse_prompt_cache=request.determinism is Determinism.BEST_EFFORT,
        json_schema=answer_schema(request),
        logprobs=request.logprobs,
    )


class ToolAnswerChunks:
    """The chunks of a tool-protocol answer as a client should see them (see the
    module's docstring); one chunk is held back until the stream's end is known."""

    def __init__(self, task_id: str, request: TaskRequest) -> None:
        self._call_prefix = f"call_{task_id.replace('-', '')[:12]}_"
        self._response_is_json = response_schema(request) is not None
        self._parts: list[str] = []
        self._held: TokenChunk | None = None

    def feed(self, chunk: StreamChunk) -> list[StreamChunk]:
        """What the client sees for ``chunk``: nothing yet, the held token, or (at the
        end) the last token with the parsed answer and the final chunk."""
        if isinstance(chunk, TokenChunk):
            self._parts.append(chunk.text)
            held, self._held = self._held, TokenChunk("", logprobs=chunk.logprobs)
            return [held] if held is not None else []
        if self._held is None:
            return [chunk]
        answer = tool_calls.parse("".join(self._parts), self._response_is_json)
        deltas = tuple(
            {
                "index": index,
                "id": f"{self._call_prefix}{index}",
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            for index, (name, arguments) in enumerate(answer.calls)
        )
        last = TokenChunk(answer.content, deltas, self._held.logprobs)
        self._held = None
        return [last, chunk]
