"""Few-shot labelling on a synthetic landscape with ground truth: maps, CV, candidates, suggestions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from test_label_data import PAIR, YEAR, ZONES, pair_landscape, zones_landscape

from tessera_search import label as lab
from tessera_search.errors import IndexNotFoundError, InvalidInputError, TileNotFoundError
from tessera_search.examples import ExampleSet, read_examples, sample_examples
from tessera_search.grid import Tile, lonlat_to_pixel, owned_mask, pack_ids, pixel_to_lonlat
from tessera_search.quant import valid_scales
from tessera_search.regions import resolve_region
from tessera_search.sources.synthetic import CLASSES
from tessera_search.store import TileStore


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    land = pair_landscape()
    ex = land.write_examples(tmp_path_factory.mktemp("ex") / "labels.geojson")
    return land, ex


def _expected_tile_map(land, ex_path, tile, k=5, weights="uniform"):
    """Brute-force reference: classify every valid owned pixel of one tile in float64."""
    samples = sample_examples(ex_path, YEAR, land.home, class_field="crop")
    labels = samples.labels("crop")
    classes = lab.sort_classes(labels)
    store = TileStore(land.home)
    data = store.read(tile, YEAR)
    use = data.valid & owned_mask(data.grid)
    x = data.embeddings[use].astype(np.float64)
    e = samples.vectors.astype(np.float64)
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (e / np.linalg.norm(e, axis=1, keepdims=True)).T
    nn = np.argsort(1 - cos, axis=1, kind="stable")[:, :k]
    y = np.array([classes.index(v) for v in labels])
    votes = np.zeros((x.shape[0], len(classes)))
    for j in range(k):
        np.add.at(votes, (np.arange(x.shape[0]), y[nn[:, j]]), 1.0)
    out = np.zeros(data.grid.shape, dtype=np.uint8)
    out[use] = votes.argmax(axis=1) + 1
    return out, use


def test_class_map_is_accurate_against_ground_truth_and_georeferenced(pair, tmp_path):
    land, ex = pair
    out = tmp_path / "maps" / "classes.tif"
    res = lab.label_region(ex, list(PAIR), YEAR, out, class_field="crop", home=land.home, truth=land.truth_fn)
    # 10 points per class: the map agrees with the ground truth
    assert res.truth_accuracy is not None and res.truth_accuracy >= 0.9, res.truth_accuracy
    assert res.truth_pixels == res.n_pixels > 0
    assert set(res.examples_per_class.values()) == {10}
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 32737
        assert src.count == 2 and src.dtypes == ("uint8", "uint8") and src.nodata == 0
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        tags = src.tags()
        codes, pct = src.read(1), src.read(2)
        t = src.transform
        assert (t.a, t.e) == (10.0, -10.0)
        assert json.loads(tags["legend"]) == {str(c): n for c, n in res.legend.items()}
        assert tags["synthetic"] == "true" and tags["year"] == str(YEAR) and tags["k"] == "5"
        # every tile's owned pixels sit at the right place in the mosaic, as classified
        for tile in PAIR:
            grid = land.grids[tile]
            row0 = round((grid.transform[5] - t.f) / t.e)
            col0 = round((grid.transform[2] - t.c) / t.a)
            assert abs(row0 - (grid.transform[5] - t.f) / t.e) < 1e-9
            window = codes[row0:row0 + grid.height, col0:col0 + grid.width]
            expected, use = _expected_tile_map(land, ex, tile)
            agree = np.mean(window[use] == expected[use])
            assert agree > 0.995, agree
        assert pct[codes > 0].min() >= 1 and pct.max() <= 100 and np.all(pct[codes == 0] == 0)
    # sidecar legend, quicklook
    assert json.loads((tmp_path / "maps" / "classes.json").read_text()) == {str(c): n for c, n in res.legend.items()}
    png = tmp_path / "maps" / "classes.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res.n_pixels == sum(int((codes == c).sum()) for c in res.legend)


def test_truth_accuracy_is_computed_not_assumed(pair, tmp_path):
    """Labels shuffled between classes give a poor map: the reported accuracy drops."""
    land, ex = pair
    doc = json.loads(ex.read_text())
    names = sorted({f["properties"]["crop"] for f in doc["features"]})
    shift = {n: names[(i + 1) % len(names)] for i, n in enumerate(names)}
    for f in doc["features"]:
        f["properties"]["crop"] = shift[f["properties"]["crop"]]
    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps(doc))
    res = lab.label_region(bad, list(PAIR), YEAR, None, class_field="crop", home=land.home, truth=land.truth_fn)
    assert res.truth_accuracy < 0.2 and res.files == []


def test_streams_one_tile_at_a_time(pair, tmp_path, monkeypatch):
    land, ex = pair
    reads = []
    original = TileStore.read

    def counting(self, tile, year):
        reads.append(tile)
        return original(self, tile, year)

    monkeypatch.setattr(TileStore, "read", counting)
    from tessera_search.export import RasterWriter

    writes = []
    orig_write = RasterWriter.write_tile
    monkeypatch.setattr(RasterWriter, "write_tile", lambda self, g, d: (writes.append(g.tile), orig_write(self, g, d)))
    lab.label_region(ex, list(PAIR), YEAR, tmp_path / "c.tif", class_field="crop", home=land.home, quicklook=False)
    assert reads == list(PAIR) and writes == list(PAIR)


def test_region_mask_limits_the_map(pair, tmp_path):
    land, ex = pair
    g = land.grids[PAIR[0]]
    lon, lat = pixel_to_lonlat(g, np.array([20, 120]), np.array([20, 120]))
    region = resolve_region(bbox=f"{lon.min()},{lat.min()},{lon.max()},{lat.max()}")
    res = lab.label_region(ex, region, YEAR, tmp_path / "r.tif", class_field="crop", home=land.home, quicklook=False)
    with rasterio.open(tmp_path / "r.tif") as src:
        codes = src.read(1)
        rows, cols = np.nonzero(codes)
        xs, ys = rasterio.transform.xy(src.transform, rows, cols)
        from pyproj import Transformer

        lo, la = Transformer.from_crs(src.crs, 4326, always_xy=True).transform(xs, ys)
    assert res.n_pixels == rows.size > 1000
    assert np.all(region.contains(np.asarray(lo), np.asarray(la)))


def test_across_utm_zones_needs_a_crs_and_reprojects(tmp_path):
    land = zones_landscape()
    ex = land.write_examples(tmp_path / "z.geojson", per_class=6)
    with pytest.raises(InvalidInputError, match="--crs"):
        lab.label_region(ex, list(ZONES), YEAR, tmp_path / "z.tif", class_field="crop", home=land.home)
    assert not (tmp_path / "z.tif").exists() and list(tmp_path.iterdir()) == [ex]
    res = lab.label_region(ex, list(ZONES), YEAR, tmp_path / "z.tif", class_field="crop", home=land.home,
                           crs="EPSG:4326", quicklook=False)
    assert res.crs == "EPSG:4326"
    with rasterio.open(tmp_path / "z.tif") as src:
        assert src.crs.to_epsg() == 4326
        assert 8e-5 < src.transform.a < 1e-4 and src.transform.e == -src.transform.a
        codes = src.read(1)
        # every classified pixel of each tile lands on its own class in the 4326 mosaic
        for tile in ZONES:
            expected, use = _expected_tile_map(land, ex, tile)
            r, c = np.nonzero(use)
            pick = np.random.default_rng(0).choice(r.size, 400, replace=False)
            lon, lat = pixel_to_lonlat(land.grids[tile], r[pick], c[pick])
            vals = np.array(list(src.sample(zip(lon, lat))))[:, 0]
            assert np.mean(vals == expected[r[pick], c[pick]]) > 0.9
        assert src.bounds.left < 36.0 < src.bounds.right
    # per tile: one COG per tile on its own UTM grid
    res = lab.label_region(ex, list(ZONES), YEAR, tmp_path / "pt" / "z.tif", class_field="crop",
                           home=land.home, per_tile=True)
    tifs = sorted(p.name for p in (tmp_path / "pt").glob("*.tif"))
    assert tifs == [f"z_{t.name}.tif" for t in ZONES]
    for t in ZONES:
        with rasterio.open(tmp_path / "pt" / f"z_{t.name}.tif") as src:
            assert src.crs.to_epsg() == land.grids[t].epsg
            assert tuple(src.transform)[:6] == land.grids[t].transform


def test_examples_on_missing_tiles_raise_with_the_download_command(pair, tmp_path):
    land, _ = pair
    ex = ExampleSet.from_points([30.05], [0.05], ["a"])
    # the library names the tile and how to fetch it (in Python terms; the CLI says `tessera-search download`)
    with pytest.raises(TileNotFoundError, match=r"grid_30\.05_0\.05 \(2023\).*not in the store.*download"):
        lab.label_region(ex, list(PAIR), YEAR, None, class_field="class", home=land.home, k=1)


def test_region_tiles_missing_from_the_store(pair):
    land, ex = pair
    with pytest.raises(TileNotFoundError, match="the region"):
        lab.label_region(ex, [Tile.from_name("grid_36.95_-1.25")], YEAR, None, class_field="crop", home=land.home)


# --------------------------------------------------------------------------- cross-validation


def test_cv_reports_metrics_consistent_with_scikit_learn(pair):
    from sklearn.metrics import f1_score, precision_score, recall_score

    land, ex = pair
    rep = lab.cross_validate(ex, YEAR, folds=4, block_size=300, class_field="crop", home=land.home)
    conf = rep.confusion
    y_true = np.repeat(np.arange(len(rep.classes)), conf.sum(axis=1))
    y_pred = np.concatenate([np.repeat(np.arange(len(rep.classes)), conf[i]) for i in range(len(rep.classes))])
    assert conf.sum() == len(rep.folds) == 10 * len(rep.classes)
    assert rep.accuracy == pytest.approx(np.mean(y_true == y_pred))
    assert rep.macro_f1 == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    prec = precision_score(y_true, y_pred, average=None, zero_division=0)
    rec = recall_score(y_true, y_pred, average=None, zero_division=0)
    assert [rep.precision[c] for c in rep.classes] == pytest.approx(list(prec))
    assert [rep.recall[c] for c in rep.classes] == pytest.approx(list(rec))
    assert rep.accuracy > 0.7
    doc = rep.to_json()
    assert doc["confusion"] == conf.tolist() and doc["folds"] == 4


@pytest.mark.parametrize("block_size", [150.0, 400.0, 900.0])
def test_cv_never_splits_a_block_or_a_polygon(pair, tmp_path, block_size):
    land, ex = pair
    doc = json.loads(ex.read_text())
    # add polygons (fields) whose pixels must all land in one fold
    g = land.grids[PAIR[1]]
    for r0, c0, name in ((30, 30, "maize"), (100, 60, "forest"), (60, 120, "wheat")):
        lon, lat = pixel_to_lonlat(g, np.array([r0, r0, r0 + 12, r0 + 12]), np.array([c0, c0 + 12, c0 + 12, c0]))
        ring = [[float(x), float(y)] for x, y in zip(lon, lat)]
        doc["features"].append({"type": "Feature", "properties": {"crop": name},
                                "geometry": {"type": "Polygon", "coordinates": [ring + ring[:1]]}})
    path = tmp_path / "mixed.geojson"
    path.write_text(json.dumps(doc))
    samples = sample_examples(path, YEAR, land.home, class_field="crop")
    rep = lab.cross_validate(samples, YEAR, folds=5, block_size=block_size, class_field="crop")
    for b in np.unique(rep.blocks):
        assert np.unique(rep.folds[rep.blocks == b]).size == 1
    for e in np.unique(samples.example):
        assert np.unique(rep.folds[samples.example == e]).size == 1
    # blocks really are block_size squares: samples of one block are close together
    from tessera_search.geodesy import ground_distance

    for b in np.unique(rep.blocks):
        m = rep.blocks == b
        if m.sum() > 1 and not np.any(samples.example[m] >= len(samples.examples) - 3):
            d = ground_distance(samples.lon[m][0], samples.lat[m][0], samples.lon[m], samples.lat[m])
            assert d.max() <= block_size * np.sqrt(2) + 20
    assert len(set(rep.folds.tolist())) == 5


def test_cv_needs_enough_blocks(pair):
    land, ex = pair
    with pytest.raises(InvalidInputError, match="block"):
        lab.cross_validate(ex, YEAR, folds=3, block_size=1e6, class_field="crop", home=land.home)


# --------------------------------------------------------------------------- candidates


def _brute_candidates(land, samples, per_class, k=5):
    """Reference: every owned valid non-example pixel, kNN class, cosine to that class's nearest example."""
    labels = samples.labels("crop")
    classes = lab.sort_classes(labels)
    clf = lab.KNNClassifier(k).fit(samples.vectors, labels)
    store = TileStore(land.home)
    ids, cls, score = [], [], []
    for t in PAIR:
        d = store.read(t, YEAR)
        use = d.valid & owned_mask(d.grid)
        r, c = np.nonzero(use)
        pid = pack_ids(t.ix, t.iy, r, c)
        keep = ~np.isin(pid, samples.ids)
        x = d.embeddings[r[keep], c[keep]]
        pred, _ = clf.predict(x)
        xs = x.astype(np.float64)
        e = samples.vectors.astype(np.float64)
        cos = (xs / np.linalg.norm(xs, axis=1, keepdims=True)) @ (e / np.linalg.norm(e, axis=1, keepdims=True)).T
        y = np.array([classes.index(v) for v in labels])
        s = np.stack([cos[:, y == j].max(axis=1) for j in range(len(classes))], axis=1)
        ids.append(pid[keep])
        cls.append(pred)
        score.append(s[np.arange(len(pred)), pred])
    ids, cls, score = map(np.concatenate, (ids, cls, score))
    out = {}
    for j, name in enumerate(classes):
        m = cls == j
        order = np.lexsort((ids[m], -score[m]))[:per_class]
        out[name] = ids[m][order]
    return out


def test_candidates_are_the_exact_nearest_per_class(pair, tmp_path):
    land, ex = pair
    samples = sample_examples(ex, YEAR, land.home, class_field="crop")
    res = lab.label_candidates(samples, tiles=list(PAIR), year=YEAR, per_class=25, class_field="crop",
                               home=land.home, out=tmp_path / "cand.geojson")
    ref = _brute_candidates(land, samples, 25)
    for name in res.classes:
        got = res.ids[res.class_name == name]
        assert len(got) == 25
        overlap = len(set(got.tolist()) & set(ref[name].tolist())) / 25
        assert overlap >= 0.96, (name, overlap)
        s = res.score[res.class_name == name]
        assert np.all(np.diff(s) <= 0) and np.all(res.margin[res.class_name == name] >= -1e-6)
    assert not np.isin(res.ids, samples.ids).any()
    doc = json.loads((tmp_path / "cand.geojson").read_text())
    assert len(doc["features"]) == len(res) == 25 * len(res.classes)
    f = doc["features"][0]
    assert f["properties"]["crop"] == res.classes[0] and f["properties"]["rank"] == 1
    # the point is the candidate pixel's centre
    t = Tile.from_name(f["properties"]["tile"])
    r, c, _ = lonlat_to_pixel(land.grids[t], *f["geometry"]["coordinates"])
    assert (int(r), int(c)) == (f["properties"]["row"], f["properties"]["col"])


def test_candidates_across_a_catalogued_index(pair, tmp_path):
    from tessera_search.catalog import Catalog

    land, ex = pair
    home = land.copy_home(tmp_path / "ws")
    cat = Catalog(home)
    cat.upsert_index({"name": "demo", "year": YEAR, "dataset_version": "v1", "region": "test", "factory": "Flat",
                      "params": {}, "dims": 128, "n_vectors": 0, "n_shards": 1, "status": "complete"})
    cat.record_shard("demo", 0, "shard-0", [t.name for t in PAIR], 0)
    res = lab.label_candidates(ex, index="demo", per_class=5, class_field="crop", home=home)
    assert res.index == "demo" and res.year == YEAR and len(res) == 5 * len(res.classes)
    assert set(res.tile.tolist()) <= {t.name for t in PAIR}
    with pytest.raises(IndexNotFoundError, match="nope"):
        lab.label_candidates(ex, index="nope", class_field="crop", home=home)
    with pytest.raises(InvalidInputError, match="2022"):
        lab.label_candidates(ex, index="demo", year=2022, class_field="crop", home=home)


# --------------------------------------------------------------------------- suggestions


def test_suggestions_are_uncertain_spread_and_feed_back(pair, tmp_path):
    land, ex = pair
    out = tmp_path / "next.geojson"
    res = lab.suggest(ex, list(PAIR), YEAR, n=12, min_distance=150, out=out, class_field="crop", home=land.home)
    assert len(res) == 12
    assert np.all(np.diff(res.margin) >= 0)
    samples = sample_examples(ex, YEAR, land.home, class_field="crop")
    from tessera_search.geodesy import ground_distance

    for i in range(len(res)):
        others = np.delete(np.arange(len(res)), i)
        assert ground_distance(res.lon[i], res.lat[i], res.lon[others], res.lat[others]).min() >= 150
        assert ground_distance(res.lon[i], res.lat[i], samples.lon, samples.lat).min() >= 150
    # the first suggestion is the most uncertain pixel at least 150 m from every example
    clf = lab.KNNClassifier(5).fit(samples.vectors, samples.labels("crop"))
    store = TileStore(land.home)
    best = np.inf
    for t in PAIR:
        d = store.read(t, YEAR)
        use = valid_scales(d.scales) & owned_mask(d.grid)
        r, c = np.nonzero(use)
        lon, lat = pixel_to_lonlat(d.grid, r, c)
        far = np.ones(r.size, dtype=bool)
        for x, y in zip(samples.lon, samples.lat):
            far &= ground_distance(x, y, lon, lat) >= 150
        s = np.sort(clf.class_similarity(d.embeddings[r[far], c[far]]), axis=1)
        best = min(best, float((s[:, -1] - s[:, -2]).min()))
    assert res.margin[0] == pytest.approx(best, abs=1e-6)
    # feed back: label two of them, the rest are skipped
    doc = json.loads(out.read_text())
    assert all(f["properties"]["crop"] is None for f in doc["features"])
    doc["features"][0]["properties"]["crop"] = "maize"
    doc["features"][1]["properties"]["crop"] = "forest"
    out.write_text(json.dumps(doc))
    back = read_examples(out, "crop")
    assert len(back) == 2 and back.skipped == 10


def test_suggest_needs_two_classes(pair):
    land, _ = pair
    g = land.grids[PAIR[0]]
    lon, lat = pixel_to_lonlat(g, np.array([10, 50, 90]), np.array([10, 50, 90]))
    ex = ExampleSet.from_points(lon, lat, ["a", "a", "a"])
    with pytest.raises(InvalidInputError, match="at least 2 classes"):
        lab.suggest(ex, list(PAIR), YEAR, k=1, class_field="class", home=land.home)


def test_synthetic_class_names_match_the_legend():
    # the tests label with the synthetic landscape's own class names
    assert {"maize", "forest", "wheat"} <= set(CLASSES.values())
