"""Cheaper construction of the core's frozen, slotted records (its decisions).

A frozen dataclass refuses every assignment in its `__setattr__`, so the `__init__` that
`dataclass` writes sets each field through `object.__setattr__`. A slotted class can set
a field through the field's slot descriptor instead, at a fraction of the cost; the core
builds several records per task, so `quick_init` gives such a class an `__init__` that
does that. It takes the same parameters with the same defaults and builds the same
object; the class stays frozen (assigning to a field afterwards still raises
`FrozenInstanceError`), and every other method `dataclass` wrote stays as it was.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

_Record = TypeVar("_Record", bound=type)


def quick_init(cls: _Record) -> _Record:
    """Replace the `__init__` of a frozen, slotted dataclass without `__post_init__`
    (whose fields are plain positional-or-keyword ones) by one that fills its slots
    directly."""
    params: Any = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in vars(cls):
        raise TypeError(f"{cls.__name__}: quick_init takes a frozen, slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: quick_init cannot run __post_init__")
    scope: dict[str, Any] = {}
    arguments: list[str] = []
    body: list[str] = []
    for field in dataclasses.fields(cls):
        if not field.init or field.kw_only or field.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{field.name}: quick_init takes plain fields")
        name = field.name
        scope[f"_set_{name}"] = vars(cls)[name].__set__
        if field.default is dataclasses.MISSING:
            arguments.append(name)
        else:
            scope[f"_default_{name}"] = field.default
            arguments.append(f"{name}=_default_{name}")
        body.append(f"    _set_{name}(self, {name})")
    exec(f"def __init__(self, {', '.join(arguments)}):\n" + "\n".join(body), scope)
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    record: Any = cls
    init.__annotations__ = dict(record.__init__.__annotations__)
    record.__init__ = init
    return cls
