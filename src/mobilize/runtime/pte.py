"""ExecuTorch runner: ``executorch.runtime`` (the pip package's portable kernels and XNNPACK backend).

The program is loaded from bytes with ``Verification.InternalConsistency`` (ExecuTorch checks the flatbuffer and its
offsets before using them). A ``.pte`` keeps no tensor names and no per-dim dynamism, only each input's dtype and its
memory-planned (largest) shape; names and the dynamic dims come from the file's own metadata method
(:data:`mobilize.export.pte.METADATA_METHOD`), positions otherwise. A dynamic dim is reported by its name, and the
input's ``max_shape`` holds the bound ExecuTorch planned memory for.
"""

from __future__ import annotations

import json
import weakref
from typing import Any, ClassVar

import numpy as np

from mobilize.errors import FeedError, RuntimeFailure, one_line
from mobilize.runtime.base import IOTensor, Runner

#: ExecuTorch ScalarType codes (c10 numbering) → numpy dtype names
SCALAR_TYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 7: "float64",
                11: "bool"}
METADATA_METHOD = "mobilize_metadata"  # mobilize.export.pte.METADATA_METHOD (not imported: that module needs torch)


#: ExecuTorch's CPU thread pool is one per process: its size, and how many times it was replaced
_POOL: dict[str, Any] = {"threads": None, "generation": 0}
#: runners with a loaded program (released before the pool is replaced)
_LIVE: weakref.WeakSet[PteRunner] = weakref.WeakSet()


def _use_threads(threads: int | None) -> None:
    """Size the process's thread pool for ``threads`` (None: leave it). Replacing the pool frees the old one, which
    the XNNPACK delegates of every program loaded before point to: running or even destroying those then crashes
    (a segfault, measured in ``mobilize bench`` with 1 and 2 threads). So every loaded program is released first;
    each re-loads on its next run (:meth:`PteRunner._infer`)."""
    if not threads or _POOL["threads"] == int(threads):
        return
    from executorch.extension.pybindings import portable_lib

    for r in list(_LIVE):
        r._release()
    import gc

    gc.collect()
    portable_lib._unsafe_reset_threadpool(int(threads))  # noqa: SLF001 - the only thread setting
    _POOL["threads"] = int(threads)
    _POOL["generation"] += 1


class PteRunner(Runner):
    format = "pte"
    runtime = "executorch"
    preload_modules: ClassVar[tuple[str, ...]] = ("executorch.runtime",)

    @classmethod
    def preload(cls) -> None:
        from mobilize import _imports

        _imports.executorch_runtime()  # without the ExecuTorch compiler

    @classmethod
    def available(cls) -> tuple[bool, str]:
        from mobilize import _imports

        try:
            _imports.executorch_runtime()
        except Exception as exc:  # noqa: BLE001 - a missing or broken install means: not available here
            return False, f"executorch.runtime is not importable ({type(exc).__name__}: {one_line(exc, 160)})"
        return True, ""

    def _load(self) -> None:
        from mobilize._quiet import captured_output

        with captured_output():  # the runtime prints its CPU probing (cpuinfo) when it first loads
            self._load_quietly()

    def _load_quietly(self) -> None:
        from mobilize import _imports

        _imports.executorch_runtime()
        from executorch.runtime import Runtime, Verification

        from mobilize._quiet import quiet_imports

        quiet_imports()
        try:
            runtime = Runtime.get()
            _use_threads(self.threads)
            self._program = runtime.load_program(self.path.read_bytes(),
                                                 verification=Verification.InternalConsistency)
            names = sorted(self._program.method_names)
            self.methods = names
            self.method_name = "forward" if "forward" in names else next(
                (m for m in names if m != METADATA_METHOD), None)
            if self.method_name is None:
                raise ValueError("the program has no method to run")
            self.metadata = self._read_metadata()
            self._method = self._program.load_method(self.method_name)
            self._pool = _POOL["generation"]
            _LIVE.add(self)
            meta = self._method.metadata
            ins = [meta.input_tensor_meta(i) for i in range(meta.num_inputs())]
            outs = [meta.output_tensor_meta(i) for i in range(meta.num_outputs())]
        except Exception as exc:  # noqa: BLE001
            raise RuntimeFailure(f"{self.path.name}: ExecuTorch could not load the file: {one_line(exc)}") from exc
        io = self.metadata.get("mobilize.io") if isinstance(self.metadata, dict) else None
        self._inputs = _described(io, "inputs", ins, "input")
        self._outputs = _described(io, "outputs", outs, "output")

    def _reload(self) -> None:
        from executorch.runtime import Runtime, Verification

        self._release()
        _use_threads(self.threads)
        self._program = Runtime.get().load_program(self.path.read_bytes(),
                                                   verification=Verification.InternalConsistency)
        self._method = self._program.load_method(self.method_name)
        self._pool = _POOL["generation"]
        _LIVE.add(self)

    def _read_metadata(self) -> dict[str, Any]:
        if METADATA_METHOD not in self._program.method_names:
            return {}
        try:
            value = self._program.load_method(METADATA_METHOD).execute([])
            return json.loads(value[0]) if value and isinstance(value[0], str) else {}
        except (ValueError, RuntimeError, TypeError):
            return {}

    def _unload(self) -> None:
        self._release()

    def _release(self) -> None:
        _LIVE.discard(self)
        self._method = None
        self._program = None

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        for t in self._inputs:  # ExecuTorch's own error for this is a bare code (0x10)
            arr = feeds[t.name]
            if t.max_shape and any(g > m for g, m in zip(arr.shape, t.max_shape)):
                raise FeedError(f"{self.path.name}: {t.name}: shape {list(arr.shape)} exceeds the file's upper bound "
                                f"{list(t.max_shape)} (ExecuTorch plans memory for it)")
        if self._method is None or self._pool != _POOL["generation"] or (
                self.threads and _POOL["threads"] != self.threads):
            self._reload()  # another runner replaced the thread pool (see _use_threads)
        args = [torch.from_numpy(np.ascontiguousarray(feeds[t.name])) for t in self._inputs]
        try:
            out = self._method.execute(args)
        except Exception as exc:  # noqa: BLE001
            raise RuntimeFailure(f"{self.path.name}: ExecuTorch failed: {one_line(exc)}") from exc
        return {o.name: (v.detach().numpy().copy() if isinstance(v, torch.Tensor) else np.asarray(v))
                for o, v in zip(self._outputs, out)}


def _described(io: Any, key: str, infos: list[Any], prefix: str) -> list[IOTensor]:
    """The tensors of ``infos`` (TensorInfo) named, and their dynamic dims, by the file's I/O description; by
    position (``input_0``…) when the description is missing or does not fit (it comes from the file)."""
    try:
        desc = io[key]
        if len(desc) != len(infos):
            raise ValueError("count")
        out = [_io(str(d["name"]), t, {int(a): str(n) for a, n in (d.get("dynamic") or {}).items()
                                        if 0 <= int(a) < len(t.sizes())})
               for d, t in zip(desc, infos)]
        if len({t.name for t in out}) != len(out):
            raise ValueError("duplicate names")
        return out
    except (TypeError, KeyError, ValueError, AttributeError):
        return [_io(f"{prefix}_{i}", t, {}) for i, t in enumerate(infos)]


def _io(name: str, info: Any, dynamic: dict[int, str]) -> IOTensor:
    sizes = tuple(int(s) for s in info.sizes())
    dtype = SCALAR_TYPES.get(int(info.dtype()), f"scalar_type_{int(info.dtype())}")
    shape = tuple(dynamic.get(a, s) for a, s in enumerate(sizes))
    return IOTensor(name, shape, dtype, max_shape=sizes if dynamic else None)


def read_io(path) -> tuple[list[IOTensor], list[IOTensor]]:  # noqa: ANN001
    """The inputs and outputs of the ``.pte`` program's method (loads it with ExecuTorch)."""
    with PteRunner(path) as r:
        return r.inputs, r.outputs
