"""Operation handlers, one method per contract operationId, collected into a table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestratord_server.generated.operations import OPERATIONS
from orchestratord_server.handlers.control import ControlPlane
from orchestratord_server.handlers.data import DataPlane
from orchestratord_server.handlers.openai import OpenAICompat
from orchestratord_server.handlers.ops import Operations
from orchestratord_server.state import ServerState


def handler_table(state: ServerState) -> dict[str, Callable[..., Any]]:
    """Map every operationId of both contracts to its handler.

    Raises LookupError naming any operation no handler object implements, so a contract
    operation can never be silently unrouted.
    """
    providers = (DataPlane(state), OpenAICompat(state), ControlPlane(state), Operations(state))
    table: dict[str, Callable[..., Any]] = {}
    missing = []
    for operation_id in OPERATIONS:
        for provider in providers:
            handler = getattr(provider, operation_id, None)
            if handler is not None:
                table[operation_id] = handler
                break
        else:
            missing.append(operation_id)
    if missing:
        raise LookupError(f"no handler for operations: {', '.join(sorted(missing))}")
    return table
