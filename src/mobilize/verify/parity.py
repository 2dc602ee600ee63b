"""Run an artifact and compare it with the PyTorch reference on the same inputs; the result is a record.

The reference outputs (and the inputs that produced them) are stored in the bundle as ``reference.npz`` so a bundle
can be re-verified later, on another machine, without the PyTorch model (``mobilize verify DIR``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mobilize.errors import FeedError, MobilizeError, RuntimeFailure, RuntimeUnavailable
from mobilize.runtime.base import IOTensor
from mobilize.verify import metrics as M
from mobilize.verify.inputs import InputSet
from mobilize.verify.tolerance import Tolerance, for_artifact


@dataclasses.dataclass
class Reference:
    """Inputs and PyTorch outputs, set by set, keyed by the model's own names."""

    sets: list[InputSet]
    outputs: list[dict[str, np.ndarray]]
    output_names: list[str]
    deterministic: bool = True

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {}
        for i, (s, out) in enumerate(zip(self.sets, self.outputs)):
            arrays.update({f"in{i}/{k}": v for k, v in s.arrays.items()})
            arrays.update({f"out{i}/{k}": v for k, v in out.items()})
        labels = np.array([s.label for s in self.sets])
        np.savez_compressed(path, __labels__=labels, __outputs__=np.array(self.output_names),
                            __deterministic__=np.array(self.deterministic), **arrays)

    @classmethod
    def load(cls, path: Path) -> Reference:
        """Read a saved reference; sizes and headers of every array are checked before anything is decompressed
        (a one-line :class:`~mobilize.errors.MobilizeInputError` for a special file, a zip bomb or a corrupted
        archive)."""
        from mobilize.safeio import check_npz

        check_npz(path, str(path))
        with np.load(path, allow_pickle=False) as z:
            labels = [str(x) for x in z["__labels__"]]
            names = [str(x) for x in z["__outputs__"]]
            det = bool(z["__deterministic__"])
            sets, outs = [], []
            for i, label in enumerate(labels):
                sets.append(InputSet(label, {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(f"in{i}/")}))
                outs.append({k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(f"out{i}/")})
        return cls(sets, outs, names, det)


def compute_reference(spec: Any, sets: list[InputSet], skipped: list[dict[str, Any]] | None = None) -> Reference:
    """Run PyTorch eager on every set; run the example twice to detect a non-deterministic model. A set at other
    dynamic sizes that the model itself cannot run is dropped and described in ``skipped``."""
    skipped = skipped if skipped is not None else []
    import torch

    from mobilize.errors import SourceError
    from mobilize.source import flatten_outputs, model_call

    outs = []
    kept = []
    for s in sets:
        tensors = tuple(torch.from_numpy(np.ascontiguousarray(s.arrays[n])) for n in spec.input_names)
        try:
            with torch.no_grad():
                _, flat = flatten_outputs(model_call(spec, tensors, f"the {s.label} input set"))
        except SourceError as exc:
            if "other dynamic sizes" in s.label:  # the model itself does not take the other size: no such set
                skipped.append({**s.describe(), "why": f"PyTorch itself fails at these sizes: {exc}"})
                continue
            raise
        kept.append(s)
        outs.append({n: t.detach().cpu().numpy() for n, t in zip(spec.output_names, flat)})
    sets = kept
    with torch.no_grad():
        _, again = flatten_outputs(model_call(spec, spec.example_inputs, "its example inputs (second run)"))
    det = all(np.array_equal(a.detach().cpu().numpy(), outs[0][n], equal_nan=True)
              for n, a in zip(spec.output_names, again))
    return Reference(sets, outs, list(spec.output_names), det)


@dataclasses.dataclass
class ParityRecord:
    status: str  # pass | fail | unverified
    runtime: str | None
    reason: str | None = None
    tolerance: Tolerance | None = None
    outputs: dict[str, M.OutputMetrics] = dataclasses.field(default_factory=dict)
    inputs_used: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    inputs_skipped: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)
    could_not_run: bool = False  # the runtime refused or crashed on the file (CLI `verify` exit 2)
    warnings: list[str] = dataclasses.field(default_factory=list)
    unjudged: list[str] = dataclasses.field(default_factory=list)  # outputs whose reference cannot vouch (degenerate)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"status": self.status, "runtime": self.runtime, "reason": self.reason}
        if self.outputs:
            worst = M.merge(list(self.outputs.values()))
            tops = [m.top1_agreement for m in self.outputs.values() if m.top1_agreement is not None]
            d.update(max_abs_error=worst.max_abs_error, max_rel_error=worst.max_rel_error, cosine=worst.cosine,
                     snr_db=worst.snr_db, mismatch_ratio=max(m.mismatch_ratio for m in self.outputs.values()),
                     top1_agreement=min(tops) if tops else None, nan_count=worst.nan_count,
                     inf_count=worst.inf_count)
        d["tolerance"] = self.tolerance.to_dict() if self.tolerance else None
        d["failures"] = list(self.failures)
        d["could_not_run"] = self.could_not_run
        d["warnings"] = list(self.warnings)
        d["unjudged_outputs"] = list(self.unjudged)
        d["outputs"] = {k: v.to_dict() for k, v in self.outputs.items()}
        d["inputs_used"] = self.inputs_used
        d["inputs_skipped"] = self.inputs_skipped
        return d


def io_map(model_names: Sequence[str], file_io: Sequence[IOTensor]) -> dict[str, str]:
    """Model name → file name: by name where the file kept the names, else by position (string outputs a file
    adds, such as a Core ML classifier's top label, have no PyTorch counterpart and are left out)."""
    if len(file_io) != len(model_names):
        file_io = [t for t in file_io if t.dtype != "string"]
    file_names = [t.name for t in file_io]
    if set(model_names) == set(file_names):
        return {n: n for n in model_names}
    if len(model_names) != len(file_names):
        raise RuntimeFailure(f"the file declares {len(file_names)} tensors {file_names} but the model has "
                             f"{len(model_names)} {list(model_names)}")
    return dict(zip(model_names, file_names))


def adapt_feed(arr: np.ndarray, want: IOTensor) -> np.ndarray:
    """Cast a model-dtype array to what the file declares (int64→int32 with a range check; float→int8 via the
    file's own scale/zero-point)."""
    if want.image and (want.image.get("normalization") or {}).get("mean") is not None:
        arr = to_pixels(arr, want.image["normalization"])
    target = np.dtype(want.dtype)
    if arr.dtype == target:
        return arr
    if want.quantization and np.issubdtype(target, np.integer) and np.issubdtype(arr.dtype, np.floating):
        scale = np.asarray(want.quantization["scale"], dtype=np.float64)
        zp = np.asarray(want.quantization["zero_point"], dtype=np.float64)
        info = np.iinfo(target)
        return np.clip(np.round(arr / scale + zp), info.min, info.max).astype(target)
    if np.issubdtype(target, np.integer) and np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(target)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise FeedError(f"{want.name}: values [{arr.min()}, {arr.max()}] do not fit the file's {want.dtype}")
    return arr.astype(target)


def to_pixels(arr: np.ndarray, norm: dict[str, Any]) -> np.ndarray:
    """Normalised model input → the pixels an image input takes: ``(x · std + mean) · scale`` per channel."""
    axis = 1 if norm.get("layout", "NCHW") == "NCHW" else -1
    shape = [1] * arr.ndim
    shape[axis] = -1
    mean = np.asarray(norm["mean"], np.float64).reshape(shape)
    std = np.asarray(norm["std"], np.float64).reshape(shape)
    return ((arr.astype(np.float64) * std + mean) * float(norm.get("scale", 255.0))).astype(np.float32)


def adapt_output(arr: np.ndarray, have: IOTensor) -> np.ndarray:
    if have.quantization and np.issubdtype(arr.dtype, np.integer):
        scale = np.asarray(have.quantization["scale"], dtype=np.float32)
        zp = np.asarray(have.quantization["zero_point"], dtype=np.float32)
        return (arr.astype(np.float32) - zp) * scale
    return arr


def _fits(arr: np.ndarray, want: IOTensor) -> bool:
    return arr.ndim == len(want.shape) and all(not isinstance(w, int) or w < 0 or w == g
                                               for g, w in zip(arr.shape, want.shape))


def verify_file(runner_cls: Any, path: Path, fmt: str, precision: str, ref: Reference,
                input_names: Sequence[str], tolerance: Tolerance | None = None) -> ParityRecord:
    """Run ``path`` on every reference input set and judge it against ``tolerance``."""
    tol = tolerance or for_artifact(fmt, precision)
    ok, why = runner_cls.available()
    if not ok:
        fallback = _fallback_runner(fmt)
        if fallback is None or not fallback.available()[0]:
            return ParityRecord("unverified", None, why, tol)
        runner_cls = fallback  # e.g. Core ML on Linux → the NumPy reference interpreter
    notes = [runner_cls.note] if getattr(runner_cls, "note", None) else []  # what this runtime can't vouch for
    if not ref.deterministic:
        return ParityRecord("unverified", runner_cls.runtime, "the PyTorch reference is non-deterministic (two runs "
                            "on the same input differ: dropout or random ops left on?); parity cannot be judged", tol,
                            warnings=notes)
    record = ParityRecord("pass", runner_cls.runtime, None, tol, warnings=list(notes))
    per_output: dict[str, list[M.OutputMetrics]] = {n: [] for n in ref.output_names}
    try:
        with runner_cls(path) as runner:
            in_map = io_map(input_names, runner.inputs)
            out_map = io_map(ref.output_names, runner.outputs)
            file_in = {t.name: t for t in runner.inputs}
            file_out = {t.name: t for t in runner.outputs}
            for s, ref_out in zip(ref.sets, ref.outputs):
                if not all(_fits(s.arrays[m], file_in[f]) for m, f in in_map.items()):
                    record.inputs_skipped.append({**s.describe(), "why": "shapes do not fit the file's static shape"})
                    continue
                feeds = {f: adapt_feed(s.arrays[m], file_in[f]) for m, f in in_map.items()}
                got = runner.infer(feeds)
                for m, f in out_map.items():
                    val = adapt_output(got[f], file_out[f])
                    if val.shape != ref_out[m].shape and val.size == ref_out[m].size:
                        val = val.reshape(ref_out[m].shape)  # e.g. Core ML's rank-0 → (1,)
                    per_output[m].append(M.compare(val, ref_out[m], atol=tol.atol, rtol=tol.rtol))
                record.inputs_used.append(s.describe())
            if getattr(runner, "fallback", None):
                record.runtime = f"{runner_cls.runtime} (builtin kernels)"
                record.warnings.append(runner.fallback)
    except RuntimeUnavailable as exc:  # incl. the reference interpreter's UnsupportedOpsError (lists the ops)
        return ParityRecord("unverified", runner_cls.runtime if notes else None, str(exc), tol, warnings=notes)
    except (MobilizeError, ValueError) as exc:
        return ParityRecord("fail", runner_cls.runtime, f"could not run the file: {exc}", tol, could_not_run=True,
                            warnings=notes)
    if not record.inputs_used:
        return ParityRecord("unverified", runner_cls.runtime, "no input set fits the file's shapes", tol,
                            inputs_skipped=record.inputs_skipped, warnings=notes)
    used = {s["label"] for s in record.inputs_used}
    unjudged: list[str] = []
    for name, items in per_output.items():
        m = M.merge(items)
        record.outputs[name] = m
        record.failures += judge(name, m, tol)
        why = M.degenerate([out[name] for s, out in zip(ref.sets, ref.outputs) if s.label in used])
        if why:
            unjudged.append(f"{name}: the PyTorch reference {why}, so matching it proves nothing; feed inputs that "
                            "exercise this output (calibration data, input_ranges) to verify it")
    record.unjudged = unjudged
    if record.failures:
        record.status = "fail"
        record.reason = record.failures[0]
    elif unjudged:
        record.status = "unverified"
        record.reason = unjudged[0]
    return record


def _fallback_runner(fmt: str) -> Any:
    """The format's fallback runner class (used when its own runtime is missing here), or None."""
    from mobilize import formats

    plugin = formats.REGISTRY.get(fmt)
    return plugin.load("fallback_runner") if plugin is not None and plugin.fallback_runner else None


def judge(name: str, m: M.OutputMetrics, tol: Tolerance) -> list[str]:
    """Every way an output misses its tolerance, each a readable sentence with the numbers."""
    out = []
    if m.ref_nan_count or m.ref_inf_count:
        out.append(f"{name}: the PyTorch reference itself has {m.ref_nan_count} NaN / {m.ref_inf_count} Inf values; "
                   "fix the model before judging its files")
    if (m.nan_count > m.ref_nan_count) or (m.inf_count > m.ref_inf_count):
        out.append(f"{name}: {m.nan_count} NaN / {m.inf_count} Inf where PyTorch has {m.ref_nan_count} / "
                   f"{m.ref_inf_count}")
    if m.mismatch_ratio > tol.max_mismatch_ratio:
        out.append(f"{name}: {m.mismatch_ratio:.2%} of elements outside atol={tol.atol:g}+rtol={tol.rtol:g}·|ref| "
                   f"(max abs error {m.max_abs_error:.3g}, allowed share {tol.max_mismatch_ratio:.2%})")
    if m.cosine is not None and m.cosine < tol.min_cosine:
        out.append(f"{name}: cosine {m.cosine:.6f} < {tol.min_cosine}")
    if m.snr_db is not None and m.snr_db < tol.min_snr_db:
        out.append(f"{name}: SNR {m.snr_db:.1f} dB < {tol.min_snr_db} dB")
    return out
