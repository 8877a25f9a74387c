"""Chat prompts are rendered with the model's own chat template (issue 9).

SmolLM2-135M-Instruct ships a ChatML template that also adds a default system turn; the
engine's `POST /apply-template` renders it. The prompt the daemon sent is known by its
token count, which the engine reports back as `usage.prompt_tokens`.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from orchestratord_server.adapters.chat import plain_prompt
from orchestratord_server.config import EMBEDDED_MODEL_REF
from orchestratord_server.generated.models import ChatMessage
from tests.integration.support import (
    DATA_KEY,
    Daemon,
    daemon_config,
    running_daemon,
    tiny_pool_config,
)

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    pool = tiny_pool_config(
        tmp_path_factory.getbasetemp(),
        model=EMBEDDED_MODEL_REF,
        pool_ctx=2048,
        slots=1,
        ctx_per_slot=2048,
        launch_model=False,
    )
    workdir = tmp_path_factory.mktemp("openai-smollm2")
    with running_daemon(workdir, daemon_config(pool)) as daemon:
        yield daemon


def _prompt_tokens(engine: str, prompt: str) -> int:
    answer = httpx.post(
        engine + "/tokenize", json={"content": prompt, "add_special": True}, timeout=30
    )
    return len(answer.json()["tokens"])


def test_chat_is_rendered_with_the_models_template(smollm2: Daemon) -> None:
    """ORCH-2001: the chat prompt is the engine's template rendering, not a plain one, and
    SmolLM2 answers in words, whole and streamed alike."""
    engine = smollm2.engine_url()
    rendered = httpx.post(engine + "/apply-template", json={"messages": MESSAGES}, timeout=30)
    template_prompt = rendered.json()["prompt"]
    assert "<|im_start|>assistant" in template_prompt
    client = openai.OpenAI(base_url=smollm2.base_url + "/v1", api_key=DATA_KEY, max_retries=0)
    answer = client.chat.completions.create(
        model=EMBEDDED_MODEL_REF,
        messages=MESSAGES,
        max_tokens=16,
        seed=3,
    )
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == _prompt_tokens(engine, template_prompt)
    assert answer.usage.prompt_tokens != _prompt_tokens(
        engine, plain_prompt([ChatMessage.model_validate(m) for m in MESSAGES])
    )
    content = answer.choices[0].message.content or ""
    assert any(word.isalpha() for word in content.split()), content
    stream = client.chat.completions.create(
        model=EMBEDDED_MODEL_REF,
        messages=MESSAGES,
        max_tokens=16,
        seed=3,
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == content
    client.close()
