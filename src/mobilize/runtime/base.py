"""The runner base class: the feed check lives here, once, for every runtime."""

from __future__ import annotations

import abc
import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mobilize.errors import FeedError


@dataclasses.dataclass(frozen=True)
class IOTensor:
    """A tensor as a file declares it. ``shape`` entries are ints, or ``None``/a name for dynamic dims."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str
    quantization: dict[str, Any] | None = None
    #: an image input (Core ML ImageType): ``{"color", "normalization"?}`` — it takes pixels, not normalised values
    image: dict[str, Any] | None = None
    #: a classifier's label → score output, read back as a vector in this label order
    classes: list[str] | None = None
    #: the largest shape a file with bounded dynamic dims accepts (ExecuTorch plans memory for it)
    max_shape: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.quantization:
            d["quantization"] = self.quantization
        if self.image:
            d["image"] = self.image
        if self.classes is not None:
            d["classes"] = list(self.classes)
        if self.max_shape is not None:
            d["max_shape"] = list(self.max_shape)
        return d


class Runner(abc.ABC):
    """Loads one artifact and runs it. Use as ``with Runner(path) as r: r.infer({...})``."""

    format: ClassVar[str]
    runtime: ClassVar[str]
    #: modules a runtime imports on first use; :meth:`preload` imports them (memory baselines count them as runtime)
    preload_modules: ClassVar[tuple[str, ...]] = ()

    def __init__(self, path: Path | str, *, threads: int | None = None) -> None:
        self.path = Path(path)
        self.threads = threads
        self._loaded = False

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether this runtime exists on this machine, and if not, why."""
        return True, ""

    @classmethod
    def preload(cls) -> None:
        """Import the runtime's own modules (:attr:`preload_modules`) before any file is loaded."""
        import importlib

        for name in cls.preload_modules:
            importlib.import_module(name)

    def __enter__(self) -> Runner:
        self._load()
        self._loaded = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._unload()
        self._loaded = False

    #: the file's declared inputs and outputs; ``_load`` sets them
    _inputs: list[IOTensor]
    _outputs: list[IOTensor]

    @property
    def inputs(self) -> list[IOTensor]:
        return self._inputs

    @property
    def outputs(self) -> list[IOTensor]:
        return self._outputs

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check ``feeds`` against the file's inputs (collecting every problem), then run."""
        if not self._loaded:
            raise RuntimeError(f"{type(self).__name__} is not loaded; use it as a context manager")
        check_feeds(self.inputs, feeds, where=str(self.path.name))
        return self._infer({k: np.ascontiguousarray(v) for k, v in feeds.items()})

    @abc.abstractmethod
    def _load(self) -> None: ...

    def _unload(self) -> None:  # noqa: B027 - optional hook
        pass

    @abc.abstractmethod
    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def check_feeds(declared: list[IOTensor], feeds: Mapping[str, np.ndarray], *, where: str) -> None:
    """Raise one :class:`FeedError` listing every mismatch of names, dtypes and shapes."""
    problems: list[str] = []
    want = {t.name: t for t in declared}
    missing = [n for n in want if n not in feeds]
    extra = [n for n in feeds if n not in want]
    if missing:
        problems.append(f"missing input(s) {missing}")
    if extra:
        problems.append(f"unknown input(s) {extra} (expected {list(want)})")
    for name, arr in feeds.items():
        t = want.get(name)
        if t is None:
            continue
        arr = np.asarray(arr)
        if arr.dtype.name != t.dtype:
            problems.append(f"{name}: dtype {arr.dtype.name}, expected {t.dtype}")
        if arr.ndim != len(t.shape):
            problems.append(f"{name}: rank {arr.ndim} {list(arr.shape)}, expected rank {len(t.shape)} {list(t.shape)}")
            continue
        for axis, (got, exp) in enumerate(zip(arr.shape, t.shape)):
            if isinstance(exp, int) and exp >= 0 and got != exp:
                problems.append(f"{name}: shape {list(arr.shape)}, expected {list(t.shape)} (axis {axis})")
                break
    if problems:
        raise FeedError(f"{where}: " + "; ".join(problems))


def natural_key(name: str) -> list[Any]:
    """Sort ``args_10`` after ``args_9``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
