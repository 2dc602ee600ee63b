"""Checkpoints: safetensors and weights-only torch files load; a malicious pickle never runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mobilize.checkpoint import apply_weights, load_state_dict
from mobilize.errors import SourceError


class _Evil:
    """Unpickling this creates the marker file (what an attacker's payload would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def test_safetensors_and_weights_only_checkpoints(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    src = torch.nn.Linear(3, 2)
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": src.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    for name in ("w.safetensors", "ckpt.pt"):
        dst = torch.nn.Linear(3, 2)
        apply_weights(dst, tmp_path / name)
        assert torch.equal(dst.weight, src.weight) and torch.equal(dst.bias, src.bias)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    torch.save({"state_dict": torch.nn.Linear(2, 2).state_dict(), "x": _Evil(marker)}, tmp_path / "evil.pt")
    with pytest.raises(SourceError, match="--trust-pickle") as info:
        load_state_dict(tmp_path / "evil.pt")
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_trust_pickle_is_the_only_way_in(tmp_path: Path) -> None:
    marker = tmp_path / "RAN"
    torch.save({"state_dict": torch.nn.Linear(2, 2).state_dict(), "x": _Evil(marker)}, tmp_path / "evil.pt")
    load_state_dict(tmp_path / "evil.pt", trust_pickle=True)
    assert marker.exists()  # proves the payload is live, so the refusal above is meaningful


def test_weights_that_do_not_fit(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file(torch.nn.Linear(3, 2).state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(SourceError, match="do not fit"):
        apply_weights(torch.nn.Linear(4, 2), tmp_path / "w.safetensors")
    with pytest.raises(SourceError, match="missing"):
        apply_weights(torch.nn.Sequential(torch.nn.Linear(3, 2)), tmp_path / "w.safetensors")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SourceError, match="not a checkpoint"):
        load_state_dict(tmp_path / "notes.txt")
    with pytest.raises(SourceError, match="does not exist"):
        load_state_dict(tmp_path / "nope.pt")


@pytest.mark.slow
def test_cli_refuses_malicious_checkpoint(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    torch.save({"state_dict": torch.nn.Linear(4, 2).state_dict(), "x": _Evil(marker)}, tmp_path / "evil.pt")
    (tmp_path / "m.py").write_text("import torch\ndef build():\n    return torch.nn.Linear(4, 2).eval(), "
                                   "(torch.randn(1, 4),)\n")
    proc = subprocess.run([sys.executable, "-m", "mobilize", "export", "m.py:build", "--weights", "evil.pt",
                           "--formats", "onnx", "--precisions", "fp32", "--out", "out"], cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ}, timeout=300)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()
             and not re.match(r"\[\d\d:\d\d\] ", ln)]  # progress lines aside
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()
