"""Release sources (directory and HTTP) and ingest into the store."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from _helpers import NAIROBI_TILES, small_tile, write_mirror

from tessera_search.catalog import Catalog
from tessera_search.errors import SourceUnavailableError
from tessera_search.grid import Tile
from tessera_search.ingest import download
from tessera_search.sources.layout import CACHE_NPY, bucket_paths, cache_paths, write_landmask, write_manifest
from tessera_search.sources.release import ReleaseSource
from tessera_search.store import TileStore

TILES = [Tile.from_name(n) for n in NAIROBI_TILES]


def _assert_store_equals_mirror(home, written, year=2023):
    store = TileStore(home)
    for name, data in written.items():
        back = store.read(Tile.from_name(name), year)
        np.testing.assert_array_equal(back.embeddings, data.embeddings)
        np.testing.assert_array_equal(back.scales.view(np.uint32), data.scales.view(np.uint32))
        assert back.grid == data.grid


def test_directory_mirror_ingests_exactly(tmp_path, home):
    written = write_mirror(tmp_path / "m", NAIROBI_TILES)
    rep = download(TILES, 2023, source=tmp_path / "m", home=home, progress=False)
    assert sorted(t.name for t in rep.stored) == sorted(NAIROBI_TILES)
    assert not rep.failed and not rep.unavailable
    _assert_store_equals_mirror(home, written)
    assert {r["tile"] for r in Catalog(home).tiles(2023)} == set(NAIROBI_TILES)
    again = download(TILES, 2023, source=tmp_path / "m", home=home, progress=False)
    assert not again.stored and len(again.present) == 4


def test_http_mirror_ingests_exactly(tmp_path, home, http_mirror):
    written = write_mirror(tmp_path / "m", NAIROBI_TILES)
    url, handler = http_mirror(tmp_path / "m")
    rep = download(TILES, 2023, source=url, home=home, progress=False)
    assert sorted(t.name for t in rep.stored) == sorted(NAIROBI_TILES)
    _assert_store_equals_mirror(home, written)
    assert any(p.endswith("manifest.parquet") for p in handler.requests)
    assert not list((home / "downloads").rglob("*.npy")), "downloaded files are removed once stored"


def _corrupt(root, version="v1", year=2023):
    """Truncate one tile's npy, give another mis-shaped scales, break a third's MD5."""
    p = {n: bucket_paths(version, year, Tile.from_name(n)) for n in NAIROBI_TILES}
    g = root / p["grid_36.75_-1.35"]["grid"]
    g.write_bytes(g.read_bytes()[: g.stat().st_size // 2])
    np.save(root / p["grid_36.75_-1.25"]["scales"], np.ones((7, 9), np.float32) * 0.05)
    write_manifest(root, version)  # sizes and MD5 match the damaged files...
    table = pq.read_table(root / p["grid_36.85_-1.35"]["manifest"]).to_pylist()
    for row in table:
        if row["grid_path"].endswith("grid_36.85_-1.35.npy"):
            row["grid_md5"] = "0" * 32  # ...except this one's
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(table), root / p["grid_36.85_-1.35"]["manifest"])


@pytest.mark.parametrize("via", ["dir", "http"])
def test_bad_tiles_are_reported_by_name_and_skipped(tmp_path, home, http_mirror, capsys, via):
    written = write_mirror(tmp_path / "m", NAIROBI_TILES)
    _corrupt(tmp_path / "m")
    src = str(tmp_path / "m") if via == "dir" else http_mirror(tmp_path / "m")[0]
    rep = download(TILES, 2023, source=src, home=home, progress=False)
    reasons = {f.tile.name: f.reason for f in rep.failed}
    assert set(reasons) == {"grid_36.75_-1.35", "grid_36.75_-1.25", "grid_36.85_-1.35"}
    assert "truncated .npy" in reasons["grid_36.75_-1.35"]
    assert "scales of shape (7, 9)" in reasons["grid_36.75_-1.25"]
    assert "MD5 mismatch" in reasons["grid_36.85_-1.35"]
    assert [t.name for t in rep.stored] == ["grid_36.85_-1.25"]
    store = TileStore(home)
    assert [t.name for t, _ in store.list()] == ["grid_36.85_-1.25"]
    _assert_store_equals_mirror(home, {"grid_36.85_-1.25": written["grid_36.85_-1.25"]})
    assert "skipped grid_36.75_-1.35 (2023): truncated .npy" in [str(f) for f in rep.failed][0] or any(
        str(f).startswith("skipped grid_36.75_-1.35 (2023): truncated .npy") for f in rep.failed)
    assert capsys.readouterr() == ("", "")  # the library reports, it does not print


def test_http_retries_transient_errors_and_resumes_partial_files(tmp_path, home, http_mirror):
    written = write_mirror(tmp_path / "m", NAIROBI_TILES[:1])
    url, handler = http_mirror(tmp_path / "m")
    rel = bucket_paths("v1", 2023, TILES[0])["grid"]
    handler.fail_first["/" + rel] = 2  # two 503s, then success
    src = ReleaseSource(url, download_dir=home / "downloads", backoff=0.01)
    # a partial file from an interrupted earlier run
    import urllib.parse

    part = home / "downloads" / urllib.parse.quote(url, safe="") / (rel + ".part")
    part.parent.mkdir(parents=True)
    full = (tmp_path / "m" / rel).read_bytes()
    part.write_bytes(full[:1000])
    items = list(src.fetch(TILES[:1], 2023))
    assert len(items) == 1 and not hasattr(items[0], "reason"), items
    np.testing.assert_array_equal(items[0].embeddings, written[TILES[0].name].embeddings)
    assert handler.requests.count("/" + rel) == 3


def test_offline_source_fails_clearly(home):
    src = "http://127.0.0.1:9/"  # discard port: nothing listens
    with pytest.raises(SourceUnavailableError, match="source="):
        ReleaseSource(src, download_dir=home, retries=1, backoff=0.01).available(2023)


def test_v1_registry_unreachable_says_so(home, monkeypatch):
    import dataclasses

    import tessera_search.sources.datasets as datasets
    import tessera_search.sources.release as release

    monkeypatch.setitem(datasets.DATASETS, "v1", dataclasses.replace(datasets.DATASETS["v1"], home="http://127.0.0.1:9/"))
    monkeypatch.setattr(release, "DEFAULT_RETRIES", 0)
    with pytest.raises(SourceUnavailableError, match=r"store of dataset v1 \(http://127.0.0.1:9/\).*source="):
        download(TILES[:1], 2023, source=datasets.SourceSpec(None, "v1"), home=home, progress=False)


def test_missing_directory_and_non_release_directory(tmp_path, home):
    with pytest.raises(SourceUnavailableError, match="does not exist"):
        download(TILES[:1], 2023, source=tmp_path / "nope", home=home, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceUnavailableError, match="not a TESSERA release"):
        download(TILES[:1], 2023, source=tmp_path / "empty", home=home, progress=False)


def test_tiles_absent_from_the_source_are_unavailable_not_errors(tmp_path, home):
    write_mirror(tmp_path / "m", NAIROBI_TILES[:2])
    rep = download(TILES, 2023, source=tmp_path / "m", home=home, progress=False)
    assert len(rep.stored) == 2 and len(rep.unavailable) == 2 and not rep.failed


def test_geotessera_cache_layout_with_per_channel_scales(tmp_path, home):
    root = tmp_path / "cache"
    data = small_tile(TILES[0])
    paths = cache_paths(2023, TILES[0])
    (root / paths["directory"]).mkdir(parents=True)
    np.save(root / paths["grid"], data.embeddings)
    per_channel = np.repeat(data.scales[..., None], 128, axis=2)
    np.save(root / paths["scales"], per_channel)
    write_landmask(root / paths["landmask"], data.grid, data.landmask)
    assert (root / CACHE_NPY).is_dir()
    rep = download(TILES[:1], 2023, source=root, home=home, progress=False)
    assert [t.name for t in rep.stored] == [TILES[0].name]
    back = TileStore(home).read(TILES[0], 2023)
    ok = np.isfinite(data.scales) & (data.scales > 0) & (data.scales < 1)
    np.testing.assert_allclose(
        back.embeddings[ok] * back.scales[ok][:, None], data.embeddings[ok] * data.scales[ok][:, None],
        atol=float(data.scales[ok].max()),
    )
    assert not np.isfinite(back.scales[~ok]).any()


def test_interrupted_download_resumes(tmp_path, home, monkeypatch):
    """A run killed after two tiles keeps them; the rerun fetches only the rest."""
    write_mirror(tmp_path / "m", NAIROBI_TILES)
    store = TileStore(home)
    real_write = TileStore.write
    count = {"n": 0}

    def dying_write(self, data):
        if count["n"] == 2:
            raise KeyboardInterrupt
        count["n"] += 1
        return real_write(self, data)

    monkeypatch.setattr(TileStore, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        download(TILES, 2023, source=tmp_path / "m", home=home, progress=False)
    monkeypatch.setattr(TileStore, "write", real_write)
    assert len(store.list()) == 2
    rep = download(TILES, 2023, source=tmp_path / "m", home=home, progress=False)
    assert len(rep.present) == 2 and len(rep.stored) == 2
    shutil.rmtree(tmp_path / "m")


def test_a_landmask_in_another_zone_or_place_is_refused_with_its_reason(tmp_path, home):
    from tessera_search.grid import TileGrid
    from tessera_search.sources.layout import write_landmask

    written = write_mirror(tmp_path / "m", NAIROBI_TILES[:2])
    a, b = (Tile.from_name(n) for n in NAIROBI_TILES[:2])
    g = written[a.name].grid
    lm_a = tmp_path / "m" / bucket_paths("v1", 2023, a)["landmask"]
    # the same shape and lattice, but in the neighbouring zone
    write_landmask(lm_a, TileGrid(a, g.epsg + 1, g.transform, g.height, g.width), written[a.name].landmask)
    lm_b = tmp_path / "m" / bucket_paths("v1", 2023, b)["landmask"]
    gb = written[b.name].grid
    far = (gb.transform[0], 0.0, gb.transform[2] + 500_000.0, 0.0, gb.transform[4], gb.transform[5])
    write_landmask(lm_b, TileGrid(b, gb.epsg, far, gb.height, gb.width), written[b.name].landmask)
    rep = download([a, b], 2023, source=tmp_path / "m", home=home, progress=False)
    assert rep.stored == []
    reasons = {f.tile.name: f.reason for f in rep.failed}
    assert f"EPSG:{g.epsg + 1}" in reasons[a.name] and f"EPSG:{g.epsg}" in reasons[a.name]
    assert "does not overlap" in reasons[b.name]


def test_another_datasets_tile_is_refused_naming_both(tmp_path, home):
    write_mirror(tmp_path / "v1", NAIROBI_TILES[:1], version="v1")
    write_mirror(tmp_path / "v11", NAIROBI_TILES[1:2], version="v1.1")
    rep = download([Tile.from_name(NAIROBI_TILES[0])], 2023, source=tmp_path / "v1", home=home, progress=False)
    assert [t.name for t in rep.stored] == NAIROBI_TILES[:1]
    rep = download([Tile.from_name(NAIROBI_TILES[1])], 2023, source=tmp_path / "v11", home=home, progress=False)
    assert rep.stored == [] and len(rep.failed) == 1
    assert "dataset v1.1" in rep.failed[0].reason and "holds v1 tiles for 2023" in rep.failed[0].reason
    assert [t.name for t, _ in TileStore(home).list()] == NAIROBI_TILES[:1]
    # another year of the same workspace may be another dataset
    write_mirror(tmp_path / "v11b", NAIROBI_TILES[1:2], year=2024, version="v1.1")
    rep = download([Tile.from_name(NAIROBI_TILES[1])], 2024, source=tmp_path / "v11b", home=home, progress=False)
    assert [t.name for t in rep.stored] == NAIROBI_TILES[1:2]
