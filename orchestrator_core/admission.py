"""Admission checks: every reason to refuse a task, as a typed `Refused` decision.

Checks run in this order, and nothing is changed until all have passed:

0. the daemon is not shutting down: else 503 SHUTTING_DOWN, backoff = `SHUTDOWN_BACKOFF_MS`;
1. the request's numbers — ctx and max_tokens positive, prompt tokens + max_tokens within
   ctx (ORCH-3015): 400 INVALID_PARAMS naming the field;
2. the id is not already in use (ORCH-3024): 409 DUPLICATE_TASK (checked by the facade);
3. the target — some pool serves {engine, model_ref} (narrowed by `pool_id` and
   `sampler_profile_version`) with a context limit of at least ctx (ORCH-3014): else 400
   INVALID_PARAMS naming the field;
4. the pool: a candidate pool that is live and Ready, else 503 POOL_UNAVAILABLE (no live
   replica, ORCH-3018) or POOL_UNREADY (loading or draining), backoff = the retry hint;
5. the client's token bucket for this priority (ORCH-3006): 429 RATE_LIMITED, backoff =
   time until the bucket holds a token;
6. the tenant's concurrency quota in the pool (ORCH-3036): 429 QUOTA_EXCEEDED, backoff =
   the predicted end of the tenant's oldest task in flight;
7. the queue capacity and the pool's full policy (ORCH-3004, ORCH-3005): 429
   ADMISSION_REJECT with the policy, backoff = predicted time for the queue to fall below
   the limit (see `prediction`).

Among several candidate pools (one replica set may span pools), a canary split narrows
the Ready ones to the task's side first (ORCH-3033: the task id's bucket against the
canary weight; a side without a Ready pool leaves the route to the other), then the pool
chosen is the first by: has room in its queue, holds the session's last replica (unless
the client asked for a cold start), shortest predicted start, most free slots, config
order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestrator_core import eta
from orchestrator_core._task import Task
from orchestrator_core.decisions import Refused
from orchestrator_core.pools import Pool
from orchestrator_core.queue import Limit
from orchestrator_core.ratelimit import TokenBuckets
from orchestrator_core.seed import canary_bucket
from orchestrator_core.specs import TaskSpec
from orchestrator_core.vocabulary import ErrorKind, Priority

#: The retry hint of work refused or ended by a shutdown: long enough for a load balancer
#: to see this instance's readiness fail and send the retry to another one (or for a
#: supervisor to restart it).
SHUTDOWN_BACKOFF_MS = 1_000


def shutting_down(spec: TaskSpec) -> Refused:
    """The refusal of every task submitted once the daemon began to shut down."""
    return Refused(
        spec.task_id,
        ErrorKind.SHUTTING_DOWN,
        "the daemon is shutting down; retry after the hint",
        SHUTDOWN_BACKOFF_MS,
        engine=spec.engine,
    )


def not_served(model_ref: str, engine: str | None = None, workload: str | None = None) -> str:
    """The one message for a model no pool serves as applied now (ORCH-2001): every
    surface that routes by model says it the same way; a workload other than completion
    is named."""
    where = f" by any {engine} pool" if engine is not None else ""
    kind = f" for {workload}" if workload is not None and workload != "completion" else ""
    return f"model {model_ref!r} is not served{kind}{where}"


def _invalid(spec: TaskSpec, field: str, message: str) -> Refused:
    return Refused(
        spec.task_id, ErrorKind.INVALID_PARAMS, message, 0, engine=spec.engine, field=field
    )


def check_request(spec: TaskSpec) -> Refused | None:
    """Refuse a request whose numbers cannot be served by any pool."""
    if spec.ctx < 1:
        return _invalid(spec, "ctx", "ctx must be at least 1")
    if spec.max_tokens < 1:
        return _invalid(spec, "max_tokens", "max_tokens must be at least 1")
    if spec.prompt_tokens < 0:
        return _invalid(spec, "prompt_tokens", "prompt_tokens must not be negative")
    if spec.deadline_ms is not None and spec.deadline_ms < 1:
        return _invalid(spec, "deadline_ms", "deadline_ms must be at least 1")
    if spec.prompt_tokens + spec.max_tokens > spec.ctx:
        return _invalid(
            spec,
            "max_tokens",
            f"prompt tokens ({spec.prompt_tokens}) + max_tokens "
            f"({spec.max_tokens}) exceed ctx ({spec.ctx})",
        )
    return None


def select_pool(
    spec: TaskSpec,
    candidates: Sequence[Pool],
    affine: Pool | None,
    tasks: Mapping[str, Task],
    now_ms: int,
) -> Pool | Refused:
    """The pool the task goes to, or the refusal that says why none can take it."""
    if len(candidates) == 1 and spec.pool_id is None and spec.sampler_profile_version is None:
        only = candidates[0]
        if only.is_ready and spec.ctx <= only.spec.ctx_limit:
            return only
    if spec.pool_id is not None:
        candidates = [p for p in candidates if p.spec.pool_id == spec.pool_id]
    if not candidates:
        if spec.pool_id is not None:
            message = f"pool {spec.pool_id!r} does not serve model {spec.model_ref!r}"
            return _invalid(spec, "pool_id", message)
        message = not_served(spec.model_ref, spec.engine, spec.workload)
        return _invalid(spec, "model_ref", message)
    wanted = spec.sampler_profile_version
    if wanted is not None:
        candidates = [p for p in candidates if p.spec.sampler_profile_version == wanted]
        if not candidates:
            return _invalid(
                spec,
                "sampler_profile_version",
                f"no pool of this model runs sampler profile {wanted!r}",
            )
    fitting = [p for p in candidates if spec.ctx <= p.spec.ctx_limit]
    if not fitting:
        limit = max(p.spec.ctx_limit for p in candidates)
        return _invalid(spec, "ctx", f"ctx {spec.ctx} exceeds the model's limit of {limit}")
    ready = _canary_side(spec.task_id, [p for p in fitting if p.is_ready])
    if len(ready) == 1:
        return ready[0]
    if ready:
        return min(ready, key=lambda p: _rank(p, spec.priority, affine, tasks, now_ms))
    live = [p for p in fitting if p.is_live]
    kind = ErrorKind.POOL_UNREADY if live else ErrorKind.POOL_UNAVAILABLE
    shown = live or fitting
    hint = min(p.retry_hint_ms(now_ms) for p in shown)
    what = "is not Ready" if live else "has no live replica"
    return Refused(
        spec.task_id,
        kind,
        f"pool {shown[0].pool_id!r} {what}",
        hint,
        pool_id=shown[0].pool_id,
        engine=spec.engine,
    )


def _canary_side(task_id: str, ready: list[Pool]) -> list[Pool]:
    """The Ready pools of the task's side of a canary split (ORCH-3033).

    With canary and stable pools both Ready, a task whose id falls in the first
    `canary_weight` of 100 buckets goes to the canary side, every other to the stable side;
    when one side has no Ready pool, the other serves the whole route.
    """
    canary = [p for p in ready if p.spec.canary_weight is not None]
    if not canary or len(canary) == len(ready):
        return ready
    weight = max(p.spec.canary_weight or 0 for p in canary)
    if canary_bucket(task_id) < weight:
        return canary
    return [p for p in ready if p.spec.canary_weight is None]


def _rank(
    pool: Pool, priority: Priority, affine: Pool | None, tasks: Mapping[str, Task], now_ms: int
) -> tuple[bool, bool, int, int]:
    queue, index = pool.queue, pool.queue.depth(priority)
    position = queue.position(priority, index)
    forecast = eta.forecast(pool, tasks, now_ms, eta.head_for(position))
    wait = eta.predicted_start_ms(pool, forecast, priority, index, position, now_ms)
    return queue.blocking_limit(priority) is not None, pool is not affine, wait, -pool.free_slots


def check_rate(pool: Pool, buckets: TokenBuckets, spec: TaskSpec, now_ms: int) -> Refused | None:
    """Refuse when the client's bucket for this priority is empty (ORCH-3006)."""
    wait = buckets.wait_ms(spec.client_id, now_ms)
    if wait == 0:
        return None
    return Refused(
        spec.task_id,
        ErrorKind.RATE_LIMITED,
        f"client rate limit for {spec.priority} tasks in pool {pool.pool_id!r}",
        wait,
        pool_id=pool.pool_id,
        engine=spec.engine,
    )


def check_quota(
    pool: Pool, quota: int, spec: TaskSpec, now_ms: int, tasks: Mapping[str, Task]
) -> Refused | None:
    """Refuse when the tenant already has its quota of tasks in flight (ORCH-3036)."""
    in_flight = pool.tenants.get(spec.tenant_id)
    if in_flight is None or len(in_flight) < quota:
        return None
    oldest = tasks[next(iter(in_flight))]
    wait = max(1, oldest.expected_start_ms() + eta.service_ms(pool, oldest.spec) - now_ms)
    return Refused(
        spec.task_id,
        ErrorKind.QUOTA_EXCEEDED,
        f"tenant has {quota} tasks in flight in pool {pool.pool_id!r}",
        wait,
        pool_id=pool.pool_id,
        engine=spec.engine,
    )


def queue_backoff_ms(
    pool: Pool, tasks: Mapping[str, Task], priority: Priority, limit: Limit, now_ms: int
) -> int:
    """Predicted ms until a newcomer of `priority` would fit under `limit` again."""
    dispatches = pool.queue.dispatches_to_fit(priority, limit)
    head = eta.head_for(dispatches - 1)
    return eta.forecast(pool, tasks, now_ms, head).backoff_ms(dispatches)


def queue_full(pool: Pool, spec: TaskSpec, limit: Limit, backoff: int) -> Refused:
    """The refusal of a newcomer that the full policy will not make room for (ORCH-3005)."""
    policy = pool.spec.full_policy
    what = "the queue" if limit is Limit.POOL else f"the {spec.priority} share of the queue"
    return Refused(
        spec.task_id,
        ErrorKind.ADMISSION_REJECT,
        f"{what} of pool {pool.pool_id!r} is full (policy {policy})",
        backoff,
        pool_id=pool.pool_id,
        engine=spec.engine,
        policy=policy,
    )
