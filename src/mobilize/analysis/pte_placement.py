"""Placement of an ExecuTorch ``.pte``: which ops run in the XNNPACK delegate and which on the portable CPU kernels.

Unlike TFLite or ONNX, a ``.pte`` is partitioned **at export**: the lowering decided which ops each delegate takes,
and the file holds the delegate payloads and the portable kernel calls as they will run on the phone. So the
``xnnpack`` path is read from the file itself (:func:`mobilize.analysis.pte.read`, no runtime): its delegate calls
are the partitions, the ops inside them are delegated, every portable kernel call is ``unsupported`` (it runs on
ExecuTorch's portable kernels, single-threaded reference implementations). MACs are not computed for a ``.pte``
(XNNPACK's serialized graph has shapes but no op cost model here), so the path has ``node_share``, not ``mac_share``.

ExecuTorch's other backends — Vulkan (GPU), Core ML and MPS (Apple), Qualcomm QNN / MediaTek / Samsung (NPU) — each
need a lowering of their own at export, which mobilize does not build; those paths are ``unverified`` with that
reason rather than guessed from the XNNPACK file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mobilize.analysis.placement import share

_NOT_LOWERED = ("this .pte is lowered for XNNPACK only; ExecuTorch's {what} backend needs its own lowering at export "
                "(a separate .pte), which mobilize does not build")


def place(path: Path, options: dict[str, Any]) -> dict[str, Any]:
    from mobilize.analysis import pte

    contents = pte.read(Path(path))
    d = contents.extra.get("delegation") or {}
    portable = dict(d.get("portable_ops") or {})
    delegated = int(d.get("delegated_ops") or 0)
    total = delegated + sum(portable.values())
    xnnpack = {
        "tool": "ExecuTorch program deserializer + XNNPACK flatbuffer schema (the file's own delegate payloads)",
        "estimate": "decided at export by XnnpackPartitioner and stored in the file: the phone runs these same "
                    "partitions (ARM kernels instead of x86)",
        "status": "analyzed", "ops": total, "supported_ops": delegated,
        "partitions": int(d.get("subgraphs") or 0), "delegated_ops": delegated,
        "node_share": share(delegated, total), "mac_share": None,
        "unsupported_ops": portable,
        "unsupported": [{"op": op, "module": None, "count": n} for op, n in portable.items()][:200],
    }
    paths: dict[str, Any] = {"xnnpack": xnnpack}
    for name, what in (("gpu", "Vulkan (GPU)"), ("npu", "Qualcomm / MediaTek / Samsung (NPU)"),
                       ("ane", "Core ML (Neural Engine)")):
        paths[name] = {"status": "unverified", "reason": _NOT_LOWERED.format(what=what)}
    return {"format": "pte", "ops": total, "methods": list(d.get("methods") or []), "paths": paths}
