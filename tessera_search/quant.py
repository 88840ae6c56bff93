"""Per-pixel int8 quantization of embeddings and the scale validity rule.

TESSERA releases store each pixel's 128-d embedding as int8 plus one float32 scale:
``embedding = int8 * scale``. Production quantization, per pixel vector:
``scale = max(|x|) / 127`` (clamped at 1e-8), ``q = clip(round(x / scale), -128, 127)``.

Published scale files also hold NaN (water / no data), +inf (not yet filled), huge finite
sentinels (~3.4e38) and the odd negative value: a pixel is valid only where its scale is
finite, > 0 and < 1.0 (:func:`valid_scales`). Everything else is no data, never a vector.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "MAX_VALID_SCALE",
    "dequantize",
    "per_pixel_from_per_channel",
    "quantize",
    "valid_scales",
]

MAX_VALID_SCALE = 1.0
_MIN_SCALE = 1e-8


def quantize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., D) float -> ((..., D) int8, (...) float32 scale), the production rule."""
    x = np.asarray(x, dtype=np.float32)
    scale = np.maximum(np.abs(x).max(axis=-1) / np.float32(127.0), np.float32(_MIN_SCALE))
    q = np.clip(np.rint(x / scale[..., None]), -128, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def dequantize(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(..., D) int8 and (...) scales -> (..., D) float32; invalid scales give NaN rows."""
    scale = np.asarray(scale, dtype=np.float32)
    s = np.where(valid_scales(scale), scale, np.float32(np.nan))
    return np.asarray(q, dtype=np.float32) * s[..., None]


def valid_scales(scales: np.ndarray) -> np.ndarray:
    """Bool mask: scale finite, > 0 and < 1.0 (the release validity rule)."""
    s = np.asarray(scales)
    with np.errstate(invalid="ignore"):
        return np.isfinite(s) & (s > 0) & (s < MAX_VALID_SCALE)


def per_pixel_from_per_channel(q: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Requantize (H, W, D) int8 with (H, W, D) per-channel scales to one scale per pixel.

    A pixel whose channel scales are not all valid is no data (NaN scale, zero vector).
    """
    valid = valid_scales(scales).all(axis=-1)
    x = np.asarray(q, dtype=np.float32) * np.where(valid[..., None], scales, 0).astype(np.float32)
    q2, s2 = quantize(x)
    q2[~valid] = 0
    s2 = np.where(valid, s2, np.float32(np.nan)).astype(np.float32)
    return q2, s2
