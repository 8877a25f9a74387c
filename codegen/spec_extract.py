"""Parse `.specs/orchestrator-spec.md` into requirements and render `requirements/index.yaml`.

The spec format: `## <Section>` headings; per requirement an anchor line
`<a id="orch-NNNN"></a>` right before `### ORCH-NNNN — <title>`, then (after blank lines)
`**Level:** <level> · **Home:** <homes> · **Seed:** yes|no`. Fenced code blocks are
skipped. Every deviation is reported with its line number; nothing is guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from codegen import layout
from codegen.contracts import sha256_hex
from codegen.errors import CodegenError

HEADING = re.compile(r"^### (ORCH-\d{4}) — (.+)$")
ANCHOR = re.compile(r'^<a id="(orch-\d{4})"></a>$')
LEVEL = re.compile(
    r"^\*\*Level:\*\* (MUST|SHOULD|MAY|INFO|MAY/MUST|SHOULD/MUST)"
    r" · \*\*Home:\*\* ([a-z, ]+) · \*\*Seed:\*\* (yes|no)$"
)
SECTION = re.compile(r"^## (.+)$")
_LOOSE_HEADING = re.compile(r"^#{1,6}\s*ORCH-")


@dataclass(frozen=True)
class Requirement:
    """One requirement block of the spec."""

    id: str
    title: str
    level: str
    home: tuple[str, ...]
    seed: bool
    section: str
    anchor: str


@dataclass(frozen=True)
class Spec:
    """The parsed spec: its requirements in document order and the source's sha256."""

    requirements: tuple[Requirement, ...]
    sha256: str

    @property
    def ids(self) -> frozenset[str]:
        """Every requirement id the spec defines."""
        return frozenset(r.id for r in self.requirements)


def _unfenced(lines: list[str]) -> list[tuple[int, str]]:
    """(1-based line number, line) for every line outside ``` / ~~~ fences."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(lines, start=1):
        stripped = line.lstrip()
        marker = stripped[:3]
        if marker in ("```", "~~~"):
            fence = None if fence == marker else (fence or marker)
            continue
        if fence is None:
            out.append((number, line))
    return out


def parse(text: str, where: str = layout.SPEC) -> tuple[Requirement, ...]:
    """The requirements of a spec text, in document order; all format errors at once."""
    lines = text.splitlines()
    errors: list[str] = []
    found: list[Requirement] = []
    seen: dict[str, int] = {}
    section = ""
    visible = _unfenced(lines)
    for index, (number, line) in enumerate(visible):
        section_match = SECTION.match(line)
        if section_match:
            section = section_match.group(1).strip()
            continue
        anchor_match = ANCHOR.match(line)
        if anchor_match:
            following = visible[index + 1][1] if index + 1 < len(visible) else ""
            heading = HEADING.match(following)
            if not heading or heading.group(1).lower() != anchor_match.group(1):
                errors.append(f"{where}:{number}: anchor not followed by its ### heading")
            continue
        if not _LOOSE_HEADING.match(line):
            continue
        heading = HEADING.match(line)
        if not heading:
            errors.append(f"{where}:{number}: malformed heading (want '### ORCH-NNNN — Title')")
            continue
        req_id, title = heading.group(1), heading.group(2).strip()
        previous = lines[number - 2] if number >= 2 else ""
        if previous != f'<a id="{req_id.lower()}"></a>':
            errors.append(f'{where}:{number}: {req_id} needs <a id="{req_id.lower()}"></a> before')
        if req_id in seen:
            errors.append(f"{where}:{number}: {req_id} already defined at line {seen[req_id]}")
        seen.setdefault(req_id, number)
        if not section:
            errors.append(f"{where}:{number}: {req_id} is outside any ## section")
        level_line = next((text for _, text in visible[index + 1 :] if text.strip()), "")
        level = LEVEL.match(level_line)
        if not level:
            errors.append(f"{where}:{number}: {req_id} lacks its **Level:** · **Home:** line")
            continue
        home = tuple(h.strip() for h in level.group(2).split(","))
        if not all(home):
            errors.append(f"{where}:{number}: {req_id} has an empty home")
        found.append(
            Requirement(
                id=req_id,
                title=title,
                level=level.group(1),
                home=home,
                seed=level.group(3) == "yes",
                section=section,
                anchor=req_id.lower(),
            )
        )
    if errors:
        raise CodegenError("spec format errors:\n  " + "\n  ".join(errors))
    if not found:
        raise CodegenError(f"{where}: no requirement blocks found")
    return tuple(found)


def load(root: Path) -> Spec:
    """Read and parse the repository's spec."""
    path = root / layout.SPEC
    if not path.is_file():
        raise CodegenError(f"{layout.SPEC}: spec not found")
    raw = path.read_bytes()
    return Spec(requirements=parse(raw.decode("utf-8")), sha256=sha256_hex(raw))


def render_index(spec: Spec) -> str:
    """`requirements/index.yaml`: a header comment and the requirements sorted by id."""
    entries = [
        {
            "id": r.id,
            "title": r.title,
            "level": r.level,
            "home": list(r.home),
            "seed": r.seed,
            "section": r.section,
            "anchor": r.anchor,
        }
        for r in sorted(spec.requirements, key=lambda r: r.id)
    ]
    header = (
        "# Generated by codegen. Do not edit: run `python xtask.py spec-extract`.\n"
        f"# Source (sha256): {spec.sha256}  {layout.SPEC}\n"
    )
    body = yaml.safe_dump(
        {"requirements": entries},
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=10_000,
    )
    return header + body
