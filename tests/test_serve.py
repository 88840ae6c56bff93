"""The web app's API (in-process client): the CLI's --json documents, the CLI's writers,
bounded input, errors as JSON with our names, cancellable jobs, map tiles, packaged assets."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from _helpers import NAIROBI_TILES, small_tile

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")

import tessera_search as ts
from tessera_search.grid import Tile, pixel_to_lonlat
from tessera_search.index import build_index
from tessera_search.store import TileStore

INDEX = "web"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    home = tmp_path_factory.mktemp("serve-ws")
    w = ts.Workspace(home)
    for name in NAIROBI_TILES[:2]:
        w.put(small_tile(name, height=48, width=56))
        w.put(small_tile(name, year=2024, height=48, width=56))  # examples from another year
    build_index(tiles=NAIROBI_TILES[:2], year=2023, home=home, name=INDEX, progress=False,
                factory="IVF16,PQ16x4fs")  # small lists: trains in a second; results are exact (re-ranked)
    return home


@pytest.fixture(scope="module")
def client(ws, tmp_path_factory):
    from fastapi.testclient import TestClient

    from tessera_search.serve import create_app

    app = create_app(ws, exports=tmp_path_factory.mktemp("serve-exports"))
    with TestClient(app) as c:
        c.exports = app.state.service.exports
        c.service = app.state.service
        yield c


def lonlat(home, row, col, tile=NAIROBI_TILES[0]) -> tuple[float, float]:
    lon, lat = pixel_to_lonlat(TileStore(home).grid(Tile.from_name(tile), 2023), row, col)
    return float(lon), float(lat)


def point(lon, lat, **props) -> dict:
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]}, "properties": props}


def square(lon, lat, half_deg=0.0002, **props) -> dict:
    ring = [[lon - half_deg, lat - half_deg], [lon + half_deg, lat - half_deg], [lon + half_deg, lat + half_deg],
            [lon - half_deg, lat + half_deg], [lon - half_deg, lat - half_deg]]
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": props}


def wait(client, job: dict, timeout: float = 60.0) -> dict:
    t0 = time.monotonic()
    while True:
        doc = client.get(f"/api/jobs/{job['id']}").json()
        if doc["state"] not in ("queued", "running"):
            return doc
        assert time.monotonic() - t0 < timeout, doc
        time.sleep(0.05)


def without_id(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "query_id"}


def test_query_answers_exactly_what_query_json_prints(ws, client, cli):
    lon, lat = lonlat(ws, 20, 30)
    r = client.post("/api/query", json={"index": INDEX, "examples": [point(lon, lat)], "k": 25})
    assert r.status_code == 200, r.text
    assert float(r.headers["X-Elapsed-Seconds"]) > 0
    code, out, err = cli("--home", ws, "query", "--point", f"{lon},{lat}", "--k", "25", "--index", INDEX, "--json")
    assert code == 0, err
    expected = json.loads(out)
    got = r.json()
    assert got["query_id"] is not None and got["query_id"] != expected["query_id"]  # both recorded
    assert without_id(got) == without_id(expected)
    assert got["matches"][0]["row"] == 20 and got["matches"][0]["col"] == 30 and len(got["matches"]) == 25


def test_negatives_polygons_and_modes_match_the_cli(ws, client, cli, tmp_path):
    lon, lat = lonlat(ws, 20, 30)
    nlon, nlat = lonlat(ws, 30, 10, NAIROBI_TILES[1])
    plon, plat = lonlat(ws, 30, 40)
    body = {"index": INDEX, "k": 15, "min_separation": 40.0, "group": True,
            "examples": [point(lon, lat), point(nlon, nlat, positive=False), square(plon, plat, positive=True)]}
    r = client.post("/api/query", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["params"]["mode"] == "min_separation" and got["blobs"] is not None
    polygon_file = tmp_path / "poly.geojson"
    polygon_file.write_text(json.dumps({"type": "FeatureCollection", "features": [square(plon, plat, positive=True)]}))
    code, out, err = cli("--home", ws, "query", "--point", f"{lon},{lat}", "--negative", f"{nlon},{nlat}",
                         "--examples", polygon_file, "--k", "15", "--min-separation", "40", "--group",
                         "--index", INDEX, "--json")
    assert code == 0, err
    expected = json.loads(out)
    assert got["matches"] == expected["matches"] and got["blobs"] == expected["blobs"]
    assert got["query"]["positives"] == expected["query"]["positives"]
    assert got["query"]["negatives"] == expected["query"]["negatives"] and len(got["query"]["negatives"]) == 1
    assert got["query"]["positives"][1]["kind"] == "polygon" and got["query"]["positives"][1]["pixels"] > 1


def test_examples_from_another_year_match_the_cli(ws, client, cli):
    lon, lat = lonlat(ws, 20, 30)
    r = client.post("/api/query", json={"index": INDEX, "examples": [point(lon, lat)], "k": 12, "example_year": 2024})
    assert r.status_code == 200, r.text
    code, out, err = cli("--home", ws, "query", "--point", f"{lon},{lat}", "--example-year", "2024", "--k", "12",
                         "--index", INDEX, "--json")
    assert code == 0, err
    assert without_id(r.json()) == without_id(json.loads(out))
    assert r.json()["query"]["example_year"] == 2024 and r.json()["year"] == 2023


def test_history_replay_indexes_and_info_are_the_cli_documents(ws, client, cli):
    lon, lat = lonlat(ws, 12, 40)
    first = client.post("/api/query", json={"index": INDEX, "examples": [point(lon, lat)], "k": 7}).json()
    for path, args in (("/api/history?limit=5", ["history", "--limit", "5"]), ("/api/indexes", ["indexes"]),
                       ("/api/info", ["info"])):
        got = client.get(path).json()
        code, out, err = cli("--home", ws, *args, "--json")
        assert code == 0, err
        assert got == json.loads(out), path
    assert client.get("/api/history?limit=5").json()["queries"][0]["id"] == first["query_id"]
    r = client.post(f"/api/replay/{first['query_id']}")
    assert r.status_code == 200 and float(r.headers["X-Elapsed-Seconds"]) > 0
    code, out, _ = cli("--home", ws, "query", "--replay", str(first["query_id"]), "--json")
    assert r.json() == json.loads(out)
    assert r.json()["matches"] == first["matches"]


@pytest.mark.parametrize("body, status, name, words", [
    ({"examples": [], "k": 5}, 400, "InvalidInputError", "examples"),
    ({"examples": "P", "k": 0}, 400, "InvalidInputError", "k must be in 1..10000"),
    ({"examples": "P", "k": 10_001}, 400, "InvalidInputError", "k must be in"),
    ({"examples": "P", "threshold": 1.5}, 400, "InvalidInputError", "threshold"),
    ({"examples": "P", "threshold": 0.9, "min_separation": 50}, 400, "InvalidInputError", "do not combine"),
    ({"examples": "P", "max_results": 10**7}, 400, "InvalidInputError", "max_results"),
    ({"examples": "P", "index": "nope"}, 404, "IndexNotFoundError", "nope"),
    ({"examples": "WATER"}, 422, "NoDataError", ""),
    ({"examples": "FAR"}, 404, "NoCoverageError", ""),
    ({"examples": "BIG"}, 400, "InvalidInputError", "km2"),
    ({"examples": "MANY"}, 400, "InvalidInputError", "vertices"),
    ({"examples": "NEG"}, 400, "InvalidInputError", "positive"),
    ({"examples": "LINE"}, 400, "InvalidInputError", "LineString"),
])
def test_bad_queries_are_json_errors_with_our_names(ws, client, body, status, name, words):
    lon, lat = lonlat(ws, 20, 30)
    ring = [[lon + 0.0001 * math.cos(a), lat + 0.0001 * math.sin(a)] for a in np.linspace(0, 2 * math.pi, 1200)]
    examples = {
        "P": [point(lon, lat)], "WATER": [point(*lonlat(ws, 20, 1))], "FAR": [point(10.0, 10.0)],
        "BIG": [square(lon, lat, half_deg=0.1)], "NEG": [point(lon, lat, positive=False)],
        "MANY": [{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}],
        "LINE": [{"type": "Feature", "properties": {}, "geometry": {"type": "LineString", "coordinates": [[lon, lat], [lon, lat + 0.001]]}}],
    }
    body = {"index": INDEX, **body}
    if isinstance(body["examples"], str):
        body["examples"] = examples[body["examples"]]
    r = client.post("/api/query", json=body)
    assert r.status_code == status, r.text
    doc = r.json()
    assert doc["error"] == name and words in doc["message"], doc


def test_requests_and_names_are_bounded(client):
    r = client.post("/api/query", content=b"not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "InvalidInputError"
    r = client.post("/api/query", content=b"x" * (2 << 20))
    assert r.status_code == 400 and "bytes" in r.json()["message"]
    assert client.get("/api/tiles/embeddings/web/21/0/0.png").json()["error"] == "InvalidInputError"
    assert client.get("/api/tiles/embeddings/web/3/8/0.png").status_code == 400
    assert client.get("/api/tiles/embeddings/web/a/0/0.png").json()["error"] == "InvalidInputError"
    for name in ("..", ".hidden", "a%2Fb", "%2E%2E%2Fcatalog.duckdb"):
        r = client.get(f"/api/files/{name}")
        assert r.status_code in (400, 404) and r.json()["error"] in ("InvalidInputError", "NotFound"), name
    assert client.get("/api/files/nothing-here.tif").json()["error"] == "TileNotFoundError"
    assert client.get("/api/jobs/99999").status_code == 404
    assert client.get("/api/outlines?bbox=0,0,40,40").json()["error"] == "InvalidInputError"
    r = client.get("/api/config", headers={"Host": "attacker.example"})
    assert r.status_code == 400  # DNS rebinding: only local host names are served


def test_exports_use_the_cli_writers_and_download_by_name(ws, client, cli, tmp_path):
    import rasterio

    lon, lat = lonlat(ws, 20, 30)
    doc = client.post("/api/query", json={"index": INDEX, "examples": [point(lon, lat)], "k": 40}).json()
    cli_tif = tmp_path / "cli.tif"
    code, _, err = cli("--home", ws, "query", "--replay", str(doc["query_id"]), "--out", cli_tif)
    assert code == 0, err
    r = client.post("/api/export", json={"query_id": doc["query_id"], "format": "tif"})
    assert r.status_code == 202
    job = wait(client, r.json())
    assert job["state"] == "done", job
    names = [f["name"] for f in job["result"]["files"]]
    assert names[0].endswith(".tif") and names[1].endswith(".png")
    got = client.get(job["result"]["files"][0]["url"])
    assert got.status_code == 200
    (tmp_path / "web.tif").write_bytes(got.content)
    with rasterio.open(tmp_path / "web.tif") as a, rasterio.open(cli_tif) as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.transform == b.transform and a.crs == b.crs
        assert int((a.read(1) == 1).sum()) == 40
    for fmt in ("geojson", "parquet"):
        job = wait(client, client.post("/api/export", json={"query_id": doc["query_id"], "format": fmt}).json())
        assert job["state"] == "done", job
        path = client.exports / job["result"]["files"][0]["name"]
        if fmt == "geojson":
            feats = json.loads(path.read_text())["features"]
            assert [f["properties"]["id"] for f in feats] == [m["id"] for m in doc["matches"]]
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            assert b"geo" in table.schema.metadata and table.column("id").to_pylist() == [m["id"] for m in doc["matches"]]
    bad = client.post("/api/export", json={"query_id": doc["query_id"], "format": "shp"})
    assert bad.status_code == 400 and "format" in bad.json()["message"]
    missing = wait(client, client.post("/api/export", json={"query_id": 987654, "format": "csv"}).json())
    assert missing["state"] == "error" and missing["error"]["error"] == "IndexNotFoundError"
    listed = {f["name"] for f in client.get("/api/files").json()["files"]}
    assert set(names) <= listed


def label_examples(ws) -> list[dict]:
    # small_tile's classes are blocks of 10 rows x 12 columns; two classes, spread out
    feats = []
    for tile in NAIROBI_TILES[:2]:
        for r, c in ((5, 6), (25, 6), (45, 30), (5, 54)):
            feats.append(point(*lonlat(ws, r, c, tile), **{"class": "a"}))
        for r, c in ((15, 6), (35, 6), (5, 18), (45, 42)):
            feats.append(point(*lonlat(ws, r, c, tile), **{"class": "b"}))
    return feats


def test_label_job_makes_the_cli_class_map_and_cv(ws, client, cli, tmp_path):
    import rasterio

    body = {"index": INDEX, "scope": "index", "examples": label_examples(ws), "k": 3, "cv": 2, "block_size": 100}
    r = client.post("/api/label", json=body)
    assert r.status_code == 202, r.text
    job = wait(client, r.json())
    assert job["state"] == "done", job
    res = job["result"]
    assert set(res) == {"cv", "map"} and res["map"]["classes"] == ["a", "b"]
    examples = sorted(client.exports.glob("labels-*.geojson"))[-1]  # what the app wrote for the job
    out = tmp_path / "classes.tif"
    code, stdout, err = cli("--home", ws, "label", "--examples", examples, "--class-field", "class",
                            *sum((["--tile", t] for t in NAIROBI_TILES[:2]), []), "--year", "2023", "--k", "3",
                            "--cv", "2", "--block-size", "100", "--out", out, "--json")
    assert code == 0, err
    expected = json.loads(stdout)
    assert res["cv"] == expected["cv"]
    for key in ("legend", "classes", "pixels", "n_pixels", "examples_per_class", "tiles", "crs", "transform"):
        assert res["map"][key] == expected["map"][key], key
    with rasterio.open(client.exports / res["map"]["file"]["name"]) as a, rasterio.open(out) as b:
        np.testing.assert_array_equal(a.read(), b.read())
    assert set(res["map"]["legend_colours"]) == set(res["map"]["legend"])
    # the class map draws as XYZ tiles
    lon, lat = lonlat(ws, 24, 28)
    z = 17
    x = int((lon + 180) / 360 * 2**z)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * 2**z)
    tile = client.get(res["map"]["file"]["tiles"].format(z=z, x=x, y=y))
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/png"
    assert client.get(res["map"]["file"]["tiles"].format(z=z, x=x + 50, y=y)).status_code == 204


def test_label_over_the_view_and_suggest(ws, client):
    lon, lat = lonlat(ws, 24, 28)
    view = [lon - 0.001, lat - 0.001, lon + 0.001, lat + 0.001]
    job = wait(client, client.post("/api/label", json={"index": INDEX, "scope": "view", "bbox": view,
                                                      "examples": label_examples(ws), "k": 3}).json())
    assert job["state"] == "done", job
    assert job["result"]["tiles"] == [NAIROBI_TILES[0]]
    assert 0 < job["result"]["n_pixels"] < 48 * 56  # only the view's pixels
    job = wait(client, client.post("/api/suggest", json={"index": INDEX, "scope": "index", "n": 4,
                                                        "min_distance": 50, "examples": label_examples(ws)}).json())
    assert job["state"] == "done", job
    assert job["result"]["n"] == 4 and len(job["result"]["suggestions"]) == 4
    assert (client.exports / job["result"]["file"]["name"]).is_file()
    far = client.post("/api/label", json={"index": INDEX, "scope": "view", "bbox": [10, 10, 11, 11],
                                          "examples": label_examples(ws)})
    assert far.status_code == 400 and "none of the index's tiles" in far.json()["message"]
    nocls = client.post("/api/label", json={"index": INDEX, "scope": "index", "examples": [point(lon, lat)]})
    assert nocls.status_code == 400 and "class" in nocls.json()["message"]


def test_jobs_report_progress_and_cancel(ws, client):
    import threading

    from tessera_search import label as lab
    from tessera_search.serve._jobs import Job, JobCancelled

    # a running label map is stopped at the next tile, and leaves no file behind
    job = Job(1, "label")
    out = client.exports / "cancelled.tif"
    with pytest.raises(JobCancelled):
        lab.label_region(_examples_file(client, ws), NAIROBI_TILES[:2], 2023, out,
                         class_field="class", k=3, home=ws, progress=job.progress,
                         on_progress=lambda done, total: setattr(job, "cancel_requested", True))
    assert job.done == 2 and job.total == 2  # raised at the second tile's advance, before the map was finished
    assert not out.exists() and not list(client.exports.glob(".cancelled*"))
    # through the API: a queued job cancelled before it starts never runs; a running one stops
    gate, started = threading.Event(), threading.Event()

    def blocker(j):
        with j.progress("waiting", None) as advance:
            started.set()
            while True:
                gate.wait(0.02)
                advance()

    running = client.service.jobs.submit("test", blocker)
    assert started.wait(10)
    queued = client.post("/api/label", json={"index": INDEX, "scope": "index", "examples": label_examples(ws),
                                             "k": 3}).json()
    assert client.get(f"/api/jobs/{queued['id']}").json()["state"] == "queued"
    assert client.delete(f"/api/jobs/{queued['id']}").json()["state"] == "cancelled"
    doc = client.delete(f"/api/jobs/{running.id}").json()
    assert doc["id"] == running.id
    assert wait(client, doc)["state"] == "cancelled" and running.done > 0
    assert wait(client, queued)["state"] == "cancelled"


def _examples_file(client, ws) -> Path:
    path = client.exports / "cancel-examples.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": label_examples(ws)}))
    return path


def test_embedding_tiles_are_the_index_pixels_in_pca_colours(ws, client):
    from tessera_search.grid import lonlat_to_pixel
    from tessera_search.serve._tiles import tile_lonlat

    lon, lat = lonlat(ws, 24, 28)
    z = 18
    x = int((lon + 180) / 360 * 2**z)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * 2**z)
    r = client.get(f"/api/tiles/embeddings/{INDEX}/{z}/{x}/{y}.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    from io import BytesIO

    from PIL import Image

    img = np.asarray(Image.open(BytesIO(r.content)).convert("RGBA"))
    assert (img[..., 3] == 255).sum() > 1000 and len(np.unique(img[..., :3].reshape(-1, 3), axis=0)) > 20
    # every opaque XYZ pixel has the PCA colour of the indexed pixel holding its centre
    renderer = client.service.renderer(INDEX)
    tlon, tlat = tile_lonlat(z, x, y)
    tile = Tile.from_name(NAIROBI_TILES[0])
    rows, cols, inside = lonlat_to_pixel(renderer.index.grid(tile), tlon, tlat)
    colours = renderer.tile_colours(tile)
    vecs = TileStore(ws).read(tile, 2023).embeddings
    some = np.argwhere(inside & (img[..., 3] == 255))[::97][:20]
    assert len(some) >= 5
    for i, j in some:
        expected = renderer.pca.colours(vecs[rows[i, j], cols[i, j]][None, :])[0]
        np.testing.assert_array_equal(img[i, j, :3], expected)
        np.testing.assert_array_equal(colours[rows[i, j], cols[i, j], :3], expected)
    # zoomed out, every step-th pixel of every step-th row stands for its block
    assert [renderer.step_for(zz, lat) for zz in (13, 12, 11, 10, 9, 5)] == [1, 2, 4, 8, 16, 16]
    coarse = renderer.tile_colours(tile, 4)
    assert coarse.shape[:2] == (12, 14)
    np.testing.assert_array_equal(coarse[6, 7], colours[24, 28])
    assert coarse[:, 0, 3].max() == 0 and coarse[:, 1, 3].min() == 255  # columns 0-2 are water; 4 is land
    # water (the tile's west strip) and places off the index stay transparent
    assert colours[:, :3, 3].max() == 0
    assert client.get(f"/api/tiles/embeddings/{INDEX}/{z}/{x + 400}/{y}.png").status_code == 204
    assert client.get(f"/api/tiles/embeddings/{INDEX}/2/1/1.png").status_code == 204


def test_country_outlines_from_natural_earth(client):
    doc = client.get("/api/outlines?bbox=36,-4,39,-2").json()
    names = {f["properties"]["name"] for f in doc["features"]}
    assert {"Kenya", "Tanzania"} <= names
    assert all(f["geometry"]["type"] in ("LineString", "MultiLineString") for f in doc["features"])


def test_page_and_assets_are_packaged_and_offline(client):
    import re
    import tomllib
    from fnmatch import fnmatch

    page = client.get("/")
    assert page.status_code == 200 and "leaflet.js" in page.text
    static = Path(__file__).resolve().parents[1] / "tessera_search" / "serve" / "static"
    for ref in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        if ref.startswith("data:"):
            continue
        assert ref.startswith("/static/"), ref  # nothing from another host
        assert client.get(ref).status_code == 200, ref
    for name in ("index.html", "app.js", "app.css"):  # our own files name no other host (the browser
        assert not re.search(r"https?://", (static / name).read_text()), name  # test checks every request)
    assert (static / "vendor" / "leaflet" / "LICENSE").read_text().startswith("BSD 2-Clause License")
    patterns = tomllib.loads((static.parents[2] / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["tessera_search.serve"]
    for path in static.rglob("*"):
        if path.is_file():
            rel = path.relative_to(static.parent).as_posix()
            assert any(fnmatch(rel, p) and rel.count("/") == p.count("/") for p in patterns), rel


def test_config_lists_the_index_with_its_extent(ws, client):
    doc = client.get("/api/config").json()
    assert doc["index"] == INDEX and doc["basemap"] is None and doc["years"] == [2023]
    assert doc["store_years"] == [2023, 2024]
    (entry,) = doc["indexes"]
    assert entry["bounds"] == [36.7, -1.4, 36.8, -1.2] and entry["n_tiles"] == 2
    assert doc["limits"]["k"] == 10_000
    from tessera_search.serve._service import Service

    url = "https://tiles.example.org/{z}/{x}/{y}.png"
    other = Service(ws, year=2023, basemap=url)
    assert other.config()["basemap"] == url and other.default_index == INDEX
    other.close()


def test_serve_command_checks_before_it_serves(ws, cli, monkeypatch):
    monkeypatch.setattr("tessera_search.serve.run_server", lambda *a, **k: pytest.fail("it served"))
    code, out, err = cli("serve", "--help")
    assert code == 0 and "--basemap" in out and "--open" in out
    code, out, err = cli("--home", ws, "serve", "--index", "nope", "--port", "1")
    assert code == 1 and "IndexNotFoundError" in err
    code, out, err = cli("--home", ws, "serve", "--basemap", "tiles.example/{z}")
    assert code == 2 and "basemap" in err
