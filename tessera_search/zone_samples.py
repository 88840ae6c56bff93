"""Per-zone statistics a geoemb Zarr store publishes, kept in the workspace for index training.

geotessera's stores hold, per zone group and year, ``stretch_stats_count`` / ``_sum`` /
``_prod`` (exact mean and covariance of every pixel written so far) and a reservoir
sample of up to 20,000 int8 vectors (``stretch_sample``, ``stretch_sample_scales``,
``stretch_sample_count``). A download keeps each zone-year's sample and moments once
(``<home>/samples/<year>/<dataset>/<group>.npz``, written atomically), so that an index
spanning a large part of its zones can train on them without reading any tile
(:func:`training_vectors`; ``build-index --train-from``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._io import atomic_path
from .quant import valid_scales

__all__ = ["ZoneSample", "index_training", "load", "save", "training_vectors", "zone_key"]

_KEY_RE = re.compile(r"^(utm(0[1-9]|[1-5][0-9]|60)|(0[1-9]|[1-5][0-9]|60)[NS])$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~+-]*$")


@dataclass
class ZoneSample:
    """One zone-year's published sample (valid pixels only) and moments."""

    group: str
    year: int
    dataset: str
    vectors: np.ndarray  # (n, 128) int8
    scales: np.ndarray  # (n,) float32
    count: int  # pixels folded into the moments
    mean: np.ndarray | None  # (128,) float64 of the dequantised embeddings
    cov: np.ndarray | None  # (128, 128) float64


def zone_key(tile) -> str:
    """The geoemb zone group a tile lies in (``utmNN``)."""
    return f"utm{tile.epsg % 100:02d}"


def _path(home, year: int, dataset: str, group: str) -> Path:
    if not _KEY_RE.match(group) or not _NAME_RE.match(dataset):
        raise ValueError(f"not a zone group / dataset name: {group!r} / {dataset!r}")
    return Path(os.fspath(home)) / "samples" / str(int(year)) / dataset / f"{group}.npz"


def save(home, sample: ZoneSample) -> Path:
    """Keep a zone-year's sample in the workspace (atomically; replaces an older copy)."""
    path = _path(home, sample.year, sample.dataset, sample.group)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"vectors": sample.vectors, "scales": sample.scales, "count": np.int64(sample.count)}
    if sample.mean is not None and sample.cov is not None:
        arrays.update(mean=sample.mean, cov=sample.cov)
    with atomic_path(path, what=f"the {sample.group} ({sample.year}) zone sample") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return path


def has(home, year: int, dataset: str, group: str) -> bool:
    return _path(home, year, dataset, group).is_file()


def load(home, year: int, dataset: str, group: str) -> ZoneSample | None:
    """The kept sample, or None (absent or unreadable: training then reads tiles)."""
    path = _path(home, year, dataset, group)
    try:
        with np.load(path, allow_pickle=False) as z:
            vectors, scales = np.asarray(z["vectors"], np.int8), np.asarray(z["scales"], np.float32)
            mean = np.asarray(z["mean"]) if "mean" in z else None
            cov = np.asarray(z["cov"]) if "cov" in z else None
            count = int(z["count"])
    except (OSError, ValueError, KeyError):
        return None
    if vectors.ndim != 2 or vectors.shape[1] != 128 or scales.shape != (len(vectors),):
        return None
    return ZoneSample(group, int(year), dataset, vectors, scales, count, mean, cov)


def from_arrays(group: str, year: int, dataset: str, vectors, scales, n: int, count, sums, prods) -> ZoneSample | None:
    """A ZoneSample from a store's arrays for one year (``n`` filled sample slots); None
    when the sample holds no valid pixel."""
    vectors = np.asarray(vectors, np.int8)[: max(int(n), 0)]
    scales = np.asarray(scales, np.float32)[: len(vectors)]
    ok = valid_scales(scales) & vectors.any(axis=1)
    if not ok.any():
        return None
    count = int(count)
    mean = cov = None
    if count > 1 and sums is not None and prods is not None:
        mean = np.asarray(sums, np.float64) / count
        cov = np.asarray(prods, np.float64) / count - np.outer(mean, mean)
    return ZoneSample(group, int(year), dataset, vectors[ok], scales[ok], count, mean, cov)


def training_vectors(home, year: int, dataset: str, groups: list[str], n: int, seed: int) -> np.ndarray | None:
    """Up to ``n`` (m, 128) float32 unit vectors from the kept samples of ``groups``, in
    proportion to each zone's pixel count; None unless every group has a sample."""
    samples = [load(home, year, dataset, g) for g in sorted(set(groups))]
    if not samples or any(s is None for s in samples):
        return None
    weights = np.asarray([max(s.count, len(s.vectors)) for s in samples], np.float64)
    parts = []
    for s, w in zip(samples, weights, strict=True):
        quota = min(len(s.vectors), int(np.ceil(n * w / weights.sum())))
        rng = np.random.default_rng([seed, int(s.group[3:5]) if s.group.startswith("utm") else int(s.group[:2])])
        idx = np.sort(rng.choice(len(s.vectors), quota, replace=False)) if quota < len(s.vectors) else slice(None)
        v = s.vectors[idx].astype(np.float32)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        parts.append(v[norms[:, 0] > 0] / norms[norms[:, 0] > 0])
    return np.concatenate(parts)[:n]


def index_training(home, year: int, dataset: str, tiles, n: int, seed: int, nlist: int = 0) -> np.ndarray:
    """An index's training vectors from the kept statistics of every zone its ``tiles`` lie
    in (no tile is read): :func:`training_vectors` of those zones.

    InvalidInputError when a zone has none (its tiles came from a source that publishes
    none: an NPY mirror, an Icechunk repository) or they are too few for ``nlist`` lists.
    """
    from .errors import InvalidInputError

    groups = sorted({zone_key(t) for t in tiles})
    x = training_vectors(home, year, dataset, groups, n, seed)
    if x is None:
        raise InvalidInputError(
            f"no kept zone statistics for all of {', '.join(groups)} ({year}, {dataset}): they are kept when "
            "tiles are downloaded from a geoemb Zarr store that publishes stretch_sample; train_from='tiles' "
            "reads the region's own tiles instead"
        )
    if len(x) < 39 * nlist:
        raise InvalidInputError(
            f"the zone statistics of {', '.join(groups)} hold {len(x)} sample vectors, too few to train {nlist} "
            "lists (faiss wants >= 39 per list); use train_from='tiles' or a factory with fewer lists"
        )
    return x
