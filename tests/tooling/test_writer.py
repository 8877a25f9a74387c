"""Generate-or-check: writing, staleness with a diff summary, and leftover files."""

from __future__ import annotations

from pathlib import Path

from codegen import writer


def test_write_then_check_is_clean(tmp_path: Path) -> None:
    outputs = [writer.Output("a/b.txt", "one\n")]
    assert [o.state for o in writer.apply(tmp_path, outputs, check=False)] == ["written"]
    assert (tmp_path / "a/b.txt").read_text() == "one\n"
    assert [o.state for o in writer.apply(tmp_path, outputs, check=True)] == ["unchanged"]


def test_check_reports_missing_and_stale_files_without_writing(tmp_path: Path) -> None:
    (tmp_path / "stale.txt").write_text("one\ntwo\n")
    outcomes = writer.apply(
        tmp_path,
        [writer.Output("stale.txt", "one\nthree\n"), writer.Output("missing.txt", "x\n")],
        check=True,
    )
    stale, missing = outcomes
    assert (stale.state, missing.state) == ("stale", "missing")
    assert stale.failed and missing.failed
    assert stale.detail.splitlines()[0] == "+1 -1 lines"
    assert "-two" in stale.detail and "+three" in stale.detail
    assert (tmp_path / "stale.txt").read_text() == "one\ntwo\n"
    assert not (tmp_path / "missing.txt").exists()


def test_long_diffs_are_cut_short(tmp_path: Path) -> None:
    summary = writer.diff_summary("".join(f"{i}\n" for i in range(100)), "", "f", max_lines=5)
    assert summary.startswith("+0 -100 lines\n")
    assert summary.endswith("more diff lines")


def test_leftovers_in_an_owned_directory_are_reported_or_removed(tmp_path: Path) -> None:
    owned = tmp_path / "gen"
    owned.mkdir()
    (owned / "old.py").write_text("x = 1\n")
    (owned / "__pycache__").mkdir()
    (owned / "__pycache__/kept.pyc").write_bytes(b"")
    outputs = [writer.Output("gen/new.py", "y = 2\n")]
    checked = writer.apply(tmp_path, outputs, check=True, owned_dir="gen")
    assert [(o.path, o.state) for o in checked] == [
        ("gen/new.py", "missing"),
        ("gen/old.py", "unexpected"),
    ]
    written = writer.apply(tmp_path, outputs, check=False, owned_dir="gen")
    assert [(o.path, o.state) for o in written] == [
        ("gen/new.py", "written"),
        ("gen/old.py", "removed"),
    ]
    assert not (owned / "old.py").exists()
    assert (owned / "__pycache__/kept.pyc").exists()
