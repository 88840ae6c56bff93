"""The geoemb Zarr v3 source: tile windows of UTM zone groups, ingested like NPY tiles."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import zarr
from _helpers import small_tile, write_mirror

from tessera_search.errors import CorruptTileError, SourceUnavailableError
from tessera_search.grid import Tile, expected_grid
from tessera_search.ingest import download, open_source
from tessera_search.sources.httpmirror import HttpMirror
from tessera_search.sources.release import ReleaseSource
from tessera_search.sources.zarrhttp import HttpStore
from tessera_search.sources.zarrstore import ZarrSource, geoemb_source, is_geoemb_store
from tessera_search.store import TileStore

NORTH = "grid_0.15_51.55"  # UTM zone 31 north
SOUTH = "grid_36.85_-1.25"  # UTM zone 37 south: negative northings in utm37
ROOT_ATTRS = {
    "geoemb:type": "pixel", "geoemb:dimensions": 128, "geoemb:data_type": "int8",
    "geoemb:model": "https://example.org/tessera/model/v1.1", "geoemb:gsd": 10.0,
    "geoemb:spatial_layout": "utm_zones", "geoemb:build_version": "2026.10",
    "geoemb:quantization": {"method": "per_pixel_scale", "scale": {"array_name": "scales", "nodata": "+inf"}},
}


def _zone_origin(data, row: int, col: int) -> tuple[float, float]:
    """(x0, y0) of a zone grid (EPSG:326NN) that puts ``data``'s corner pixel at (row, col)."""
    _, _, c, _, _, f = data.grid.transform
    y = f - 10_000_000.0 if data.grid.epsg // 100 == 327 else f
    return c - 10.0 * col, y + 10.0 * row


def write_store(root: Path, zone: int, x0: float, y0: float, size: int = 512, years=(2023,),
                shard: int = 256, chunk: int = 32, attrs: dict | None = ROOT_ATTRS) -> zarr.Group:
    """A geoemb store with one zone group of ``size`` x ``size`` pixels, all unwritten (+inf)."""
    g = zarr.open_group(str(root), mode="w", zarr_format=3, attributes=dict(attrs or {}))
    z = g.create_group(f"utm{zone:02d}", attributes={
        "proj:code": f"EPSG:{32600 + zone}", "spatial:dimensions": ["y", "x"],
        "spatial:transform": [10.0, 0.0, x0, 0.0, -10.0, y0], "spatial:shape": [size, size],
        "spatial:registration": "pixel",
    })
    t = len(years)
    z.create_array("embeddings", shape=(t, 128, size, size), dtype="int8", chunks=(1, 128, chunk, chunk),
                   shards=(1, 128, shard, shard), fill_value=0, dimension_names=["time", "band", "y", "x"])
    z.create_array("scales", shape=(t, size, size), dtype="float32", chunks=(1, chunk, chunk),
                   shards=(1, shard, shard), fill_value=float("inf"), dimension_names=["time", "y", "x"])
    z.create_array("time", shape=(t,), dtype="int32", dimension_names=["time"])[...] = np.asarray(years)
    return g


def place(root: Path, zone: int, data, row: int, col: int, t: int = 0) -> None:
    """Write a small tile's pixels into the zone grid at (row, col), then consolidate."""
    z = zarr.open_group(str(root), mode="r+", zarr_format=3)[f"utm{zone:02d}"]
    h, w = data.grid.shape
    z["embeddings"][t, :, row:row + h, col:col + w] = data.embeddings.transpose(2, 0, 1)
    z["scales"][t, row:row + h, col:col + w] = data.scales
    with warnings.catch_warnings():  # the published stores consolidate; zarr warns it is not v3 spec
        warnings.simplefilter("ignore", UserWarning)
        zarr.consolidate_metadata(str(root))


def store_with(root: Path, data, row: int = 100, col: int = 60, **kw) -> Path:
    zone = data.grid.epsg % 100
    write_store(root, zone, *_zone_origin(data, row, col), **kw)
    place(root, zone, data, row, col)
    return root


def assert_window_equals(got, want) -> None:
    """``got`` (a full tile grid) holds ``want`` (a window of it) bit for bit, no data elsewhere."""
    assert got.grid == expected_grid(got.tile)
    r = round((got.grid.transform[5] - want.grid.transform[5]) / 10.0)
    c = round((want.grid.transform[2] - got.grid.transform[2]) / 10.0)
    h, w = want.grid.shape
    np.testing.assert_array_equal(got.embeddings[r:r + h, c:c + w], want.embeddings)
    np.testing.assert_array_equal(got.scales[r:r + h, c:c + w].view(np.uint32), want.scales.view(np.uint32))
    outside = np.ones(got.grid.shape, bool)
    outside[r:r + h, c:c + w] = False
    assert not got.valid[outside].any()
    assert not got.embeddings[outside].any()


def test_zarr_and_npy_ingest_identically(tmp_path):
    tile = Tile.from_name(NORTH)
    written = write_mirror(tmp_path / "npy", [NORTH])
    store_with(tmp_path / "geoemb.zarr", written[NORTH])
    rep_npy = download([tile], 2023, source=tmp_path / "npy", home=tmp_path / "a", progress=False)
    rep_zarr = download([tile], 2023, source=tmp_path / "geoemb.zarr", home=tmp_path / "b", progress=False)
    assert rep_npy.stored == rep_zarr.stored == [tile]
    assert not rep_zarr.failed and not rep_zarr.unavailable
    a = TileStore(tmp_path / "a").read(tile, 2023)
    b = TileStore(tmp_path / "b").read(tile, 2023)
    assert_window_equals(b, a)
    assert b.dataset_version == "v1.1" and b.source == str((tmp_path / "geoemb.zarr").absolute())
    assert not b.synthetic
    # unwritten zone pixels keep the store's +inf fill; the tile grid runs past the
    # 512 x 512 zone array, and that part reads as NaN (both are no data)
    r = round((b.grid.transform[5] - a.grid.transform[5]) / 10.0)
    c = round((a.grid.transform[2] - b.grid.transform[2]) / 10.0)
    assert r > 100 and np.isposinf(b.scales[r, c - 1]) and np.isnan(b.scales[0, 0])


def test_southern_tile_negative_northings(tmp_path):
    data = small_tile(SOUTH)
    root = store_with(tmp_path / "z", data)
    z = zarr.open_group(str(root), mode="r")["utm37"]
    assert z.attrs["spatial:transform"][5] < 0 and data.grid.epsg == 32737
    rep = download([data.tile], 2023, source=root, home=tmp_path / "ws", progress=False)
    assert rep.stored == [data.tile]
    got = TileStore(tmp_path / "ws").read(data.tile, 2023)
    assert got.grid.epsg == 32737
    assert_window_equals(got, data)


def test_window_straddling_shard_and_chunk_edges(tmp_path):
    data = small_tile(NORTH, seed=3)
    root = store_with(tmp_path / "z", data, row=256 - 17, col=256 - 29)  # 40 x 48 over both edges
    (got,) = ZarrSource(root).fetch([data.tile], 2023)
    assert_window_equals(got, data)


def test_sentinels_are_no_data_and_missing_year_is_unavailable(tmp_path):
    data = small_tile(NORTH)
    sc = np.full(data.grid.shape, np.nan, np.float32)
    sc[0, :10], sc[1, :10] = np.inf, 1e6
    bad = type(data)(data.tile, 2023, data.embeddings, sc, data.grid, "v1", "test")
    root = store_with(tmp_path / "z", bad)
    src = ZarrSource(root)
    assert src.available(2023, [data.tile]) == set()
    rep = download([data.tile], 2023, source=root, home=tmp_path / "ws", progress=False)
    assert rep.unavailable == [data.tile] and not rep.stored
    # one valid pixel makes the tile available; the sentinels stay no data
    sc[5, 20] = 0.05
    place(root, data.grid.epsg % 100, type(data)(data.tile, 2023, data.embeddings, sc, data.grid, "v1", "t"), 100, 60)
    src = ZarrSource(root)
    assert src.available(2023, [data.tile]) == {data.tile}
    assert data.tile in src.available(2023)  # from the zone extent
    (got,) = src.fetch([data.tile], 2023)
    assert got.valid.sum() == 1
    assert src.available(2024, [data.tile]) == set() and src.available(2024) == set()
    (fail,) = src.fetch([data.tile], 2024)
    assert "no year 2024" in str(fail)


def test_misaligned_zone_transform_skips_the_tile(tmp_path):
    data = small_tile(NORTH)
    x0, y0 = _zone_origin(data, 100, 60)
    root = tmp_path / "z"
    write_store(root, data.grid.epsg % 100, x0 + 5.0, y0)  # half a pixel east
    rep = download([data.tile], 2023, source=root, home=tmp_path / "ws", progress=False)
    assert not rep.stored and len(rep.failed) == 1
    fail = rep.failed[0]
    assert fail.tile == data.tile and NORTH in fail.reason and "lattice" in fail.reason
    assert str(fail).startswith(f"skipped {NORTH} (2023)")
    assert not TileStore(tmp_path / "ws").has(data.tile, 2023)


def test_open_source_recognises_the_store(tmp_path):
    data = small_tile(NORTH)
    root = store_with(tmp_path / "z", data)
    assert isinstance(open_source(root, home=tmp_path / "ws"), ZarrSource)
    plain = store_with(tmp_path / "plain", data, attrs={})  # no geoemb attrs: found by its utmNN group
    assert is_geoemb_store(plain)
    assert ZarrSource(plain).version == "v1.1"
    write_mirror(tmp_path / "npy", [NORTH])
    assert not is_geoemb_store(tmp_path / "npy")
    assert isinstance(open_source(tmp_path / "npy", home=tmp_path / "ws"), ReleaseSource)
    assert not is_geoemb_store("ftp://example.org/store.zarr")


def test_zone_group_outside_the_root_is_refused(tmp_path):
    data = small_tile(NORTH)
    outside = store_with(tmp_path / "elsewhere", data)
    root = tmp_path / "z"
    write_store(root, 30, 0.0, 0.0)  # a zone the tile is not in
    (root / "utm31").symlink_to(outside / "utm31", target_is_directory=True)
    (fail,) = ZarrSource(root).fetch([data.tile], 2023)
    assert "outside the store" in str(fail)


@pytest.mark.parametrize("version", ["../x", "v1/2"])
def test_bad_version_override_is_refused(tmp_path, version):
    root = store_with(tmp_path / "z", small_tile(NORTH))
    with pytest.raises(ValueError):
        ZarrSource(root, version=version)


# -- over http --------------------------------------------------------------------------
def test_http_store_ingests_like_the_local_store(tmp_path, http_mirror):
    tile = Tile.from_name(NORTH)
    written = write_mirror(tmp_path / "site" / "npy", [NORTH])
    root = store_with(tmp_path / "site" / "geoemb.zarr", written[NORTH])
    url, handler = http_mirror(tmp_path / "site")
    store_url = url + "geoemb.zarr/"
    assert is_geoemb_store(store_url) and isinstance(open_source(store_url, home=tmp_path / "ws"), ZarrSource)
    # an NPY mirror has no root zarr.json: a release mirror, as before
    assert not is_geoemb_store(url + "npy/")
    assert isinstance(open_source(url + "npy/", home=tmp_path / "ws"), ReleaseSource)
    handler.log.clear()
    rep_local = download([tile], 2023, source=root, home=tmp_path / "a", progress=False)
    rep_http = download([tile], 2023, source=store_url, home=tmp_path / "b", progress=False)
    assert rep_local.stored == rep_http.stored == [tile] and not rep_http.failed
    a, b = TileStore(tmp_path / "a").read(tile, 2023), TileStore(tmp_path / "b").read(tile, 2023)
    np.testing.assert_array_equal(b.embeddings, a.embeddings)
    np.testing.assert_array_equal(b.scales.view(np.uint32), a.scales.view(np.uint32))
    assert b.grid == a.grid and b.dataset_version == a.dataset_version == "v1.1"
    assert b.source == store_url and not b.synthetic
    assert handler.log.count(("/geoemb.zarr/zarr.json", None, (root / "zarr.json").stat().st_size)) == 1


def test_http_reads_only_the_window_of_a_shard(tmp_path, http_mirror):
    tile = Tile.from_name(NORTH)
    grid = expected_grid(tile)
    zone, size = grid.epsg % 100, 1024
    root = tmp_path / "z.zarr"
    write_store(root, zone, *_zone_origin(SimpleNamespace(grid=grid), 960, 960), size=size, shard=size, chunk=32)
    z = zarr.open_group(str(root), mode="r+")[f"utm{zone:02d}"]
    rng = np.random.default_rng(5)
    for rows, cols in ((slice(0, 256), slice(0, 256)), (slice(960, size), slice(960, size))):
        h, w = rows.stop - rows.start, cols.stop - cols.start
        z["embeddings"][0, :, rows, cols] = rng.integers(-128, 128, (128, h, w), dtype=np.int8)
        z["scales"][0, rows, cols] = rng.uniform(0.01, 0.1, (h, w)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        zarr.consolidate_metadata(str(root))
    shard = f"/utm{zone:02d}/embeddings/c/0/0/0/0"
    shard_size = (root / shard.lstrip("/")).stat().st_size
    url, handler = http_mirror(root)
    (want,) = ZarrSource(root).fetch([tile], 2023)
    (got,) = ZarrSource(url).fetch([tile], 2023)
    np.testing.assert_array_equal(got.embeddings, want.embeddings)
    np.testing.assert_array_equal(got.scales.view(np.uint32), want.scales.view(np.uint32))
    assert got.valid.sum() == 64 * 64
    reads = [(r, n) for p, r, n in handler.log if p == shard]
    assert reads and all(r is not None for r, _ in reads), "every read of the shard is a Range request"
    sent = sum(n for _, n in reads)
    assert 64 * 64 * 128 <= sent < shard_size / 8, (sent, shard_size)


def test_http_retries_a_503_on_a_chunk(tmp_path, http_mirror):
    data = small_tile(NORTH)
    store_with(tmp_path / "z.zarr", data)
    url, handler = http_mirror(tmp_path)
    shard = "/z.zarr/utm31/scales/c/0/0/0"
    handler.fail_first[shard] = 1
    (got,) = ZarrSource(url + "z.zarr", backoff=0.01).fetch([data.tile], 2023)
    assert_window_equals(got, data)
    codes = [n for p, _, n in handler.log if p == shard]
    assert len(codes) >= 2 and codes[0] == 0 and handler.fail_first[shard] == 0


def test_http_store_unreachable_fails_clearly_and_quickly():
    url = "http://127.0.0.1:9/store.zarr/"  # discard port: nothing listens
    t0 = time.monotonic()
    with pytest.raises(SourceUnavailableError, match=r"127\.0\.0\.1:9/store\.zarr/.*source="):
        ZarrSource(url, retries=1, backoff=0.01)
    with pytest.raises(SourceUnavailableError, match="source="):
        geoemb_source(url, retries=0)
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("key", ["../secret", "/etc/passwd", "http://other.example/x", "a\\b"])
def test_http_store_refuses_keys_outside_it(key):
    store = HttpStore(HttpMirror("http://127.0.0.1:9/store.zarr/", retries=0))
    with pytest.raises(CorruptTileError, match="refusing"):
        store.url_of(key)
    assert store.url_of("utm31/./scales/c/0") == "http://127.0.0.1:9/store.zarr/utm31/scales/c/0"
    store.close()


def test_published_zone_statistics_are_kept_for_training(tmp_path):
    from tessera_search import zone_samples

    data = small_tile(NORTH)
    root = store_with(tmp_path / "z", data)
    z = zarr.open_group(str(root), mode="r+", zarr_format=3)["utm31"]
    rng = np.random.default_rng(5)
    k = 64
    sample = rng.integers(-127, 128, (1, k, 128), dtype=np.int8)
    sample_scales = np.full((1, k), np.inf, np.float32)
    sample_scales[0, :50] = rng.uniform(0.02, 0.1, 50).astype(np.float32)
    sample_scales[0, 7] = np.nan  # water in the reservoir: not a vector
    x = sample[0, :50].astype(np.float64) * sample_scales[0, :50, None]
    z.create_array("stretch_sample", data=sample, chunks=(1, k, 128))
    z.create_array("stretch_sample_scales", data=sample_scales, chunks=(1, k))
    z.create_array("stretch_sample_count", data=np.asarray([50], np.int64))
    z.create_array("stretch_stats_count", data=np.asarray([50], np.int64))
    z.create_array("stretch_stats_sum", data=x.sum(axis=0)[None])
    z.create_array("stretch_stats_prod", data=(x.T @ x)[None])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        zarr.consolidate_metadata(str(root))
    rep = download([data.tile], 2023, source=root, home=tmp_path / "ws", progress=False)
    assert rep.stored == [data.tile]
    kept = zone_samples.load(tmp_path / "ws", 2023, "v1.1", "utm31")
    assert kept is not None and len(kept.vectors) == 49 and kept.count == 50
    keep = np.ones(50, bool)
    keep[7] = False
    np.testing.assert_array_equal(kept.vectors, sample[0, :50][keep])
    np.testing.assert_allclose(kept.mean, x.mean(axis=0))
    np.testing.assert_allclose(kept.cov, np.cov(x.T, bias=True), atol=1e-12)
    vecs = zone_samples.training_vectors(tmp_path / "ws", 2023, "v1.1", ["utm31"], 30, seed=0)
    assert vecs.shape == (30, 128) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert zone_samples.training_vectors(tmp_path / "ws", 2023, "v1.1", ["utm31", "utm32"], 30, seed=0) is None


def test_index_trains_on_the_kept_zone_statistics_without_reading_tiles(tmp_path):
    import json as _json

    from tessera_search.errors import InvalidInputError
    from tessera_search.index import build_index, open_index
    from tessera_search.index.shards import current_generation, index_dir, read_manifest

    data = small_tile(NORTH, height=64, width=64)
    root = store_with(tmp_path / "z", data)
    z = zarr.open_group(str(root), mode="r+", zarr_format=3)["utm31"]
    ok = np.flatnonzero(data.valid.ravel())
    rng = np.random.default_rng(2)
    pick = np.sort(rng.choice(ok, 1000, replace=False))  # the store's reservoir: pixels of the zone
    q, sc = data.embeddings.reshape(-1, 128)[pick], data.scales.ravel()[pick]
    z.create_array("stretch_sample", data=q[None], chunks=(1, 1000, 128))
    z.create_array("stretch_sample_scales", data=sc[None], chunks=(1, 1000))
    z.create_array("stretch_sample_count", data=np.asarray([1000], np.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        zarr.consolidate_metadata(str(root))
    home = tmp_path / "ws"
    download([data.tile], 2023, source=root, home=home, progress=False)
    rep = build_index(tiles=[NORTH], year=2023, home=home, name="zs", factory="IVF16,PQ16x4fs",
                      train_from="zone-stats", progress=False)
    man = read_manifest(current_generation(index_dir(home, "zs")))
    assert man["train_from"] == {"from": "zone-stats", "tiles_read": 0, "vectors": 1000}, _json.dumps(man["train_from"])
    from tessera_search.grid import pack_ids

    full = TileStore(home).grid(data.tile, 2023)
    r0 = round((full.transform[5] - data.grid.transform[5]) / 10.0)
    c0 = round((data.grid.transform[2] - full.transform[2]) / 10.0)
    r, c = 20, 30
    with open_index("zs", home=home) as idx:
        res = idx.search(data.embeddings[r, c].astype(np.float32), k=5)
    assert int(res.ids[0]) == int(pack_ids(data.tile.ix, data.tile.iy, r0 + r, c0 + c))
    assert res.similarity[0] > 0.9999
    assert rep.n_vectors == int(data.valid.sum())
    # tiles from a source without statistics cannot train that way, and say why
    written = write_mirror(tmp_path / "npy", [NORTH])
    download([Tile.from_name(NORTH)], 2023, source=tmp_path / "npy", home=tmp_path / "ws2", progress=False)
    with pytest.raises(InvalidInputError, match="no kept zone statistics for all of utm31"):
        build_index(tiles=[NORTH], year=2023, home=tmp_path / "ws2", name="x", factory="IVF16,PQ16x4fs",
                    train_from="zone-stats", progress=False)
    assert written
