"""Recovery: killed and failed builds, lost files, rebuild races, read-only and damaged catalogs.

The files on disk are the truth; each test leaves the workspace in a state a real failure
leaves it in, checks what readers and ``list_indexes`` say, then reruns ``build_index``
and compares with a clean build.
"""

from __future__ import annotations

import errno
import os
import threading

import numpy as np
import pytest

from tessera_search.catalog import Catalog
from tessera_search.errors import CatalogError, IndexCorruptError, WriteError
from tessera_search.grid import Tile, pixel_to_lonlat
from tessera_search.index import build_index, list_indexes, open_index
from tessera_search.index import build as build_mod
from tessera_search.index.build import normalise
from tessera_search.index.shards import LOCK, ShardFiles, index_dir
from tessera_search.query import history, point_query, run_query, search_index
from tessera_search.store import TileStore
from tessera_search.workspace import Workspace
from tessera_search.workspace import workspace_info

from _helpers import NAIROBI_TILES, small_tile

TILES = NAIROBI_TILES[:2]
NAME = "nbi"


class _Stop(Exception):
    """Stands for the process being killed at that moment."""


def _fill(home, tiles=TILES):
    ws = Workspace(home)
    for name in tiles:
        ws.put(small_tile(name))


def _build(home, **kw):
    """Two shards of one tile each."""
    return build_index(tiles=TILES, year=2023, home=home, name=NAME, progress=False, shard_size=1500, **kw)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A clean build of the same index, to compare repaired ones with."""
    home = tmp_path_factory.mktemp("clean")
    _fill(home)
    return home, _build(home)


def _same_as_clean(home, clean_home):
    a, b = open_index(NAME, home=home), open_index(NAME, home=clean_home)
    assert a.n_vectors == b.n_vectors and len(a.shards) == len(b.shards) == 2
    for i in range(2):
        fa, fb = ShardFiles(a.generation, i), ShardFiles(b.generation, i)
        for x, y in ((fa.pixels, fb.pixels), (fa.index, fb.index)):
            assert x.read_bytes() == y.read_bytes()
    q = normalise(b.shards[1].vectors[5:6])[0]
    ra, rb = a.search(q, k=50), b.search(q, k=50)
    assert np.array_equal(ra.ids, rb.ids) and np.array_equal(ra.similarity, rb.similarity)


def _catalog_row(home):
    return Catalog(home).index(NAME)


def _land_point(home):
    lon, lat = pixel_to_lonlat(TileStore(home).grid(Tile.from_name(TILES[0]), 2023), 20, 30)
    return float(lon), float(lat)


def _dead_pid() -> int:
    for pid in range(4_000_000, 3_000_000, -7919):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except OSError:
            continue
    pytest.skip("no free pid found")


# -- 5b: debris of a killed build --------------------------------------------------


def test_build_start_removes_the_temporary_files_a_killed_build_left(tmp_path):
    _fill(tmp_path)

    def stop(done, total):
        raise _Stop

    with pytest.raises(_Stop):
        _build(tmp_path, on_shard=stop)
    idir = index_dir(tmp_path, NAME)
    (gen,) = [p for p in idir.iterdir() if p.name.startswith("gen-")]
    debris = [idir / ".CURRENT.k1ll3d.tmp", gen / ".shard-00001.pixels.a8f2.tmp", gen / ".manifest.json.x1.tmp",
              gen / ".shard-00001.faissindex.zz.tmp"]
    for p in debris:
        p.write_bytes(b"")  # what mkstemp left when the process died
    (gen / ".stage.tmp").mkdir()
    (gen / ".stage.tmp" / "part").write_bytes(b"x")
    rep = _build(tmp_path)
    assert rep.shards_reused == 1 and rep.shards_built == 1 and rep.generation == gen.name
    left = [p for p in idir.rglob("*") if p.name.endswith(".tmp")]
    assert left == []
    assert (idir / LOCK).exists()  # not debris


# -- 6a: killed between the generation switch and the catalog update ----------------


@pytest.mark.parametrize("heal", ["rerun", "list"])
def test_killed_after_the_switch_the_files_win(tmp_path, monkeypatch, clean, heal):
    _fill(tmp_path)
    real = build_mod.set_current

    def switch_then_die(idir, gen):
        real(idir, gen)
        raise _Stop

    monkeypatch.setattr(build_mod, "set_current", switch_then_die)
    monkeypatch.setattr(build_mod, "_settle", lambda *a: None, raising=False)  # a killed process cleans nothing
    with pytest.raises(_Stop):
        _build(tmp_path)
    monkeypatch.undo()
    assert _catalog_row(tmp_path)["status"] == "building"  # what the kill left behind

    idx = open_index(year=2023, home=tmp_path)  # the query --year path finds it on disk
    assert idx.name == NAME and idx.n_vectors == open_index(NAME, home=clean[0]).n_vectors
    assert len(run_query(_land_point(tmp_path), k=5, year=2023, home=tmp_path)) == 5
    if heal == "rerun":
        rep = _build(tmp_path)
        assert rep.up_to_date
    else:
        (row,) = list_indexes(tmp_path)
        assert row["status"] == "complete" and row["problems"] == [] and row["n_shards"] == 2
    row = _catalog_row(tmp_path)
    assert row["status"] == "complete" and row["n_shards"] == 2 and row["params"]["generation"] == idx.generation.name
    assert len(Catalog(tmp_path).shards(NAME)) == 2
    assert {r["tile"] for r in Catalog(tmp_path).index_tiles(NAME)} == set(TILES)
    _same_as_clean(tmp_path, clean[0])


# -- 6b: a shard file lost or truncated after the build ----------------------------


@pytest.mark.parametrize("damage", ["delete pixels", "truncate pixels", "delete faissindex", "truncate faissindex"])
def test_lost_shard_file_is_reported_and_rebuilt(tmp_path, clean, damage):
    _fill(tmp_path)
    first = _build(tmp_path)
    files = ShardFiles(first.path, 1)
    action, kind = damage.split()
    path = {"pixels": files.pixels, "faissindex": files.index}[kind]
    if action == "delete":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-8])

    with pytest.raises(IndexCorruptError, match=rf"damaged: {path.name} .*build-index --year 2023 "
                                                 rf"--tile {TILES[0]} --tile {TILES[1]} --name {NAME}"):
        open_index(NAME, home=tmp_path)
    with pytest.raises(IndexCorruptError, match="damaged"):
        run_query(_land_point(tmp_path), k=5, year=2023, home=tmp_path)
    (row,) = list_indexes(tmp_path)
    assert row["status"] == "damaged" and any(path.name in p for p in row["problems"])
    assert _catalog_row(tmp_path)["status"] == "damaged"

    rep = _build(tmp_path)
    assert not rep.up_to_date and rep.shards_built == 1 and rep.shards_reused == 1
    assert any(path.name in p for p in rep.repaired) and rep.generation != first.generation
    (row,) = list_indexes(tmp_path)
    assert row["status"] == "complete" and row["problems"] == []
    assert _catalog_row(tmp_path)["status"] == "complete"
    _same_as_clean(tmp_path, clean[0])
    assert _build(tmp_path).up_to_date


# -- 6c: a first build that fails leaves no 'building' row forever ------------------


def test_failed_first_build_shows_incomplete_and_resumes(tmp_path, clean):
    _fill(tmp_path)
    seen = {}

    def look_then_fail(done, total):
        (row,) = list_indexes(tmp_path)
        seen.update(status=row["status"], building=row["building"])
        raise _Stop

    with pytest.raises(_Stop):
        _build(tmp_path, on_shard=look_then_fail)
    assert seen == {"status": "building", "building": True}  # while it ran
    assert _catalog_row(tmp_path)["status"] == "incomplete"
    (row,) = list_indexes(tmp_path)
    assert row["status"] == "incomplete" and row["building"] is False

    # A kill instead: the row still says building, the lock names a process that is gone.
    Catalog(tmp_path).set_index_status(NAME, "building")
    (index_dir(tmp_path, NAME) / LOCK).write_text(str(_dead_pid()))
    (row,) = list_indexes(tmp_path)
    assert row["status"] == "incomplete" and row["building"] is False
    assert _catalog_row(tmp_path)["status"] == "incomplete"

    rep = _build(tmp_path)
    assert rep.shards_reused == 1 and rep.shards_built == 1
    assert list_indexes(tmp_path)[0]["status"] == "complete" == _catalog_row(tmp_path)["status"]
    _same_as_clean(tmp_path, clean[0])


# -- 7: a rebuild never hides the index ----------------------------------------------


def test_the_catalog_update_moment_does_not_hide_the_index(tmp_path, monkeypatch):
    """At the switch, readers see the index even when the catalog has no row for it."""
    _fill(tmp_path)
    first = _build(tmp_path)
    real = build_mod.set_current
    during = {}

    def switch_with_catalog_between(idir, gen):
        real(idir, gen)
        Catalog(tmp_path).delete_index(NAME)  # the moment an update deletes before it inserts
        during["year"] = open_index(year=2023, home=tmp_path).generation.name
        during["only"] = open_index(home=tmp_path).name
        during["listed"] = [(r["name"], r["status"]) for r in list_indexes(tmp_path)]

    monkeypatch.setattr(build_mod, "set_current", switch_with_catalog_between)
    second = _build(tmp_path, rebuild=True)
    assert during["year"] == second.generation != first.generation
    assert during["only"] == NAME and during["listed"] == [(NAME, "complete")]
    assert _catalog_row(tmp_path)["status"] == "complete"


def test_polling_open_by_year_during_rebuilds_never_misses(tmp_path):
    _fill(tmp_path, tiles=TILES[:1])
    build_index(tiles=TILES[:1], year=2023, home=tmp_path, name=NAME, progress=False)
    errors, polls = [], [0]

    def rebuild():
        try:
            for _ in range(3):
                build_index(tiles=TILES[:1], year=2023, home=tmp_path, name=NAME, progress=False, rebuild=True)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=rebuild)
    t.start()
    while t.is_alive():
        try:
            with open_index(year=2023, home=tmp_path) as idx:
                assert idx.name == NAME
            if polls[0] % 5 == 0:
                assert [r["status"] for r in list_indexes(tmp_path)] == ["complete"]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        polls[0] += 1
    t.join()
    assert errors == [] and polls[0] > 3
    assert _catalog_row(tmp_path)["status"] == "complete"


# -- 8: a full disk during build-index -------------------------------------------------


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _full_disk(monkeypatch, where):
    import pathlib

    import faiss

    if where == "fsync":
        monkeypatch.setattr(os, "fsync", _enospc)
    elif where == "manifest":
        real = pathlib.Path.write_text

        def write_text(self, *a, **k):
            if self.name.startswith(".manifest.json") and (self.parent / "trained.faissindex").exists():
                _enospc()
            return real(self, *a, **k)

        monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    else:
        def write_index(index, path, *a):
            raise RuntimeError(f"Error in faiss::FileIOWriter: write error in {path}: -1 != 4096 "
                               "(No space left on device)")

        monkeypatch.setattr(faiss, "write_index", write_index)


FULL = r"cannot write .* to .*: No space left on device; the disk is full"


@pytest.mark.parametrize("where", ["fsync", "manifest", "faiss"])
def test_full_disk_during_a_build_is_a_write_error(tmp_path, monkeypatch, where):
    _fill(tmp_path)
    _full_disk(monkeypatch, where)
    with pytest.raises(WriteError, match=FULL):
        _build(tmp_path)
    monkeypatch.undo()
    assert _catalog_row(tmp_path)["status"] == "incomplete"
    assert list_indexes(tmp_path)[0]["status"] == "incomplete"
    assert [p for p in index_dir(tmp_path, NAME).rglob("*.tmp")] == []
    before = _build(tmp_path)
    assert before.n_shards == 2 and _catalog_row(tmp_path)["status"] == "complete"

    _full_disk(monkeypatch, where)  # a rebuild that fails: the last complete index still serves
    with pytest.raises(WriteError, match=FULL):
        _build(tmp_path, rebuild=True)
    monkeypatch.undo()
    assert _catalog_row(tmp_path)["status"] == "complete"
    (row,) = list_indexes(tmp_path)
    assert row["status"] == "complete" and row["building"] is False and row["problems"] == []
    assert open_index(NAME, home=tmp_path).generation.name == before.generation


# -- 9: read-only workspaces -----------------------------------------------------------


@pytest.fixture
def published(tmp_path, clean):
    """A built workspace with one recorded query, as shipped to readers."""
    _fill(tmp_path)
    _build(tmp_path)
    first = run_query(_land_point(tmp_path), k=5, year=2023, home=tmp_path)
    assert first.query_id is not None and first.warnings == []
    return tmp_path, first


def _refuse_writes(monkeypatch):
    """The filesystem refuses to open the catalog for writing (tests run as root, where a
    chmod does not): DuckDB's own error, on read-write opens only."""
    import duckdb

    real = duckdb.connect
    calls = {"rw": 0}

    def connect(path, read_only=False, **kw):
        if not read_only:
            calls["rw"] += 1
            raise duckdb.IOException(f'IO Error: Cannot open file "{path}": Permission denied')
        return real(path, read_only=True, **kw)

    monkeypatch.setattr(duckdb, "connect", connect)
    return calls


def test_read_only_workspace_answers_info_indexes_history_and_queries(published, monkeypatch, cli):
    home, first = published
    calls = _refuse_writes(monkeypatch)
    info = workspace_info(home)
    assert info["stored_tile_years"] == 2 and sum(t["tiles"] for t in info["tiles"]) == 2
    assert [(i["name"], i["status"]) for i in info["indexes"]] == [(NAME, "complete")]
    assert [r["status"] for r in list_indexes(home)] == ["complete"]
    assert [h["id"] for h in history(home)] == [first.query_id]
    assert calls["rw"] == 0  # reads never try to write

    res = run_query(_land_point(home), k=5, year=2023, home=home)
    assert np.array_equal(res.ids, first.ids) and res.query_id is None
    (warning,) = res.warnings
    assert "not recorded in the history" in warning and "catalog" in warning and "Permission denied" in warning
    assert res.to_json()["warnings"] == [warning]
    with open_index(NAME, home=home) as idx:
        out = search_index(idx, point_query(idx, _land_point(home)), k=5)
    assert out.query_id is None and len(out.warnings) == 1
    with pytest.raises(WriteError, match="catalog"):
        Catalog(home).record_tile(TileStore(home).attrs(Tile.from_name(TILES[0]), 2023))

    for args in (["info"], ["indexes"], ["history"], ["query", "--point", "{},{}".format(*_land_point(home)),
                                                      "--k", "3", "--year", "2023"]):
        code, out, err = cli("--home", home, *args)
        assert code == 0, (args, err)
    assert [h["id"] for h in history(home)] == [first.query_id]


def test_read_only_flag_and_unwritable_folders(published, monkeypatch, tmp_path_factory):
    home, first = published
    cat = Catalog(home, read_only=True)
    assert not cat.writable() and cat.index(NAME)["status"] == "complete"
    with pytest.raises(WriteError, match="read-only"):
        cat.record_query(NAME, np.ones(128), {}, 0)
    assert cat.record_query_or_warning(NAME, np.ones(128), {}, 0)[0] is None

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if mode & os.W_OK else real_access(p, mode, **k))
    assert not Catalog(home).writable()
    res = run_query(_land_point(home), k=5, year=2023, home=home)
    assert res.query_id is None and "not recorded" in res.warnings[0]
    assert len(Catalog(home).queries()) == 1

    nowhere = tmp_path_factory.mktemp("empty") / "ws"
    assert Catalog(nowhere).tiles() == [] and list_indexes(nowhere) == [] and history(nowhere) == []
    assert workspace_info(nowhere)["indexes"] == []
    assert not nowhere.exists()  # reads create nothing


# -- 11c: a damaged catalog ------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_catalog_says_how_to_recover_and_recovery_works(tmp_path, damage, cli):
    _fill(tmp_path)
    rep = _build(tmp_path)
    path = Catalog(tmp_path).path
    if damage == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    else:
        path.write_bytes(path.read_bytes()[:4096])
    for f in tmp_path.glob("catalog.duckdb.wal"):
        f.unlink()
    with pytest.raises(CatalogError, match=r"is damaged .*store and the index files are intact.*move it aside "
                                           r"\(`mv .*catalog.duckdb .*catalog.duckdb.damaged`\).*tessera-search info"):
        list_indexes(tmp_path)
    code, _, err = cli("--home", tmp_path, "indexes")
    assert code == 1 and "move it aside" in err

    os.replace(path, path.with_name("catalog.duckdb.damaged"))  # what the message says
    code, out, err = cli("--home", tmp_path, "info")
    assert code == 0, err
    cat = Catalog(tmp_path)
    assert sorted(r["tile"] for r in cat.tiles()) == sorted(TILES)
    row = cat.index(NAME)
    assert row["status"] == "complete" and row["n_vectors"] == rep.n_vectors
    assert len(cat.shards(NAME)) == 2 and {r["tile"] for r in cat.index_tiles(NAME)} == set(TILES)
    res = run_query(_land_point(tmp_path), k=5, year=2023, home=tmp_path)
    assert res.query_id is not None and res.warnings == []
