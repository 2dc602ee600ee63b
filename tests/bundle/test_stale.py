"""A run killed with SIGKILL cannot clean up; the next run does, and never loses a bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def _no_space_for_models(monkeypatch) -> None:  # noqa: ANN001
    """Writing an ``.onnx`` file into a staging folder fails with ENOSPC, as on a disk that fills up during the
    converter's write (the partial file is then removed, so the small manifest written next would still fit). The
    converters run in a forked child, which inherits the patch: the fault lands in the converter's own write."""
    import errno
    from pathlib import Path as _Path

    real = _Path.write_bytes

    def write_bytes(self, data):  # noqa: ANN001, ANN202
        if ".tmp-" in str(self) and self.suffix == ".onnx":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, data)

    monkeypatch.setattr(_Path, "write_bytes", write_bytes)


@pytest.mark.slow
def test_full_disk_in_the_converter_keeps_the_previous_bundle(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """ENOSPC raised inside the ONNX converter's write: not "one failed artifact" (that would replace a good bundle
    with a bundle of 0 artifacts) but the end of the run, with the previous bundle byte-identical."""
    import torch

    from mobilize import api
    from mobilize.errors import BundleError
    from mobilize.spec import ModelSpec

    out = tmp_path / "b"
    _bundle(out, "previous")
    (out / "model.onnx").write_bytes(b"old model bytes")
    _no_space_for_models(monkeypatch)
    spec = ModelSpec(module=torch.nn.Linear(3, 2).eval(), example_inputs=(torch.randn(1, 3),), name="lin")
    with pytest.raises(BundleError, match="No space left on device") as info:
        api.export(spec, out, formats="onnx", precisions="fp32,fp16")
    assert "\n" not in str(info.value)
    assert (out / "manifest.json").read_text() == "previous"
    assert (out / "model.onnx").read_bytes() == b"old model bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
