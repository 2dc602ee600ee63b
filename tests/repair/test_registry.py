"""The repair registry: what a repair must declare, duplicates refused at import time, and how a failure implicates
a repair."""

from __future__ import annotations

import pytest

from mobilize.repair import REPAIRS, for_format, register
from mobilize.repair.registry import FORMATS, base_name


def test_every_repair_declares_formats_pattern_equivalent_and_shows_before_after() -> None:
    assert len(REPAIRS) >= 10
    for r in REPAIRS.values():
        assert r.formats and set(r.formats) <= set(FORMATS), r.name
        assert set(r.always) <= set(r.formats), r.name
        assert r.pattern.strip() and r.equivalent.strip() and r.ops, r.name
        assert "Before" in r.doc and "After" in r.doc, f"{r.name}: the docstring shows the graph before and after"
        assert (r.decompositions is None) != (r.graph_pass is None), r.name


def test_every_format_has_repairs() -> None:
    for fmt in FORMATS:
        assert for_format(fmt), fmt


def test_duplicate_name_is_refused_at_registration() -> None:
    name = next(iter(REPAIRS))
    with pytest.raises(ValueError, match="already registered"):
        register(name, formats=("onnx",), pattern="p", equivalent="e", ops=("aten.abs.default",))(_documented)


@pytest.mark.parametrize("kwargs,match", [
    (dict(formats=("caffe",)), "unknown formats"),
    (dict(formats=("onnx",), always=("tflite",)), "subset"),
    (dict(formats=("onnx",), kind="magic"), "kind"),
])
def test_bad_declarations_are_refused(kwargs, match) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=match):
        register("test-only", pattern="p", equivalent="e", ops=("aten.abs.default",), **kwargs)(_documented)
    assert "test-only" not in REPAIRS


def test_a_repair_needs_a_docstring() -> None:
    with pytest.raises(ValueError, match="docstring"):
        register("test-only", formats=("onnx",), pattern="p", equivalent="e", ops=("aten.abs.default",))(
            lambda: {})
    assert "test-only" not in REPAIRS


@pytest.mark.parametrize("op,base", [("aten.fmod.Scalar", "fmod"), ("torch.ops.aten.view.default", "view"),
                                     ("aten::index_put", "index_put"), ("fmod", "fmod"), ("prims.prod", "prod")])
def test_base_name(op: str, base: str) -> None:
    assert base_name(op) == base


def test_a_failure_implicates_repairs_by_op_symptom_and_message() -> None:
    fmod, roll = REPAIRS["fmod-remainder"], REPAIRS["roll-slices"]
    assert "rejected fmod" in fmod.implicated_by(["aten.fmod.Scalar"], "")
    assert "rejected fmod" in roll.implicated_by(["fmod"], "")  # roll's default decomposition brings the fmod
    assert fmod.implicated_by(["aten.view.default"], "Unsupported fx node alias") is None
    view = REPAIRS["view-contiguous"]
    why = view.implicated_by([], "ValueError: Cannot view a tensor with shape torch.Size([8, 16, 2, 8])")
    assert why and "Cannot view a tensor" in why


def _documented() -> dict:
    """Before: x. After: x."""
    return {}


def test_every_repair_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "repairs.md").read_text()
    missing = [name for name in REPAIRS if f"`{name}`" not in doc]
    assert not missing, f"docs/repairs.md lacks {missing}"
