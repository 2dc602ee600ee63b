"""Atomic bundle writing (mobilize.bundle.writer)."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import pytest

from mobilize.bundle.writer import check_target, remove_stale, staged, write_atomic
from mobilize.errors import BundleError


def _tree(root: Path) -> dict[str, bytes | None]:
    """Relative path → bytes (None for folders): a byte-level snapshot of a folder."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.fixture
def old_bundle(tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    (out / "m.mlpackage" / "Data").mkdir(parents=True)
    (out / "manifest.json").write_text('{"old": true}\n')
    (out / "m_fp32.onnx").write_bytes(b"\x00old-onnx\xff")
    (out / "m.mlpackage" / "Data" / "weights.bin").write_bytes(b"w" * 100)
    return out


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# --- staged ----------------------------------------------------------------------------------------------------


def test_staged_new_target(tmp_path: Path) -> None:
    out = tmp_path / "new"
    with staged(out) as tmp:
        assert tmp.parent == out.parent and tmp.name.startswith(".new.tmp-") and tmp.is_dir()
        assert not out.exists()  # nothing appears before the block ends
        (tmp / "manifest.json").write_text("{}")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.bin").write_bytes(b"abc")
    assert _tree(out) == {"manifest.json": b"{}", "sub": None, "sub/a.bin": b"abc"}
    assert _siblings(out) == []


def test_staged_success_replaces_previous_bundle(old_bundle: Path) -> None:
    with staged(old_bundle) as tmp:
        (tmp / "manifest.json").write_text('{"new": true}\n')
        (tmp / "m_fp16.onnx").write_bytes(b"new")
        assert (old_bundle / "m_fp32.onnx").read_bytes() == b"\x00old-onnx\xff"  # old one intact meanwhile
    assert _tree(old_bundle) == {"manifest.json": b'{"new": true}\n', "m_fp16.onnx": b"new"}
    assert _siblings(old_bundle) == []


@pytest.mark.parametrize("exc", [RuntimeError("converter crashed"), KeyboardInterrupt()])
def test_staged_failure_leaves_previous_bundle_byte_identical(old_bundle: Path, exc: BaseException) -> None:
    before = _tree(old_bundle)
    mtimes = {p: p.stat().st_mtime_ns for p in old_bundle.rglob("*")}
    with pytest.raises(type(exc)), staged(old_bundle) as tmp:
        (tmp / "manifest.json").write_text('{"new": true}\n')
        (tmp / "half.onnx").write_bytes(b"partial")
        raise exc
    assert _tree(old_bundle) == before
    assert {p: p.stat().st_mtime_ns for p in old_bundle.rglob("*")} == mtimes
    assert _siblings(old_bundle) == []


def test_staged_failure_on_new_target_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "fresh"
    with pytest.raises(ValueError), staged(out) as tmp:
        (tmp / "x").write_text("x")
        raise ValueError("nope")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_staged_refuses_a_foreign_folder_before_staging(tmp_path: Path) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(BundleError, match="not a mobilize bundle"), staged(out):
        pytest.fail("the block must not run")
    assert _tree(out) == {"holiday.jpg": b"jpeg"}
    assert _siblings(out) == []


def test_staged_replaces_an_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    with staged(out) as tmp:
        (tmp / "manifest.json").write_text("{}")
    assert _tree(out) == {"manifest.json": b"{}"}


def test_staged_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with staged(Path("rel")) as tmp:
        (tmp / "manifest.json").write_text("{}")
    assert (tmp_path / "rel" / "manifest.json").read_text() == "{}"
    assert _siblings(tmp_path / "rel") == []


def test_staged_bundle_gets_ordinary_permissions(tmp_path: Path) -> None:
    out = tmp_path / "perm"
    with _umask(0o022), staged(out) as tmp:
        (tmp / "manifest.json").write_text("{}")
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


DEAD_PID = 99_999_999  # above any pid_max: os.kill reports no such process


def _stale(out: Path, kind: str, pid: int, *, manifest: bool = False) -> Path:
    d = out.parent / f".{out.name}.{kind}-{pid}-abc123"
    d.mkdir()
    (d / "x.onnx").write_bytes(b"partial")
    if manifest:
        (d / "manifest.json").write_text('{"previous": true}')
    return d


def test_staged_removes_staging_folders_of_dead_runs(old_bundle: Path) -> None:
    before = _tree(old_bundle)
    dead_tmp = _stale(old_bundle, "tmp", DEAD_PID)
    dead_old = _stale(old_bundle, "old", DEAD_PID, manifest=True)  # the bundle exists: a leftover, not a backup
    with staged(old_bundle) as tmp:
        assert not dead_tmp.exists() and not dead_old.exists()
        (tmp / "manifest.json").write_text("{}")
    assert _tree(old_bundle) == {"manifest.json": b"{}"} != before
    assert _siblings(old_bundle) == []


def test_remove_stale_keeps_folders_of_live_runs_and_foreign_names(old_bundle: Path) -> None:
    live = _stale(old_bundle, "tmp", os.getpid())
    odd = old_bundle.parent / f".{old_bundle.name}.tmp-notapid-x"
    odd.mkdir()
    other = old_bundle.parent / f".{old_bundle.name}v2.tmp-{DEAD_PID}-x"  # another bundle's staging folder
    other.mkdir()
    assert remove_stale(old_bundle) == []
    assert live.is_dir() and odd.is_dir() and other.is_dir()


def test_remove_stale_restores_a_bundle_caught_mid_swap(tmp_path: Path) -> None:
    out = tmp_path / "bundle"  # killed after `out → .old` and before `.tmp → out`
    backup = _stale(out, "old", DEAD_PID, manifest=True)
    half = _stale(out, "tmp", DEAD_PID)
    remove_stale(out)
    assert (out / "manifest.json").read_text() == '{"previous": true}'
    assert not backup.exists() and not half.exists()


def test_remove_stale_ignores_symlinks(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    (tmp_path / f".bundle.tmp-{DEAD_PID}-x").symlink_to(victim, target_is_directory=True)
    remove_stale(out)
    assert (victim / "keep.txt").read_text() == "keep"


# --- check_target ----------------------------------------------------------------------------------------------


def test_check_target_accepts(tmp_path: Path, old_bundle: Path) -> None:
    check_target(tmp_path / "does-not-exist-yet")
    (tmp_path / "empty").mkdir()
    check_target(tmp_path / "empty")
    check_target(old_bundle)  # a previous bundle may be replaced


def test_check_target_refuses_symlink(tmp_path: Path, old_bundle: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(old_bundle, target_is_directory=True)
    with pytest.raises(BundleError, match="is a symlink"):
        check_target(link)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(BundleError, match="is a symlink"):
        check_target(dangling)


def test_check_target_refuses_file(tmp_path: Path) -> None:
    f = tmp_path / "model.onnx"
    f.write_bytes(b"x")
    with pytest.raises(BundleError, match="is a file, not a folder"):
        check_target(f)


def test_check_target_refuses_non_bundle_folder(tmp_path: Path) -> None:
    d = tmp_path / "src"
    d.mkdir()
    (d / "main.py").write_text("print()")
    with pytest.raises(BundleError, match="non-empty folder that is not a mobilize bundle"):
        check_target(d)
    (d / "manifest.json").mkdir()  # a folder named manifest.json does not count
    with pytest.raises(BundleError):
        check_target(d)


def test_check_target_refuses_missing_parent(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="parent folder .* does not exist"):
        check_target(tmp_path / "no" / "such" / "bundle")


def test_check_target_refuses_read_only_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod cannot take write access away from root, so ask os.access directly
    from mobilize.bundle import writer

    parent = tmp_path / "ro"
    parent.mkdir()
    real = os.access
    monkeypatch.setattr(writer.os, "access", lambda p, mode: False if Path(p) == parent else real(p, mode))
    with pytest.raises(BundleError, match="parent folder .* is not writable"):
        check_target(parent / "bundle")
    check_target(tmp_path / "bundle")  # other parents are still fine


# --- write_atomic ----------------------------------------------------------------------------------------------


def test_write_atomic_creates_and_replaces(tmp_path: Path) -> None:
    p = tmp_path / "manifest.json"
    write_atomic(p, b"first")
    assert p.read_bytes() == b"first"
    write_atomic(p, b"second, longer content")
    assert p.read_bytes() == b"second, longer content"
    write_atomic(p, b"")
    assert p.read_bytes() == b""
    assert [x.name for x in tmp_path.iterdir()] == ["manifest.json"]  # no temp files left behind


def test_write_atomic_failure_keeps_old_content(tmp_path: Path) -> None:
    p = tmp_path / "manifest.json"
    p.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(p, "not bytes")  # type: ignore[arg-type]
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["manifest.json"]


def test_write_atomic_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "nope" / "f", b"x")


def test_write_atomic_gets_ordinary_permissions(tmp_path: Path) -> None:
    p = tmp_path / "f.json"
    with _umask(0o022):
        write_atomic(p, b"{}")
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_an_interrupt_a_library_swallowed_still_keeps_the_previous_bundle(tmp_path, monkeypatch) -> None:
    """Ctrl-C raises KeyboardInterrupt wherever the main thread is; a library's bare ``except:`` (around an optional
    import, say) can swallow it and the export would go on to replace the bundle. The CLI's handler latches it."""
    import contextlib
    import signal

    from mobilize import guard
    from mobilize.bundle.writer import staged

    monkeypatch.setattr(guard, "_INTERRUPTED", [])
    out = tmp_path / "b"
    out.mkdir()
    (out / "manifest.json").write_text("old")
    with pytest.raises(KeyboardInterrupt), staged(out) as tmp:
        (tmp / "manifest.json").write_text("new")
        with contextlib.suppress(BaseException):  # what a library's bare `except: pass` does
            guard._on_sigint(signal.SIGINT, None)
    assert (out / "manifest.json").read_text() == "old"
    assert not list(tmp_path.glob(".b.tmp-*"))
