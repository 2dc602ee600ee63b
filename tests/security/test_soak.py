"""Exporting zoo models to every format repeatedly in one process does not grow memory without bound (fp32 only: fp16
goes through the same converters and would double the run time). The largest CNN and the recurrent model: what
could leak in this process (captured programs, references, worker handles, converter children's results) grows with
the model, and each distinct code path (convolutions; recurrent layers, unrolled or native) is covered."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_SCRIPT = textwrap.dedent("""
    import gc, json, sys
    from mobilize import api

    def rss_mb():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024

    out, rounds = sys.argv[1], []
    for r in range(3):
        for name in ("mobilenet_v2", "gru_classifier"):
            # verification runs in child processes; what could leak here is converter state
            res = api.export(f"zoo:{name}", out, formats="onnx,coreml,tflite", precisions="fp32",
                             verify=False)
            assert res.manifest["summary"]["failed"] == 0, name  # (gru_classifier's TFLite file is unfit: unrolled)
        gc.collect()
        rounds.append(rss_mb())
    print(json.dumps(rounds))
""")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_repeated_zoo_exports_keep_memory_flat(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "b")], capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rounds = json.loads(proc.stdout.strip().splitlines()[-1])
    # the first round pays imports and converter caches; later rounds must not keep growing
    assert rounds[2] - rounds[1] < 150, rounds
