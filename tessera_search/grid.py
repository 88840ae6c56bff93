"""The TESSERA tile grid: tile names, UTM pixel grids, pixel <-> lon/lat, and pixel IDs.

Tiles are 0.1 x 0.1 degree cells named by their centre, ``grid_{lon:.2f}_{lat:.2f}``
(``grid_36.85_-1.25`` covers lon 36.80..36.90, lat -1.30..-1.20). Internally a tile is
the integer cell index pair ``(ix, iy) = (floor(lon * 10), floor(lat * 10))`` with
``ix`` in [-1800, 1799] and ``iy`` in [-900, 899]; cells are half-open,
``[west, east) x [south, north)``.

Each tile is stored on its own 10 m UTM grid (EPSG:326NN north of the equator, 327NN
south; the zone is that of the cell's centre). The expected grid of a tile is the
bounding box of its projected cell, snapped outward to whole 10 m pixels, rows running
north to south. Release tiles carry their own grid (from the landmask GeoTIFF); every
function here takes a :class:`TileGrid`, whatever its origin.

Because the UTM bounding box is larger than the cell, edge pixels of a tile can have
their centres in a neighbour's cell. **A pixel belongs to the tile whose cell holds its
centre** (:func:`owned_mask`); other pixels of the grid are not that tile's to index,
label or export.

Pixel IDs
---------
A pixel ID is a non-negative 64-bit integer; this is the only place its layout is
defined::

    bit 63      : 0 (IDs are non-negative; faiss uses -1 for "no result")
    bits 55..62 : 0 (reserved)
    bits 43..54 : ix + 1800   (12 bits, 0..3599)   tile column on the 0.1 degree grid
    bits 32..42 : iy + 900    (11 bits, 0..1799)   tile row on the 0.1 degree grid
    bits 16..31 : row         (16 bits, 0..65535)  pixel row in the tile's UTM grid
    bits  0..15 : col         (16 bits, 0..65535)  pixel column in the tile's UTM grid

IDs depend only on (tile, row, col), never on build order, so shards built anywhere
agree. The year is not in the ID: an index is per year.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import InvalidBBoxError, InvalidInputError, InvalidPointError, InvalidTileNameError

__all__ = [
    "PIXEL_SIZE",
    "Tile",
    "TileGrid",
    "centred_window",
    "expected_grid",
    "lonlat_to_pixel",
    "owned_mask",
    "pack_ids",
    "parse_bbox",
    "parse_point",
    "pixel_to_lonlat",
    "tile_for_point",
    "tile_id_prefix",
    "tiles_in_bbox",
    "from_utm",
    "to_utm",
    "unpack_ids",
    "utm_epsg",
]

PIXEL_SIZE = 10.0  # metres
_IX_MIN, _IX_MAX = -1800, 1799
_IY_MIN, _IY_MAX = -900, 899
_NAME_RE = re.compile(r"^grid_(-?\d{1,3}\.\d{2})_(-?\d{1,2}\.\d{2})$")

# ID bit layout (see the module docstring).
_COL_BITS, _ROW_BITS, _IY_BITS, _IX_BITS = 16, 16, 11, 12
_ROW_SHIFT = _COL_BITS
_IY_SHIFT = _ROW_SHIFT + _ROW_BITS
_IX_SHIFT = _IY_SHIFT + _IY_BITS
MAX_ID = (1 << (_IX_SHIFT + _IX_BITS)) - 1


def _cell_index(value: float) -> int:
    """floor(value * 10), robust to binary representation (2.3 * 10 = 22.999...)."""
    return math.floor(round(value * 10.0, 9))


def _cell_indices(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised cell indices (ix, iy) of points, exactly as :func:`tile_for_point`.

    ``lon`` must already be in [-180, 180). A longitude within the 1e-10 degree snapping
    distance below 180 snaps to 180, which is -180 (ix -1800); latitudes snapping to 90
    stay in the top row (iy 899).
    """
    ix = np.floor(np.round(lon * 10.0, 9)).astype(np.int64)
    iy = np.floor(np.round(lat * 10.0, 9)).astype(np.int64)
    ix = np.where(ix > _IX_MAX, ix - 3600, ix)
    return ix, np.minimum(iy, _IY_MAX)


@dataclass(frozen=True, order=True)
class Tile:
    """One 0.1 degree cell, by integer index: lon in [ix/10, (ix+1)/10)."""

    ix: int
    iy: int

    def __post_init__(self) -> None:
        if not (_IX_MIN <= self.ix <= _IX_MAX and _IY_MIN <= self.iy <= _IY_MAX):
            raise InvalidTileNameError(f"tile index ({self.ix}, {self.iy}) is off the globe")

    @classmethod
    def from_name(cls, name: str) -> Tile:
        """Parse ``grid_36.85_-1.25``; anything not on the 0.05-centred grid fails."""
        m = _NAME_RE.match(name.strip())
        if not m:
            raise InvalidTileNameError(
                f"{name!r} is not a tile name; expected grid_LON_LAT with two decimals, "
                "e.g. grid_36.85_-1.25"
            )
        lon100, lat100 = round(float(m.group(1)) * 100), round(float(m.group(2)) * 100)
        if lon100 % 10 != 5 or lat100 % 10 != 5:
            raise InvalidTileNameError(
                f"{name!r} is not a tile centre: tile centres end in .x5, e.g. grid_36.85_-1.25"
            )
        return cls((lon100 - 5) // 10, (lat100 - 5) // 10)

    @property
    def lon(self) -> float:
        """Centre longitude, degrees."""
        return round((self.ix + 0.5) / 10.0, 2)

    @property
    def lat(self) -> float:
        """Centre latitude, degrees."""
        return round((self.iy + 0.5) / 10.0, 2)

    @property
    def name(self) -> str:
        return f"grid_{self.lon:.2f}_{self.lat:.2f}"

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the cell, degrees."""
        return (self.ix / 10.0, self.iy / 10.0, (self.ix + 1) / 10.0, (self.iy + 1) / 10.0)

    @property
    def epsg(self) -> int:
        """EPSG code of the UTM zone of the cell's centre."""
        return utm_epsg(self.lon, self.lat)

    def __str__(self) -> str:
        return self.name


def tile_for_point(lon: float, lat: float) -> Tile:
    """The tile whose cell holds (lon, lat); longitudes wrap, 180 is -180."""
    if not (math.isfinite(lon) and math.isfinite(lat)) or not -90.0 <= lat < 90.0:
        raise InvalidPointError(f"({lon}, {lat}) is not a point on the globe")
    lon = ((lon + 180.0) % 360.0) - 180.0
    ix = _cell_index(lon)
    # Just below 180 snaps to 180, which is -180: wrap, never clamp, so that the
    # point's tile is the one whose owned pixels hold it (see _cell_indices).
    ix = ix - 3600 if ix > _IX_MAX else ix
    return Tile(ix, min(_cell_index(lat), _IY_MAX))


def tiles_in_bbox(west: float, south: float, east: float, north: float) -> list[Tile]:
    """Tiles whose cells overlap the box with positive area, sorted west-east, south-north.

    A box edge that lies exactly on a cell edge does not select the cell beyond it.
    """
    ix0, ix1 = _cell_index(west), math.ceil(round(east * 10.0, 9)) - 1
    iy0, iy1 = _cell_index(south), math.ceil(round(north * 10.0, 9)) - 1
    ix0, ix1 = max(ix0, _IX_MIN), min(ix1, _IX_MAX)
    iy0, iy1 = max(iy0, _IY_MIN), min(iy1, _IY_MAX)
    return [Tile(ix, iy) for ix in range(ix0, ix1 + 1) for iy in range(iy0, iy1 + 1)]


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS84 UTM zone holding (lon, lat): 326NN north, 327NN south."""
    zone = int(math.floor((lon + 180.0) / 6.0)) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def parse_point(text: str) -> tuple[float, float]:
    """Parse ``LON,LAT`` (degrees)."""
    try:
        lon, lat = (float(v) for v in text.split(","))
    except ValueError:
        raise InvalidPointError(f"{text!r} is not LON,LAT, e.g. 36.8,-1.3") from None
    if not (math.isfinite(lon) and math.isfinite(lat)) or not (
        -180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0
    ):
        raise InvalidPointError(f"{text!r}: longitude must be in [-180, 180], latitude in [-90, 90]")
    return lon, lat


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """Parse ``W,S,E,N`` (degrees) with W < E and S < N."""
    try:
        w, s, e, n = (float(v) for v in text.split(","))
    except ValueError:
        raise InvalidBBoxError(f"{text!r} is not W,S,E,N, e.g. 36.7,-1.4,36.9,-1.2") from None
    if not all(math.isfinite(v) for v in (w, s, e, n)):
        raise InvalidBBoxError(f"{text!r} has a non-finite value")
    if not (-180.0 <= w < e <= 180.0 and -90.0 <= s < n <= 90.0):
        raise InvalidBBoxError(
            f"{text!r}: need -180 <= W < E <= 180 and -90 <= S < N <= 90 "
            "(a box across the antimeridian is two boxes)"
        )
    return w, s, e, n


@dataclass(frozen=True)
class TileGrid:
    """A tile's pixel grid: CRS, north-up affine transform and shape.

    ``transform`` is the GDAL/affine 6-tuple ``(a, b, c, d, e, f)``: x = a*col + c,
    y = e*row + f for pixel corners (b = d = 0), units metres.
    """

    tile: Tile
    epsg: int
    transform: tuple[float, float, float, float, float, float]
    height: int
    width: int

    def __post_init__(self) -> None:
        a, b, _, d, e, _ = self.transform
        if b != 0 or d != 0 or a <= 0 or e >= 0:
            raise InvalidInputError("a tile grid must be north-up with square-ish pixels")
        if self.height <= 0 or self.width <= 0:
            raise InvalidInputError(f"a tile grid needs a positive shape, got {self.shape}")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) in the grid's CRS, metres."""
        a, _, c, _, e, f = self.transform
        return (c, f + e * self.height, c + a * self.width, f)

    def affine(self):
        """The transform as an ``affine.Affine`` (rasterio's type)."""
        from affine import Affine

        return Affine(*self.transform)


@lru_cache(maxsize=128)
def to_utm(epsg: int):
    """The cached pyproj Transformer from WGS84 lon/lat to ``epsg`` (x, y order)."""
    from pyproj import Transformer

    return Transformer.from_crs(4326, epsg, always_xy=True)


@lru_cache(maxsize=128)
def from_utm(epsg: int):
    """The cached pyproj Transformer from ``epsg`` to WGS84 lon/lat (x, y order)."""
    from pyproj import Transformer

    return Transformer.from_crs(epsg, 4326, always_xy=True)


def expected_grid(tile: Tile, epsg: int | None = None) -> TileGrid:
    """The 10 m UTM grid of ``tile``: its projected cell's bounding box snapped outward."""
    epsg = tile.epsg if epsg is None else epsg
    w, s, e, n = tile.bounds
    t = np.linspace(0.0, 1.0, 41)
    lons = np.concatenate([w + (e - w) * t, np.full_like(t, e), e - (e - w) * t, np.full_like(t, w)])
    lats = np.concatenate([np.full_like(t, s), s + (n - s) * t, np.full_like(t, n), n - (n - s) * t])
    xs, ys = to_utm(epsg).transform(lons, lats)
    xmin = math.floor(xs.min() / PIXEL_SIZE) * PIXEL_SIZE
    xmax = math.ceil(xs.max() / PIXEL_SIZE) * PIXEL_SIZE
    # A pixel row holds y in (bottom, top] (rows run down, rows = floor), so a cell's
    # south edge lying exactly on the lattice (the equator in a northern zone, y = 0)
    # needs one more row below, or points on the edge fall outside their tile's grid.
    ymin = (math.ceil(ys.min() / PIXEL_SIZE) - 1) * PIXEL_SIZE
    ymax = math.ceil(ys.max() / PIXEL_SIZE) * PIXEL_SIZE
    width = int(round((xmax - xmin) / PIXEL_SIZE))
    height = int(round((ymax - ymin) / PIXEL_SIZE))
    return TileGrid(tile, epsg, (PIXEL_SIZE, 0.0, xmin, 0.0, -PIXEL_SIZE, ymax), height, width)


def centred_window(grid: TileGrid, height: int, width: int) -> TileGrid:
    """A (height, width) window centred in ``grid``: the same CRS and 10 m lattice (tests and
    benchmarks use such windows of a tile's real grid to stay small)."""
    r0, c0 = (grid.height - height) // 2, (grid.width - width) // 2
    a, b, c, d, e, f = grid.transform
    return TileGrid(grid.tile, grid.epsg, (a, b, c + a * c0, d, e, f + e * r0), height, width)


def pixel_to_lonlat(grid: TileGrid, rows, cols) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat (degrees, lon in [-180, 180)) of pixel centres; rows/cols broadcast."""
    a, _, c, _, e, f = grid.transform
    x, y = np.broadcast_arrays(
        c + a * (np.asarray(cols, dtype=np.float64) + 0.5),
        f + e * (np.asarray(rows, dtype=np.float64) + 0.5),
    )
    lon, lat = from_utm(grid.epsg).transform(np.ascontiguousarray(x), np.ascontiguousarray(y))
    lon = np.asarray(lon, dtype=np.float64).reshape(x.shape)
    lon = np.where(lon >= 180.0, lon - 360.0, lon)
    return lon, np.asarray(lat, dtype=np.float64).reshape(x.shape)


def lonlat_to_pixel(grid: TileGrid, lon, lat) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, inside) of the pixels holding the points; row/col are -1 outside the grid."""
    lon, lat = np.broadcast_arrays(np.asarray(lon, np.float64), np.asarray(lat, np.float64))
    x, y = to_utm(grid.epsg).transform(np.ascontiguousarray(lon), np.ascontiguousarray(lat))
    x, y = np.asarray(x).reshape(lon.shape), np.asarray(y).reshape(lon.shape)
    a, _, c, _, e, f = grid.transform
    col = np.floor((np.asarray(x) - c) / a).astype(np.int64)
    row = np.floor((np.asarray(y) - f) / e).astype(np.int64)
    inside = (row >= 0) & (row < grid.height) & (col >= 0) & (col < grid.width)
    return np.where(inside, row, -1), np.where(inside, col, -1), inside


def owned_mask(grid: TileGrid) -> np.ndarray:
    """(H, W) bool: pixels whose centre lies in the grid's own 0.1 degree cell."""
    return _owned_mask_cached(grid).copy()


@lru_cache(maxsize=16)
def _owned_mask_cached(grid: TileGrid) -> np.ndarray:
    lon, lat = _pixel_centres(grid)
    ix, iy = _cell_indices(lon, lat)
    mask = (ix == grid.tile.ix) & (iy == grid.tile.iy)
    mask.setflags(write=False)
    return mask


@lru_cache(maxsize=2)
def _pixel_centres(grid: TileGrid) -> tuple[np.ndarray, np.ndarray]:
    """Read-only (H, W) float64 lon, lat (degrees) of every pixel centre of ``grid``.

    Cached for the last two grids (about 20 MB each for a 1,100 x 1,100 tile): the
    projection is most of the cost of :func:`owned_mask`, and region masks
    (:meth:`tessera_search.regions.Region.mask`) need the same coordinates next.
    """
    rows = np.arange(grid.height)[:, None]
    cols = np.arange(grid.width)[None, :]
    lon, lat = pixel_to_lonlat(grid, rows, cols)
    lon.setflags(write=False)
    lat.setflags(write=False)
    return lon, lat


def pack_ids(ix, iy, row, col) -> np.ndarray:
    """Pack (tile ix, tile iy, row, col) into int64 pixel IDs (layout: module docstring)."""
    ix, iy, row, col = (_int64(v, "tile index, row or column") for v in (ix, iy, row, col))
    if (
        np.any((ix < _IX_MIN) | (ix > _IX_MAX))
        or np.any((iy < _IY_MIN) | (iy > _IY_MAX))
        or np.any((row < 0) | (row >= 1 << _ROW_BITS))
        or np.any((col < 0) | (col >= 1 << _COL_BITS))
    ):
        raise ValueError("tile index, row or column out of the pixel-ID range")
    return (
        ((ix - _IX_MIN) << _IX_SHIFT) | ((iy - _IY_MIN) << _IY_SHIFT) | (row << _ROW_SHIFT) | col
    )


def unpack_ids(ids) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_ids`: (ix, iy, row, col) int64 arrays."""
    ids = _int64(ids, "not a pixel ID")
    if np.any((ids < 0) | (ids > MAX_ID)):
        raise ValueError("not a pixel ID (negative or beyond the layout)")
    ix = ((ids >> _IX_SHIFT) & ((1 << _IX_BITS) - 1)) + _IX_MIN
    iy = ((ids >> _IY_SHIFT) & ((1 << _IY_BITS) - 1)) + _IY_MIN
    # 12 and 11 bits hold more than 3600 columns and 1800 rows of tiles: the rest
    # are not IDs pack_ids can make.
    if np.any(ix > _IX_MAX) or np.any(iy > _IY_MAX):
        raise ValueError("not a pixel ID (tile index beyond the 0.1 degree grid)")
    row = (ids >> _ROW_SHIFT) & ((1 << _ROW_BITS) - 1)
    col = ids & ((1 << _COL_BITS) - 1)
    return ix, iy, row, col


def _int64(values, what: str) -> np.ndarray:
    """``values`` as int64; integers beyond int64 are out of range (ValueError, not OverflowError)."""
    try:
        return np.asarray(values, dtype=np.int64)
    except OverflowError:
        raise ValueError(f"{what} out of the pixel-ID range (beyond 64 bits)") from None


def tile_id_prefix(tile: Tile) -> int:
    """The ID bits of a tile alone: ``pack_ids(tile, 0, 0)``."""
    return int(pack_ids(tile.ix, tile.iy, 0, 0))
