"""The int8-lists index: the compiled scan kernel, the store's clustered layout, and
search against exact answers with the same code and tuned parameters large indexes use."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera_search.errors import IndexCorruptError, KTooLargeError
from tessera_search.grid import Tile, unpack_ids
from tessera_search.index import build_index, open_index
from tessera_search.index import lists
from tessera_search.index.lists import _positions, query16, scan_top
from tessera_search.regions import resolve_region
from tessera_search.store import TileStore

from _helpers import NAIROBI_TILES, small_tile
from test_index import _exact, _fill

FACTORY = "IVF64,Int8"


# -- the kernel ----------------------------------------------------------------------


def _ranges(rng, n, count):
    cuts = np.sort(rng.choice(n, size=2 * count, replace=False))
    return cuts[0::2].astype(np.int64), cuts[1::2].astype(np.int64)


def test_kernel_is_compiled_and_matches_numpy_bit_for_bit():
    lib, simd = lists._kernel()
    assert lib is not None, "the C kernel was not built by the install"
    rng = np.random.default_rng(3)
    rows = rng.integers(-127, 128, size=(5000, 128), dtype=np.int8)
    rows[17] = 0  # the zero row scores -inf
    rows[18], rows[19, :64] = -128, -128  # the int8 extremes
    q = rng.normal(size=128).astype(np.float32)
    q /= np.linalg.norm(q)
    q16 = query16(q)
    starts, ends = _ranges(rng, 5000, 40)
    want = lists._scores_numpy([rows], np.zeros(len(starts), np.int64), starts, ends, q16)
    assert simd == min(lib.ts_simd(), 2) or os.environ.get("TESSERA_SEARCH_SCAN")
    for use_simd in range(lib.ts_simd() + 1):  # plain C, AVX2, AVX-512 VNNI: each the CPU has
        s, i, _ = scan_top([rows], np.zeros(len(starts), np.int64), starts, ends, q16, 300, lib=(lib, use_simd))
        ref = np.lexsort((np.arange(len(want)), -want))[:300]
        assert set(ref.tolist()) <= set(i.tolist()) and len(i) >= 300
        assert np.array_equal(np.sort(s), np.sort(want[i]))  # identical floats on every path
    s, i, _ = scan_top([rows], np.zeros(len(starts), np.int64), starts, ends, q16, 300, lib=(None, False))  # NumPy
    assert set(np.lexsort((np.arange(len(want)), -want))[:300].tolist()) <= set(i.tolist())
    # the score is the cosine, up to the query's int16 rounding
    pos, _ = _positions(np.arange(len(want)), starts, ends)
    x = rows[pos].astype(np.float64)
    norms = np.linalg.norm(x, axis=1)
    ok = norms > 0
    cos = (x[ok] @ q) / norms[ok]
    assert np.max(np.abs(want[ok] * float(np.abs(q).max()) / 32767.0 - cos)) < 1e-4


def test_scans_through_file_descriptors_match_the_mapped_rows(tmp_path):
    """The kernel reads a tile's rows with pread (no pages mapped): the same bits as the map;
    lists it takes rows and pixels of; and a failed read is a StoreError, not garbage."""
    from tessera_search.errors import StoreError
    from tessera_search.index.lists import _open_fd, _TileLists
    from tessera_search.index.shards import release_pages

    rng = np.random.default_rng(5)
    a = rng.integers(-127, 128, size=(6000, 128), dtype=np.int8)  # longer than the read buffer's runs
    b = rng.integers(-127, 128, size=(2500, 128), dtype=np.int8)
    maps = []
    for name, x in (("a", a), ("b", b)):
        x.tofile(tmp_path / name)
        maps.append(np.memmap(tmp_path / name, np.int8, "r", shape=x.shape))
    q16 = query16(rng.normal(size=128).astype(np.float32))
    tile_of = np.array([0, 1, 0, 1])
    starts, ends = np.array([0, 10, 2100, 2000]), np.array([2100, 900, 6000, 2500])
    fds = [_open_fd(m) for m in maps]
    assert min(fds) >= 0
    try:
        mapped = scan_top(maps, tile_of, starts, ends, q16, 400, band=0.001)
        read = scan_top(maps, tile_of, starts, ends, q16, 400, band=0.001, fds=fds)
        assert np.array_equal(mapped[0], read[0]) and np.array_equal(mapped[1], read[1]) and mapped[2] == read[2]
        if os.path.exists("/proc/self/statm"):  # the maps' pages released array by array: the same bits
            from tessera_search.index.rerank import mapped_bytes

            for m in maps:
                release_pages(m)
            before = mapped_bytes()
            kept = scan_top(maps, tile_of, starts, ends, q16, 400, band=0.001)
            assert mapped_bytes() - before >= 0.5 * (a.nbytes + b.nbytes)  # without release_maps they stay
            for m in maps:
                release_pages(m)
            before = mapped_bytes()
            freed = scan_top(maps, tile_of, starts, ends, q16, 400, band=0.001, release_maps=True)
            assert mapped_bytes() - before < 0.05 * (a.nbytes + b.nbytes)
            assert all(np.array_equal(u, v) for u, v in zip(kept[:2], freed[:2])) and kept[2] == freed[2]
            assert np.array_equal(freed[0], read[0]) and np.array_equal(freed[1], read[1])
        with pytest.raises(StoreError, match="failed"):
            scan_top(maps, tile_of, starts, ends + 10_000, q16, 400, fds=fds)  # past the end of the files
    finally:
        for fd in fds:
            os.close(fd)
    order = rng.permutation(len(a)).astype("<i4")
    order.tofile(tmp_path / "order")
    t = _TileLists(maps[0], np.memmap(tmp_path / "order", "<i4", "r"), 100, Tile(1, 1))
    pos = np.sort(rng.choice(len(a), 300, replace=False))
    rows, pix = t.take(pos)
    assert np.array_equal(rows, a[pos]) and np.array_equal(pix, order[pos])


def test_split_scan_gives_the_same_answer(monkeypatch):
    rng = np.random.default_rng(4)
    a = rng.integers(-127, 128, size=(3000, 128), dtype=np.int8)
    b = rng.integers(-127, 128, size=(2000, 128), dtype=np.int8)
    q16 = query16(rng.normal(size=128).astype(np.float32))
    tile_of = np.array([0, 1, 0, 1])
    starts, ends = np.array([0, 0, 1500, 1000]), np.array([1000, 900, 3000, 2000])
    one = scan_top([a, b], tile_of, starts, ends, q16, 250, band=0.002, cap=2000)
    monkeypatch.setattr(lists, "_SPLIT", 100)
    split = lists._scan_parallel([a, b], tile_of, starts, ends, q16, 250, band=0.002, cap=2000)
    assert set(one[1].tolist()) == set(split[1].tolist()) and one[2] == split[2]


def test_kernel_keeps_every_tie_at_the_cut():
    rows = np.tile(np.arange(128, dtype=np.int8)[None, :] - 64, (50, 1))  # 50 equal rows
    q16 = query16(np.ones(128, np.float32) / np.sqrt(128))
    for lib in (lists._kernel(), (None, False)):
        s, i, found = scan_top([rows], np.array([0]), np.array([0]), np.array([50]), q16, 7, lib=lib)
        assert found == 50 and sorted(i.tolist()) == list(range(50))
        s, i, found = scan_top([rows], np.array([0]), np.array([0]), np.array([50]), q16, 7, cap=10, lib=lib)
        assert found == 50 and sorted(i.tolist()) == list(range(10))  # cut short: the lower rows


def test_kernel_asks_for_more_room_when_ties_overflow_it():
    """More equal rows than the kernel's candidate room: it keeps the best it can, says
    more qualified than the cap, and asking again with that cap ends with every tie."""
    rows = np.tile(np.arange(128, dtype=np.int8)[None, :] - 64, (6000, 1))
    rows[4321] = 0  # a zero row never qualifies (-inf)
    q16 = query16(np.ones(128, np.float32) / np.sqrt(128))
    one = (np.array([0]), np.array([0]), np.array([6000]))
    _, i, found = scan_top([rows], *one, q16, 7, cap=10)
    assert found > 10 and len(i) == 10
    cap, rounds = 10, 0
    while found > cap:
        cap, rounds = found, rounds + 1
        _, i, found = scan_top([rows], *one, q16, 7, cap=cap)
    assert found == 5999 and sorted(i.tolist()) == [j for j in range(6000) if j != 4321] and rounds < 12


def test_band_keeps_every_row_near_the_cut():
    rng = np.random.default_rng(8)
    rows = rng.integers(-127, 128, size=(4000, 128), dtype=np.int8)
    q16 = query16(rng.normal(size=128).astype(np.float32))
    want = lists._scores_numpy([rows], np.array([0]), np.array([0]), np.array([4000]), q16)
    for lib in (lists._kernel(), (None, False)):
        s, i, found = scan_top([rows], np.array([0]), np.array([0]), np.array([4000]), q16, 100, band=0.01,
                               cap=4000, lib=lib)
        t = np.sort(want)[::-1][99] - np.float32(0.01)
        assert found == len(i) == int(np.sum(want >= t)) and set(i.tolist()) == set(np.flatnonzero(want >= t).tolist())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 6)), min_size=1, max_size=12))
def test_positions_map_range_numbers_to_rows(spec):
    starts, ends, at = [], [], 0
    for gap, length in spec:
        at += gap
        starts.append(at)
        ends.append(at + length)
        at += length
    starts, ends = np.array(starts, np.int64), np.array(ends, np.int64)
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    if not len(starts):
        return
    flat = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)])
    pos, seg = _positions(np.arange(len(flat)), starts, ends)
    assert np.array_equal(pos, flat)
    assert np.array_equal(seg, np.repeat(np.arange(len(starts)), ends - starts))


# -- the store's clustered layout ------------------------------------------------------


def test_cluster_keeps_every_read_the_same(tmp_path):
    store = TileStore(tmp_path)
    data = small_tile(NAIROBI_TILES[0], height=30, width=34)
    tile, year = data.tile, data.year
    store.write(data)
    before = store.read(tile, year)
    order = np.random.default_rng(1).permutation(30 * 34)
    store.cluster(tile, year, order, "k1")
    after = store.read(tile, year)
    assert np.array_equal(after.embeddings, before.embeddings)
    assert np.array_equal(after.scales, before.scales, equal_nan=True)
    assert store.attrs(tile, year)["clustered"] == {"key": "k1"}
    rows, got_order, key = store.clustered_file(tile, year)
    assert key == "k1" and np.array_equal(got_order, order)
    assert np.array_equal(rows, before.embeddings.reshape(-1, 128)[order])
    r, c = np.array([0, 29, 5, 5]), np.array([0, 33, 7, 7])
    emb, sc = store.read_pixels(tile, year, r, c)
    assert np.array_equal(emb, before.embeddings[r, c])
    assert np.array_equal(sc, before.scales[r, c], equal_nan=True)
    assert store.embedding_file(tile, year) is None
    with pytest.raises(ValueError, match="permutation"):
        store.cluster(tile, year, np.zeros(30 * 34, np.int64), "k2")
    at = store.clustered_rowof(tile, year)  # each pixel's row: random reads need no pass over the order
    assert np.array_equal(at[order], np.arange(30 * 34))
    store.write(before)  # fetched again: the plain layout
    assert store.clustered_file(tile, year) is None and store.clustered_rowof(tile, year) is None
    assert np.array_equal(store.read(tile, year).embeddings, before.embeddings)


def test_a_tile_clustered_before_the_row_table_reads_the_same_and_is_rewritten(tmp_path):
    """Stores clustered by earlier versions have no ``rowof``: reads work out the inverse,
    and the next build rewrites the tile with it."""
    import shutil

    from tessera_search.index.rerank import StoreVectors

    home = tmp_path
    _fill(home, NAIROBI_TILES[:1])
    region = resolve_region(tiles=NAIROBI_TILES[:1])
    build_index(region, 2023, home=home, progress=False, factory=FACTORY, name="old")
    store, tile = TileStore(home), Tile.from_name(NAIROBI_TILES[0])
    before = store.read(tile, 2023)
    shutil.rmtree(store._group_path(tile, 2023) / "rowof")
    assert store.clustered_rowof(tile, 2023) is None
    r, c = np.array([3, 40, 40, 7]), np.array([9, 2, 2, 0])
    assert np.array_equal(store.read_pixels(tile, 2023, r, c)[0], before.embeddings[r, c])
    some = open_index("old", home=home).shards[0].tile_ids(tile.name)[::97]
    _, _, sr, sc = unpack_ids(some)
    assert np.array_equal(StoreVectors(store, 2023).read(some), before.embeddings[sr, sc])
    rep = build_index(region, 2023, home=home, progress=False, factory=FACTORY, name="old", rebuild=True)
    man = json.loads((rep.path / "manifest.json").read_text())
    assert sum(sh["clustered"] for sh in man["shards"].values()) == 1
    assert store.clustered_rowof(tile, 2023) is not None


# -- the index -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    home = tmp_path_factory.mktemp("lists-ws")
    _fill(home)
    region = resolve_region(tiles=NAIROBI_TILES)
    rep = build_index(region, 2023, home=home, progress=False, shard_size=7500, factory=FACTORY, name="lists")
    return home, region, rep


def _queries(home, region, n, seed=5):
    _, _, all_ids, x = _exact(home, region, 2023, np.ones(128) / np.sqrt(128), 1)
    pick = np.random.default_rng(seed).choice(len(all_ids), n, replace=False)
    return all_ids[pick], (x[pick] / np.linalg.norm(x[pick], axis=1, keepdims=True)).astype(np.float32)


def test_build_clusters_the_store_and_tunes_nprobe(built):
    home, region, rep = built
    man = json.loads((rep.path / "manifest.json").read_text())
    assert man["kind"] == "int8-lists" and rep.n_shards == 2
    tuned = man["search"]
    assert tuned["kind"] == "int8-lists" and tuned["reached"] and tuned["n_queries"] == 192
    assert tuned["recall1000"] >= 0.95 and tuned["recall10"] >= 0.99
    assert 1 <= tuned["nprobe"] < 64 and 1 <= tuned["nprobe10"] < 64  # fewer than every list
    assert tuned["tried"][-1]["nprobe"] == max(tuned["nprobe"], tuned["nprobe10"])
    store = TileStore(home)
    keys = {sh["key"] for sh in man["shards"].values()}
    assert len(keys) == 1
    for name in NAIROBI_TILES:
        assert store.clustered_file(Tile.from_name(name), 2023)[2] in keys
    # the list table covers each tile's usable pixels once
    for key, sh in man["shards"].items():
        table = np.load(rep.path / f"shard-{int(key):05d}.faissindex")
        assert table.shape == (len(sh["tiles"]), 65) and np.all(np.diff(table, axis=1) >= 0)
        assert int(table[:, -1].sum()) == sh["n_vectors"]  # every tile wholly in the region


def test_search_recall_at_the_tuned_nprobe(built):
    home, region, rep = built
    idx = open_index(rep.name, home=home)
    qids, qs = _queries(home, region, 12)
    rec = {10: [], 200: []}
    for qid, q in zip(qids, qs):
        for k in rec:
            res = idx.search(q, k=k)
            truth, _, _, _ = _exact(home, region, 2023, q, k)
            assert res.ids[0] == qid and len(set(res.ids.tolist())) == k
            assert np.all(np.diff(res.similarity) <= 0)
            rec[k].append(len(np.intersect1d(res.ids, truth)) / k)
    assert np.mean(rec[10]) >= 0.99 and np.mean(rec[200]) >= 0.95


def test_every_list_probed_is_exact_search(built):
    home, region, rep = built
    idx = open_index(rep.name, home=home)
    _, qs = _queries(home, region, 4, seed=9)
    for q in qs:
        res = idx.search(q, k=300, nprobe=64)
        truth, tsims, _, _ = _exact(home, region, 2023, q, 300)
        assert len(np.intersect1d(res.ids, truth)) >= 298  # float32 vs float64 near-ties only
        assert np.allclose(res.similarity, tsims, atol=1e-5)
    with pytest.raises(KTooLargeError):
        idx.search(qs[0], k=idx.n_vectors + 1)


def test_scans_report_cosines_and_keep_the_exact_top(built):
    """A shard's scan gives the kernel's scores as cosines (within 1e-4 of the exact ones,
    so the tie band and the adaptive stop compare like with like), and what it keeps holds
    the exact best r of the lists it scanned."""
    from tessera_search.index.rerank import exact_cosine

    home, region, rep = built
    idx = open_index(rep.name, home=home)
    _, qs = _queries(home, region, 3, seed=12)
    checked = 0
    for shard, q in ((s, q) for s in idx.shards for q in qs):
        tiles, table = shard._opened()
        _, lists_ = shard._quantizer.search(q[None], 6)
        found = shard.scan(q, lists_[0], 40)
        if not len(found.scores):
            continue
        checked += 1
        exact = np.array([exact_cosine(q, tiles[t].rows[p][None])[0] for t, p in zip(found.tile, found.pos)])
        assert np.max(np.abs(found.scores - exact)) < 1e-4
        every = [(t, p) for t in range(len(tiles)) for l in lists_[0] for p in range(table[t, l], table[t, l + 1])]
        sims = np.array([exact_cosine(q, tiles[t].rows[p][None])[0] for t, p in every])
        best = {every[i] for i in np.argsort(-sims)[:40]}
        assert best <= set(zip(found.tile.tolist(), found.pos.tolist()))
    assert checked


def test_adaptive_rounds_stop_early_and_widen_with_the_margin(built):
    home, region, rep = built
    idx = open_index(rep.name, home=home)
    _, qs = _queries(home, region, 4, seed=13)
    seen = []
    real = lists.ListShard.scan_many

    def counting(self, q, ls, r, cand=None):
        seen.append(int(np.sum(ls >= 0)))
        return real(self, q, ls, r, cand)

    lists.ListShard.scan_many = counting
    try:
        n = {}
        for margin in (0.0, 1.0):
            seen.clear()
            idx.params.update({"margin": margin, "first": 2, "cap": 32, "margin10": margin, "first10": 2, "cap10": 32})
            res = [idx.search(q, k=200) for q in qs]
            n[margin] = sum(seen)
            assert all(len(r.ids) == 200 and np.all(np.diff(r.similarity) <= 0) for r in res)
        full = [idx.search(q, k=200, nprobe=32) for q in qs]  # a fixed count: every list
    finally:
        lists.ListShard.scan_many = real
    assert n[1.0] == 4 * 32 * len(idx.shards)  # a margin of 1 never stops before the cap
    assert n[0.0] < n[1.0]
    for a, b in zip(res, full):
        assert np.array_equal(a.ids, b.ids)  # the cap's lists, all scanned: the same answer


def test_one_shard_merges_as_many_do(built):
    """exact_merge takes one shard's rows as they come (sorted by take); with a second,
    empty part it sorts them itself: the same answers."""
    from tessera_search.index.search import exact_merge

    home, region, rep = built
    idx = open_index(rep.name, home=home)
    _, qs = _queries(home, region, 3, seed=4)
    shard = idx.shards[0]
    part = shard.search(qs, 50, 8)
    empty = (np.full((3, 4), -np.inf, np.float32), np.full((3, 4), -1, np.int64))
    for a, b in zip(exact_merge([part], 40), exact_merge([part, empty], 40)):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_rebuild_keeps_the_clustering_and_a_pq_index_shares_the_store(built):
    home, region, rep = built
    again = build_index(region, 2023, home=home, progress=False, shard_size=7500, factory=FACTORY, name="lists",
                        rebuild=True)
    man = json.loads((again.path / "manifest.json").read_text())
    assert sum(sh["clustered"] for sh in man["shards"].values()) == 0  # same quantizer, same order: no rewrite
    pq = build_index(region, 2023, home=home, progress=False, name="pq-beside", factory="IVF64,PQ16x4fsr")
    q = _queries(home, region, 1, seed=11)[1][0]
    a = open_index("pq-beside", home=home).search(q, k=20, refine_factor=200)
    b = open_index("lists", home=home).search(q, k=20, nprobe=64)
    assert np.array_equal(a.ids, b.ids)
    assert pq.n_vectors == again.n_vectors


def test_partly_covered_tiles_return_only_region_pixels(tmp_path):
    _fill(tmp_path, tiles=NAIROBI_TILES[:2])
    full = resolve_region(tiles=NAIROBI_TILES[:2])
    data = TileStore(tmp_path).read(Tile.from_name(NAIROBI_TILES[0]), 2023)
    import pyproj

    to_ll = pyproj.Transformer.from_crs(data.grid.crs, "EPSG:4326", always_xy=True)
    a, _, x0, _, e, y0 = data.grid.transform
    lon0, lat0 = to_ll.transform(x0, y0 + e * data.grid.height)
    lon1, lat1 = to_ll.transform(x0 + a * data.grid.width / 2, y0)
    part = resolve_region(bbox=f"{lon0 - 0.01},{lat0 - 0.01},{lon1},{lat1 + 0.01}")
    rep = build_index(part, 2023, home=tmp_path, progress=False, factory="IVF16,Int8", name="part")
    man = json.loads((rep.path / "manifest.json").read_text())
    assert any(sh["partial"] for sh in man["shards"].values())
    idx = open_index("part", home=tmp_path)
    _, _, ids_in, x = _exact(tmp_path, part, 2023, np.ones(128) / np.sqrt(128), 1)
    q = (x[3] / np.linalg.norm(x[3])).astype(np.float32)
    res = idx.search(q, k=100, nprobe=16)
    truth, _, _, _ = _exact(tmp_path, part, 2023, q, 100)
    assert set(res.ids.tolist()) <= set(ids_in.tolist())
    assert len(np.intersect1d(res.ids, truth)) >= 99
    assert len(full.tiles) == 2


def test_a_tile_fetched_again_is_clustered_back_and_other_vectors_are_refused(tmp_path):
    _fill(tmp_path, tiles=NAIROBI_TILES[:1])
    region = resolve_region(tiles=NAIROBI_TILES[:1])
    build_index(region, 2023, home=tmp_path, progress=False, factory="IVF16,Int8", name="x")
    store = TileStore(tmp_path)
    tile = Tile.from_name(NAIROBI_TILES[0])
    q = np.ones(128, np.float32) / np.sqrt(128)
    before = open_index("x", home=tmp_path).search(q, k=5)
    store.write(store.read(tile, 2023))  # plain again, as a fresh download writes it
    assert store.clustered_file(tile, 2023) is None
    again = open_index("x", home=tmp_path).search(q, k=5)
    assert np.array_equal(again.ids, before.ids)
    assert store.clustered_file(tile, 2023) is not None  # in the index's order again
    changed = store.read(tile, 2023)
    changed.embeddings[changed.valid] = np.roll(changed.embeddings[changed.valid], 1, axis=0)
    store.write(changed)  # other vectors under the same pixels
    with pytest.raises(IndexCorruptError, match="rebuild"):
        open_index("x", home=tmp_path).search(q, k=5)
    build_index(region, 2023, home=tmp_path, progress=False, factory="IVF8,Int8", name="y")  # another quantizer
    with pytest.raises(IndexCorruptError, match="another index"):
        open_index("x", home=tmp_path).search(q, k=5)


def _evict(path) -> None:
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_prefetch_reads_ahead_only_what_is_not_in_memory(tmp_path):
    from tessera_search.index.shards import release_pages

    path = tmp_path / "rows.bin"
    np.random.default_rng(2).integers(-127, 128, size=(20000, 128), dtype=np.int8).tofile(path)
    rows = np.memmap(path, dtype=np.int8, mode="r", shape=(20000, 128))
    tile_of = np.zeros(4, np.int64)
    starts, ends = np.array([0, 5000, 10000, 15000]), np.array([1000, 6000, 11000, 16000])
    assert int(np.asarray(rows[:20000]).sum()) != 0  # read: every page in memory
    assert lists.prefetch([rows], tile_of, starts, ends) == 0  # warm: nothing to do
    release_pages(rows)
    _evict(path)
    advised = lists.prefetch([rows], tile_of, starts, ends)
    assert advised in (0, 4)  # 4 where the page cache let go of the file (not on tmpfs)
    q16 = query16(np.ones(128, np.float32) / np.sqrt(128))
    s, i, _ = scan_top([rows], tile_of, starts, ends, q16, 10)  # and the scan still reads right
    assert len(i) >= 10


def test_a_cold_scan_reads_ahead_its_rows_and_only_the_kept_rows_pixel_numbers(built, monkeypatch):
    home, region, rep = built
    idx = open_index(rep.name, home=home)
    _, qs = _queries(home, region, 1, seed=6)
    warm = idx.search(qs[0], k=20)
    calls, real = [], lists.prefetch

    def cold(arrays, tile_of, starts, ends, sample=8):
        calls.append((arrays[0].itemsize, np.array(starts), np.array(ends)))
        real(arrays, tile_of, starts, ends, sample)
        return len(starts)  # as if nothing were in memory

    monkeypatch.setattr(lists, "prefetch", cold)
    got = idx.search(qs[0], k=20)
    assert np.array_equal(got.ids, warm.ids)
    assert calls[0][0] == 1 and len(calls[0][1]) > 1  # the int8 rows of every probed range
    order = [c for c in calls if c[0] == 4]  # then the int32 pixel numbers of the kept rows alone
    assert order and all(np.array_equal(e - s, np.ones_like(s)) for _, s, e in order)
    assert sum(len(s) for _, s, _ in order) < 2 * 20 + 64


def _warm_pages(path, offsets) -> None:
    """Read the 4 KiB pages at ``offsets`` into the page cache, and no others (no read-ahead)."""
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for off in offsets:
            os.pread(fd, 4096, int(off) // 4096 * 4096)
    finally:
        os.close(fd)


def test_scans_and_gathers_read_the_same_bits_from_the_disk_as_from_memory(tmp_path):
    """Reads from files try the page cache without waiting first and queue the rest ahead
    (preadv2 RWF_NOWAIT, posix_fadvise WILLNEED): with the files evicted, or only some
    pages of them in memory (ranges whose first pages are cached and the rest not, the
    short reads), a scan and a gather give what they give warm, bit for bit."""
    import os

    from tessera_search.index.lists import _open_fd

    rng = np.random.default_rng(41)
    a = rng.integers(-127, 128, size=(30000, 128), dtype=np.int8)
    a.tofile(tmp_path / "a")
    rows = np.memmap(tmp_path / "a", np.int8, "r", shape=a.shape)
    starts = np.sort(rng.choice(29000, 300, replace=False))
    ends = starts + rng.integers(1, 60, len(starts))
    ends = np.minimum(ends, np.append(starts[1:], 30000))
    tile_of = np.zeros(len(starts), np.int64)
    q16 = query16(rng.normal(size=128).astype(np.float32))
    fd = _open_fd(rows)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no read-ahead around what is read: more short reads
    every = int(np.sum(ends - starts))  # every row's score compared, not only the best
    try:
        want = scan_top([rows], tile_of, starts, ends, q16, every, fds=[fd])  # warm (nothing mapped)
        pos = np.sort(rng.choice(30000, 500, replace=False))
        pos = np.concatenate([pos, np.arange(100, 140)])  # and a run read as one
        pos.sort()
        for warm_first in (False, True):
            _evict(tmp_path / "a")
            if warm_first:  # each range's first page in memory, the rest on disk
                _warm_pages(tmp_path / "a", starts * 128)
            got = scan_top([rows], tile_of, starts, ends, q16, every, fds=[fd])
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]
            _evict(tmp_path / "a")
            if warm_first:
                _warm_pages(tmp_path / "a", pos[::3] * 128)
            out = lists.gather(np.full(len(pos), fd, np.int32), pos, np.empty((len(pos), 128), np.int8), "rows")
            assert np.array_equal(out, a[pos])
    finally:
        os.close(fd)


def test_an_hnsw_coarse_quantizer_still_searches_every_list_asked_for(tmp_path):
    """The HNSW graph assigns at build time; a search ranks the centroids exhaustively, so
    probing every list is exact search (the graph alone returned only some of them)."""
    _fill(tmp_path, tiles=NAIROBI_TILES[:2])
    region = resolve_region(tiles=NAIROBI_TILES[:2])
    rep = build_index(region, 2023, home=tmp_path, progress=False, factory="IVF64_HNSW32,Int8", name="h")
    idx = open_index("h", home=tmp_path)
    _, qs = _queries(tmp_path, region, 3, seed=12)
    for q in qs:
        res = idx.search(q, k=300, nprobe=64)
        truth, _, _, _ = _exact(tmp_path, region, 2023, q, 300)
        assert len(np.intersect1d(res.ids, truth)) >= 298
    assert rep.params.factory == "IVF64_HNSW32,Int8"


def test_flagged_rows_are_never_kept():
    rng = np.random.default_rng(6)
    rows = rng.integers(-127, 128, size=(3000, 128), dtype=np.int8)
    skip = (rng.random(3000) < 0.3).astype(np.uint8)
    q16 = query16(rng.normal(size=128).astype(np.float32))
    want = lists._scores_numpy([rows], np.array([0]), np.array([0]), np.array([3000]), q16)
    want[skip != 0] = -np.inf
    ref = set(np.lexsort((np.arange(3000), -want))[:200].tolist())
    for lib in (lists._kernel(), (None, False)):
        s, i, _ = scan_top([rows], np.array([0]), np.array([0]), np.array([3000]), q16, 200, skips=[skip], lib=lib)
        assert not skip[i].any() and ref <= set(i.tolist()) and np.all(np.isfinite(s))
        s, i, _ = scan_top([rows], np.array([0]), np.array([0]), np.array([3000]), q16, 2500, skips=[skip], lib=lib)
        assert len(i) == int((skip == 0).sum()) and not skip[i].any()  # fewer members than asked for


def test_the_tuning_truth_is_the_exact_top_in_bounded_blocks(built, monkeypatch):
    """exact_top (the truth the build tunes against) streams the store in its list order in
    small blocks, and still finds every query's exact top k (ties decided by ID)."""
    from tessera_search.index import tune

    home, region, rep = built
    idx = open_index(rep.name, home=home)
    qids, qs = _queries(home, region, 6, seed=21)
    monkeypatch.setattr(tune, "_ELEMS", 6 * 700)  # blocks of 4096 rows: many blocks per tile
    got = tune.exact_top(idx, qs, 250)
    assert got.shape == (6, 250)
    for j, q in enumerate(qs):
        truth, tsims, _, _ = _exact(home, region, 2023, q, 250)
        assert got[j, 0] == qids[j]
        assert len(np.intersect1d(got[j], truth)) >= 248  # float32 vs float64 near-ties only
    tile = Tile.from_name(NAIROBI_TILES[0])
    blocks = list(idx.tile_blocks(tile, 1000))
    ids = np.concatenate([b[0] for b in blocks])
    assert len(blocks) > 1 and np.array_equal(np.sort(ids), idx.tile_rows(tile)[1])
    assert np.array_equal(np.concatenate([b[1] for b in blocks]), idx.vectors.read(ids))


@pytest.mark.skipif(not hasattr(np, "memmap") or not __import__("os").path.exists("/proc/self/statm"),
                    reason="mapped pages are read from /proc")
def test_searching_maps_no_store_pages(built):
    """Scans read the clustered rows with pread: searching every list of the index leaves
    (almost) nothing of the store mapped, so resident memory does not grow with it."""
    from tessera_search.index.rerank import mapped_bytes

    home, region, rep = built
    idx = open_index(rep.name, home=home)
    _, qs = _queries(home, region, 3, seed=23)
    idx.search(qs[0], k=10, nprobe=64)  # opens everything
    before = mapped_bytes()
    for q in qs:
        idx.search(q, k=500, nprobe=64)
    assert mapped_bytes() - before < 0.2 * idx.n_vectors * 128  # every row was scanned


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="mapped pages are read from /proc")
def test_a_read_across_tiles_releases_mapped_pages_tile_by_tile(built, monkeypatch):
    """A read of a few pixels of every tile (the tuning's sample queries) keeps at most about
    one tile's pages mapped past the bound, not every tile's until the read ends."""
    from tessera_search.index import rerank
    from tessera_search.index.rerank import mapped_bytes

    home, region, rep = built
    idx = open_index(rep.name, home=home)
    vec = idx.vectors
    ids = np.concatenate([idx.tile_rows(Tile.from_name(t))[1][::40] for t in NAIROBI_TILES])
    vec.read(ids[:1])  # opened and checked
    vec.max_mapped = 0
    vec.read(ids[:1])
    seen, orig = [], rerank._TileFile.read

    def spy(self, r, c):
        seen.append(mapped_bytes())
        return orig(self, r, c)

    monkeypatch.setattr(rerank._TileFile, "read", spy)
    base = mapped_bytes()
    assert np.array_equal(vec.read(ids), np.concatenate([vec.read(ids[i:i + 1]) for i in range(len(ids))]))
    tile_bytes = 60 * 64 * (128 + 8)
    assert len(seen) >= len(NAIROBI_TILES) and max(seen) - base <= 1.5 * tile_bytes


def test_the_mapped_bound_counts_only_what_a_release_can_drop(built, monkeypatch):
    """File pages a release cannot drop (libraries, other maps) do not count against the
    bound: with them alone above it, the files are released once, not at every check."""
    from tessera_search.index import rerank

    home, region, rep = built
    vec = open_index(rep.name, home=home).vectors
    ids = np.concatenate([open_index(rep.name, home=home).tile_rows(Tile.from_name(t))[1][::50]
                          for t in NAIROBI_TILES])
    vec.read(ids)  # every tile opened
    released = []
    monkeypatch.setattr(rerank, "mapped_bytes", lambda unknown=0: 10 << 30)  # 10 GiB of other maps
    monkeypatch.setattr(rerank._TileFile, "release", lambda self: released.append(self.tile.name))
    for _ in range(3):
        assert np.array_equal(vec.read(ids), vec.read(ids[::-1])[::-1])
    assert sorted(released) == sorted(vec._files[k].tile.name for k in vec._files)  # one round


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8192), st.integers(1, 8192), st.integers(1, 100_000))
def test_each_k_probes_for_its_own_target(p1000, p10, k):
    """k <= 10 probes what recall@10 was tuned to need, k = 1000 what recall@1000 needed,
    k between them the larger of the two, and beyond 1000 the count grows."""
    params = {"nprobe": p1000, "nprobe10": p10}
    got = lists.probe_for(params, k)
    if k <= 10:
        assert got == p10
    elif k == 1000:
        assert got == p1000
    elif k < 1000:
        assert got == max(p10, p1000)
    else:
        assert got >= p1000
    assert lists.probe_for({"nprobe": p1000}, k) == lists.probe_for({"nprobe": p1000, "nprobe10": p1000}, k)


def test_gather_reads_runs_of_close_items_once_and_gives_every_item(tmp_path):
    """ts_gather reads items of one file lying close together with one pread (runs), and
    still returns each item at its place: repeats, gaps, files interleaved, long runs."""
    import os

    rng = np.random.default_rng(31)
    arrays, fds = [], []
    for n in range(2):
        a = rng.integers(-127, 128, size=(5000, 128), dtype=np.int8)
        a.tofile(tmp_path / f"rows{n}.bin")
        arrays.append(a)
        fds.append(os.open(tmp_path / f"rows{n}.bin", os.O_RDONLY))
    try:
        pos = np.sort(np.concatenate([rng.integers(0, 5000, 400), np.arange(1000, 3100), [7, 7, 7, 4999]]))
        which = rng.integers(0, 2, len(pos))
        by = np.lexsort((pos, which))
        pos, which = pos[by], which[by]
        got = lists.gather(np.array(fds, np.int32)[which], pos, np.empty((len(pos), 128), np.int8), "rows")
        want = np.stack([arrays[w][p] for w, p in zip(which, pos)])
        assert np.array_equal(got, want)
        back = pos[::-1].copy()  # out of order: every item on its own, the same answer
        got = lists.gather(np.full(len(back), fds[0], np.int32), back, np.empty((len(back), 128), np.int8), "rows")
        assert np.array_equal(got, arrays[0][back])
        with pytest.raises(lists.StoreError, match="rows"):
            lists.gather(np.full(2, fds[0], np.int32), np.array([4999, 5000]), np.empty((2, 128), np.int8), "rows")
    finally:
        for fd in fds:
            os.close(fd)


def test_scanned_lists_are_kept_in_memory_and_read_once(built, monkeypatch):
    """A scan keeps the rows of the lists it read in memory (within ROW_CACHE's budget): a
    second search of the same lists reads nothing from the store (its descriptors are
    closed here) and answers the same; lists never scanned are still read; release gives
    the memory back, and the budget caps what is kept."""
    import os

    home, region, rep = built
    monkeypatch.setattr(lists, "ROW_CACHE", lists.RowCache(64 << 20))
    idx = open_index(rep.name, home=home)
    _, qs = _queries(home, region, 2, seed=41)
    first = idx.search(qs[0], k=200, nprobe=8)
    kept = lists.ROW_CACHE.used
    assert 0 < kept <= 8 * 64 * 60 * 64 * 128  # about 8 lists of every tile
    shards = idx.shards
    saved = {}
    for s in shards:
        for n, t in enumerate(s._opened()[0]):
            saved[(id(s), n)] = t.fd
            bad = os.dup(t.fd)
            os.close(bad)
            t.fd = bad  # a closed descriptor: any read now fails with EBADF
    again = idx.search(qs[0], k=200, nprobe=8)
    assert np.array_equal(again.ids, first.ids) and np.array_equal(again.similarity, first.similarity)
    with pytest.raises(lists.StoreError):
        idx.search(qs[0], k=200, nprobe=64)  # other lists: read from the store, which fails here
    for s in shards:
        for n, t in enumerate(s._opened()[0]):
            t.fd = saved[(id(s), n)]
        s.release()
    assert lists.ROW_CACHE.used == 0
    full = idx.search(qs[1], k=200, nprobe=64)
    assert np.array_equal(full.ids, open_index(rep.name, home=home).search(qs[1], k=200, nprobe=64).ids)
    monkeypatch.setattr(lists, "ROW_CACHE", lists.RowCache(1000))  # too small for any scan's lists
    small = open_index(rep.name, home=home)
    assert np.array_equal(small.search(qs[1], k=200, nprobe=64).ids, full.ids) and lists.ROW_CACHE.used == 0


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="mapped pages are read from /proc")
def test_lists_the_row_cache_has_no_room_for_are_scanned_through_the_maps_within_the_bound(built, monkeypatch):
    """With the row cache full, a scan reads the lists it cannot keep through the store's
    maps instead of copying them (MAP_MISSES): the same answers as reading them, and the
    pages it maps are unmapped again tile by tile as it goes, so a search leaves next to
    nothing mapped."""
    from tessera_search.index.rerank import mapped_bytes

    home, region, rep = built
    _, qs = _queries(home, region, 4, seed=43)
    monkeypatch.setattr(lists, "ROW_CACHE", lists.RowCache(0))
    monkeypatch.setattr(lists, "MAP_MISSES", False)
    read = [open_index(rep.name, home=home).search(q, k=300, nprobe=48) for q in qs]
    monkeypatch.setattr(lists, "MAP_MISSES", True)
    idx = open_index(rep.name, home=home)
    idx.search(qs[0], k=10, nprobe=1)  # opened
    for s in idx.shards:
        s.release()
    calls, orig = [], lists.scan_top

    def spy(*a, **kw):
        calls.append((kw.get("through_map"), kw.get("release_maps")))
        return orig(*a, **kw)

    monkeypatch.setattr(lists, "scan_top", spy)
    before = mapped_bytes()
    for q, want in zip(qs, read):
        got = idx.search(q, k=300, nprobe=48)
        assert np.array_equal(got.ids, want.ids) and np.array_equal(got.similarity, want.similarity)
    assert calls and all(c == (True, True) for c in calls)  # every scan went through the maps
    tile_bytes = 64 * 60 * 64 * 128 // 3  # a third of a tile's rows
    assert mapped_bytes() - before < tile_bytes
    for s in idx.shards:
        s.release()
    assert not lists._MAPPING
