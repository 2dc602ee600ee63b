"""The zoo's Core ML files at fp32 and fp16 through the interpreter match PyTorch within the documented
tolerance (runtime "reference"), and a bundle whose weight.bin had one value changed fails ``mobilize verify``."""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path

import pytest

from mobilize.runtime.coreml_ref import REFERENCE_NOTE
from mobilize.verify.tolerance import for_artifact

pytestmark = pytest.mark.skipif(sys.platform == "darwin", reason="on macOS verification uses native Core ML")


def _export(name: str, out: Path) -> dict:
    from mobilize import api

    result = api.export(f"zoo:{name}", out, formats=["coreml"], precisions=["fp32", "fp16"])
    return result.manifest


def _check(manifest: dict) -> None:
    arts = manifest["artifacts"]
    assert [(a["precision"], a["status"]) for a in arts] == [("fp32", "ok"), ("fp16", "ok")]
    for a in arts:
        p = a["parity"]
        assert p["status"] == "pass", p["failures"] or p["reason"]
        assert p["runtime"] == "reference"
        assert REFERENCE_NOTE in p["warnings"]
        tol = for_artifact("coreml", a["precision"])
        assert p["tolerance"] == tol.to_dict()
        assert p["max_abs_error"] <= (1e-4 if a["precision"] == "fp32" else 1e-2)


@pytest.fixture(scope="module")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("zoo") / "digits"
    return out, _export("digits", out)


@pytest.mark.slow
def test_digits_fp32_and_fp16_pass_through_the_interpreter(digits_bundle) -> None:  # noqa: ANN001
    _check(digits_bundle[1])


@pytest.mark.parametrize("name", [pytest.param("mobilenet_v2", marks=pytest.mark.slow), "text_encoder",
                                  "gru_classifier"])
@pytest.mark.slow
def test_zoo_model_passes_through_the_interpreter(name: str, tmp_path: Path) -> None:
    _check(_export(name, tmp_path / name))


def _bump_first_weight(package: Path, delta: float) -> None:
    """Change one float32 weight value inside weight.bin (the first blob's first element)."""
    weights = package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(weights.read_bytes())
    sentinel, code, _, offset = struct.unpack_from("<IIQQ", data, 64)
    assert sentinel == 0xDEADBEEF and code == 2  # float32
    (value,) = struct.unpack_from("<f", data, offset)
    struct.pack_into("<f", data, offset, value + delta)
    weights.write_bytes(bytes(data))


def _refresh_sha256(bundle: Path) -> None:
    from mobilize.bundle.hashing import sha256

    manifest = json.loads((bundle / "manifest.json").read_text())
    for a in manifest["artifacts"]:
        a["sha256"] = sha256(bundle / a["path"])
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_one_changed_weight_fails_mobilize_verify(digits_bundle, tmp_path: Path) -> None:  # noqa: ANN001
    from click.testing import CliRunner

    from mobilize.cli import main

    src, _ = digits_bundle
    bundle = tmp_path / "digits"
    shutil.copytree(src, bundle)
    _bump_first_weight(bundle / "digits_fp32.mlpackage", 3.0)
    _refresh_sha256(bundle)  # so only parity (not the sha256 check) can catch the change

    report = tmp_path / "v.json"
    result = CliRunner().invoke(main, ["verify", str(bundle), "--json", str(report)])
    assert result.exit_code == 1, result.output
    arts = {a["precision"]: a["parity"] for a in json.loads(report.read_text())["artifacts"]}
    assert arts["fp32"]["status"] == "fail" and arts["fp32"]["runtime"] == "reference"
    assert not arts["fp32"]["could_not_run"]
    assert all(f.startswith("logits:") for f in arts["fp32"]["failures"]), arts["fp32"]["failures"]
    assert arts["fp16"]["status"] == "pass"


def test_a_truncated_weight_file_is_a_clear_verify_error(digits_bundle, tmp_path: Path) -> None:  # noqa: ANN001
    from mobilize import api

    src, _ = digits_bundle
    bundle = tmp_path / "digits"
    shutil.copytree(src, bundle)
    weights = bundle / "digits_fp16.mlpackage" / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    weights.write_bytes(weights.read_bytes()[:1000])
    _refresh_sha256(bundle)
    rec = {a["precision"]: a["parity"] for a in api.verify(bundle).artifacts}["fp16"]
    assert rec["status"] == "fail" and rec["could_not_run"]
    assert "weight.bin" in rec["reason"] and "truncated weight file" in rec["reason"]
