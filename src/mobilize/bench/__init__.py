"""``mobilize bench``: latency, memory, size and compute of every artifact in a bundle, with PyTorch eager as the
baseline row; budgets; terminal, Markdown and self-contained HTML reports.

Modules: ``latency`` (statistics + the interleaved timing loop), ``memory`` (peak RSS in a subprocess), ``size``
(bytes, zipped bytes, parameter-byte floor), ``macs`` (MACs, parameters, CPU peak), ``budget``, ``machine``,
``run`` (the whole pass over a bundle), ``report`` (table, report.md, report.html), ``cli`` (the click command).
Nothing heavy is imported until a function runs. Docs: docs/bench.md.
"""

from __future__ import annotations


def bench(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - lazy wrapper, see mobilize.bench.run.bench
    from mobilize.bench.run import bench as _bench

    return _bench(*args, **kwargs)


bench.__doc__ = "Benchmark a bundle; see :func:`mobilize.bench.run.bench`."

__all__ = ["bench"]
