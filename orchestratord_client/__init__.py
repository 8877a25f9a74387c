"""Python client of orchestratord: sync and async, typed with the contract's generated models.

    from orchestratord_client import Client, completion
    with Client("http://127.0.0.1:8080", api_key=KEY) as client:
        task = completion("The capital of France is", model_ref="SmolLM2-135M-Instruct-Q4_1")
        client.submit(task)
        for event in client.stream(task.task_id):
            ...

Requests and answers are the models of `orchestratord_client.generated.models`; refusals
raise the typed errors of `orchestratord_client.errors`; `retrying` resubmits after
backpressure as long as the daemon says to wait.
"""

from orchestratord_client.async_client import AsyncClient, AsyncTaskStream
from orchestratord_client.client import Client, TaskStream
from orchestratord_client.errors import (
    Backpressure,
    ClientError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    NotImplementedByServer,
    OrchestratordError,
    ServerError,
    StreamInterrupted,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from orchestratord_client.generated.models import (
    AdmissionResponse,
    EndEvent,
    ErrorEnvelope,
    ErrorEvent,
    MetricsEvent,
    PoolActionAccepted,
    PoolHealth,
    ReplicaSet,
    SessionInfo,
    StartedEvent,
    TaskRequest,
    TokenEvent,
)
from orchestratord_client.protocol import UnexpectedResponse
from orchestratord_client.retry import retrying, retrying_async
from orchestratord_client.sse import StreamEvent, event_name
from orchestratord_client.tasks import completion

__all__ = [
    "AdmissionResponse",
    "AsyncClient",
    "AsyncTaskStream",
    "Backpressure",
    "Client",
    "ClientError",
    "Conflict",
    "EndEvent",
    "ErrorEnvelope",
    "ErrorEvent",
    "Forbidden",
    "InvalidRequest",
    "MetricsEvent",
    "NotFound",
    "NotImplementedByServer",
    "OrchestratordError",
    "PoolActionAccepted",
    "PoolHealth",
    "ReplicaSet",
    "ServerError",
    "SessionInfo",
    "StartedEvent",
    "StreamEvent",
    "StreamInterrupted",
    "TaskRequest",
    "TaskStream",
    "TokenEvent",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "UnexpectedResponse",
    "completion",
    "event_name",
    "retrying",
    "retrying_async",
]
