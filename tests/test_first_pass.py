"""The int8-lists index's first pass (``Int8,PQ16``): each row's PQ code of its residual,
scanned before the rows; its best candidates are re-ranked exactly from the store. The
kernel against NumPy, the build's codes files, recall against exact answers with the
same search code and the same choice of parameters (the build's tuning) large indexes use."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tessera_search.errors import IndexCorruptError
from tessera_search.index import build_index, open_index
from tessera_search.index import lists
from tessera_search.index.lists import adc_top, codes_m, faiss_factory, first_pass_for, is_lists_factory
from tessera_search.index.params import choose_params
from tessera_search.index.shards import ShardFiles, generation_problems
from tessera_search.regions import resolve_region

from _helpers import NAIROBI_TILES
from test_index import _exact, _fill
from test_lists import _queries

FACTORY = "IVF64,Int8,PQ16"


def test_factories_name_the_first_pass_and_only_an_asking_factory_gets_one():
    assert codes_m(FACTORY) == 16 and is_lists_factory(FACTORY)
    assert faiss_factory(FACTORY) == "IVF64,PQ16"  # trains the coarse quantizer and the residuals' PQ
    assert codes_m("IVF64,Int8") == 0 and faiss_factory("IVF64,Int8") == "IVF64,Flat"
    assert not is_lists_factory("IVF64,PQ16") and codes_m("IVF64,PQ16") == 0
    assert choose_params(100_000_000, gpu=False).factory == "IVF8192_HNSW32,Int8"  # only when asked for
    assert choose_params(100_000_000, factory="IVF8192_HNSW32,Int8,PQ16").factory.endswith(",Int8,PQ16")


def _adc_case(rng, skip_some=True):
    views = [rng.integers(0, 256, size=(n, 16), dtype=np.uint8) for n in (5000, 3000)]
    tile_of = np.array([0, 1, 0, 1, 0])
    starts, ends = np.array([0, 100, 2600, 2000, 4990]), np.array([2500, 1900, 4900, 3000, 5000])
    bias = rng.normal(size=len(starts)).astype(np.float32)
    lut = rng.normal(size=(16, 256)).astype(np.float32)
    skips = None
    if skip_some:
        flags = np.zeros(5000, np.uint8)
        flags[::7] = 1
        skips = [flags, None]
    return views, tile_of, starts, ends, bias, lut, skips


def test_adc_kernel_matches_numpy_bit_for_bit():
    lib, _ = lists._kernel()
    assert lib is not None
    rng = np.random.default_rng(11)
    views, tile_of, starts, ends, bias, lut, skips = _adc_case(rng)
    # every row's estimate, in float64: bias of its range plus its code bytes' table entries
    est, flagged = [], []
    for t, a, b, c in zip(tile_of, starts, ends, bias):
        x = views[t][a:b]
        est.append(c + lut[np.arange(16), x].astype(np.float64).sum(axis=1))
        flagged.append(skips[t][a:b] != 0 if skips[t] is not None else np.zeros(b - a, bool))
    est, flagged = np.concatenate(est), np.concatenate(flagged)
    est[flagged] = -np.inf
    want = set(np.argsort(-est)[:400].tolist())
    got_c = adc_top(views, tile_of, starts, ends, bias, lut, 400, skips)
    got_np = adc_top(views, tile_of, starts, ends, bias, lut, 400, skips, lib=False)
    for s, i in (got_c, got_np):
        assert len(i) == 400 and set(i.tolist()) == want
        assert np.allclose(s, est[i], atol=1e-4)
        assert not np.any(flagged[i])
    oc, on = np.argsort(got_c[1]), np.argsort(got_np[1])
    assert np.array_equal(got_c[0][oc], got_np[0][on])  # the same float32 sums in the same order
    # numbering from `first`, and fewer rows than asked for
    s, i = adc_top(views, tile_of[:1], starts[:1], ends[:1] - 2490, bias[:1], lut, 50, skips, first=1000)
    assert sorted(i.tolist()) == [1000 + j for j in range(10) if j % 7]


def test_codes_laid_list_by_list_are_read_where_their_offsets_say():
    """A shard's codes lie list after list (code_offsets); the kernel and NumPy read a
    range's codes at its offset and still number and flag its rows by tile position."""
    from tessera_search.index.lists import code_offsets

    table = np.array([[0, 3, 3, 7], [0, 0, 5, 6]])  # two tiles, three lists
    at = code_offsets(table)
    # list 0: tile 0's 3 rows; list 1: tile 1's 5; list 2: tile 0's 4 then tile 1's 1
    assert at.tolist() == [[0, 3, 8], [3, 3, 12]]
    rng = np.random.default_rng(13)
    codes = rng.integers(0, 256, size=(13, 16), dtype=np.uint8)
    lut = rng.normal(size=(16, 256)).astype(np.float32)
    tile_of, lst = np.array([0, 1, 0, 1]), np.array([0, 1, 2, 2])
    starts, ends = table[tile_of, lst], table[tile_of, lst + 1]
    bias = np.zeros(4, np.float32)
    flags = [np.zeros(7, np.uint8), np.array([0, 0, 0, 0, 0, 1], np.uint8)]  # tile 1's row 5 (list 2) flagged
    offs = at[tile_of, lst]
    for lib in (None, False):
        s, i = adc_top([codes], tile_of, starts, ends, bias, lut, 13, flags, lib=lib, at=offs)
        assert sorted(i.tolist()) == list(range(12))  # 13 rows, the flagged one (the last) never kept
        want = lut[np.arange(16), codes[:12]].sum(axis=1)
        assert np.allclose(s[np.argsort(i)], want, atol=1e-4)


def test_codes_read_with_pread_equal_the_mapped_ones(tmp_path):
    """The kernel reads a shard's codes file with pread, a window at a time (ranges past
    the window, ranges behind it, the file's end): the same estimates as through the map;
    a failed read is a StoreError."""
    from tessera_search.errors import StoreError
    from tessera_search.index.lists import _open_fd

    rng = np.random.default_rng(14)
    codes = rng.integers(0, 256, size=(40000, 16), dtype=np.uint8)  # longer than one window (16 Ki codes)
    codes.tofile(tmp_path / "codes")
    mapped = np.memmap(tmp_path / "codes", np.uint8, "r").reshape(-1, 16)
    fd = _open_fd(mapped)
    at = np.array([0, 30000, 100, 39990, 20000])
    n = np.array([5000, 9000, 50, 10, 3])
    starts = np.zeros(len(at), np.int64)
    tile_of = np.zeros(len(at), np.int64)
    bias = rng.normal(size=len(at)).astype(np.float32)
    lut = rng.normal(size=(16, 256)).astype(np.float32)
    want = adc_top([mapped], tile_of, starts, n, bias, lut, 20000, at=at)
    got = adc_top([mapped], tile_of, starts, n, bias, lut, 20000, at=at, fd=fd)
    assert np.array_equal(np.sort(want[1]), np.sort(got[1])) and len(got[1]) == n.sum()
    assert np.array_equal(want[0][np.argsort(want[1])], got[0][np.argsort(got[1])])
    with pytest.raises(StoreError, match="first-pass codes"):
        adc_top([mapped], tile_of, starts, n, bias, lut, 10, at=at + 40000, fd=fd)  # past the end
    import os

    os.close(fd)


def test_first_pass_searches_map_no_codes(built):
    from tessera_search.index.rerank import mapped_bytes

    home, region, rep = built
    idx = open_index(rep.name, home=home)
    idx.params.update({"cand": 5000, "cand_nprobe": 64, "cand10": 1500, "cand_nprobe10": 64})
    _, qs = _queries(home, region, 3, seed=24)
    idx.search(qs[0], k=10)  # opens everything
    before = mapped_bytes()
    for q in qs:
        idx.search(q, k=1000)
    codes = sum(ShardFiles(rep.path, n).codes.stat().st_size for n in range(rep.n_shards))
    assert mapped_bytes() - before < 0.2 * codes  # every code was scanned
    assert all(sh._codes_fd >= 0 for sh in idx.shards)


def test_split_first_pass_gives_the_same_answer(monkeypatch):
    rng = np.random.default_rng(12)
    views, tile_of, starts, ends, bias, lut, skips = _adc_case(rng)
    whole = lists.adc_top(views, tile_of, starts, ends, bias, lut, 300, skips)
    monkeypatch.setattr(lists, "_ADC_SPLIT", 1000)
    monkeypatch.setattr(lists, "_CORES", 3)
    split = lists._adc_parallel(views, tile_of, starts, ends, bias, lut, 300, skips)
    assert set(split[1].tolist()) == set(whole[1].tolist())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    home = tmp_path_factory.mktemp("first-pass-ws")
    _fill(home)
    region = resolve_region(tiles=NAIROBI_TILES)
    rep = build_index(region, 2023, home=home, progress=False, shard_size=7500, factory=FACTORY, name="fp")
    return home, region, rep


def test_the_build_writes_each_shards_codes_and_checks_them(built):
    home, region, rep = built
    man = json.loads((rep.path / "manifest.json").read_text())
    assert man["kind"] == "int8-lists" and rep.n_shards == 2
    for key, sh in man["shards"].items():
        files = ShardFiles(rep.path, int(key))
        table = np.load(files.index)
        assert sh["codes"] == 16 and sh["bytes"]["codes"] == files.codes.stat().st_size
        assert files.codes.stat().st_size == int(table[:, -1].sum()) * 16  # one code per usable row
    tried = man["search"]["codes_tried"]
    assert {m["k"] for m in tried} == {10, 1000} and all(m["cand"] >= m["k"] for m in tried)


def test_codes_estimate_the_cosine_of_the_rows_they_code(built):
    home, region, rep = built
    idx = open_index(rep.name, home=home)
    _, qs = _queries(home, region, 3, seed=4)
    from tessera_search.index.rerank import exact_cosine

    for q in qs:
        for sh in idx.shards:
            found = sh.scan_codes(q, np.arange(64), 500)
            tiles, _ = sh._opened()
            x = np.concatenate([np.asarray(tiles[t].rows[p:p + 1]) for t, p in zip(found.tile, found.pos)])
            err = np.abs(found.scores - exact_cosine(q, x))
            assert np.median(err) < 0.05 and err.max() < 0.3


def test_first_pass_search_recall_and_exact_scores(built, monkeypatch):
    """With the first pass forced (candidates, lists), every result's similarity is its
    exact cosine and recall against brute force is high; the first pass is what ran."""
    home, region, rep = built
    idx = open_index(rep.name, home=home)
    idx.params.update({"cand": 5000, "cand_nprobe": 32, "cand10": 1500, "cand_nprobe10": 32})
    assert first_pass_for(idx.params, 1000) == (5000, 32) and first_pass_for(idx.params, 10) == (1500, 32)
    assert first_pass_for(idx.params, 100) == (1500, 32) and first_pass_for(idx.params, 4000) == (20000, 64)
    calls = []
    real = lists.ListShard.scan_codes
    monkeypatch.setattr(lists.ListShard, "scan_codes", lambda self, *a: calls.append(a[-1]) or real(self, *a))
    qids, qs = _queries(home, region, 8, seed=6)
    rec = {10: [], 300: []}
    for qid, q in zip(qids, qs):
        for k in rec:
            res = idx.search(q, k=k)
            truth, tsims, all_ids, x = _exact(home, region, 2023, q, k)
            assert res.ids[0] == qid and len(set(res.ids.tolist())) == k
            assert np.all(np.diff(res.similarity) <= 0)
            at = {int(i): n for n, i in enumerate(all_ids)}
            xs = x[[at[int(i)] for i in res.ids]]
            cos = xs @ q / np.linalg.norm(xs, axis=1)
            assert np.allclose(res.similarity, cos, atol=1e-5)
            rec[k].append(len(np.intersect1d(res.ids, truth)) / k)
    assert calls and set(calls) == {1500}  # k = 300: the larger of cand10 and 5000 x 300 / 1000
    assert np.mean(rec[10]) >= 0.97 and np.mean(rec[300]) >= 0.95


def test_without_the_kernel_the_first_pass_gives_the_same_answers(built, monkeypatch):
    home, region, rep = built
    forced = {"cand": 5000, "cand_nprobe": 32, "cand10": 1500, "cand_nprobe10": 32}
    _, qs = _queries(home, region, 3, seed=7)
    with open_index(rep.name, home=home) as idx:
        idx.params.update(forced)
        want = [idx.search(q, k=k) for q in qs for k in (10, 300)]
    monkeypatch.setattr(lists, "_LIB", (None, False))  # NumPy scans, reads through the maps
    with open_index(rep.name, home=home) as idx:
        idx.params.update(forced)
        got = [idx.search(q, k=k) for q in qs for k in (10, 300)]
    for a, b in zip(want, got):
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.similarity, b.similarity)


def test_the_tuning_keeps_a_first_pass_only_when_it_is_faster_and_then_meets_the_target(tmp_path, monkeypatch):
    """The build tunes (lists, candidates) per target; kept where faster (here made so by
    the bar), and searches then reach the recall targets on fresh queries."""
    _fill(tmp_path)
    region = resolve_region(tiles=NAIROBI_TILES)
    monkeypatch.setattr(lists, "_FASTER", 1e6)  # every sure first pass counts as faster
    rep = build_index(region, 2023, home=tmp_path, progress=False, factory=FACTORY, name="fp-kept")
    tuned = json.loads((rep.path / "manifest.json").read_text())["search"]
    assert tuned["cand"] >= 1000 and tuned["cand10"] >= 10 and tuned["cand_nprobe"] >= tuned["nprobe"]
    sure = [m for m in tuned["codes_tried"] if m["sure"]]
    assert any(m["cand"] == tuned["cand"] and m["nprobe"] == tuned["cand_nprobe"] for m in sure)
    idx = open_index(rep.name, home=tmp_path)
    assert idx.params["cand"] == tuned["cand"]
    qids, qs = _queries(tmp_path, region, 10, seed=8)
    rec = []
    for q in qs:
        res = idx.search(q, k=10)
        truth, _, _, _ = _exact(tmp_path, region, 2023, q, 10)
        rec.append(len(np.intersect1d(res.ids, truth)) / 10)
    assert np.mean(rec) >= 0.97


def test_lost_or_cut_codes_are_found_and_rebuilt(built, tmp_path):
    home, region, rep = built
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(home, ws, symlinks=True)
    gen = ws / rep.path.relative_to(home)
    man = json.loads((gen / "manifest.json").read_text())
    codes = ShardFiles(gen, 1).codes
    codes.write_bytes(codes.read_bytes()[:-16])
    assert any("codes" in p for p in generation_problems(gen, man))
    with pytest.raises(IndexCorruptError):
        from tessera_search.index.lists import ListShard  # noqa: F401

        idx = open_index(rep.name, home=ws)
        idx.search(np.ones(128, np.float32) / np.sqrt(128), k=10)
    codes.unlink()
    assert "shard-00001.codes is missing" in generation_problems(gen, man)
    again = build_index(region, 2023, home=ws, progress=False, shard_size=7500, factory=FACTORY, name="fp")
    assert again.repaired and ShardFiles(again.path, 1).codes.exists()
    assert not generation_problems(again.path, json.loads((again.path / "manifest.json").read_text()))
