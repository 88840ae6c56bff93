"""Tuning an index's search to a recall target, at build time, on held-out sample queries.

After the shards are built, :func:`tune_search` draws sample queries (indexed pixels
chosen with their own seed, not the training sample's), computes their exact top 1000
by one sequential pass over the index's pixels in the store (float32 cosine, in blocks:
memory stays bounded whatever the index size), then searches them with
growing candidate budgets (``refine_factor``, the candidates re-ranked as a multiple of
k) and two list budgets (``list_factor``: the probed lists hold that many times the
candidates), measures recall@1000 and the median latency of each setting, and keeps the
fastest that reaches the target at k = 1000. Then the floor of candidates for small k
(``min_candidates``: 4096, doubled) is raised until searches at k = 10 reach
recall@10 >= 0.99 (PQ ranks too coarsely for 10 x k candidates to hold the top 10). The
choice and what was measured go into the manifest (``search``); :class:`Index` searches
with it by default. The same search code runs here as for every query.
"""

from __future__ import annotations

import time

import numpy as np

from .rerank import top_k

__all__ = ["exact_top", "sample_queries", "tune_search"]

QUERY_SEED = 4321
N_QUERIES = 32
K = 1000
_REFINE = (4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
_LISTS = (1.5, 3.0)
_ELEMS = 1 << 22  # scores held at once by the exact pass (16 MiB)
MIN_CANDIDATES = 4096
RECALL10 = 0.99


def sample_queries(index, n: int = N_QUERIES, seed: int = QUERY_SEED) -> tuple[np.ndarray, np.ndarray]:
    """((n,) int64 pixel IDs, (n, 128) int8 vectors): indexed pixels drawn with ``seed``,
    each shard and tile in proportion to its pixels."""
    rng = np.random.default_rng(seed)
    tiles = [(s, t, lay[3]) for s in index.shards for t, lay in s._layout.items() if lay[3] > 0]
    weights = np.array([c for _, _, c in tiles], float)
    picks = rng.choice(len(tiles), size=n, p=weights / weights.sum())
    ids = []
    for j in np.unique(picks):
        s, t, _ = tiles[j]
        tid = s.tile_ids(t)
        ids.append(tid[rng.choice(len(tid), size=int(np.sum(picks == j)), replace=False)])
    ids = np.sort(np.concatenate(ids))
    return ids, index.vectors.read(ids)


def exact_top(index, queries: np.ndarray, k: int = K) -> np.ndarray:
    """(m, k) int64: the exact top ``k`` pixel IDs (cosine, ties by ID) of each unit query,
    by one sequential pass over every indexed pixel in the store. Memory stays bounded
    whatever the index size: blocks of about ``_ELEMS / m`` rows, and of each block only
    the scores that can still enter a query's top ``k`` are kept."""
    q = np.asarray(queries, np.float32)
    m = len(q)
    block = int(max(4096, _ELEMS // max(m, 1)))
    best_s = np.full((m, k), -np.inf, np.float32)
    best_i = np.full((m, k), -1, np.int64)
    floor = np.full(m, -np.inf, np.float32)  # each query's k-th best so far
    for shard in index.shards:
        for tile in shard.tiles:
            for ids, x8 in index.tile_blocks(_tile(tile), block):
                x = x8.astype(np.float32)
                norms = np.sqrt(np.einsum("ij,ij->i", x, x))
                norms[norms == 0] = np.inf
                sims = (q @ x.T) / norms[None, :]  # (m, b)
                rows, cols = np.nonzero(sims >= floor[:, None])
                if not len(rows):
                    continue
                # The passing scores of each query, padded to one (m, c) array.
                counts = np.bincount(rows, minlength=m)
                width = int(counts.max())
                slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
                add_s = np.full((m, width), -np.inf, np.float32)
                add_i = np.full((m, width), -1, np.int64)
                add_s[rows, slot] = sims[rows, cols]
                add_i[rows, slot] = ids[cols]
                s_all = np.concatenate([best_s, add_s], axis=1)
                i_all = np.concatenate([best_i, add_i], axis=1)
                keep = np.argpartition(-s_all, k - 1, axis=1)[:, :k]
                best_s, best_i = np.take_along_axis(s_all, keep, 1), np.take_along_axis(i_all, keep, 1)
                floor = best_s.min(axis=1)
    n = int(min(k, np.sum(best_i[0] >= 0))) if m else 0
    out = np.empty((m, n), np.int64)
    for j in range(m):
        ok = best_i[j] >= 0
        out[j] = best_i[j][ok][top_k(best_i[j][ok], best_s[j][ok], n)]
    return out


def _tile(name: str):
    from ..grid import Tile

    return Tile.from_name(name)


def _measure(index, q: np.ndarray, truth: np.ndarray, rf: float, lf: float) -> dict:
    lat, r1000 = [], []
    k = min(K, truth.shape[1])
    for j in range(len(q)):
        t0 = time.perf_counter()
        res = index.search(q[j], k=k, refine_factor=rf, list_factor=lf)
        lat.append(time.perf_counter() - t0)
        r1000.append(len(np.intersect1d(res.ids, truth[j, :k])) / k)
    return {"refine_factor": rf, "list_factor": lf, "recall1000": float(np.mean(r1000)),
            "median_s": float(np.median(lat)), "nprobe": int(res.nprobe)}


def _recall10(index, q: np.ndarray, truth: np.ndarray, rf: float, lf: float, least: int) -> float:
    r10 = []
    for j in range(len(q)):
        res = index.search(q[j], k=10, refine_factor=rf, list_factor=lf, min_candidates=least)
        r10.append(len(np.intersect1d(res.ids, truth[j, :10])) / 10)
    return float(np.mean(r10))


def tune_search(home, name: str, gen, manifest: dict, target_recall: float, n_queries: int = N_QUERIES) -> dict:
    """The search parameters reaching ``target_recall`` (recall@1000) fastest, and what
    was measured: ``{"target_recall", "refine_factor", "list_factor", "recall1000",
    "recall10", "median_s", "n_queries", "tried"}``. For an index of fewer than 2000
    pixels, the defaults (nothing to tune: the candidates cover the index)."""
    from .search import Index, _LIST_FACTOR

    n = int(manifest["n_vectors"])
    default = {"target_recall": float(target_recall), "refine_factor": 10, "list_factor": _LIST_FACTOR,
               "min_candidates": MIN_CANDIDATES, "n_queries": 0, "tried": []}
    if n < 2 * K or manifest["params"].get("nlist") is None:
        return default
    lists = manifest.get("kind") == "int8-lists"
    with Index(home, name, gen, {**manifest, "search": {}}) as index:
        # The int8-lists tuning searches cheaply: six times the queries, for a steadier recall.
        ids, vecs = sample_queries(index, 6 * n_queries if lists else n_queries)
        x = vecs.astype(np.float32)
        q = x / np.linalg.norm(x, axis=1, keepdims=True)
        truth = exact_top(index, q, K)
        if lists:
            from .lists import tune_lists

            return tune_lists(index, q, truth, target_recall, RECALL10)
        for j in range(len(q)):  # warm the pages a first search would fault in
            index.search(q[j], k=K)
        tried, best = [], None
        for rf in _REFINE:
            if rf * K > n:
                break
            row = []
            for lf in _LISTS:
                m = _measure(index, q, truth, rf, lf)
                row.append(m)
                tried.append(m)
            ok = [m for m in row if m["recall1000"] >= target_recall]
            if ok:
                best = min(ok, key=lambda m: m["median_s"])
                break
        if best is None:  # the target is out of reach with these budgets: the best recall seen
            best = max(tried, key=lambda m: (m["recall1000"], -m["median_s"])) if tried else None
        if best is not None:  # the floor of candidates for small k
            least, r10, floors = MIN_CANDIDATES, 0.0, []
            while True:
                r10 = _recall10(index, q, truth, best["refine_factor"], best["list_factor"], least)
                floors.append({"min_candidates": least, "recall10": r10})
                if r10 >= RECALL10 or least >= min(n, max(best["refine_factor"] * K, MIN_CANDIDATES)):
                    break
                least *= 2
    if best is None:
        return default
    return {"target_recall": float(target_recall), "refine_factor": best["refine_factor"],
            "list_factor": best["list_factor"], "min_candidates": int(least), "recall1000": best["recall1000"],
            "recall10": r10, "median_s": best["median_s"], "nprobe_at_1000": best["nprobe"], "n_queries": int(len(q)),
            "reached": bool(best["recall1000"] >= target_recall and r10 >= RECALL10), "tried": tried,
            "floors": floors}
