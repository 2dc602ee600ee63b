"""Compute: MACs and parameters of the model, and this CPU's measured peak multiply-accumulate rate.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` on one eager forward pass with the example inputs
(MACs = FLOPs / 2). It counts the matmul family (mm, addmm, bmm, linear), convolutions and attention; elementwise
ops, pooling and normalisation are not counted — for CNNs and transformers they are a small share, and they are
not what the roofline below is made of.

The peak is the best rate of a large float32 matrix multiply (``torch.mm``, n = 1024) on the same thread count,
measured once per run: a practical "what this CPU's BLAS reaches" ceiling, not the datasheet peak.
"""

from __future__ import annotations

import time
from typing import Any


def count_macs(module: Any, example_inputs: tuple[Any, ...]) -> int:
    """MACs of one forward pass (conv / linear / matmul / attention)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module(*example_inputs)
    return int(counter.get_total_flops()) // 2


def count_parameters(module: Any) -> int:
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def peak_gmacs(threads: int, *, n: int = 1024, seconds: float = 0.3) -> float:
    """Best GMAC/s of an ``n``×``n`` float32 ``torch.mm`` on ``threads`` threads (n³ MACs per product)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=g)
        b = torch.randn(n, n, generator=g)
        out = torch.empty(n, n)
        for _ in range(2):
            torch.mm(a, b, out=out)
        best = float("inf")
        start = time.perf_counter()
        runs = 0
        while runs < 3 or time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            torch.mm(a, b, out=out)
            best = min(best, time.perf_counter() - t0)
            runs += 1
        return n**3 / best / 1e9
    finally:
        torch.set_num_threads(before)
