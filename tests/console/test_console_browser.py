"""The operator console in a real browser against the embedded default on a real engine.

Debian's Chromium, driven headless by Playwright (`scripts/setup.sh --engines` installs
both), opens `/console` of a daemon running the embedded default's pool (SmolLM2-135M on
a llama.cpp server the daemon launches) with API keys on. The tests do what an operator
does: sign in with the key, watch tasks go from queued to running to ended, cancel one,
drain the pool and bring it back with a reload, and get nothing without a valid key.
Screenshots of the main views are written to `$ORCHD_TEST_ARTIFACTS/console` (by default
`.artifacts/console` in the repository).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from orchestratord_server.config import EMBEDDED_MODEL_REF, embedded_default
from tests.integration.support import (
    DATA_KEY,
    Client,
    Daemon,
    daemon_config,
    running_daemon,
    task_body,
    wait_until,
)

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
#: What a headless Chromium needs on a closed network, run as root in a container.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("ORCHD_TEST_ARTIFACTS", REPO / ".artifacts")) / "console"
POOL = "smollm2-cpu"
#: Long enough to be seen running and queued on two slots (SmolLM2 on this CPU streams
#: some tens of tokens a second).
LONG = 600
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The embedded default's pool, with a data-plane key (which opens the control plane
    too, as the default configuration has no control keys of its own)."""
    pool: dict[str, Any] = embedded_default().model_dump(mode="json", exclude_unset=True)["pools"][
        0
    ]
    assert pool["id"] == POOL
    with running_daemon(tmp_path_factory.mktemp("console"), daemon_config(pool)) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/setup.sh --engines`")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, errors


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, daemon: Daemon, key: str = DATA_KEY) -> None:
    page.goto(f"{daemon.base_url}/console")
    page.get_by_label("Control-plane key").fill(key)
    page.get_by_role("button", name="Open the console").click()


def pool_card(page: Page) -> Any:
    return page.locator(f'article[data-pool-id="{POOL}"]')


def smollm2_task(**overrides: Any) -> dict[str, Any]:
    """A completion for the embedded pool: a new task id and session id each time."""
    return task_body(
        model_ref=EMBEDDED_MODEL_REF,
        ctx=2048,
        # Counting goes on to max_tokens with this seed (a story may end at once).
        prompt="1, 2, 3, 4, 5,",
        seed=7,
        **overrides,
    )


def submit(client: Client, max_tokens: int = LONG) -> str:
    body = smollm2_task(max_tokens=max_tokens)
    client.admit(body)
    return str(body["task_id"])


def settle(client: Client) -> None:
    """Cancel what the test left and wait until the pool is idle again."""
    client.cancel_all()
    wait_until(lambda: client.idle(POOL), timeout=60, interval=0.2, what="the pool to be idle")


def row(page: Page, task_id: str) -> Any:
    return page.locator(f'tr[data-task-id="{task_id}"]')


def streaming_task(page: Page, client: Client) -> tuple[str, Any]:
    """A long task submitted, once the console lists it streaming: its id and its row."""
    task_id = submit(client)
    task = row(page, task_id)
    expect(task).to_have_attribute("data-state", "streaming", timeout=WAIT_MS)
    return task_id, task


def confirm_cancel(page: Page, task: Any) -> None:
    """Confirm the cancel the console asks about; the task's row turns canceled."""
    expect(page.locator("#confirm")).to_be_visible()
    page.locator("#confirm").get_by_role("button", name="Confirm").click()
    expect(task).to_have_attribute("data-state", "canceled", timeout=WAIT_MS)


def test_orch_2103_the_console_shows_the_embedded_pool_with_its_replica(
    page: Page, daemon: Daemon
) -> None:
    sign_in(page, daemon)
    card = pool_card(page)
    expect(card).to_be_visible(timeout=WAIT_MS)
    expect(card.locator(".pool-id")).to_have_text(POOL)
    expect(card.locator(".phase")).to_have_text("ready")
    expect(card.locator(".figures")).to_contain_text(EMBEDDED_MODEL_REF)
    expect(card.locator('tr[data-replica-id="local-0"]')).to_have_attribute("data-state", "ready")
    expect(page.locator("#connection")).to_have_text("live")
    shot(page, "pool")


def test_orch_3029_a_task_is_seen_queued_then_running_then_ended(
    page: Page, daemon: Daemon
) -> None:
    sign_in(page, daemon)
    expect(pool_card(page)).to_be_visible(timeout=WAIT_MS)
    client = daemon.client()
    try:
        # Two slots: two tasks run, the third waits first in the queue.
        first, second = submit(client), submit(client)
        queued = submit(client, max_tokens=24)
        expect(row(page, queued)).to_have_attribute("data-state", "queued", timeout=WAIT_MS)
        expect(row(page, queued)).to_contain_text("#0")
        expect(row(page, first)).to_have_attribute("data-state", "streaming", timeout=WAIT_MS)
        # The plots have a second of tokens once a stats event came while both ran.
        tokens = pool_card(page).locator(".chart.tokens")
        expect(tokens).to_have_attribute("aria-label", re.compile(r"^now [1-9]"), timeout=WAIT_MS)
        shot(page, "tasks")
        client.cancel(first)
        expect(row(page, queued)).to_have_attribute("data-state", "streaming", timeout=WAIT_MS)
        expect(row(page, queued)).to_have_attribute("data-state", "ended", timeout=WAIT_MS)
        expect(row(page, queued)).to_contain_text("finished (ok)")
        expect(row(page, first)).to_contain_text("canceled")
        expect(row(page, second)).to_have_attribute("data-state", "streaming")
    finally:
        settle(client)


def test_orch_3026_cancel_from_the_console_ends_a_running_task(page: Page, daemon: Daemon) -> None:
    sign_in(page, daemon)
    client = daemon.client()
    try:
        task_id, task = streaming_task(page, client)
        task.get_by_role("button", name="Cancel").click()
        expect(page.locator("#confirm")).to_be_visible()
        shot(page, "cancel-confirmation")
        confirm_cancel(page, task)
        expect(task).to_contain_text("canceled (client)")
        stream = client.get(f"/v1/tasks/{task_id}/stream")
        assert '"finish_reason":"canceled"' in stream.text
    finally:
        settle(client)


def test_a_click_held_across_redraws_still_cancels(page: Page, daemon: Daemon) -> None:
    """The list is redrawn several times a second while a task streams; a press on its
    Cancel button released after some of those redraws is still a click (a row made anew
    on each redraw swallowed it)."""
    sign_in(page, daemon)
    client = daemon.client()
    try:
        _, task = streaming_task(page, client)
        tokens = task.locator("td").nth(3)  # priority, state, where, tokens
        button = task.get_by_role("button", name="Cancel")
        box = button.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        before = tokens.inner_text()
        page.mouse.down()
        expect(tokens).not_to_have_text(before, timeout=WAIT_MS)  # redrawn meanwhile
        page.mouse.up()
        confirm_cancel(page, task)
    finally:
        settle(client)


def test_a_tasks_text_opens_from_the_list(page: Page, daemon: Daemon) -> None:
    sign_in(page, daemon)
    client = daemon.client()
    try:
        task_id = submit(client, max_tokens=16)
        task = row(page, task_id)
        expect(task).to_have_attribute("data-state", "ended", timeout=WAIT_MS)
        task.get_by_role("button", name=task_id[:8]).click()
        transcript = page.locator("#transcript-text")
        expect(transcript).to_contain_text("[end: ", timeout=WAIT_MS)
        expected = client.transcript(task_id).text
        assert expected and transcript.inner_text().startswith(expected)
        shot(page, "transcript")
    finally:
        settle(client)


def test_orch_2101_orch_2102_drain_then_reload_from_the_console(page: Page, daemon: Daemon) -> None:
    sign_in(page, daemon)
    card = pool_card(page)
    expect(card.locator(".phase")).to_have_text("ready", timeout=WAIT_MS)
    card.get_by_role("button", name="Drain…").click()
    page.get_by_label("Deadline (ms)").fill("5000")
    page.locator("#confirm").get_by_role("button", name="Confirm").click()
    expect(card).to_have_attribute("data-draining", "true", timeout=WAIT_MS)
    expect(card.locator(".phase")).to_have_text("drained", timeout=WAIT_MS)
    expect(card.locator(".figures")).to_contain_text("drain accepted")
    shot(page, "drained")
    refused = daemon.client().submit(smollm2_task(max_tokens=4), check=False)
    assert refused.status_code == 503, refused.text
    card.get_by_role("button", name="Reload…").click()
    expect(page.get_by_label("Model")).to_have_value(EMBEDDED_MODEL_REF)
    page.locator("#confirm").get_by_role("button", name="Confirm").click()
    expect(card.locator(".figures")).to_contain_text("reload to", timeout=WAIT_MS)
    expect(card.locator(".phase")).to_have_text("ready", timeout=3 * WAIT_MS)
    expect(card).to_have_attribute("data-draining", "false")
    shot(page, "reloaded")


def test_orch_3035_without_a_valid_key_the_console_shows_nothing(
    page: Page, daemon: Daemon
) -> None:
    page.goto(f"{daemon.base_url}/console")
    expect(page.get_by_label("Control-plane key")).to_be_visible()
    expect(page.locator("#board")).to_be_hidden()
    sign_in(page, daemon, key="not-the-key")
    expect(page.locator("#login-error")).to_contain_text("refused: 401", timeout=WAIT_MS)
    expect(page.locator("#board")).to_be_hidden()
    assert page.locator("article.pool").count() == 0
    shot(page, "refused")
