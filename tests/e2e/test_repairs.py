"""Each known converter gap, reproduced by a small model of our own (tests/fixtures/models/repair_gaps.py): the raw
converter call fails, ``mobilize export`` repairs the program and the file passes parity with the real runtime (Core
ML: the reference interpreter), the manifest records which repair ran and why — and ``repair=False`` fails again, so
the repair is what made the difference."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.models import repair_gaps

pytestmark = pytest.mark.slow

# (fixture, format, repairs that must have run, the raw converter's message)
GAPS = [
    ("shifted_window", "onnx", {"view-contiguous"}, "Cannot view a tensor"),
    ("shifted_window", "coreml", {"roll-slices"}, "Unsupported fx node fmod"),
    ("linear_attention", "coreml", {"col2im-grouped-conv-transpose"}, "index_put"),
    ("linear_attention", "tflite", {"implicit-broadcast", "col2im-grouped-conv-transpose"},
     "broadcast-compatible shapes"),
    ("relative_positions", "coreml", {"alias-identity"}, "Unsupported fx node alias"),
    ("pooled_tokens", "coreml", {"as-strided-gather"}, "Unsupported fx node as_strided"),
    ("span_conv", "coreml", {"im2col-grouped-conv"}, "rank <= 5"),
    ("query_pool", "coreml", {"high-rank-reduce", "high-rank-gather"}, "rank <= 5"),
    ("slice_assign", "coreml", {"index-put-leading"}, ""),
]


def raw_convert(name: str, fmt: str, dest: Path) -> None:
    """The converter's documented default call on the eager model (what a user writes without mobilize)."""
    import torch

    from mobilize._quiet import captured_output, quiet_imports

    module, args = getattr(repair_gaps, name)()
    with captured_output():
        if fmt == "onnx":
            torch.onnx.export(module, args, str(dest / "raw.onnx"))
        elif fmt == "coreml":
            import coremltools as ct

            ct.convert(torch.export.export(module, args).run_decompositions()).save(str(dest / "raw.mlpackage"))
        else:
            import litert_torch

            quiet_imports()
            litert_torch.convert(module, args).export(str(dest / "raw.tflite"))


@functools.cache
def export(name: str, fmt: str, repair: bool = True) -> dict[str, Any]:
    """``mobilize.export`` of one fixture to one format at fp32 (verified); the artifact record."""
    from mobilize import api
    from mobilize.spec import ModelSpec

    module, args = getattr(repair_gaps, name)()
    spec = ModelSpec(module=module, example_inputs=args, name=name)
    out = Path(tempfile.mkdtemp(prefix=f"mobilize-repair-{name}-")) / "bundle"
    result = api.export(spec, out, formats=fmt, precisions="fp32", repair=repair)
    art = result.artifacts[0]
    art["_bundle"] = str(out)
    return art


@pytest.mark.parametrize("name,fmt,repairs,message", GAPS, ids=[f"{g[0]}-{g[1]}" for g in GAPS])
def test_raw_converter_fails(name: str, fmt: str, repairs: set[str], message: str, tmp_path: Path) -> None:
    with pytest.raises(Exception) as info:  # noqa: PT011 - each converter raises its own type
        raw_convert(name, fmt, tmp_path)
    assert message in str(info.value), str(info.value)[-500:]


@pytest.mark.parametrize("name,fmt,repairs,message", GAPS, ids=[f"{g[0]}-{g[1]}" for g in GAPS])
def test_mobilize_repairs_and_passes_parity(name: str, fmt: str, repairs: set[str], message: str) -> None:
    art = export(name, fmt)
    assert art["status"] == "ok", art["error"]
    assert art["parity"]["status"] == "pass", art["parity"]
    ran = {r["name"] for r in art["repairs"] if r["status"] == "applied"}
    assert repairs <= ran, art["repairs"]
    for r in art["repairs"]:
        assert r["rewrites"] >= 1 and r["modules"] and r["why"], r
        assert any(r["name"] in n for n in art["notes"]), art["notes"]


@pytest.mark.parametrize("name,fmt,repairs,message", GAPS, ids=[f"{g[0]}-{g[1]}" for g in GAPS])
def test_without_repairs_mobilize_fails_like_the_converter(name: str, fmt: str, repairs: set[str],
                                                             message: str) -> None:
    art = export(name, fmt, repair=False)
    assert art["status"] == "failed" and art["repairs"] == []
    err = art["error"]
    assert err["ops"] and err["modules"], err
    assert all(" calls " in m for m in err["modules"]), err["modules"]


def test_failure_names_the_module_of_the_failing_node() -> None:
    err = export("shifted_window", "onnx", repair=False)["error"]
    assert err["modules"] == ["attn (WindowAttention) calls aten.view.default"], err["modules"]
    err = export("pooled_tokens", "coreml", repair=False)["error"]
    assert err["modules"] == ["pool (AdaptiveAvgPool1d) calls aten.as_strided.default"], err["modules"]


def test_prelu_tflite_stores_the_linear_weights_once() -> None:
    repaired, raw = export("prelu_mlp", "tflite"), export("prelu_mlp", "tflite", repair=False)
    assert repaired["parity"]["status"] == "pass" and raw["parity"]["status"] == "pass"
    assert [r["name"] for r in repaired["repairs"]] == ["prelu-maximum"]
    assert repaired["bytes"] < 0.75 * raw["bytes"], (repaired["bytes"], raw["bytes"])
    assert not repaired["analysis"]["duplicates"], repaired["analysis"]["duplicates"]
    assert raw["analysis"]["duplicates"], "the unrepaired file should store fc1's weight twice"
    assert repaired["parity"]["max_abs_error"] == 0.0 or repaired["parity"]["max_abs_error"] < 1e-5


def test_tanh_gelu_core_ml_file_computes_the_tanh_approximation() -> None:
    repaired, raw = export("tanh_gelu_mlp", "coreml"), export("tanh_gelu_mlp", "coreml", repair=False)
    assert raw["status"] == "ok" and raw["parity"]["status"] == "fail", raw["parity"]  # exact GELU instead
    assert repaired["parity"]["status"] == "pass", repaired["parity"]
    assert [r["name"] for r in repaired["repairs"]] == ["gelu-tanh-formula"]
    assert repaired["repairs"][0]["why"].startswith("applied to every coreml export")


def test_resize_ops_are_verified_by_the_reference_interpreter() -> None:
    art = export("resize_head", "coreml")
    assert art["parity"]["status"] == "pass", art["parity"]
    assert art["parity"]["runtime"] in ("reference", "coremltools")
    assert art["repairs"] == []


def test_ort_files_are_repaired_as_onnx_files(tmp_path: Path) -> None:
    """ORT files are converted from ONNX: alone, their fresh ONNX export is repaired like an ONNX export; beside the
    run's ONNX file, they are that file converted and carry its repairs."""
    from mobilize import api
    from mobilize.spec import ModelSpec

    module, args = repair_gaps.shifted_window()
    spec = ModelSpec(module=module, example_inputs=args, name="shifted_window")
    alone = api.export(spec, tmp_path / "alone", formats="ort", precisions="fp32").artifacts
    assert alone[0]["status"] == "ok" and alone[0]["parity"]["status"] == "pass", alone[0]
    assert [r["name"] for r in alone[0]["repairs"]] == ["view-contiguous"]
    both = api.export(spec, tmp_path / "both", formats="onnx,ort", precisions="fp32").artifacts
    onnx_art, ort_art = (next(a for a in both if a["format"] == f) for f in ("onnx", "ort"))
    assert ort_art["status"] == "ok" and ort_art["parity"]["status"] == "pass", ort_art
    assert ort_art["repairs"] == onnx_art["repairs"] and onnx_art["repairs"], ort_art["repairs"]
