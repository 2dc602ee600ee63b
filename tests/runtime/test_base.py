"""The runner base class and its single feed check (mobilize.runtime.base)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from mobilize.errors import FeedError, MobilizeInputError
from mobilize.runtime.base import IOTensor, Runner, check_feeds, natural_key

DECLARED = [
    IOTensor("image", (1, 3, 8, 8), "float32"),
    IOTensor("ids", (None, "seq"), "int32"),
    IOTensor("flag", (), "bool"),
]


def _ok_feeds() -> dict[str, np.ndarray]:
    return {"image": np.zeros((1, 3, 8, 8), np.float32), "ids": np.zeros((2, 5), np.int32),
            "flag": np.array(True)}


def _problems(feeds) -> str:
    with pytest.raises(FeedError) as ei:
        check_feeds(DECLARED, feeds, where="model.onnx")
    msg = str(ei.value)
    assert msg.startswith("model.onnx: ")
    return msg


def test_valid_feeds_pass() -> None:
    check_feeds(DECLARED, _ok_feeds(), where="model.onnx")


@pytest.mark.parametrize("shape", [(1, 1), (7, 300), (64, 2)])
def test_dynamic_dims_accept_any_size(shape) -> None:
    feeds = _ok_feeds()
    feeds["ids"] = np.zeros(shape, np.int32)
    check_feeds(DECLARED, feeds, where="m")


def test_negative_dims_are_dynamic() -> None:
    check_feeds([IOTensor("x", (-1, 4), "float32")], {"x": np.zeros((9, 4), np.float32)}, where="m")


def test_missing_input() -> None:
    feeds = _ok_feeds()
    del feeds["ids"]
    assert "missing input(s) ['ids']" in _problems(feeds)


def test_unknown_input() -> None:
    feeds = {**_ok_feeds(), "extra": np.zeros(1)}
    msg = _problems(feeds)
    assert "unknown input(s) ['extra']" in msg and "['image', 'ids', 'flag']" in msg


def test_dtype_mismatch() -> None:
    feeds = _ok_feeds()
    feeds["ids"] = feeds["ids"].astype(np.int64)
    assert "ids: dtype int64, expected int32" in _problems(feeds)


def test_rank_mismatch() -> None:
    feeds = _ok_feeds()
    feeds["image"] = np.zeros((3, 8, 8), np.float32)
    assert "image: rank 3 [3, 8, 8], expected rank 4 [1, 3, 8, 8]" in _problems(feeds)


def test_static_dim_mismatch() -> None:
    feeds = _ok_feeds()
    feeds["image"] = np.zeros((1, 3, 8, 9), np.float32)
    assert "image: shape [1, 3, 8, 9], expected [1, 3, 8, 8] (axis 3)" in _problems(feeds)


def test_every_problem_is_collected_into_one_error() -> None:
    feeds = {
        "image": np.zeros((2, 3, 8, 8), np.float64),  # dtype + static dim
        "flag": np.zeros((1,), np.bool_),  # rank
        "bogus": np.zeros(1),  # unknown
    }  # ids missing
    msg = _problems(feeds)
    for part in ("missing input(s) ['ids']", "unknown input(s) ['bogus']", "image: dtype float64, expected float32",
                 "image: shape [2, 3, 8, 8], expected [1, 3, 8, 8] (axis 0)", "flag: rank 1"):
        assert part in msg, part
    assert msg.count(";") == 4  # five problems, one message
    assert "\n" not in msg


def test_feed_error_is_an_input_error() -> None:
    assert issubclass(FeedError, MobilizeInputError)


def test_lists_are_accepted_as_arrays() -> None:
    check_feeds([IOTensor("x", (2,), "int64")], {"x": [1, 2]}, where="m")


def test_iotensor_to_dict() -> None:
    assert IOTensor("x", (None, 3), "float32").to_dict() == {"name": "x", "shape": [None, 3], "dtype": "float32"}
    q = IOTensor("q", (1,), "int8", {"scale": [0.1], "zero_point": [0]}).to_dict()
    assert q["quantization"] == {"scale": [0.1], "zero_point": [0]}


def test_natural_key() -> None:
    names = ["args_10", "args_9", "args_1", "out"]
    assert sorted(names, key=natural_key) == ["args_1", "args_9", "args_10", "out"]


class EchoRunner(Runner):
    format: ClassVar[str] = "onnx"
    runtime: ClassVar[str] = "echo"

    def __init__(self, path, **kw) -> None:
        super().__init__(path, **kw)
        self.events: list[str] = []
        self.seen: list[dict[str, np.ndarray]] = []

    @property
    def inputs(self) -> list[IOTensor]:
        return [IOTensor("x", (None, 2), "float32")]

    @property
    def outputs(self) -> list[IOTensor]:
        return [IOTensor("y", (None, 2), "float32")]

    def _load(self) -> None:
        self.events.append("load")

    def _unload(self) -> None:
        self.events.append("unload")

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.seen.append(feeds)
        return {"y": feeds["x"] * 2}


def test_runner_must_be_loaded_before_infer(tmp_path: Path) -> None:
    r = EchoRunner(tmp_path / "m.onnx")
    with pytest.raises(RuntimeError, match="not loaded; use it as a context manager"):
        r.infer({"x": np.zeros((1, 2), np.float32)})


def test_runner_context_manager_checks_feeds_before_running(tmp_path: Path) -> None:
    r = EchoRunner(tmp_path / "m.onnx", threads=2)
    assert r.threads == 2 and r.path.name == "m.onnx"
    with r as rr:
        assert rr is r and r.events == ["load"]
        x = np.asfortranarray(np.ones((3, 2), np.float32))
        out = r.infer({"x": x})
        np.testing.assert_array_equal(out["y"], 2 * x)
        assert r.seen[-1]["x"].flags.c_contiguous  # feeds are made contiguous
        with pytest.raises(FeedError, match="m.onnx: x: dtype float64"):
            r.infer({"x": np.ones((3, 2))})
        assert len(r.seen) == 1  # the bad feed never reached _infer
    assert r.events == ["load", "unload"]
    with pytest.raises(RuntimeError):
        r.infer({"x": x})
