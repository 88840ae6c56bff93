"""Benchmark: building and querying an index through Ray against the local engine.

    python benchmarks/bench_ray.py [--tiles 4] [--window 600] [--queries 30] [--work DIR]
    python benchmarks/bench_ray.py --tiny --work DIR      # smoke run: 4 small tiles, seconds
    python benchmarks/bench_ray.py --address HOST:PORT ...  # on an existing cluster instead

One run, one machine, the same tiles and parameters for both engines:

- **data**: the product's SYNTHETIC landscape (seed 7, 2023) near Nairobi, ``--tiles``
  tiles, each a centred ``--window`` x ``--window`` window of the tile's real UTM grid
  (``--window 0``: whole tiles, through ``ts.download(..., source="synthetic:7")``);
- **local**: ``ts.build_index`` with the local engine (shards one after another in this
  process, faiss using every core), one shard per tile (``shard_size`` = the largest
  tile), then ``Index.search_many`` one query at a time, warm;
- **ray**: a 2-node local Ray cluster started here (``ray.cluster_utils.Cluster``: a head
  and one worker, one CPU each, so the two shard tasks that run at once share the
  machine's cores the way the local build's threads do), the same build with
  ``engine=RayEngine()`` (one task per shard) into another workspace holding the same
  tiles, checked byte-identical, then the same queries through one actor per node,
  checked identical.

Reports build wall time split into training, shards and search tuning, shard throughput
(vectors per second, and per core), query latency (median / p95) at k = 10 and 1000, the
fan-out overhead, the cluster and actor start-up, and bytes per pixel on disk (store and
index) and resident. Prints a Markdown table and writes ``bench_ray.json`` into the work
directory. Not run in CI at full size (``--tiny`` is the smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

YEAR = 2023
SEED = 7
TINY = {"tiles": 4, "window": 120, "queries": 5}


def _tiles(n: int):
    import tessera_search as ts

    side = int(np.ceil(np.sqrt(n)))
    return [ts.Tile(360 + i % side, -20 + i // side) for i in range(n)]


def _window_grid(tile, size: int):
    """A centred (size, size) window of the tile's real UTM grid (same CRS and lattice)."""
    from tessera_search.grid import centred_window, expected_grid

    return centred_window(expected_grid(tile), size, size)


def make_data(home: Path, tiles, window: int) -> float:
    import tessera_search as ts

    t0 = time.perf_counter()
    if window:
        store, catalog = ts.TileStore(home), ts.Catalog(home)
        for tile in tiles:
            if not store.has(tile, YEAR):
                catalog.record_tile(store.write(ts.generate_tile(tile, YEAR, seed=SEED, grid=_window_grid(tile, window)).data))
    else:
        ts.download(tiles, YEAR, source=f"synthetic:{SEED}", home=home, progress=False)
    return time.perf_counter() - t0


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def build(home: Path, tiles, shard_size: int, max_memory: str, engine=None) -> dict:
    import tessera_search as ts

    t0 = time.perf_counter()
    rep = ts.build_index(tiles=[t.name for t in tiles], year=YEAR, home=home, progress=False, name="bench",
                         rebuild=True, shard_size=shard_size, max_memory=max_memory, engine=engine)
    total = time.perf_counter() - t0
    man = json.loads((rep.path / "manifest.json").read_text())
    train = float(man.get("train_seconds") or 0.0)
    tune = float((man.get("search") or {}).get("seconds") or 0.0)
    task_seconds = sum(float(s["seconds"]) for s in man["shards"].values())
    shards_wall = total - train - tune
    return {"path": str(rep.path), "n_vectors": rep.n_vectors, "n_shards": rep.n_shards, "factory": rep.params.factory,
            "total_seconds": total, "train_seconds": train, "tune_seconds": tune, "shards_wall_seconds": shards_wall,
            "shard_task_seconds": task_seconds, "throughput": rep.n_vectors / max(shards_wall, 1e-9),
            "task_throughput": rep.n_vectors / max(task_seconds, 1e-9),
            "index_bytes": _dir_bytes(rep.path),
            "resident_bytes": sum(int(s.get("bytes_resident", 0)) for s in man["shards"].values())}


def same_files(a: str, b: str) -> bool:
    fa = {p.name: p.read_bytes() for p in Path(a).iterdir() if p.is_file() and p.name != "manifest.json"}
    fb = {p.name: p.read_bytes() for p in Path(b).iterdir() if p.is_file() and p.name != "manifest.json"}
    return fa == fb


def query_set(home: Path, tiles, n: int) -> np.ndarray:
    """(n, 128) unit float32: stored land pixels drawn with a fixed seed."""
    import tessera_search as ts
    from tessera_search.index.build import normalise

    store, rng, out = ts.TileStore(home), np.random.default_rng(123), []
    while len(out) < n:
        data = store.read(tiles[int(rng.integers(len(tiles)))], YEAR)
        r, c = int(rng.integers(data.grid.height)), int(rng.integers(data.grid.width))
        if data.valid[r, c] and np.any(data.embeddings[r, c]):
            out.append(data.embeddings[r, c])
    return normalise(np.stack(out))


def time_queries(index, q: np.ndarray, k: int) -> tuple[list, dict]:
    for j in range(len(q)):  # warm: every query once before the timed pass
        index.search(q[j], k=k)
    lat, res = [], []
    for j in range(len(q)):
        t0 = time.perf_counter()
        res.append(index.search(q[j], k=k))
        lat.append(time.perf_counter() - t0)
    lat_ms = np.array(lat) * 1e3
    return res, {"median_ms": float(np.median(lat_ms)), "p95_ms": float(np.percentile(lat_ms, 95))}


def machine() -> dict:
    cpu, flags = platform.processor() or "?", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = [f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "sse4", "fma"))]
                break
    except OSError:
        pass
    import faiss
    import ray

    return {"cpu": cpu, "flags": sorted(set(flags)), "cores": len(os.sched_getaffinity(0)),
            "load_avg": list(os.getloadavg()), "python": platform.python_version(), "ray": ray.__version__,
            "faiss": faiss.__version__, "numpy": np.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def phase(name: str, work: Path, n_tiles: int, window: int, n_queries: int, address: str | None,
          max_memory: str = "2GiB") -> dict:
    """One phase, in this process: data, local, ray (build), search."""
    import tessera_search as ts

    tiles = _tiles(n_tiles)
    home_l, home_r = work / "local", work / "ray"
    if name == "data":
        out = {"data_seconds": make_data(home_l, tiles, window)}
        if home_r.exists():
            shutil.rmtree(home_r)
        shutil.copytree(home_l, home_r)  # the same tiles in a second workspace
        store = ts.TileStore(home_l)
        out["shard_size"] = max(int(store.attrs(t, YEAR).get("n_valid", 0)) for t in tiles)  # one shard per tile
        out["store_bytes"] = _dir_bytes(home_l / "store.zarr") if (home_l / "store.zarr").exists() else None
        return out
    shard_size = json.loads((work / "phase-data.json").read_text())["shard_size"]
    if name == "local":
        return build(home_l, tiles, shard_size, max_memory)
    import ray

    from tessera_search.engine._ray import RayEngine

    ray.init(address=address, log_to_driver=False, logging_level="warning")
    try:
        eng = RayEngine()
        if name == "ray":
            out = build(home_r, tiles, shard_size, max_memory, engine=eng)
            out["nodes_used"] = len(set(eng.placements.values()))
            return out
        q = query_set(home_l, tiles, n_queries)
        out = {"search": {}}
        with ts.open_index("bench", home=home_l) as local, ts.open_index("bench", home=home_l, engine=eng) as remote:
            t1 = time.perf_counter()
            remote.search(q[0], k=10)  # starts one actor per node, each opening its shards
            out["actors_start_seconds"] = time.perf_counter() - t1
            same = True
            for k in (10, 1000):
                if k > local.n_vectors:
                    continue
                ra, ta = time_queries(local, q, k)
                rb, tb = time_queries(remote, q, k)
                same = same and all(np.array_equal(a.ids, b.ids) and np.array_equal(a.similarity, b.similarity)
                                    for a, b in zip(ra, rb))
                out["search"][str(k)] = {"local": ta, "ray": tb, "ratio": tb["median_ms"] / ta["median_ms"],
                                         "overhead_ms": tb["median_ms"] - ta["median_ms"]}
            out["identical_results"] = bool(same)
            out["holders"] = len(remote._held.holders.groups)
        return out
    finally:
        ray.shutdown()


def _run_phase(name: str, a, address: str | None = None) -> dict:
    """A phase in its own process (its memory and faiss state its own); its JSON result."""
    import subprocess

    cmd = [sys.executable, __file__, "--phase", name, "--work", str(a.work), "--tiles", str(a.tiles),
           "--window", str(a.window), "--queries", str(a.queries), "--max-memory", a.max_memory] + (
               ["--address", address] if address else [])
    subprocess.run(cmd, check=True)
    return json.loads((a.work / f"phase-{name}.json").read_text())


def run(a) -> dict:
    """Every phase, the Ray ones against one 2-node local cluster started here."""
    from ray.cluster_utils import Cluster

    out: dict = {"machine": machine(), "tiles": a.tiles, "window": a.window, "queries": a.queries,
                 "max_memory": a.max_memory}
    out.update(_run_phase("data", a))
    out["local"] = _run_phase("local", a)
    t0 = time.perf_counter()
    cluster = None
    if a.address is None:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
    out["cluster_start_seconds"] = time.perf_counter() - t0 if cluster is not None else None
    address = a.address or cluster.address
    try:
        out["ray"] = _run_phase("ray", a, address)
        out["identical_files"] = same_files(out["local"]["path"], out["ray"]["path"])
        out.update(_run_phase("search", a, address))
    finally:
        if cluster is not None:
            cluster.shutdown()
    loc, rem = out["local"], out["ray"]
    n = loc["n_vectors"]
    out["build_ratio"] = rem["total_seconds"] / loc["total_seconds"]
    out["shards_ratio"] = rem["shards_wall_seconds"] / loc["shards_wall_seconds"]
    out["bytes_per_pixel"] = {"index_disk": loc["index_bytes"] / n, "resident": loc["resident_bytes"] / n,
                              "store_disk": (out["store_bytes"] or 0) / n}
    return out


def table(r: dict) -> str:
    loc, rem = r["local"], r["ray"]
    lines = ["| metric | local engine | ray engine (2-node local cluster) |", "|---|---:|---:|"]
    lines.append(f"| pixels / shards | {loc['n_vectors']:,} / {loc['n_shards']} | {rem['n_vectors']:,} / {rem['n_shards']} |")
    lines.append(f"| build, whole (s) | {loc['total_seconds']:.2f} | {rem['total_seconds']:.2f} |")
    lines.append(f"| of which training / search tuning (s, on the driver) | {loc['train_seconds']:.2f} / {loc['tune_seconds']:.2f} | {rem['train_seconds']:.2f} / {rem['tune_seconds']:.2f} |")
    lines.append(f"| of which shards, wall (s) | {loc['shards_wall_seconds']:.2f} | {rem['shards_wall_seconds']:.2f} |")
    lines.append(f"| shard throughput, wall (vectors/s) | {loc['throughput']:,.0f} | {rem['throughput']:,.0f} |")
    lines.append(f"| shard throughput inside a task (vectors/s per task) | {loc['task_throughput']:,.0f} | {rem['task_throughput']:,.0f} |")
    for k, s in r["search"].items():
        lines.append(f"| query k={k}, median / p95 (ms) | {s['local']['median_ms']:.2f} / {s['local']['p95_ms']:.2f} | "
                     f"{s['ray']['median_ms']:.2f} / {s['ray']['p95_ms']:.2f} |")
    start = "joined" if r["cluster_start_seconds"] is None else f"{r['cluster_start_seconds']:.1f}"
    lines.append(f"| cluster start / actors start (s) | - | {start} / {r['actors_start_seconds']:.2f} |")
    lines.append(f"| byte-identical index / identical results | - | {r['identical_files']} / {r['identical_results']} |")
    b = r["bytes_per_pixel"]
    lines.append(f"| bytes per pixel: store on disk / index on disk / resident | {b['store_disk']:.1f} / {b['index_disk']:.1f} / {b['resident']:.1f} | same files |")
    ratios = ", ".join(f"query k={k} {s['ratio']:.2f}x (+{s['overhead_ms']:.2f} ms)" for k, s in r["search"].items())
    lines.append("")
    lines.append(f"Overhead ratios (ray / local): build {r['build_ratio']:.2f}x, shard phase {r['shards_ratio']:.2f}x, {ratios}.")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiles", type=int, default=4)
    ap.add_argument("--window", type=int, default=600, help="pixels per side of each tile's window; 0: whole tiles")
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--max-memory", default="2GiB", help="build memory bound (each Ray task reserves it)")
    ap.add_argument("--work", type=Path, default=Path("bench-ray-work"))
    ap.add_argument("--tiny", action="store_true", help="smoke run: 4 tiles of 120 x 120, 5 queries")
    ap.add_argument("--phase", help=argparse.SUPPRESS)  # internal: run one phase in this process
    ap.add_argument("--address", help="join this Ray cluster (HOST:PORT) instead of starting a 2-node local one")
    a = ap.parse_args(argv)
    if a.tiny:
        a.tiles, a.window, a.queries = TINY["tiles"], TINY["window"], TINY["queries"]
    a.work = a.work.resolve()
    a.work.mkdir(parents=True, exist_ok=True)
    if a.phase:
        res = phase(a.phase, a.work, a.tiles, a.window, a.queries, a.address, a.max_memory)
        (a.work / f"phase-{a.phase}.json").write_text(json.dumps(res, indent=2))
        return 0
    r = run(a)
    (a.work / "bench_ray.json").write_text(json.dumps(r, indent=2))
    m = r["machine"]
    print(f"{m['date']}, {m['cpu']}, {m['cores']} cores ({', '.join(m['flags'])}), load {m['load_avg'][0]:.1f}; "
          f"ray {m['ray']}, faiss {m['faiss']}, numpy {m['numpy']}")
    print(table(r))
    return 0 if r["identical_files"] and r["identical_results"] else 1


if __name__ == "__main__":
    sys.exit(main())
