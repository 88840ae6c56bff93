"""Property tests for tessera_search.grid: tile names, points, pixels, ownership, pixel IDs.

Special places are always tried (``@example``): the antimeridian (ix 1799 / -1800), the
equator (iy -1 / 0), UTM zone boundaries (lon multiples of 6), the UTM latitude limits
(+-84) and the poles' rows (iy 899 / -900). Hypothesis adds random cases on top; example
counts stay small because every grid is a pyproj projection.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pyproj import Geod

from tessera_search.errors import InvalidBBoxError, InvalidPointError, InvalidTileNameError
from tessera_search.grid import (
    MAX_ID,
    PIXEL_SIZE,
    Tile,
    expected_grid,
    lonlat_to_pixel,
    owned_mask,
    pack_ids,
    parse_bbox,
    parse_point,
    pixel_to_lonlat,
    tile_for_point,
    tile_id_prefix,
    tiles_in_bbox,
    unpack_ids,
    utm_epsg,
)

IX = st.integers(-1800, 1799)
IY = st.integers(-900, 899)
TILES = st.builds(Tile, IX, IY)
# Latitudes where UTM is defined as a map projection (it still computes beyond).
UTM_IY = st.integers(-840, 839)
ROWS = st.integers(0, 65535)

FAST = settings(max_examples=150, deadline=None)
GRIDS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEAVY = settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# (ix, iy) of the places every grid property must also hold at.
SPECIAL = [
    (1799, 0),  # east of it the antimeridian
    (-1800, -1),  # west of it the antimeridian, south of the equator
    (59, 0),  # zone 31, lon 6 (zone boundary) on its east edge, equator on its south edge
    (60, -1),  # zone 32, zone boundary on its west edge
    (-1, 839),  # UTM's northern limit (84N) on its north edge
    (-1, -840),  # UTM's southern limit (84S... and beyond: 80S is UTM's official end)
    (0, 899),  # the north pole's row
    (1799, -900),  # the south pole's row, at the antimeridian
]

NAME_RE = re.compile(r"^grid_-?\d{1,3}\.\d5_-?\d{1,2}\.\d5$")


def with_special(**other):
    """Make a ``@given(tile=..., **other)`` test also run on every SPECIAL tile."""

    def decorate(test):
        for ix, iy in SPECIAL:
            test = example(tile=Tile(ix, iy), **other)(test)
        return test

    return decorate


# ----------------------------------------------------------------------------- tile names


@FAST
@with_special()
@given(tile=TILES)
def test_tile_name_round_trip(tile):
    name = tile.name
    assert NAME_RE.match(name)
    assert Tile.from_name(name) == tile
    assert Tile.from_name(f"  {name} ") == tile
    w, s, e, n = tile.bounds
    assert w < tile.lon < e and s < tile.lat < n
    assert e - w == pytest.approx(0.1) and n - s == pytest.approx(0.1)
    assert str(tile) == name


@FAST
@given(text=st.text(max_size=30))
@example(text="grid_36.80_-1.25")
@example(text="grid_180.05_0.05")
@example(text="grid_0.05_90.05")
@example(text="grid_36.85_-1.2")
@example(text="grid_-0.00_0.05")
@example(text="grid_36.85_-1.25_scales")
def test_tile_name_parser_accepts_only_tile_centres(text):
    try:
        tile = Tile.from_name(text)
    except InvalidTileNameError:
        return
    assert tile.name == text.strip()


@pytest.mark.parametrize(
    ("ix", "iy"), [(1800, 0), (-1801, 0), (0, 900), (0, -901)]
)
def test_tiles_off_the_globe_are_rejected(ix, iy):
    with pytest.raises(InvalidTileNameError):
        Tile(ix, iy)


# ----------------------------------------------------------------------------- points


def _in_cell(tile: Tile, lon: float, lat: float) -> bool:
    """The cell holds the point, with grid.py's 1e-10 degree snapping tolerance."""
    w, s, e, n = tile.bounds
    tol = 1e-9
    lon_ok = w - tol <= lon < e + tol or (tile.ix == -1800 and lon >= 180.0 - tol)
    return lon_ok and s - tol <= lat < n + tol


@FAST
@given(
    lon=st.floats(-180.0, 180.0, allow_nan=False),
    lat=st.floats(-90.0, 90.0, exclude_max=True, allow_nan=False),
)
@example(lon=180.0, lat=0.0)
@example(lon=-180.0, lat=-0.0)
@example(lon=179.99999999999, lat=0.0)
@example(lon=6.0, lat=0.0)
@example(lon=5.999999999999999, lat=-1e-300)
@example(lon=0.0, lat=89.99999999999)
@example(lon=2.3, lat=-1.3)
def test_point_to_tile_cell_contains_point(lon, lat):
    tile = tile_for_point(lon, lat)
    assert _in_cell(tile, lon, lat)
    # The tile is also the one holding the same point one turn round the globe.
    assert tile_for_point(lon - 360.0, lat) == tile or abs(lon) >= 179.999999


@FAST
@with_special()
@given(tile=TILES)
def test_tile_centre_and_corners_map_to_the_tile(tile):
    w, s, e, n = tile.bounds
    assert tile_for_point(tile.lon, tile.lat) == tile
    assert tile_for_point(w, s) == tile  # cells are half-open: the SW corner is in
    assert tile_for_point(e - 1e-7, n - 1e-7) == tile
    if tile.ix < 1799:
        assert tile_for_point(e, tile.lat) == Tile(tile.ix + 1, tile.iy)  # east edge is out
    else:
        assert tile_for_point(e, tile.lat) == Tile(-1800, tile.iy)


@pytest.mark.parametrize(
    ("lon", "lat"), [(0.0, 90.0), (0.0, -90.1), (math.nan, 0.0), (0.0, math.inf), (math.inf, 0.0)]
)
def test_point_off_the_globe_is_rejected(lon, lat):
    with pytest.raises(InvalidPointError):
        tile_for_point(lon, lat)


@FAST
@given(lon=st.floats(-180.0, 180.0, allow_nan=False), lat=st.floats(-90.0, 90.0, allow_nan=False))
def test_utm_zone_of_a_point(lon, lat):
    epsg = utm_epsg(lon, lat)
    zone = epsg % 100
    assert (epsg // 100) == (326 if lat >= 0 else 327)
    assert 1 <= zone <= 60
    # (lon + 180) / 6 rounds (-1e-57 lands in zone 31, 179.99999999999997 in zone 1):
    # the zone is exact up to float rounding, no more.
    assert zone in {_exact_zone(lon - 1e-9), _exact_zone(lon), _exact_zone(lon + 1e-9)}


def _exact_zone(lon: float) -> int:
    return int((Fraction(lon) + 180) // 6) % 60 + 1


@pytest.mark.parametrize("k", range(-30, 30))
def test_zone_boundaries_fall_on_cell_edges(k):
    # lon = 6k is a zone boundary and a cell edge: the cells either side are in
    # neighbouring zones, and no cell straddles two zones.
    east, west = Tile(60 * k, 10), Tile((60 * k - 1 + 1800) % 3600 - 1800, 10)
    assert east.epsg == 32600 + (k + 30) % 60 + 1
    assert west.epsg == 32600 + (k + 29) % 60 + 1
    assert utm_epsg(*east.bounds[:2]) == east.epsg
    assert Tile(60 * k, -1).epsg == 32700 + (k + 30) % 60 + 1  # south of the equator


# ----------------------------------------------------------------------------- pixels


@GRIDS
@with_special(seed=0)
@given(tile=TILES, seed=st.integers(0, 2**32 - 1))
def test_pixel_to_lonlat_to_pixel_is_identity(tile, seed):
    grid = expected_grid(tile)
    assert grid.epsg == tile.epsg
    a, _, c, _, e, f = grid.transform
    assert a == PIXEL_SIZE and e == -PIXEL_SIZE
    assert c % PIXEL_SIZE == 0 and f % PIXEL_SIZE == 0  # every grid of a zone shares one lattice
    rng = np.random.default_rng(seed)
    rows = np.r_[0, 0, grid.height - 1, grid.height - 1, rng.integers(0, grid.height, 400)]
    cols = np.r_[0, grid.width - 1, 0, grid.width - 1, rng.integers(0, grid.width, 400)]
    lon, lat = pixel_to_lonlat(grid, rows, cols)
    assert np.isfinite(lon).all() and np.isfinite(lat).all()
    assert (lon >= -180.0).all() and (lon < 180.0).all()
    back_rows, back_cols, inside = lonlat_to_pixel(grid, lon, lat)
    assert inside.all()
    np.testing.assert_array_equal(back_rows, rows)
    np.testing.assert_array_equal(back_cols, cols)


@GRIDS
@with_special()
@given(tile=TILES)
def test_expected_grid_covers_its_cell(tile):
    grid = expected_grid(tile)
    w, s, e, n = tile.bounds
    # Points along the cell's edges, the open east and north edges just inside.
    t = np.linspace(0.0, 1.0 - 1e-8, 7)
    lon = np.r_[w + (e - w) * t, np.full(7, e - 1e-9), w + (e - w) * t, np.full(7, w)]
    lat = np.r_[np.full(7, s), s + (n - s) * t, np.full(7, n - 1e-9), s + (n - s) * t]
    lon = np.where(lon >= 180.0, lon - 360.0, lon)
    # The south pole is one point with every longitude (and every -900 row tile):
    # UTM puts it on the central meridian, outside most of those tiles' grids.
    keep = lat > -90.0
    _, _, inside = lonlat_to_pixel(grid, lon[keep], lat[keep])
    assert inside.all()


def test_points_outside_a_grid_are_flagged():
    grid = expected_grid(Tile.from_name("grid_36.85_-1.25"))
    rows, cols, inside = lonlat_to_pixel(grid, [36.85, 37.5, 36.85], [-1.25, -1.25, -2.0])
    assert inside.tolist() == [True, False, False]
    assert rows[1:].tolist() == [-1, -1] and cols[1:].tolist() == [-1, -1]


# ----------------------------------------------------------------------------- ownership


def _cell_area_m2(tile: Tile) -> float:
    w, s, e, n = tile.bounds
    t = np.linspace(0.0, 1.0, 21)
    lons = np.r_[w + (e - w) * t, np.full(21, e), e - (e - w) * t, np.full(21, w)]
    lats = np.r_[np.full(21, s), s + (n - s) * t, np.full(21, n), n - (n - s) * t]
    area, _ = Geod(ellps="WGS84").polygon_area_perimeter(lons, lats)
    return abs(area)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@with_special(seed=0)
@given(tile=TILES, seed=st.integers(0, 2**32 - 1))
def test_owned_pixels_have_centres_in_the_cell(tile, seed):
    grid = expected_grid(tile)
    owned = owned_mask(grid)
    assert owned.shape == grid.shape and owned.dtype == bool
    assert owned.any() and not owned.all()  # the UTM box is bigger than the cell
    owned[0, 0] = not owned[0, 0]  # a copy: callers cannot spoil the cache
    assert owned_mask(grid)[0, 0] != owned[0, 0]
    owned = owned_mask(grid)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, grid.height, 300)
    cols = rng.integers(0, grid.width, 300)
    lon, lat = pixel_to_lonlat(grid, rows, cols)
    for r, c, x, y in zip(rows, cols, lon, lat, strict=True):
        assert owned[r, c] == (tile_for_point(x, y) == tile)
    if abs(tile.lat) < 84:
        # 10 m pixels tile the cell: owned pixels cover its area, up to UTM's scale
        # error (< 0.2% in area) and pixels along the cell's edges.
        assert owned.sum() * PIXEL_SIZE**2 == pytest.approx(_cell_area_m2(tile), rel=0.01)


def _lattice_keys(grid, rows, cols) -> np.ndarray:
    """One int64 per pixel centre of a zone's shared 10 m lattice (x index, y index)."""
    _, _, c, _, _, f = grid.transform
    x_index = np.int64(round(c / PIXEL_SIZE)) + np.asarray(cols, np.int64)
    y_index = np.int64(round(f / PIXEL_SIZE)) - np.asarray(rows, np.int64)
    return x_index * 10_000_000 + y_index


def _neighbours(tile: Tile) -> list[Tile]:
    out = []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            iy = tile.iy + dy
            if -900 <= iy <= 899:
                out.append(Tile((tile.ix + dx + 1800) % 3600 - 1800, iy))
    return out


@HEAVY
@example(tile=Tile(59, 0), seed=1)  # zone boundary east, equator (and a CRS change) south
@example(tile=Tile(1799, 300), seed=2)  # the antimeridian (and a zone change) east
@given(tile=st.builds(Tile, IX, UTM_IY), seed=st.integers(0, 2**32 - 1))
def test_owned_pixels_of_neighbours_partition_space(tile, seed):
    """Each pixel centre of a zone's lattice is owned by exactly one tile: its point's tile."""
    same_zone = [t for t in _neighbours(tile) if t.epsg == tile.epsg]
    grids = {t: expected_grid(t) for t in same_zone}
    owned_keys = {}  # tile -> sorted lattice keys of its owned pixels
    for t, grid in grids.items():
        rows, cols = np.nonzero(owned_mask(grid))
        owned_keys[t] = np.sort(_lattice_keys(grid, rows, cols))
    everything = np.sort(np.concatenate(list(owned_keys.values())))
    assert (np.diff(everything) != 0).all()  # no pixel centre owned twice
    # Every pixel centre of this tile's grid is owned by the tile holding its point,
    # and by no other tile of the same zone.
    grid = grids[tile]
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, grid.height, 400)
    cols = rng.integers(0, grid.width, 400)
    keys = _lattice_keys(grid, rows, cols)
    held = {t: _isin_sorted(keys, k) for t, k in owned_keys.items()}
    lon, lat = pixel_to_lonlat(grid, rows, cols)
    for i, (x, y) in enumerate(zip(lon, lat, strict=True)):
        owner = tile_for_point(x, y)
        holders = [t for t, h in held.items() if h[i]]
        assert holders == ([owner] if owner in owned_keys else [])
        if owner.epsg == tile.epsg and owner not in owned_keys:
            pytest.fail(f"{owner} shares the zone but is not a neighbour of {tile}")


def _isin_sorted(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    pos = np.minimum(np.searchsorted(sorted_keys, values), sorted_keys.size - 1)
    return sorted_keys[pos] == values


def test_a_point_just_below_180_is_owned_by_the_tile_it_maps_to():
    # Regression: 179.99999999999 snaps to 180 (= -180); it used to be clamped to
    # ix 1799 by tile_for_point while owned_mask gave it to no tile at all.
    assert tile_for_point(179.99999999999, 0.05) == Tile(-1800, 0)
    assert tile_for_point(-180.0, 0.05) == Tile(-1800, 0)
    assert tile_for_point(180.0, 0.05) == Tile(-1800, 0)


# ----------------------------------------------------------------------------- pixel IDs


@FAST
@given(ix=IX, iy=IY, row=ROWS, col=ROWS)
@example(ix=-1800, iy=-900, row=0, col=0)
@example(ix=1799, iy=899, row=65535, col=65535)
def test_pack_unpack_round_trip(ix, iy, row, col):
    pid = pack_ids(ix, iy, row, col)
    assert pid.dtype == np.int64 and 0 <= int(pid) <= MAX_ID
    assert [int(v) for v in unpack_ids(pid)] == [ix, iy, row, col]
    assert int(pid) >> 32 == tile_id_prefix(Tile(ix, iy)) >> 32


@FAST
@given(
    a=st.tuples(IX, IY, ROWS, ROWS),
    b=st.tuples(IX, IY, ROWS, ROWS),
)
def test_ids_differ_and_sort_like_their_fields(a, b):
    assume(a != b)
    ida, idb = int(pack_ids(*a)), int(pack_ids(*b))
    assert ida != idb
    assert (ida < idb) == (a < b)  # sorting IDs sorts by tile, then row, then column


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 500))
def test_pack_unpack_arrays(seed, n):
    rng = np.random.default_rng(seed)
    fields = [
        rng.integers(-1800, 1800, n),
        rng.integers(-900, 900, n),
        rng.integers(0, 65536, n),
        rng.integers(0, 65536, n),
    ]
    ids = pack_ids(*fields)
    assert ids.shape == (n,) and ids.dtype == np.int64
    for got, want in zip(unpack_ids(ids), fields, strict=True):
        np.testing.assert_array_equal(got, want)


@FAST
@given(
    field=st.sampled_from(["ix", "iy", "row", "col"]),
    value=st.one_of(st.integers(max_value=-1801), st.integers(min_value=65536)),
)
@example(field="ix", value=1800)
@example(field="iy", value=900)
@example(field="iy", value=-901)
@example(field="row", value=-1)
@example(field="col", value=-1)
def test_pack_rejects_out_of_range(field, value):
    args = {"ix": 0, "iy": 0, "row": 0, "col": 0, field: value}
    with pytest.raises(ValueError, match="out of the pixel-ID range"):
        pack_ids(**args)
    with pytest.raises(ValueError):
        pack_ids(**{**args, field: [0, value]})


@FAST
@given(value=st.one_of(st.integers(-(2**63), -1), st.integers(MAX_ID + 1, 2**63 - 1)))
@example(value=-1)  # faiss' "no result"
@example(value=MAX_ID + 1)
@example(value=(3600 << 43))  # ix field 3600: one column past the grid
@example(value=(1800 << 32))  # iy field 1800: one row past the grid
@example(value=(4095 << 43) | (2047 << 32))
def test_unpack_rejects_what_pack_cannot_make(value):
    with pytest.raises(ValueError, match="not a pixel ID"):
        unpack_ids(value)
    with pytest.raises(ValueError, match="not a pixel ID"):
        unpack_ids(np.array([0, value], dtype=np.int64))


# ----------------------------------------------------------------------------- parsing


@FAST
@given(lon=st.floats(-180.0, 180.0), lat=st.floats(-90.0, 90.0))
def test_parse_point_round_trip(lon, lat):
    assert parse_point(f"{lon!r},{lat!r}") == (lon, lat)
    assert parse_point(f" {lon!r} , {lat!r} ") == (lon, lat)


@FAST
@given(text=st.text(max_size=40))
@example(text="")
@example(text="36.8")
@example(text="36.8,-1.3,0")
@example(text="nan,0")
@example(text="0,inf")
@example(text="180.0000001,0")
@example(text="0,-90.5")
@example(text="36.8;-1.3")
def test_parse_point_accepts_only_points_on_the_globe(text):
    try:
        lon, lat = parse_point(text)
    except InvalidPointError:
        return
    assert -180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0


@FAST
@given(text=st.text(max_size=40))
@example(text="")
@example(text="36.7,-1.4,36.9")
@example(text="36.9,-1.4,36.7,-1.2")  # W > E
@example(text="36.7,-1.2,36.9,-1.2")  # S == N
@example(text="-181,0,1,1")
@example(text="0,0,1,91")
@example(text="0,nan,1,1")
@example(text="170,0,-170,1")  # across the antimeridian: two boxes
def test_parse_bbox_accepts_only_proper_boxes(text):
    try:
        w, s, e, n = parse_bbox(text)
    except InvalidBBoxError:
        return
    assert -180.0 <= w < e <= 180.0 and -90.0 <= s < n <= 90.0


@FAST
@given(
    w=st.floats(-180.0, 179.0),
    s=st.floats(-90.0, 89.0),
    dw=st.floats(1e-6, 1.0),
    ds=st.floats(1e-6, 1.0),
)
def test_parse_bbox_round_trip(w, s, dw, ds):
    e, n = min(w + dw, 180.0), min(s + ds, 90.0)
    assume(w < e and s < n)
    assert parse_bbox(f"{w!r},{s!r},{e!r},{n!r}") == (w, s, e, n)


# ----------------------------------------------------------------------------- bbox tiles

# Box edges on the 0.05 degree lattice hit cell edges (and centres) exactly.
EDGE = st.integers(-3600, 3599).map(lambda k: k / 20.0)


@FAST
@given(
    w=st.one_of(EDGE, st.floats(-180.0, 179.0)),
    s=st.one_of(EDGE.filter(lambda v: v < 89.0), st.floats(-90.0, 89.0)),
    dw=st.one_of(st.integers(1, 12).map(lambda k: k / 20.0), st.floats(1e-3, 0.6)),
    ds=st.one_of(st.integers(1, 12).map(lambda k: k / 20.0), st.floats(1e-3, 0.6)),
)
@example(w=36.7, s=-1.4, dw=0.2, ds=0.2)
@example(w=179.9, s=0.0, dw=0.1, ds=0.1)
@example(w=-180.0, s=-90.0, dw=0.1, ds=0.1)
def test_tiles_in_bbox_are_the_cells_overlapping_it_with_area(w, s, dw, ds):
    e, n = min(w + dw, 180.0), min(s + ds, 90.0)
    assume(e - w > 1e-6 and n - s > 1e-6)
    # an edge a hair off a cell edge (under 1e-8 degrees, a millimetre) is where float
    # rounding decides; tiles_in_bbox snaps those, the brute force below cannot tell
    assume(not any(0.0 < abs(v * 10.0 - round(v * 10.0)) < 1e-7 for v in (w, s, e, n)))
    got = tiles_in_bbox(w, s, e, n)
    assert got == sorted(set(got))
    # Brute force over a margin of cells: overlap in both axes with positive length.
    expected = []
    for ix in range(max(math.floor(w * 10) - 1, -1800), min(math.floor(e * 10) + 1, 1799) + 1):
        for iy in range(max(math.floor(s * 10) - 1, -900), min(math.floor(n * 10) + 1, 899) + 1):
            cw, cs, ce, cn = Tile(ix, iy).bounds
            if min(e, ce) - max(w, cw) > 1e-9 and min(n, cn) - max(s, cs) > 1e-9:
                expected.append(Tile(ix, iy))
    assert got == sorted(expected)
