"""ModelSpec / Normalization / TensorSpec validation (mobilize.spec)."""

from __future__ import annotations

import pytest
import torch

from mobilize.errors import MobilizeInputError, SpecError
from mobilize.spec import ModelSpec, Normalization, TensorSpec, torch_dtype_name


def _spec(**kw):
    base = {"module": torch.nn.Identity(), "example_inputs": (torch.zeros(2, 3),)}
    base.update(kw)
    return ModelSpec(**base)


def test_spec_error_is_a_user_input_error() -> None:
    assert issubclass(SpecError, MobilizeInputError)
    assert issubclass(SpecError, ValueError)


def test_defaults_fill_names_and_normalise_inputs() -> None:
    s = _spec(example_inputs=torch.zeros(2, 3))  # a bare tensor becomes a 1-tuple
    assert isinstance(s.example_inputs, tuple) and len(s.example_inputs) == 1
    assert s.input_names == ["input"]  # nn.Linear.forward(self, input)
    assert s.output_names is None
    s2 = _spec(example_inputs=[torch.zeros(1), torch.zeros(2)])  # a list becomes a tuple
    assert isinstance(s2.example_inputs, tuple)
    assert s2.input_names == ["input_0", "input_1"]  # forward takes one input: positions name them


@pytest.mark.parametrize("module", [lambda x: x, "model", None, torch.zeros(1)])
def test_module_must_be_nn_module(module) -> None:
    with pytest.raises(SpecError, match="torch.nn.Module"):
        _spec(module=module)


@pytest.mark.parametrize("inputs", [(), None, {"x": torch.zeros(1)}])
def test_example_inputs_must_be_non_empty_tuple(inputs) -> None:
    with pytest.raises(SpecError, match="non-empty tuple"):
        _spec(example_inputs=inputs)


@pytest.mark.parametrize("bad, kind", [([1, 2, 3], "list"), (3.0, "float"), ("text", "str"), (None, "NoneType")])
def test_non_tensor_input_is_named_by_position_and_type(bad, kind) -> None:
    with pytest.raises(SpecError) as ei:
        _spec(example_inputs=(torch.zeros(1), bad))
    msg = str(ei.value)
    assert "example_inputs[1]" in msg and kind in msg


@pytest.mark.parametrize("dtype", [torch.complex64, torch.bfloat16])
def test_unsupported_input_dtypes_refused(dtype) -> None:
    with pytest.raises(SpecError, match="dtype"):
        _spec(example_inputs=(torch.zeros(2, dtype=dtype),))


def test_input_name_count_mismatch() -> None:
    with pytest.raises(SpecError, match="2 example inputs but 1 input_names"):
        _spec(example_inputs=(torch.zeros(1), torch.zeros(1)), input_names=["a"])


@pytest.mark.parametrize("inputs, outputs", [(["a", "a"], None), (["a", "b"], ["b"]), (["a", "b"], ["y", "y"])])
def test_duplicate_names(inputs, outputs) -> None:
    with pytest.raises(SpecError, match="unique"):
        _spec(example_inputs=(torch.zeros(1), torch.zeros(1)), input_names=inputs, output_names=outputs)


@pytest.mark.parametrize("name", ["1x", "has space", "a-b", "", "class", "x.y", "ünïcödé?", 3])
def test_bad_input_names(name) -> None:
    with pytest.raises(SpecError, match="identifier"):
        _spec(input_names=[name])


@pytest.mark.parametrize("name", ["0", "out-put", "lambda"])
def test_bad_output_names(name) -> None:
    with pytest.raises(SpecError, match="identifier"):
        _spec(output_names=[name])


def test_good_names_accepted() -> None:
    s = _spec(input_names=["_image2"], output_names=["Logits", "probs_1"])
    assert s.input_names == ["_image2"] and s.output_names == ["Logits", "probs_1"]


def test_dynamic_dims_unknown_input() -> None:
    with pytest.raises(SpecError) as ei:
        _spec(input_names=["x"], dynamic_dims={"y": {0: "batch"}})
    assert "'y'" in str(ei.value) and "['x']" in str(ei.value)


@pytest.mark.parametrize("axis", [2, -3, 10, "0", 1.0])
def test_dynamic_dims_axis_out_of_range(axis) -> None:
    with pytest.raises(SpecError, match="out of range for a rank-2 input"):
        _spec(input_names=["x"], dynamic_dims={"x": {axis: "batch"}})


@pytest.mark.parametrize("axis", [0, 1, -1, -2])
def test_dynamic_dims_valid_axes(axis) -> None:
    s = _spec(input_names=["x"], dynamic_dims={"x": {axis: "n"}})
    shape = s.input_specs()[0].shape
    assert shape.count("n") == 1
    assert shape[axis] == "n"


def test_model_name_validated() -> None:
    assert _spec(name="my-model_2").name == "my-model_2"
    with pytest.raises(SpecError, match="model name"):
        _spec(name="my model")
    with pytest.raises(SpecError, match="model name"):
        _spec(name="../evil")


def test_labels_are_stringified() -> None:
    assert _spec(labels=[0, 1, "two"]).labels == ["0", "1", "two"]


def test_normalization_mismatched_mean_std() -> None:
    with pytest.raises(SpecError, match="mean has 3 values but std has 1"):
        Normalization(mean=(0.5, 0.5, 0.5), std=(0.2,))


@pytest.mark.parametrize("std", [(0.0,), (0.2, 0, 0.3), (-0.0,)])
def test_normalization_zero_std(std) -> None:
    with pytest.raises(SpecError, match="std contains 0"):
        Normalization(mean=(0.0,) * len(std), std=std)


def test_normalization_layout() -> None:
    with pytest.raises(SpecError, match="layout"):
        Normalization(mean=(0.0,), std=(1.0,), layout="CHW")
    d = Normalization(mean=(0.1, 0.2), std=(0.3, 0.4), layout="NHWC").to_dict()
    assert d == {"mean": [0.1, 0.2], "std": [0.3, 0.4], "scale": 255.0, "layout": "NHWC", "color": "RGB"}


def test_input_specs_show_dynamic_dim_names_dtypes_and_ranges() -> None:
    s = ModelSpec(module=torch.nn.Identity(),
                  example_inputs=(torch.zeros(2, 5, dtype=torch.int64), torch.zeros(2, 5, 7)),
                  input_names=["ids", "emb"],
                  dynamic_dims={"ids": {0: "batch", 1: "seq"}, "emb": {-2: "seq", 0: "batch"}},
                  input_ranges={"ids": (0, 99)})
    ids, emb = s.input_specs()
    assert ids == TensorSpec("ids", ("batch", "seq"), "int64", (0, 99))
    assert emb == TensorSpec("emb", ("batch", "seq", 7), "float32", None)
    d = s.to_dict()
    assert d["inputs"][0] == {"name": "ids", "shape": ["batch", "seq"], "dtype": "int64", "value_range": [0, 99]}
    assert "value_range" not in d["inputs"][1]


def test_input_specs_static_when_no_dynamic_dims() -> None:
    s = _spec(example_inputs=(torch.zeros(1, 3, 8, 8, dtype=torch.float16),), input_names=["image"])
    assert s.input_specs() == [TensorSpec("image", (1, 3, 8, 8), "float16")]


def test_to_dict_carries_normalization_and_labels() -> None:
    s = _spec(normalization=Normalization(mean=(0.5,), std=(0.25,), color="GRAY"), labels=["a", "b"], name="m")
    d = s.to_dict()
    assert d["name"] == "m"
    assert d["normalization"]["std"] == [0.25] and d["normalization"]["color"] == "GRAY"
    assert d["labels"] == ["a", "b"]


@pytest.mark.parametrize("dtype, name", [(torch.float32, "float32"), (torch.int64, "int64"), (torch.bool, "bool"),
                                         (torch.float16, "float16")])
def test_torch_dtype_name(dtype, name) -> None:
    assert torch_dtype_name(dtype) == name


@pytest.mark.parametrize("labels", [..., "cat", [], [None], [1.5], {"a": 1}])
def test_labels_that_are_not_class_names_are_refused(labels) -> None:
    from mobilize.errors import SpecError

    with pytest.raises(SpecError, match="labels"):
        ModelSpec(torch.nn.Linear(2, 2), (torch.randn(1, 2),), labels=labels)
