"""A run killed with SIGKILL cannot clean up; the next run does, and never loses a bundle."""

from __future__ import annotations

from pathlib import Path

from mobilize.bundle.writer import remove_stale, staged


def _bundle(path: Path, text: str) -> None:
    path.mkdir()
    (path / "manifest.json").write_text(text)


def test_dead_runs_leftovers_are_removed_live_ones_kept(tmp_path: Path) -> None:
    import os

    out = tmp_path / "b"
    _bundle(out, "current")
    dead = tmp_path / ".b.tmp-999999999-x"
    dead.mkdir()
    live = tmp_path / f".b.tmp-{os.getpid()}-y"
    live.mkdir()
    other = tmp_path / ".c.tmp-999999999-z"
    other.mkdir()
    removed = remove_stale(out)
    assert removed == [dead]
    assert live.exists() and other.exists() and (out / "manifest.json").read_text() == "current"


def test_killed_between_renames_restores_the_previous_bundle(tmp_path: Path) -> None:
    out = tmp_path / "b"
    _bundle(tmp_path / ".b.old-999999999-q", "previous")
    (tmp_path / ".b.old-999999998-e").mkdir()  # an empty leftover must not win
    remove_stale(out)
    assert (out / "manifest.json").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_next_run_cleans_up_and_swaps(tmp_path: Path) -> None:
    out = tmp_path / "b"
    _bundle(out, "old")
    (tmp_path / ".b.tmp-999999999-x").mkdir()
    with staged(out) as tmp:
        (tmp / "manifest.json").write_text("new")
    assert (out / "manifest.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
