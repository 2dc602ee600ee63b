"""The format registry: each format is an exporter, a runner and an I/O reader, found by dotted path so nothing
heavy is imported until a format is used.

Adding a format = one module in ``export/``, one in ``runtime/``, and one :func:`register` call here. Registration
refuses duplicates at import time, and ``tests/test_formats.py`` fails when a registered format lacks a piece.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from mobilize.errors import OptionError
from mobilize.quantize.recipes import FLOAT_PRECISIONS, QUANT_PRECISIONS, supported

# fp32/fp16 come from the exporters; the quantized precisions from mobilize.quantize (recipes per format there)
PRECISIONS = FLOAT_PRECISIONS + QUANT_PRECISIONS


@dataclasses.dataclass(frozen=True)
class FormatPlugin:
    name: str
    suffix: str  # file (or package folder) suffix
    exporter: str  # "module:function" with the signature of mobilize.export.onnx.export
    runner: str  # "module:Class", a mobilize.runtime.base.Runner subclass
    io_reader: str  # "module:function" returning (inputs, outputs) as IOTensors, no runtime needed where possible
    precisions: tuple[str, ...]
    summary: str
    # "module:function" path -> mobilize.analysis.FileContents (ops and constants read statically, no runtime)
    analyzer: str = ""
    # "module:Class" used when the main runner's available() is False (e.g. Core ML's NumPy reference interpreter)
    fallback_runner: str | None = None
    # "module:function" (path, mobilize.export.metadata.FileInfo) -> notes: embeds the metadata, makes the bytes
    # reproducible and removes converter side files; runs on every exported and quantized file
    finalizer: str = ""
    # "module:function" (path, options) -> placement record: where the file's ops would run on a phone, from the
    # runtimes' own analysis tools (mobilize.analysis.placement)
    placement: str = ""
    # the format whose file of the same precision this one is converted from (its exporter reads that file when the
    # run exports it; quantized precisions come only that way), e.g. "onnx" for "ort"
    converts_from: str = ""
    # files the exporter writes beside the artifact that ship with it, as suffixes replacing the artifact's suffix
    companions: tuple[str, ...] = ()
    # the pip extra that installs this format's converter and runtime (``pip install 'mobilize[<extra>]'``)
    extra: str = ""

    def load(self, attr: str) -> Any:
        mod, _, name = getattr(self, attr).partition(":")
        return getattr(importlib.import_module(mod), name)


REGISTRY: dict[str, FormatPlugin] = {}


def register(plugin: FormatPlugin) -> FormatPlugin:
    if plugin.name in REGISTRY:
        raise ValueError(f"format {plugin.name!r} is already registered")
    REGISTRY[plugin.name] = plugin
    return plugin


register(FormatPlugin("onnx", ".onnx", "mobilize.export.onnx:export", "mobilize.runtime.onnx:OnnxRunner",
                      "mobilize.runtime.onnx:read_io", supported("onnx"), "ONNX (torch.onnx dynamo → onnxruntime)",
                      analyzer="mobilize.analysis.onnx:read", finalizer="mobilize.export.onnx:finalize",
                      placement="mobilize.analysis.onnx_placement:place", extra="onnx"))
register(FormatPlugin("coreml", ".mlpackage", "mobilize.export.coreml:export", "mobilize.runtime.coreml:CoreMLRunner",
                      "mobilize.runtime.coreml:read_io", supported("coreml"), "Core ML ML Program (coremltools)",
                      analyzer="mobilize.analysis.coreml:read",
                      fallback_runner="mobilize.runtime.coreml_ref:CoreMLReferenceRunner",
                      finalizer="mobilize.export.coreml:finalize",
                      placement="mobilize.analysis.coreml_placement:place", extra="coreml"))
register(FormatPlugin("tflite", ".tflite", "mobilize.export.tflite:export", "mobilize.runtime.tflite:TFLiteRunner",
                      "mobilize.runtime.tflite:read_io", supported("tflite"),
                      "TFLite / LiteRT (litert-torch → ai-edge-litert)", analyzer="mobilize.analysis.tflite:read",
                      finalizer="mobilize.export.tflite:finalize",
                      placement="mobilize.analysis.tflite_placement:place", extra="tflite"))
register(FormatPlugin("ort", ".ort", "mobilize.export.ort:export", "mobilize.runtime.ort:OrtRunner",
                      "mobilize.runtime.ort:read_io", supported("onnx"),
                      "ORT format for reduced onnxruntime builds (convert_onnx_models_to_ort) + operator config",
                      analyzer="mobilize.analysis.ort:read", finalizer="mobilize.export.ort:finalize",
                      placement="mobilize.analysis.onnx_placement:place_ort", converts_from="onnx",
                      companions=(".required_operators.config",), extra="onnx"))

DEFAULT_FORMATS = ("onnx", "coreml", "tflite")

#: pip extra → the modules it installs (``pip install 'mobilize[onnx]'``; ``[all]`` installs every one)
EXTRAS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx", "onnxscript", "onnxruntime"),
    "coreml": ("coremltools",),
    "tflite": ("litert_torch", "ai_edge_litert", "ai_edge_quantizer"),
}


def missing_modules(fmt: str) -> list[str]:
    """The modules of ``fmt``'s extra that are not installed (empty: the format can be used)."""
    import importlib.util

    return [m for m in EXTRAS.get(get(fmt).extra, ()) if importlib.util.find_spec(m) is None]


def missing_extra_message(fmt: str) -> str | None:
    """``coreml needs coremltools, which is not installed: pip install 'mobilize[coreml]'`` (None when installed)."""
    missing = missing_modules(fmt)
    if not missing:
        return None
    what = ", ".join(m.replace("_", "-") for m in missing)
    return (f"{fmt} needs {what}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            f"pip install 'mobilize[{get(fmt).extra}]' (or 'mobilize[all]')")


def require_installed(fmts: list[str]) -> None:
    """Refuse, before any work, formats whose extra is missing: one line naming the ``pip install`` to run."""
    from mobilize.errors import MissingExtraError

    problems = [m for m in (missing_extra_message(f) for f in fmts) if m]
    if problems:
        raise MissingExtraError("; ".join(problems))


def installed(fmts: tuple[str, ...] | list[str] = DEFAULT_FORMATS) -> list[str]:
    """The formats of ``fmts`` whose extras are installed, in order."""
    return [f for f in fmts if not missing_modules(f)]
DEFAULT_PRECISIONS = ("fp32", "fp16")


def in_dependency_order(fmts: list[str]) -> list[str]:
    """``fmts`` with every format that is converted from another one placed after it (``ort`` after ``onnx``)."""
    out: list[str] = []
    for f in fmts:
        out.append(f)
    for f in list(out):
        src = REGISTRY[f].converts_from if f in REGISTRY else ""
        if src in out and out.index(src) > out.index(f):
            out.remove(f)
            out.insert(out.index(src) + 1, f)
    return out


def companion_paths(plugin: FormatPlugin, artifact: Any) -> list[Any]:
    """The companion files of an artifact path (``x_fp32.ort`` → ``x_fp32.required_operators.config``)."""
    return [artifact.with_name(artifact.stem + suffix) for suffix in plugin.companions]


def get(name: str) -> FormatPlugin:
    try:
        return REGISTRY[name]
    except KeyError:
        raise OptionError(f"unknown format {name!r}; choose from {', '.join(REGISTRY)}") from None


def parse_list(value: str | list[str] | tuple[str, ...], *, what: str, allowed: tuple[str, ...]) -> list[str]:
    """Parse ``"onnx,tflite"`` (or a list) into a de-duplicated list, rejecting unknown names with the choices."""
    items = [v.strip().lower() for v in (value.split(",") if isinstance(value, str) else value)]
    items = [v for v in items if v]
    if not items:
        raise OptionError(f"--{what} is empty; choose from {', '.join(allowed)}")
    bad = [v for v in items if v not in allowed]
    if bad:
        import difflib

        hint = difflib.get_close_matches(bad[0], allowed, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise OptionError(f"--{what}: unknown value {bad[0]!r}{did}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(items))
