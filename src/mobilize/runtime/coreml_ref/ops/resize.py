"""Image resizing MIL ops: bilinear and nearest-neighbour up/down-sampling of the last two axes, by scale factor
(``upsample_*``) or target size (``resize_*``), with every sampling mode the MIL spec defines.

All of them sample a grid of (fractional) input positions per axis, clamped to ``[0, X_in - 1]``; bilinear
interpolates between the two neighbours, nearest-neighbour takes the lower one (the spec's ``floor``).
"""

from __future__ import annotations

import math

import numpy as np

from mobilize.runtime.coreml_ref.ops._util import as_bool, as_float, as_int, as_str, floatx
from mobilize.runtime.coreml_ref.registry import register


def _grid(x_in: int, x_out: int, mode: str) -> np.ndarray:
    """Input positions sampled for each output position along one axis (the MIL spec's ``grid_point``)."""
    i = np.arange(x_out, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if x_out == 1:
            g = np.full(1, (x_in - 1) / 2 if mode == "ALIGN_CORNERS" else 0.0)
        else:
            g = i * (x_in - 1) / (x_out - 1)
    elif mode == "DEFAULT":
        g = i * ((x_in - x_in / x_out) / (x_out - 1)) if x_out > 1 else np.zeros(1)
    elif mode == "OFFSET_CORNERS":
        delta = max(1, x_in - 1) / x_out
        g = 0.5 * delta + i * delta
    elif mode == "UNALIGN_CORNERS":
        spacing = x_in / x_out
        g = i * spacing + 0.5 * spacing - 0.5
    elif mode == "ASYMMETRIC":  # align_corners=False, half_pixel_centers=False (iOS16 upsample_bilinear)
        g = i * (x_in / x_out)
    else:
        raise ValueError(f"unknown sampling mode {mode!r}")
    return np.clip(g, 0, x_in - 1)


def _linear(x: np.ndarray, axis: int, grid: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``x`` along ``axis`` at the fractional positions ``grid``."""
    lo = np.floor(grid).astype(np.int64)
    hi = np.minimum(lo + 1, x.shape[axis] - 1)
    frac = (grid - lo).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = len(grid)
    frac = frac.reshape(shape)
    a, b = np.take(x, lo, axis=axis), np.take(x, hi, axis=axis)
    return a + (b - a) * frac


def _bilinear(x: np.ndarray, out_h: int, out_w: int, mode_h: str, mode_w: str | None = None) -> np.ndarray:
    x = floatx(np.asarray(x))
    h, w = x.shape[-2:]
    y = _linear(x, x.ndim - 2, _grid(h, out_h, mode_h))
    return _linear(y, x.ndim - 1, _grid(w, out_w, mode_w or mode_h))


def _bilinear_mode(align_corners: bool, half_pixel_centers: bool | None) -> str:
    if align_corners:
        return "STRICT_ALIGN_CORNERS"
    return "UNALIGN_CORNERS" if half_pixel_centers is None or half_pixel_centers else "ASYMMETRIC"


@register("upsample_bilinear", "iOS16.image_resizing.upsample_bilinear")
def upsample_bilinear(x, scale_factor_height=1, scale_factor_width=1, align_corners=True, half_pixel_centers=None):
    """Bilinear upsampling of the last two axes to ``floor(H·scale) × floor(W·scale)``; the grid follows the output
    size (torch's ``recompute_scale_factor=True``): align_corners → ``i·(X_in−1)/(X_out−1)``, else half-pixel
    centres ``(i+½)·X_in/X_out − ½`` (iOS16 ``half_pixel_centers=False``: ``i·X_in/X_out``), clamped."""
    x = np.asarray(x)
    h, w = x.shape[-2:]
    out_h = int(math.floor(h * as_float(scale_factor_height)))
    out_w = int(math.floor(w * as_float(scale_factor_width)))
    half = None if half_pixel_centers is None else as_bool(half_pixel_centers)
    return _bilinear(x, out_h, out_w, _bilinear_mode(as_bool(align_corners), half))


@register("resize_bilinear", "iOS15.image_resizing.resize_bilinear")
def resize_bilinear(x, target_size_height=1, target_size_width=1, sampling_mode="DEFAULT"):
    """Bilinear resize of the last two axes to the target size, with the spec's sampling modes
    (STRICT_ALIGN_CORNERS, ALIGN_CORNERS, DEFAULT, OFFSET_CORNERS, UNALIGN_CORNERS)."""
    return _bilinear(x, as_int(target_size_height), as_int(target_size_width), as_str(sampling_mode))


def _nearest_index(x_in: int, x_out: int, spacing: float) -> np.ndarray:
    return np.minimum(np.floor(np.arange(x_out) * spacing).astype(np.int64), x_in - 1)


@register("resize_nearest_neighbor", "iOS15.image_resizing.resize_nearest_neighbor")
def resize_nearest_neighbor(x, target_size_height, target_size_width):
    """Nearest-neighbour resize of the last two axes to the target size: ``out[i] = x[floor(i·X_in/X_out)]``."""
    x = np.asarray(x)
    h, w = x.shape[-2:]
    oh, ow = as_int(target_size_height), as_int(target_size_width)
    return x[..., _nearest_index(h, oh, h / oh), :][..., _nearest_index(w, ow, w / ow)]
