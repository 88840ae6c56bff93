"""Export: COG mosaics on the tiles' grid, reprojection, per-tile files, plain bands (no alpha),
bounded GDAL cache, quicklooks of rasters, and points/polygons as GeoJSON, GeoParquet and CSV."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from test_label_data import edge_grid

from tessera_search.errors import InvalidInputError
from tessera_search.export import (
    GDAL_CACHE_MB,
    PALETTE,
    RasterWriter,
    plan_mosaic,
    write_legend_json,
    write_quicklook,
)
from tessera_search.vectors import (
    csv_metadata_path,
    read_metadata,
    write_points,
    write_points_geojson,
    write_polygons,
)
from tessera_search.grid import Tile, TileGrid, owned_mask, pixel_to_lonlat

A, B = Tile.from_name("grid_36.75_-1.25"), Tile.from_name("grid_36.85_-1.25")
W, E = Tile.from_name("grid_35.95_-1.25"), Tile.from_name("grid_36.05_-1.25")


def _owned_codes(grid: TileGrid, value: int) -> np.ndarray:
    """(1, H, W) uint8: ``value`` on the tile's own pixels, 0 (nodata) on its neighbours'."""
    return np.where(owned_mask(grid), value, 0).astype(np.uint8)[None]


def test_same_zone_mosaic_places_tiles_without_resampling(tmp_path):
    ga, gb = edge_grid(A, "east", 40, 50), edge_grid(B, "west", 40, 50)
    plan = plan_mosaic([ga, gb])
    assert plan.crs == "EPSG:32737" and not plan.reproject
    assert plan.transform[2] == ga.transform[2] and plan.transform[5] == max(ga.transform[5], gb.transform[5])
    out = tmp_path / "m.tif"
    with RasterWriter(out, [ga, gb], count=1, dtype="uint8", nodata=0, tags={"year": 2023, "synthetic": True}) as w:
        w.write_tile(ga, _owned_codes(ga, 1))
        w.write_tile(gb, _owned_codes(gb, 2))
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 32737 and tuple(src.transform)[:6] == plan.transform
        assert src.tags()["synthetic"] == "true" and src.tags()["year"] == "2023"
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        m = src.read(1)
        for g, v in ((ga, 1), (gb, 2)):
            r0 = round((g.transform[5] - plan.transform[5]) / -10)
            c0 = round((g.transform[2] - plan.transform[2]) / 10)
            win = m[r0:r0 + g.height, c0:c0 + g.width]
            # the tile's own pixels keep its value; its neighbour's are not overwritten by it
            assert np.all(win[owned_mask(g)] == v)
    # overlap: the grids share columns, and both tiles' owned pixels survive the merge
    assert (m == 1).sum() == owned_mask(ga).sum() and (m == 2).sum() == owned_mask(gb).sum()


def test_unaligned_grid_is_resampled_nearest(tmp_path):
    ga = edge_grid(A, "east", 20, 20)
    a, b, c, d, e, f = ga.transform
    shifted = TileGrid(A, ga.epsg, (a, b, c + 305.0, d, e, f), 20, 20)  # half a pixel off, beside it
    out = tmp_path / "u.tif"
    with RasterWriter(out, [ga, shifted], count=1, dtype="uint8", nodata=0) as w:
        w.write_tile(ga, np.full((1, 20, 20), 3, np.uint8))
        w.write_tile(shifted, np.full((1, 20, 20), 4, np.uint8))
    with rasterio.open(out) as src:
        m = src.read(1)
    assert m.shape == (20, 51)
    assert (m == 3).sum() == 400 and np.all(m[:, :20] == 3)
    assert 19 * 20 <= (m == 4).sum() <= 21 * 20 and np.all(m[:, 31:50] == 4) and np.all(m[:, 20:30] == 0)


def test_across_zones_needs_a_crs_and_reprojects(tmp_path):
    gw, ge = edge_grid(W, "east", 30, 30), edge_grid(E, "west", 30, 30)
    with pytest.raises(InvalidInputError, match="give a crs .*EPSG:4326.*per_tile"):
        plan_mosaic([gw, ge])
    with pytest.raises(InvalidInputError, match="not a CRS"):
        plan_mosaic([gw, ge], crs="EPSG:99999999")
    out = tmp_path / "z.tif"
    with RasterWriter(out, [gw, ge], count=1, dtype="uint8", nodata=0, crs="EPSG:4326") as w:
        w.write_tile(gw, _owned_codes(gw, 1))
        w.write_tile(ge, _owned_codes(ge, 2))
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 4326
        # pixel centres of each tile read back their tile's value
        for g, v in ((gw, 1), (ge, 2)):
            r, c = np.nonzero(owned_mask(g))
            lon, lat = pixel_to_lonlat(g, r[::7], c[::7])
            vals = np.array([s[0] for s in src.sample(zip(lon, lat))])
            assert np.mean(vals == v) > 0.9


def test_per_tile_files_on_each_tiles_grid(tmp_path):
    gw, ge = edge_grid(W, "east", 30, 30), edge_grid(E, "west", 30, 30)
    with pytest.raises(InvalidInputError, match="per_tile .* takes no crs"):
        RasterWriter(tmp_path / "x.tif", [gw], count=1, dtype="uint8", nodata=0, per_tile=True, crs="EPSG:4326")
    with RasterWriter(tmp_path / "p.tif", [gw, ge], count=2, dtype="float32", nodata=float("nan"),
                      per_tile=True, band_descriptions=["score", "rank"]) as w:
        for g in (gw, ge):
            w.write_tile(g, np.random.default_rng(0).random((2, 30, 30)).astype(np.float32))
    assert sorted(p.name for p in w.written) == [f"p_{t.name}.tif" for t in (W, E)]
    for g in (gw, ge):
        with rasterio.open(tmp_path / f"p_{g.tile.name}.tif") as src:
            assert src.crs.to_epsg() == g.epsg and tuple(src.transform)[:6] == g.transform
            assert src.descriptions == ("score", "rank") and src.tags()["tile"] == g.tile.name


def test_an_error_leaves_nothing_behind(tmp_path):
    ga = edge_grid(A, "east", 20, 20)
    with pytest.raises(RuntimeError):
        with RasterWriter(tmp_path / "gone.tif", [ga], count=1, dtype="uint8", nodata=0) as w:
            w.write_tile(ga, np.ones((1, 20, 20), np.uint8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="does not match"):
        with RasterWriter(tmp_path / "bad.tif", [ga], count=1, dtype="uint8", nodata=0) as w:
            w.write_tile(ga, np.ones((1, 10, 20), np.uint8))


@pytest.mark.parametrize("per_tile", [False, True])
def test_class_map_bands_are_palette_and_plain_never_alpha(tmp_path, per_tile):
    """Band 1 a palette, band 2 (confidence) undefined, in every image of the COG."""
    from PIL import Image
    from rasterio.enums import ColorInterp

    ga = edge_grid(A, "east", 600, 700)  # big enough for overviews
    colours = {1: (255, 0, 0), 2: (0, 128, 255)}
    codes = np.where(np.arange(700)[None] < 350, 1, 2).astype(np.uint8) + np.zeros((600, 1), np.uint8)
    with RasterWriter(tmp_path / "c.tif", [ga], count=2, dtype="uint8", nodata=0, colormap=colours,
                      band_scales=[1.0, 0.01], per_tile=per_tile) as w:
        w.write_tile(ga, np.stack([codes, np.full_like(codes, 80)]))
    (path,) = w.written
    with rasterio.open(path) as src:
        assert src.colorinterp == (ColorInterp.palette, ColorInterp.undefined)
        assert ColorInterp.alpha not in src.colorinterp
        assert src.colormap(1)[1] == (255, 0, 0, 255) and src.colormap(1)[2] == (0, 128, 255, 255)
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and src.overviews(1)
        assert src.scales == (1.0, 0.01)
        np.testing.assert_array_equal(src.read(1), codes)
        assert (src.read(2) == 80).all()
    with Image.open(path) as im:  # ExtraSamples of every image file directory: unspecified
        for i in range(im.n_frames):
            im.seek(i)
            assert im.tag_v2.get(338) == (0,)


def test_gdal_cache_is_bounded_while_writing(tmp_path):
    from rasterio._env import get_gdal_config

    ga = edge_grid(A, "east", 20, 20)
    before = get_gdal_config("GDAL_CACHEMAX")
    with RasterWriter(tmp_path / "c.tif", [ga], count=1, dtype="uint8", nodata=0) as w:
        assert int(get_gdal_config("GDAL_CACHEMAX")) == GDAL_CACHE_MB
        w.write_tile(ga, np.ones((1, 20, 20), np.uint8))
    assert get_gdal_config("GDAL_CACHEMAX") == before


def test_quicklook_of_a_class_map_has_its_legend(tmp_path):
    from PIL import Image

    ga = edge_grid(A, "east", 300, 200)
    out = tmp_path / "q.tif"
    codes = (np.arange(300)[:, None] // 100 + 1 + np.zeros((1, 200), int)).astype(np.uint8)
    with RasterWriter(out, [ga], count=1, dtype="uint8", nodata=0, tags={"synthetic": True}) as w:
        w.write_tile(ga, codes[None])
    png = write_quicklook(out, legend={1: "forest", 2: "maize", 3: "tea"}, title="test")
    assert png == out.with_suffix(".png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 200 and im.height >= 300
        px = np.asarray(im.convert("RGB"))
    # The legend, right of the map, holds each class colour.
    right = px[:, -100:].reshape(-1, 3)
    for code in (1, 2, 3):
        assert np.any(np.all(right == np.array(PALETTE[code - 1], np.uint8), axis=1))
    assert np.any(np.all(px.reshape(-1, 3) == np.array((214, 0, 110), np.uint8), axis=1))  # SYNTHETIC (tag)
    # Without a legend: a grey ramp with a colour bar.
    grey = write_quicklook(out, tmp_path / "g.png", synthetic=False)
    with Image.open(grey) as im:
        g = np.asarray(im.convert("RGB")).reshape(-1, 3)
    assert not np.any(np.all(g == np.array((214, 0, 110), np.uint8), axis=1))
    legend = write_legend_json(tmp_path / "q.json", {2: "maize", 1: "forest"})
    assert json.loads(legend.read_text()) == {"1": "forest", "2": "maize"}


def test_points_geojson_keeps_its_contract(tmp_path):
    pts = write_points_geojson(tmp_path / "p.geojson", np.array([36.8]), np.array([-1.3]),
                               {"score": np.array([0.5], np.float32), "cls": ["tea"]}, {"k": 5})
    doc = json.loads(pts.read_text())
    assert doc["features"][0]["geometry"]["coordinates"] == [36.8, -1.3]
    assert doc["features"][0]["properties"] == {"score": 0.5, "cls": "tea"} and doc["tessera_search"] == {"k": 5}


def _points():
    lon = np.array([36.8, 36.81234567891, -0.5])
    lat = np.array([-1.3, -1.2, 51.5])
    cols = {"rank": np.arange(1, 4), "score": np.array([0.5, np.nan, 0.25], np.float32),
            "tile": ["a", "b", "c"], "note": [None, "x", "y"]}
    meta = {"kind": "test points", "year": np.int64(2023), "synthetic": True, "params": {"k": 5}}
    return lon, lat, cols, meta


@pytest.mark.parametrize("suffix", [".geojson", ".json", ".parquet", ".csv"])
def test_points_round_trip_with_metadata(tmp_path, suffix):
    lon, lat, cols, meta = _points()
    path = write_points(tmp_path / f"p{suffix}", lon, lat, cols, meta)
    want_meta = {"kind": "test points", "year": 2023, "synthetic": True, "params": {"k": 5}}
    assert read_metadata(path) == want_meta
    if suffix in (".geojson", ".json"):
        doc = json.loads(path.read_text())
        assert doc["type"] == "FeatureCollection" and doc["tessera_search"] == want_meta
        got = np.array([f["geometry"]["coordinates"] for f in doc["features"]])
        np.testing.assert_allclose(got, np.stack([lon, lat], 1), atol=1e-8)
        props = [f["properties"] for f in doc["features"]]
        assert [p["rank"] for p in props] == [1, 2, 3] and props[1]["score"] is None and props[0]["note"] is None
        assert [p["tile"] for p in props] == ["a", "b", "c"]
    elif suffix == ".parquet":
        import pyarrow.parquet as pq
        import shapely

        table = pq.read_table(path)
        geo = json.loads(table.schema.metadata[b"geo"])
        assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
        assert geo["columns"]["geometry"]["geometry_types"] == ["Point"] and "crs" not in geo["columns"]["geometry"]
        pts = shapely.from_wkb(table["geometry"].to_pylist())
        np.testing.assert_array_equal(shapely.get_x(pts), lon)
        np.testing.assert_array_equal(shapely.get_y(pts), lat)
        np.testing.assert_array_equal(table["lon"].to_numpy(), lon)
        assert table["score"].type == "float" and table["rank"].to_pylist() == [1, 2, 3]
        assert table["note"].to_pylist() == [None, "x", "y"]
    else:
        import csv

        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert list(rows[0]) == ["lon", "lat", "rank", "score", "tile", "note"]
        np.testing.assert_array_equal([float(r["lon"]) for r in rows], lon)  # full precision
        assert [r["score"] for r in rows] == ["0.5", "", "0.25"] and rows[0]["note"] == ""
        assert csv_metadata_path(path).name == "p.csv.json"
        assert json.loads(csv_metadata_path(path).read_text()) == {"tessera_search": want_meta}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [path.name] + ([csv_metadata_path(path).name] if suffix == ".csv" else []))


@pytest.mark.parametrize("suffix", [".geojson", ".parquet", ".csv"])
def test_polygons_round_trip_with_metadata(tmp_path, suffix):
    import shapely
    from shapely.geometry import Polygon, mapping, shape

    square = Polygon([(36.8, -1.3), (36.801, -1.3), (36.801, -1.299), (36.8, -1.299)])
    holed = Polygon([(36.9, -1.3), (36.91, -1.3), (36.91, -1.29), (36.9, -1.29)],
                    [[(36.903, -1.297), (36.906, -1.297), (36.906, -1.294)]])
    multi = shapely.MultiPolygon([square.buffer(0), Polygon([(37, -1), (37.001, -1), (37, -0.999)])])
    geoms = [mapping(square), holed, multi]
    path = write_polygons(tmp_path / f"b{suffix}", geoms, {"area_m2": [12.5, 100.0, 3.0], "rank": [1, 2, 3]},
                          {"kind": "blobs"})
    assert read_metadata(path) == {"kind": "blobs"}
    if suffix == ".geojson":
        got = [shape(f["geometry"]) for f in json.loads(path.read_text())["features"]]
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        got = list(shapely.from_wkb(table["geometry"].to_pylist()))
        geo = json.loads(table.schema.metadata[b"geo"])["columns"]["geometry"]
        assert geo["geometry_types"] == ["MultiPolygon", "Polygon"]
        assert geo["bbox"] == pytest.approx([36.8, -1.3, 37.001, -0.999])
        assert table["area_m2"].to_pylist() == [12.5, 100.0, 3.0]
    else:
        import csv

        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert list(rows[0]) == ["area_m2", "rank", "geometry"]
        got = [shapely.from_wkt(r["geometry"]) for r in rows]
    for a, b in zip(got, [square, holed, multi], strict=True):
        assert a.equals_exact(b, 1e-12)


def test_vector_writers_refuse_what_they_cannot_write(tmp_path):
    with pytest.raises(InvalidInputError, match=r"'\.shp' is not a vector format.*\.parquet"):
        write_points(tmp_path / "p.shp", [1.0], [2.0])
    with pytest.raises(ValueError, match="column 'score' has 2 values for 1 features"):
        write_points(tmp_path / "p.csv", [1.0], [2.0], {"score": [1, 2]})
    with pytest.raises(ValueError, match="reserved"):
        write_points(tmp_path / "p.geojson", [1.0], [2.0], {"lon": [1.0]})
    assert list(tmp_path.iterdir()) == []
    empty = write_points(tmp_path / "e.parquet", [], [], {"rank": np.zeros(0, np.int64)}, {"kind": "none"})
    import pyarrow.parquet as pq

    assert pq.read_table(empty).num_rows == 0 and read_metadata(empty) == {"kind": "none"}
