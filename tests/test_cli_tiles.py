"""CLI: tiles, synthesize, download, info, pixel. Set up with the library, act through the
CLI, check with the library and the files the CLI wrote."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from _helpers import NAIROBI_BBOX, NAIROBI_TILES, write_mirror

from tessera_search.grid import Tile, pixel_to_lonlat
from tessera_search.sources.layout import bucket_paths
from tessera_search.store import TileStore


def test_tiles_json_for_a_bbox(cli):
    code, out, err = cli("tiles", "--bbox", NAIROBI_BBOX, "--year", "2023", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["count"] == 4 and doc["tiles"] == NAIROBI_TILES


def test_tiles_for_kenya_are_the_polygons_not_the_bbox(cli):
    code, out, _ = cli("tiles", "--region", "KENYA", "--year", "2023", "--json")
    assert code == 0
    doc = json.loads(out)
    # Kenya's bounding box (33.9..41.9 E, 4.7 S..5.0 N) holds about 80 x 97 cells
    assert 3000 < doc["count"] < 80 * 97 * 0.8
    assert "grid_36.85_-1.25" in doc["tiles"] and doc["count"] == len(set(doc["tiles"]))


def test_unknown_region_suggests_close_names(cli):
    code, out, err = cli("tiles", "--region", "kenia")
    assert code == 2 and out == ""
    assert "UnknownRegionError" in err and "Kenya" in err


def test_bad_input_exits_with_clear_errors(cli, home):
    code, _, err = cli("tiles", "--bbox", "36.9,-1.4,36.7,-1.2")
    assert code == 2 and "InvalidBBoxError" in err
    code, _, err = cli("tiles")
    assert code == 2 and "InvalidInputError" in err
    code, _, err = cli("tiles", "--bbox", NAIROBI_BBOX, "--region", "kenya")
    assert code == 2 and "InvalidInputError" in err
    code, _, err = cli("--home", home, "pixel", "--point", "36.8", "--year", "2023")
    assert code == 2 and "InvalidPointError" in err
    code, _, err = cli("pixel", "--year", "2023")  # missing option: a usage error
    assert code == 2


def test_download_pixel_info_through_the_cli(cli, tmp_path, home):
    written = write_mirror(tmp_path / "m", NAIROBI_TILES)
    code, out, err = cli("--home", home, "download", "--bbox", NAIROBI_BBOX, "--year", "2023",
                         "--source", tmp_path / "m", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert sorted(rep["stored"]) == sorted(NAIROBI_TILES) and rep["failed"] == []
    store = TileStore(home)
    assert len(store.list(2023)) == 4

    # a valid pixel: the JSON equals the store, float32 values round-trip exactly
    data = written["grid_36.85_-1.25"]
    lon, lat = pixel_to_lonlat(data.grid, 20, 30)
    code, out, err = cli("--home", home, "pixel", "--point", f"{float(lon):.7f},{float(lat):.7f}", "--year", "2023", "--json")
    assert code == 0, err
    px = json.loads(out)
    assert (px["tile"], px["row"], px["col"], px["valid"]) == ("grid_36.85_-1.25", 20, 30, True)
    assert set(px) >= {"tile", "row", "col", "valid", "scale", "int8", "embedding"}
    assert px["int8"] == data.embeddings[20, 30].tolist()
    assert np.float32(px["scale"]) == data.scales[20, 30]
    emb = np.array(px["embedding"], dtype=np.float32)
    np.testing.assert_array_equal(emb, data.embeddings[20, 30].astype(np.float32) * data.scales[20, 30])

    # a pixel on the water strip: valid false, no embedding
    lon, lat = pixel_to_lonlat(data.grid, 20, 1)
    code, out, _ = cli("--home", home, "pixel", "--point", f"{float(lon):.7f},{float(lat):.7f}", "--year", "2023", "--json")
    assert code == 0
    px = json.loads(out)
    assert px["valid"] is False and px["embedding"] is None

    # outside the store: a clear error, non-zero exit
    code, out, err = cli("--home", home, "pixel", "--point", "10.0,10.0", "--year", "2023")
    assert code == 1 and "NoCoverageError" in err and "download" in err

    code, out, _ = cli("--home", home, "info", "--json")
    info = json.loads(out)
    assert info["tiles"][0]["tiles"] == 4 and info["tiles"][0]["year"] == 2023
    code, out, _ = cli("--home", home, "info")
    assert code == 0 and "tiles" in out


def test_download_reports_bad_tiles_and_exits_zero(cli, tmp_path, home):
    write_mirror(tmp_path / "m", NAIROBI_TILES)
    g = tmp_path / "m" / bucket_paths("v1", 2023, Tile.from_name("grid_36.75_-1.35"))["grid"]
    g.write_bytes(g.read_bytes()[:500])
    code, out, err = cli("--home", home, "download", "--bbox", NAIROBI_BBOX, "--year", "2023",
                         "--source", tmp_path / "m")
    assert code == 0
    assert "skipped grid_36.75_-1.35 (2023): truncated .npy" in err
    assert "3 stored" in out and "1 skipped" in out


def test_home_from_environment(cli, tmp_path, monkeypatch):
    write_mirror(tmp_path / "m", NAIROBI_TILES[:1])
    monkeypatch.setenv("TESSERA_SEARCH_HOME", str(tmp_path / "envhome"))
    code, _, err = cli("download", "--tile", NAIROBI_TILES[0], "--year", "2023", "--source", tmp_path / "m")
    assert code == 0, err
    assert TileStore(tmp_path / "envhome").has(Tile.from_name(NAIROBI_TILES[0]), 2023)


def test_every_command_has_help(cli):
    from tessera_search.cli import _register, app

    _register()
    names = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]
    assert {"tiles", "synthesize", "download", "info", "pixel"} <= set(names)
    for c in app.registered_commands:
        assert c.callback.__doc__, f"command {c.name} has no help text"
    for name in names:
        code, out, _ = cli(name, "--help")
        assert code == 0 and "Usage" in out


def test_help_is_fast_and_imports_nothing_heavy():
    code = (
        "import sys; from tessera_search.cli import main; main(['--help']);"
        "heavy = [m for m in ('faiss', 'torch', 'zarr', 'rasterio', 'duckdb', 'pyarrow') if m in sys.modules];"
        "sys.exit(1 if heavy else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_synthesize_then_download_nairobi(cli, tmp_path, home, http_mirror):
    """Issue 2, done-when: 4 tiles stored, exactly the mirror's int8 values and scales, also over HTTP."""
    mirror = tmp_path / "M"
    code, out, err = cli("synthesize", "--bbox", NAIROBI_BBOX, "--year", "2023", "--out", mirror, "--json")
    assert code == 0, err
    assert json.loads(out)["synthetic"] is True
    code, out, err = cli("--home", home, "download", "--bbox", NAIROBI_BBOX, "--year", "2023", "--source", mirror)
    assert code == 0, err
    store = TileStore(home)
    assert sorted(t.name for t, _ in store.list(2023)) == sorted(NAIROBI_TILES)
    for name in NAIROBI_TILES:
        tile = Tile.from_name(name)
        p = bucket_paths("v1", 2023, tile)
        back = store.read(tile, 2023)
        np.testing.assert_array_equal(back.embeddings, np.load(mirror / p["grid"]))
        np.testing.assert_array_equal(back.scales.view(np.uint32), np.load(mirror / p["scales"]).view(np.uint32))
        assert back.synthetic
    url, _ = http_mirror(mirror)
    home2 = tmp_path / "ws2"
    code, out, err = cli("--home", home2, "download", "--bbox", NAIROBI_BBOX, "--year", "2023", "--source", url)
    assert code == 0, err
    for name in NAIROBI_TILES:
        tile = Tile.from_name(name)
        a, b = TileStore(home).read(tile, 2023), TileStore(home2).read(tile, 2023)
        np.testing.assert_array_equal(a.embeddings, b.embeddings)
        np.testing.assert_array_equal(a.scales.view(np.uint32), b.scales.view(np.uint32))


def test_pixel_fetches_its_tile_with_source_and_names_the_command_without(cli, tmp_path, home):
    written = write_mirror(tmp_path / "m", NAIROBI_TILES[3:])
    data = written[NAIROBI_TILES[3]]
    lon, lat = pixel_to_lonlat(data.grid, 20, 20)
    code, _, err = cli("--home", home, "pixel", "--point", f"{float(lon)},{float(lat)}", "--year", "2023")
    assert code == 1 and "NoCoverageError" in err
    assert f"tessera-search download --tile {NAIROBI_TILES[3]} --year 2023" in err
    code, out, err = cli("--home", home, "pixel", "--point", f"{float(lon)},{float(lat)}", "--year", "2023",
                         "--source", tmp_path / "m", "--json")
    assert code == 0, err
    px = json.loads(out)
    assert px["tile"] == NAIROBI_TILES[3] and px["int8"] == [int(v) for v in data.embeddings[20, 20]]
