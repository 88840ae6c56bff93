"""Model inputs: normalisation with the DOY column, the per-pixel sampling of time steps
(the official sampler and our reproducible one), length buckets, and S1 orbit stacking."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .._hashing import GOLDEN, splitmix64
from ..errors import InvalidInputError
from .config import NormStats
from .data import S1_DUMMY_DOY

__all__ = ["bucket_indices", "bucket_size", "normalize", "s1_stack", "sample_official", "sample_random",
           "stats_arrays", "uniform_hash"]

_F32 = np.float32


def normalize(values: np.ndarray, doy: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(..., T, C) raw values and (..., T) DOYs -> (..., T, C + 1) float32 model input.

    ``(x - mean) / std`` in float32 (the official ``+ 1e-9`` is below float32 resolution),
    then the raw DOY as the last column.
    """
    x = (np.asarray(values, dtype=_F32) - mean.astype(_F32)) / std.astype(_F32)
    return np.concatenate([x, np.asarray(doy, dtype=_F32)[..., None]], axis=-1)




def uniform_hash(seed: int, stream: int, keys: np.ndarray, n: int) -> np.ndarray:
    """(N,) int keys -> (N, n) float64 uniforms in [0, 1), a pure function of (seed, stream, key, j).

    A splitmix64 counter hash: the draws of a pixel do not depend on which other pixels
    share its batch, so embeddings are independent of batch and block sizes.
    """
    base = splitmix64(np.full(1, (int(seed) * 0x100000001B3 + int(stream) * 0x9E3779B1) & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64))
    k = splitmix64(np.asarray(keys, dtype=np.uint64)[:, None] * GOLDEN + base)
    x = splitmix64(k + np.arange(1, n + 1, dtype=np.uint64)[None, :] * GOLDEN)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def sample_random(valid: np.ndarray, size: int, keys: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """(N, T) bool candidates -> (N, size) sorted time indices, drawn per pixel.

    Rule (the official one, seeded differently): candidates are the valid steps, or all
    steps where none is valid; ``size`` draws without replacement if there are at least
    ``size`` candidates, else with replacement; the indices are sorted ascending.
    """
    valid = np.asarray(valid, dtype=bool)
    n_px, t = valid.shape
    if t == 0:
        raise InvalidInputError("cannot sample from a series with no timesteps")
    cand = np.where(valid.any(axis=1, keepdims=True), valid, True)
    n_cand = cand.sum(axis=1)
    out = np.empty((n_px, size), dtype=np.int64)
    u = uniform_hash(seed, stream, keys, max(t, size))
    big = n_cand >= size
    if big.any():
        k = np.where(cand[big], u[big, :t], 2.0)
        out[big] = np.sort(np.argsort(k, axis=1, kind="stable")[:, :size], axis=1)
    small = ~big
    if small.any():
        order = np.argsort(~cand[small], axis=1, kind="stable")  # candidate indices first, in time order
        rank = np.minimum((u[small, :size] * n_cand[small, None]).astype(np.int64), n_cand[small, None] - 1)
        out[small] = np.sort(np.take_along_axis(order, rank, axis=1), axis=1)
    return out


def sample_official(valid: np.ndarray, size: int, rng: np.random.RandomState) -> np.ndarray:
    """The official v1.0 draw, pixel by pixel with numpy's legacy ``RandomState.choice``.

    Same candidates and replacement rule as :func:`sample_random`. Seeding ``rng`` with S
    reproduces the official code run after ``np.random.seed(S)``, provided pixels are drawn
    in the same order (each batch: all S2 draws, then all S1 draws).
    """
    valid = np.asarray(valid, dtype=bool)
    out = np.empty((valid.shape[0], size), dtype=np.int64)
    all_idx = np.arange(valid.shape[1])
    for i, row in enumerate(valid):
        cand = np.flatnonzero(row)
        if cand.size == 0:
            cand = all_idx
        out[i] = np.sort(rng.choice(cand, size, replace=cand.size < size))
    return out


def bucket_size(count: int, step: int = 8, max_size: int = 256) -> int:
    """v1.1 bucket: the smallest multiple of ``step`` >= count, in [step, max_size]."""
    if count <= 0:
        return step
    return int(min(max_size, -(-count // step) * step))


@lru_cache(maxsize=4096)
def bucket_indices(n: int, target: int) -> np.ndarray:
    """v1.1 deterministic resampling of n observations to ``target`` positions.

    target == n: all; target < n: the middle element (``len(c) // 2``) of each of
    ``np.array_split(range(n), target)``; target > n: all n in order, then the extra
    indices ``rint(linspace(0, n - 1, target - n + 2)[1:-1])`` appended (not time-sorted).
    """
    if n <= 0:
        raise ValueError("bucket_indices needs n >= 1")
    if target == n:
        idx = np.arange(n)
    elif target < n:
        idx = np.array([c[len(c) // 2] for c in np.array_split(np.arange(n), target)])
    else:
        extra = np.rint(np.linspace(0, n - 1, target - n + 2)[1:-1]).astype(np.int64)
        idx = np.concatenate([np.arange(n), extra])
    idx = idx.astype(np.int64)
    idx.setflags(write=False)
    return idx


def s1_stack(sar_asc: np.ndarray, asc_doy: np.ndarray, sar_desc: np.ndarray, desc_doy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """v1.0 S1 stack for a block of pixels: (Ta' + Td', N, 2) values, DOYs, and orbit flags (0 asc, 1 desc).

    An orbit with zero timesteps contributes one all-zero row with DOY 180, as upstream.
    Inputs are (T, N, 2) arrays of the block's pixels.
    """
    n = sar_asc.shape[1]
    parts, doys, flags = [], [], []
    for flag, arr, doy in ((0, sar_asc, asc_doy), (1, sar_desc, desc_doy)):
        if arr.shape[0] == 0:
            arr = np.zeros((1, n, 2), dtype=np.int16)
            doy = np.array([S1_DUMMY_DOY])
        parts.append(np.asarray(arr))
        doys.append(np.asarray(doy, dtype=np.int64))
        flags.append(np.full(len(doy), flag, dtype=np.int8))
    return np.concatenate(parts), np.concatenate(doys), np.concatenate(flags)


def stats_arrays(stats: NormStats) -> dict[str, np.ndarray]:
    """Normalisation arrays by name (float32)."""
    return {
        "s2_mean": stats.s2_mean, "s2_std": stats.s2_std,
        "s1_asc_mean": stats.s1_asc_mean, "s1_asc_std": stats.s1_asc_std,
        "s1_desc_mean": stats.s1_desc_mean, "s1_desc_std": stats.s1_desc_std,
    }
