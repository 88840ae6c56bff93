"""Reading example files (GeoJSON, GeoParquet, Parquet, CSV) and sampling their embeddings."""

from __future__ import annotations

import json

from _helpers import SHARED

import numpy as np
import pytest
from test_label_data import PAIR, YEAR, ZONES, pair_landscape, zones_landscape

from tessera_search.errors import InvalidInputError, NoDataError, TileNotFoundError
from tessera_search.examples import ExampleSet, read_examples, sample_examples
from tessera_search.grid import lonlat_to_pixel, owned_mask, pixel_to_lonlat
from tessera_search.store import TileStore

UGANDA = SHARED / "data" / "worldcereal" / "uganda_crop_points_2017.parquet"


def _fc(features):
    return {"type": "FeatureCollection", "features": features}


def _pt(lon, lat, **props):
    return {"type": "Feature", "properties": props, "geometry": {"type": "Point", "coordinates": [lon, lat]}}


def test_geojson_points_polygons_and_missing_classes(tmp_path):
    poly = {"type": "Polygon", "coordinates": [[[36.80, -1.30], [36.81, -1.30], [36.81, -1.29], [36.80, -1.30]]]}
    doc = _fc([
        _pt(36.8, -1.3, crop="maize", positive=True),
        {"type": "Feature", "properties": {"crop": "tea", "positive": "negative"}, "geometry": poly},
        {"type": "Feature", "properties": {"crop": "rice"},
         "geometry": {"type": "MultiPoint", "coordinates": [[36.7, -1.2], [36.71, -1.21]]}},
        _pt(36.9, -1.3, crop=None),
        _pt(36.9, -1.31),
    ])
    p = tmp_path / "ex.geojson"
    p.write_text(json.dumps(doc))
    ex = read_examples(p, "crop")
    assert len(ex) == 4 and ex.skipped == 2
    assert [e.kind for e in ex] == ["point", "polygon", "point", "point"]
    assert ex.labels() == ["maize", "tea", "rice", "rice"]
    assert [e.feature for e in ex] == [0, 1, 2, 2]
    assert ex.polarity().tolist() == [True, False, True, True]
    assert len(read_examples(p)) == 6  # without a class field every feature is kept
    with pytest.raises(InvalidInputError, match="no example has the class field 'class'.*crop"):
        read_examples(p, "class")


@pytest.mark.parametrize("geometry,match", [
    ({"type": "LineString", "coordinates": [[36.8, -1.3], [36.9, -1.3]]}, "LineString"),
    ({"type": "Point", "coordinates": [500000.0, 9860000.0]}, "lon/lat"),
    ({"type": "Polygon", "coordinates": [[[36.8, -1.3], [36.9, -1.3], [36.8, -1.3]]]}, "without area"),
])
def test_bad_geometries_are_refused(tmp_path, geometry, match):
    p = tmp_path / "bad.geojson"
    p.write_text(json.dumps(_fc([{"type": "Feature", "properties": {"c": "a"}, "geometry": geometry}])))
    with pytest.raises(InvalidInputError, match=match):
        read_examples(p, "c")


def test_projected_crs_member_is_refused(tmp_path):
    doc = _fc([_pt(36.8, -1.3, c="a")]) | {"crs": {"type": "name", "properties": {"name": "EPSG:32737"}}}
    p = tmp_path / "utm.geojson"
    p.write_text(json.dumps(doc))
    with pytest.raises(InvalidInputError, match="ogr2ogr"):
        read_examples(p, "c")


@pytest.mark.parametrize("cols", [("lon", "lat"), ("Longitude", "Latitude"), ("x", "y")])
def test_csv_with_coordinate_columns(tmp_path, cols):
    p = tmp_path / "ex.csv"
    p.write_text(f"{cols[0]},{cols[1]},crop\n36.8,-1.3,maize\n36.81,-1.31,\n36.82,-1.32,3\n")
    ex = read_examples(p, "crop")
    assert len(ex) == 2 and ex.skipped == 1 and ex.labels() == ["maize", "3"]
    assert ex[0].geometry.x == pytest.approx(36.8)


def test_csv_without_coordinates_says_which_columns_it_wants(tmp_path):
    p = tmp_path / "ex.csv"
    p.write_text("a,b,crop\n1,2,maize\n")
    with pytest.raises(InvalidInputError, match="lon/lat"):
        read_examples(p, "crop")


def test_geoparquet_in_a_projected_crs_is_reprojected(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely
    from pyproj import Transformer

    x, y = Transformer.from_crs(4326, 32737, always_xy=True).transform(36.8, -1.3)
    wkb = shapely.to_wkb(shapely.Point(x, y))
    table = pa.table({"geometry": [wkb], "label": ["tea"]})
    geo = {"version": "1.0.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"], "crs": "EPSG:32737"}}}
    table = table.replace_schema_metadata({b"geo": json.dumps(geo).encode()})
    p = tmp_path / "ex.parquet"
    pq.write_table(table, p)
    ex = read_examples(p, "label")
    assert ex.labels() == ["tea"]
    assert ex[0].geometry.x == pytest.approx(36.8, abs=1e-9) and ex[0].geometry.y == pytest.approx(-1.3, abs=1e-9)


@pytest.mark.skipif(not UGANDA.exists(), reason="shared WorldCereal data not present")
def test_real_worldcereal_points_read_and_name_their_missing_tiles(tmp_path):
    ex = read_examples(UGANDA, "ewoc_code")
    assert len(ex) == 500 and ex.skipped == 0
    assert all(e.kind == "point" for e in ex)
    w, s, e, n = ex.bounds
    assert 33 < w < e < 35 and 0 < s < n < 5.5  # Uganda / South Sudan
    from collections import Counter

    assert [n for _, n in Counter(ex.labels()).most_common(4)] == [305, 97, 28, 23]
    with pytest.raises(TileNotFoundError) as info:
        sample_examples(ex, 2017, tmp_path / "empty")
    msg = str(info.value)
    assert "not in the store" in msg and "2017" in msg and "grid_" in msg and "source=" in msg
    assert info.value.year == 2017 and len(info.value.tiles) == 75
    from tessera_search.cli import cli_message

    assert "tessera-search download --bbox" in cli_message(info.value) and "--year 2017" in cli_message(info.value)


def test_points_sample_the_pixel_that_holds_them():
    land = pair_landscape()
    store = TileStore(land.home)
    g = land.grids[PAIR[0]]
    rows, cols = np.array([5, 40, 77, 120]), np.array([7, 33, 90, 100])
    lon, lat = pixel_to_lonlat(g, rows, cols)
    lon, lat = lon + 3e-5, lat - 2e-5  # off-centre, still in the same pixel
    r, c, inside = lonlat_to_pixel(g, lon, lat)
    valid = store.read_valid(PAIR[0], YEAR)
    keep = inside & valid[r, c] & owned_mask(g)[r, c]
    ex = ExampleSet.from_points(lon[keep], lat[keep], ["a"] * int(keep.sum()))
    s = sample_examples(ex, YEAR, land.home)
    vec, _ = store.read_pixels(PAIR[0], YEAR, r[keep], c[keep])
    np.testing.assert_array_equal(s.vectors, vec)
    np.testing.assert_array_equal(s.row, r[keep])
    assert s.synthetic and s.dataset_versions == ("v1",)


def test_water_points_are_dropped_and_all_water_is_an_error():
    land = zones_landscape()
    store = TileStore(land.home)
    t = ZONES[1]
    valid = store.read_valid(t, YEAR) & owned_mask(land.grids[t])
    wr, wc = np.nonzero(~store.read_valid(t, YEAR) & owned_mask(land.grids[t]))
    lr, lc = np.nonzero(valid)
    assert wr.size, "the window should hold some water"
    lon, lat = pixel_to_lonlat(land.grids[t], np.array([wr[0], lr[0]]), np.array([wc[0], lc[0]]))
    s = sample_examples(ExampleSet.from_points(lon, lat, ["w", "l"]), YEAR, land.home)
    assert len(s) == 1 and s.labels().tolist() == ["l"]
    assert s.dropped[0][0] == 0 and "water" in s.dropped[0][1]
    with pytest.raises(NoDataError, match="valid pixel"):
        sample_examples(ExampleSet.from_points(lon[:1], lat[:1], ["w"]), YEAR, land.home)


def test_polygons_give_inside_valid_pixels_capped_and_seeded(tmp_path):
    import shapely

    land = pair_landscape()
    t = PAIR[0]
    g = land.grids[t]
    lon, lat = pixel_to_lonlat(g, np.array([20, 20, 80, 80]), np.array([20, 70, 70, 20]))
    ring = [[float(a), float(b)] for a, b in zip(lon, lat)]
    poly = {"type": "Polygon", "coordinates": [ring + ring[:1]]}
    p = tmp_path / "poly.geojson"
    p.write_text(json.dumps(_fc([{"type": "Feature", "properties": {"c": "x"}, "geometry": poly}])))
    full = sample_examples(p, YEAR, land.home, class_field="c", max_per_polygon=10_000)
    valid = TileStore(land.home).read_valid(t, YEAR)
    assert 2000 < len(full) <= 61 * 51
    assert valid[full.row, full.col].all()
    shape = shapely.geometry.shape(poly)
    assert shapely.contains_xy(shape, full.lon, full.lat).all()
    a = sample_examples(p, YEAR, land.home, class_field="c", max_per_polygon=50, seed=3)
    b = sample_examples(p, YEAR, land.home, class_field="c", max_per_polygon=50, seed=3)
    c = sample_examples(p, YEAR, land.home, class_field="c", max_per_polygon=50, seed=4)
    assert len(a) == 50 and np.array_equal(a.ids, b.ids) and not np.array_equal(a.ids, c.ids)
    assert np.isin(a.ids, full.ids).all()


def test_missing_tiles_are_fetched_from_a_source(tmp_path):
    from _helpers import small_tile, write_mirror

    write_mirror(tmp_path / "mirror", ["grid_36.85_-1.25"])
    data = small_tile("grid_36.85_-1.25")
    lon, lat = pixel_to_lonlat(data.grid, np.array([10]), np.array([20]))
    ex = ExampleSet.from_points(lon, lat, ["a"])
    with pytest.raises(TileNotFoundError, match=r"grid_36.85_-1.25 \(2023\), not in the store") as info:
        sample_examples(ex, 2023, tmp_path / "ws")
    from tessera_search.cli import cli_message

    assert "`tessera-search download --tile grid_36.85_-1.25 --year 2023`" in cli_message(info.value)
    s = sample_examples(ex, 2023, tmp_path / "ws", source=str(tmp_path / "mirror"))
    np.testing.assert_array_equal(s.vectors[0], data.embeddings[10, 20])
