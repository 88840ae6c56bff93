"""One rule for errors and exit codes, JSON errors, typed write errors, and the smaller
hardening items: bad option values are usage errors (2), failures are 1, ``--json``
errors are JSON on stdout, every failed write is a WriteError, warnings shown once."""

from __future__ import annotations

import errno
import json
import warnings

import numpy as np
import pytest
from _helpers import NAIROBI_TILES, small_tile, write_mirror

from tessera_search.errors import CheckpointError, TesseraSearchWarning, WriteError
from tessera_search.grid import Tile, pixel_to_lonlat
from tessera_search.index import build_index
from tessera_search.sources.layout import bucket_paths
from tessera_search.store import TileStore
from tessera_search.workspace import Workspace

TILE = "grid_36.85_-1.25"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """One small tile stored and indexed as ``one``."""
    home = tmp_path_factory.mktemp("errors-ws")
    Workspace(home).put(small_tile(TILE))
    build_index(tiles=[TILE], year=2023, home=home, name="one", progress=False)
    return home


def _point(home) -> str:
    grid = TileStore(home).grid(Tile.from_name(TILE), 2023)
    lon, lat = pixel_to_lonlat(grid, 20, 20)
    return f"{float(lon)},{float(lat)}"


def test_bad_option_values_are_usage_errors_in_every_command(cli, ws, tmp_path):
    cases = [
        (["tiles", "--bbox", "36.9,-1.4,36.7,-1.2"], "InvalidBBoxError"),
        (["tiles", "--region", "kenia"], "UnknownRegionError"),
        (["query", "--point", "36.8;-1.3", "--index", "one"], "InvalidPointError"),
        (["query", "--point", "200,0", "--index", "one"], "InvalidPointError"),
        (["query", "--point", _point(ws), "--index", "one", "--out", tmp_path / "x.shp"], "InvalidInputError"),
        (["change", "--tile", TILE, "--years", "2020,2024", "--out", tmp_path / "c.shp"], "InvalidInputError"),
        (["label", "--examples", tmp_path / "e.geojson", "--tile", TILE, "--year", "2023",
          "--out", tmp_path / "c.png"], "InvalidInputError"),
        (["query", "--point", _point(ws), "--index", "one", "--k", "0"], "--k"),
    ]
    for args, name in cases:
        code, out, err = cli("--home", ws, *args)
        assert code == 2, (args, err)
        assert name in err and "Traceback" not in err, (args, err)
        assert out == ""


def test_out_suffix_error_lists_every_supported_extension(cli, ws, tmp_path):
    code, _, err = cli("--home", ws, "query", "--point", _point(ws), "--index", "one", "--out", tmp_path / "m.shp")
    assert code == 2
    for ext in (".tif", ".tiff", ".png", ".geojson", ".json", ".parquet", ".csv"):
        assert ext in err
    assert not (tmp_path / "m.shp").exists()


def test_json_errors_are_json_on_stdout_too(cli, ws):
    code, out, err = cli("--home", ws, "query", "--point", _point(ws), "--index", "nope", "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["error"] == "IndexNotFoundError" and "nope" in doc["message"]
    assert "IndexNotFoundError" in err
    code, out, _ = cli("tiles", "--region", "kenia", "--json")
    doc = json.loads(out)
    assert code == 2 and doc["error"] == "UnknownRegionError" and "Kenya" in doc["suggestions"]
    code, out, _ = cli("--home", ws, "query", "--point", _point(ws), "--k", "0", "--json")
    doc = json.loads(out)
    assert code == 2 and doc["error"] == "UsageError" and "--k" in doc["message"]


def test_download_with_nothing_stored_fails_and_says_how_many_were_skipped(cli, tmp_path, home):
    mirror = tmp_path / "m"
    write_mirror(mirror, NAIROBI_TILES[:2])
    for name in NAIROBI_TILES[:2]:  # both tiles truncated after the manifest was written
        p = mirror / bucket_paths("v1", 2023, Tile.from_name(name))["grid"]
        p.write_bytes(p.read_bytes()[:1000])
    args = ["--home", home, "download", "--year", "2023", "--source", mirror]
    code, out, err = cli(*args, "--tile", NAIROBI_TILES[0], "--tile", NAIROBI_TILES[1], "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["error"] == "NothingStoredError" and "2 skipped" in doc["message"]
    assert len(doc["details"]["failed"]) == 2
    # a tile the source does not offer at all: not stored either
    code, _, err = cli(*args, "--tile", NAIROBI_TILES[3])
    assert code == 1 and "NothingStoredError" in err and "1 not offered" in err
    assert TileStore(home).list() == []


def test_download_partial_success_exits_0_with_the_report(cli, tmp_path, home):
    mirror = tmp_path / "m"
    write_mirror(mirror, NAIROBI_TILES[:2])
    p = mirror / bucket_paths("v1", 2023, Tile.from_name(NAIROBI_TILES[1]))["grid"]
    p.write_bytes(p.read_bytes()[:1000])
    code, out, err = cli("--home", home, "download", "--year", "2023", "--source", mirror,
                         "--tile", NAIROBI_TILES[0], "--tile", NAIROBI_TILES[1])
    assert code == 0, err
    assert "1 stored" in out and "1 skipped" in out
    assert err.count("truncated") == 1  # each skipped tile said once, on stderr


def test_query_out_under_a_file_is_a_write_error_not_a_traceback(cli, ws, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    for name in ("m.tif", "m.geojson"):
        code, out, err = cli("--home", ws, "query", "--point", _point(ws), "--index", "one",
                             "--out", blocker / "dir" / name)
        assert code == 1, err
        assert "WriteError" in err and "afile" in err and "Traceback" not in err
    assert blocker.read_text() == "not a folder"


def test_a_full_disk_during_an_export_is_a_write_error_and_leaves_nothing(cli, ws, tmp_path, monkeypatch):
    import rasterio.shutil

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rasterio.shutil, "copy", full)
    code, _, err = cli("--home", ws, "query", "--point", _point(ws), "--index", "one", "--k", "5",
                       "--out", tmp_path / "m.tif")
    assert code == 1
    assert "WriteError" in err and "disk is full" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_atomic_writes_turn_os_errors_into_write_errors(tmp_path):
    from tessera_search._io import atomic_path

    blocker = tmp_path / "f"
    blocker.write_text("x")
    with pytest.raises(WriteError, match="is a file, not a folder"):
        with atomic_path(blocker / "out.json") as tmp:
            tmp.write_text("{}")
    target = tmp_path / "ok.json"
    with pytest.raises(WriteError, match="disk is full"):
        with atomic_path(target) as tmp:
            raise OSError(errno.ENOSPC, "No space left on device")
    assert not target.exists() and [p.name for p in tmp_path.iterdir()] == ["f"]


def test_one_class_label_map_warns_that_it_is_trivial(cli, tmp_path, home):
    data = small_tile(TILE)
    Workspace(home).put(data)
    pts = [pixel_to_lonlat(data.grid, r, c) for r, c in ((10, 20), (30, 40), (12, 30), (25, 8), (33, 33))]
    ex = tmp_path / "ex.geojson"
    ex.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"class": "crop"},
         "geometry": {"type": "Point", "coordinates": [float(lon), float(lat)]}} for lon, lat in pts]}))
    from tessera_search.label import label_region

    with pytest.warns(TesseraSearchWarning, match="one class only"):
        label_region(ex, [Tile.from_name(TILE)], 2023, None, class_field="class", k=3, home=home)
    code, _, err = cli("--home", home, "label", "--examples", ex, "--tile", TILE, "--year", "2023",
                       "--k", "3", "--out", tmp_path / "c.tif")
    assert code == 0, err
    assert err.count("one class only") == 1 and "Warning" in err


def test_garbage_weights_are_not_a_checkpoint(tmp_path):
    pytest.importorskip("torch")
    from tessera_search.encoder.checkpoint import read_checkpoint

    for i, blob in enumerate((np.random.default_rng(0).bytes(4096), b"hello, world\n", b"")):
        p = tmp_path / f"w{i}.pt"
        p.write_bytes(blob)
        with pytest.raises(CheckpointError, match="is not a torch checkpoint") as exc:
            read_checkpoint(p)
        assert "objects other than tensors" not in str(exc.value)


def test_a_pickled_object_checkpoint_is_still_refused_as_such(tmp_path):
    torch = pytest.importorskip("torch")
    from tessera_search.encoder.checkpoint import read_checkpoint

    p = tmp_path / "evil.pt"
    torch.save({"model_state_dict": {}, "thing": warnings.WarningMessage}, p)
    with pytest.raises(CheckpointError, match="objects other than tensors"):
        read_checkpoint(p)


@pytest.mark.parametrize("coords", [
    [[[0, 0], [1e200, 1e200], [1e200, 0], [0, 1e200], [0, 0]]],  # self-crossing: make_valid
    [[[0, 0], [1e200, 0], [1e200, 1e200], [0, 0]], [[1, 1], [1e200, 1], [1e200, 1e200], [1, 1]]],  # union
])
def test_huge_region_coordinates_are_refused_before_geos_overflows(cli, tmp_path, coords):
    path = tmp_path / "r.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}
        for ring in coords]}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow RuntimeWarning from shapely fails the test
        code, _, err = cli("tiles", "--region-file", path)
    assert code == 2 and "not lon/lat degrees" in err and "RuntimeWarning" not in err
