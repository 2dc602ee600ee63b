"""What an exported file holds: its ops and its constants, read statically (no runtime, no inference).

One reader per format (``analysis/onnx.py``, ``tflite.py``, ``coreml.py``, ``pte.py``, registered as each format
plug-in's ``analyzer``) lists the file's ops and constant tensors; :func:`summarize` turns that into the record the
manifest keeps and the fitness judgement reads (:mod:`mobilize.verify.fitness`):

- the op histogram and count (an unrolled recurrence shows up as thousands of elementwise ops);
- parameters, bytes and tensors of the constants per consuming op type (``weights_by_op``: where the file's size is);
- constant bytes, and the bytes of float weight matrices per consuming op type (a quantized file that left its LSTM
  weights in float shows them here);
- constants stored more than once — identical, negated, or the same values in another order (a transposed copy) —
  and constants that repeat one slice along an axis (a broadcast baked into the file).

Files are read in the worker process like every artifact (they may come from elsewhere); the readers parse, they
never execute anything from the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

#: constants smaller than this are counted but not compared (biases, scales, shapes)
COMPARE_MIN_BYTES = 4096
#: constants smaller than this are not searched for repeated slices
REPEAT_MIN_BYTES = 65536
#: op types (lower-cased, any format) that run a whole recurrence natively
RECURRENT_OPS = frozenset({"lstm", "gru", "rnn", "dynamicquantizelstm", "unidirectional_sequence_lstm",
                           "bidirectional_sequence_lstm", "unidirectional_sequence_rnn", "bidirectional_sequence_rnn",
                           "while", "while_loop", "loop", "scan"})
#: op kinds (see mobilize.capture.OP_KINDS) → the op types, lower-cased, that run them natively in some format
KIND_OPS: dict[str, frozenset[str]] = {"recurrent": RECURRENT_OPS, "prelu": frozenset({"prelu", "leaky_relu"})}


@dataclasses.dataclass
class Constant:
    """One stored constant: its name in the file, shape, dtype name, stored bytes, and the op types reading it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    consumers: tuple[str, ...] = ()
    value: np.ndarray | None = dataclasses.field(default=None, repr=False)  # decoded lazily by the reader

    @property
    def is_float_matrix(self) -> bool:
        return self.dtype.startswith(("float", "bfloat")) and len([d for d in self.shape if d > 1]) >= 2


@dataclasses.dataclass
class FileContents:
    """What a reader found: op types in graph order (nested graphs included) and the constants."""

    ops: list[str]
    constants: list[Constant]
    #: format-specific facts for the record, merged in as they are (ExecuTorch: ``delegation``)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def summarize(contents: FileContents) -> dict[str, Any]:
    """The manifest record of one file (see the module docstring)."""
    hist = Counter(contents.ops)
    consts = contents.constants
    float_weights: dict[str, int] = defaultdict(int)
    float32_weights: dict[str, int] = defaultdict(int)
    for c in consts:
        if c.is_float_matrix and c.nbytes >= COMPARE_MIN_BYTES:
            float_weights["+".join(sorted(set(c.consumers))) or "(unused)"] += c.nbytes
            if c.dtype == "float32":
                float32_weights["+".join(sorted(set(c.consumers))) or "(unused)"] += c.nbytes
    kinds = {k: int(sum(n for op, n in hist.items() if op.lower().split(".")[-1] in names))
             for k, names in KIND_OPS.items()}
    by_op: dict[str, dict[str, int]] = defaultdict(lambda: {"parameters": 0, "bytes": 0, "tensors": 0})
    for c in consts:
        entry = by_op["+".join(sorted(set(c.consumers))) or "(unused)"]
        entry["parameters"] += int(np.prod(c.shape)) if c.shape else 1
        entry["bytes"] += int(c.nbytes)
        entry["tensors"] += 1
    return {
        "op_count": int(sum(hist.values())),
        "ops": dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        "kinds": kinds,
        "constants": {"count": len(consts), "bytes": int(sum(c.nbytes for c in consts))},
        "float_weight_bytes": dict(sorted(float_weights.items(), key=lambda kv: -kv[1])),
        "float32_weight_bytes": dict(sorted(float32_weights.items(), key=lambda kv: -kv[1])),
        "weights_by_op": dict(sorted(by_op.items(), key=lambda kv: (-kv[1]["bytes"], kv[0]))),
        "duplicates": duplicates(consts),
        "repeated_constants": repeated(consts),
        **contents.extra,
    }


def _short(name: str, limit: int = 120) -> str:
    name = " ".join(str(name).split())
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _flat(c: Constant) -> np.ndarray | None:
    v = c.value
    if v is None:
        return None
    v = np.asarray(v)
    return v.astype(np.float32).ravel() if np.issubdtype(v.dtype, np.floating) else v.astype(np.int64).ravel()


def _multiset_key(v: np.ndarray) -> str:
    """The same for two arrays that hold the same magnitudes in any order (copies, negations, transposes)."""
    return hashlib.sha1(np.sort(np.abs(v)).tobytes()).hexdigest()


def duplicates(consts: Iterable[Constant]) -> list[dict[str, Any]]:
    """Groups of large constants that store the same values again (identical, negated, or reordered)."""
    by_size: dict[tuple[int, str], list[Constant]] = defaultdict(list)
    for c in consts:
        if c.nbytes >= COMPARE_MIN_BYTES and c.value is not None:
            by_size[(int(np.asarray(c.value).size), c.dtype)].append(c)
    groups: list[dict[str, Any]] = []
    for members in by_size.values():
        if len(members) < 2:
            continue
        by_key: dict[str, list[tuple[Constant, np.ndarray]]] = defaultdict(list)
        for c in members:
            v = _flat(c)
            if v is not None and np.ptp(v) > 0:  # a constant fill is not a copy of anything
                by_key[_multiset_key(v)].append((c, v))
        for same in by_key.values():
            if len(same) < 2:
                continue
            (first, fv), rest = same[0], same[1:]
            relations = []
            for _c, v in rest:
                if np.array_equal(v, fv):
                    relations.append("identical")
                elif np.array_equal(v, -fv):
                    relations.append("negated")
                else:
                    relations.append("reordered (e.g. transposed)")
            groups.append({"tensors": [_short(c.name) for c, _ in same], "bytes_each": int(first.nbytes),
                           "extra_bytes": int(sum(c.nbytes for c, _ in rest)),
                           "relation": ", ".join(sorted(set(relations)))})
    return sorted(groups, key=lambda g: -g["extra_bytes"])


def repeated(consts: Iterable[Constant]) -> list[dict[str, Any]]:
    """Large constants that are one slice repeated along an axis (``expand``/``tile`` folded into the file)."""
    out = []
    for c in consts:
        if c.nbytes < REPEAT_MIN_BYTES or c.value is None:
            continue
        v = np.asarray(c.value)
        for axis, n in enumerate(v.shape):
            if n < 2:
                continue
            first = np.take(v, [0], axis=axis)
            if not np.array_equal(np.take(v, [1], axis=axis), first):
                continue
            if np.all(v == first):
                out.append({"tensor": _short(c.name), "bytes": int(c.nbytes), "axis": axis, "repeats": int(n),
                            "extra_bytes": int(c.nbytes - c.nbytes // n)})
                break
    return sorted(out, key=lambda r: -r["extra_bytes"])


def analyze(fmt: str, path: Any) -> dict[str, Any]:
    """Read ``path`` with the format's analyzer and summarize it (run this in the worker for untrusted files)."""
    from mobilize import formats

    reader = formats.get(fmt).load("analyzer")
    return summarize(reader(path))
