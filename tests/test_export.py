"""GeoTIFF/COG export: mosaics on the tiles' grid, reprojection, per-tile files, quicklooks, GeoJSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from test_label_data import edge_grid

from tessera_search.errors import InvalidInputError
from tessera_search.export import (
    RasterWriter,
    plan_mosaic,
    write_legend_json,
    write_points_geojson,
    write_quicklook,
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
    with pytest.raises(InvalidInputError, match="--crs EPSG:4326"):
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
    with pytest.raises(InvalidInputError, match="--per-tile"):
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


def test_quicklook_legend_json_and_points(tmp_path):
    ga = edge_grid(A, "east", 300, 200)
    out = tmp_path / "q.tif"
    codes = (np.arange(300)[:, None] // 100 + 1 + np.zeros((1, 200), int)).astype(np.uint8)
    with RasterWriter(out, [ga], count=1, dtype="uint8", nodata=0) as w:
        w.write_tile(ga, codes[None])
    png = write_quicklook(out, legend={1: "forest", 2: "maize", 3: "tea"}, title="test")
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 200 and im.height >= 300
        px = np.asarray(im.convert("RGB"))
    assert len({tuple(v) for v in px.reshape(-1, 3)}) > 4  # classes, legend, text
    legend = write_legend_json(tmp_path / "q.json", {2: "maize", 1: "forest"})
    assert json.loads(legend.read_text()) == {"1": "forest", "2": "maize"}
    pts = write_points_geojson(tmp_path / "p.geojson", np.array([36.8]), np.array([-1.3]),
                               {"score": np.array([0.5], np.float32), "cls": ["tea"]}, {"k": 5})
    doc = json.loads(pts.read_text())
    assert doc["features"][0]["geometry"]["coordinates"] == [36.8, -1.3]
    assert doc["features"][0]["properties"] == {"score": 0.5, "cls": "tea"} and doc["tessera_search"] == {"k": 5}
