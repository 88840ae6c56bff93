"""CLI: label (map, --cv, --index) and suggest. Set up with the library, act through the CLI,
check the files the CLI wrote with rasterio and the library."""

from __future__ import annotations

import json

from _helpers import SHARED

import numpy as np
import pytest
import rasterio
from test_label_data import PAIR, YEAR, pair_landscape

UGANDA = SHARED / "data" / "worldcereal" / "uganda_crop_points_2017.parquet"


@pytest.fixture(scope="module")
def land_ex(tmp_path_factory):
    land = pair_landscape()
    return land, land.write_examples(tmp_path_factory.mktemp("cli") / "labels.geojson")


def _tiles():
    return [a for t in PAIR for a in ("--tile", t.name)]


def test_label_writes_a_class_map(cli, land_ex, tmp_path):
    land, ex = land_ex
    out = tmp_path / "classes.tif"
    code, stdout, err = cli("--home", land.home, "label", "--examples", ex, "--class-field", "crop", *_tiles(),
                            "--year", YEAR, "--out", out, "--k", "3", "--weights", "distance", "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["k"] == 3 and doc["weights"] == "distance" and doc["crs"] == "EPSG:32737" and doc["synthetic"]
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 32737 and src.count == 2
        assert list(src.transform)[:6] == doc["transform"]
        legend = json.loads(src.tags()["legend"])
        codes = src.read(1)
    assert legend == doc["legend"] == json.loads((tmp_path / "classes.json").read_text())
    assert (tmp_path / "classes.png").exists()
    assert int((codes > 0).sum()) == doc["n_pixels"]


def test_label_reports_truth_accuracy_in_text(cli, land_ex, tmp_path):
    """--truth takes a synthetic mirror; the store here holds windows of its truth rasters."""
    from tessera_search.grid import TileGrid
    from tessera_search.sources.synthetic import _write_truth, generate_tile, truth_path

    land, ex = land_ex
    mirror = tmp_path / "mirror"
    for t in PAIR:  # ground truth on a grid 10 px larger all round (the store's is a window of it)
        g = land.grids[t]
        a, b, c, d, e, f = g.transform
        big = TileGrid(t, g.epsg, (a, b, c - 10 * a, d, e, f - 10 * e), g.height + 20, g.width + 20)
        st = generate_tile(t, YEAR, grid=big)
        assert np.array_equal(st.classes[10:-10, 10:-10], land.truth[t])
        _write_truth(truth_path(mirror, t, YEAR), big, st.classes, {"synthetic": "true"})
    code, stdout, err = cli("--home", land.home, "label", "--examples", ex, "--class-field", "crop", *_tiles(),
                            "--year", YEAR, "--out", tmp_path / "c.tif", "--truth", mirror)
    assert code == 0, err
    assert "accuracy against the ground truth" in stdout and "SYNTHETIC" in stdout
    pct = float(stdout.split("ground truth: ")[1].split("%")[0])
    assert pct >= 90.0


def test_label_cv_json(cli, land_ex):
    land, ex = land_ex
    code, stdout, err = cli("--home", land.home, "label", "--examples", ex, "--class-field", "crop",
                            "--year", YEAR, "--cv", "4", "--block-size", "300", "--json")
    assert code == 0, err
    doc = json.loads(stdout)["cv"]
    conf = np.array(doc["confusion"])
    assert doc["folds"] == 4 and conf.sum() == doc["samples"]
    assert doc["accuracy"] == pytest.approx(np.trace(conf) / conf.sum())
    code, stdout, _ = cli("--home", land.home, "label", "--examples", ex, "--class-field", "crop",
                          "--year", YEAR, "--cv", "4", "--block-size", "300")
    assert code == 0 and "macro-F1" in stdout and "confusion matrix" in stdout


def test_label_candidates_across_an_index(cli, land_ex, tmp_path):
    from tessera_search.catalog import Catalog

    land, ex = land_ex
    home = land.copy_home(tmp_path / "ws")
    cat = Catalog(home)
    cat.upsert_index({"name": "demo", "year": YEAR, "dataset_version": "v1", "region": "t", "factory": "Flat",
                      "params": {}, "dims": 128, "n_vectors": 0, "n_shards": 1, "status": "complete"})
    cat.record_shard("demo", 0, "s0", [t.name for t in PAIR], 0)
    out = tmp_path / "cand.geojson"
    code, stdout, err = cli("--home", home, "label", "--index", "demo", "--examples", ex, "--class-field", "crop",
                            "--per-class", "7", "--out", out)
    assert code == 0, err
    doc = json.loads(out.read_text())
    names = [f["properties"]["crop"] for f in doc["features"]]
    assert all(names.count(n) == 7 for n in set(names)) and len(set(names)) >= 4
    assert "candidates" in stdout
    code, _, err = cli("--home", home, "label", "--index", "nope", "--examples", ex, "--class-field", "crop")
    assert code == 1 and "IndexNotFoundError" in err


def test_suggest_writes_points_to_label(cli, land_ex, tmp_path):
    land, ex = land_ex
    out = tmp_path / "next.geojson"
    code, stdout, err = cli("--home", land.home, "suggest", "--examples", ex, "--class-field", "crop", *_tiles(),
                            "--year", YEAR, "--n", "5", "--out", out)
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert len(doc["features"]) == 5 and all(f["properties"]["crop"] is None for f in doc["features"])
    assert "to label next" in stdout


def test_usage_errors(cli, land_ex, tmp_path):
    land, ex = land_ex
    base = ("--home", land.home, "label", "--examples", ex, "--class-field", "crop")
    code, _, err = cli(*base, *_tiles(), "--out", tmp_path / "x.tif")
    assert code == 2 and "--year" in err
    code, _, err = cli(*base, *_tiles(), "--year", YEAR)
    assert code == 2 and "--out" in err
    code, _, err = cli(*base, *_tiles(), "--year", YEAR, "--out", tmp_path / "x.tif", "--weights", "gauss")
    assert code == 2
    code, _, err = cli(*base, "--year", YEAR, "--out", tmp_path / "x.tif")
    assert code == 2 and "InvalidInputError" in err and "--bbox" in err
    code, _, err = cli(*base[:-1], "kind", *_tiles(), "--year", YEAR, "--out", tmp_path / "x.tif")
    assert code == 2 and "class field 'kind'" in err


@pytest.mark.skipif(not UGANDA.exists(), reason="shared WorldCereal data not present")
def test_real_points_name_the_missing_tiles(cli, tmp_path):
    code, out, err = cli("--home", tmp_path / "ws", "label", "--examples", UGANDA, "--class-field", "ewoc_code",
                         "--bbox", "33.5,2.5,33.6,2.6", "--year", "2017", "--out", tmp_path / "u.tif")
    assert code == 1 and out == ""
    assert "TileNotFoundError" in err and "tessera-search download" in err and "2017" in err
    assert not (tmp_path / "u.tif").exists()


def test_commands_have_help(cli):
    for cmd in ("label", "suggest"):
        code, out, _ = cli(cmd, "--help")
        assert code == 0 and "--examples" in out and "--class-field" in out
    code, out, _ = cli("label", "--help")
    assert "--cv" in out and "--index" in out and "--crs" in out
