"""Tests for tessera_search.regions: countries, bboxes, GeoJSON files, explicit tiles, masks.

Reference answers come from a brute-force definition (every cell of a window,
``area(cell & region) > 0``) and from shapely point-in-polygon tests, never from the
code under test.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import shapely

from tessera_search.errors import (
    InvalidBBoxError,
    InvalidInputError,
    InvalidTileNameError,
    UnknownRegionError,
)
from tessera_search.grid import (
    Tile,
    expected_grid,
    owned_mask,
    pixel_to_lonlat,
    tile_for_point,
    tiles_in_bbox,
)
from tessera_search.regions import (
    Region,
    country,
    list_countries,
    resolve_region,
    tiles_for_geometry,
)

NAIROBI = Tile.from_name("grid_36.85_-1.25")


@pytest.fixture(scope="module")
def kenya() -> Region:
    return resolve_region(region="kenya")


def _reference_tiles(geom, ix0: int, ix1: int, iy0: int, iy1: int) -> set[Tile]:
    """Brute force: cells of the window whose intersection with ``geom`` has area > 0."""
    gx, gy = np.meshgrid(np.arange(ix0, ix1 + 1), np.arange(iy0, iy1 + 1), indexing="ij")
    gx, gy = gx.ravel(), gy.ravel()
    boxes = shapely.box(gx / 10, gy / 10, (gx + 1) / 10, (gy + 1) / 10)
    area = shapely.area(shapely.intersection(geom, boxes))
    return {Tile(int(x), int(y)) for x, y in zip(gx[area > 0], gy[area > 0], strict=True)}


def _in_window(tiles, ix0: int, ix1: int, iy0: int, iy1: int) -> set[Tile]:
    return {t for t in tiles if ix0 <= t.ix <= ix1 and iy0 <= t.iy <= iy1}


def _write(tmp_path, name: str, obj) -> str:
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return str(path)


def _square(w, s, e, n) -> list:
    return [[[w, s], [e, s], [e, n], [w, n], [w, s]]]


# ----------------------------------------------------------------------------- countries


def test_kenya_selects_thousands_of_tiles_but_not_its_bounding_box(kenya):
    assert kenya.name == "Kenya (KEN)"
    assert 3000 < len(kenya.tiles) < 8000
    assert len(kenya.tiles) < 0.8 * len(tiles_in_bbox(*kenya.geometry.bounds))
    assert list(kenya.tiles) == sorted(set(kenya.tiles))


def test_kenya_known_inside_and_outside_tiles(kenya):
    assert NAIROBI in kenya.tiles
    uganda = resolve_region(region="uganda")
    # Well inside the Ugandan part of Lake Victoria: Uganda's, not Kenya's.
    lake_uganda = tile_for_point(32.95, -0.45)
    assert lake_uganda not in kenya.tiles
    assert lake_uganda in uganda.tiles
    assert shapely.contains(uganda.geometry, shapely.box(*lake_uganda.bounds))
    # Mombasa is in, Kampala and Addis Ababa are not.
    assert tile_for_point(39.66, -4.05) in kenya.tiles
    assert tile_for_point(32.58, 0.35) not in kenya.tiles
    assert tile_for_point(38.75, 9.03) not in kenya.tiles


@pytest.mark.parametrize(
    ("name", "window"),
    [
        ("rwanda", (287, 310, -30, -9)),
        ("luxembourg", (56, 66, 493, 502)),
        ("fiji", (1770, 1799, -200, -150)),  # west of the antimeridian
        ("fiji", (-1800, -1785, -200, -150)),  # east of it
    ],
)
def test_country_tiles_match_brute_force_positive_area(name, window):
    _, _, geom = country(name)
    expected = _reference_tiles(geom, *window)
    assert expected, "the window must hold part of the country"
    assert _in_window(tiles_for_geometry(geom), *window) == expected


def test_fiji_spans_the_antimeridian():
    fiji = resolve_region(region="FJI")
    ixs = {t.ix for t in fiji.tiles}
    assert 1799 in ixs and -1800 in ixs
    # Only tiles near the antimeridian (Fiji reaches 174.5E and 178.3W): no wrap-around box.
    assert all(abs(t.ix) >= 1740 for t in fiji.tiles)
    assert 100 < len(fiji.tiles) < 1000


@pytest.mark.parametrize(
    "query",
    ["kenya", "KENYA", "Kenya", " kenya ", "KEN", "ken", "KE", "ke", "Republic of Kenya"],
)
def test_country_names_and_codes_case_insensitive(query):
    name, iso3, geom = country(query)
    assert (name, iso3) == ("Kenya", "KEN")
    assert geom.geom_type in ("Polygon", "MultiPolygon") and geom.is_valid


@pytest.mark.parametrize(
    ("query", "iso3"),
    [
        ("Côte d'Ivoire", "CIV"),
        ("cote divoire", "CIV"),
        ("COTE D’IVOIRE", "CIV"),
        ("ivory coast", "CIV"),
        ("CI", "CIV"),
        ("france", "FRA"),  # ISO_A3 is -99 in Natural Earth
        ("FR", "FRA"),  # not Clipperton Island, whose ISO_A2_EH is also FR
        ("NO", "NOR"),
        ("norway", "NOR"),
        ("XK", "KOS"),
        ("south sudan", "SSD"),
        ("S. Sudan", "SSD"),
        ("united states of america", "USA"),
        ("US", "USA"),
        ("bosnia & herzegovina", "BIH"),
        ("Åland", "ALA"),
        ("aland", "ALA"),
        ("egypt", "EGY"),  # its Natural Earth polygon is invalid and gets repaired
    ],
)
def test_country_aliases(query, iso3):
    _, code, geom = country(query)
    assert code == iso3
    assert geom.is_valid and geom.area > 0


def test_unknown_country_suggests_close_names():
    with pytest.raises(UnknownRegionError) as info:
        country("kenia")
    assert "Kenya" in info.value.suggestions
    assert str(info.value).startswith("unknown region 'kenia'; did you mean: ")
    assert isinstance(info.value, InvalidInputError) and isinstance(info.value, ValueError)
    with pytest.raises(UnknownRegionError, match="did you mean: .*Germany"):
        resolve_region(region="germny")


def test_unknown_country_without_close_names_says_what_to_do():
    with pytest.raises(UnknownRegionError, match="bbox=") as info:
        country("qqqqqqqqqq")
    assert info.value.suggestions == []
    with pytest.raises(UnknownRegionError):
        country("  ")


def test_list_countries():
    countries = list_countries()
    assert ("Kenya", "KEN") in countries and ("France", "FRA") in countries
    assert len(countries) > 200
    codes = [code for _, code in countries]
    assert len(codes) == len(set(codes))
    for _, code in countries[::25]:
        assert country(code)[1] == code


# ----------------------------------------------------------------------------- bbox


def test_bbox_on_cell_edges_selects_exactly_the_cells_inside():
    region = resolve_region(bbox="36.7,-1.4,36.9,-1.2")
    assert region.name == "bbox 36.7,-1.4,36.9,-1.2"
    assert [t.name for t in region.tiles] == [
        "grid_36.75_-1.35",
        "grid_36.75_-1.25",
        "grid_36.85_-1.35",
        "grid_36.85_-1.25",
    ]
    # The geometric path agrees with the grid's bbox arithmetic.
    assert tiles_for_geometry(region.geometry) == list(region.tiles)


def test_bbox_inside_one_cell_and_bad_bbox():
    assert resolve_region(bbox="36.81,-1.29,36.82,-1.28").tiles == (NAIROBI,)
    with pytest.raises(InvalidBBoxError):
        resolve_region(bbox="36.9,-1.4,36.7,-1.2")
    with pytest.raises(InvalidBBoxError):
        resolve_region(bbox="kenya")


# ----------------------------------------------------------------------------- geometry rule


def test_edge_and_corner_touches_do_not_select():
    # A quarter of Nairobi's cell: touches the cells west and south along edges.
    assert tiles_for_geometry(shapely.box(36.8, -1.3, 36.85, -1.25)) == [NAIROBI]
    # The whole cell: touches all eight neighbours, selects only itself.
    assert tiles_for_geometry(shapely.box(*NAIROBI.bounds)) == [NAIROBI]
    # A diamond whose corners sit on the cell's edge midpoints... and one that pokes out.
    diamond = shapely.Polygon([(36.85, -1.3), (36.9, -1.25), (36.85, -1.2), (36.8, -1.25)])
    assert tiles_for_geometry(diamond) == [NAIROBI]
    poke = shapely.Polygon([(36.85, -1.3), (36.9001, -1.25), (36.85, -1.2), (36.8, -1.25)])
    assert tiles_for_geometry(poke) == [NAIROBI, Tile(NAIROBI.ix + 1, NAIROBI.iy)]
    # A triangle touching a neighbour only at a corner.
    tri = shapely.Polygon([(36.8, -1.3), (36.9, -1.3), (36.9, -1.2)])
    assert tiles_for_geometry(tri) == [NAIROBI]


def test_lines_points_and_empty_select_nothing():
    assert tiles_for_geometry(shapely.LineString([(36.8, -1.3), (37.5, -1.0)])) == []
    assert tiles_for_geometry(shapely.Point(36.85, -1.25)) == []
    assert tiles_for_geometry(shapely.Polygon()) == []


def test_tiles_for_geometry_matches_brute_force_on_a_jagged_polygon():
    rng = np.random.default_rng(7)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 60))
    radius = rng.uniform(0.2, 0.9, 60)
    poly = shapely.Polygon(np.c_[10 + radius * np.cos(angles), 45 + radius * np.sin(angles)])
    poly = shapely.make_valid(poly)
    assert _in_window(tiles_for_geometry(poly), 88, 112, 438, 462) == _reference_tiles(
        poly, 88, 112, 438, 462
    )


# ----------------------------------------------------------------------------- region files


@pytest.mark.parametrize(
    "doc",
    [
        {"type": "Polygon", "coordinates": _square(36.8, -1.3, 36.9, -1.2)},
        {"type": "MultiPolygon", "coordinates": [_square(36.8, -1.3, 36.9, -1.2)]},
        {
            "type": "Feature",
            "properties": {"name": "nairobi"},
            "geometry": {"type": "Polygon", "coordinates": _square(36.8, -1.3, 36.9, -1.2)},
        },
        {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "properties": {},
                    "geometry": {"type": "Polygon", "coordinates": _square(36.8, -1.3, 36.85, -1.2)},
                },
                {
                    "type": "Feature",
                    "properties": {},
                    "geometry": {"type": "Polygon", "coordinates": _square(36.85, -1.3, 36.9, -1.2)},
                },
            ],
        },
    ],
    ids=["Polygon", "MultiPolygon", "Feature", "FeatureCollection"],
)
def test_region_file_variants(tmp_path, doc):
    region = resolve_region(region_file=_write(tmp_path, "x.geojson", doc))
    assert region.name == "region file x.geojson"
    assert region.tiles == (NAIROBI,)  # the cell exactly: edge-touching neighbours left out
    assert region.geometry.area == pytest.approx(0.01)


def test_region_file_feature_collection_union(tmp_path):
    doc = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": sq}}
            for sq in (_square(36.81, -1.29, 36.82, -1.28), _square(37.01, -1.29, 37.02, -1.28))
        ],
    }
    region = resolve_region(region_file=_write(tmp_path, "two.geojson", doc))
    assert [t.name for t in region.tiles] == ["grid_36.85_-1.25", "grid_37.05_-1.25"]


def test_region_file_edge_touch_rule(tmp_path):
    # Two cells wide, its west edge on a cell edge: the cell to the west is not selected.
    doc = {"type": "Polygon", "coordinates": _square(36.8, -1.3, 37.0, -1.25)}
    region = resolve_region(region_file=_write(tmp_path, "strip.geojson", doc))
    assert [t.name for t in region.tiles] == ["grid_36.85_-1.25", "grid_36.95_-1.25"]


def test_region_file_invalid_polygon_is_repaired(tmp_path):
    bowtie = {"type": "Polygon", "coordinates": [[[36.8, -1.3], [36.9, -1.2], [36.9, -1.3], [36.8, -1.2], [36.8, -1.3]]]}
    region = resolve_region(region_file=_write(tmp_path, "bowtie.geojson", bowtie))
    assert region.geometry.is_valid and region.geometry.area == pytest.approx(0.005)
    assert region.tiles == (NAIROBI,)


def test_region_file_across_the_antimeridian_is_split(tmp_path):
    doc = {"type": "Polygon", "coordinates": _square(179.85, -17.0, 180.15, -16.9)}
    region = resolve_region(region_file=_write(tmp_path, "dateline.geojson", doc))
    assert [t.name for t in region.tiles] == [
        "grid_-179.95_-16.95",
        "grid_-179.85_-16.95",
        "grid_179.85_-16.95",
        "grid_179.95_-16.95",
    ]
    assert region.geometry.bounds[0] >= -180 and region.geometry.bounds[2] <= 180
    assert region.contains([179.9, -179.9, 180.1, 0.0], [-16.95] * 4).tolist() == [True, True, True, False]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a GeoJSON object"),
        ({"type": "Point", "coordinates": [36.8, -1.3]}, "is a Point"),
        ({"type": "LineString", "coordinates": [[36.8, -1.3], [36.9, -1.2]]}, "is a LineString"),
        ({"type": "Polygon", "coordinates": []}, "empty"),
        ({"type": "Polygon", "coordinates": [[[1, 2], [3]]]}, "bad coordinates"),
        ({"type": "FeatureCollection", "features": []}, "no features"),
        ({"type": "Feature", "properties": {}, "geometry": None}, "no geometry"),
        ({"type": "Polygon", "coordinates": _square(36.8, -1.3, 36.8, -1.2)}, "empty"),
        ({"type": "Polygon", "coordinates": _square(250000, 9800000, 260000, 9810000)}, "not lon/lat"),
        (
            {
                "type": "Polygon",
                "coordinates": _square(36.8, -1.3, 36.9, -1.2),
                "crs": {"type": "name", "properties": {"name": "EPSG:32737"}},
            },
            "WGS84",
        ),
    ],
)
def test_bad_region_files_name_the_file(tmp_path, content, match):
    path = _write(tmp_path, "bad.geojson", content)
    with pytest.raises(InvalidInputError, match=match) as info:
        resolve_region(region_file=path)
    assert "bad.geojson" in str(info.value)


def test_missing_region_file(tmp_path):
    with pytest.raises(InvalidInputError, match="nope.geojson"):
        resolve_region(region_file=tmp_path / "nope.geojson")


# ----------------------------------------------------------------------------- explicit tiles


def test_explicit_tiles():
    region = resolve_region(tiles=["grid_36.85_-1.25", "grid_36.75_-1.25", "grid_36.85_-1.25"])
    assert region.geometry is None
    assert [t.name for t in region.tiles] == ["grid_36.75_-1.25", "grid_36.85_-1.25"]
    assert region.name == "tiles grid_36.75_-1.25,grid_36.85_-1.25"
    assert resolve_region(tiles="grid_36.85_-1.25,grid_36.75_-1.25").tiles == region.tiles
    assert region.contains([36.81, 36.71, 36.91, 36.81], [-1.21, -1.21, -1.21, -1.31]).tolist() == [
        True,
        True,
        False,
        False,
    ]
    with pytest.raises(InvalidTileNameError, match="grid_36.8_-1.25"):
        resolve_region(tiles=["grid_36.8_-1.25"])


def test_explicit_tiles_contain_the_points_tile_for_point_gives_them():
    region = resolve_region(tiles=["grid_-179.95_0.05", "grid_179.95_0.05"])
    rng = np.random.default_rng(3)
    lon = np.r_[rng.uniform(179.8, 180.0, 300), rng.uniform(-180.0, -179.8, 300), 180.0, 179.99999999999]
    lat = np.r_[rng.uniform(-0.05, 0.25, 600), 0.05, 0.0]
    expected = [tile_for_point(x, y) in region.tiles for x, y in zip(lon, lat, strict=True)]
    assert region.contains(lon, lat).tolist() == expected
    assert region.contains(np.nan, 0.05).tolist() is False


def test_exactly_one_region_option():
    with pytest.raises(InvalidInputError, match="no region was given"):
        resolve_region()
    with pytest.raises(InvalidInputError, match="region and bbox were both given"):
        resolve_region(region="kenya", bbox="36.7,-1.4,36.9,-1.2")
    with pytest.raises(InvalidInputError, match="bbox and tiles were both given"):
        resolve_region(bbox="36.7,-1.4,36.9,-1.2", tiles=["grid_36.85_-1.25"])
    # An empty --tile list (what a CLI passes when the option is unused) is "not given".
    assert resolve_region(bbox="36.7,-1.4,36.9,-1.2", tiles=[]).name.startswith("bbox")


# ----------------------------------------------------------------------------- masks


def _boundary_tile(region: Region) -> Tile:
    """A selected tile whose cell the region covers only partly (about half)."""
    cells = shapely.box(*np.array([t.bounds for t in region.tiles]).T)
    frac = shapely.area(shapely.intersection(region.geometry, cells)) / 0.01
    return region.tiles[int(np.argmin(np.abs(frac - 0.5)))]


def test_mask_matches_point_in_polygon_on_a_boundary_tile(kenya):
    tile = _boundary_tile(kenya)
    grid = expected_grid(tile)
    mask = kenya.mask(grid)
    owned = owned_mask(grid)
    assert mask.shape == grid.shape and mask.dtype == bool
    assert not (mask & ~owned).any()
    assert 0.2 < mask.sum() / owned.sum() < 0.8
    rng = np.random.default_rng(0)
    rows = rng.integers(0, grid.height, 5000)
    cols = rng.integers(0, grid.width, 5000)
    lon, lat = pixel_to_lonlat(grid, rows, cols)
    expected = owned[rows, cols] & shapely.contains_xy(kenya.geometry, lon, lat)
    np.testing.assert_array_equal(mask[rows, cols], expected)
    np.testing.assert_array_equal(kenya.contains(lon, lat), shapely.contains_xy(kenya.geometry, lon, lat))


def test_mask_interior_outside_and_explicit_tiles(kenya):
    grid = expected_grid(NAIROBI)
    np.testing.assert_array_equal(kenya.mask(grid), owned_mask(grid))
    outside = expected_grid(tile_for_point(32.58, 0.35))  # Kampala
    assert not kenya.mask(outside).any()
    explicit = resolve_region(tiles=[NAIROBI.name])
    np.testing.assert_array_equal(explicit.mask(grid), owned_mask(grid))
    assert not explicit.mask(outside).any()


def test_mask_at_the_antimeridian():
    fiji = resolve_region(region="fiji")
    for tile in (Tile(1799, -167), Tile(-1800, -167)):
        assert tile in fiji.tiles
        grid = expected_grid(tile)
        mask = fiji.mask(grid)
        rows, cols = np.nonzero(owned_mask(grid))
        pick = np.random.default_rng(1).integers(0, rows.size, 3000)
        lon, lat = pixel_to_lonlat(grid, rows[pick], cols[pick])
        np.testing.assert_array_equal(mask[rows[pick], cols[pick]], shapely.contains_xy(fiji.geometry, lon, lat))
        assert mask.any()


def test_contains_is_vectorised(kenya):
    lon = np.array([[36.82, 32.58], [36.07, 180.0]])  # Nairobi, Kampala, Nakuru, ocean
    lat = np.array([[-1.29, 0.35], [-0.30, 0.0]])
    assert kenya.contains(lon, lat).tolist() == [[True, False], [True, False]]


# ----------------------------------------------------------------------------- speed


def test_kenya_tiles_and_a_mask_are_fast(kenya):
    country("kenya")  # polygons already read: time the geometry, as `tiles --region` does
    start = time.perf_counter()
    tiles = tiles_for_geometry(kenya.geometry)
    assert time.perf_counter() - start < 2.0
    assert tuple(tiles) == kenya.tiles
    grid = expected_grid(_boundary_tile(kenya))
    start = time.perf_counter()
    kenya.mask(grid)
    assert time.perf_counter() - start < 2.0  # typically 0.25 s; loose for loaded CI machines
