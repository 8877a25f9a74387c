"""The codec reads back exactly what it wrote, and refuses what does not fit the type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from orchestrator_core import InvalidArgument, Priority, ProbeReport, TaskFigures
from orchestrator_core.codec import decode, from_plain, to_plain


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    weights: tuple[float, ...]
    pairs: tuple[int, str]
    tags: dict[str, int]
    items: list[Priority]
    extra: Any
    maybe: int | None = None


def test_a_dataclass_round_trips_with_every_container() -> None:
    value = Sample("x", (1.0, 2.5), (3, "y"), {"a": 1}, [Priority.BATCH], {"free": [1]}, 4)
    plain = to_plain(value)
    assert plain["@"] == "Sample" and plain["weights"] == [1.0, 2.5]
    assert decode(Sample, plain) == value


def test_a_whole_number_reads_back_as_a_float_where_one_is_due() -> None:
    plain = to_plain(ProbeReport(True, True, kv_usage=1.0)) | {"kv_usage": 1}
    assert decode(ProbeReport, plain).kv_usage == 1.0


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        (int, True),  # a bool is not an int here
        (int, "1"),
        (str, None),
        (tuple[int, ...], {"no": "list"}),
        (dict[str, int], [1]),
        (list[int], "no"),
        (TaskFigures, {"@": "Other"}),
        (TaskFigures | None, {"@": "Other", "x": 1}),
        (int | str, 1.5),
        (type(None), 0),
        (set[int], [1]),
    ],
)
def test_what_does_not_fit_is_refused(kind: Any, data: Any) -> None:
    with pytest.raises((InvalidArgument, ValueError)):
        from_plain(kind, data)


def test_enums_and_none_are_plain_values() -> None:
    assert to_plain(Priority.BATCH) == "batch"
    assert from_plain(Priority, "batch") is Priority.BATCH
    assert from_plain(type(None), None) is None


def test_values_it_cannot_write_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        to_plain(object())
    assert to_plain({"k": (1, None)}) == {"k": [1, None]}
