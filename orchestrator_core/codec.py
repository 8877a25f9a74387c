"""Plain-data codec for the core's values: dataclasses, enums and containers as JSON data.

The core's inputs (`inputs`), decisions and state snapshots are frozen dataclasses, enums,
tuples and scalars. `to_plain` turns any such value into data that `json.dumps` accepts
(dicts, lists, strings, numbers, booleans, None); `from_plain` reads it back given the type
it must be, using the dataclasses' own type hints. A dataclass is written as an object
tagged with its class name under `"@"`, so a union of dataclasses (an input event, a
terminal decision) reads back as the right one. The round trip is exact: reading back what
was written gives an equal value. It is what a replicated log or a snapshot store keeps.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from enum import Enum
from functools import cache
from typing import Any, TypeVar, Union

from orchestrator_core.errors import InvalidArgument

TAG = "@"
T = TypeVar("T")


def to_plain(value: object) -> Any:
    """`value` as JSON data (see the module docstring)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        plain: dict[str, Any] = {TAG: type(value).__name__}
        for field in _fields(type(value)):
            plain[field.name] = to_plain(getattr(value, field.name))
        return plain
    if isinstance(value, tuple | list):
        return [to_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): to_plain(item) for key, item in value.items()}
    raise InvalidArgument(f"cannot encode a {type(value).__name__}")


def from_plain(kind: Any, data: Any) -> Any:
    """Read `data` back as a value of type `kind` (a class or a typing annotation)."""
    origin = typing.get_origin(kind)
    if origin is Union or origin is types.UnionType:
        return _union(typing.get_args(kind), data)
    if origin is tuple:
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_plain(args[0], item) for item in _list(data))
        return tuple(from_plain(arg, item) for arg, item in zip(args, _list(data), strict=True))
    if origin is list:
        (item_kind,) = typing.get_args(kind)
        return [from_plain(item_kind, item) for item in _list(data)]
    if origin is dict:
        _, value_kind = typing.get_args(kind)
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"expected an object, got {data!r}")
        return {key: from_plain(value_kind, item) for key, item in data.items()}
    if kind is Any:
        return data
    if isinstance(kind, type) and issubclass(kind, Enum):
        return kind(data)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return _dataclass(kind, data)
    if kind is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    if kind in (bool, int, float, str) and type(data) is kind:
        return data
    if kind is type(None) and data is None:
        return None
    raise InvalidArgument(f"cannot read {data!r} as {kind!r}")


def decode(kind: type[T], data: Any) -> T:
    """`from_plain` for a class, typed."""
    value: T = from_plain(kind, data)
    return value


def _list(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise InvalidArgument(f"expected a list, got {data!r}")
    return data


def _union(options: tuple[Any, ...], data: Any) -> Any:
    if data is None and type(None) in options:
        return None
    if isinstance(data, Mapping) and TAG in data:
        for option in options:
            if isinstance(option, type) and option.__name__ == data[TAG]:
                return _dataclass(option, data)
        raise InvalidArgument(f"{data[TAG]!r} is none of {options!r}")
    for option in options:
        if option is type(None):
            continue
        try:
            return from_plain(option, data)
        except (InvalidArgument, ValueError):
            continue
    raise InvalidArgument(f"cannot read {data!r} as any of {options!r}")


def _dataclass(kind: type, data: Any) -> Any:
    if not isinstance(data, Mapping) or data.get(TAG) != kind.__name__:
        raise InvalidArgument(f"expected a {kind.__name__}, got {data!r}")
    hints = _hints(kind)
    values = {
        field.name: from_plain(hints[field.name], data[field.name]) for field in _fields(kind)
    }
    return kind(**values)


@cache
def _fields(kind: type) -> tuple[dataclasses.Field[Any], ...]:
    return tuple(field for field in dataclasses.fields(kind) if field.init)


@cache
def _hints(kind: type) -> dict[str, Any]:
    return typing.get_type_hints(kind)
