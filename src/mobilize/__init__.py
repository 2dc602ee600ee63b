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
from mobilize.errors import (  # noqa: E402
    BundleError,
    CaptureError,
    ConfigError,
    ConversionError,
    MobilizeError,
    MobilizeInputError,
    OptionError,
    SourceError,
    SpecError,
)
from mobilize.spec import ModelSpec, Normalization  # noqa: E402


def export(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - thin lazy wrapper, see mobilize.api.export
    from mobilize import api

    return api.export(*args, **kwargs)


def verify(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - see mobilize.api.verify
    from mobilize import api

    return api.verify(*args, **kwargs)


def diff(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - see mobilize.diff.diff
    from mobilize.diff import diff as _diff

    return _diff(*args, **kwargs)


def load_bundle(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - see mobilize.api.load_bundle
    from mobilize import api

    return api.load_bundle(*args, **kwargs)


export.__doc__ = "Export a model source to a verified bundle; see :func:`mobilize.api.export`."
verify.__doc__ = "Re-verify a bundle; see :func:`mobilize.api.verify`."
load_bundle.__doc__ = "Read and check a bundle's manifest; see :func:`mobilize.api.load_bundle`."
diff.__doc__ = "Where each file of a bundle diverges from PyTorch, layer by layer; see :func:`mobilize.diff.diff`."

__all__ = ["BundleError", "CaptureError", "ConfigError", "ConversionError", "MobilizeError", "MobilizeInputError",
           "ModelSpec", "Normalization", "OptionError", "SourceError", "SpecError", "diff", "export", "load_bundle",
           "verify"]
