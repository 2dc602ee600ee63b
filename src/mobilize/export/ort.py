"""ORT-format exporter: the ONNX file converted by onnxruntime's ``convert_onnx_models_to_ort`` into the flatbuffer
format reduced onnxruntime builds load, plus ``<name>.required_operators.config`` — the operators such a build must
include (``build.sh --include_ops_by_config``). Both go into the bundle; the config is listed as the artifact's
companion.

The source is the bundle's ONNX file of the same precision when the run exports one (``--formats onnx,ort``: the
ORT file is that file, converted), otherwise a fresh ONNX export (fp32/fp16 only: quantized ORT files are converted
from the quantized ONNX file, so they need ``onnx`` in the same run). Conversion uses the fixed optimisation style
at level "all" without the x86-only NCHWc layout, so the file is the same on every target; onnxruntime's runtime
style (``--optimization_style Runtime``) is for apps that also run the NNAPI/CoreML EPs.

The file's metadata (labels, normalisation, …) is written into the ONNX source before conversion by the finalizer
(ORT format keeps ``metadata_props``), which then converts again; until then the source waits beside the file as
``<name>.ort.onnx-source`` (never part of a bundle).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from mobilize.capture import Capture
from mobilize.errors import ConversionError
from mobilize.export import ExportedFile, ExportOptions
from mobilize.spec import ModelSpec

SOURCE_SUFFIX = ".onnx-source"
CONFIG_SUFFIX = ".required_operators.config"


def companion(dest: Path) -> Path:
    """``model_fp32.ort`` → ``model_fp32.required_operators.config`` beside it."""
    return dest.with_name(dest.stem + CONFIG_SUFFIX)


def export(capture: Capture, spec: ModelSpec, precision: str, dest: Path, options: ExportOptions) -> ExportedFile:
    from mobilize.export import onnx as onnx_export

    sibling = dest.with_suffix(".onnx")
    if sibling.is_file():
        data = sibling.read_bytes()
        notes = [f"converted from {sibling.name}, the bundle's ONNX file"]
    elif precision in ("fp32", "fp16"):
        with tempfile.TemporaryDirectory(prefix="mobilize-ort-") as tmp:
            src = Path(tmp) / "model.onnx"
            onnx_export.export(capture, spec, precision, src, options)
            data = src.read_bytes()
        notes = ["converted from an ONNX export of this run (torch.onnx)"]
    else:
        raise ConversionError(f"an ORT {precision} file is converted from the ONNX {precision} file; export both "
                              "(--formats onnx,ort)", format="ort")
    stash = dest.with_name(dest.name + SOURCE_SUFFIX)
    stash.write_bytes(data)
    return ExportedFile(dest, notes + convert(data, dest))


def convert(data: bytes, dest: Path) -> list[str]:
    """Write ``dest`` (ORT format) and its companion config from ONNX bytes."""
    import onnxruntime as ort

    from mobilize.analysis.onnx_placement import convert_to_ort

    with tempfile.TemporaryDirectory(prefix="mobilize-ort-") as tmp:
        try:
            ort_path, config = convert_to_ort(data, Path(tmp), "model")
        except ConversionError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime's refusal becomes the artifact's failure
            raise ConversionError(f"convert_onnx_models_to_ort failed: {' '.join(str(exc).split())[:400]}",
                                  format="ort") from exc
        shutil.copyfile(ort_path, dest)
        lines = [f"# - {dest.name}" if ln.startswith("# - ") else ln for ln in config.read_text().splitlines()]
        companion(dest).write_text("\n".join(lines) + "\n")
    notes = [f"ORT format (onnxruntime {ort.__version__}, optimisation level 'all', fixed style); "
             f"{companion(dest).name} lists the operators a reduced onnxruntime build needs"]
    return notes + _float16_kept(data, dest)


def _float16_kept(data: bytes, dest: Path) -> list[str]:
    """A note when the converter turned float16 weights into float32: onnxruntime inserts casts for ops its CPU
    kernels here cannot run in float16 and folds them into the weights, so the file stores (and computes in) float32
    — a decision of this host's build, baked into the file."""
    import tempfile as _tmp

    from mobilize.analysis import onnx as onnx_reader
    from mobilize.analysis import ort as ort_reader

    def fp16_bytes(consts: list) -> int:
        return sum(c.nbytes for c in consts if c.dtype == "float16")

    with _tmp.TemporaryDirectory(prefix="mobilize-ort-") as tmp:
        src = Path(tmp) / "src.onnx"
        src.write_bytes(data)
        before = fp16_bytes(onnx_reader.read(src).constants)
    if before == 0:
        return []
    after = fp16_bytes(ort_reader.read(dest).constants)
    if after >= before // 2:
        return []
    return [f"float16: onnxruntime's converter on this host has no float16 kernels for some ops, so it cast their "
            f"weights to float32 ({before - after} float16 bytes became float32): this file stores and computes "
            "those ops in float32; convert on the target (ARM64) or ship the .onnx file for float16"]


def finalize(path: Path, info) -> list[str]:  # noqa: ANN001 - mobilize.export.metadata.FileInfo
    """Embed ``info`` in the ONNX source (the ONNX finalizer), convert it again, drop the source."""
    from mobilize.export import onnx as onnx_export

    stash = path.with_name(path.name + SOURCE_SUFFIX)
    if not stash.is_file():
        return []
    try:
        onnx_export.finalize(stash, info)
        convert(stash.read_bytes(), path)
    finally:
        stash.unlink(missing_ok=True)
    return []
