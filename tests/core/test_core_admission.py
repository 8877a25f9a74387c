"""Admission: typed refusals with status, retriability and predicted backoff.

ORCH-3014 (ctx), ORCH-3015 (token budget), ORCH-3024 (unique ids), ORCH-3006 (rate
limit), ORCH-3036 (tenant quota), ORCH-3018 (pool down), ORCH-3005 (full policies),
ORCH-2007 (backoff headers).
"""

from __future__ import annotations

import pytest
from corekit import (
    admit,
    dispatches,
    orchestrator,
    pool_spec,
    preloaded,
    probe,
    refuse,
    task,
    uid,
)

from orchestrator_core import (
    Admitted,
    ErrorKind,
    FinishReason,
    Orchestrator,
    Preload,
    PreloadFailure,
    PreloadOutcome,
    Priority,
    PriorityLimits,
    QueuePolicy,
    RestartPolicy,
    State,
)

INTER, BATCH = Priority.INTERACTIVE, Priority.BATCH


def busy_pool(**fields: object) -> Orchestrator:
    """One single-slot replica, service estimate 1000 ms, one task already running."""
    orch = orchestrator(pool_spec(replicas=[("r0", 1)], initial_service_ms=1000, **fields))
    admit(orch, task(0))
    assert len(dispatches(orch.poll(0))) == 1
    return orch


# -- request checks -------------------------------------------------------------------


def test_orch_3014_ctx_above_the_model_limit_is_400_invalid_params() -> None:
    orch = orchestrator(pool_spec(ctx_limit=4096))
    refused = refuse(orch, task(1, ctx=8192))
    assert (refused.kind, refused.status, refused.field) == (ErrorKind.INVALID_PARAMS, 400, "ctx")
    assert not refused.retriable and refused.retry_after_s is None
    assert refused.headers() == {} and refused.backoff_ms == 0
    assert "4096" in refused.message
    admit(orch, task(2, ctx=4096))


def test_orch_3015_prompt_plus_max_tokens_must_fit_the_ctx() -> None:
    orch = orchestrator()
    refused = refuse(orch, task(1, ctx=1000, prompt_tokens=900, max_tokens=101))
    assert (refused.kind, refused.field) == (ErrorKind.INVALID_PARAMS, "max_tokens")
    admit(orch, task(2, ctx=1000, prompt_tokens=900, max_tokens=100))


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"ctx": 0}, "ctx"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"prompt_tokens": -1}, "prompt_tokens"),
        ({"model_ref": "other"}, "model_ref"),
        ({"pool_id": "nope"}, "pool_id"),
        ({"sampler_profile_version": "v9"}, "sampler_profile_version"),
    ],
)
def test_malformed_requests_name_the_field(fields: dict[str, object], field: str) -> None:
    refused = refuse(orchestrator(), task(1, **fields))
    assert (refused.kind, refused.field) == (ErrorKind.INVALID_PARAMS, field)


def test_orch_3024_a_duplicate_task_id_is_409_even_after_reaping() -> None:
    orch = orchestrator()
    admit(orch, task(1))
    refused = refuse(orch, task(1))
    assert (refused.kind, refused.status, refused.retriable) == (
        ErrorKind.DUPLICATE_TASK,
        409,
        False,
    )
    orch.cancel(uid(1), 0)
    assert orch.reap(uid(1))
    assert refuse(orch, task(1)).kind is ErrorKind.DUPLICATE_TASK


def test_orch_3024_reaped_ids_are_remembered_for_a_bounded_window() -> None:
    orch = orchestrator(dedup_window=2)
    for n in range(3):
        admit(orch, task(n))
        orch.cancel(uid(n), 0)
        orch.reap(uid(n))
    admit(orch, task(0))  # fell out of the window
    assert refuse(orch, task(2)).kind is ErrorKind.DUPLICATE_TASK


def test_orch_3024_a_refused_id_is_not_used_up() -> None:
    orch = busy_pool(capacity=1)
    admit(orch, task(1))
    assert refuse(orch, task(2)).kind is ErrorKind.ADMISSION_REJECT
    orch.on_finish(uid(0), FinishReason.STOP, 1, 10)
    orch.poll(10)
    admit(orch, task(2), 10)


# -- rate limits and quotas ------------------------------------------------------------


def test_orch_3006_rate_limit_per_client_with_burst() -> None:
    limits = PriorityLimits(rate_limit_rps=2.0, rate_limit_burst=2)
    orch = orchestrator(pool_spec(capacity=100, interactive=limits))
    admit(orch, task(1, client_id="a"))
    admit(orch, task(2, client_id="a"))
    refused = refuse(orch, task(3, client_id="a"))
    assert (refused.kind, refused.status, refused.retriable) == (ErrorKind.RATE_LIMITED, 429, True)
    assert refused.backoff_ms == 500  # one token at 2/s
    assert refused.headers() == {"Retry-After": "1", "X-Backoff-Ms": "500"}
    admit(orch, task(4, client_id="b"))  # another client has its own bucket
    admit(orch, task(5, BATCH, client_id="a"))  # batch has no limit here
    assert refuse(orch, task(6, client_id="a"), now=499).backoff_ms == 1
    admit(orch, task(6, client_id="a"), now=500)


def test_orch_3006_burst_defaults_to_the_rate_rounded_up() -> None:
    orch = orchestrator(pool_spec(capacity=100, batch=PriorityLimits(rate_limit_rps=1.5)))
    admit(orch, task(1, BATCH))
    admit(orch, task(2, BATCH))
    assert refuse(orch, task(3, BATCH)).backoff_ms == 667


def test_orch_3036_tenant_concurrency_quota_with_predicted_backoff() -> None:
    orch = busy_pool(tenant_max_concurrent=2, capacity=10)
    admit(orch, task(1, tenant_id="t"))
    admit(orch, task(2, tenant_id="t"))
    refused = refuse(orch, task(3, tenant_id="t"), now=100)
    assert (refused.kind, refused.status) == (ErrorKind.QUOTA_EXCEEDED, 429)
    # The oldest task in flight (uid 1) is predicted to start at 1000 and run 1000 ms.
    assert refused.backoff_ms == 1900
    admit(orch, task(4, tenant_id="other"), now=100)
    orch.cancel(uid(1), 200)
    admit(orch, task(3, tenant_id="t"), now=200)


def test_orch_3036_quota_backoff_of_a_running_task_is_its_predicted_end() -> None:
    orch = orchestrator(
        pool_spec(replicas=[("r0", 1)], initial_service_ms=1000, tenant_max_concurrent=1)
    )
    admit(orch, task(1, tenant_id="t"))
    orch.poll(0)
    assert refuse(orch, task(2, tenant_id="t"), now=300).backoff_ms == 700


# -- pool state -------------------------------------------------------------------------


def test_orch_3018_no_live_replica_is_503_pool_unavailable_with_retry_hint() -> None:
    restart = RestartPolicy(base_ms=800)
    orch = Orchestrator([pool_spec(unready_retry_ms=2500, restart=restart)])
    refused = refuse(orch, task(1))
    assert (refused.kind, refused.status, refused.retriable) == (
        ErrorKind.POOL_UNAVAILABLE,
        503,
        True,
    )
    assert refused.backoff_ms == 2500 and refused.headers()["Retry-After"] == "3"
    assert (refused.pool_id, refused.engine) == ("p0", "llamacpp")
    # The preload failed: the next attempt is due in 800 ms, which the hint says.
    (preload,) = [a for a in orch.poll(100) if isinstance(a, Preload)]
    failure = PreloadFailure(PreloadOutcome.ENGINE_UNAVAILABLE, "connection refused")
    orch.replica_preload_failed("p0", "r0", preload.generation, failure, 100)
    assert refuse(orch, task(1), now=300).backoff_ms == 600


def test_pool_live_but_not_ready_is_503_pool_unready() -> None:
    orch = orchestrator()
    probe(orch, "p0", "r0", 0, ready=False)
    refused = refuse(orch, task(1))
    assert (refused.kind, refused.status) == (ErrorKind.POOL_UNREADY, 503)


def test_a_draining_pool_is_unready_until_reloaded() -> None:
    orch = orchestrator(pool_spec(unready_retry_ms=1000))
    orch.drain("p0", 5000, 0)
    refused = refuse(orch, task(1), now=1000)
    assert refused.kind is ErrorKind.POOL_UNREADY and refused.backoff_ms == 4000
    orch.reload("p0", "sha256:" + "ab" * 32, 1000)
    preloaded(orch, "p0", "r0", 1000)
    admit(orch, task(1), 1000)


# -- full policies (ORCH-3005) ------------------------------------------------------------


def test_orch_3005_reject_refuses_the_newcomer_with_a_predicted_backoff() -> None:
    orch = busy_pool(capacity=2, full_policy=QueuePolicy.REJECT)
    admit(orch, task(1))
    admit(orch, task(2))
    refused = refuse(orch, task(3))
    assert (refused.kind, refused.status, refused.policy) == (
        ErrorKind.ADMISSION_REJECT,
        429,
        QueuePolicy.REJECT,
    )
    # One dispatch brings the queue under capacity; the busy slot frees in ~1000 ms.
    assert refused.backoff_ms == 1000
    assert refused.headers() == {
        "Retry-After": "1",
        "X-Backoff-Ms": "1000",
        "X-Queue-ETA-Ms": "1000",
    }


def test_orch_3005_backoff_grows_with_the_queue_and_the_service_time() -> None:
    orch = busy_pool(capacity=4, batch=PriorityLimits(queue_capacity=2))
    admit(orch, task(1, INTER))
    admit(orch, task(2, INTER))
    admit(orch, task(3, BATCH))
    admit(orch, task(4, BATCH))
    # The batch share is full; its head goes after up to 4 interactive dispatches; here
    # 2 interactive tasks wait, so it is the third dispatch: 3 waves of 1000 ms.
    assert refuse(orch, task(5, BATCH)).backoff_ms == 3000
    for _ in range(5):
        orch.on_finish(uid(0), FinishReason.STOP, 1, 400)  # only the first one counts
    # The first task finished replaces the configured estimate of 1000 ms.
    assert orch.pool_view("p0", 400).service_time_ms == 400


def test_orch_2007_a_client_honouring_the_backoff_finds_room() -> None:
    orch = busy_pool(capacity=1)
    admit(orch, task(1))
    refused = refuse(orch, task(2))
    later = refused.backoff_ms
    orch.on_finish(uid(0), FinishReason.STOP, 1, later)
    orch.poll(later)
    admit(orch, task(2), later)


def test_orch_3005_drop_lru_evicts_the_oldest_queued_task_of_any_priority() -> None:
    orch = busy_pool(capacity=3, full_policy=QueuePolicy.DROP_LRU)
    admit(orch, task(1, BATCH))
    admit(orch, task(2, INTER))
    admit(orch, task(3, INTER))
    admitted = admit(orch, task(4, INTER))
    assert admitted.evicted is not None
    evicted = admitted.evicted
    assert (evicted.task_id, evicted.kind, evicted.retriable) == (
        uid(1),
        ErrorKind.QUEUE_FULL_DROP_LRU,
        True,
    )
    assert admitted.backoff_ms == 1000  # admitted under pressure: a hint to slow down
    view = orch.task(uid(1))
    assert view is not None and view.state is State.FAILED and view.outcome == evicted
    health = orch.pool_view("p0", 0)
    assert (health.queue_depth_interactive, health.queue_depth_batch) == (3, 0)


def test_orch_3005_drop_lru_on_a_full_class_evicts_that_class_oldest() -> None:
    orch = busy_pool(
        capacity=10, full_policy=QueuePolicy.DROP_LRU, batch=PriorityLimits(queue_capacity=1)
    )
    admit(orch, task(1, INTER))
    admit(orch, task(2, BATCH))
    evicted = admit(orch, task(3, BATCH)).evicted
    assert evicted is not None and evicted.task_id == uid(2)


def test_orch_3005_shed_low_priority_evicts_the_newest_batch_task() -> None:
    orch = busy_pool(capacity=3, full_policy=QueuePolicy.SHED_LOW_PRIORITY)
    admit(orch, task(1, BATCH))
    admit(orch, task(2, BATCH))
    admit(orch, task(3, INTER))
    admitted = admit(orch, task(4, INTER))
    assert admitted.evicted is not None
    assert (admitted.evicted.task_id, admitted.evicted.kind) == (uid(2), ErrorKind.ADMISSION_REJECT)
    refused = refuse(orch, task(5, BATCH))  # a batch newcomer never sheds
    assert (refused.kind, refused.policy) == (
        ErrorKind.ADMISSION_REJECT,
        QueuePolicy.SHED_LOW_PRIORITY,
    )
    admit(orch, task(6, INTER))  # sheds uid 1, the last batch task
    refused = refuse(orch, task(7, INTER))  # nothing left to shed
    assert refused.policy is QueuePolicy.SHED_LOW_PRIORITY and refused.backoff_ms >= 1


def test_orch_3005_shed_does_not_help_a_full_interactive_share() -> None:
    orch = busy_pool(
        capacity=10,
        full_policy=QueuePolicy.SHED_LOW_PRIORITY,
        interactive=PriorityLimits(queue_capacity=1),
    )
    admit(orch, task(1, BATCH))
    admit(orch, task(2, INTER))
    assert refuse(orch, task(3, INTER)).kind is ErrorKind.ADMISSION_REJECT
    assert "interactive share" in refuse(orch, task(3, INTER)).message


# -- admission results and pool choice -----------------------------------------------------


def test_orch_3029_admission_reports_position_and_predicted_start() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 2)], initial_service_ms=400))
    first = admit(orch, task(1))
    assert (first.queue_position, first.predicted_start_ms, first.backoff_ms) == (0, 0, 0)
    orch.poll(0)
    orch.poll(0)
    admit(orch, task(2))
    orch.poll(0)
    third = admit(orch, task(3))
    fourth = admit(orch, task(4))
    assert (third.queue_position, third.predicted_start_ms) == (0, 400)
    assert (fourth.queue_position, fourth.predicted_start_ms) == (1, 400)
    assert fourth.headers() == {"X-Queue-Position": "1", "X-Queue-ETA-Ms": "400"}
    fifth = admit(orch, task(5))
    assert fifth.predicted_start_ms == 800


def test_a_replica_set_spanning_pools_takes_the_pool_that_starts_soonest() -> None:
    orch = orchestrator(pool_spec("a", devices=(0,)), pool_spec("b", devices=(1,)))
    assert admit(orch, task(1)).pool_id == "a"
    assert admit(orch, task(2)).pool_id == "b"
    assert admit(orch, task(3)).pool_id == "a"
    assert admit(orch, task(4, pool_id="a")).pool_id == "a"


def test_a_pool_with_room_wins_over_a_full_one() -> None:
    orch = orchestrator(
        pool_spec("a", capacity=1), pool_spec("b", capacity=5, initial_service_ms=90_000)
    )
    admit(orch, task(1, pool_id="a"))
    assert admit(orch, task(2)).pool_id == "b"


def test_only_ready_pools_of_the_set_are_candidates() -> None:
    orch = orchestrator(pool_spec("a"), pool_spec("b"))
    orch.drain("a", 0, 0)
    assert {admit(orch, task(n)).pool_id for n in range(3)} == {"b"}
    orch.drain("b", 0, 0)
    refused = refuse(orch, task(9))
    assert refused.kind is ErrorKind.POOL_UNREADY


def test_ctx_is_checked_against_the_largest_pool_of_the_set() -> None:
    orch = orchestrator(pool_spec("a", ctx_limit=2048), pool_spec("b", ctx_limit=8192))
    result = orch.submit(task(1, ctx=4096), 0)
    assert isinstance(result, Admitted) and result.pool_id == "b"
    assert "8192" in refuse(orch, task(2, ctx=16384)).message


def test_a_matching_sampler_profile_is_accepted() -> None:
    orch = orchestrator(
        pool_spec("a", devices=(0,)), pool_spec("b", devices=(1,), sampler_profile_version="v2")
    )
    assert admit(orch, task(1, sampler_profile_version="v2")).pool_id == "b"
    assert admit(orch, task(2, sampler_profile_version="v1")).pool_id == "a"


def test_orch_3036_a_tenant_whose_tasks_all_ended_starts_from_zero() -> None:
    orch = orchestrator(pool_spec(tenant_max_concurrent=1))
    admit(orch, task(1, tenant_id="t"))
    orch.cancel(uid(1), 0)
    admit(orch, task(2, tenant_id="t"))
    assert refuse(orch, task(3, tenant_id="t")).kind is ErrorKind.QUOTA_EXCEEDED
