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


def test_full_disk_mid_export_keeps_the_previous_bundle(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """ENOSPC while the bundle is being written: a typed one-line error, the old bundle intact, no temp folders."""
    import errno

    import pytest
    import torch

    from mobilize import api
    from mobilize.errors import BundleError
    from mobilize.spec import ModelSpec
    from mobilize.verify.parity import Reference

    out = tmp_path / "b"
    _bundle(out, "previous")

    def no_space(self, path):  # noqa: ANN001, ANN202
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(Reference, "save", no_space)
    spec = ModelSpec(module=torch.nn.Linear(3, 2).eval(), example_inputs=(torch.randn(1, 3),), name="lin")
    with pytest.raises(BundleError, match="No space left on device") as info:
        api.export(spec, out, formats="onnx", precisions="fp32")
    assert "\n" not in str(info.value) and "untouched" in str(info.value)
    assert (out / "manifest.json").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
