"""mobilize: PyTorch → ONNX, Core ML and TFLite files, verified against PyTorch, in an app-ready bundle.

Public API::

    import mobilize
    result = mobilize.export("zoo:digits", "out/", formats="onnx,tflite", precisions="fp32,fp16")
    result.exit_code, result.manifest["artifacts"]
    mobilize.verify("out/")            # re-check a bundle against its stored PyTorch reference
    mobilize.load_bundle("out/")       # validated manifest (schema, paths, sizes, sha256)
    mobilize.diff("out/", source="zoo:digits")   # where each file diverges from PyTorch, layer by layer
"""

from __future__ import annotations

__version__ = "0.1.0"

# The stage packages mobilize/export/, mobilize/verify/ and mobilize/diff/ share their names with the API functions
# below. Importing a submodule binds it as an attribute of its parent the first time it loads; loading them (cheap:
# none imports torch) before the functions are defined keeps `mobilize.export` / `.verify` / `.diff` the functions.
import mobilize.diff as _diff_stage  # noqa: E402, F401
import mobilize.export as _export_stage  # noqa: E402, F401
import mobilize.verify as _verify_stage  # noqa: E402, F401
from mobilize.api import Result, export, load_bundle, verify  # noqa: E402
from mobilize.diff import DiffResult, diff  # noqa: E402
from mobilize.errors import (  # noqa: E402
    BundleError,
    CaptureError,
    ConfigError,
    ConversionError,
    MissingExtraError,
    MobilizeError,
    MobilizeInputError,
    OptionError,
    SourceError,
    SpecError,
)
from mobilize.spec import ModelSpec, Normalization  # noqa: E402

__all__ = ["BundleError", "CaptureError", "ConfigError", "ConversionError", "DiffResult", "MissingExtraError",
           "MobilizeError", "MobilizeInputError", "ModelSpec", "Normalization", "OptionError", "Result", "SourceError",
           "SpecError", "diff", "export", "load_bundle", "verify"]
