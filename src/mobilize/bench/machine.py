"""What machine the numbers came from: CPU model, cores, OS, Python and runtime versions."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

_PACKAGES = ("mobilize", "torch", "onnxruntime", "ai-edge-litert", "coremltools", "litert-torch", "numpy")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        import subprocess

        try:
            return (
                subprocess.run(
                    ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, check=False, timeout=5
                ).stdout.strip()
                or platform.processor()
            )
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """CPUs this process may run on (respects taskset/cgroup affinity where the OS exposes it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_flags() -> list[str]:
    """SIMD features that decide kernel choice (AVX2, AVX-512, NEON...)."""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_fp16", "fma", "neon",
              "asimd", "asimdhp", "fphp")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def native_fp16() -> bool:
    """Whether this CPU does float16 arithmetic in hardware (x86 AVX512-FP16 / AMX-FP16, Arm FP16). Without it,
    runtimes emulate fp16 compute and its latency here says little about a phone, whose CPU, GPU and NPU do."""
    return bool({"avx512_fp16", "amx_fp16", "asimdhp", "fphp"} & set(cpu_flags()))


def _load_avg() -> list[float] | None:
    """1/5/15-minute load averages: a busy machine (load ≥ cores) explains noisy numbers."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def describe() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores_logical": os.cpu_count() or 1,
        "cores_usable": usable_cores(),
        "os": f"{platform.system()} {platform.release()}",
        "platform": f"{sys.platform}-{platform.machine()}",
        "python": platform.python_version(),
        "load_avg": _load_avg(),
        "versions": versions,
    }
