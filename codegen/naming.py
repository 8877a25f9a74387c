"""Python identifiers for contract names: classes, enum members, fields, string literals."""

from __future__ import annotations

import keyword
import re
import textwrap

from pydantic import BaseModel

_NON_WORD = re.compile(r"[^0-9A-Za-z]+")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_RESERVED_FIELDS = frozenset(dir(BaseModel))


def pascal(text: str) -> str:
    """`createTask` -> `CreateTask`, `kv_hint` -> `KvHint`; a leading digit gets `N`."""
    parts = [p for p in _NON_WORD.split(text) if p]
    name = "".join(p[0].upper() + p[1:] for p in parts) or "Unnamed"
    return f"N{name}" if name[0].isdigit() else name


def class_name(schema_name: str) -> str:
    """The class for a components schema: its own name when that is a valid identifier."""
    if schema_name.isidentifier() and not keyword.iskeyword(schema_name):
        return schema_name
    return pascal(schema_name)


def enum_member(value: str) -> str:
    """`drop-lru` -> `DROP_LRU`; a leading digit gets `V_`, an empty value is `EMPTY`."""
    spaced = _CAMEL_BOUNDARY.sub("_", value)
    name = "_".join(p for p in _NON_WORD.split(spaced) if p).upper() or "EMPTY"
    return f"V_{name}" if name[0].isdigit() else name


def field_name(prop: str) -> tuple[str, str | None]:
    """The attribute for a JSON property and the alias it needs (None when it needs none)."""
    if prop.isidentifier() and not keyword.iskeyword(prop) and not prop.startswith("_"):
        name = prop
    else:
        spaced = _CAMEL_BOUNDARY.sub("_", prop)
        name = "_".join(p for p in _NON_WORD.split(spaced) if p).lower() or "field"
        if name[0].isdigit():
            name = f"f_{name}"
    if keyword.iskeyword(name) or name in _RESERVED_FIELDS:
        name = f"{name}_"
    return name, (None if name == prop else prop)


def string_literal(text: str, single: int = 72, chunk: int = 64) -> str:
    """An ASCII-only Python string literal; a long one as implicit concatenation in parens.

    Ruff formats but never splits strings, so long descriptions are cut at word
    boundaries here to keep generated lines within the line-length limit. Non-ASCII
    characters are escaped so ruff's ambiguous-character rules never fire on them.
    """
    if len(text) <= single:
        return ascii(text)
    pieces: list[str] = []
    current = ""
    for word in re.findall(r"\S+\s*|\s+", text):
        if current and len(current) + len(word) > chunk:
            pieces.append(current)
            current = ""
        current += word
    if current:
        pieces.append(current)
    return "(" + " ".join(ascii(p) for p in pieces) + ")"


_STRUCTURED = re.compile(r"^\s*(?:[-*|>]|\d+\.)\s")


def _wrap_line(line: str, width: int) -> list[str]:
    """One description line wrapped to `width`; list items and table rows hang by two."""
    if len(line) <= width:
        return [line.rstrip()]
    lead = line[: len(line) - len(line.lstrip())]
    hang = lead + ("  " if _STRUCTURED.match(line) else "")
    return textwrap.wrap(
        line.strip(),
        width=width,
        initial_indent=lead,
        subsequent_indent=hang,
        break_long_words=False,
        break_on_hyphens=False,
    )


def docstring(text: str, indent: str, width: int = 92) -> str:
    """An ASCII-only docstring keeping the text's line breaks, long lines wrapped to `width`."""
    escaped = text.strip().replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    escaped = escaped.encode("ascii", "backslashreplace").decode("ascii")
    lines: list[str] = []
    for line in escaped.splitlines():
        lines += _wrap_line(line, width - len(indent) - 3) if line.strip() else [""]
    if len(lines) == 1 and not lines[0].endswith('"'):
        return f'{indent}"""{lines[0]}"""'
    body = "\n".join(f"{indent}{line}" if line else "" for line in lines[1:])
    return f'{indent}"""{lines[0]}\n{body}\n{indent}"""'
