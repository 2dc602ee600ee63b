"""Hostile files, flags and settings through the CLI: each is one ``error:`` line naming the problem, exit 2, nothing
written, no hang — never ``internal error:`` and never a traceback. No converter runs here (every case is refused
before conversion); the bundle cases use the session's tiny real bundle."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith("MOBILIZE_")}


def _cli(args: list[str], cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mobilize", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**BASE_ENV, "COLUMNS": "200", **(env or {})}, check=False)


def _error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The one-line error contract; returns the line."""
    where = f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-2000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    assert proc.returncode == 2, where
    assert "Traceback" not in proc.stderr + proc.stdout, where
    # progress lines ("[00:00] loading model", one per step when stderr is a log) aside, one error line
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not re.match(r"\[\d\d:\d\d\] ", ln)]
    assert len(lines) == 1 and lines[0].startswith("error:"), where
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in: {lines[0]}"
    return lines[0]


def _digest(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink() or not p.exists():
            out[rel] = "link"
        elif p.is_fifo():
            out[rel] = "fifo"
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


# --- files from anywhere -----------------------------------------------------------------------------------------


def _fifo(path: Path) -> Path:
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("member", ["tiny_fp32.onnx", "reference.npz", "manifest.json"])
def test_special_file_in_a_bundle_is_refused_without_hanging(bundle_copy: Path, member: str) -> None:
    _fifo(bundle_copy / member)
    before = _digest(bundle_copy.parent)
    _error(_cli(["verify", "b"], bundle_copy.parent, timeout=60), "FIFO")
    assert _digest(bundle_copy.parent) == before


@pytest.mark.slow
def test_a_huge_sparse_artifact_is_refused_before_reading(bundle_copy: Path) -> None:
    """A 3 GB sparse "model" (instant to create, minutes to hash): refused from its size, before any read."""
    with (bundle_copy / "tiny_fp32.onnx").open("r+b") as f:
        f.truncate(3 << 30)
    for cmd in (["verify", "b"], ["bench", "b", "--no-memory", "--no-baseline"]):
        _error(_cli(cmd, bundle_copy.parent, timeout=60), "more than any onnx file")


def _manifest_text(bundle: Path, text: str) -> None:
    (bundle / "manifest.json").write_text(text)


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda m: "[" * 100_000 + "]" * 100_000, "nested"),
    (lambda m: json.dumps(m).replace('"schema_version": 1', '"schema_version": 1e999'), "too large"),
    (lambda m: json.dumps(m).replace('"schema_version": 1', '"schema_version": ' + "9" * 5000), "too large"),
    (lambda m: json.dumps(m).replace('"schema_version": 1', '"schema_version": NaN'), "NaN"),
    (lambda m: json.dumps({**m, "artifacts": "everything"}), "artifacts"),
    (lambda m: json.dumps({**m, "model": {**m["model"], "inputs": [{"name": 5}]}}), "model/inputs"),
    (lambda m: json.dumps({**m, "artifacts": [{**m["artifacts"][0], "bytes": 10**25}]}), "manifest"),
], ids=["nested", "float-overflow", "huge-int", "nan", "wrong-type", "wrong-nested-type", "huge-size"])
@pytest.mark.slow
def test_hostile_manifest_is_a_one_line_error(bundle_copy: Path, edit, needle: str) -> None:  # noqa: ANN001
    m = json.loads((bundle_copy / "manifest.json").read_text())
    _manifest_text(bundle_copy, edit(m))
    for cmd in (["verify", "b"], ["bench", "b", "--no-memory", "--no-baseline"]):
        _error(_cli(cmd, bundle_copy.parent, timeout=60), needle)


def _lie_about_size(npz: Path, member: str, size: int) -> None:
    """Patch the central directory so ``member`` claims ``size`` uncompressed bytes (what a zip bomb declares)."""
    data = bytearray(npz.read_bytes())
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        name_len = int.from_bytes(data[pos + 28:pos + 30], "little")
        if data[pos + 46:pos + 46 + name_len].decode() == member:
            data[pos + 24:pos + 28] = size.to_bytes(4, "little")  # uncompressed size
            npz.write_bytes(bytes(data))
            return
        pos = data.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(f"{member} not found in {npz}")


def test_reference_bomb_is_refused_before_decompression(bundle_copy: Path) -> None:
    ref = bundle_copy / "reference.npz"
    with zipfile.ZipFile(ref) as z:
        member = next(n for n in z.namelist() if n.startswith("in0/"))
    _lie_about_size(ref, member, 0xFFFFFFF0)
    _error(_cli(["verify", "b"], bundle_copy.parent, timeout=60), "reference.npz")


def test_reference_array_header_lying_about_its_shape_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    """An .npy header may declare a shape far larger than its data (numpy would allocate the declared size)."""
    ref = bundle_copy / "reference.npz"
    with zipfile.ZipFile(ref) as z:
        members = {n: z.read(n) for n in z.namelist()}
    name = next(n for n in members if n.startswith("in0/"))
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    header["shape"] = (10**12,)
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    members[name] = buf.getvalue() + b"\x00" * 16
    with zipfile.ZipFile(ref, "w", zipfile.ZIP_DEFLATED) as z:
        for n, data in members.items():
            z.writestr(n, data)
    _error(_cli(["verify", "b"], bundle_copy.parent, timeout=60), "declares")


# --- output targets are checked before any work ------------------------------------------------------------------


@pytest.mark.parametrize(("target", "needle"), [("fifo", "FIFO"), ("folder", "is a folder"),
                                                ("missing/out.json", "does not exist")])
def test_unusable_json_target_fails_before_the_bundle_changes(bundle_copy: Path, target: str, needle: str) -> None:
    work = bundle_copy.parent
    if target == "fifo":
        _fifo(work / "fifo")
    elif target == "folder":
        (work / "folder").mkdir()
    before = _digest(work)
    _error(_cli(["export", "zoo:digits", "--formats", "onnx", "--precisions", "fp32", "--out", "b", "--json", target],
                work, timeout=60), "--json", needle)
    assert _digest(work) == before


@pytest.mark.slow
def test_unusable_report_dir_and_junit_fail_first(bundle_copy: Path) -> None:
    work = bundle_copy.parent
    (work / "afile").write_text("x")
    _fifo(work / "fifo.xml")
    before = _digest(work)
    _error(_cli(["bench", "b", "--report-dir", "afile", "--no-memory"], work, timeout=60), "--report-dir", "is a file")
    _error(_cli(["check", "--junit", "fifo.xml"], work, timeout=60), "--junit", "FIFO")
    _error(_cli(["check", "--summary", "afile/x.md"], work, timeout=60), "--summary")
    assert _digest(work) == before


# --- flags, budgets, settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "", "abc", "inf", "nan", "-5", "１０", "1e999"])
def test_bad_worker_timeout_is_a_one_line_error(tmp_path: Path, value: str) -> None:
    _error(_cli(["verify", "b"], tmp_path, env={"MOBILIZE_WORKER_TIMEOUT": value}, timeout=60),
           "MOBILIZE_WORKER_TIMEOUT")


@pytest.mark.parametrize(("name", "value"), [("MOBILIZE_WORKER_MEMORY_MB", "lots"),
                                             ("MOBILIZE_WORKER_MEMORY_MB", "-1"),
                                             ("MOBILIZE_CONVERT_TIMEOUT", "0")])
def test_other_bad_settings_are_one_line_errors(tmp_path: Path, name: str, value: str) -> None:
    _error(_cli(["verify", "b"], tmp_path, env={name: value}, timeout=60), name)


@pytest.mark.parametrize(("args", "needle"), [
    (["--budget", "latency_p90_ms=１５"], "not a number"),
    (["--budget", "size_mb=1,threads=²"], "positive integer"),
    (["--budget", "size_mb=1,threads=١"], "positive integer"),
    (["--budget", "size_mb=1,threads=100000"], "core"),
    (["--threads", "100000"], "core"),
    (["--threads", "99999999999999999999999"], "positive integer"),
    (["--threads", "٣"], "positive integer"),
    (["--min-runs", "99999999999"], "min-runs"),
], ids=["fullwidth-digits", "superscript", "arabic-indic", "budget-threads", "threads", "huge", "arabic-threads",
        "min-runs"])
def test_bad_bench_flags_are_one_line_errors(bundle_copy: Path, args: list[str], needle: str) -> None:
    before = _digest(bundle_copy)
    proc = _cli(["bench", "b", "--no-memory", *args], bundle_copy.parent, timeout=60)
    if needle == "min-runs":  # click's own usage error: exit 2, no traceback
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and "min-runs" in proc.stderr
    else:
        _error(proc, needle)
    assert _digest(bundle_copy) == before


@pytest.mark.parametrize(("toml", "needle"), [
    ('source = "zoo:digits"\n[bench]\nthreads = [1, 100000]\n', "core"),
    ('source = "zoo:digits"\n[budget]\nthreads = 100000\nsize_mb = 1\n', "budget.threads"),
    ('source = "zoo:digits"\nx = ' + "[" * 100_000 + "]" * 100_000 + "\n", "nested"),
    ('source = "zoo:digits"\n[bench]\nmin_runs = ' + "9" * 5000 + "\n", "mobilize.toml"),
    ('source = "zoo:digits"\n[bench]\nmin_seconds = 1e999\n', "too large"),
    ('source = "zoo:digits"\n[bench]\nmin_runs = 100000000000\n', "min_runs"),
], ids=["threads", "budget-threads", "nested", "huge-int", "float-overflow", "min-runs"])
def test_bad_config_is_a_one_line_error(tmp_path: Path, toml: str, needle: str) -> None:
    (tmp_path / "mobilize.toml").write_text(toml)
    before = _digest(tmp_path)
    _error(_cli(["check"], tmp_path, timeout=60), needle)
    assert _digest(tmp_path) == before


def test_fifo_config_is_refused_without_hanging(tmp_path: Path) -> None:
    _fifo(tmp_path / "mobilize.toml")
    _error(_cli(["check"], tmp_path, timeout=60), "FIFO")


# --- sources, checkpoints, calibration ---------------------------------------------------------------------------

BUILDERS = '''
import sys
import torch


class Boom(BaseException):
    pass


def exits():
    sys.exit(0)


def raises_base():
    raise Boom("not an Exception")


def on_meta():
    with torch.device("meta"):
        model = torch.nn.Linear(4, 3)
    return model, (torch.randn(1, 4),)


class ExitsInForward(torch.nn.Module):
    def forward(self, x):
        sys.exit(0)


def exits_in_forward():
    return ExitsInForward(), (torch.randn(1, 4),)


def image_model():
    import mobilize
    return mobilize.ModelSpec(module=torch.nn.Conv2d(3, 2, 3).eval(), example_inputs=(torch.randn(1, 3, 8, 8),),
                              input_names=["image"], normalization=mobilize.Normalization(mean=(0.5,) * 3,
                                                                                          std=(0.5,) * 3))
'''


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "models.py").write_text(BUILDERS)
    return tmp_path


@pytest.mark.parametrize(("fn", "needles"), [
    ("exits", ["exits()", "sys.exit"]),
    ("raises_base", ["Boom", "BaseException"]),
    ("on_meta", ["meta device", "to_empty"]),
    ("exits_in_forward", ["sys.exit"]),
])
@pytest.mark.slow
def test_misbehaving_builders_are_one_line_errors(workdir: Path, fn: str, needles: list[str]) -> None:
    before = _digest(workdir)
    _error(_cli(["export", f"models.py:{fn}", "--formats", "onnx", "--precisions", "fp32", "--out", "out"], workdir),
           *needles)
    assert _digest(workdir) == before and not (workdir / "out").exists()


@pytest.mark.slow
def test_float16_calibration_is_a_one_line_error(workdir: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(workdir / "calib.npz", image=rng.standard_normal((16, 1, 3, 8, 8)).astype(np.float16))
    before = _digest(workdir)
    _error(_cli(["export", "models.py:image_model", "--formats", "onnx", "--precisions", "int8", "--calibration",
                 "calib.npz", "--out", "out"], workdir), "float16", "float32", "astype")
    assert _digest(workdir) == before


@pytest.mark.slow
@pytest.mark.parametrize("where", ["source", "pt2", "weights", "calibration-npz", "calibration-image"])
def test_special_files_as_inputs_are_refused_without_hanging(workdir: Path, where: str) -> None:
    args = ["export", "models.py:image_model", "--formats", "onnx", "--precisions",
            "int8" if where.startswith("calibration") else "fp32", "--out", "out"]
    if where == "source":
        _fifo(workdir / "fifo_model.py")
        args[1] = "fifo_model.py:build"
    elif where == "pt2":
        args[1] = str(_fifo(workdir / "model.pt2"))
    elif where == "weights":
        args += ["--weights", str(_fifo(workdir / "w.safetensors"))]
    elif where == "calibration-npz":
        args += ["--calibration", str(_fifo(workdir / "c.npz"))]
    else:
        (workdir / "images").mkdir()
        _fifo(workdir / "images" / "a.png")
        args += ["--calibration", "images"]
    _error(_cli(args, workdir, timeout=120), "FIFO")


@pytest.mark.slow
def test_decompression_bomb_image_is_a_one_line_error(workdir: Path) -> None:
    """PIL refuses images above twice ``MAX_IMAGE_PIXELS`` (89 M pixels): a small PNG of 12000 × 12000 zeros."""
    from PIL import Image

    (workdir / "images").mkdir()
    Image.new("1", (12_000, 12_000)).save(workdir / "images" / "bomb.png")
    _error(_cli(["export", "models.py:image_model", "--formats", "onnx", "--precisions", "int8", "--calibration",
                 "images", "--out", "out"], workdir), "too large to decode")
