"""``CoreMLReferenceRunner``: the reference interpreter behind the common Runner interface (any OS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mobilize.runtime.base import Runner

REFERENCE_NOTE = (
    "Core ML reference interpreter (NumPy, not Apple's runtime): checks the program's graph semantics and weights, "
    "with fp16 op outputs rounded to float16 as the file declares; it cannot reproduce Neural Engine/GPU numerics "
    "or device latency — confirm on Apple hardware before release."
)


class CoreMLReferenceRunner(Runner):
    """Runs a ``.mlpackage`` ML Program with :class:`~mobilize.runtime.coreml_ref.program.Program`.

    Loading raises :class:`~mobilize.runtime.coreml_ref.errors.UnsupportedOpsError` listing every op the
    interpreter lacks, before any input is run.
    """

    format = "coreml"
    runtime = "reference"
    note = REFERENCE_NOTE

    @classmethod
    def available(cls) -> tuple[bool, str]:
        import importlib.util

        # looked up, not imported: importing coremltools imports torch (seconds), which a process that only asks
        # whether Core ML files can be checked here need not pay
        spec = importlib.util.find_spec("coremltools")
        places = list(spec.submodule_search_locations or []) if spec is not None else []
        if not any((Path(p) / "proto" / "MIL_pb2.py").is_file() for p in places):
            return False, ("the Core ML reference interpreter needs coremltools' protobuf definitions "
                           "(coremltools.proto.MIL_pb2 not found; pip install coremltools)")
        return True, ""

    def _load(self) -> None:
        from mobilize.runtime.coreml import io_from_spec
        from mobilize.runtime.coreml_ref.program import Program

        self.program = Program(self.path)
        self.program.check_supported()
        self._inputs, self._outputs = io_from_spec(self.program.spec)
        self.program.plan()  # decompress weights and compile the ops now: a bad weight file fails at load

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from mobilize.runtime.coreml import as_array

        out = self.program.run(feeds)
        result = {}
        for decl, name in zip(self._outputs, self.program.output_names):
            val = out[decl.name] if decl.name in out else out[name]
            if isinstance(val, dict) or decl.dtype in ("string", "unknown"):
                result[decl.name] = as_array(val, decl)
            else:
                result[decl.name] = np.asarray(val).astype(decl.dtype, copy=False)
        return result
