"""Query by example, fully (issue 4): example vectors, result modes, exports, replay.

One small index over three synthetic-landscape windows: grid_35.95_-1.25 lies in UTM
zone 36, grid_36.05_-1.25 and grid_36.15_-1.25 in zone 37, so single-zone mosaics and
cross-zone EPSG:4326 mosaics are both exercised on real grids.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from _helpers import small_grid

from tessera_search.errors import InvalidInputError, NoDataError
from tessera_search.grid import Tile, pixel_to_lonlat
from tessera_search.geodesy import ecef as _ecef
from tessera_search.geodesy import thin
from tessera_search.query import combine, example_query, history, replay
from tessera_search.query import search_index as retrieve
from tessera_search.query import write_result as export
from tessera_search.sources.synthetic import generate_tile
from tessera_search.workspace import Workspace

TILES = ["grid_35.95_-1.25", "grid_36.05_-1.25", "grid_36.15_-1.25"]
WHEAT, BARLEY = 6, 7


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tessera_search.index import build_index, open_index

    home = tmp_path_factory.mktemp("retrieve") / "ws"
    ws = Workspace(home)
    truth = {}
    for name in TILES:
        t = Tile.from_name(name)
        st = generate_tile(t, 2023, seed=3, grid=small_grid(t, 160, 170))
        ws.put(st.data)
        truth[name] = (st.classes, st.data.grid, st.data.valid)
    build_index(tiles=TILES, year=2023, home=home, name="w", progress=False)
    idx = open_index("w", home=home)
    yield home, idx, truth
    idx.close()


def _pixels_of(truth, cls, n, seed=0):
    """n (lon, lat) centres of valid pixels of class ``cls``, spread over the tiles."""
    rng = np.random.default_rng(seed)
    out = []
    for classes, grid, valid in truth.values():
        rc = np.argwhere((classes == cls) & valid)
        for r, c in rc[rng.choice(len(rc), size=min(n, len(rc)), replace=False)]:
            lon, lat = pixel_to_lonlat(grid, r, c)
            out.append((float(lon), float(lat)))
    return out[:n] if len(out) >= n else out


def _class_of_matches(res, truth):
    return np.array([truth[t][0][r, c] for t, r, c in zip(res.tiles, res.rows, res.cols, strict=True)])


def test_combine_formula():
    p = np.array([[1.0, 0, 0], [0.8, 0.6, 0]])
    n = np.array([[0.0, 1.0, 0]])
    q = combine(p, n, 0.5)
    expected = p.mean(0) - 0.5 * n.mean(0)
    np.testing.assert_allclose(q, expected / np.linalg.norm(expected), rtol=1e-6)
    np.testing.assert_allclose(combine(p, None, 0.5), p.mean(0) / np.linalg.norm(p.mean(0)), rtol=1e-6)
    with pytest.raises(InvalidInputError):
        combine(np.array([[1.0, 0, 0]]), np.array([[1.0, 0, 0]]), 1.0)


def test_thin_keeps_points_apart():
    rng = np.random.default_rng(0)
    lon = 36.8 + rng.random(3000) * 0.01
    lat = -1.3 + rng.random(3000) * 0.01
    kept = thin(lon, lat, 100.0, 10_000)
    xyz = _ecef(lon[kept], lat[kept])
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert d.min() >= 100.0 and len(kept) > 20
    # greedy: every dropped point is within 100 m of a kept one
    all_xyz = _ecef(lon, lat)
    dd = np.linalg.norm(all_xyz[:, None] - xyz[None], axis=2).min(axis=1)
    assert dd.max() < 100.0 + 1e-6


def test_min_separation_100m(world):
    home, idx, truth = world
    spec = example_query(2023, points=_pixels_of(truth, WHEAT, 1), home=home)
    res = retrieve(idx, spec, k=60, min_separation=100, record=False)
    assert len(res) == 60
    xyz = _ecef(res.lon, res.lat)
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert d.min() >= 100.0
    assert np.all(np.diff(res.similarity) <= 1e-6)


def test_negatives_of_a_confusable_class_raise_precision(world):
    home, idx, truth = world
    pos = _pixels_of(truth, WHEAT, 6, seed=1)
    neg = _pixels_of(truth, BARLEY, 6, seed=2)
    n_wheat = sum(int(((c == WHEAT) & v).sum()) for c, _, v in truth.values())
    # Deep enough into the ranking that plain search reaches barley (exact search keeps the
    # first half of wheat nearly pure: 0.999 there).
    k = int(0.8 * n_wheat)
    plain = retrieve(idx, example_query(2023, points=pos, home=home), k=k, record=False)
    pushed = retrieve(idx, example_query(2023, points=pos, negatives=neg, push=0.5, home=home), k=k, record=False)
    p0 = float(np.mean(_class_of_matches(plain, truth) == WHEAT))
    p1 = float(np.mean(_class_of_matches(pushed, truth) == WHEAT))
    barley0 = float(np.mean(_class_of_matches(plain, truth) == BARLEY))
    barley1 = float(np.mean(_class_of_matches(pushed, truth) == BARLEY))
    assert p1 > p0, (p0, p1)
    assert barley1 < barley0, (barley0, barley1)


def test_threshold_recovers_most_of_the_class_with_few_false(world):
    home, idx, truth = world
    spec = example_query(2023, points=_pixels_of(truth, WHEAT, 12, seed=4),
                         negatives=_pixels_of(truth, BARLEY, 6, seed=12), home=home)
    res = retrieve(idx, spec, threshold=0.675, record=False)
    cls = _class_of_matches(res, truth)
    n_wheat = sum(int(((c == WHEAT) & v).sum()) for c, _, v in truth.values())
    recall = float((cls == WHEAT).sum()) / n_wheat
    precision = float((cls == WHEAT).mean())
    assert np.all(res.similarity >= 0.675) and not res.truncated
    # wheat's confuser (barley) and three other crops share most of its signal: 3 in 4
    # returned pixels are wheat, and 3 in 4 wheat pixels are returned
    assert recall >= 0.75 and precision >= 0.75, (recall, precision)


def test_threshold_reports_truncation(world):
    home, idx, truth = world
    spec = example_query(2023, points=_pixels_of(truth, WHEAT, 1), home=home)
    res = retrieve(idx, spec, threshold=-1.0, max_results=500, record=False)
    assert len(res) == 500 and res.truncated


def test_per_tile_masks_are_exactly_the_matches(world, tmp_path):
    home, idx, truth = world
    spec = example_query(2023, points=_pixels_of(truth, WHEAT, 2), home=home)
    res = retrieve(idx, spec, k=300, record=False)
    files = export(res, idx, tmp_path / "pt", per_tile=True)
    assert len(files) == len(set(res.tiles))
    for f in files:
        tile = f.stem.split("_", 1)[1]
        grid = idx.grid(Tile.from_name(tile))
        with rasterio.open(f) as src:
            assert src.crs.to_epsg() == grid.epsg
            assert tuple(src.transform)[:6] == pytest.approx(grid.transform)
            band = src.read(1)
            assert src.nodata == 255 and src.tags()["year"] == "2023"
        got = {(int(r), int(c)) for r, c in np.argwhere(band == 1)}
        want = {(int(r), int(c)) for t, r, c in zip(res.tiles, res.rows, res.cols, strict=True) if t == tile}
        assert got == want


def test_single_zone_mosaic_on_the_tiles_grid(world, tmp_path):
    home, idx, truth = world
    sub = [TILES[1], TILES[2]]  # both zone 37
    spec = example_query(2023, points=_pixels_of(truth, WHEAT, 3), home=home)
    res = retrieve(idx, spec, k=400, record=False)
    keep = np.array([t in sub for t in res.tiles])
    res.ids, res.similarity, res.lon, res.lat = res.ids[keep], res.similarity[keep], res.lon[keep], res.lat[keep]
    res.rows, res.cols = res.rows[keep], res.cols[keep]
    res.tiles = [t for t in res.tiles if t in sub]
    out = tmp_path / "m.tif"
    files = export(res, idx, out)
    assert out.with_suffix(".png").exists() and files[0] == out
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 32737
        assert src.transform.a == 10.0 and src.transform.e == -10.0
        band = src.read(1)
        for t, r, c in zip(res.tiles, res.rows, res.cols, strict=True):
            g = idx.grid(Tile.from_name(t))
            col = int(round((g.transform[2] - src.transform.c) / 10.0)) + int(c)
            row = int(round((src.transform.f - g.transform[5]) / 10.0)) + int(r)
            assert band[row, col] == 1
        assert int((band == 1).sum()) == len(res)


def test_epsg4326_mosaic_across_two_zones(world, tmp_path):
    home, idx, truth = world
    spec = example_query(2023, points=_pixels_of(truth, WHEAT, 3), home=home)
    res = retrieve(idx, spec, k=300, record=False)
    assert {idx.grid(Tile.from_name(t)).epsg for t in res.tiles} == {32736, 32737}
    with pytest.raises(InvalidInputError, match="UTM zones"):
        export(res, idx, tmp_path / "x.tif")
    out = tmp_path / "w.tif"
    export(res, idx, out, crs="EPSG:4326")
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 4326
        band = src.read(1)
        t = src.transform
        for lon, lat in zip(res.lon, res.lat, strict=True):
            c, r = (lon - t.c) / t.a, (lat - t.f) / t.e
            r0, c0 = int(np.floor(r)), int(np.floor(c))
            win = band[max(r0 - 1, 0):r0 + 2, max(c0 - 1, 0):c0 + 2]
            assert (win == 1).any(), (lon, lat)


def test_similarity_raster_and_groups(world, tmp_path):
    home, idx, truth = world
    spec = example_query(2023, points=_pixels_of(truth, WHEAT, 2), home=home)
    res = retrieve(idx, spec, k=300, group=True, record=False)
    assert res.blobs and sum(b.n_pixels for b in res.blobs) == len(res)
    assert all(a.n_pixels >= b.n_pixels for a, b in zip(res.blobs, res.blobs[1:]))
    assert all(b.area_m2 == b.n_pixels * 100.0 for b in res.blobs)
    export(res, idx, tmp_path / "b.geojson")
    doc = json.loads((tmp_path / "b.geojson").read_text())
    assert doc["features"][0]["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert doc["features"][0]["properties"]["area_m2"] == res.blobs[0].area_m2
    export(res, idx, tmp_path / "s.tif", values="similarity", per_tile=False, crs="EPSG:4326")
    with rasterio.open(tmp_path / "s.tif") as src:
        vals = src.read(1)
        assert src.dtypes[0] == "float32"
        assert np.nanmax(vals) == pytest.approx(float(res.similarity[0]), abs=1e-5)


def test_example_year_and_errors(world):
    home, idx, truth = world
    water = [(n, rc) for n, (_, _, v) in truth.items() for rc in np.argwhere(~v)[:1]]
    assert water, "the landscape windows should hold some water"
    name, (r, c) = water[0]
    lon, lat = pixel_to_lonlat(truth[name][1], r, c)
    with pytest.raises(NoDataError):  # a water pixel has no embedding
        example_query(2023, points=[(float(lon), float(lat))], home=home)
    with pytest.raises(InvalidInputError):
        example_query(2023, negatives=[(36.05, -1.25)], home=home)
    from tessera_search.errors import TileNotFoundError

    with pytest.raises(TileNotFoundError, match="download"):
        example_query(2023, points=[(36.85, -1.25)], example_year=2020, home=home)


def test_history_and_replay(world):
    home, idx, truth = world
    spec = example_query(2023, points=_pixels_of(truth, WHEAT, 2), home=home)
    res = retrieve(idx, spec, k=50, min_separation=50)
    h = history(home)
    assert h[0]["id"] == res.query_id and h[0]["mode"] == "min_separation"
    again = replay(res.query_id, home=home)
    np.testing.assert_array_equal(again.ids, res.ids)
    np.testing.assert_array_equal(again.vector, res.vector)


def test_cli_examples_modes_exports_history_replay(world, cli, tmp_path):
    home, idx, truth = world
    pos = _pixels_of(truth, WHEAT, 3, seed=7)
    neg = _pixels_of(truth, BARLEY, 2, seed=8)
    # an examples file: a positive polygon around a wheat pixel and a negative point
    lon0, lat0 = pos[0]
    d = 0.0002
    ring = [[lon0 - d, lat0 - d], [lon0 + d, lat0 - d], [lon0 + d, lat0 + d], [lon0 - d, lat0 + d], [lon0 - d, lat0 - d]]
    ex = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": {"positive": True}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": list(neg[0])}, "properties": {"positive": "no"}},
    ]}
    (tmp_path / "ex.geojson").write_text(json.dumps(ex))
    args = ["--home", home, "query", "--index", "w"]
    for p in pos[1:]:
        args += ["--point", f"{p[0]},{p[1]}"]
    args += ["--negative", f"{neg[1][0]},{neg[1][1]}", "--examples", tmp_path / "ex.geojson"]
    code, out, err = cli(*args, "--k", "40", "--min-separation", "100", "--json", "--out", tmp_path / "m.tif",
                         "--crs", "EPSG:4326")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["count"] == 40 and len(doc["query"]["positives"]) == 3 and len(doc["query"]["negatives"]) == 2
    assert doc["params"]["mode"] == "min_separation"
    assert (tmp_path / "m.tif").exists() and (tmp_path / "m.png").exists()
    with rasterio.open(tmp_path / "m.tif") as src:
        assert int((src.read(1) == 1).sum()) > 0 and src.crs.to_epsg() == 4326
        assert json.loads(src.tags()["query_params"])["min_separation"] == 100

    code, out, err = cli(*args, "--group", "--k", "200", "--out", tmp_path / "blobs.geojson")
    assert code == 0, err
    assert "blobs" in out
    feats = json.loads((tmp_path / "blobs.geojson").read_text())["features"]
    assert feats and all(f["properties"]["area_m2"] > 0 for f in feats)

    code, out, err = cli(*args, "--threshold", "0.7", "--json")
    assert code == 0, err
    sims = [m["similarity"] for m in json.loads(out)["matches"]]
    assert sims and min(sims) >= 0.7

    code, out, err = cli("--home", home, "query", "--index", "w", "--point", f"{pos[0][0]},{pos[0][1]}", "--k", "30",
                         "--out", tmp_path / "w.tif", "--crs", "EPSG:4326")
    assert code == 0, err
    code, out, err = cli("--home", home, "query", "--index", "w", "--point", f"{pos[0][0]},{pos[0][1]}", "--k", "30",
                         "--per-tile", "--out", tmp_path / "tiles")
    assert code == 0, err
    assert list((tmp_path / "tiles").glob("*.tif"))

    code, out, err = cli("--home", home, "history", "--json")
    assert code == 0
    hist = json.loads(out)["queries"]
    last = hist[0]
    code, out, err = cli("--home", home, "query", "--replay", str(last["id"]), "--json")
    assert code == 0, err
    again = json.loads(out)
    assert again["count"] == last["n_results"]
    code, out, err = cli("--home", home, "query", "--replay", "99999")
    assert code == 1 and "IndexNotFoundError" in err and "history" in err
    code, out, err = cli("--home", home, "query", "--index", "w", "--point", f"{pos[0][0]},{pos[0][1]}",
                         "--threshold", "0.5", "--min-separation", "10")
    assert code == 2 and "InvalidInputError" in err
