"""The raw converter calls a user would write, in one script: what `mobilize export` is compared against.

    .venv/bin/python benchmarks/raw_convert.py SOURCE OUT_DIR [--precisions fp32,fp16]

SOURCE is ``file.py:fn`` (returning a ModelSpec or ``(module, example_inputs)``) or ``zoo:NAME``. Per precision:

- ONNX: ``torch.onnx.export(model, args, f)`` (torch 2.13 defaults: dynamo, optimize); fp16 then
  ``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)`` on that model;
- Core ML: ``ct.convert(torch.export.export(model, args).run_decompositions(), compute_precision=…).save(f)``;
- TFLite: ``litert_torch.convert(model, args).export(f)``; fp16 then ai-edge-quantizer's float-casting recipe on
  that file.

Nothing is verified, timed or written beside the files: this is the floor mobilize's overhead is measured against
(benchmarks/overhead.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any


def load(source: str) -> tuple[Any, tuple[Any, ...]]:
    if source.startswith("zoo:"):
        from mobilize import models

        spec = models.get(source[4:])
        return spec.module.eval(), tuple(spec.example_inputs)
    file, _, fn = source.rpartition(":")
    sp = importlib.util.spec_from_file_location("raw_model", file)
    assert sp is not None and sp.loader is not None
    mod = importlib.util.module_from_spec(sp)
    sp.loader.exec_module(mod)
    built = getattr(mod, fn)()
    module, args = (built.module, built.example_inputs) if hasattr(built, "module") else built
    return module.eval(), tuple(args)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source")
    ap.add_argument("out", type=Path)
    ap.add_argument("--precisions", default="fp32")
    a = ap.parse_args()
    t0 = time.perf_counter()
    precisions = [p.strip() for p in a.precisions.split(",") if p.strip()]
    a.out.mkdir(parents=True, exist_ok=True)
    import torch

    module, args = load(a.source)
    marks = {"load": time.perf_counter() - t0}
    if "fp32" in precisions or "fp16" in precisions:
        torch.onnx.export(module, args, str(a.out / "m_fp32.onnx"))
        if "fp16" in precisions:
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            onnx.save(convert_float_to_float16(onnx.load(str(a.out / "m_fp32.onnx")), keep_io_types=True),
                      str(a.out / "m_fp16.onnx"))
        marks["onnx"] = time.perf_counter() - t0
        import coremltools as ct

        program = torch.export.export(module, args).run_decompositions()
        for p in precisions:
            precision = ct.precision.FLOAT16 if p == "fp16" else ct.precision.FLOAT32
            ct.convert(program, compute_precision=precision).save(str(a.out / f"m_{p}.mlpackage"))
        marks["coreml"] = time.perf_counter() - t0
        import litert_torch

        litert_torch.convert(module, args).export(str(a.out / "m_fp32.tflite"))
        if "fp16" in precisions:
            from ai_edge_quantizer import quantizer

            q = quantizer.Quantizer(str(a.out / "m_fp32.tflite"))
            q.add_weight_only_config(regex=".*", operation_name="*", num_bits=16, algorithm_key="float_casting")
            (a.out / "m_fp16.tflite").write_bytes(bytes(q.quantize().quantized_model))
        marks["tflite"] = time.perf_counter() - t0
    print(" ".join(f"{k}={v:.2f}" for k, v in marks.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
