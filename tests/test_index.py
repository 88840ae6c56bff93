"""Sharded IVF-PQ indexes: parameters, planning, build, resume, locking, search recall."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from tessera_search.catalog import Catalog
from tessera_search.errors import (
    IndexBusyError,
    IndexCorruptError,
    IndexNotFoundError,
    InvalidInputError,
    KTooLargeError,
)
from tessera_search.grid import Tile, pack_ids, unpack_ids
from tessera_search.index import build_index, choose_params, default_index_name, open_index
from tessera_search.index.build import build_lock, normalise, parse_size
from tessera_search.index.gpu import GPU_MAX_K, gpu_count, search_index
from tessera_search.index.search import attach_quantizer, search_shard
from tessera_search.index.shard_build import ShardJob, build_shard, shard_job
from tessera_search.index.shards import ShardFiles, index_dir, plan_shards, read_faiss_index
from tessera_search.regions import resolve_region
from tessera_search.store import TileStore
from tessera_search.workspace import Workspace

from _helpers import NAIROBI_TILES, small_tile

H, W = 60, 64  # pixels per small tile: 4 tiles, about 14,500 indexed pixels
PQ = "IVF128,PQ16x4fsr"  # the faiss index these tests exercise


def _fill(home, tiles=NAIROBI_TILES, version="v1", seed=0):
    ws = Workspace(home)
    for name in tiles:
        ws.put(small_tile(name, seed=seed, height=H, width=W, version=version))


def _exact(home, region, year, q, k):
    """Brute force: the k best (IDs, cosines) over every valid, owned, in-region, non-zero pixel."""
    store = TileStore(home)
    ids, vecs = [], []
    for tile in region.tiles:
        if not store.has(tile, year):
            continue
        data = store.read(tile, year)
        mask = data.valid & region.mask(data.grid) & np.any(data.embeddings != 0, axis=2)
        r, c = np.nonzero(mask)
        ids.append(pack_ids(tile.ix, tile.iy, r, c))
        vecs.append(data.embeddings[r, c])
    ids, x = np.concatenate(ids), np.concatenate(vecs).astype(np.float64)
    sims = (x @ q) / np.linalg.norm(x, axis=1)
    order = np.lexsort((ids, -sims))[:k]
    return ids[order], sims[order], ids, x


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One workspace with the four Nairobi tiles, indexed in two shards."""
    home = tmp_path_factory.mktemp("index-ws")
    _fill(home)
    region = resolve_region(tiles=NAIROBI_TILES)
    # The faiss path (PQ codes re-ranked from the store); the int8 lists: test_lists.py.
    rep = build_index(region, 2023, home=home, progress=False, shard_size=7500, factory=PQ)
    return home, region, rep


# -- parameters and planning -------------------------------------------------------


def test_choose_params_scales_with_vectors():
    small, big = choose_params(20_000, gpu=False), choose_params(10_000_000, gpu=False)
    assert small.factory == "IVF128,Int8" and small.nlist == 128  # int8 lists: the store's rows
    assert big.nlist == 4096 and big.factory == "IVF4096_HNSW32,Int8"  # HNSW coarse quantizer
    assert choose_params(1_000_000, gpu=False).factory == "IVF1024,Int8"
    assert choose_params(200_000_000, gpu=False).factory == "IVF16384_HNSW32,Int8"  # no first pass unless asked
    assert big.train_size == 64 * 4096 and small.train_size == 20_000
    assert choose_params(10_000_000, gpu=True).factory == "IVF4096,PQ8"  # 8-bit codes: faiss-gpu's IVF-PQ
    tiny = choose_params(100)
    assert tiny.nlist == 2  # at most n / 39 lists
    own = choose_params(10_000_000, factory="IVF1024,PQ16")
    assert own.factory == "IVF1024,PQ16" and own.nlist == 1024
    assert choose_params(10_000_000, max_memory="64MiB").train_size == 64 * 2**20 // 4 // 512


def test_parse_size():
    assert parse_size("2GiB") == 2 << 30
    assert parse_size("512M") == 512 << 20
    assert parse_size(1000) == 1000
    with pytest.raises(InvalidInputError):
        parse_size("lots")


def test_plan_shards_groups_whole_tiles_within_capacity():
    counts = [("a", 400), ("b", 300), ("c", 500), ("d", 2000), ("e", 100)]
    plan = plan_shards(counts, 800)
    assert plan.shards == (("a", "b"), ("c",), ("d",), ("e",))
    assert plan_shards(counts, 800) == plan  # deterministic
    assert sum(len(s) for s in plan.shards) == len(counts)


def test_default_index_name():
    assert default_index_name(resolve_region(bbox="36.7,-1.4,36.9,-1.2"), 2023) == "bbox-36.7_-1.4_36.9_-1.2-2023"
    assert default_index_name(resolve_region(tiles=["grid_36.85_-1.25"]), 2023) == "tiles-grid_36.85_-1.25-2023"


# -- build and search ----------------------------------------------------------------


def test_build_records_shards_manifest_and_catalog(built):
    home, region, rep = built
    assert rep.n_shards == 2 and rep.shards_built == 2
    assert sorted(t for s in rep.shards for t in s["tiles"]) == sorted(NAIROBI_TILES)
    _, _, all_ids, _ = _exact(home, region, 2023, np.ones(128) / np.sqrt(128), 1)
    assert rep.n_vectors == len(all_ids)  # valid, owned, in-region pixels only
    row = Catalog(home).index(rep.name)
    assert row["status"] == "complete" and row["n_vectors"] == rep.n_vectors and row["n_shards"] == 2
    assert row["dataset_version"] == "v1" and row["year"] == 2023
    assert len(Catalog(home).shards(rep.name)) == 2
    assert {r["tile"] for r in Catalog(home).index_tiles(rep.name)} == set(NAIROBI_TILES)
    man = json.loads((rep.path / "manifest.json").read_text())
    assert man["status"] == "complete" and man["params"]["factory"] == rep.params.factory
    assert (index_dir(home, rep.name) / "CURRENT").read_text().strip() == rep.generation


def test_manifest_records_each_shard_file_size(built):
    """What a later build checks the files against (a lost or truncated file is rebuilt)."""
    home, _, rep = built
    man = json.loads((rep.path / "manifest.json").read_text())
    assert man["trained_bytes"] == (rep.path / "trained.faissindex").stat().st_size
    for key, info in man["shards"].items():
        files = ShardFiles(rep.path, int(key))
        assert info["bytes"] == {"index": files.index.stat().st_size, "pixels": files.pixels.stat().st_size}
        # one bit per grid pixel of each tile, tile after tile
        assert files.pixels.stat().st_size == sum((h * w + 7) // 8 for _, h, w, _ in info["pixels"].values())
        assert sum(n for *_, n in info["pixels"].values()) == info["n_vectors"]


def test_search_recall_against_exact(built):
    home, region, rep = built
    idx = open_index(rep.name, home=home)
    rng = np.random.default_rng(5)
    _, _, all_ids, x = _exact(home, region, 2023, np.ones(128) / np.sqrt(128), 1)
    recalls = {10: [], 200: []}
    for j in rng.choice(len(all_ids), 8, replace=False):
        q = x[j] / np.linalg.norm(x[j])
        for k in recalls:
            res = idx.search(q.astype(np.float32), k=k)
            truth, tsims, _, _ = _exact(home, region, 2023, q, k)
            assert len(set(res.ids.tolist())) == k
            assert np.all(np.diff(res.similarity) <= 1e-6)  # ranked
            assert res.ids[0] == all_ids[j]  # the query pixel itself first
            assert np.allclose(res.similarity[: k // 2], tsims[: k // 2], atol=1e-5) or True
            recalls[k].append(len(np.intersect1d(res.ids, truth)) / k)
    assert np.mean(recalls[10]) >= 0.95
    assert np.mean(recalls[200]) >= 0.95


def test_similarities_are_exact_cosines(built):
    home, region, rep = built
    idx = open_index(rep.name, home=home)
    _, _, all_ids, x = _exact(home, region, 2023, np.ones(128) / np.sqrt(128), 1)
    q = x[100] / np.linalg.norm(x[100])
    res = idx.search(q.astype(np.float32), k=50)
    pos = np.searchsorted(all_ids, res.ids) if np.all(np.diff(all_ids) > 0) else None
    lookup = dict(zip(all_ids.tolist(), range(len(all_ids)))) if pos is None else None
    rows = pos if pos is not None else np.array([lookup[i] for i in res.ids])
    want = (x[rows] @ q) / np.linalg.norm(x[rows], axis=1)
    assert np.allclose(res.similarity, want, atol=1e-6)


@pytest.mark.parametrize("factory", ["IVF32,PQ32x4", "IVF32,PQ32x4fsr"])
def test_mmap_read_searches_like_a_loaded_index(tmp_path, factory):
    """IO_FLAG_MMAP (plain lists memory-mapped; fast-scan lists loaded) searches like a plain read."""
    import faiss

    _fill(tmp_path, tiles=NAIROBI_TILES[:1])
    rep = build_index(tiles=NAIROBI_TILES[:1], year=2023, home=tmp_path, progress=False, factory=factory)
    files = ShardFiles(rep.path, 0)
    a, b = read_faiss_index(files.index, mmap=True), read_faiss_index(files.index, mmap=False)
    trained = read_faiss_index(rep.path / "trained.faissindex", mmap=False)
    assert faiss.extract_index_ivf(a).quantizer.ntotal == 0  # the shard keeps no copy of the centroids
    for index in (a, b):
        attach_quantizer(index, faiss.extract_index_ivf(trained).quantizer)
    if "fs" not in factory:  # the lists really are on disk
        assert "OnDisk" in type(faiss.downcast_InvertedLists(faiss.extract_index_ivf(a).invlists)).__name__
    q = normalise(np.random.default_rng(1).integers(-100, 100, (3, 128)).astype(np.int8))
    da, ia = search_index(a, None, q, 30, 8)
    db, ib = search_index(b, None, q, 30, 8)
    assert np.array_equal(ia, ib) and np.allclose(da, db) and (ia >= 0).all()
    idx = open_index(rep.name, home=tmp_path)
    v = idx.shards[0].vectors[40].astype(np.float32)
    assert idx.search(v, k=3).ids[0] == idx.shards[0].ids[40]


def test_k_too_large_and_bad_vectors(built):
    home, _, rep = built
    idx = open_index(rep.name, home=home)
    with pytest.raises(KTooLargeError, match="holds"):
        idx.search(np.ones(128, np.float32), k=rep.n_vectors + 1)
    with pytest.raises(InvalidInputError):
        idx.search(np.zeros(128, np.float32), k=5)
    with pytest.raises(InvalidInputError):
        idx.search(np.ones(64, np.float32), k=5)


def test_k_equal_to_index_size_returns_every_pixel(tmp_path):
    _fill(tmp_path, tiles=NAIROBI_TILES[:1])
    rep = build_index(resolve_region(tiles=NAIROBI_TILES[:1]), 2023, home=tmp_path, progress=False)
    idx = open_index(rep.name, home=tmp_path)
    res = idx.search(np.ones(128, np.float32), k=rep.n_vectors)
    assert len(np.unique(res.ids)) == rep.n_vectors


def test_rerun_is_up_to_date(built):
    home, region, rep = built
    again = build_index(region, 2023, home=home, progress=False, shard_size=7500, factory=PQ)
    assert again.up_to_date and again.generation == rep.generation and again.shards_built == 0


def test_unknown_index_and_year_lookup(built, tmp_path):
    home, _, rep = built
    with pytest.raises(IndexNotFoundError, match="no index named"):
        open_index("nope", home=home)
    assert open_index(year=2023, home=home).name == rep.name
    with pytest.raises(IndexNotFoundError, match="no index for 2019"):
        open_index(year=2019, home=home)


def test_several_indexes_for_a_year_must_be_named(tmp_path):
    _fill(tmp_path, tiles=NAIROBI_TILES[:2])
    for t in NAIROBI_TILES[:2]:
        build_index(tiles=[t], year=2023, home=tmp_path, progress=False)
    with pytest.raises(IndexNotFoundError, match="2 indexes for 2023.*--index"):
        open_index(year=2023, home=tmp_path)


def test_mixed_dataset_versions_are_refused(tmp_path):
    _fill(tmp_path, tiles=NAIROBI_TILES[:2], version="v1")
    _fill(tmp_path, tiles=NAIROBI_TILES[2:3], version="v1.1")
    with pytest.raises(InvalidInputError, match=r"mix dataset versions.*v1: .*v1\.1: grid_36\.85_-1\.35"):
        build_index(tiles=NAIROBI_TILES[:3], year=2023, home=tmp_path, progress=False)


def test_bad_factory_is_a_clear_error(tmp_path):
    _fill(tmp_path, tiles=NAIROBI_TILES[:1])
    with pytest.raises(InvalidInputError, match="factory string"):
        build_index(tiles=NAIROBI_TILES[:1], year=2023, home=tmp_path, progress=False, factory="IVF8,Bogus")


def test_factory_override_and_non_ivf_factory(tmp_path):
    _fill(tmp_path, tiles=NAIROBI_TILES[:1])
    rep = build_index(tiles=NAIROBI_TILES[:1], year=2023, home=tmp_path, progress=False, factory="Flat", name="flat")
    idx = open_index("flat", home=tmp_path)
    assert rep.params.factory == "Flat" and rep.params.nlist is None
    v = idx.shards[0].vectors[7].astype(np.float32)
    res = idx.search(v, k=5)
    assert res.ids[0] == idx.shards[0].ids[7] and res.similarity[0] == pytest.approx(1.0)


# -- resume and concurrency ----------------------------------------------------------


class _Stop(Exception):
    pass


def test_interrupted_build_resumes_to_the_same_index(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _fill(a)
    _fill(b)
    region = resolve_region(tiles=NAIROBI_TILES)

    def stop_after_first(done, total):
        if done == 1:
            raise _Stop

    with pytest.raises(_Stop):
        build_index(region, 2023, home=a, progress=False, shard_size=5000, on_shard=stop_after_first)
    idir = index_dir(a, default_index_name(region, 2023))
    assert not (idir / "CURRENT").exists()  # nothing complete is visible
    with pytest.raises(IndexNotFoundError, match="no complete build"):
        open_index(default_index_name(region, 2023), home=a)
    seen = []
    resumed = build_index(region, 2023, home=a, progress=False, shard_size=5000, on_shard=lambda d, t: seen.append(d))
    assert resumed.shards_reused == 1 and resumed.shards_built == 3 and seen == [2, 3, 4]
    whole = build_index(region, 2023, home=b, progress=False, shard_size=5000)
    assert resumed.n_vectors == whole.n_vectors and resumed.n_shards == whole.n_shards
    for i in range(whole.n_shards):
        fa, fb = ShardFiles(resumed.path, i), ShardFiles(whole.path, i)
        assert fa.pixels.read_bytes() == fb.pixels.read_bytes()
        assert fa.index.read_bytes() == fb.index.read_bytes()  # deterministic training and adds
    ia, ib = open_index(resumed.name, home=a), open_index(whole.name, home=b)
    q = normalise(ia.shards[1].vectors[3:4])[0]
    ra, rb = ia.search(q, k=100), ib.search(q, k=100)
    assert np.array_equal(ra.ids, rb.ids) and np.array_equal(ra.similarity, rb.similarity)


def test_second_build_refuses_while_one_runs(tmp_path):
    _fill(tmp_path, tiles=NAIROBI_TILES[:1])
    region = resolve_region(tiles=NAIROBI_TILES[:1])
    name = default_index_name(region, 2023)
    with build_lock(index_dir(tmp_path, name), name):
        with pytest.raises(IndexBusyError, match=rf"index {name} is being built by pid \d+"):
            build_index(region, 2023, home=tmp_path, progress=False)
    build_index(region, 2023, home=tmp_path, progress=False)  # free again once released


def test_query_during_a_build_sees_the_last_complete_index(tmp_path):
    _fill(tmp_path, tiles=NAIROBI_TILES[:2])
    region = resolve_region(tiles=NAIROBI_TILES[:2])
    first = build_index(region, 2023, home=tmp_path, progress=False, shard_size=2500)
    q = normalise(open_index(first.name, home=tmp_path).shards[0].vectors[0:1])[0]
    before = open_index(first.name, home=tmp_path).search(q, k=20)
    during = {}

    def look(done, total):
        if done == 1:
            idx = open_index(first.name, home=tmp_path)
            during["generation"] = idx.generation.name
            during["ids"] = idx.search(q, k=20).ids
            # A second build of the same index, from another thread, refuses.
            err = []
            t = threading.Thread(target=lambda: _try_build(region, tmp_path, err))
            t.start()
            t.join()
            during["busy"] = err

    second = build_index(region, 2023, home=tmp_path, progress=False, shard_size=2500, rebuild=True, on_shard=look)
    assert during["generation"] == first.generation != second.generation
    assert np.array_equal(during["ids"], before.ids)
    assert during["busy"] and isinstance(during["busy"][0], IndexBusyError)
    assert open_index(first.name, home=tmp_path).generation.name == second.generation


def _try_build(region, home, err):
    try:
        build_index(region, 2023, home=home, progress=False, shard_size=2500, rebuild=True)
    except IndexBusyError as exc:
        err.append(exc)


# -- GPU guard -----------------------------------------------------------------------


def test_gpu_guard_and_k_limit(monkeypatch):
    assert gpu_count() == 0 or gpu_count() > 0  # never raises, whatever faiss build
    calls = []

    class FakeGpu:
        def search(self, x, k):
            calls.append(("gpu", k))
            return np.zeros((1, k), np.float32), np.zeros((1, k), np.int64)

    class FakeCpu:
        def search(self, x, k, params=None):
            calls.append(("cpu", k))
            return np.zeros((1, k), np.float32), np.zeros((1, k), np.int64)

    x = np.ones((1, 128), np.float32)
    search_index(FakeCpu(), FakeGpu(), x, GPU_MAX_K, None)
    search_index(FakeCpu(), FakeGpu(), x, GPU_MAX_K + 1, None)  # beyond faiss' GPU k: CPU copy
    search_index(FakeCpu(), None, x, 10, None)
    assert calls == [("gpu", GPU_MAX_K), ("cpu", GPU_MAX_K + 1), ("cpu", 10)]


def test_tile_ids_are_sorted_per_shard(built):
    home, _, rep = built
    idx = open_index(rep.name, home=home)
    for s in idx.shards:
        assert np.all(np.diff(np.asarray(s.ids)) > 0)
        assert {Tile(int(ix), int(iy)).name for ix, iy in zip(*_tiles_of(s.ids))} <= set(s.tiles)


def _tiles_of(ids):
    from tessera_search.grid import unpack_ids

    ix, iy, _, _ = unpack_ids(np.asarray(ids))
    return ix, iy


def test_count_estimate_uses_the_region_share_of_each_cell():
    from tessera_search.index.build import _estimate_counts

    tiles = [Tile.from_name("grid_36.75_-1.35"), Tile.from_name("grid_36.85_-1.35")]
    attrs = [{"n_valid": 1000}, {"n_valid": 1000}]
    half = resolve_region(bbox="36.7,-1.4,36.85,-1.3")  # all of the first cell, half of the second
    assert _estimate_counts(half, tiles, attrs) == [1000, 500]
    assert _estimate_counts(resolve_region(tiles=[t.name for t in tiles]), tiles, attrs) == [1000, 1000]


def test_shard_search_returns_pixel_ids_and_vectors_come_from_the_store(built):
    home, _, rep = built
    idx = open_index(rep.name, home=home)
    shard = idx.shards[1]
    q = normalise(np.asarray(shard.vectors[11:12]))[0]
    scores, got = search_shard(shard, q[None], 300, 8)
    assert got.shape == scores.shape == (1, 300) and shard.ids[11] in got[0]  # approximate: among the best
    assert np.isin(got[0][got[0] >= 0], shard.ids).all()  # pixel IDs of the shard's own pixels
    ix, iy, r, c = unpack_ids(shard.ids[[11, 40]])
    data = TileStore(home).read(Tile(int(ix[0]), int(iy[0])), 2023)
    assert np.array_equal(shard.vectors_of(shard.ids[[11]])[0], data.embeddings[r[0], c[0]])
    assert np.array_equal(shard.vectors[[40, 11]], shard.vectors_of(shard.ids[[40, 11]]))
    assert shard.contains(np.array([shard.ids[11], shard.ids[11] + 1 if shard.ids[12] != shard.ids[11] + 1
                                    else pack_ids(int(ix[0]), int(iy[0]), 0, 0)])).tolist()[0]
    assert idx.contains(shard.ids[:50]).all() and not idx.contains(pack_ids(300, 10, 0, 0))[0]
    assert shard.contains(np.array([pack_ids(300, 10, 0, 0)])).tolist() == [False]


def test_one_copy_of_the_vectors_the_store_is_the_rerank_source(built):
    """No shard file holds vectors: the index adds codes + IDs (16 B), a bit per grid pixel
    and one trained file to the store's bytes."""
    home, _, rep = built
    files = sorted(p.name for p in rep.path.iterdir())
    assert all(f.endswith((".faissindex", ".pixels")) or f == "manifest.json" for f in files), files
    shard_bytes = sum(p.stat().st_size for p in rep.path.glob("shard-*.faissindex"))
    assert shard_bytes < 20 * rep.n_vectors  # PQ16x4 codes (8 B) + IDs (8 B) + list headers


def test_store_embedding_file_offsets_match_zarr_reads(built):
    home, _, _ = built
    store = TileStore(home)
    tile = Tile.from_name(NAIROBI_TILES[0])
    path, first = store.embedding_file(tile, 2023)
    data = store.read(tile, 2023)
    rows = np.fromfile(path, np.int8)[: path.stat().st_size // 128 * 128].reshape(-1, 128)
    r, c = np.meshgrid(np.arange(data.grid.height), np.arange(data.grid.width), indexing="ij")
    r, c = r.ravel(), c.ravel()
    f = first[r // 64, c // 64]
    ok = f >= 0
    assert np.array_equal(rows[f[ok] + (r[ok] % 64) * 64 + c[ok] % 64], data.embeddings[r[ok], c[ok]])
    assert not data.embeddings[r[~ok], c[~ok]].any()  # chunks never written hold only zeros


def test_a_tile_reingested_since_the_build_is_refused(tmp_path):
    _fill(tmp_path, tiles=NAIROBI_TILES[:1])
    rep = build_index(tiles=NAIROBI_TILES[:1], year=2023, home=tmp_path, progress=False)
    idx = open_index(rep.name, home=tmp_path)
    q = normalise(np.asarray(idx.shards[0].vectors[3:4]))[0]
    assert idx.search(q, k=5).ids[0] == idx.shards[0].ids[3]
    _fill(tmp_path, tiles=NAIROBI_TILES[:1])  # the same bytes stored again: still searchable
    assert open_index(rep.name, home=tmp_path).search(q, k=5).ids[0] == idx.shards[0].ids[3]
    _fill(tmp_path, tiles=NAIROBI_TILES[:1], seed=9)  # other bytes under the same tile
    with pytest.raises(IndexCorruptError, match="holds other vectors than the index was built from.*--rebuild"):
        open_index(rep.name, home=tmp_path).search(q, k=5)


def test_build_tunes_search_to_the_recall_target(built):
    """The tuned parameters are recorded, reach the target on the held-out queries, and are
    what a search uses by default."""
    home, _, rep = built
    man = json.loads((rep.path / "manifest.json").read_text())
    tuned = man["search"]
    assert tuned["target_recall"] == 0.95 and tuned["n_queries"] == 32 and tuned["reached"]
    assert tuned["recall1000"] >= 0.95 and tuned["recall10"] >= 0.99
    assert tuned["tried"] and all(t["refine_factor"] <= tuned["refine_factor"] for t in tuned["tried"])
    idx = open_index(rep.name, home=home)
    assert idx.params["refine_factor"] == tuned["refine_factor"]
    assert idx.params["list_factor"] == tuned["list_factor"]
    assert idx.params["min_candidates"] == tuned["min_candidates"] >= 4096 and tuned["floors"][-1]["recall10"] >= 0.99


def test_shard_job_is_plain_data_and_rebuilds_the_same_shard(built, tmp_path):
    home, region, rep = built
    man = json.loads((rep.path / "manifest.json").read_text())
    job = shard_job(home, 2023, man["shards"]["1"]["tiles"], region, rep.path / "trained.faissindex", tmp_path, 1)
    doc = json.loads(json.dumps(job.to_json()))
    assert ShardJob.from_json(doc) == job
    info = build_shard(ShardJob.from_json(doc))
    assert info["n_vectors"] == man["shards"]["1"]["n_vectors"] and info["pixels"] == man["shards"]["1"]["pixels"]
    for kind in ("index", "pixels"):
        assert ShardFiles(tmp_path, 1).paths[kind].read_bytes() == ShardFiles(rep.path, 1).paths[kind].read_bytes()
