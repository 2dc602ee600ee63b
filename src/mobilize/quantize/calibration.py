"""Calibration data: load it (``.npz``, a folder of images, or ``file.py:fn``), lint it against the model's example
inputs, and split off a held-out part for measuring the quantized files.

Internally a :class:`CalibrationData` holds, per model input, an array ``(samples, *example_shape)``: every sample is
one feed exactly like the example input (batch dimension included).
"""

from __future__ import annotations

import dataclasses
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mobilize.errors import OptionError, one_line

#: a static recipe needs at least this many samples (calibration + held-out)
MIN_SAMPLES = 8
#: calibration data decoded into memory (arrays of an .npz, images as float32 samples) is bounded
MAX_BYTES = 4 << 30
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class CalibrationError(OptionError):
    """Calibration data is missing, unreadable or does not fit the model (CLI exit 2)."""


@dataclasses.dataclass
class CalibrationData:
    """Per model input name, ``(samples, *example_shape)`` arrays; ``source`` says where they came from."""

    arrays: dict[str, np.ndarray]
    source: str
    warnings: list[str] = dataclasses.field(default_factory=list)
    #: arrays of the .npz that are not model inputs (labels, boxes…), first axis = samples; a --metric reads them
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def samples(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])

    def feeds(self) -> list[dict[str, np.ndarray]]:
        """One ``{input name: array}`` feed per sample, each shaped like the example input."""
        return [{k: v[i] for k, v in self.arrays.items()} for i in range(self.samples)]

    def split(self, holdout: float) -> tuple[CalibrationData, CalibrationData]:
        """(calibrate, held out): every k-th sample is held out (the data is often ordered, so no tail split)."""
        n = self.samples
        k = max(1, round(n * holdout))
        held = np.zeros(n, bool)
        held[np.linspace(0, n - 1, k).round().astype(int)] = True
        return (CalibrationData({a: v[~held] for a, v in self.arrays.items()}, self.source,
                                extras={a: v[~held] for a, v in self.extras.items()}),
                CalibrationData({a: v[held] for a, v in self.arrays.items()}, self.source,
                                extras={a: v[held] for a, v in self.extras.items()}))

    def describe(self) -> dict[str, Any]:
        d = {"source": self.source, "samples": self.samples,
             "inputs": {k: {"shape": list(v.shape[1:]), "dtype": v.dtype.name} for k, v in self.arrays.items()}}
        if self.extras:
            d["extras"] = {k: {"shape": list(v.shape[1:]), "dtype": v.dtype.name} for k, v in self.extras.items()}
        return d


def load(source: str | Path | CalibrationData, spec: Any) -> CalibrationData:
    """Load calibration data for ``spec`` (a ModelSpec) and lint it (raises :class:`CalibrationError`)."""
    if isinstance(source, CalibrationData):
        data = source
    else:
        text = str(source)
        path = Path(text)
        _refuse_special(path, text)
        if path.is_dir():
            data = _from_images(path, spec)
        elif path.suffix == ".npz" or (path.is_file() and _head(path, 2) == b"PK"):
            data = _from_npz(path, spec)
        elif ":" in text and not path.exists():
            data = _from_function(text, spec)
        elif not path.exists():
            raise CalibrationError(f"--calibration {text}: no such file or folder (give an .npz, a folder of "
                                   "images, or file.py:fn)")
        else:
            raise CalibrationError(f"--calibration {text}: not an .npz archive, an image folder or file.py:fn")
    lint(data, spec)
    return data


# --- loaders ----------------------------------------------------------------------------------------------------


def _refuse_special(path: Path, text: str) -> None:
    from mobilize.errors import MobilizeInputError
    from mobilize.safeio import refuse_special

    try:
        refuse_special(path, "--calibration")
    except MobilizeInputError as exc:
        raise CalibrationError(str(exc)) from None


def _head(path: Path, n: int) -> bytes:
    with path.open("rb") as f:
        return f.read(n)


def _from_npz(path: Path, spec: Any) -> CalibrationData:
    from mobilize.errors import MobilizeInputError
    from mobilize.safeio import check_npz

    try:  # sizes and headers of every member checked before numpy decompresses anything
        check_npz(path, f"--calibration {path}", limit=MAX_BYTES)
    except MobilizeInputError as exc:
        raise CalibrationError(str(exc)) from None
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    except ValueError as exc:
        raise CalibrationError(f"--calibration {path}: holds pickled objects; save plain numeric arrays "
                               f"({one_line(exc, 120)})") from None
    except Exception as exc:  # noqa: BLE001 - any decoding problem is unusable data
        raise CalibrationError(f"--calibration {path}: not a readable .npz ({type(exc).__name__}: "
                               f"{one_line(exc, 160)})") from None
    names = list(spec.input_names)
    extras: dict[str, np.ndarray] = {}
    if not raw:
        raise CalibrationError(f"--calibration {path}: the archive holds no arrays")
    if len(names) == 1 and len(raw) == 1:
        arrays = {names[0]: next(iter(raw.values()))}
    elif set(names) <= set(raw):
        arrays = {n: raw[n] for n in names}
        extras = {k: v for k, v in raw.items() if k not in arrays}
    elif {f"arr_{i}" for i in range(len(names))} <= set(raw):
        arrays = {n: raw[f"arr_{i}"] for i, n in enumerate(names)}
    else:
        raise CalibrationError(f"--calibration {path}: arrays {sorted(raw)} do not name the model's inputs "
                               f"{names} (key them by input name, or by position arr_0, arr_1, …)")
    data = CalibrationData({n: _as_samples(n, a, spec, str(path)) for n, a in arrays.items()}, str(path))
    for k, v in extras.items():
        if v.ndim == 0 or v.shape[0] != data.samples or v.dtype.kind not in "biuf":
            raise CalibrationError(f"--calibration {path}: extra array {k!r} (shape {list(v.shape)}, {v.dtype}) is "
                                   f"not one numeric value per sample ({data.samples} samples); extra arrays are "
                                   "passed to --metric and need the samples on their first axis")
        data.extras[k] = v
    return data


def _from_function(text: str, spec: Any) -> CalibrationData:
    import torch

    from mobilize.source import _load_function

    target, _, fn_name = text.rpartition(":")
    if not fn_name.isidentifier():
        raise CalibrationError(f"--calibration {text}: expected file.py:fn (a function yielding input tuples)")
    fn = _load_function(target, fn_name, text)
    names = list(spec.input_names)
    per_input: list[list[np.ndarray]] = [[] for _ in names]
    try:
        for i, item in enumerate(fn()):
            item = item if isinstance(item, (tuple, list)) else (item,)
            if len(item) != len(names):
                raise CalibrationError(f"--calibration {text}: sample {i} has {len(item)} tensors; the model takes "
                                       f"{len(names)} ({', '.join(names)})")
            for j, t in enumerate(item):
                per_input[j].append(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t))
    except (CalibrationError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001 - user code may raise anything, sys.exit() included
        raise CalibrationError(f"--calibration {text}: calling {fn_name}() raised {type(exc).__name__}: "
                               f"{one_line(exc, 200)}") from None
    if not per_input[0]:
        raise CalibrationError(f"--calibration {text}: {fn_name}() yielded no samples")
    arrays = {}
    for n, items in zip(names, per_input):
        shapes = {a.shape for a in items}
        if len(shapes) != 1:
            raise CalibrationError(f"--calibration {text}: input {n!r} has samples of different shapes "
                                   f"{sorted(shapes)[:3]}")
        arrays[n] = _as_samples(n, np.stack(items), spec, text, stacked=True)
    return CalibrationData(arrays, text)


def _from_images(folder: Path, spec: Any) -> CalibrationData:
    from PIL import Image, UnidentifiedImageError

    if len(spec.input_names) != 1:
        raise CalibrationError(f"--calibration {folder}: an image folder feeds single-input models; this model takes "
                               f"{len(spec.input_names)} inputs — use an .npz keyed by input name")
    ex = spec.example_inputs[0]
    norm = spec.normalization
    if norm is None:
        raise CalibrationError(f"--calibration {folder}: the model declares no normalization (ModelSpec."
                               "normalization), so images cannot be turned into inputs; give an .npz instead")
    if ex.dim() != 4 or not ex.dtype.is_floating_point:
        raise CalibrationError(f"--calibration {folder}: the input {spec.input_names[0]!r} is {tuple(ex.shape)} "
                               f"{ex.dtype}, not a 4-D float image batch")
    nchw = norm.layout == "NCHW"
    c, h, w = (ex.shape[1], ex.shape[2], ex.shape[3]) if nchw else (ex.shape[3], ex.shape[1], ex.shape[2])
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"--calibration {folder}: no images ({', '.join(_IMAGE_SUFFIXES)}) in the folder")
    for p in files:  # a FIFO named x.png would block the decoder forever: refused before anything opens it
        _refuse_special(p, str(p))
    per_sample = int(np.prod(ex.shape)) * 4
    if len(files) * per_sample > MAX_BYTES:
        raise CalibrationError(f"--calibration {folder}: {len(files)} images make {len(files) * per_sample >> 20} MB "
                               f"of float32 samples, more than {MAX_BYTES >> 20} MB; use a few hundred images")
    mode = {"GRAY": "L", "L": "L"}.get(norm.color.upper(), "RGB")
    mean = np.asarray(norm.mean, np.float32)
    std = np.asarray(norm.std, np.float32)
    out = []
    for p in files:
        try:
            with warnings.catch_warnings():
                # PIL only warns between MAX_IMAGE_PIXELS and twice that: every oversized image is refused
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(p) as im:
                    im = _center_crop(im.convert(mode)).resize((int(w), int(h)), Image.BILINEAR)
                    a = np.asarray(im, dtype=np.float32)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise CalibrationError(f"--calibration {p}: the image is too large to decode safely ({one_line(exc, 120)}"
                                   f"); resize it below {Image.MAX_IMAGE_PIXELS} pixels") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error) as exc:
            raise CalibrationError(f"--calibration {p}: not a readable image ({one_line(exc, 120)})") \
                from None
        a = a[..., None] if a.ndim == 2 else a
        if norm.color.upper() == "BGR":
            a = a[..., ::-1]
        if a.shape[-1] != c:
            raise CalibrationError(f"--calibration {folder}: images have {a.shape[-1]} channels but the model "
                                   f"takes {c}")
        a = (a / norm.scale - mean) / std
        out.append((a.transpose(2, 0, 1) if nchw else a)[None].astype(np.float32))
    return CalibrationData({spec.input_names[0]: np.stack(out)}, str(folder))


def _center_crop(im: Any) -> Any:
    w, h = im.size
    s = min(w, h)
    return im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))


def _as_samples(name: str, a: np.ndarray, spec: Any, where: str, stacked: bool = False) -> np.ndarray:
    """Make ``a`` ``(samples, *example_shape)``: arrays of the example's rank are split along axis 0 into batch-1
    samples when the example's batch is 1; arrays of rank + 1 already are a stack of samples."""
    ex = spec.example_inputs[list(spec.input_names).index(name)]
    rank = ex.dim()
    a = np.asarray(a)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise CalibrationError(f"--calibration {where}: input {name!r} has dtype {a.dtype}, not numeric")
    if a.ndim == rank + 1:
        return a
    if a.ndim == rank and not stacked and rank >= 1 and ex.shape[0] == 1:
        return a[:, None]
    raise CalibrationError(f"--calibration {where}: input {name!r} has shape {list(a.shape)}; expected "
                           f"(samples, {', '.join(map(str, ex.shape[1:] if ex.shape[:1] == (1,) else ex.shape))})"
                           f" — the example input is {list(ex.shape)}")


# --- lint -------------------------------------------------------------------------------------------------------


def lint(data: CalibrationData, spec: Any, *, min_samples: int = 1) -> list[str]:
    """Every way the data does not fit the model's example inputs, as one :class:`CalibrationError` per problem:
    shape, dtype kind, NaN/Inf, value range, constant inputs, too few samples. Returns warnings (doubtful but
    possibly right: e.g. negative values where the example is in [0, 1])."""
    import torch

    warnings: list[str] = []
    where = f"--calibration {data.source}"
    counts = {a.shape[0] for a in data.arrays.values()}
    if len(counts) != 1:
        raise CalibrationError(f"{where}: inputs have different sample counts {sorted(counts)}")
    n = counts.pop()
    if n < max(1, min_samples):
        raise CalibrationError(f"{where}: {n} sample(s); at least {max(1, min_samples)} are needed")
    dyn = spec.dynamic_dims or {}
    for name, ex in zip(spec.input_names, spec.example_inputs):
        a = data.arrays[name]
        shape = tuple(a.shape[1:])
        free = {ax % ex.dim() for ax in dyn.get(name, {})}
        if len(shape) != ex.dim() or any(s != e and i not in free for i, (s, e) in enumerate(zip(shape, ex.shape))):
            raise CalibrationError(f"{where}: input {name!r} samples are {list(shape)}, the model takes "
                                   f"{list(ex.shape)}")
        if ex.dtype.is_floating_point:
            if not np.issubdtype(a.dtype, np.floating):
                raise CalibrationError(f"{where}: input {name!r} is {a.dtype.name} but the model takes float "
                                       f"({str(ex.dtype).replace('torch.', '')}); normalise the data first")
            want = str(ex.dtype).replace("torch.", "")
            if a.dtype.name != want:  # the model computes in its own float type: PyTorch refuses another one
                raise CalibrationError(f"{where}: input {name!r} is {a.dtype.name} but the model takes {want}; "
                                       f"save the samples as {want} (e.g. array.astype(numpy.{want}))")
            bad = int((~np.isfinite(a)).sum())
            if bad:
                raise CalibrationError(f"{where}: input {name!r} has {bad} NaN/Inf values")
            warnings += _lint_range(where, name, a, ex.detach().cpu().numpy().astype(np.float64), spec)
            flat = a.reshape(n, -1)
            if flat.shape[1] > 1:
                const = np.flatnonzero(flat.max(axis=1) == flat.min(axis=1))
                if const.size:
                    raise CalibrationError(f"{where}: input {name!r} sample {int(const[0])} is constant "
                                           f"({float(flat[const[0], 0]):g} everywhere) — blank or padding data "
                                           "makes ranges wrong")
            if n > 1 and np.all(flat == flat[:1]):
                raise CalibrationError(f"{where}: input {name!r} is the same in all {n} samples")
        elif ex.dtype == torch.bool:
            if not (a.dtype == np.bool_ or np.isin(a, (0, 1)).all()):
                raise CalibrationError(f"{where}: input {name!r} is a boolean mask but holds values other than 0/1")
        else:
            if not np.issubdtype(a.dtype, np.integer):
                raise CalibrationError(f"{where}: input {name!r} is {a.dtype.name} but the model takes integers "
                                       f"({str(ex.dtype).replace('torch.', '')})")
            rng = (spec.input_ranges or {}).get(name)
            if rng is not None and a.size and (a.min() < rng[0] or a.max() > rng[1]):
                raise CalibrationError(f"{where}: input {name!r} values [{a.min()}, {a.max()}] fall outside the "
                                       f"model's range [{rng[0]}, {rng[1]}]")
            if a.size and a.min() < 0 and ex.min() >= 0:
                raise CalibrationError(f"{where}: input {name!r} has negative values ({a.min()}); the example's "
                                       "are all ≥ 0 (token ids?)")
    data.warnings = warnings
    return warnings


def _lint_range(where: str, name: str, a: np.ndarray, ex: np.ndarray, spec: Any) -> list[str]:
    lo, hi = float(a.min()), float(a.max())
    rng = (spec.input_ranges or {}).get(name)
    if rng is not None:
        span = float(rng[1]) - float(rng[0])
        if lo < rng[0] - 0.05 * span or hi > rng[1] + 0.05 * span:
            raise CalibrationError(f"{where}: input {name!r} values [{lo:.3g}, {hi:.3g}] fall outside the model's "
                                   f"declared range [{rng[0]}, {rng[1]}]")
        return []
    ex_abs = max(float(np.abs(ex).max()), 1.0)
    if max(abs(lo), abs(hi)) > 20 * ex_abs:
        hint = " — raw 0..255 pixels? normalise them as the model expects" if hi > 100 else ""
        raise CalibrationError(f"{where}: input {name!r} values [{lo:.3g}, {hi:.3g}] are far outside the example "
                               f"input's [{ex.min():.3g}, {ex.max():.3g}]{hint}")
    if ex.min() >= 0 and lo < -0.5 * max(float(ex.max()), 1e-6) and ex.max() <= 1.0:
        return [f"calibration input {name!r} goes down to {lo:.3g} while the example input lies in "
                f"[{ex.min():.3g}, {ex.max():.3g}]: check that both use the same normalisation"]
    return []


def require(data: CalibrationData | None, precisions: Sequence[str]) -> None:
    """Static precisions need real calibration data: refuse to run without it (never calibrate on noise)."""
    from mobilize.quantize.recipes import needs_calibration

    static = needs_calibration(precisions)
    if static and data is None:
        raise CalibrationError(f"precision {static[0]} calibrates activation ranges and needs real data: pass "
                               "--calibration (an .npz keyed by input name, a folder of images, or file.py:fn); "
                               "mobilize never calibrates on random inputs")
    if static and data is not None and data.samples < MIN_SAMPLES:
        raise CalibrationError(f"--calibration {data.source}: {data.samples} sample(s) are too few for {static[0]} "
                               f"(at least {MIN_SAMPLES}: part calibrates, part is held out to measure accuracy)")
