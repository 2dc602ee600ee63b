"""Budget and thread-list parsing, and budget verdicts."""

from __future__ import annotations

import pytest

from mobilize.bench.budget import Budget, judge, parse
from mobilize.bench.run import parse_threads
from mobilize.errors import OptionError


def test_parse_good() -> None:
    b = parse("latency_p90_ms=15, size_mb=10,threads=1")
    assert b == Budget({"latency_p90_ms": 15.0, "size_mb": 10.0}, threads=1)
    assert parse("zipped_mb=0.5").limits == {"zipped_mb": 0.5}
    assert parse(None) is None and parse("  ") is None


@pytest.mark.parametrize(
    "text",
    [
        "latency_p90_ms",
        "latency_p90_ms=",
        "=3",
        "latency_p90=15",
        "size_mb=ten",
        "size_mb=-1",
        "size_mb=inf",
        "size_mb=nan",
        "threads=0",
        "threads=two",
        "threads=1",
        "size_mb=1,size_mb=2",
        "latency_p90_ms=1;size_mb=2",
    ],
)
def test_parse_malformed(text: str) -> None:
    with pytest.raises(OptionError) as info:
        parse(text)
    assert "\n" not in str(info.value) and "--budget" in str(info.value)


def test_unknown_key_suggests() -> None:
    with pytest.raises(OptionError, match="did you mean 'latency_p90_ms'"):
        parse("latency_p90ms=3")


def _row(threads: int, p90: float | None, nbytes: int | None = 2_000_000) -> dict:
    return {
        "threads": threads,
        "latency_ms": {"p90": p90} if p90 is not None else None,
        "bytes": nbytes,
        "reason": None if p90 is not None else "not measurable here",
    }


def test_judge() -> None:
    b = parse("latency_p90_ms=5,size_mb=3,threads=1")
    assert judge(b, [_row(1, 4.0), _row(2, 9.0)])["status"] == "pass"  # threads=1 only
    assert judge(b, [_row(1, 6.0), _row(2, 1.0)])["status"] == "fail"
    assert judge(parse("size_mb=1"), [_row(1, 1.0)])["status"] == "fail"  # 2 MB > 1 MB
    unknown = judge(b, [_row(1, None)])
    assert unknown["status"] == "unknown" and any(c["ok"] is None for c in unknown["checks"])
    every = judge(parse("latency_p90_ms=5"), [_row(1, 4.0), _row(2, 6.0)])  # no threads= → every thread count
    assert every["status"] == "fail" and [c["threads"] for c in every["checks"]] == [1, 2]


def test_parse_threads() -> None:
    from mobilize.bench.machine import usable_cores

    assert parse_threads("2,1,2") == [1, 2]
    assert parse_threads(None) == sorted({1, usable_cores()})
    assert parse_threads("1,all") == sorted({1, usable_cores()})
    for bad in ("0", "x", "", "1,-2"):
        with pytest.raises(OptionError):
            parse_threads(bad)
