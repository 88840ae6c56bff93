"""The synthetic source: a seeded procedural landscape written as a TESSERA release mirror.

For demos, tests and benchmarks where real embeddings are not at hand. Every output says
it is synthetic: ``TileData.synthetic`` / ``source="synthetic"``, the manifest variant
``synthetic``, ``synthetic=true`` tags on every GeoTIFF, and ``SYNTHETIC.md`` at the
mirror's root.

The landscape
-------------
Geometry is a function of position on the globe only, never of the tile or region being
generated: every field below is evaluated at each pixel centre's position on a sphere
(3-D Earth-centred coordinates in metres, from :func:`~tessera_search.grid.pixel_to_lonlat`)
using hash-seeded 3-D lattices keyed by the seed. So neighbouring tiles agree along their
edges (even across UTM zones and the antimeridian), a tile is identical whichever region
it is generated in, and a window of a tile's grid equals that window of the whole tile.

- **Parcels**: a 3-D Voronoi tessellation (one jittered feature point per 300 m lattice
  cell), cut by the Earth's surface: irregular polygons of about 100-400 m.
- **Zones** (per parcel, smooth noise at the parcel's feature point): natural land (forest
  and grassland, split per pixel by a finer noise so that forest edges are organic),
  farmland (one crop per parcel, a few pastures), tea estates (clustered), towns (parcels
  near sparse town centres, compact clusters).
- **Water**: lakes (a noise field above a threshold) and rivers (a level line of a smooth,
  domain-warped noise field, 12-36 m wide, a few kilometres apart). Water has no
  embedding: NaN scale, zero vector, landmask 0.
- **Years**: water, parcels and zones never change. A parcel's crop rotates in some years
  (about 18% of farm parcels grow another crop in a given year) and a few natural parcels
  are cleared (forest becomes grassland from a seeded year in 2018-2025 on). Class
  prototypes, parcel offsets and pixel noise all vary by year.

Embeddings
----------
Built in the standardised space of ``reference/embedding-stats.json``
(``x = mean + std * z``), per pixel of class c in parcel p::

    z = P[c] + lean[p] * (P[c'] - P[c]) + O[p] + t1 * D1[c] + t2 * D2[c] + a[c] * noise

``P`` are class prototypes (per year) with a similarity hierarchy (crops resemble each
other, forest resembles tea), skewed outward per channel and standardised so that under
the nominal class mix every channel's mean and variance match the reference statistics.
``lean[p]`` makes a parcel partly resemble a look-alike class ``c'`` (mostly a little, a
few percent of parcels more than half way: mixed or mis-managed fields). ``O`` is a
parcel-level offset, mostly in a 12-dimensional subspace shared by all classes (parcels
of one class differ along a few directions, as real fields do); ``t1, t2`` are smooth
(about 200 m) texture fields; the pixel noise (partly outward-skewed) fills each
channel's remaining variance. **Wheat and barley are the confusable pair**: barley's
prototype is wheat's plus a short step inside the parcel subspace, so parcel-to-parcel
variation overlaps the difference between them. Parcel terms (``lean``, ``O``) depend on
the parcel and year only, so a parcel split by a tile edge looks the same in both tiles.
The float vectors are quantized with the production rule
(:func:`tessera_search.quant.quantize`).

Randomness is counter-based (integer hashes of seed, lattice cell, pixel and year) or
seeded by a stable BLAKE2 digest, never Python's salted ``hash()``.

Bit-identical everywhere
------------------------
The output (int8 vectors, float32 scales, classes) is bit-identical for any window of a
tile's grid and on any CPU, whatever SIMD kernels numpy dispatches to (SSE4, AVX2,
AVX-512), whatever BLAS kernel and thread count: each pixel's and each parcel's values are
computed elementwise, in a fixed order, from operations IEEE 754 rounds the same way on
every path (+, -, *, /, sqrt; floor, rint, frexp, ldexp, max); sums across an axis are
explicit loops; exp, log, pow and sin/cos are this module's own polynomials, not numpy's
SIMD kernels (whose last bits differ between AVX2 and AVX-512); and no BLAS or LAPACK
routine is used (their summation order changes with the matrix shape and the CPU). Only
other versions of numpy (its random generators), PROJ (pixel positions) or the C maths
library could change the bits.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .._hashing import splitmix64
from .._io import atomic_path
from ..errors import CorruptTileError, InvalidInputError, TileNotFoundError
from ..grid import PIXEL_SIZE, Tile, TileGrid, expected_grid, pixel_to_lonlat
from ..quant import quantize
from .base import TileData
from .layout import BUCKET_NPY, MANIFEST, bucket_paths, write_manifest, write_release_tile

__all__ = [
    "CLASSES",
    "CLASS_COLOURS",
    "GENERATOR_VERSION",
    "NODATA_CLASS",
    "WATER_CLASSES",
    "SynthesisReport",
    "SyntheticTile",
    "generate_tile",
    "read_truth",
    "synthesize_mirror",
    "truth_path",
]

GENERATOR_VERSION = 2
"""Bumped whenever the same (seed, tile, year) would produce different data.

2: fixed-order arithmetic, bit-identical on every CPU (values moved by rounding only).
"""
_KEY_VERSION = 1  # salts every seed; kept at 1 so version 2 draws the same landscape

CLASSES: dict[int, str] = {
    0: "nodata",
    1: "water",
    2: "river",
    3: "forest",
    4: "grassland",
    5: "maize",
    6: "wheat",
    7: "barley",
    8: "rice",
    9: "tea",
    10: "town",
}
"""Ground-truth class codes. 0 is the truth rasters' nodata value and never generated;
1 (lakes) and 2 (rivers) have no embedding; 6 and 7 are the confusable pair."""

NODATA_CLASS = 0
WATER, RIVER, FOREST, GRASS, MAIZE, WHEAT, BARLEY, RICE, TEA, TOWN = range(1, 11)
WATER_CLASSES = frozenset({WATER, RIVER})
_N_CLASSES = len(CLASSES)
_LAND = np.array([c for c in CLASSES if c not in WATER_CLASSES and c != NODATA_CLASS])
_CROPS = np.array([MAIZE, WHEAT, BARLEY, RICE], dtype=np.uint8)

CLASS_COLOURS: dict[int, tuple[int, int, int]] = {
    0: (0, 0, 0),
    1: (38, 115, 200),
    2: (90, 170, 235),
    3: (30, 100, 40),
    4: (170, 205, 110),
    5: (240, 200, 40),
    6: (215, 160, 90),
    7: (190, 120, 60),
    8: (120, 220, 200),
    9: (60, 160, 70),
    10: (200, 60, 60),
}
"""An RGB colour per class, written as the truth rasters' colour map."""

_EARTH_RADIUS = 6_371_008.8  # metres, mean radius; the landscape lives on a sphere

# --- landscape parameters (metres unless said otherwise) -------------------------------
_PARCEL_CELL = 300.0
_LAKE = ((1600.0, 0.7), (650.0, 0.3))
_LAKE_LEVEL = 0.715  # lake where the lake field exceeds this
_RIVER = ((7000.0, 1.0),)  # rivers follow this field's 0.5 level...
_RIVER_WARP = (1500.0, 650.0)  # ...after warping positions by noise (cell, amplitude)
_RIVER_WIDTH = ((5000.0, 1.0),)
_RIVER_HALF_WIDTH = (6.0, 18.0)  # min, max half width
_ZONE = ((3000.0, 0.7), (1200.0, 0.3))
_NATURAL_LEVEL = 0.44  # natural land where the zone field is below this
_FOREST = ((600.0, 0.65), (220.0, 0.35))
_FOREST_LEVEL = 0.47  # forest where the forest field exceeds this (natural land only)
_TEA = ((6000.0, 1.0),)
_TEA_LEVEL = 0.66
_TEA_SHARE = 0.85  # share of farm parcels in a tea area that are tea
_TOWN_CELL = 4500.0
_TOWN_PROB = 0.85
_TOWN_RADIUS = (450.0, 1500.0)
_PASTURE_SHARE = 0.12  # farm parcels that are grassland
_CROP_SHARES = (0.34, 0.26, 0.2, 0.2)  # maize, wheat, barley, rice
_ROTATION_RATE = 0.18  # chance that a farm parcel grows another crop in a given year
_CLEAR_SHARE = 0.08  # natural parcels cleared some year
_CLEAR_YEARS = (2018, 2025)
_TEXTURE_CELL = 200.0

# --- embedding parameters (standardised units: variance fractions per channel) ---------
_DIM = 128
_PROTO_VAR = 0.55  # between-class variance
_PROTO_SKEW = 1.5  # log-normal outward skew of prototype values
_NOISE_SKEW = 0.8  # share of pixel-noise variance that is outward-skewed (exponential)
_PARCEL_RANK = 12
_PARCEL_LOWRANK_VAR = 0.15
_PARCEL_ISO_VAR = 0.03
_TEXTURE_VAR = 0.06
_YEAR_MIX = 0.2  # share of a prototype's direction that is new each year
_PARCEL_YEAR_MIX = 0.6  # share of a parcel offset's direction that is new each year
_CONFUSABLE_STEP = 4.0  # |P[barley] - P[wheat]| (standardised units, before re-standardising)
_BANK_ROWS = 1 << 14
# Nominal land-class mix (measured over 200 random tiles, seeds 0 and 7), used to standardise.
_NOMINAL_MIX = {FOREST: 0.18, GRASS: 0.21, MAIZE: 0.14, WHEAT: 0.11, BARLEY: 0.09,
                RICE: 0.09, TEA: 0.12, TOWN: 0.05}
# Shares of each class's prototype that come from shared group vectors (the rest is its own).
_CLASS_GROUPS = {
    FOREST: {"vegetation": 0.25, "woody": 0.35},
    TEA: {"vegetation": 0.25, "woody": 0.35},
    GRASS: {"vegetation": 0.25, "herbaceous": 0.35},
    MAIZE: {"vegetation": 0.25, "herbaceous": 0.2, "crop": 0.25},
    WHEAT: {"vegetation": 0.25, "herbaceous": 0.2, "crop": 0.25},
    RICE: {"vegetation": 0.25, "herbaceous": 0.2, "crop": 0.25},
    BARLEY: {"vegetation": 0.25, "herbaceous": 0.2, "crop": 0.25},  # replaced by wheat + step
    TOWN: {"vegetation": 0.15, "herbaceous": 0.1},  # gardens and verges
}
# Mixed parcels: each parcel leans a random share (0 .. _LEAN_MAX, most near 0) towards
# one of its class's look-alikes, drawn per parcel and year; a few lean past half way.
_LOOKALIKES = {
    FOREST: (TEA, GRASS, FOREST),
    GRASS: (MAIZE, WHEAT, FOREST),
    MAIZE: (RICE, WHEAT, GRASS),
    WHEAT: (BARLEY, MAIZE, GRASS),
    BARLEY: (WHEAT, MAIZE, GRASS),
    RICE: (MAIZE, GRASS, WHEAT),
    TEA: (FOREST, GRASS, MAIZE),
    TOWN: (GRASS, MAIZE, TOWN),
}
_N_LOOKALIKES = 3
_LEAN_MAX = 0.6
_LEAN_POWER = 2.5  # lean = _LEAN_MAX * u ** _LEAN_POWER, u uniform
_LEAN_LEVELS = 16
# Pixel-noise amplitude per class relative to the mean (towns are heterogeneous).
_NOISE_AMP = {FOREST: 0.8, GRASS: 1.0, MAIZE: 1.0, WHEAT: 1.0, BARLEY: 1.0, RICE: 1.0,
              TEA: 0.9, TOWN: 1.4}
_TEXTURE_NORM = 5.43  # (value noise - 0.5) * this has about unit variance
_TEX_LEVELS = 48  # texture fields are quantized to this many levels (table lookups)
_TEX_RANGE = 3.0  # ... spanning +-3 (unit-variance units)

_CHUNK_PIXELS = 1 << 14  # pixels per vectorised block: keeps temporaries in cache


# ======================================================================================
# Hashing and stable seeds
# ======================================================================================

_P1 = np.uint64(0x9E3779B97F4A7C15)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_MASK64 = (1 << 64) - 1


def _stable_key(*parts: object) -> int:
    """A 64-bit integer from a BLAKE2 digest of the parts (stable across runs/machines)."""
    text = "|".join(str(p) for p in ("tessera-synthetic", _KEY_VERSION, *parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")




def _u64(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.int64)).view(np.uint64)


def _hash(key: int, *coords) -> np.ndarray:
    """uint64 hash of integer coordinates (broadcast) under a 64-bit key."""
    h = np.full((), np.uint64(key), dtype=np.uint64)
    for c, p in zip(coords, (_P1, _P2, _P3, _P1 ^ _P2)):
        h = splitmix64(h ^ (_u64(c) * p))
    return np.atleast_1d(h)


def _uniform(h: np.ndarray, which: int = 0) -> np.ndarray:
    """float32 in [0, 1) from a uint64 hash; ``which`` picks independent-ish streams."""
    if which:
        h = splitmix64(h ^ np.uint64((which * 0x632BE59BD9B4E019) & _MASK64))
    return (h >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


def _hash_normal(keys: np.ndarray, count: int, salt: int) -> np.ndarray:
    """(n, count) float32 standard normals, a pure function of (key, column, salt)."""
    j = np.arange(count, dtype=np.int64)[None, :]
    h = _hash(salt, keys.view(np.int64)[:, None], j)
    u1 = (h >> np.uint64(40)).astype(np.float64) * 2.0**-24 + 2.0**-25
    u2 = ((h >> np.uint64(16)) & np.uint64(0xFFFFFF)).astype(np.float64) * 2.0**-24
    return (np.sqrt(-2.0 * _log(u1)) * _cos_quarter_turns(4.0 * u2)).astype(np.float32)


# ======================================================================================
# Fixed-order arithmetic
# ======================================================================================
# The output must not depend on the window, the CPU or the libraries' choice of kernel.
# numpy's exp/log/pow have SIMD kernels per instruction set whose last bits differ
# (AVX-512 vs AVX2), BLAS matrix products and LAPACK change their summation order with
# the matrix shape and the CPU, and numpy's reductions block by array length. So the
# generator uses only operations that IEEE 754 rounds identically on every path (+, -, *,
# /, sqrt, and exact ones: floor, rint, frexp, ldexp, comparisons, max) applied
# elementwise, and sums across an axis with an explicit loop in a fixed order. The
# functions below build exp, log and sin/cos from those; they are accurate to a few ulp,
# which is all a synthetic landscape needs, and bit-identical everywhere.

_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact (|k| < 2**20)
_LN2_LO = 1.90821492927058770002e-10
_EXP_TERMS = tuple(1.0 / math.factorial(n) for n in range(14))  # Taylor, |r| <= ln(2)/2
_LOG_TERMS = tuple(1.0 / (2 * n + 1) for n in range(12))  # 2 atanh(s) / (2 s), |s| < 0.172
_SIN_TERMS = tuple((-1.0) ** n / math.factorial(2 * n + 1) for n in range(10))  # |r| <= pi/4
_COS_TERMS = tuple((-1.0) ** n / math.factorial(2 * n) for n in range(11))


def _horner(z: np.ndarray, coefficients: tuple[float, ...]) -> np.ndarray:
    """sum_n coefficients[n] * z**n, evaluated in a fixed order (float64)."""
    acc = np.full(z.shape, coefficients[-1])
    for c in coefficients[-2::-1]:
        acc *= z
        acc += c
    return acc


def _exp(x: np.ndarray) -> np.ndarray:
    """e**x for float64 |x| < 700, from exact range reduction and a polynomial."""
    x = np.asarray(x, dtype=np.float64)
    k = np.rint(x * (1.0 / math.log(2.0)))
    r = (x - k * _LN2_HI) - k * _LN2_LO
    return np.ldexp(_horner(r, _EXP_TERMS), k.astype(np.int32))


def _log(x: np.ndarray) -> np.ndarray:
    """Natural log of positive finite float64 values (frexp and the atanh series)."""
    m, e = np.frexp(np.asarray(x, dtype=np.float64))
    low = m < math.sqrt(0.5)  # move m into [sqrt(1/2), sqrt(2))
    m = np.where(low, 2.0 * m, m)
    e = (e - low).astype(np.float64)
    s = (m - 1.0) / (m + 1.0)
    return e * _LN2_HI + (e * _LN2_LO + 2.0 * s * _horner(s * s, _LOG_TERMS))


def _pow(x: np.ndarray, p: float) -> np.ndarray:
    """x**p for float64 x >= 0 and p > 0."""
    x = np.asarray(x, dtype=np.float64)
    pos = x > 0
    return np.where(pos, _exp(p * _log(np.where(pos, x, 1.0))), 0.0)


def _sincos_quarter_turns(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sin, cos) of the angle q * pi/2 (q in quarter turns, float64).

    q - rint(q) is exact, so the reduction adds no error however large the angle.
    """
    q = np.asarray(q, dtype=np.float64)
    k = np.rint(q)
    r = (q - k) * (math.pi / 2.0)  # |r| <= pi/4
    z = r * r
    s = r * _horner(z, _SIN_TERMS)
    c = _horner(z, _COS_TERMS)
    quadrant = k.astype(np.int64) & 3
    sin = np.choose(quadrant, [s, c, -s, -c])
    cos = np.choose(quadrant, [c, -s, -c, s])
    return sin, cos


def _cos_quarter_turns(q: np.ndarray) -> np.ndarray:
    return _sincos_quarter_turns(q)[1]


def _sum_rows(a) -> np.ndarray:
    """a[0] + a[1] + ... over the first axis, added in that order (float64)."""
    rows = iter(a)
    acc = np.array(next(rows), dtype=np.float64)
    for row in rows:
        acc += row
    return acc


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, k) @ (k, m) in float64 without BLAS: products added in the order of k."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return _sum_rows(a[:, j, None] * b[j] for j in range(a.shape[1]))


def _mean_std(v: np.ndarray) -> tuple[float, float]:
    """Mean and (population) standard deviation of a 1-D array, exactly rounded sums."""
    n = v.size
    mean = math.fsum(v.tolist()) / n
    d = v - mean
    return mean, math.sqrt(math.fsum((d * d).tolist()) / n)


def _householder_q(a: np.ndarray) -> np.ndarray:
    """Q of the QR decomposition of a square matrix, as LAPACK's geqrf + orgqr give it.

    Householder reflections with LAPACK's sign conventions (so Q matches
    ``np.linalg.qr(a)[0]`` to rounding), but dot products are exactly rounded sums.
    """
    n = a.shape[0]
    r = np.array(a, dtype=np.float64)
    reflections = []
    for j in range(n - 1):  # the last reflection is the identity (nothing below the diagonal)
        x = r[j:, j]
        norm = math.sqrt(math.fsum((x * x).tolist()))
        alpha = float(x[0])
        if norm == abs(alpha):  # already zero below the diagonal
            continue
        beta = -math.copysign(norm, alpha)
        tau = (beta - alpha) / beta
        v = x / (alpha - beta)
        v[0] = 1.0
        for k in range(j, n):
            r[j:, k] -= (tau * math.fsum((v * r[j:, k]).tolist())) * v
        reflections.append((j, v, tau))
    q = np.eye(n)
    for j, v, tau in reversed(reflections):  # Q = H_0 H_1 ... applied to the identity
        for k in range(n):
            q[j:, k] -= (tau * math.fsum((v * q[j:, k]).tolist())) * v
    return q


# ======================================================================================
# Procedural fields on the sphere
# ======================================================================================


def _ecef(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """(3, N) float64 Earth-centred coordinates (metres) of points on the sphere."""
    sin_lo, cos_lo = _sincos_quarter_turns(np.ravel(lon) / 90.0)
    sin_la, cos_la = _sincos_quarter_turns(np.ravel(lat) / 90.0)
    return np.stack([cos_la * cos_lo, cos_la * sin_lo, sin_la]) * _EARTH_RADIUS


class _Box:
    """The lattice cells (of ``cell`` metres) around a set of positions, flat-indexed."""

    def __init__(self, pos: np.ndarray, cell: float, pad: int) -> None:
        lo = np.floor(pos.min(axis=1) / cell).astype(np.int64) - pad
        hi = np.floor(pos.max(axis=1) / cell).astype(np.int64) + pad + 1
        self.cell, self.lo = cell, lo
        self.dims = hi - lo + 1
        n = int(np.prod(self.dims))
        if n > 60_000_000:  # internal invariant: positions span one tile, not a continent
            raise AssertionError(f"lattice box of {n} cells is too large")
        self.strides = np.array([self.dims[1] * self.dims[2], self.dims[2], 1], dtype=np.int64)

    def cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Global integer coordinates of every cell in the box, broadcastable."""
        nx, ny, nz = (int(d) for d in self.dims)
        return (
            self.lo[0] + np.arange(nx, dtype=np.int64)[:, None, None],
            self.lo[1] + np.arange(ny, dtype=np.int64)[None, :, None],
            self.lo[2] + np.arange(nz, dtype=np.int64)[None, None, :],
        )

    def locate(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flat cell index int64 (N,), fractional position in the cell (3, N) float32)."""
        q = pos / self.cell
        c = np.floor(q)
        frac = (q - c).astype(np.float32)
        c = c.astype(np.int64) - self.lo[:, None]
        return self.strides @ c, frac

    def unflatten(self, flat: np.ndarray) -> np.ndarray:
        """(n, 3) global cell coordinates of flat indices."""
        return np.stack(np.unravel_index(flat, tuple(int(d) for d in self.dims)), axis=1) + self.lo


def _noise(pos: np.ndarray, octaves, key: int, grad: bool = False):
    """Fractal value noise in [0, 1) at (3, N) positions; octaves: ((cell, weight), ...).

    With ``grad``, also the (3, N) float32 gradient in 1/metres.
    """
    n = pos.shape[1]
    total = np.zeros(n, dtype=np.float32)
    g = np.zeros((3, n), dtype=np.float32) if grad else None
    if n == 0:
        return (total, g) if grad else total
    wsum = sum(w for _, w in octaves)
    for k, (cell, weight) in enumerate(octaves):
        box = _Box(pos, cell, pad=0)
        table = _uniform(_hash((key + k) & _MASK64, *box.cells()).ravel())
        w = np.float32(weight / wsum)
        for s in range(0, n, 4 * _CHUNK_PIXELS):
            sl = slice(s, min(n, s + 4 * _CHUNK_PIXELS))
            r = _value_octave(table, box, pos[:, sl], grad)
            if grad:
                total[sl] += w * r[0]
                g[:, sl] += (w / np.float32(cell)) * r[1]
            else:
                total[sl] += w * r
    return (total, g) if grad else total


def _value_octave(table: np.ndarray, box: _Box, pos: np.ndarray, grad: bool):
    """Trilinear value noise with smoothstep weights (and its gradient in cell units)."""
    base, f = box.locate(pos)
    sx, sy, sz = (int(v) for v in box.strides)
    v = [table[base + (dx * sx + dy * sy + dz)] for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)]
    v000, v001, v010, v011, v100, v101, v110, v111 = v
    wx, wy, wz = (f * f * (np.float32(3.0) - np.float32(2.0) * f))
    a0, a1, a2, a3 = v100 - v000, v110 - v010, v101 - v001, v111 - v011
    x00, x10, x01, x11 = v000 + wx * a0, v010 + wx * a1, v001 + wx * a2, v011 + wx * a3
    y0, y1 = x00 + wy * (x10 - x00), x01 + wy * (x11 - x01)
    value = y0 + wz * (y1 - y0)
    if not grad:
        return value
    d = np.float32(6.0) * f * (np.float32(1.0) - f)
    gx = d[0] * ((1 - wy) * (1 - wz) * a0 + wy * (1 - wz) * a1 + (1 - wy) * wz * a2 + wy * wz * a3)
    gy = d[1] * ((1 - wz) * (x10 - x00) + wz * (x11 - x01))
    gz = d[2] * (y1 - y0)
    return value, np.stack([gx, gy, gz])


def _voronoi(pos: np.ndarray, cell: float, key: int) -> tuple[np.ndarray, _Box, np.ndarray]:
    """Nearest jittered lattice feature point of each position.

    Returns (flat winning cell index int64 (N,), the box, jitter table (3, ncells) float32);
    feature point of a cell = (cell coords + jitter) * cell metres.
    """
    box = _Box(pos, cell, pad=1)
    h = _hash(key, *box.cells()).ravel()
    jit = np.stack([_uniform(h), _uniform(h, 1), _uniform(h, 2)])
    n = pos.shape[1]
    win = np.empty(n, dtype=np.int64)
    sx, sy, sz = (int(v) for v in box.strides)
    offsets = [(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)]
    for s in range(0, n, _CHUNK_PIXELS):
        sl = slice(s, min(n, s + _CHUNK_PIXELS))
        base, f = box.locate(pos[:, sl])
        best = np.full(base.shape, np.inf, dtype=np.float32)
        arg = base.copy()
        for dx, dy, dz in offsets:
            idx = base + (dx * sx + dy * sy + dz * sz)
            d = jit[0, idx] + np.float32(dx) - f[0]
            dist = d * d
            d = jit[1, idx] + np.float32(dy) - f[1]
            dist += d * d
            d = jit[2, idx] + np.float32(dz) - f[2]
            dist += d * d
            closer = dist < best
            best = np.where(closer, dist, best)
            arg = np.where(closer, idx, arg)
        win[sl] = arg
    return win, box, jit


def _surface_gradient(pos: np.ndarray, g: np.ndarray) -> np.ndarray:
    """|gradient| along the sphere's surface (removes the radial component), (N,) float32."""
    normal = (pos / np.sqrt(_sum_rows(pos * pos))).astype(np.float32)
    radial = (g[0] * normal[0] + g[1] * normal[1]) + g[2] * normal[2]
    t = g - radial * normal
    return np.sqrt((t[0] * t[0] + t[1] * t[1]) + t[2] * t[2])


# ======================================================================================
# Class layout
# ======================================================================================


@dataclass
class _Layout:
    classes: np.ndarray  # (H, W) uint8
    parcel: np.ndarray  # (H, W) int32 index into parcel_keys
    parcel_keys: np.ndarray  # (n_parcels,) uint64 global parcel identities
    texture: np.ndarray  # (2, H, W) float32, about unit variance


def _parcel_classes(points: np.ndarray, keys: np.ndarray, year: int, seed: int):
    """Per parcel: class code for ``year`` (255 = natural land) and the year it is cleared."""
    u = [_uniform(_hash(_stable_key(seed, "parcel-draws"), keys.view(np.int64)), k) for k in range(5)]
    zone = _noise(points, _ZONE, _stable_key(seed, "zone"))
    tea_area = _noise(points, _TEA, _stable_key(seed, "tea")) > _TEA_LEVEL
    natural = zone < _NATURAL_LEVEL

    shares = np.cumsum(_CROP_SHARES) / sum(_CROP_SHARES)
    crop = _CROPS[np.minimum(np.searchsorted(shares, u[0], side="right"), len(_CROPS) - 1)]
    hy = _hash(_stable_key(seed, "rotation", year), keys.view(np.int64))
    rotate = _uniform(hy) < _ROTATION_RATE
    other = _CROPS[np.minimum((_uniform(hy, 1) * len(_CROPS)).astype(np.int64), len(_CROPS) - 1)]
    crop = np.where(rotate, other, crop)

    cls = np.where(u[1] < _PASTURE_SHARE, np.uint8(GRASS), crop).astype(np.uint8)
    cls = np.where(tea_area & (u[2] < _TEA_SHARE), np.uint8(TEA), cls)
    cls = np.where(_in_town(points, seed), np.uint8(TOWN), cls)
    cls = np.where(natural & (cls != TOWN), np.uint8(255), cls)

    first, last = _CLEAR_YEARS
    clear_year = np.where(
        u[3] < _CLEAR_SHARE, first + np.floor(u[4] * (last - first + 1)).astype(np.int64), 10_000
    )
    return cls, clear_year


def _in_town(points: np.ndarray, seed: int) -> np.ndarray:
    """(n,) bool: points within the radius of a town centre (sparse jittered lattice)."""
    key = _stable_key(seed, "towns")
    c = np.floor(points / _TOWN_CELL).astype(np.int64)
    inside = np.zeros(points.shape[1], dtype=bool)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                cc = c + np.array([dx, dy, dz])[:, None]
                h = _hash(key, cc[0], cc[1], cc[2])
                centre = (cc + np.stack([_uniform(h, 1), _uniform(h, 2), _uniform(h, 3)])) * _TOWN_CELL
                lo, hi = _TOWN_RADIUS
                radius = lo + (hi - lo) * _uniform(h, 4)
                d = points - centre
                dist = np.sqrt(_sum_rows(d * d))
                inside |= (_uniform(h) < _TOWN_PROB) & (dist < radius)
    return inside


def _layout(grid: TileGrid, year: int, seed: int) -> _Layout:
    """Classes, parcels and texture of a grid for a year (pure function of position)."""
    h, w = grid.shape
    lon, lat = pixel_to_lonlat(grid, np.arange(h)[:, None], np.arange(w)[None, :])
    pos = _ecef(lon, lat)
    del lon, lat

    win, box, jit = _voronoi(pos, _PARCEL_CELL, _stable_key(seed, "parcels"))
    # Parcels present in the grid, numbered in lattice order (a linear-time np.unique).
    present = np.zeros(int(np.prod(box.dims)), dtype=bool)
    present[win] = True
    used = np.flatnonzero(present)
    number = np.zeros(present.size, dtype=np.int32)
    number[used] = np.arange(used.size, dtype=np.int32)
    parcel = number[win]
    del present, number, win
    cells = box.unflatten(used)
    points = (cells.T + jit[:, used]) * _PARCEL_CELL
    keys = _hash(_stable_key(seed, "parcel-id"), cells[:, 0], cells[:, 1], cells[:, 2])
    pcls, clear_year = _parcel_classes(points, keys, year, seed)

    classes = pcls[parcel]
    natural = np.flatnonzero(classes == 255)
    forest = _noise(pos[:, natural], _FOREST, _stable_key(seed, "forest")) > _FOREST_LEVEL
    forest &= clear_year[parcel[natural]] > year
    classes[natural] = np.where(forest, np.uint8(FOREST), np.uint8(GRASS))

    lake = _noise(pos, _LAKE, _stable_key(seed, "lakes")) > _LAKE_LEVEL
    classes[lake] = WATER
    # Rivers: the 0.5 level line of a smooth field, evaluated at warped positions so the
    # lines meander without the small closed loops a second octave would add.
    wcell, wamp = _RIVER_WARP
    warped = pos + np.stack([
        (_noise(pos, ((wcell, 1.0),), _stable_key(seed, "river-warp", k)) - np.float32(0.5)) * (2 * wamp)
        for k in range(3)
    ])
    river_field, river_grad = _noise(warped, _RIVER, _stable_key(seed, "rivers"), grad=True)
    del warped
    slope = _surface_gradient(pos, river_grad)
    lo, hi = _RIVER_HALF_WIDTH
    half = lo + (hi - lo) * np.clip(2.0 * _noise(pos, _RIVER_WIDTH, _stable_key(seed, "river-width")) - 0.5, 0, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.abs(river_field - np.float32(0.5)) / slope  # metres to the level line
    river = distance < half
    classes[river & ~lake] = RIVER

    texture = np.stack([
        (_noise(pos, ((_TEXTURE_CELL, 1.0),), _stable_key(seed, "texture", k)) - np.float32(0.5))
        * np.float32(_TEXTURE_NORM)
        for k in range(2)
    ])
    return _Layout(
        classes=classes.reshape(h, w),
        parcel=parcel.reshape(h, w),
        parcel_keys=keys,
        texture=texture.reshape(2, h, w),
    )


# ======================================================================================
# Embedding model
# ======================================================================================


def _reference_stats() -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std) of real dequantized embeddings, float32 (128,) each."""
    return _REF_MEAN, _REF_STD


@dataclass(frozen=True)
class _Model:
    """Per (seed, year) lookup tables in real (dequantized) units."""

    base: np.ndarray  # (11 * _TEX_LEVELS, 128): mean + std * (P[c] + t * D1[c]) at texture level t
    texture: np.ndarray  # (11 * _TEX_LEVELS, 128): std * t * D2[c]
    basis: np.ndarray  # (rank, 128): std * parcel subspace * amplitude
    iso: np.ndarray  # (128,): std * isotropic parcel amplitude
    bank1: np.ndarray  # (_BANK_ROWS, 128): pixel-noise halves, std * e_j / sqrt(2)
    bank2: np.ndarray
    lean: np.ndarray  # (11 * _N_LOOKALIKES * _LEAN_LEVELS, 128): std * lean * (P[look-alike] - P[c])
    amp: np.ndarray  # (11,) pixel-noise amplitude per class (0 for water and nodata)


def _standardise(proto: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Centre and scale prototypes per channel so that, under the nominal class mix and
    counting mixed parcels (_LOOKALIKES), the class-driven part of every channel has mean
    0 and variance _PROTO_VAR.
    """
    e1 = _LEAN_MAX / (_LEAN_POWER + 1.0)  # E[lean]
    e2 = _LEAN_MAX**2 / (2.0 * _LEAN_POWER + 1.0)  # E[lean^2]
    mean_of = proto.copy()
    lean_var = np.zeros_like(proto)
    for c, alikes in _LOOKALIKES.items():
        diffs = np.stack([proto[o] - proto[c] for o in alikes])  # (k, 128)
        mean_diff = _sum_rows(diffs) / len(alikes)
        mean_of[c] = proto[c] + e1 * mean_diff
        lean_var[c] = e2 * (_sum_rows(diffs * diffs) / len(alikes)) - (e1 * mean_diff) ** 2
    centre = _sum_rows(w * mean_of)
    var = _sum_rows(w * ((mean_of - centre) ** 2 + lean_var))
    return (proto - centre) * np.sqrt(_PROTO_VAR / var)


def _weights() -> np.ndarray:
    w = np.zeros(_N_CLASSES, np.float64)
    for c, v in _NOMINAL_MIX.items():
        w[c] = v
    return w / math.fsum(w.tolist())


def _class_vectors(rng: np.random.Generator, outward: np.ndarray) -> np.ndarray:
    """(11, 128) class prototype directions with a similarity hierarchy (unstandardised).

    Each class mixes shared group vectors (_CLASS_GROUPS) with its own, so crops resemble
    each other, forest resembles tea and grassland sits between crops and trees. Every
    component is skewed outward per channel (towards the sign of the channel's mean,
    log-normal with _PROTO_SKEW): each class then has a few channels far from the mean,
    which gives per-pixel scales like the real ones (median ~0.064) without heavier
    extreme tails than Gaussian data.
    """

    def skewed() -> np.ndarray:
        v = outward * _exp(_PROTO_SKEW * rng.standard_normal(_DIM))
        mean, std = _mean_std(v)
        return (v - mean) / std

    groups = {g: skewed() for g in ("vegetation", "herbaceous", "crop", "woody")}
    out = np.zeros((_N_CLASSES, _DIM))
    for c in _LAND:
        mix = _CLASS_GROUPS.get(int(c), {})
        out[c] = np.sqrt(1.0 - sum(mix.values())) * skewed()
        for g, v in mix.items():
            out[c] += np.sqrt(v) * groups[g]
    return out


@lru_cache(maxsize=4)
def _seed_tables(seed: int):
    """Per-seed: base prototypes, texture directions, parcel subspace, pixel banks."""
    rng = np.random.default_rng(_stable_key(seed, "model"))
    base = _class_vectors(rng, np.sign(_reference_stats()[0]))
    dirs = rng.standard_normal((2, _N_CLASSES, _DIM))
    # Texture directions: weighted mean of D1^2 + D2^2 is 1 in every channel.
    dirs /= np.sqrt(_sum_rows(_weights()[:, None] * (dirs[0] * dirs[0] + dirs[1] * dirs[1])))
    # Parcel subspace: orthonormal rows with equal weight in every channel (columns of a
    # Sylvester-Hadamard matrix with random channel signs, rotated within the subspace),
    # so every channel gets the same parcel-level variance.
    hadamard = np.ones((1, 1))
    while hadamard.shape[0] < _DIM:
        hadamard = np.block([[hadamard, hadamard], [hadamard, -hadamard]])
    cols = rng.choice(np.arange(1, _DIM), _PARCEL_RANK, replace=False)
    signs = rng.choice([-1.0, 1.0], _DIM)
    rot = _householder_q(rng.standard_normal((_PARCEL_RANK, _PARCEL_RANK)))
    subspace = _matmul(rot.T, (hadamard[:, cols] * signs[:, None]).T) / np.sqrt(_DIM)  # (rank, 128)
    step = rng.standard_normal(_PARCEL_RANK)
    step /= math.sqrt(math.fsum((step * step).tolist()))
    delta = _matmul(step[None, :], subspace)[0] * _CONFUSABLE_STEP
    # Pixel noise: unit variance per channel, partly exponential and skewed outward (towards
    # the sign of the channel's mean), which gives per-pixel scales the upper tail of the
    # real ones (p99.9 ~0.119, p99.99 ~0.137).
    outward = np.sign(_reference_stats()[0])
    gauss = rng.standard_normal((2, _BANK_ROWS, _DIM))
    expo = rng.exponential(size=(2, _BANK_ROWS, _DIM)) - 1.0
    bank = (np.sqrt(1 - _NOISE_SKEW) * gauss + np.sqrt(_NOISE_SKEW) * outward * expo).astype(np.float32)
    return base, dirs, subspace, delta, bank


@lru_cache(maxsize=16)
def _model(seed: int, year: int) -> _Model:
    mean, std = (a.astype(np.float64) for a in _reference_stats())
    base, dirs, subspace, delta, bank = _seed_tables(seed)
    yrng = np.random.default_rng(_stable_key(seed, "model-year", year))
    fresh = _class_vectors(yrng, np.sign(mean))
    proto = np.sqrt(1.0 - _YEAR_MIX**2) * base + _YEAR_MIX * fresh
    w = _weights()[:, None]
    proto = _standardise(proto, w)
    proto[BARLEY] = proto[WHEAT] + delta  # the confusable pair, in the parcel subspace
    proto = _standardise(proto, w)
    proto[[NODATA_CLASS, WATER, RIVER]] = 0.0

    lowrank = np.sqrt(_PARCEL_LOWRANK_VAR * _DIM / _PARCEL_RANK)
    basis = subspace * lowrank  # per-channel variance: lowrank^2 * sum_k U_kj^2
    parcel_var = _sum_rows(basis * basis) + _PARCEL_ISO_VAR
    tex_var = _TEXTURE_VAR  # directions are normalised per channel (_seed_tables)
    amp = np.zeros(_N_CLASSES)
    for c, v in _NOISE_AMP.items():
        amp[c] = v
    amp /= math.sqrt(math.fsum((w[:, 0] * amp * amp).tolist()))
    pixel_var = 1.0 - _PROTO_VAR - parcel_var - tex_var
    if np.any(pixel_var < 0.05):  # internal invariant of the parameters above
        raise AssertionError("variance budget leaves no room for pixel noise")
    e = std * np.sqrt(pixel_var / 2.0)

    levels = _texture_levels() * np.sqrt(_TEXTURE_VAR)  # (L,)
    base_rows = mean + std * (proto[:, None, :] + levels[None, :, None] * dirs[0][:, None, :])
    tex_rows = std * levels[None, :, None] * dirs[1][:, None, :]
    dry = np.isin(np.arange(_N_CLASSES), [NODATA_CLASS, WATER, RIVER])
    base_rows[dry] = 0.0
    tex_rows[dry] = 0.0
    return _Model(
        base=base_rows.reshape(-1, _DIM).astype(np.float32),
        texture=tex_rows.reshape(-1, _DIM).astype(np.float32),
        basis=(basis * std).astype(np.float32),
        iso=(np.sqrt(_PARCEL_ISO_VAR) * std).astype(np.float32),
        bank1=bank[0] * e.astype(np.float32),
        bank2=bank[1] * e.astype(np.float32),
        lean=_lean_rows(proto, std),
        amp=amp.astype(np.float32),
    )


def _lean_rows(proto: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Lookup rows for mixed parcels: std * lean * (P[look-alike] - P[c]), float32."""
    rows = np.zeros((_N_CLASSES, _N_LOOKALIKES, _LEAN_LEVELS, _DIM))
    leans = np.linspace(0.0, _LEAN_MAX, _LEAN_LEVELS)
    for c, alikes in _LOOKALIKES.items():
        for k, other in enumerate(alikes):
            rows[c, k] = leans[:, None] * (std * (proto[other] - proto[c]))[None, :]
    return rows.reshape(-1, _DIM).astype(np.float32)


def _texture_levels() -> np.ndarray:
    """(L,) float64 values of the quantized texture fields (unit-variance units)."""
    return np.linspace(-_TEX_RANGE, _TEX_RANGE, _TEX_LEVELS)


def _texture_index(t: np.ndarray) -> np.ndarray:
    """Texture values (about unit variance) -> level indices into _texture_levels()."""
    scaled = (np.clip(t, -_TEX_RANGE, _TEX_RANGE) + _TEX_RANGE) * ((_TEX_LEVELS - 1) / (2 * _TEX_RANGE))
    return np.rint(scaled).astype(np.int64)


def _parcel_offsets(keys: np.ndarray, model: _Model, seed: int, year: int) -> np.ndarray:
    """(n_parcels, 128) float32 parcel offsets in real units, partly renewed each year."""
    r = _PARCEL_YEAR_MIX
    keep = np.float32(np.sqrt(1.0 - r * r))
    g = keep * _hash_normal(keys, _PARCEL_RANK, _stable_key(seed, "parcel-lowrank"))
    g += np.float32(r) * _hash_normal(keys, _PARCEL_RANK, _stable_key(seed, "parcel-lowrank", year))
    iso = keep * _hash_normal(keys, _DIM, _stable_key(seed, "parcel-iso"))
    iso += np.float32(r) * _hash_normal(keys, _DIM, _stable_key(seed, "parcel-iso", year))
    # float64, products added in a fixed order, one rounding: a BLAS sgemm would change
    # its summation order with the number of parcels (the window) and the CPU.
    return (iso * model.iso.astype(np.float64) + _matmul(g, model.basis)).astype(np.float32)


def _embed(grid: TileGrid, layout: _Layout, seed: int, year: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 128) int8 embeddings and (H, W) float32 scales (NaN on water).

    Every term is a row gather from a small table (class x texture level, parcel, noise
    bank), which is several times faster than per-pixel arithmetic or a skinny matmul.
    """
    model = _model(seed, year)
    h, w = grid.shape
    offsets = _parcel_offsets(layout.parcel_keys, model, seed, year)
    hl = _hash(_stable_key(seed, "lean", year), layout.parcel_keys.view(np.int64))
    lean_of = ((_uniform(hl) * _N_LOOKALIKES).astype(np.int64) * _LEAN_LEVELS
               + np.rint(_pow(_uniform(hl, 1), _LEAN_POWER) * (_LEAN_LEVELS - 1)).astype(np.int64))
    emb = np.empty((h * w, _DIM), dtype=np.int8)
    scales = np.empty(h * w, dtype=np.float32)
    classes = layout.classes.ravel()
    parcel = layout.parcel.ravel()
    tex = layout.texture.reshape(2, -1)
    # Pixel noise is keyed by the pixel's place on the tile's 10 m UTM lattice, so a window
    # of the grid gets the same noise as the whole tile.
    _, _, x0, _, _, y0 = grid.transform
    col0 = int(round(x0 / PIXEL_SIZE))
    row0 = int(round(-y0 / PIXEL_SIZE))
    key = _stable_key(seed, "pixel-noise", grid.tile.name, year)
    rows_per = max(1, _CHUNK_PIXELS // w)
    mask = np.uint64(_BANK_ROWS - 1)
    x = np.empty((rows_per * w, _DIM), dtype=np.float32)
    tmp = np.empty_like(x)
    for r0 in range(0, h, rows_per):
        r1 = min(h, r0 + rows_per)
        sl = slice(r0 * w, r1 * w)
        n = sl.stop - sl.start
        xs, ts = x[:n], tmp[:n]
        cls = classes[sl].astype(np.int64)
        np.take(model.base, cls * _TEX_LEVELS + _texture_index(tex[0, sl]), axis=0, out=xs)
        np.take(model.texture, cls * _TEX_LEVELS + _texture_index(tex[1, sl]), axis=0, out=ts)
        xs += ts
        np.take(offsets, parcel[sl], axis=0, out=ts)
        xs += ts
        np.take(model.lean, cls * (_N_LOOKALIKES * _LEAN_LEVELS) + lean_of[parcel[sl]], axis=0, out=ts)
        xs += ts
        hh = _hash(key, np.arange(r0, r1)[:, None] + row0, np.arange(w)[None, :] + col0).ravel()
        np.take(model.bank1, (hh & mask).astype(np.intp), axis=0, out=ts)
        ts += np.take(model.bank2, ((hh >> np.uint64(32)) & mask).astype(np.intp), axis=0)
        amp = model.amp[cls]
        ts *= amp[:, None]
        xs += ts
        q, s = quantize(xs)
        water = amp == 0
        q[water] = 0
        s[water] = np.nan
        emb[sl] = q
        scales[sl] = s
    return emb.reshape(h, w, _DIM), scales.reshape(h, w)


# ======================================================================================
# Public API
# ======================================================================================


@dataclass
class SyntheticTile:
    """A generated tile-year and its ground truth.

    data: the tile as any source yields it (``synthetic=True``, ``source="synthetic"``,
    NaN scales and landmask 0 on water); classes: (H, W) uint8 codes of :data:`CLASSES`.
    """

    data: TileData
    classes: np.ndarray


def generate_tile(
    tile: Tile, year: int, seed: int = 0, version: str = "v1", grid: TileGrid | None = None
) -> SyntheticTile:
    """Generate one tile-year of the seeded synthetic landscape.

    Deterministic in (seed, tile, year): the same whichever region or process asks.
    ``grid`` defaults to the tile's expected UTM grid (about 1100 x 1100 near the
    equator, a few seconds); a window of that grid (same CRS and pixel lattice) gives
    exactly that window of the whole tile, bit for bit on any CPU, which keeps tests small.
    """
    if not isinstance(tile, Tile):
        raise InvalidInputError(f"tile must be a Tile, got {type(tile).__name__}; use Tile.from_name('grid_X_Y')")
    year = _check_year(year)
    seed = _check_seed(seed)
    grid = expected_grid(tile) if grid is None else grid
    if grid.tile != tile:
        raise InvalidInputError(f"grid belongs to {grid.tile.name}, not {tile.name}")
    layout = _layout(grid, year, seed)
    emb, scales = _embed(grid, layout, seed, year)
    landmask = np.isin(layout.classes, list(WATER_CLASSES), invert=True).astype(np.uint8)
    data = TileData(
        tile=tile,
        year=year,
        embeddings=emb,
        scales=scales,
        grid=grid,
        dataset_version=version,
        source="synthetic",
        synthetic=True,
        landmask=landmask,
        extra={"seed": seed, "generator_version": GENERATOR_VERSION},
    )
    return SyntheticTile(data=data, classes=layout.classes)


def _check_year(year) -> int:
    try:
        y = int(year)
    except (TypeError, ValueError):
        raise InvalidInputError(f"year must be an integer such as 2024, got {year!r}") from None
    if y != year or not 1900 <= y <= 2200:
        raise InvalidInputError(f"year must be an integer between 1900 and 2200, got {year!r}")
    return y


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInputError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


@dataclass
class SynthesisReport:
    """What :func:`synthesize_mirror` did: tiles written, and tiles already complete."""

    out: Path
    year: int
    seed: int
    tiles: list[Tile]
    written: int
    skipped: int
    version: str = "v1"
    seconds: float = 0.0


def truth_path(out: str | os.PathLike[str], tile: Tile, year: int) -> Path:
    """Where the ground-truth class GeoTIFF of a tile-year lives in a synthetic mirror."""
    return Path(out) / "truth" / str(year) / f"{tile.name}_classes.tif"


_STATE_FILE = "synthetic.json"
_README = "SYNTHETIC.md"


def synthesize_mirror(
    tiles: Iterable[Tile],
    year: int,
    out: str | os.PathLike[str],
    seed: int = 0,
    version: str = "v1",
    progress=None,
) -> SynthesisReport:
    """Write a complete synthetic release mirror (bucket layout) for ``tiles`` in ``year``.

    Per tile: ``npy/<version>/<year>/grid_X_Y/grid_X_Y{,_scales}.npy``, the landmask
    GeoTIFF (tagged ``synthetic=true``) and ``truth/<year>/grid_X_Y_classes.tif``; then
    the manifest (variant ``synthetic``), ``synthetic.json`` and ``SYNTHETIC.md``.
    Resumable: a tile whose files all exist and were made with the same seed, version and
    generator is skipped. A directory holding a real mirror, or one made with another
    seed, is refused (mixing them would break the landscape's continuity).
    """
    import time

    out = Path(out)
    year = _check_year(year)
    seed = _check_seed(seed)
    tiles = list(dict.fromkeys(tiles))
    if not tiles:
        raise InvalidInputError("no tiles to synthesize; give tiles, a bbox or a region")
    if not version or "/" in version or version.startswith("."):
        raise InvalidInputError(f"dataset version {version!r} is not a directory name such as v1")
    state = _check_out(out, seed)
    _write_state(out, state)  # mark the directory synthetic before the first tile lands

    start = time.perf_counter()
    written = skipped = 0
    from .._progress import progress_bar

    with progress_bar(progress, f"synthesize {year}", len(tiles)) as advance:
        for tile in tiles:
            if _tile_complete(out, tile, year, seed, version):
                skipped += 1
            else:
                _write_tile(out, generate_tile(tile, year, seed, version), seed)
                written += 1
            state["years"].setdefault(str(year), [])
            if tile.name not in state["years"][str(year)]:
                state["years"][str(year)].append(tile.name)
            advance()
    state["versions"] = sorted(set(state.get("versions", [])) | {version})
    for names in state["years"].values():
        names.sort()
    write_manifest(out, version, variant="synthetic")
    _write_state(out, state)
    return SynthesisReport(
        out=out, year=year, seed=seed, tiles=tiles, written=written, skipped=skipped,
        version=version, seconds=time.perf_counter() - start,
    )


def _check_out(out: Path, seed: int) -> dict:
    """Load (or start) the mirror's synthetic.json; refuse real or other-seed mirrors."""
    state_path = out / _STATE_FILE
    if state_path.exists():
        try:
            state = json.loads(state_path.read_text())
            old_seed = int(state["seed"])
            state.setdefault("years", {})
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInputError(
                f"{state_path} is not a synthetic mirror record ({exc}); remove it or choose another out="
            ) from exc
        if old_seed != seed or state.get("generator_version") != GENERATOR_VERSION:
            raise InvalidInputError(
                f"{out} holds a synthetic mirror made with seed {old_seed} (generator "
                f"{state.get('generator_version')}); pass seed={old_seed} to extend it, "
                "or choose another out="
            )
        return state
    if (out / BUCKET_NPY).is_dir() and any((out / BUCKET_NPY).glob(f"*/{MANIFEST}")):
        raise InvalidInputError(
            f"{out} already holds a release mirror that is not synthetic; choose another out= "
            "so synthetic tiles are never mixed with real ones"
        )
    return {"synthetic": True, "seed": seed, "generator_version": GENERATOR_VERSION, "years": {}}


def _tile_complete(out: Path, tile: Tile, year: int, seed: int, version: str) -> bool:
    """True when every file of the tile-year exists, has the right shape and provenance."""
    paths = bucket_paths(version, year, tile)
    tp = truth_path(out, tile, year)
    if not all((out / paths[k]).exists() for k in ("grid", "scales", "landmask")) or not tp.exists():
        return False
    grid = expected_grid(tile)
    try:
        emb = np.load(out / paths["grid"], mmap_mode="r")
        sc = np.load(out / paths["scales"], mmap_mode="r")
        if emb.dtype != np.int8 or emb.shape != (*grid.shape, _DIM):
            return False
        if sc.dtype != np.float32 or sc.shape != grid.shape:
            return False
        del emb, sc
        import rasterio

        with rasterio.open(tp) as src:
            tags = src.tags()
            shape = (src.height, src.width)
    except (OSError, ValueError):
        return False
    return (
        shape == grid.shape
        and tags.get("synthetic") == "true"
        and tags.get("seed") == str(seed)
        and tags.get("year") == str(year)
        and tags.get("dataset_version") == version
        and tags.get("generator_version") == str(GENERATOR_VERSION)
    )


def _tags(seed: int, version: str) -> dict[str, str]:
    return {
        "synthetic": "true",
        "source": "tessera-search synthetic landscape (generated data, not TESSERA output)",
        "seed": str(seed),
        "dataset_version": version,
        "generator_version": str(GENERATOR_VERSION),
    }


def _write_tile(out: Path, st: SyntheticTile, seed: int) -> None:
    """Write one generated tile-year: npy pair and landmask, then its truth raster last."""
    d = st.data
    tags = _tags(seed, d.dataset_version)
    write_release_tile(out, d.dataset_version, d.year, d.grid, d.embeddings, d.scales, d.landmask, tags)
    _write_truth(truth_path(out, d.tile, d.year), d.grid, st.classes, {**tags, "year": str(d.year)})


def _write_truth(path: Path, grid: TileGrid, classes: np.ndarray, tags: dict[str, str]) -> None:
    import rasterio

    legend = json.dumps({str(k): v for k, v in CLASSES.items()})
    with atomic_path(path) as tmp:
        with rasterio.open(
            tmp, "w", driver="GTiff", height=grid.height, width=grid.width, count=1,
            dtype="uint8", crs=grid.crs, transform=grid.affine(), nodata=NODATA_CLASS,
            compress="lzw", tiled=True, blockxsize=256, blockysize=256,
        ) as dst:
            dst.write(np.asarray(classes, dtype=np.uint8), 1)
            dst.write_colormap(1, {k: (*rgb, 255) for k, rgb in CLASS_COLOURS.items()})
            dst.set_band_description(1, "ground-truth class (synthetic)")
            dst.update_tags(tile=grid.tile.name, legend=legend, **tags)


def _write_state(out: Path, state: dict) -> None:
    """synthetic.json (machine-readable) and SYNTHETIC.md (for people), atomically."""
    with atomic_path(out / _STATE_FILE) as tmp:
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
    lines = [
        "# SYNTHETIC DATA",
        "",
        "Everything in this directory was **generated** by tessera-search's synthetic source "
        "(a seeded procedural landscape). It is **not** TESSERA output and says nothing about "
        "any real place. Use it for demos, tests and benchmarks only.",
        "",
        f"- seed: {state['seed']}",
        f"- generator version: {state['generator_version']}",
        f"- dataset versions: {', '.join(state.get('versions', []))}",
        "- layout: geotessera bucket layout (`npy/<version>/<year>/...`, `landmasks/...`), "
        "manifest variant `synthetic`; ground truth in `truth/<year>/grid_X_Y_classes.tif` "
        "(uint8, same grid as the tile, 0 = nodata)",
        "",
        "## Tiles",
        "",
    ]
    for y in sorted(state["years"]):
        names = state["years"][y]
        lines.append(f"- {y} ({len(names)} tile{'s' if len(names) != 1 else ''}): {', '.join(names)}")
    lines += ["", "## Class legend", "", "| code | class | embedding |", "|---:|---|---|"]
    for code, name in CLASSES.items():
        kind = "none (NaN scale, landmask 0)" if code in WATER_CLASSES else (
            "never generated (nodata)" if code == NODATA_CLASS else "yes")
        lines.append(f"| {code} | {name} | {kind} |")
    lines.append("")
    with atomic_path(out / _README) as tmp:
        tmp.write_text("\n".join(lines))


def read_truth(out: str | os.PathLike[str], tile: Tile, year: int) -> tuple[np.ndarray, TileGrid]:
    """(H, W) uint8 ground-truth classes of a tile-year in a synthetic mirror, and its grid."""
    import rasterio
    from rasterio.errors import RasterioError

    path = truth_path(out, tile, year)
    if not path.exists():
        raise TileNotFoundError(
            f"no ground truth for {tile.name} ({year}) under {out}; synthesize that tile and year there first "
            "(synthesize_mirror)"
        )
    try:
        with rasterio.open(path) as src:
            classes = src.read(1)
            epsg = src.crs.to_epsg() if src.crs else None
            t = src.transform
            synthetic = src.tags().get("synthetic") == "true"
    except RasterioError as exc:
        raise CorruptTileError(f"{path} is not a readable GeoTIFF ({exc}); regenerate it") from exc
    if epsg is None or not synthetic:
        raise CorruptTileError(f"{path} is not a synthetic ground-truth raster; regenerate it")
    grid = TileGrid(tile, epsg, (t.a, t.b, t.c, t.d, t.e, t.f), classes.shape[0], classes.shape[1])
    return classes, grid


# Per-channel mean and standard deviation of dequantized TESSERA embeddings, measured on
# real tiles (reference/embedding-stats.json; numbers only).
_REF_MEAN = np.array([
    3.41561, -1.26413, 0.07234, 3.44535, -0.22679, -0.89895, -1.8705, -1.10092, 0.95443,
    1.65554, -0.96246, -0.47918, -1.44878, -2.26488, 1.42514, 1.65639, -0.27537,
    3.03091, -1.57305, -1.72698, 1.97107, 2.85437, -0.82837, 1.28048, 2.18815, -0.25191,
    -2.68544, 2.05474, -0.72939, 0.7411, -1.50855, 0.6472, -1.98745, 0.42021, -0.61235,
    -0.19223, 1.61962, -1.0997, -1.60707, -2.28718, 1.13971, -3.20867, 1.51053, 1.25532,
    -1.50879, 0.97131, 3.20278, -1.60132, -0.08274, -2.72673, -1.18913, -0.25468,
    -0.21864, 1.03122, 3.00575, 0.89898, 0.1701, 2.02146, 3.04535, -0.51591, 2.16566,
    -0.80156, 3.31834, -0.66001, 0.78934, -2.56872, -1.86532, 0.53443, 1.81323, 1.97191,
    0.51913, -0.20236, 2.48561, 1.44332, -2.41152, -1.12374, 1.03852, 0.07429, 2.12037,
    0.9212, 1.39435, -2.64924, -0.32025, -2.15388, 2.4692, 0.32973, 2.60037, -4.24688,
    -0.20759, 0.76941, -0.63437, 1.60876, -0.01613, -1.58229, 0.00139, 0.80135, 0.36552,
    -0.9132, 2.00175, 1.64043, -2.18732, 0.81742, 0.59715, 0.19218, 1.02711, 4.49272,
    -0.34288, -0.93078, 2.84459, 0.43008, 1.49373, 0.7388, -0.24162, -1.97012, 2.26118,
    2.27233, -2.38755, -0.49619, -1.09289, -3.23049, -0.97099, -2.03429, -0.37412,
    -2.36893, -1.9682, -0.11488, 2.21971, 0.57178
], dtype=np.float32)
_REF_STD = np.array([
    2.20208, 1.73954, 1.42641, 1.8235, 1.51072, 1.865, 1.76995, 2.37869, 1.27072,
    1.77146, 1.44268, 2.11987, 1.84957, 1.56519, 1.9411, 1.58646, 2.16941, 1.70407,
    1.48636, 1.96157, 1.90557, 1.88025, 1.77031, 1.85591, 1.61463, 2.26756, 2.15252,
    1.71878, 1.46523, 1.44354, 1.81883, 1.70711, 1.65556, 2.08812, 2.21429, 1.29493,
    1.67014, 1.85177, 1.86733, 1.67118, 1.35111, 2.37013, 1.4181, 1.92923, 1.60448,
    1.74578, 2.08467, 1.78196, 1.98591, 1.7921, 1.66723, 1.55409, 1.604, 1.69976,
    1.5814, 2.08939, 1.76931, 1.38742, 1.7343, 1.62575, 1.80126, 1.76287, 1.96294,
    1.74248, 1.80626, 1.84074, 1.83926, 1.54695, 1.73183, 1.88733, 1.2408, 1.46841,
    1.79703, 1.93015, 2.29543, 1.5501, 1.54411, 2.00133, 1.58137, 1.81021, 1.95106,
    1.50296, 2.98355, 1.75602, 1.74752, 2.28771, 1.75445, 1.87152, 1.74442, 1.5607,
    2.07994, 1.65677, 1.59286, 1.94795, 1.149, 2.3293, 1.82947, 1.89542, 1.9782,
    2.06709, 2.0276, 1.7093, 1.81259, 2.41582, 1.88492, 3.24728, 1.73915, 1.88643,
    1.84936, 1.62405, 1.95973, 1.86679, 1.63981, 1.31689, 1.78782, 2.34623, 1.62156,
    1.60499, 1.58486, 2.13404, 1.36669, 1.52547, 1.82787, 1.79282, 1.86229, 1.52912,
    1.54002, 1.57727
], dtype=np.float32)
