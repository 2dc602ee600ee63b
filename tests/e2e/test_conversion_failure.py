"""One converter fails on one op; the others still deliver (task 6). Fixture: tests/fixtures/models/unsupported_ops.py.

- ``fmod_model``: ``torch.fmod`` inside ``head.phase`` — Core ML cannot convert it; ONNX and TFLite can. Exported
  with ``--no-repair`` (the converter's own failure); without it mobilize rewrites the fmod (docs/repairs.md).
- ``spectral_model``: ``torch.fft.rfft`` in ``spectrum`` (Core ML fails on the decomposed ``aten._fft_r2c``) and
  ``torch.cumprod`` in ``decay`` (torch.onnx fails on its decomposition ``prims.prod``); exported to onnx,coreml.
"""

from __future__ import annotations

import pytest

from ._util import artifact, listing

pytestmark = pytest.mark.slow


def test_fmod_exit_code_1_and_bundle_still_written(fmod_run) -> None:
    import mobilize

    assert fmod_run.run.returncode == 1, fmod_run.run.describe()
    m = fmod_run.manifest
    assert m["summary"]["failed"] == 1 and m["summary"]["exported"] == 2
    assert mobilize.load_bundle(fmod_run.out) == m
    ok_paths = {a["path"] for a in m["artifacts"] if a["status"] == "ok"}
    assert set(listing(fmod_run.out)) == ok_paths | {"manifest.json", "reference.npz"}


def test_fmod_coreml_failure_names_format_op_and_module(fmod_run) -> None:
    a = artifact(fmod_run.manifest, "coreml", "fp32")
    assert a["status"] == "failed"
    assert a["path"] is None and a["bytes"] is None and a["sha256"] is None and a["parity"] is None
    err = a["error"]
    assert "coreml" in err["message"].lower(), err
    assert any("fmod" in op for op in err["ops"]), err
    assert any(mod.startswith("head.phase") and "Phase" in mod for mod in err["modules"]), err
    # and the terminal says where
    assert "head.phase" in fmod_run.run.stdout, fmod_run.run.describe()


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_fmod_other_formats_pass(fmod_run, fmt: str) -> None:
    a = artifact(fmod_run.manifest, fmt, "fp32")
    assert a["status"] == "ok" and a["error"] is None
    assert (fmod_run.out / a["path"]).is_file()
    assert a["parity"]["status"] == "pass", a["parity"].get("reason")


def test_spectral_failures_recorded(spectral_run) -> None:
    assert spectral_run.run.returncode == 1, spectral_run.run.describe()
    m = spectral_run.manifest
    assert [a["status"] for a in m["artifacts"]] == ["failed", "failed"]
    coreml = artifact(m, "coreml", "fp32")["error"]
    assert coreml["message"].startswith("coreml conversion failed")
    assert any("_fft_r2c" in op for op in coreml["ops"]), coreml
    onnx_err = artifact(m, "onnx", "fp32")["error"]
    assert onnx_err["message"].startswith("onnx conversion failed")
    assert onnx_err["kind"] == "conversion"


def test_spectral_coreml_failure_names_module(spectral_run) -> None:
    err = artifact(spectral_run.manifest, "coreml", "fp32")["error"]
    assert any(mod.startswith("spectrum") for mod in err["modules"]), err


def test_spectral_onnx_failure_names_op(spectral_run) -> None:
    err = artifact(spectral_run.manifest, "onnx", "fp32")["error"]
    assert any("prod" in op for op in err["ops"]), err


def test_spectral_onnx_message_is_readable(spectral_run) -> None:
    err = artifact(spectral_run.manifest, "onnx", "fp32")["error"]
    assert "\x1b[" not in err["message"], err["message"]
    assert "prod" in err["message"], err["message"]


def test_fmod_is_repaired_by_default(fmod_repaired_run) -> None:
    """Without --no-repair the Core ML file exists, passes parity, and the manifest says which rewrite ran and why."""
    run = fmod_repaired_run
    assert run.run.returncode == 0, run.run.describe()
    a = artifact(run.manifest, "coreml", "fp32")
    assert a["status"] == "ok" and a["parity"]["status"] == "pass", a
    (rec,) = a["repairs"]
    assert rec["name"] == "fmod-remainder" and rec["status"] == "applied" and rec["modules"] == ["head.phase (Phase)"]
    assert "fmod" in rec["why"]
    for fmt in ("onnx", "tflite"):
        assert artifact(run.manifest, fmt, "fp32")["repairs"] == []
    assert "fmod-remainder" in run.run.stdout, run.run.describe()
