"""Query by example: point -> stored vector -> search -> places; API, CLI, files, errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tessera_search.catalog import Catalog
from tessera_search.errors import NoCoverageError, NoDataError
from tessera_search.grid import Tile, lonlat_to_pixel, pack_ids, pixel_to_lonlat
from tessera_search.index import build_index, open_index
from tessera_search.query import query_vector, run_query
from tessera_search.regions import resolve_region
from tessera_search.store import TileStore
from tessera_search.workspace import Workspace

from _helpers import NAIROBI_TILES, small_tile, write_mirror


def _lonlat(home, tile: str, row: int, col: int) -> tuple[float, float]:
    grid = TileStore(home).grid(Tile.from_name(tile), 2023)
    lon, lat = pixel_to_lonlat(grid, row, col)
    return float(lon), float(lat)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Three small tiles in the store, indexed as ``nairobi``; a fourth stored, not indexed."""
    home = tmp_path_factory.mktemp("query-ws")
    ws = Workspace(home)
    for name in NAIROBI_TILES:
        ws.put(small_tile(name, height=48, width=56))
    build_index(tiles=NAIROBI_TILES[:3], year=2023, home=home, name="nairobi", progress=False, shard_size=3000)
    return home


def test_query_returns_ranked_distinct_pixels_query_first(ws):
    lon, lat = _lonlat(ws, "grid_36.75_-1.25", 20, 30)
    res = run_query((lon, lat), k=300, index="nairobi", home=ws)
    assert len(res) == 300 and len(set(res.ids.tolist())) == 300
    assert res.ids[0] == pack_ids(367, -13, 20, 30) and res.similarity[0] == pytest.approx(1.0)
    assert np.all(np.diff(res.similarity) <= 0)
    assert open_index("nairobi", home=ws).contains(res.ids).all()
    # Coordinates round-trip to the tile, row and col each match names.
    for m in res.matches()[:40]:
        grid = TileStore(ws).grid(Tile.from_name(m["tile"]), 2023)
        r, c, inside = lonlat_to_pixel(grid, m["lon"], m["lat"])
        assert inside and (int(r), int(c)) == (m["row"], m["col"])


def test_query_recall_against_exact(ws):
    idx = open_index("nairobi", home=ws)
    store = TileStore(ws)
    ids, vecs = [], []
    for name in idx.tiles:
        t = Tile.from_name(name)
        d = store.read(t, 2023)
        r, c = np.nonzero(d.valid)
        ids.append(pack_ids(t.ix, t.iy, r, c))
        vecs.append(d.embeddings[r, c])
    ids, x = np.concatenate(ids), np.concatenate(vecs).astype(np.float64)
    recalls = []
    for tile, row, col in [("grid_36.75_-1.35", 10, 10), ("grid_36.85_-1.35", 30, 40), ("grid_36.75_-1.25", 5, 50)]:
        qp = query_vector(_lonlat(ws, tile, row, col), 2023, home=ws)
        sims = (x @ qp.vector.astype(np.float64)) / np.linalg.norm(x, axis=1)
        truth = ids[np.lexsort((ids, -sims))[:100]]
        res = idx.search(qp.vector, k=100)
        recalls.append(len(np.intersect1d(truth, res.ids)) / 100)
    assert np.mean(recalls) >= 0.95


def test_query_vector_is_the_unit_stored_embedding(ws):
    qp = query_vector(_lonlat(ws, "grid_36.85_-1.35", 7, 9), 2023, home=ws)
    q8, _ = TileStore(ws).read_pixels(Tile.from_name("grid_36.85_-1.35"), 2023, [7], [9])
    want = q8[0].astype(np.float32) / np.linalg.norm(q8[0].astype(np.float32))
    assert (qp.tile, qp.row, qp.col) == ("grid_36.85_-1.35", 7, 9)
    assert np.allclose(qp.vector, want) and qp.vector.dtype == np.float32


def test_cli_query_json_and_history(ws, cli):
    lon, lat = _lonlat(ws, "grid_36.75_-1.35", 25, 25)
    code, out, err = cli("--home", ws, "query", "--point", f"{lon},{lat}", "--k", "50", "--year", "2023", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["index"] == "nairobi" and doc["query"]["positives"][0]["tile"] == "grid_36.75_-1.35"
    assert [m["rank"] for m in doc["matches"]] == list(range(1, 51))
    assert set(doc["matches"][0]) == {"rank", "id", "lon", "lat", "tile", "row", "col", "similarity"}
    assert doc["matches"][0]["id"] == pack_ids(367, -14, 25, 25)
    sims = [m["similarity"] for m in doc["matches"]]
    assert sims == sorted(sims, reverse=True)
    recorded = Catalog(ws).query(doc["query_id"])
    assert recorded["index_name"] == "nairobi" and recorded["n_results"] == 50 and len(recorded["vector"]) == 128


def test_cli_query_table(ws, cli):
    lon, lat = _lonlat(ws, "grid_36.75_-1.35", 25, 25)
    code, out, _ = cli("--home", ws, "query", "--point", f"{lon},{lat}", "--k", "5", "--index", "nairobi")
    assert code == 0 and "grid_36.75_-1.35" in out and "similarity" in out and "1.0000" in out


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".geojson"])
def test_cli_query_out_files(ws, cli, tmp_path, suffix):
    lon, lat = _lonlat(ws, "grid_36.85_-1.35", 12, 33)
    path = tmp_path / f"matches{suffix}"
    code, out, err = cli("--home", ws, "query", "--point", f"{lon},{lat}", "--k", "20", "--index", "nairobi",
                         "--json", "--out", path)
    assert code == 0, err
    want = json.loads(out)["matches"]
    if suffix == ".csv":
        with open(path) as f:
            rows = list(csv.DictReader(f))
        got = [{"id": int(r["id"]), "tile": r["tile"], "similarity": float(r["similarity"]), "lon": float(r["lon"])} for r in rows]
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        got = [{"id": r["id"], "tile": r["tile"], "similarity": r["similarity"], "lon": r["lon"]} for r in rows]
    else:
        doc = json.loads(path.read_text())
        assert doc["type"] == "FeatureCollection"
        got = [{"id": f["properties"]["id"], "tile": f["properties"]["tile"],
                "similarity": f["properties"]["similarity"], "lon": f["geometry"]["coordinates"][0]} for f in doc["features"]]
    assert [g["id"] for g in got] == [m["id"] for m in want]
    assert [g["tile"] for g in got] == [m["tile"] for m in want]
    assert np.allclose([g["similarity"] for g in got], [m["similarity"] for m in want], atol=1e-6)
    assert np.allclose([g["lon"] for g in got], [m["lon"] for m in want], atol=1e-9)


def test_cli_query_errors(ws, cli):
    water = _lonlat(ws, "grid_36.75_-1.35", 20, 1)  # the river on the west edge
    cases = [
        (["--point", "{},{}".format(*water), "--index", "nairobi"], "NoDataError", "water"),
        (["--point", "{},{}".format(*_lonlat(ws, "grid_36.85_-1.25", 20, 20)), "--index", "nairobi"],
         "NoCoverageError", "outside index nairobi"),
        (["--point", "36.801,-1.399", "--index", "nairobi"], "NoCoverageError", "outside the grid"),
        (["--point", "10,10", "--index", "nairobi"], "NoCoverageError", "not in the index"),
        (["--point", "{},{}".format(*_lonlat(ws, "grid_36.75_-1.35", 20, 20)), "--index", "nope"],
         "IndexNotFoundError", "no index named 'nope'"),
        (["--point", "{},{}".format(*_lonlat(ws, "grid_36.75_-1.35", 20, 20)), "--year", "2019"],
         "IndexNotFoundError", "no index for 2019"),
        (["--point", "{},{}".format(*_lonlat(ws, "grid_36.75_-1.35", 20, 20)), "--index", "nairobi", "--k", "99999"],
         "KTooLargeError", "holds"),
    ]
    for args, error, text in cases:
        code, out, err = cli("--home", ws, "query", *args)
        assert code == (2 if error == "KTooLargeError" else 1), (args, out, err)
        assert error in err and text in err, (args, err)
    code, _, err = cli("--home", ws, "query", "--point", "nonsense", "--index", "nairobi")
    assert code == 2 and "InvalidPointError" in err


def test_api_errors(ws):
    with pytest.raises(NoDataError):
        run_query(_lonlat(ws, "grid_36.75_-1.35", 20, 0), k=5, index="nairobi", home=ws)
    with pytest.raises(NoCoverageError):
        run_query(_lonlat(ws, "grid_36.85_-1.25", 20, 20), k=5, index="nairobi", home=ws)


def test_cli_build_from_a_mirror_then_query_fetches_missing_tiles(tmp_path, cli):
    mirror, home = tmp_path / "mirror", tmp_path / "ws"
    write_mirror(mirror, NAIROBI_TILES[:2])
    code, out, err = cli("--home", home, "build-index", "--tile", NAIROBI_TILES[0], "--tile", NAIROBI_TILES[1],
                         "--year", "2023", "--source", mirror, "--name", "two", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["name"] == "two" and rep["n_shards"] == 1 and sorted(rep["tiles"]) == sorted(NAIROBI_TILES[:2])
    store = TileStore(home)
    assert all(store.has(Tile.from_name(t), 2023) for t in NAIROBI_TILES[:2])  # fetched through the tiles layer
    code, out, _ = cli("--home", home, "indexes", "--json")
    rows = json.loads(out)["indexes"]
    assert [r["name"] for r in rows] == ["two"] and rows[0]["status"] == "complete"
    assert rows[0]["n_vectors"] == rep["n_vectors"]
    code, out, _ = cli("--home", home, "indexes")
    assert code == 0 and "two" in out
    code, out, _ = cli("--home", home, "build-index", "--tile", NAIROBI_TILES[0], "--tile", NAIROBI_TILES[1],
                       "--year", "2023", "--source", mirror, "--name", "two")
    assert code == 0 and "up to date" in out
    lon, lat = _lonlat(home, NAIROBI_TILES[0], 20, 20)
    store.delete(Tile.from_name(NAIROBI_TILES[0]), 2023)
    code, out, err = cli("--home", home, "query", "--point", f"{lon},{lat}", "--k", "10", "--index", "two",
                         "--source", mirror, "--json")
    assert code == 0, err
    assert json.loads(out)["matches"][0]["id"] == pack_ids(367, -14, 20, 20)
    assert store.has(Tile.from_name(NAIROBI_TILES[0]), 2023)


def test_cli_build_busy_is_a_clear_error(tmp_path, cli):
    from tessera_search.index.build import build_lock
    from tessera_search.index.shards import index_dir

    home = tmp_path / "ws"
    TileStore(home).write(small_tile(NAIROBI_TILES[0]))
    with build_lock(index_dir(home, "busy"), "busy"):
        code, _, err = cli("--home", home, "build-index", "--tile", NAIROBI_TILES[0], "--year", "2023", "--name", "busy")
    assert code == 1 and "IndexBusyError" in err and "being built by pid" in err


def test_help_texts(cli):
    for cmd in ("build-index", "indexes", "query"):
        code, out, _ = cli(cmd, "--help")
        assert code == 0 and len(out) > 100


def test_region_mask_limits_the_index(tmp_path):
    """A bbox region indexes only pixels inside it; a point in the tile outside the box is refused."""
    home = tmp_path
    data = small_tile("grid_36.75_-1.35", height=48, width=56)
    Workspace(home).put(data)
    lon0, lat0 = _lonlat(home, "grid_36.75_-1.35", 24, 28)
    box = f"36.7,-1.4,{lon0:.6f},{-1.3}"
    rep = build_index(bbox=box, year=2023, home=home, progress=False)
    region = resolve_region(bbox=box)
    want = int((region.mask(data.grid) & data.valid).sum())
    assert rep.n_vectors == want and 0 < want < int(data.valid.sum())
    with pytest.raises(NoCoverageError, match="outside its region"):
        run_query(_lonlat(home, "grid_36.75_-1.35", 24, 50), k=5, index=rep.name, home=home)


def test_without_index_or_year_the_only_index_is_used(tmp_path, cli):
    from _helpers import small_tile

    from tessera_search.index import build_index

    home = tmp_path / "one"
    data = small_tile("grid_36.85_-1.25")
    Workspace(home).put(data)
    code, _, err = cli("--home", home, "query", "--point", "36.85,-1.25")
    assert code == 2 and "InvalidInputError" in err and "none is built yet" in err
    build_index(tiles=["grid_36.85_-1.25"], year=2023, home=home, name="a", progress=False)
    lon, lat = pixel_to_lonlat(data.grid, 20, 20)
    code, out, err = cli("--home", home, "query", "--point", f"{float(lon)},{float(lat)}", "--k", "3", "--json")
    assert code == 0, err
    assert json.loads(out)["index"] == "a"
    build_index(tiles=["grid_36.85_-1.25"], year=2023, home=home, name="b", progress=False)
    code, _, err = cli("--home", home, "query", "--point", f"{float(lon)},{float(lat)}")
    assert code == 2 and "InvalidInputError" in err and "a, b" in err
