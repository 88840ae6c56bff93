"""Synthetic Sentinel-1/2 pixel time series for training tests (clearly not real data).

Each land-cover class has a phenology: a double-logistic vegetation fraction over the day
of year (green-up, senescence, peak), or none (water, bare soil). Per pixel the curve is
jittered (dates +-``jitter_days``, amplitude +-15 %), mixed into S2 reflectance from
vegetation / soil / water endmember spectra (DN = reflectance x 10000, model band order),
and into S1 backscatter (VV/VH dB rising with vegetation, very low over water), encoded as
the official int16. Acquisitions are irregular: S2 on a ~5-day revisit with random gaps,
S1 ascending and descending on 12-day cycles with jitter. Clouds are drawn per date (most
of a tile) and per pixel: cloudy observations are bright and flat and masked 0, with a
small rate of missed clouds (mask 1), as real SCL masks have. Class maps are blocky, so
neighbouring pixels share a class (which global shuffling must break up).

:func:`write_synthetic_tiles` writes tiles in the official preprocessed layout plus a
``labels.npy`` (H, W) int class map per tile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._io import atomic_path
from .data import encode_s1_db

__all__ = ["CLASSES", "LandCover", "generate_tile", "write_synthetic_tiles"]

# Endmember reflectances in the model band order B04, B02, B03, B08, B8A, B05, B06, B07, B11, B12.
_VEG = np.array([0.03, 0.03, 0.06, 0.42, 0.44, 0.09, 0.25, 0.36, 0.20, 0.09])
_SOIL = np.array([0.22, 0.14, 0.18, 0.30, 0.32, 0.25, 0.28, 0.29, 0.38, 0.32])
_WATER = np.array([0.03, 0.06, 0.05, 0.02, 0.02, 0.03, 0.02, 0.02, 0.01, 0.01])
_CLOUD = np.array([0.55, 0.58, 0.57, 0.60, 0.60, 0.58, 0.59, 0.60, 0.45, 0.38])


@dataclass(frozen=True)
class LandCover:
    """A class's phenology: vegetation fraction base + amp * bump(green-up..senescence)."""

    name: str
    base: float  # vegetation fraction out of season
    amp: float  # seasonal amplitude
    green_up: float  # DOY
    senescence: float  # DOY
    background: str = "soil"  # soil or water
    wet: float = 0.0  # extra S1 darkening (flooded / smooth surfaces)


CLASSES: tuple[LandCover, ...] = (
    LandCover("summer_crop", 0.05, 0.85, 140, 230),
    LandCover("winter_crop", 0.10, 0.80, 60, 160),
    LandCover("double_crop", 0.05, 0.75, 100, 290),
    LandCover("evergreen_forest", 0.80, 0.10, 90, 300),
    LandCover("grassland", 0.30, 0.35, 110, 270),
    LandCover("water", 0.0, 0.0, 0, 0, background="water", wet=8.0),
)


def _season(doy: np.ndarray, up: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Double logistic in [0, 1], (N, 1) dates broadcast against (T,) or (N, T) DOYs."""
    return 1.0 / (1.0 + np.exp(-(doy - up) / 8.0)) - 1.0 / (1.0 + np.exp(-(doy - down) / 8.0))


def _dates(rng: np.random.Generator, period: int, offset: int, keep: float) -> np.ndarray:
    d = np.arange(1 + offset, 366, period) + rng.integers(-1, 2, size=len(range(1 + offset, 366, period)))
    d = np.clip(d, 1, 365)
    d = d[rng.random(d.size) < keep]
    return np.unique(d)


def _class_map(rng: np.random.Generator, h: int, w: int, n_classes: int, block: int) -> np.ndarray:
    bh, bw = -(-h // block), -(-w // block)
    coarse = rng.integers(0, n_classes, size=(bh, bw))
    return np.repeat(np.repeat(coarse, block, axis=0), block, axis=1)[:h, :w]


def generate_tile(
    seed: int,
    height: int = 16,
    width: int = 16,
    n_classes: int = len(CLASSES),
    cloud_rate: float = 0.35,
    jitter_days: float = 20.0,
    noise: float = 0.02,
    block: int = 4,
) -> dict[str, np.ndarray]:
    """One synthetic tile: the official layout's arrays plus ``labels`` (H, W) int64."""
    if not 1 <= n_classes <= len(CLASSES):
        raise ValueError(f"n_classes must be in 1..{len(CLASSES)}")
    rng = np.random.default_rng(seed)
    h, w = height, width
    n = h * w
    labels = _class_map(rng, h, w, n_classes, block)
    lab = labels.reshape(-1)
    base = np.array([CLASSES[c].base for c in lab])[:, None]
    amp = np.array([CLASSES[c].amp for c in lab])[:, None] * rng.uniform(0.85, 1.15, size=(n, 1))
    up = np.array([CLASSES[c].green_up for c in lab])[:, None] + rng.normal(0, jitter_days, size=(n, 1))
    down = np.array([CLASSES[c].senescence for c in lab])[:, None] + rng.normal(0, jitter_days, size=(n, 1))
    water = np.array([CLASSES[c].background == "water" for c in lab])[:, None]
    wet = np.array([CLASSES[c].wet for c in lab])[:, None]
    bg_soil = _SOIL * rng.uniform(0.8, 1.2, size=(n, 1))

    def veg_at(doy: np.ndarray) -> np.ndarray:
        return np.clip(base + amp * _season(doy[None, :], up, down), 0, 1)

    # S2
    doys = _dates(rng, 5, int(rng.integers(0, 5)), keep=0.8)
    t = doys.size
    v = veg_at(doys.astype(float))  # (n, t)
    bg = np.where(water[..., None], _WATER, bg_soil[:, None, :])  # (n, 1|t, 10)
    refl = v[..., None] * _VEG + (1 - v[..., None]) * bg
    refl = refl + rng.normal(0, noise, size=refl.shape) * (0.3 + refl)
    scene_cloud = rng.random(t) < cloud_rate
    pix_cloud = np.where(scene_cloud[None, :], rng.random((n, t)) < 0.85, rng.random((n, t)) < 0.05)
    cloud_refl = _CLOUD * rng.uniform(0.7, 1.2, size=(n, t, 1))
    refl = np.where(pix_cloud[..., None], cloud_refl, refl)
    masks = ~pix_cloud | (rng.random((n, t)) < 0.03)  # a few missed clouds
    bands = np.clip(refl * 10000, 1, 20000).astype(np.uint16)

    def s1_orbit(period_offset: int, angle_db: float) -> tuple[np.ndarray, np.ndarray]:
        d = _dates(rng, 12, period_offset, keep=0.95)
        vv_v = veg_at(d.astype(float))
        vv = -14.0 + 5.0 * vv_v - wet + angle_db + rng.normal(0, 0.8, size=vv_v.shape)
        vh = -22.0 + 7.0 * vv_v - wet + angle_db + rng.normal(0, 0.8, size=vv_v.shape)
        arr = np.stack([encode_s1_db(vv), encode_s1_db(vh)], axis=-1)  # (n, t, 2)
        return arr.transpose(1, 0, 2).reshape(d.size, h, w, 2), d.astype(np.int16)

    asc, asc_doy = s1_orbit(int(rng.integers(0, 12)), 0.0)
    desc, desc_doy = s1_orbit(int(rng.integers(0, 12)), -0.7)
    return {
        "bands": bands.transpose(1, 0, 2).reshape(t, h, w, 10),
        "masks": masks.T.reshape(t, h, w).astype(np.uint8),
        "doys": doys.astype(np.uint16),
        "sar_ascending": asc,
        "sar_ascending_doy": asc_doy,
        "sar_descending": desc,
        "sar_descending_doy": desc_doy,
        "labels": labels.astype(np.int64),
    }


def write_synthetic_tiles(
    root: str | os.PathLike[str],
    n_tiles: int = 4,
    height: int = 16,
    width: int = 16,
    seed: int = 0,
    **kwargs,
) -> list[Path]:
    """Write ``n_tiles`` synthetic tiles ``root/synthetic_<k>/`` (official layout + labels.npy)."""
    root = Path(root)
    out = []
    for k in range(n_tiles):
        d = root / f"synthetic_{k:03d}"
        arrays = generate_tile(seed * 1000 + k, height, width, **kwargs)
        for name, arr in arrays.items():
            with atomic_path(d / f"{name}.npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, arr, allow_pickle=False)
        out.append(d)
    return out
