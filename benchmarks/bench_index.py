"""Benchmark: tessera-search's index against exact search and faiss's own pipelines.

    python benchmarks/bench_index.py --sizes 1e6,1e7 [--queries 30] [--work DIR]
    python benchmarks/bench_index.py --sizes 1e8 --work DIR          # on demand: about an hour or more
    python benchmarks/bench_index.py --report --work DIR --write-docs  # merge results-*.json into docs
    python benchmarks/bench_index.py --remeasure --sizes 1e7 --work DIR  # ours again, after a search change
    python benchmarks/bench_index.py --tiny --work DIR                 # smoke run: ~25 k pixels, seconds

Data: the product's own SYNTHETIC landscape (:mod:`tessera_search.sources.synthetic`,
seed 7, year 2023), whole 0.1 degree tiles near Nairobi on their real UTM grids, stored
through ``ts.download(..., source="synthetic:7")`` as a user would; rows of 10 tiles from
grid_36.05_-1.95 eastwards, then northwards, so every size uses the first tiles of the
same list (one store, ``DIR/home``). ``--window PX`` uses centred PX x PX windows instead.
Queries: indexed pixels drawn with a seed of their own (not the build's tuning queries).
Truth: exact cosine over every indexed pixel (float32 on unit vectors, top 10,000).

Per size, each phase in its own process (its peak RSS is its own), all on the same vectors:

- **build**: ``ts.build_index`` end to end with its defaults (read the store, mask,
  normalise, add, write, tune the search to recall@1000 >= 0.95); and bare faiss
  ``add_with_ids`` of the same normalised vectors (held in memory; at most 4 M of them)
  into a copy of the same trained index, for the throughput ratio;
- **exact**: NumPy (int8 rows to float32 in blocks, matrix-vector product) and faiss
  ``IndexFlatIP`` on float32 unit vectors, one query at a time, k = 1000. Above 10.5 M
  vectors neither fits this box's RAM as float32: both are timed on the first 10 M
  vectors and scaled linearly by N / 10 M (marked "scaled");
- **ours**: ``Index.search`` at k = 10, 100, 1000 and 10,000 (median and p95 latency,
  warm: each query run once before), recall against the truth, queries/s for a batch of
  100 (``Index.search_many``), the cost of the k = 1000 re-rank reads from the store,
  resident memory, and cold queries (the store's and the index's pages evicted from the
  page cache with ``posix_fadvise(DONTNEED)`` before each query), each paired with its floor:
  the same ranges read alone after the same eviction (:func:`_read_cold`), and the disk's
  read throughput by request size on the store's files (:func:`_disk_sweep`);
- **faiss**: IVF-PQ (``PQ32x4fsr``) + ``IndexRefineFlat``, ``IVF-SQ8`` and IVF-RaBitQ +
  ``IndexRefineFlat`` on the same vectors, each with our number of lists, trained on as
  many vectors as ours, searched over a grid of nprobe (and refine k_factor) and reported
  at the fastest setting reaching our recall@1000, timed at k = 1000 (else at the setting
  closest to it; ours probes per k, so neither is held to recall@10 at k = 1000). The
  refine pipelines up to 10.5 M vectors (their float32 copies do not fit RAM beyond);
  above, IVF-SQ8 alone, with an HNSW coarse quantizer as ours.

Results go to ``DIR/results-<size>.json`` (one file per size, so sizes measured by
separate runs of the same code merge); ``--report`` prints the Markdown table of every
results file and ``--write-docs`` replaces the generated part of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

YEAR = 2023
SEED = 7
QUERY_SEED = 99
TINY = {"sizes": "2e4", "window": 100, "queries": 5}
KS = (10, 100, 1000, 10000)
EXACT_MAX = 10_500_000
BARE_MAX = 4_000_000
_PER_TILE = 1.12e6  # indexed pixels of a whole synthetic tile near Nairobi (owned, land)
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
START, END = "<!-- bench_index:start -->", "<!-- bench_index:end -->"


# -- data --------------------------------------------------------------------------------


def tiles_for(n_pixels: float, window: int):
    import tessera_search as ts

    per_tile = window * window * 0.9 if window else _PER_TILE
    return [ts.Tile(360 + i % 10, -20 + i // 10) for i in range(max(1, math.ceil(n_pixels / per_tile)))]


def _window_grid(tile, size: int):
    """A centred (size, size) window of the tile's real UTM grid (same CRS and lattice)."""
    from tessera_search.grid import centred_window, expected_grid

    return centred_window(expected_grid(tile), size, size)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _noisy(data, noise: float, seed: int):
    """A harder landscape: ``data`` with seeded Gaussian noise added to every non-zero
    vector, ``noise`` times each dimension's standard deviation over the tile (more
    within-class spread; the classes and the zero vectors of water stay)."""
    import dataclasses

    emb = data.embeddings.astype(np.float32)
    land = np.any(data.embeddings != 0, axis=2)
    std = emb[land].std(axis=0)
    rng = np.random.default_rng([seed, data.tile.ix + 1800, data.tile.iy + 900])
    emb[land] += rng.standard_normal((int(land.sum()), emb.shape[2]), dtype=np.float32) * (noise * std)
    out = np.clip(np.rint(emb), -127, 127).astype(np.int8)
    out[~land] = 0
    return dataclasses.replace(data, embeddings=out)


def phase_data(home: Path, size: float, window: int, noise: float = 0.0, **_) -> dict:
    import tessera_search as ts

    t0 = time.perf_counter()
    tiles = tiles_for(size, window)
    if noise:
        store, catalog = ts.TileStore(home), ts.Catalog(home)
        for tile in tiles:
            if not store.has(tile, YEAR):
                grid = _window_grid(tile, window) if window else None
                data = ts.generate_tile(tile, YEAR, seed=SEED, grid=grid).data
                catalog.record_tile(store.write(_noisy(data, noise, SEED)))
    elif window:
        store, catalog = ts.TileStore(home), ts.Catalog(home)
        for tile in tiles:
            if not store.has(tile, YEAR):
                catalog.record_tile(store.write(ts.generate_tile(tile, YEAR, seed=SEED, grid=_window_grid(tile, window)).data))
    else:
        ts.download(tiles, YEAR, source=f"synthetic:{SEED}", home=home, progress=False)
    return {"tiles": [t.name for t in tiles], "window": window, "noise": noise, "seconds": time.perf_counter() - t0}


def _unit(x8: np.ndarray) -> np.ndarray:
    from tessera_search.index.build import normalise

    return normalise(x8)


def _all_rows(idx, limit: int | None = None):
    """Yield (ids, int8 rows) of the index's pixels, tile by tile, at most ``limit`` in all."""
    left = limit if limit is not None else idx.n_vectors
    for tile in idx.tiles:
        import tessera_search as ts

        read, ids = idx.tile_rows(ts.Tile.from_name(tile))
        ids = ids[:left]
        if len(ids):
            yield ids, read(0, len(ids))
        left -= len(ids)
        if left <= 0:
            return


def _store_bytes(home: Path, tiles: list[str]) -> int:
    root = home / "store.zarr" / str(YEAR)
    return sum(p.stat().st_size for t in tiles for p in (root / t).rglob("*") if p.is_file())


def phase_build(home: Path, name: str, size: float, window: int, **_) -> dict:
    import faiss

    import tessera_search as ts

    tiles = [t.name for t in tiles_for(size, window)]
    t0 = time.perf_counter()
    rep = ts.build_index(tiles=tiles, year=YEAR, home=home, progress=False, name=name, rebuild=True)
    total = time.perf_counter() - t0
    peak = _peak_rss()
    man = json.loads((rep.path / "manifest.json").read_text())
    shard_s = sum(s["seconds"] for s in man["shards"].values())
    index_bytes = sum(p.stat().st_size for p in rep.path.iterdir() if p.is_file())
    store_bytes = _store_bytes(home, tiles)
    # Bare faiss: the same trained index, the same normalised vectors, in memory.
    idx = ts.open_index(name, home=home)
    ids, x = [], []
    for i, rows in _all_rows(idx, BARE_MAX):
        ids.append(i)
        x.append(_unit(rows))
    ids, x = np.concatenate(ids), np.concatenate(x)
    bare = faiss.read_index(str(rep.path / "trained.faissindex"))
    t1 = time.perf_counter()
    bare.add_with_ids(x, ids)
    bare_s = time.perf_counter() - t1
    search = {k: v for k, v in man["search"].items() if k != "tried"}
    return {"n_vectors": rep.n_vectors, "n_shards": rep.n_shards, "factory": rep.params.factory,
            "params": rep.params.to_json(), "search": search, "tried": man["search"].get("tried", []),
            "total_seconds": total, "train_seconds": man.get("train_seconds"), "shard_seconds": shard_s,
            "tune_seconds": search.get("seconds"), "throughput": rep.n_vectors / shard_s,
            "bare_throughput": len(ids) / bare_s, "bare_vectors": int(len(ids)), "peak_rss": peak,
            "index_bytes": index_bytes, "store_bytes": store_bytes, "tiles": len(tiles),
            "trained_bytes": man.get("trained_bytes"),
            "rewritten_tiles": sum(int(sh.get("clustered", 0)) for sh in man["shards"].values())}


def phase_exact(home: Path, name: str, queries: int, **_) -> dict:
    """Truth (top 10,000 of each query) and the exact scans' latency."""
    import faiss

    import tessera_search as ts
    from tessera_search.index.tune import exact_top, sample_queries

    idx = ts.open_index(name, home=home)
    qids, q8 = sample_queries(idx, queries, seed=QUERY_SEED)
    Q = _unit(q8)
    t0 = time.perf_counter()
    truth = exact_top(idx, Q, min(max(KS), idx.n_vectors))
    truth_s = time.perf_counter() - t0
    np.savez(home / f"truth-{name}.npz", q=Q, ids=qids, truth=truth)
    # Exact baselines, in memory, on up to EXACT_MAX vectors.
    part = min(idx.n_vectors, EXACT_MAX if idx.n_vectors <= EXACT_MAX else 10_000_000)
    ids, x8 = [], []
    for i, rows in _all_rows(idx, part):
        ids.append(i)
        x8.append(rows)
    ids, x8 = np.concatenate(ids), np.concatenate(x8)
    inv = 1.0 / np.linalg.norm(x8.astype(np.float32), axis=1)
    chunk = 1 << 20
    n_time = min(len(Q), 10)
    lat_np = []
    for q in Q[:n_time]:
        t1 = time.perf_counter()
        best_s, best_i = [], []
        for s0 in range(0, len(x8), chunk):
            sims = (x8[s0:s0 + chunk].astype(np.float32) @ q) * inv[s0:s0 + chunk]
            top = np.argpartition(-sims, 999)[:1000] if len(sims) > 1000 else np.arange(len(sims))
            best_s.append(sims[top])
            best_i.append(top + s0)
        s, i = np.concatenate(best_s), np.concatenate(best_i)
        _ = ids[i[np.argsort(-s)[:1000]]]
        lat_np.append(time.perf_counter() - t1)
    flat = faiss.IndexFlatIP(128)
    for s0 in range(0, len(x8), chunk):
        flat.add(_unit(x8[s0:s0 + chunk]))
    del x8
    lat_fl = []
    for q in Q[:n_time]:
        t1 = time.perf_counter()
        flat.search(q[None], 1000)
        lat_fl.append(time.perf_counter() - t1)
    scale = idx.n_vectors / len(ids)
    return {"numpy_median_s": float(np.median(lat_np)) * scale, "numpy_p95_s": float(np.percentile(lat_np, 95)) * scale,
            "flat_median_s": float(np.median(lat_fl)) * scale, "flat_p95_s": float(np.percentile(lat_fl, 95)) * scale,
            "scaled_from": int(len(ids)) if scale != 1 else None, "truth_seconds": truth_s, "peak_rss": _peak_rss(),
            "n": idx.n_vectors}


def _recall(got: np.ndarray, truth: np.ndarray, k: int) -> float:
    return len(np.intersect1d(got[:k], truth[:k])) / k


def _evict(paths) -> None:
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _unmap(idx) -> None:
    """Unmap the store pages an index's shards hold mapped (so eviction can drop them)."""
    for shard in idx.shards:
        if hasattr(shard, "release"):
            shard.release()


def phase_ours(home: Path, name: str, **_) -> dict:
    import tessera_search as ts
    from tessera_search.index.lists import _kernel
    from tessera_search.index.search import merge
    from tessera_search.index.tune import sample_queries

    lib, simd = _kernel()
    if lib is None:  # the NumPy fallback is several times slower: a run of it would measure the wrong code
        raise SystemExit("the compiled scan kernel is unavailable in this process (not built, or an older build "
                         "than this checkout's lists.py: rebuild with `pip install -e .`); not measuring the fallback")
    rss0 = _rss()
    t = np.load(home / f"truth-{name}.npz")
    Q, truth = t["q"], t["truth"]
    idx = ts.open_index(name, home=home)
    out = {"k": {}, "scan_kernel": ("plain C", "AVX2", "AVX-512 VNNI")[simd]}
    for k in KS:
        if k > truth.shape[1]:
            continue
        for q in Q:  # warm
            idx.search(q, k=k)
        lat, rec, rec10, cand = [], [], [], []
        for q, tr in zip(Q, truth):
            t0 = time.perf_counter()
            res = idx.search(q, k=k)
            lat.append(time.perf_counter() - t0)
            rec.append(_recall(res.ids, tr, k))
            rec10.append(_recall(res.ids, tr, 10))
            cand.append(res.candidates)
        out["k"][str(k)] = {"median_s": float(np.median(lat)), "p95_s": float(np.percentile(lat, 95)),
                            "recall": float(np.mean(rec)), "recall10": float(np.mean(rec10)),
                            "nprobe": int(res.nprobe), "candidates": int(np.median(cand))}
    # Re-rank reads alone (k = 1000's candidates), warm. The int8-lists index re-scores
    # inside its scan (rows of the probed lists): here the reads of its k = 1000 results'
    # stored vectors by pixel ID, which is what any other use of the results reads.
    k = min(1000, truth.shape[1])
    lists = idx.kind == "int8-lists"
    r = k if lists else int(max(np.ceil(k * idx.params["refine_factor"]), 4096))
    probe = out["k"][str(k)]["nprobe"]
    reads = []
    for q in Q:
        if lists:
            c = idx.search(q, k=k).ids
        else:
            _, cand = merge(idx._search_shards(q[None], r, probe), r)
            c = cand[0][cand[0] >= 0]
        t0 = time.perf_counter()
        idx.vectors.read(c)
        reads.append(time.perf_counter() - t0)
    out["rerank_read_median_s"] = float(np.median(reads))
    out["rerank_rows"] = int(r)
    out["kind"] = idx.kind
    # A batch of 100 queries.
    _, b8 = sample_queries(idx, 100, seed=QUERY_SEED + 1)
    B = _unit(b8)
    idx.search_many(B[:10], k=k)
    t0 = time.perf_counter()
    idx.search_many(B, k=k)
    out["batch100_qps"] = 100 / (time.perf_counter() - t0)
    out["rss_after_queries"] = _rss() - rss0
    out["peak_rss"] = _peak_rss()
    # Cold: the store's and the index's pages evicted before each query.
    files = [p for p in idx.generation.iterdir() if p.is_file()]
    files += [p for t in idx.tiles for p in (home / "store.zarr" / str(YEAR) / t).rglob("*") if p.is_file()]
    cold, floor, nbytes, nranges = [], [], [], []
    for q in Q[: min(10, len(Q))]:
        idx.vectors._files.clear()  # drop our maps too, so nothing stays resident
        _unmap(idx)
        _evict(files)
        t0 = time.perf_counter()
        idx.search(q, k=k)
        cold.append(time.perf_counter() - t0)
        if lists:  # paired with it: the disk's time to deliver the rows this query scans
            ranges = _query_ranges(idx, q, probe)
            _unmap(idx)
            _evict(files)
            floor.append(_read_cold(ranges))
            nbytes.append(128 * sum(int(np.sum(en - st)) for _, st, en, _ in ranges))
            nranges.append(sum(len(st) for _, st, _, _ in ranges))
    out["cold_median_s"] = float(np.median(cold))
    out["cold_p95_s"] = float(np.percentile(cold, 95))
    if lists:
        out["cold_reads_median_s"] = float(np.median(floor))
        out["cold_over_reads"] = float(np.median(np.array(cold) / np.array(floor)))
        out["cold_bytes"] = int(np.median(nbytes))
        out["cold_ranges"] = int(np.median(nranges))
        out["disk"] = _disk_sweep(idx, files)
    return out


def _query_ranges(idx, q: np.ndarray, nprobe: int) -> list[tuple]:
    """(tiles, starts, ends, tile of each range) of every shard: the row ranges an
    int8-lists search of ``q`` probing ``nprobe`` lists scans, in the order it scans them."""
    _, lists = idx.quantizer().search(np.asarray(q, np.float32)[None], int(nprobe))
    return [(tiles, st, en, tof) for s in idx.shards
            for tiles, st, en, tof, _ in [s._ranges(lists[0][lists[0] >= 0])]]


def _read_cold(ranges: list[tuple]) -> float:
    """Seconds to bring ``ranges`` (:func:`_query_ranges`) from the disk into memory the way
    a cold scan does, and nothing else: every range read ahead at once with the product's
    own ``prefetch`` (``madvise(WILLNEED)``, queued in C), then each read with ``preadv``
    into one buffer, on two threads (a scan's split). The time a cold query cannot beat
    on this disk whatever it computes (it includes Python's ~1 us a read)."""
    from concurrent.futures import ThreadPoolExecutor

    from tessera_search.index.lists import prefetch

    jobs = [(t.fd, int(a) * 128, int(b - a) * 128) for tiles, st, en, tof in ranges
            for t, a, b in zip([tiles[i] for i in tof], st, en)]
    half = len(jobs) // 2
    with ThreadPoolExecutor(2) as pool:
        t0 = time.perf_counter()
        for tiles, st, en, tof in ranges:
            prefetch([t.rows for t in tiles], tof, st, en)
        list(pool.map(_read_jobs, [jobs[:half], jobs[half:]]))
        return time.perf_counter() - t0


def _read_jobs(jobs: list[tuple[int, int, int]]) -> None:
    """Read each (file descriptor, byte offset, bytes) of ``jobs`` with ``preadv`` into one buffer."""
    view = memoryview(bytearray(max((n for _, _, n in jobs), default=0)))
    for fd, off, n in jobs:
        os.preadv(fd, [view[:n]], off)


DISK_SIZES = (16 << 10, 64 << 10, 256 << 10, 1 << 20)


def _disk_sweep(idx, files, total: int = 96 << 20, seed: int = 5) -> dict:
    """The disk's read throughput (GB/s) by request size, on the store's own clustered
    rows: reads of ``size`` bytes at random 4 KiB-aligned offsets of the index's tile
    files, ``total`` bytes in all, every one advised at once (``posix_fadvise WILLNEED``)
    then read, after the files were evicted; the median of 3. What a layout with larger
    runs a list could read at (a list today is one run in each tile)."""
    tiles = [t for s in idx.shards for t in s._opened()[0]]
    sizes = np.array([os.fstat(t.fd).st_size for t in tiles], np.int64)
    rng = np.random.default_rng(seed)
    out = {}
    for size in DISK_SIZES:
        ok = np.flatnonzero(sizes > size)
        if not len(ok):
            continue
        n = max(1, total // size)
        which = rng.choice(ok, n)
        offs = (rng.random(n) * (sizes[which] - size) // 4096 * 4096).astype(np.int64)
        order = np.lexsort((offs, which))
        jobs = [(tiles[int(which[j])].fd, int(offs[j]), size) for j in order]
        runs = []
        for _ in range(3):
            _evict(files)
            t0 = time.perf_counter()
            for fd, off, _n in jobs:
                os.posix_fadvise(fd, off, size, os.POSIX_FADV_WILLNEED)
            _read_jobs(jobs)
            runs.append(time.perf_counter() - t0)
        out[str(size)] = n * size / float(np.median(runs)) / 1e9
    return out


def _tune_faiss(index, Q, truth, target: float, target10: float, grid, order: np.ndarray) -> dict:
    k = min(1000, truth.shape[1])
    tried = []
    for params in grid:
        for q in Q[:5]:
            index.search(q[None], k, params=params())
        lat, rec, rec10 = [], [], []
        for q, tr in zip(Q, truth):
            t0 = time.perf_counter()
            _, got = index.search(q[None], k, params=params())
            lat.append(time.perf_counter() - t0)
            rec.append(_recall(order[got[0][got[0] >= 0]], tr, k))
            _, got10 = index.search(q[None], 10, params=params())
            rec10.append(_recall(order[got10[0][got10[0] >= 0]], tr, 10))
        m = {"setting": params.__doc__, "recall1000": float(np.mean(rec)), "recall10": float(np.mean(rec10)),
             "median_s": float(np.median(lat)), "p95_s": float(np.percentile(lat, 95))}
        tried.append(m)
    return {**pick_faiss({"tried": tried}, target, target10), "tried": tried}


def phase_faiss(home: Path, name: str, kind: str, target: float, target10: float, **_) -> dict:
    import faiss

    import tessera_search as ts

    t = np.load(home / f"truth-{name}.npz")
    Q, truth = t["q"], t["truth"]
    idx = ts.open_index(name, home=home)
    nlist, train_size = int(idx.params["nlist"]), int(idx.params["train_size"])
    # Above EXACT_MAX only IVF-SQ8 fits this box's RAM (the refine pipelines keep float32
    # copies); its vectors are then assigned through an HNSW quantizer, as ours are.
    coarse = f"IVF{nlist}_HNSW32" if idx.n_vectors > EXACT_MAX else f"IVF{nlist}"
    factory = {"ivfpq_refine": f"{coarse},PQ32x4fsr,RFlat", "ivfsq8": f"{coarse},SQ8",
               "rabitq_refine": f"{coarse},RaBitQ,RFlat"}[kind]
    index = faiss.index_factory(128, factory, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(SEED)
    parts = []
    for _, rows in _all_rows(idx):
        take = rng.random(len(rows)) < train_size / idx.n_vectors
        parts.append(_unit(rows[take]))
    t0 = time.perf_counter()
    index.train(np.concatenate(parts)[:train_size])
    train_s = time.perf_counter() - t0
    del parts
    t0 = time.perf_counter()
    order = []  # refine indexes take no IDs: positions, mapped to pixel IDs after the search
    for ids, rows in _all_rows(idx):
        for s in range(0, len(ids), 1 << 18):
            index.add(_unit(rows[s:s + (1 << 18)]))
        order.append(ids)
    add_s = time.perf_counter() - t0
    order = np.concatenate(order)
    probes = [p for p in (8, 16, 32, 64, 128, 256) if p <= nlist]

    def ivf(p):
        def make():
            return faiss.SearchParametersIVF(nprobe=p)
        make.__doc__ = f"nprobe {p}"
        return make

    def refine(p, kf):
        def make():
            return faiss.IndexRefineSearchParameters(k_factor=kf, base_index_params=faiss.SearchParametersIVF(nprobe=p))
        make.__doc__ = f"nprobe {p}, k_factor {kf}"
        return make

    if kind == "ivfsq8":
        grid = [ivf(p) for p in probes]
    elif idx.n_vectors <= 2_000_000:
        grid = [refine(p, kf) for kf in (4, 8, 16, 32) for p in probes]
    else:  # at 10 M each setting costs minutes on 2 cores: the part of the grid near our recall
        grid = [refine(p, kf) for kf in (8, 16, 32) for p in probes if p >= 32]
    res = _tune_faiss(index, Q, truth, target, target10, grid, order)
    return {"factory": factory, "train_seconds": train_s, "add_seconds": add_s, **res, "peak_rss": _peak_rss()}


def phase_retune(home: Path, name: str, **_) -> dict:
    """Tune an already built index again with this code's tuning (its shards and trained
    file unchanged: the tuning only writes the manifest's ``search``)."""
    import tessera_search as ts
    from tessera_search.index.shards import write_manifest
    from tessera_search.index.tune import tune_search

    idx = ts.open_index(name, home=home)
    man = dict(idx.manifest)
    t0 = time.perf_counter()
    man["search"] = tune_search(home, name, idx.generation, man, float(man["search"]["target_recall"]))
    man["search"]["seconds"] = round(time.perf_counter() - t0, 3)
    write_manifest(idx.generation, man)
    return {"search": {k: v for k, v in man["search"].items() if k != "tried"}, "tried": man["search"]["tried"]}


def pick_faiss(f: dict, target: float, target10: float | None = None) -> dict:
    """The fastest of a faiss pipeline's measured settings (timed at k = 1000) reaching our
    recall@1000, else the closest to it (from its grid, so a later, better tuned run of
    ours compares too). Ours probes per k (``probe_for``), so the k = 1000 comparison asks
    the same of both: recall@1000; recall@10 is shown at that setting, not required."""
    tried = f.get("tried") or [f]
    ok = [m for m in tried if m["recall1000"] >= target]
    if ok:
        return {**min(ok, key=lambda m: m["median_s"]), "reached": True}
    return {**max(tried, key=lambda m: (m["recall1000"] - target, -m["median_s"])), "reached": False}


# -- orchestration -------------------------------------------------------------------


def _run_phase(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"phase {args} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def kernels(results: list[dict]) -> str:
    """'; scan kernel X' for the kernels the ours rows were measured with (runs that recorded it)."""
    used = sorted({r["ours"]["scan_kernel"] for r in results if r.get("ours", {}).get("scan_kernel")})
    return f"; scan kernel {', '.join(used)}" if used else ""


def machine() -> dict:
    import faiss

    model, flags = platform.processor() or "unknown CPU", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni") if f in have)
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": model, "flags": flags, "cores": os.cpu_count(), "ram_gib": round(mem),
            "faiss": faiss.__version__, "numpy": np.__version__, "simd": getattr(faiss, "get_compile_options", lambda: "")(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _tag(size: float, window: int, noise: float) -> str:
    return f"bench-{size:.0e}".replace("+", "") + (f"-w{window}" if window else "") + (f"-noise{noise:g}" if noise else "")


def _earlier(work: Path, size: float, window: int, queries: int, noise: float) -> tuple[Path, dict, list[str]]:
    """An earlier run's results file, its results and the phase arguments for its index."""
    name = _tag(size, window, noise)
    path = work / f"results-{name}.json"
    home = work / ("home" + (f"-w{window}" if window else "") + (f"-noise{noise:g}" if noise else ""))
    common = ["--size", str(size), "--window", str(window), "--home", str(home), "--queries", str(queries),
              "--name", name, "--noise", str(noise)]
    return path, json.loads(path.read_text()), common


def retune_size(work: Path, size: float, window: int, queries: int, noise: float = 0.0) -> dict:
    """Re-tune an index a previous run built and measure ours again (``--retune``)."""
    path, r, common = _earlier(work, size, window, queries, noise)
    t0 = time.perf_counter()
    tuned = _run_phase(["--phase", "retune", *common])
    r["build"]["search"], r["build"]["tried"] = tuned["search"], tuned["tried"]
    r["build"]["tune_seconds"] = tuned["search"]["seconds"]
    r["ours"] = _run_phase(["--phase", "ours", *common])
    r["retuned"] = {"machine": machine(), "load": os.getloadavg(), "seconds": time.perf_counter() - t0}
    path.write_text(json.dumps(r, indent=1))
    return r


def remeasure_size(work: Path, size: float, window: int, queries: int, noise: float = 0.0) -> dict:
    """Measure ours again on the index a previous run built and tuned (``--remeasure``:
    the search code changed, the index and its tuning did not; faiss's rows stay, tuned
    to our recall, which a change of speed alone leaves as it was)."""
    path, r, common = _earlier(work, size, window, queries, noise)
    before = r["ours"]
    r["ours"] = _run_phase(["--phase", "ours", *common])
    for k, m in before["k"].items():  # the same index and queries: the same answers
        if abs(r["ours"]["k"][k]["recall"] - m["recall"]) > 1e-4:  # ties at the cut may swap
            raise SystemExit(f"k = {k}: recall {r['ours']['k'][k]['recall']} differs from the first run's {m['recall']}")
    r["remeasured"] = {"machine": machine(), "load": os.getloadavg()}
    path.write_text(json.dumps(r, indent=1))
    return r


def run_size(work: Path, size: float, window: int, queries: int, faiss_kinds: list[str], noise: float = 0.0) -> dict:
    home = work / ("home" + (f"-w{window}" if window else "") + (f"-noise{noise:g}" if noise else ""))
    name = _tag(size, window, noise)
    common = ["--size", str(size), "--window", str(window), "--home", str(home), "--queries", str(queries),
              "--name", name, "--noise", str(noise)]
    r = {"size": size, "window": window, "noise": noise, "machine": machine(), "load_start": os.getloadavg()}
    for phase in ("data", "build", "exact", "ours"):
        t0 = time.perf_counter()
        r[phase] = _run_phase(["--phase", phase, *common])
        print(f"[{size:.0e}] {phase}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    # faiss's pipelines are tuned to reach our recall@1000 (at k = 1000) and our recall@10 (at k = 10).
    target, target10 = r["ours"]["k"]["1000"]["recall"], r["ours"]["k"]["10"]["recall"]
    r["faiss"] = {}
    fits = faiss_kinds if r["build"]["n_vectors"] <= EXACT_MAX else [k for k in faiss_kinds if k == "ivfsq8"]
    if fits:
        for kind in fits:
            t0 = time.perf_counter()
            r["faiss"][kind] = _run_phase(["--phase", "faiss", "--kind", kind, "--target", str(target),
                                           "--target10", str(target10), *common])
            print(f"[{size:.0e}] faiss {kind}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    r["n_vectors"] = r["build"]["n_vectors"]
    r["load_end"] = os.getloadavg()
    (work / f"results-{name}.json").write_text(json.dumps(r, indent=1))
    return r


# -- report ------------------------------------------------------------------------------


def _ms(s: float) -> str:
    return f"{s * 1e3:.1f}" if s < 10 else f"{s * 1e3:,.0f}"


def _px(n: int) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e5 else f"{n:,}"


def fmt_table(results: list[dict]) -> str:
    rs = sorted(results, key=lambda r: (r.get("noise", 0.0), r["n_vectors"]))
    head = [_px(r["n_vectors"]) + " px" + (f", noise {r['noise']:g}" if r.get("noise") else "") for r in rs]
    lines = ["| metric | " + " | ".join(head) + " |", "|---|" + "---:|" * len(rs)]

    def row(label, fn):
        cells = []
        for r in rs:
            try:
                cells.append(fn(r))
            except (KeyError, TypeError, ZeroDivisionError, ValueError):
                cells.append("-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    k1 = lambda r: r["ours"]["k"]["1000"]  # noqa: E731
    exact = lambda r: min(r["exact"]["numpy_median_s"], r["exact"]["flat_median_s"])  # noqa: E731
    row("tiles / shards", lambda r: f"{r['build']['tiles']} / {r['build']['n_shards']}")
    row("factory", lambda r: f"`{r['build']['factory']}`")
    def tuned(r):
        t = r["build"]["search"]
        if t.get("kind") == "int8-lists":
            out = f"nprobe {t['nprobe']} (recall@1000), {t['nprobe10']} (recall@10) of {r['build']['params']['nlist']:,} lists"
            fast = [f"{t['cand' + s]:,} candidates of {t['cand_nprobe' + s]} lists ({what})"
                    for s, what in (("", "recall@1000"), ("10", "recall@10")) if t.get("cand" + s)]
            stop = [f"margin {t['margin' + s]} ({what})" for s, what in (("", "recall@1000"), ("10", "recall@10"))
                    if t.get("margin" + s) is not None]
            if fast:
                out += "; first pass: " + ", ".join(fast)
            elif "codes_tried" in t:
                out += "; first pass tuned, not kept (not faster)"
            if stop:
                out += "; adaptive stop: " + ", ".join(stop)
            return out
        return (f"refine factor {t['refine_factor']}, list factor {t['list_factor']}, min candidates "
                f"{t.get('min_candidates', 4096):,} (nprobe {k1(r)['nprobe']} at k=1000)")

    row("tuned search", tuned)
    row("**recall@1000** ours (k = 1000)", lambda r: f"**{k1(r)['recall']:.3f}**")
    row("**recall@10** ours (k = 10)", lambda r: f"**{r['ours']['k']['10']['recall']:.3f}**")
    for k in KS:
        row(f"ours k={k:,}: median / p95 ms (recall@k)",
            lambda r, k=k: f"{_ms(r['ours']['k'][str(k)]['median_s'])} / {_ms(r['ours']['k'][str(k)]['p95_s'])} "
                           f"({r['ours']['k'][str(k)]['recall']:.3f})")
    row("ours batch of 100, k=1000 (queries/s)", lambda r: f"{r['ours']['batch100_qps']:.0f}")
    row("stored vectors read by pixel ID: k=1000 results (int8-lists) or re-rank candidates (PQ): rows, ms",
        lambda r: f"{r['ours']['rerank_rows']:,}, {_ms(r['ours']['rerank_read_median_s'])}")
    row("cold query k=1000 median / p95 ms (x warm)",
        lambda r: f"{_ms(r['ours']['cold_median_s'])} / {_ms(r['ours']['cold_p95_s'])} "
                  f"({r['ours']['cold_median_s'] / k1(r)['median_s']:.1f}x)")
    row("cold query's reads alone (its ranges: count, MB; read ahead at once, then read), median ms (x warm); cold / reads (median of pairs)",
        lambda r: f"{r['ours']['cold_ranges']:,}, {r['ours']['cold_bytes'] / 1e6:.1f} MB: "
                  f"{_ms(r['ours']['cold_reads_median_s'])} ({r['ours']['cold_reads_median_s'] / k1(r)['median_s']:.1f}x); "
                  f"{r['ours']['cold_over_reads']:.2f}")
    row("disk read GB/s by request size (" + " / ".join(f"{s >> 10} KiB" for s in DISK_SIZES) + "), store files, cold",
        lambda r: " / ".join(f"{r['ours']['disk'][str(s)]:.2f}" for s in DISK_SIZES))
    row("exact NumPy int8 scan, median ms", lambda r: _ms(r["exact"]["numpy_median_s"]) + (" (scaled)" if r["exact"]["scaled_from"] else ""))
    row("exact faiss IndexFlatIP float32, median ms", lambda r: _ms(r["exact"]["flat_median_s"]) + (" (scaled)" if r["exact"]["scaled_from"] else ""))
    row("**speed-up over the faster exact scan** (k=1000, median)", lambda r: f"**{exact(r) / k1(r)['median_s']:.0f}x**")
    for kind, label in (("ivfpq_refine", "faiss IVF-PQ32x4fsr + RefineFlat"), ("ivfsq8", "faiss IVF-SQ8"),
                        ("rabitq_refine", "faiss IVF-RaBitQ + RefineFlat")):
        fz = lambda r, kind: pick_faiss(r["faiss"][kind], k1(r)["recall"], r["ours"]["k"]["10"]["recall"])  # noqa: E731
        row(f"{label} at our recall@1000 (k=1000): setting, recall@1000 / @10, median / p95 ms",
            lambda r, kind=kind: (lambda f: f"{f['setting']}{'' if f['reached'] else ' (closest)'}: {f['recall1000']:.3f} / "
                                            f"{f['recall10']:.3f}, {_ms(f['median_s'])} / {_ms(f['p95_s'])}")(fz(r, kind)))
        row(f"ours vs {label} (their median / ours)", lambda r, kind=kind: f"{fz(r, kind)['median_s'] / k1(r)['median_s']:.1f}x")
    row("build end to end (s): whole / train / shards / tune",
        lambda r: f"{r['build']['total_seconds']:.0f} / {r['build']['train_seconds']:.0f} / {r['build']['shard_seconds']:.0f} / "
                  f"{r['build']['tune_seconds']:.0f}")
    row("shard build (read + assign + cluster the store / add + write) vs bare faiss add of the same IVF (vectors/s)",
        lambda r: f"{r['build']['throughput']:,.0f} vs {r['build']['bare_throughput']:,.0f} "
                  f"= **{r['build']['throughput'] / r['build']['bare_throughput']:.0%}**"
                  + (f" ({r['build']['rewritten_tiles']} of {r['build']['tiles']} tiles rewritten: the others were "
                     "in this quantizer's order already)"
                     if r["build"].get("rewritten_tiles", r["build"]["tiles"]) < r["build"]["tiles"] else ""))
    row("**disk bytes per pixel**: store + index = total",
        lambda r: f"{r['build']['store_bytes'] / r['n_vectors']:.1f} + {r['build']['index_bytes'] / r['n_vectors']:.1f} = "
                  f"**{(r['build']['store_bytes'] + r['build']['index_bytes']) / r['n_vectors']:.1f}**")
    row("**peak RSS** build / query process (GiB)",
        lambda r: (f"**{r['build']['peak_rss'] / 2**30:.2f}" if "peak_rss" in r["build"] else "**-")
                  + f" / {r['ours']['peak_rss'] / 2**30:.2f}**")
    row("load average at start / end", lambda r: f"{r['load_start'][0]:.1f} / {r['load_end'][0]:.1f}")
    return "\n".join(lines)


def kenya(results: list[dict]) -> str:
    """The Kenya estimate (5.8e9 pixels a year) from the largest measured size."""
    r = max((r for r in results if r["n_vectors"] >= 1e5 and not r.get("noise") and "shard_seconds" in r["build"]),
            key=lambda r: r["n_vectors"], default=None)  # the largest size whose build was measured
    if r is None:
        return ""
    n, kn = r["n_vectors"], 5.8e9
    b = r["build"]
    per_px_disk = (b["store_bytes"] + b["index_bytes"]) / n
    core_s_per_px = b["shard_seconds"] * (r["machine"]["cores"] or 1) / n
    hours_core = core_s_per_px * kn / 3600
    warm = b.get("rewritten_tiles", b["tiles"]) < b["tiles"]
    return (f"From the {_px(n)}-pixel run: {per_px_disk:.0f} B/px on disk gives **{per_px_disk * kn / 1e12:.2f} TB** for "
            f"Kenya (5.8e9 px a year; store {b['store_bytes'] / n * kn / 1e12:.2f} TB + index "
            f"{b['index_bytes'] / n * kn / 1e12:.2f} TB). Shards are built at {b['throughput']:,.0f} vectors/s on "
            f"{r['machine']['cores']} cores = {core_s_per_px * 1e6:.1f} core-us per pixel"
            + (" (its tiles were in the quantizer's order already: without the store's rewrite)" if warm else "")
            + f": **{hours_core:,.0f} core-hours**, "
            f"{hours_core / 16:.1f} h on 16 cores (coarse assignment through the HNSW quantizer, whose cost grows with "
            f"log(nlist), so the larger nlist at Kenya scale changes this little; measured at nlist "
            f"{b['params']['nlist']}). Peak RSS of the build process {b['peak_rss'] / 2**30:.2f} GiB (default "
            f"`--max-memory` 2 GiB; the issue's bound is that + 512 MiB) and of the query process "
            f"{r['ours']['peak_rss'] / 2**30:.2f} GiB (bound 2 GiB). A query process keeps at most 768 MiB of "
            f"scanned lists' rows in memory (the row cache; the lists are the store's rows, read with `pread`, none "
            f"stay mapped)" + (", and the first pass's codes are read through their map, released past 1 GiB"
                               if ",PQ" in b["factory"] else "") +
            ", so its memory does not grow with the index.")


def write_docs(results: list[dict]) -> None:
    m = max(results, key=lambda r: r["n_vectors"])["machine"]
    retuned = [f"{r['n_vectors'] / 1e6:.1f} M" for r in results if r.get("retuned")]
    note = (f" Re-tuned with `--retune` (shards as built; search tuning and the ours rows measured again by the "
            f"final code, {', '.join(sorted({r['retuned']['machine']['date'] for r in results if r.get('retuned')}))}): "
            f"{', '.join(retuned)}." if retuned else "")
    again = [r for r in results if r.get("remeasured")]
    note += (f" The ours rows of {', '.join(_px(r['n_vectors']) for r in again)} were measured again with "
             f"`--remeasure` by the final search code (index, tuning, recall and faiss rows as first measured; "
             f"{', '.join(sorted({r['remeasured']['machine']['date'] for r in again}))})." if again else "")
    resumed = [_px(r["n_vectors"]) for r in results if r["build"].get("resumed")]
    note += (f" The build of {', '.join(resumed)} was cut short in its tuning and resumed by `build_index` "
             f"(finished shards kept, tuned again), so its build time, throughput and peak RSS were not measured in "
             f"this run (-)." if resumed else "")
    body = (f"{START}\n_Generated by `benchmarks/bench_index.py --report --write-docs` from "
            f"{', '.join(sorted(str(r['size']) for r in results))} runs; machine: {m['cpu']} "
            f"({m['flags']}), {m['cores']} cores, {m['ram_gib']} GiB RAM; faiss {m['faiss']}, numpy {m['numpy']}; "
            f"dates {', '.join(sorted({r['machine']['date'] for r in results}))}{kernels(results)}.{note}_\n\n"
            f"{fmt_table(results)}\n\n"
            f"**Kenya estimate.** {kenya(results)}\n{END}")
    text = DOC.read_text()
    if START in text and END in text:
        text = text[:text.index(START)] + body + text[text.index(END) + len(END):]
    else:
        raise SystemExit(f"{DOC} lacks the {START} ... {END} markers of the index section")
    DOC.write_text(text)


def _parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e6,1e7", help="indexed pixels per run, comma separated (default 1e6,1e7)")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--window", type=int, default=0, metavar="PX", help="centred PX x PX windows of each tile")
    ap.add_argument("--noise", type=float, default=0.0, metavar="F",
                    help="the harder landscape: add seeded Gaussian noise of F x each dimension's std to every land vector")
    ap.add_argument("--tiny", action="store_true", help="smoke run: --sizes 2e4 --window 100 --queries 5")
    ap.add_argument("--work", default="/work/bench-data/bench-index", help="work directory (kept between runs)")
    ap.add_argument("--faiss", default="ivfpq_refine,ivfsq8,rabitq_refine", help="faiss pipelines to compare ('' for none)")
    ap.add_argument("--report", action="store_true", help="print the table of every results-*.json in --work")
    ap.add_argument("--retune", action="store_true",
                    help="re-tune the indexes an earlier run built (shards unchanged) and measure ours again")
    ap.add_argument("--remeasure", action="store_true",
                    help="measure ours again on the indexes an earlier run built and tuned (search code changed)")
    ap.add_argument("--write-docs", action="store_true", help="with --report: replace the generated part of docs/benchmarks.md")
    for hidden in ("--phase", "--home", "--name", "--kind"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--target", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--target10", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.tiny:
        args.sizes, args.window, args.queries = TINY["sizes"], TINY["window"], TINY["queries"]
    try:
        args.size_list = [float(v) for v in args.sizes.split(",")]
    except ValueError:
        ap.error(f"--sizes takes numbers such as 1e6,1e7, got {args.sizes!r}")
    if min(args.size_list) < 2000 or args.window < 0 or args.queries < 1:
        ap.error("sizes must be >= 2000 pixels, --window >= 0, --queries >= 1")
    return args


def main(argv=None) -> None:
    args = _parse_args(argv)
    if args.phase:
        fn = {"data": phase_data, "build": phase_build, "exact": phase_exact, "ours": phase_ours,
              "faiss": phase_faiss, "retune": phase_retune}[args.phase]
        print(json.dumps(fn(home=Path(args.home), name=args.name, size=args.size, window=args.window,
                            queries=args.queries, kind=args.kind, target=args.target, target10=args.target10,
                            noise=args.noise)))
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.retune:
        for size in args.size_list:
            retune_size(work, size, args.window, args.queries, args.noise)
    elif args.remeasure:
        for size in args.size_list:
            remeasure_size(work, size, args.window, args.queries, args.noise)
    elif not args.report:
        kinds = [k for k in args.faiss.split(",") if k]
        for size in args.size_list:
            run_size(work, size, args.window, args.queries, kinds, args.noise)
    results = [json.loads(p.read_text()) for p in sorted(work.glob("results-*.json"))]
    if not args.report:
        names = {_tag(s, args.window, args.noise) for s in args.size_list}
        results = [r for r in results if _tag(r["size"], r["window"], r.get("noise", 0.0)) in names]
    print(fmt_table(results))
    print("\n" + kenya(results))
    if args.write_docs:
        write_docs(results)


if __name__ == "__main__":
    main()
