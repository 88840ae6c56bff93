"""Benchmark: tessera-search's sharded index against exact search and bare faiss.

    python benchmarks/bench_index.py [--sizes 1e6,1e7] [--queries 30] [--window PX] [--work DIR]
    python benchmarks/bench_index.py --tiny --work DIR      # smoke run: ~25 k pixels, seconds

For each size, in one run and on the same int8 vectors:

- **data**: the product's SYNTHETIC landscape (:mod:`tessera_search.sources.synthetic`,
  seed 7, year 2023), ingested the way a user would: whole 0.1 degree tiles near Nairobi
  on their real UTM grids through ``ts.download(tiles, year, source="synthetic:7")``, or
  with ``--window PX`` a centred PX x PX window of each tile's real grid
  (``ts.generate_tile(..., grid=window)``, written with ``TileStore.write`` and
  ``Catalog.record_tile``, as ``download`` does) for small, fast runs. Enough tiles to
  hold about the requested number of valid pixels (lakes and rivers have none);
- **ours**: ``ts.build_index`` end to end (read store, mask, normalise, add, write) with
  its default parameters, then ``Index.search`` at k = 10 and k = 1000, warm: every query
  is run once (timed separately as the "first pass") before the timed pass; and from a
  point end to end with ``ts.point_query`` + ``ts.search_index``;
- **bare faiss**: the same factory string and the same trained quantizer, ``add_with_ids``
  of the same normalised vectors held in memory, searched at the same nprobe without
  re-ranking;
- **exact**: brute-force cosine over the int8 vectors (chunked float32 matrix-vector
  products over every vector, then argpartition), the ground truth and the latency
  baseline.

Queries are indexed pixels drawn with a fixed seed. Each phase runs in its own process so
its peak RSS is its own. Prints a Markdown table and writes ``bench_index.json`` into the
work directory. ``--tiny`` (= ``--sizes 2e4 --window 100 --queries 5``) is what the smoke
test runs. Not run in CI at full size.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

YEAR = 2023
SEED = 7
TINY = {"sizes": "2e4", "window": 100, "queries": 5}
# Owned pixels of a whole tile near Nairobi (its UTM grid is larger than its cell), and
# the share of the synthetic landscape that is land (water has no embedding).
_OWNED_PER_TILE = 1.06e6
_LAND_SHARE = 0.9


# -- data ----------------------------------------------------------------------------


def _tiles_for(n_pixels: float, window: int):
    """Tiles (a square block near Nairobi) holding about ``n_pixels`` valid pixels."""
    import tessera_search as ts

    per_tile = (window * window if window else _OWNED_PER_TILE) * _LAND_SHARE
    n_tiles = max(1, math.ceil(n_pixels / per_tile))
    side = math.ceil(math.sqrt(n_tiles))
    return [ts.Tile(360 + i % side, -20 + i // side) for i in range(n_tiles)]


def _window_grid(tile, size: int):
    """A centred (size, size) window of the tile's real UTM grid (same CRS and lattice)."""
    import tessera_search as ts

    g = ts.expected_grid(tile)
    r0, c0 = (g.height - size) // 2, (g.width - size) // 2
    a, b, c, d, e, f = g.transform
    return ts.TileGrid(tile, g.epsg, (a, b, c + a * c0, d, e, f + e * r0), size, size)


# -- phases (each in its own process) ------------------------------------------------


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss(field: str = "VmRSS") -> int:
    """Resident bytes: VmRSS (all), RssAnon (process memory) or RssFile (mapped file pages)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def phase_data(home: Path, size: float, window: int) -> dict:
    import tessera_search as ts

    t0 = time.perf_counter()
    tiles = _tiles_for(size, window)
    if window:
        store, catalog = ts.TileStore(home), ts.Catalog(home)
        for tile in tiles:
            if not store.has(tile, YEAR):
                data = ts.generate_tile(tile, YEAR, seed=SEED, grid=_window_grid(tile, window)).data
                catalog.record_tile(store.write(data))
    else:
        ts.download(tiles, YEAR, source=f"synthetic:{SEED}", home=home, progress=False)
    return {"tiles": [t.name for t in tiles], "window": window, "seconds": time.perf_counter() - t0,
            "peak_rss": _peak_rss()}


def phase_build(home: Path, size: float, window: int) -> dict:
    import tessera_search as ts

    t0 = time.perf_counter()
    rep = ts.build_index(tiles=[t.name for t in _tiles_for(size, window)], year=YEAR, home=home,
                         progress=False, name="bench", rebuild=True)
    total = time.perf_counter() - t0
    man = json.loads((rep.path / "manifest.json").read_text())
    add_seconds = sum(s["seconds"] for s in man["shards"].values())
    return {"n_vectors": rep.n_vectors, "n_shards": rep.n_shards, "factory": rep.params.factory,
            "params": rep.params.to_json(), "total_seconds": total, "train_seconds": man.get("train_seconds"),
            "add_seconds": add_seconds, "throughput": rep.n_vectors / add_seconds, "peak_rss": _peak_rss(),
            "disk_bytes": sum(p.stat().st_size for p in rep.path.iterdir())}


def _query_set(home: Path, n: int):
    """(n, 128) unit float32 query vectors: indexed pixels drawn with a fixed seed."""
    import tessera_search as ts
    from tessera_search.index.build import normalise  # the build's own, so vectors match exactly

    idx = ts.open_index("bench", home=home)
    rng = np.random.default_rng(123)
    out = []
    for _ in range(n):
        s = idx.shards[int(rng.integers(len(idx.shards)))]
        out.append(np.asarray(s.vectors[int(rng.integers(s.n_vectors))]))
    return normalise(np.stack(out))


def _all_vectors(home: Path):
    import tessera_search as ts

    idx = ts.open_index("bench", home=home)
    ids = np.concatenate([np.asarray(s.ids) for s in idx.shards])
    vecs = np.concatenate([np.asarray(s.vectors) for s in idx.shards])
    return idx, ids, vecs

def phase_exact(home: Path, n_queries: int, out: Path) -> dict:
    """Ground truth (top 1000 per query) and the exact int8 scan's latency."""
    _, ids, x8 = _all_vectors(home)
    inv = 1.0 / np.sqrt(np.einsum("ij,ij->i", x8.astype(np.float32), x8.astype(np.float32)))
    Q = _query_set(home, n_queries)
    chunk = 1 << 20

    def scan(q: np.ndarray, k: int) -> np.ndarray:
        best_s, best_i = [], []
        for s0 in range(0, len(x8), chunk):
            sims = (x8[s0:s0 + chunk].astype(np.float32) @ q) * inv[s0:s0 + chunk]
            top = np.argpartition(-sims, k - 1)[:k] if len(sims) > k else np.arange(len(sims))
            best_s.append(sims[top])
            best_i.append(top + s0)
        s, i = np.concatenate(best_s), np.concatenate(best_i)
        o = np.lexsort((ids[i], -s))[:k]
        return ids[i[o]]

    truth, lat = [], []
    for q in Q:
        t0 = time.perf_counter()
        truth.append(scan(q, 1000))
        lat.append(time.perf_counter() - t0)
    np.save(out, np.stack(truth))
    return {"median_s": float(np.median(lat)), "p95_s": float(np.percentile(lat, 95)), "peak_rss": _peak_rss(),
            "n": int(len(ids))}


def _recall(got: np.ndarray, truth: np.ndarray, k: int) -> float:
    return len(np.intersect1d(got[:k], truth[:k])) / k


def phase_ours(home: Path, n_queries: int, truth_path: Path) -> dict:
    import faiss

    import tessera_search as ts

    rss0, anon0, file0 = _rss(), _rss("RssAnon"), _rss("RssFile")  # before anything opens the index
    truth = np.load(truth_path)
    Q = _query_set(home, n_queries)
    idx = ts.open_index("bench", home=home)
    resident = 0
    for s in idx.shards:
        ivf = faiss.extract_index_ivf(s.index)
        sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)], np.int64)
        padded = -(-sizes // 32) * 32 if "FastScan" in type(s.index).__name__ else sizes  # fast-scan blocks of 32
        resident += int(padded.sum()) * ivf.code_size + int(sizes.sum()) * 8
        resident += ivf.quantizer.ntotal * ivf.d * 4 + ivf.d * 4 * 256  # centroids + codebooks
    first = []
    for q in Q:  # first pass: pages of the lists and re-rank vectors come into memory
        t0 = time.perf_counter()
        idx.search(q, k=1000)
        first.append(time.perf_counter() - t0)
    lat, r10, r1000 = [], [], []
    for q, t in zip(Q, truth):
        t0 = time.perf_counter()
        res = idx.search(q, k=1000)
        lat.append(time.perf_counter() - t0)
        r1000.append(_recall(res.ids, t, 1000))
        r10.append(_recall(idx.search(q, k=10).ids, t, 10))
    nprobe = res.nprobe
    # End to end from a point: read the pixel from the store, search, locate the matches.
    from tessera_search.grid import pixel_to_lonlat

    e2e = []
    for pid in idx.shards[0].ids[:: max(1, idx.shards[0].n_vectors // 10)][:10]:
        ix, iy, r, c = ts.unpack_ids(int(pid))
        lon, lat_ = pixel_to_lonlat(idx.grid(ts.Tile(int(ix), int(iy))), r, c)
        t0 = time.perf_counter()
        ts.search_index(idx, ts.point_query(idx, (float(lon), float(lat_))), k=1000, record=False)
        e2e.append(time.perf_counter() - t0)
    return {"median_s": float(np.median(lat)), "p95_s": float(np.percentile(lat, 95)),
            "first_median_s": float(np.median(first)), "first_p95_s": float(np.percentile(first, 95)),
            "recall10": float(np.mean(r10)), "recall1000": float(np.mean(r1000)), "nprobe": nprobe,
            "resident_bytes": int(resident), "bytes_per_vector": resident / idx.n_vectors,
            "rss_after_queries": _rss() - rss0, "anon_after_queries": _rss("RssAnon") - anon0,
            "file_after_queries": _rss("RssFile") - file0, "peak_rss": _peak_rss(),
            "e2e_median_s": float(np.median(e2e))}


def phase_bare(home: Path, n_queries: int, truth_path: Path, nprobe: int) -> dict:
    import faiss

    from tessera_search.index.build import normalise

    truth = np.load(truth_path)
    Q = _query_set(home, n_queries)
    idx, ids, x8 = _all_vectors(home)
    x = np.empty((len(x8), 128), np.float32)
    for s0 in range(0, len(x8), 1 << 20):
        x[s0:s0 + (1 << 20)] = normalise(x8[s0:s0 + (1 << 20)])
    del x8
    index = faiss.read_index(str(idx.generation / "trained.faissindex"))  # same factory, same training
    t0 = time.perf_counter()
    index.add_with_ids(x, ids)
    add_s = time.perf_counter() - t0
    del x
    ivf = faiss.extract_index_ivf(index)
    params = faiss.SearchParametersIVF(nprobe=int(nprobe))
    for q in Q:  # warm, as for ours
        index.search(q[None], 1000, params=params)
    lat, r10, r1000 = [], [], []
    for q, t in zip(Q, truth):
        t0 = time.perf_counter()
        _, got = index.search(q[None], 1000, params=params)
        lat.append(time.perf_counter() - t0)
        r1000.append(_recall(got[0], t, 1000))
        _, got10 = index.search(q[None], 10, params=params)
        r10.append(_recall(got10[0], t, 10))
    return {"add_seconds": add_s, "throughput": len(ids) / add_s, "median_s": float(np.median(lat)),
            "p95_s": float(np.percentile(lat, 95)), "recall10": float(np.mean(r10)),
            "recall1000": float(np.mean(r1000)), "bytes_per_vector": ivf.code_size + 8, "peak_rss": _peak_rss()}


# -- orchestration -------------------------------------------------------------------


def _run_phase(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"phase {args} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB RAM"


def _pixels(n: int) -> str:
    return f"{n / 1e6:.1f} M pixels" if n >= 1e5 else f"{n:,} pixels"


def _ratio(x: float) -> str:
    return f"{x:.0f}x" if x >= 10 else f"{x:.2g}x"


def _fmt_table(results: list[dict]) -> str:
    lines = [
        "| metric | " + " | ".join(_pixels(r["n_vectors"]) for r in results) + " |",
        "|---|" + "---|" * len(results),
    ]

    def row(label, fn):
        lines.append(f"| {label} | " + " | ".join(fn(r) for r in results) + " |")

    row("tiles / shards", lambda r: f"{len(r['data']['tiles'])} / {r['build']['n_shards']}")
    row("factory (nprobe, re-ranked candidates)", lambda r: f"`{r['build']['factory']}` ({r['ours']['nprobe']}, {10 * 1000:,})")
    row("recall@10 ours / bare faiss", lambda r: f"{r['ours']['recall10']:.3f} / {r['bare']['recall10']:.3f}")
    row("recall@1000 ours / bare faiss", lambda r: f"{r['ours']['recall1000']:.3f} / {r['bare']['recall1000']:.3f}")
    row("query latency k=1000 median / p95, ours (ms)", lambda r: f"{r['ours']['median_s'] * 1e3:.1f} / {r['ours']['p95_s'] * 1e3:.1f}")
    row("first pass (cold pages) median / p95, ours (ms)", lambda r: f"{r['ours']['first_median_s'] * 1e3:.1f} / {r['ours']['first_p95_s'] * 1e3:.1f}")
    row("query latency k=1000 median / p95, bare faiss (ms)", lambda r: f"{r['bare']['median_s'] * 1e3:.1f} / {r['bare']['p95_s'] * 1e3:.1f}")
    row("exact int8 scan median / p95 (ms)", lambda r: f"{r['exact']['median_s'] * 1e3:.0f} / {r['exact']['p95_s'] * 1e3:.0f}")
    row("speed-up of ours over exact (median)", lambda r: _ratio(r["exact"]["median_s"] / r["ours"]["median_s"]))
    row("query from a point, end to end, median (ms)", lambda r: f"{r['ours']['e2e_median_s'] * 1e3:.1f}")
    row("build throughput ours: read+normalise+add+write (vectors/s)", lambda r: f"{r['build']['throughput']:,.0f}")
    row("bare faiss add throughput (vectors/s)", lambda r: f"{r['bare']['throughput']:,.0f}")
    row("ours / bare faiss throughput", lambda r: f"{r['build']['throughput'] / r['bare']['throughput']:.0%}")
    row("training time (s), whole build (s)", lambda r: f"{r['build']['train_seconds']:.0f}, {r['build']['total_seconds']:.0f}")
    row("resident bytes per pixel (codes + IDs + centroids)", lambda r: f"{r['ours']['bytes_per_vector']:.1f}")
    row("RSS growth after warm queries: all / anonymous / mapped file pages (MiB)",
        lambda r: f"{r['ours']['rss_after_queries'] / 2**20:.0f} / {r['ours'].get('anon_after_queries', 0) / 2**20:.0f}"
                  f" / {r['ours'].get('file_after_queries', 0) / 2**20:.0f}")
    row("on disk per pixel (index + re-rank copy)", lambda r: f"{r['build']['disk_bytes'] / r['n_vectors']:.0f} B")
    row("peak RSS: build / query / bare faiss / exact (GiB)",
        lambda r: " / ".join(f"{r[p]['peak_rss'] / 2**30:.2f}" for p in ("build", "ours", "bare", "exact")))
    return "\n".join(lines)


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e6,1e7", help="valid pixels per run, comma separated (default 1e6,1e7)")
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--window", type=int, default=0, metavar="PX",
                    help="use a centred PX x PX window of each tile's grid (default 0: whole tiles)")
    ap.add_argument("--tiny", action="store_true",
                    help=f"smoke run: --sizes {TINY['sizes']} --window {TINY['window']} --queries {TINY['queries']}")
    ap.add_argument("--work", default="/tmp/tessera-bench-index", help="work directory (kept between runs)")
    ap.add_argument("--clean", action="store_true", help="delete each size's index once measured")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--home", help=argparse.SUPPRESS)
    ap.add_argument("--truth", help=argparse.SUPPRESS)
    ap.add_argument("--nprobe", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.tiny:
        args.sizes, args.window, args.queries = TINY["sizes"], TINY["window"], TINY["queries"]
    try:
        args.size_list = [float(v) for v in args.sizes.split(",")]
    except ValueError:
        ap.error(f"--sizes takes numbers such as 1e6,1e7, got {args.sizes!r}")
    if min(args.size_list) < 2000:  # the ground truth is the top 1000 of every query
        ap.error("every size must be at least 2000 pixels (recall is measured at k = 1000)")
    if args.window < 0 or args.queries < 1:
        ap.error("--window must be >= 0 and --queries >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    if args.phase:
        home = Path(args.home)
        if args.phase == "data":
            res = phase_data(home, args.size, args.window)
        elif args.phase == "build":
            res = phase_build(home, args.size, args.window)
        elif args.phase == "exact":
            res = phase_exact(home, args.queries, Path(args.truth))
        elif args.phase == "ours":
            res = phase_ours(home, args.queries, Path(args.truth))
        else:
            res = phase_bare(home, args.queries, Path(args.truth), args.nprobe)
        print(json.dumps(res))
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for size in args.size_list:
        home = work / (f"n{size:.0e}" + (f"-w{args.window}" if args.window else ""))
        common = ["--size", str(size), "--window", str(args.window), "--home", str(home),
                  "--queries", str(args.queries)]
        truth = str(home / "truth.npy")
        r = {"size": size, "window": args.window}
        for phase in ("data", "build", "exact", "ours"):
            t0 = time.perf_counter()
            r[phase] = _run_phase(["--phase", phase, *common, "--truth", truth])
            print(f"[{size:.0e}] {phase}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        r["bare"] = _run_phase(["--phase", "bare", *common, "--truth", truth, "--nprobe", str(r["ours"]["nprobe"])])
        r["n_vectors"] = r["build"]["n_vectors"]
        results.append(r)
        if args.clean:
            shutil.rmtree(home / "index" / "bench", ignore_errors=True)
    doc = {"machine": _machine(), "date": time.strftime("%Y-%m-%d"), "results": results}
    (work / "bench_index.json").write_text(json.dumps(doc, indent=1))
    print(f"machine: {doc['machine']}; date {doc['date']}\n")
    print(_fmt_table(results))


if __name__ == "__main__":
    main()
