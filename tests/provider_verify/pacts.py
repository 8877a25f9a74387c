"""The consumer pacts of contracts/pacts/: loading, placeholders and matching.

The format (``orchestratord-pact/1``) is defined by ``contracts/pacts/pact.schema.json``;
this module gives it meaning. :func:`substitute` fills ``{{name}}`` placeholders from the
bindings of one replay, and :func:`mismatches` compares an actual JSON value (or header,
or text) with an expectation, returning every difference as a readable line so a failed
verification says exactly which expectation of which consumer broke.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACTS_DIR = Path(__file__).resolve().parents[2] / "contracts" / "pacts"
SCHEMA_PATH = PACTS_DIR / "pact.schema.json"
_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")
_JSON_TYPES: Mapping[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}
_REPEATS = {"1": (1, 1), "0+": (0, None), "1+": (1, None)}


@dataclass(frozen=True)
class Interaction:
    """One interaction of one consumer's pact."""

    consumer: str
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def state(self) -> str:
        return str(self.data["provider_state"]["name"])

    @property
    def state_params(self) -> dict[str, Any]:
        return dict(self.data["provider_state"].get("params", {}))

    @property
    def request(self) -> dict[str, Any]:
        return dict(self.data["request"])

    @property
    def response(self) -> dict[str, Any]:
        return dict(self.data["response"])


def pact_files() -> list[Path]:
    """Every pact in contracts/pacts/ (the format's own schema excluded)."""
    return sorted(p for p in PACTS_DIR.glob("*.json") if p != SCHEMA_PATH)


def load_pact(path: Path) -> dict[str, Any]:
    pact: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return pact


def interactions() -> list[Interaction]:
    """Every interaction of every pact, in file order."""
    found: list[Interaction] = []
    for path in pact_files():
        pact = load_pact(path)
        found.extend(Interaction(pact["consumer"], item) for item in pact["interactions"])
    return found


def substitute(value: Any, bindings: Mapping[str, Any]) -> Any:
    """``value`` with every ``{{name}}`` placeholder replaced from ``bindings``.

    A string that is exactly one placeholder becomes the bound value itself (its JSON type
    kept); a placeholder inside a longer string is replaced by the value's text. Matcher
    objects are walked like any other object, so their literals are substituted too.
    """
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole:
            return bindings[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(bindings[m.group(1)]), value)
    if isinstance(value, list):
        return [substitute(item, bindings) for item in value]
    if isinstance(value, dict):
        return {key: substitute(item, bindings) for key, item in value.items()}
    return value


def _is_matcher(expected: Any) -> bool:
    return isinstance(expected, dict) and "$match" in expected


def _same_literal(actual: Any, expected: Any) -> bool:
    """JSON equality: ``True`` is not ``1``."""
    return type(actual) is type(expected) and actual == expected


def _match(actual: Any, matcher: dict[str, Any], where: str) -> list[str]:
    kind = matcher["$match"]
    if kind == "type":
        types = _JSON_TYPES[matcher["type"]]
        is_bool = isinstance(actual, bool)
        if not isinstance(actual, types) or (is_bool and matcher["type"] != "boolean"):
            return [f"{where}: expected a {matcher['type']}, got {actual!r}"]
        if "min" in matcher and actual < matcher["min"]:
            return [f"{where}: expected at least {matcher['min']}, got {actual!r}"]
        return []
    if kind == "regex":
        if not isinstance(actual, str) or not re.fullmatch(matcher["regex"], actual):
            return [f"{where}: expected a string matching {matcher['regex']!r}, got {actual!r}"]
        return []
    if kind == "one_of":
        if not any(_same_literal(actual, value) for value in matcher["values"]):
            return [f"{where}: expected one of {matcher['values']!r}, got {actual!r}"]
        return []
    if not isinstance(actual, list):
        return [f"{where}: expected an array, got {actual!r}"]
    if kind == "each":
        problems = [
            line
            for index, item in enumerate(actual)
            for line in mismatches(item, matcher["item"], f"{where}[{index}]")
        ]
        if len(actual) < matcher.get("min_items", 0):
            problems.append(f"{where}: expected at least {matcher['min_items']} items")
        return problems
    return [
        f"{where}: no item matches {wanted!r} in {actual!r}"
        for wanted in matcher["items"]
        if all(mismatches(item, wanted, where) for item in actual)
    ]


def mismatches(actual: Any, expected: Any, where: str = "$") -> list[str]:
    """Every way ``actual`` differs from the (already substituted) ``expected``."""
    if _is_matcher(expected):
        return _match(actual, expected, where)
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {actual!r}"]
        problems = []
        for key, wanted in expected.items():
            if key not in actual:
                problems.append(f"{where}.{key}: missing")
            else:
                problems.extend(mismatches(actual[key], wanted, f"{where}.{key}"))
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: expected {len(expected)} items, got {actual!r}"]
        return [
            line
            for index, (item, wanted) in enumerate(zip(actual, expected, strict=True))
            for line in mismatches(item, wanted, f"{where}[{index}]")
        ]
    if not _same_literal(actual, expected):
        return [f"{where}: expected {expected!r}, got {actual!r}"]
    return []


def header_mismatches(headers: Mapping[str, str], expected: Mapping[str, Any]) -> list[str]:
    """Headers that are missing or do not match (``headers`` is case-insensitive)."""
    problems = []
    for name, wanted in expected.items():
        value = headers.get(name)
        if value is None:
            problems.append(f"header {name}: missing")
        else:
            problems.extend(mismatches(value, wanted, f"header {name}"))
    return problems


def event_mismatches(events: list[tuple[str, Any]], stream: Mapping[str, Any]) -> list[str]:
    """Compare ``(event, data)`` pairs with a pact's stream steps, in order.

    Events named in ``ignore`` are dropped first. A step with ``repeat`` takes as many
    consecutive events of its name as it allows (greedily); each taken event's data must
    match the step's ``data``.
    """
    ignored = set(stream.get("ignore", []))
    kept = [(name, data) for name, data in events if name not in ignored]
    problems: list[str] = []
    position = 0
    for number, step in enumerate(stream["events"]):
        low, high = _REPEATS[step.get("repeat", "1")]
        taken = 0
        while (
            position < len(kept)
            and kept[position][0] == step["event"]
            and (high is None or taken < high)
        ):
            if "data" in step:
                where = f"event {position} ({step['event']})"
                problems.extend(mismatches(kept[position][1], step["data"], where))
            position += 1
            taken += 1
        if taken < low:
            names = [name for name, _ in kept]
            problems.append(f"step {number}: expected {step['event']!r} at {position} in {names}")
            return problems
    if position != len(kept):
        problems.append(f"unexpected events after the last step: {kept[position:]}")
    return problems
