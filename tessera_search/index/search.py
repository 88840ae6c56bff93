"""Searching an index: every shard, merged, then re-ranked exactly from the store.

:func:`open_index` opens the last complete generation of an index (what ``CURRENT``
names when it is opened; a build running meanwhile does not disturb it). A search takes
unit-norm float32 query vectors and:

1. asks every shard for its ``r = max(refine_factor * k, min_candidates)`` best
   candidates by the PQ approximation, probing enough lists to hold ``list_factor * r``
   vectors (:func:`search_shard`, one call per shard; the shards run in parallel
   threads, faiss releases the GIL). ``refine_factor``, ``min_candidates`` and
   ``list_factor`` are the ones the build tuned to the index's recall target (manifest
   ``search``), unless given;
2. merges them into the overall best ``r`` per query (:func:`merge`; the shards share
   one trained quantizer and codebook, so their approximate scores compare);
3. re-ranks those exactly (:func:`rerank`): cosine between the query and each
   candidate's int8 vector, read from the store's own file, memory-mapped
   (:class:`~tessera_search.index.rerank.StoreVectors`: the workspace keeps one copy);
4. returns the top k by exact cosine (ties broken by pixel ID), retrying with more
   lists probed when the probed lists held fewer than k vectors.

``Index._search_shards`` is the one place shards are dispatched: an engine (Ray, Dask)
can run :func:`search_shard` wherever the shards live and hand back the parts;
:func:`merge` and :func:`rerank` then run where the query is.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CatalogError, IndexCorruptError, IndexNotFoundError, InvalidInputError, KTooLargeError, WriteError
from ..grid import Tile, TileGrid, pack_ids, unpack_ids
from .rerank import StoreVectors, exact_cosine, top_k
from .shards import (
    DIMS,
    TRAINED,
    IndexState,
    ShardFiles,
    catalog_entry,
    index_dir,
    index_names,
    index_state,
    map_readonly,
    read_faiss_index,
)

__all__ = ["Index", "SearchResult", "exact_cosine", "list_indexes", "merge", "open_index", "open_shard", "reconcile_index",
           "rerank", "search_shard", "top_k"]

_MIN_CANDIDATES = 4096
_LIST_FACTOR = 3.0  # lists probed hold about this many times the candidates wanted


@dataclass
class SearchResult:
    """Top matches of one search: (k,) int64 pixel IDs and (k,) float32 exact cosines, best first."""

    ids: np.ndarray
    similarity: np.ndarray
    nprobe: int
    candidates: int

    def __len__(self) -> int:
        return len(self.ids)


def _ivf(index):
    import faiss

    return faiss.try_extract_index_ivf(index)


def attach_quantizer(index, quantizer) -> None:
    """Point a shard's IVF index (written with an empty coarse quantizer) at the index's
    one trained quantizer. The caller keeps ``quantizer`` alive as long as ``index``."""
    ivf = _ivf(index)
    if ivf is None:
        return
    if ivf.quantizer.ntotal == ivf.nlist:  # a shard written with its own copy
        return
    if quantizer is None or quantizer.ntotal != ivf.nlist:
        raise IndexCorruptError("a shard's lists do not match the index's trained quantizer; rebuild the index")
    # The empty quantizer read with the shard stays allocated (~100 bytes per opened shard):
    # freeing it from Python (``thisown``) corrupted the heap once the trained index was
    # freed as well (faiss' SWIG types lost, then segfaults in the garbage collector).
    ivf.own_fields = False
    ivf.quantizer = quantizer


class Shard:
    """One opened shard: its faiss lists (sharing the index's quantizer) and pixel bitmaps.

    ``info`` is the shard's manifest entry. Vectors come from ``vectors`` (the store).
    """

    exact = False  # search() gives approximate (PQ) scores, re-ranked by the caller

    def __init__(self, files: ShardFiles, info: dict, vectors: StoreVectors, trained=None, mmap: bool = True) -> None:
        self._open_pixels(files, info, vectors, trained)
        self.index = read_faiss_index(files.index, mmap=mmap)
        trained_ivf = _ivf(trained) if trained is not None else None
        attach_quantizer(self.index, trained_ivf.quantizer if trained_ivf is not None else None)
        ivf = _ivf(self.index)
        if ivf is not None:
            ivf.parallel_mode = 1  # one query: split the probed lists over threads (2x on 2 cores)
        self._gpu_tried = False

    def _open_pixels(self, files: ShardFiles, info: dict, vectors: StoreVectors, trained) -> None:
        """What every kind of shard has: its manifest facts and its pixel bitmap."""
        self.files = files
        self.n_vectors = int(info["n_vectors"])
        self.tiles = list(info["tiles"])
        self.store_vectors = vectors
        self._trained = trained  # kept alive: the shard's faiss index points at its quantizer
        self._layout = {t: tuple(int(v) for v in lay) for t, lay in (info.get("pixels") or {}).items()}
        try:
            self._bits = map_readonly(files.pixels)
        except OSError as exc:
            raise IndexCorruptError(f"pixel bitmap {files.pixels} is unreadable: {exc}; rebuild the index") from exc
        self._ids = None
        self._gpu = None
        self._gpu_tried = True

    def search(self, q: np.ndarray, r: int, nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Approximate best ``r`` for (m, 128) queries: ((m, r') float32, (m, r') int64 pixel IDs; -1 pads)."""
        from .gpu import search_index, to_gpu

        q = np.ascontiguousarray(q.reshape(-1, DIMS), dtype=np.float32)
        if self.n_vectors == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if not self._gpu_tried:
            self._gpu, self._gpu_tried = to_gpu(self.index), True
        return search_index(self.index, self._gpu, q, min(r, self.n_vectors), nprobe)

    def _mask(self, tile: str) -> np.ndarray:
        off, h, w, _ = self._layout[tile]
        nbytes = (h * w + 7) // 8
        return np.unpackbits(self._bits[off:off + nbytes], count=h * w).reshape(h, w).view(bool)

    def tile_ids(self, tile: str) -> np.ndarray:
        """(n,) int64 IDs of the shard's pixels of ``tile`` (ascending; empty if not its tile)."""
        if tile not in self._layout:
            return np.zeros(0, np.int64)
        t = Tile.from_name(tile)
        rows, cols = np.nonzero(self._mask(tile))
        return pack_ids(t.ix, t.iy, rows, cols)

    @property
    def ids(self) -> np.ndarray:
        """(n,) int64 IDs of every pixel of the shard, ascending (made on first use: 8 bytes a pixel)."""
        if self._ids is None:
            parts = [self.tile_ids(t) for t in self.tiles]
            self._ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return self._ids

    @property
    def vectors(self) -> ShardRows:
        """The shard's int8 vectors by position (in :attr:`ids` order), read from the store:
        ``shard.vectors[i]`` (128,), ``shard.vectors[a:b]`` or ``shard.vectors[positions]`` (n, 128)."""
        return ShardRows(self)

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """(n, 128) int8 stored vectors of pixel ``ids``, read from the store."""
        return self.store_vectors.read(ids)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Bool per pixel ID: does the shard hold it."""
        ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        out = np.zeros(len(ids), bool)
        ix, iy, r, c = unpack_ids(ids)
        for j in range(len(ids)):
            name = Tile(int(ix[j]), int(iy[j])).name
            lay = self._layout.get(name)
            if lay is None or r[j] >= lay[1] or c[j] >= lay[2]:
                continue
            bit = int(r[j]) * lay[2] + int(c[j])
            out[j] = bool((self._bits[lay[0] + bit // 8] >> (7 - bit % 8)) & 1)
        return out


class ShardRows:
    """Position-indexed view of a shard's vectors; every read goes to the store."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard

    def __len__(self) -> int:
        return self.shard.n_vectors

    @property
    def shape(self) -> tuple[int, int]:
        return (self.shard.n_vectors, DIMS)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self.shard.vectors_of(self.shard.ids[[int(key)]])[0]
        return self.shard.vectors_of(np.atleast_1d(self.shard.ids[key]))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out.astype(dtype) if dtype is not None else out


def open_shard(files: ShardFiles, info: dict, vectors: StoreVectors, trained) -> Shard:
    """The opened shard of a manifest entry ``info``: a faiss shard, or an int8-lists one."""
    if info.get("kind") == "int8-lists":
        from .lists import ListShard

        return ListShard(files, info, vectors, trained)
    return Shard(files, info, vectors, trained)


def search_shard(shard: Shard, queries: np.ndarray, r: int, nprobe: int | None) -> tuple[np.ndarray, np.ndarray]:
    """One shard's approximate best ``r`` for each of (m, 128) unit float32 ``queries``.

    Returns ((m, r') float32 PQ scores, (m, r') int64 pixel IDs), r' = min(r, shard size),
    -1 IDs where the probed lists held fewer. Stable signature: the unit an engine runs.
    """
    return shard.search(queries, r, nprobe)


def merge(parts: list[tuple[np.ndarray, np.ndarray]], r: int) -> tuple[np.ndarray, np.ndarray]:
    """The overall best ``r`` per query of the shards' ``(scores, ids)`` parts: ((m, r), (m, r)), -1 pads."""
    scores = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    scores = np.where(ids < 0, -np.inf, scores)
    if scores.shape[1] > r:
        top = np.argpartition(-scores, r - 1, axis=1)[:, :r]
        scores, ids = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
    return scores, ids


def exact_merge(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """The top ``k`` per query of shards that scored exactly: [(ids, sims, candidates)].
    Each part's rows come in that order already (best first, ties by ID, -1 pads last),
    so one part needs no sorting."""
    if len(parts) == 1:
        out = []
        for s, i in zip(*parts[0]):
            n = int(np.count_nonzero(i >= 0))
            out.append((i[:min(n, k)], s[:min(n, k)], n))
        return out
    scores = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    out = []
    for s, i in zip(scores, ids):
        ok = i >= 0
        s, i = s[ok], i[ok]
        order = top_k(i, s, k)
        out.append((i[order], s[order], len(i)))
    return out


def rerank(vectors: StoreVectors, queries: np.ndarray, ids: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Exact top ``k`` per query from its candidate ``ids`` row (-1 ignored): [(ids, sims, candidates)]."""
    out = []
    for q, row in zip(queries, ids):
        cand = row[row >= 0]
        sims = exact_cosine(q, vectors.read(cand))
        order = top_k(cand, sims, k)
        out.append((cand[order], sims[order], len(cand)))
    return out


class Index:
    """A complete index generation, opened for search.

    Attributes: ``name``, ``year``, ``dataset_version``, ``region``, ``n_vectors``,
    ``params`` (dict: build parameters, overridden by the tuned search parameters),
    ``tiles`` (names), ``generation`` (its directory), ``synthetic``.
    """

    def __init__(self, home: Path, name: str, gen_dir: Path, manifest: dict) -> None:
        from ..store import TileStore

        self.home = Path(home)
        self.name = name
        self.generation = gen_dir
        self.manifest = manifest
        self.year = int(manifest["year"])
        self.dataset_version = manifest["dataset_version"]
        self.region = manifest["region"]
        self.kind = manifest.get("kind", "faiss")
        tuned = (("nprobe", "nprobe10", "margin", "first", "cap", "margin10", "first10", "cap10",
                  "cand", "cand_nprobe", "cand10", "cand_nprobe10")
                 if self.kind == "int8-lists" else ("refine_factor", "list_factor", "min_candidates"))
        self.params = {**manifest["params"], **{k: v for k, v in (manifest.get("search") or {}).items() if k in tuned}}
        self.synthetic = bool(manifest.get("synthetic", False))
        self.tiles = list(manifest["tiles"])
        self.n_vectors = int(manifest["n_vectors"])
        self._tile_shard = {t: int(k) for k, s in manifest["shards"].items() for t in s["tiles"]}
        checks = {t: c for sh in manifest["shards"].values() for t, c in (sh.get("checks") or {}).items()}
        self.vectors = StoreVectors(TileStore(self.home), self.year, checks)
        self._shards: list[Shard] | None = None
        self._trained = None
        self._coarse = None  # quantizer(), made on first use
        self._pool: ThreadPoolExecutor | None = None
        self.engine = None  # where the shards are searched: None / "local" here, "ray" (tessera_search.engine)
        self._held = None  # the engine's holders of the shards, made on the first search

    def __repr__(self) -> str:
        return f"Index({self.name!r}, year={self.year}, n_vectors={self.n_vectors}, shards={len(self.manifest['shards'])})"

    @property
    def shards(self) -> list[Shard]:
        """The shards, opened on first use (sharing the one trained quantizer)."""
        if self._shards is None:
            if self._trained is None:
                self._trained = read_faiss_index(self.generation / TRAINED, mmap=False)
            self._shards = [
                open_shard(ShardFiles(self.generation, int(k)), s, self.vectors, self._trained)
                for k, s in sorted(self.manifest["shards"].items(), key=lambda kv: int(kv[0]))
            ]
        return self._shards

    def quantizer(self):
        """The coarse quantizer an int8-lists search asks for its lists (the trained
        centroids, searched exhaustively: :func:`~.lists.exact_quantizer`), made once;
        without opening the shards (an engine's holders hold them)."""
        if self._coarse is None:
            from .lists import exact_quantizer

            if self._trained is None:
                self._trained = read_faiss_index(self.generation / TRAINED, mmap=False)
            self._coarse = exact_quantizer(self._trained)
        return self._coarse

    def grid(self, tile: Tile) -> TileGrid:
        """The stored UTM grid of one of the index's tiles (recorded at build time)."""
        g = self.manifest["grids"][tile.name]
        return TileGrid(tile, int(g["epsg"]), tuple(float(v) for v in g["transform"]), int(g["height"]), int(g["width"]))

    def contains(self, ids) -> np.ndarray:
        """Bool per pixel ID: is the pixel in the index."""
        ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        out = np.zeros(len(ids), bool)
        ix, iy, _, _ = unpack_ids(ids)
        for j in range(len(ids)):
            shard = self._tile_shard.get(Tile(int(ix[j]), int(iy[j])).name)
            if shard is not None:
                out[j] = self._shard_by_number(shard).contains(ids[j:j + 1])[0]
        return out

    def tile_rows(self, tile: Tile):
        """``(read, ids)``: the sorted (n,) int64 IDs of ``tile``'s indexed pixels and
        ``read(i, j)``, the (j - i, 128) int8 vectors of ids[i:j] from the store."""
        number = self._tile_shard.get(tile.name)
        if number is None:
            return (lambda i, j: np.zeros((0, DIMS), np.int8)), np.zeros(0, np.int64)
        ids = self._shard_by_number(number).tile_ids(tile.name)
        return (lambda i, j: self.vectors.read(ids[i:j])), ids

    def tile_blocks(self, tile: Tile, block: int = 1 << 16):
        """``tile``'s indexed pixels and their int8 vectors, about ``block`` at a time in the
        store's order (one sequential pass): ``(ids, (n, 128) int8)`` pairs."""
        number = self._tile_shard.get(tile.name)
        if number is None:
            return iter(())
        return self.vectors.blocks(self._shard_by_number(number).tile_ids(tile.name), block)

    def _shard_by_number(self, number: int) -> Shard:
        for s in self.shards:
            if s.files.number == number:
                return s
        raise IndexNotFoundError(f"index {self.name} has no shard {number}")

    def search(self, vector, k: int = 10, nprobe: int | None = None, refine_factor: int | None = None,
               list_factor: float | None = None, min_candidates: int | None = None) -> SearchResult:
        """The ``k`` pixels most similar (exact cosine) to a unit-norm (128,) float32 ``vector``.

        ``refine_factor`` (candidates re-ranked exactly, as a multiple of k),
        ``min_candidates`` (at least this many candidates, whatever k: small k needs them)
        and ``list_factor`` (lists probed hold about that many times the candidates)
        default to the values the build tuned; ``nprobe`` (lists probed per shard) fixes
        the lists instead. The lists are raised again if they held fewer than k vectors.
        """
        return self.search_many(np.asarray(vector, dtype=np.float32).reshape(1, -1), k, nprobe, refine_factor,
                                list_factor, min_candidates)[0]

    def search_many(self, vectors, k: int = 10, nprobe: int | None = None, refine_factor: int | None = None,
                    list_factor: float | None = None, min_candidates: int | None = None) -> list[SearchResult]:
        """:meth:`search` for each row of (m, 128) float32 ``vectors`` (one batch per shard)."""
        q = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if q.ndim != 2 or q.shape[1] != DIMS or not np.all(np.isfinite(q)):
            raise InvalidInputError(f"a query vector is {DIMS} finite floats, got shape {q.shape[1:]}")
        norm = np.linalg.norm(q, axis=1)
        if np.any(norm == 0):
            raise InvalidInputError("the query vector is zero: it has no direction to search for")
        q = q / norm[:, None]
        k = int(k)
        if k < 1:
            raise InvalidInputError(f"k must be at least 1, got {k}")
        if k > self.n_vectors:
            raise KTooLargeError(f"k = {k} but index {self.name} holds {self.n_vectors:,} pixels; ask for at most that")
        refine = float(refine_factor or self.params.get("refine_factor", 10))
        if refine < 1:
            raise InvalidInputError(f"refine_factor must be at least 1, got {refine_factor}")
        lf = float(list_factor or self.params.get("list_factor", _LIST_FACTOR))
        least = int(min_candidates or self.params.get("min_candidates", _MIN_CANDIDATES))
        exact = self.kind == "int8-lists"  # the shards scan exactly: k from each is enough
        r = k if exact else int(min(max(int(np.ceil(k * refine)), least), self.n_vectors))
        nlist = self.params.get("nlist")
        stop, cand = None, None
        if nlist:
            probe = int(nprobe or self.params.get("nprobe", 16))
            if nprobe is None and exact:
                from .lists import first_pass_for, probe_for, stop_for

                probe = probe_for(self.params, k)
                margin, first, cap = stop_for(self.params, k)
                fast = first_pass_for(self.params, k)
                if fast is not None:  # the first pass: the best cand by the codes, re-ranked
                    cand, probe = fast
                elif margin is not None:  # the adaptive stop: up to cap lists, in rounds
                    stop, probe = (margin, min(first, nlist)), cap
            if nprobe is None and not exact:
                probe = max(probe, int(np.ceil(lf * r * nlist / max(self.n_vectors, 1))))
            probe = max(1, min(probe, nlist))
        else:
            probe = None
        results: list[SearchResult | None] = [None] * len(q)
        todo = np.arange(len(q))
        while len(todo):
            parts = self._search_shards(q[todo], r, probe, stop, cand)
            again = []
            found = exact_merge(parts, k) if exact else rerank(self.vectors, q[todo], merge(parts, r)[1], k)
            for j, (ids, sims, n_cand) in zip(todo, found):
                if len(ids) < k and probe is not None and probe < nlist:
                    again.append(j)
                    continue
                results[j] = SearchResult(ids=ids, similarity=sims.astype(np.float32), nprobe=probe or 0,
                                          candidates=n_cand)
            todo = np.array(again, dtype=np.int64)
            if len(todo):
                probe, stop = min(probe * 2, nlist), None  # too few rows: every list of twice as many
        return results

    def _search_shards(self, q: np.ndarray, r: int, nprobe: int | None, stop: tuple | None = None,
                       cand: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """The dispatch point: :func:`search_shard` on every shard (threads here).
        ``stop``: (margin, first lists) of an int8-lists index's adaptive stop
        (:func:`~.lists.scan_rounds`), probing at most ``nprobe`` lists; ``cand``: its
        first pass's candidates (:func:`~.lists.search_across`)."""
        if (getattr(self.engine, "name", self.engine) or "local") != "local":
            from ..engine._index import search_held

            return search_held(self, q, r, nprobe, stop, cand)  # on the engine's holders, one per node
        shards = self.shards
        if len(shards) == 1 and stop is None and cand is None:
            return [search_shard(shards[0], q, r, nprobe)]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(min(len(shards), os.cpu_count() or 1))
        if self.kind == "int8-lists" and nprobe:  # one quantizer: ask it once for every shard
            from .lists import search_across

            scores, lists = self.quantizer().search(q, int(min(nprobe, shards[0].nlist)))
            margin, first = stop if stop is not None else (None, 0)
            return search_across(shards, q, r, lists, self._pool, scores, margin, first, cand)
        return list(self._pool.map(lambda s: search_shard(s, q, r, nprobe), shards))

    def close(self) -> None:
        """Drop the opened shards and the search threads."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._held is not None:
            self._held.close()
            self._held = None
        self._shards = None
        self._trained = None
        self._coarse = None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def reconcile_index(catalog, state: IndexState, row: dict | None, idle: bool = False) -> None:
    """Make the catalog's entry for one index agree with its files (best effort, no error).

    A complete generation on disk is recorded as ``complete`` with its shards (one
    transaction); a damaged or unfinished one sets the row's status. Nothing is written
    while a build of the index runs (it records itself when done; ``idle``: the caller is
    that build) or when the catalog cannot be written.
    """
    if (state.building and not idle) or not catalog.writable():
        return
    try:
        if state.status == "complete":
            entry, shards = catalog_entry(state.manifest, state.generation)
            same = (row is not None and row.get("status") == "complete"
                    and (row.get("params") or {}).get("generation") == state.generation.name
                    and int(row.get("n_vectors") or 0) == entry["n_vectors"])
            if not same:
                catalog.record_index(entry, shards)
        elif row is not None and row.get("status") != state.status:
            catalog.set_index_status(state.name, "incomplete" if state.status == "building" else state.status)
    except (WriteError, CatalogError):
        pass  # the catalog is a summary: the files stay the truth, and the next writer records them


def _shown(state: IndexState, row: dict | None) -> dict:
    """The row ``list_indexes`` reports: the catalog's, corrected by what the files hold."""
    m = state.manifest or {}
    if state.status in ("complete", "damaged") and state.manifest is not None and state.generation is not None:
        entry, _ = catalog_entry(m, state.generation)
        out = {"created_at": m.get("created_at"), "updated_at": m.get("completed_at"), **(row or {}), **entry}
    elif row is not None:
        out = dict(row)
    else:
        params = dict(m.get("params") or {})
        out = {"name": state.name, "year": m.get("year"), "dataset_version": m.get("dataset_version"),
               "region": m.get("region"), "factory": params.get("factory"), "params": params, "dims": DIMS,
               "n_vectors": 0, "n_shards": len((m.get("plan") or {}).get("shards") or []),
               "created_at": m.get("created_at"), "updated_at": None}
    out["status"] = state.status
    out["problems"] = list(state.problems)
    out["building"] = bool(state.building)
    return out


def list_indexes(home=None) -> list[dict]:
    """Every index of the workspace, as its files say, sorted by name.

    Catalog row fields (name, year, dataset_version, region, factory, params, dims,
    n_vectors, n_shards, status, created_at, updated_at) plus ``problems`` (what is
    missing or damaged, [] when none) and ``building`` (a build of it runs now). ``status``
    is what the files hold: ``complete``, ``damaged`` (files missing or truncated since it
    was built: rerun build-index to repair), ``building`` (a first build runs) or
    ``incomplete`` (a build stopped before completing: rerun build-index to resume). The
    catalog is brought in line with the files on the way (when it can be written).
    """
    from ..catalog import Catalog
    from ..config import resolve_home

    home = resolve_home(home)
    catalog = Catalog(home)
    rows = {r["name"]: r for r in catalog.indexes()}
    out = []
    for name in sorted(set(rows) | set(index_names(home))):
        idir = index_dir(home, name)
        state = index_state(idir)
        row = rows.get(name)
        if state is None:
            if row is None:
                continue  # a folder a refused build left: nothing was ever built
            state = IndexState(name, idir, "damaged", None, None, [f"its folder {idir} is missing"])
        reconcile_index(catalog, state, row)
        out.append(_shown(state, row))
    return out


def _states(home: Path) -> list[IndexState]:
    states = (index_state(index_dir(home, n)) for n in index_names(home))
    return [s for s in states if s is not None]


def rebuild_hint(manifest: dict) -> str:
    """The build-index command that repairs or finishes the index a manifest describes."""
    region = str(manifest.get("region") or "")
    tiles = list(manifest.get("tiles") or [])
    if region.startswith("bbox "):
        opts = f"--bbox {region[5:]}"
    elif region.startswith("region file "):
        opts = f"--region-file {region[len('region file '):]}"
    elif region.startswith("tiles ") or not region:
        opts = " ".join(f"--tile {t}" for t in tiles[:3]) + (f" ... ({len(tiles)} tiles)" if len(tiles) > 3 else "")
    elif region.endswith(")") and "(" in region:
        opts = f"--region {region[region.rindex('(') + 1:-1]}"
    else:
        opts = f"--region {region!r}"
    return (f"`tessera-search build-index --year {manifest.get('year')} {opts} --name {manifest.get('name')}` "
            "(with the options it was built with)")


def _damaged(state: IndexState) -> IndexCorruptError:
    shown = "; ".join(state.problems[:3]) + (f"; and {len(state.problems) - 3} more" if len(state.problems) > 3 else "")
    how = rebuild_hint(state.manifest) if state.manifest else "`tessera-search build-index --rebuild` with the options it was built with"
    return IndexCorruptError(
        f"index {state.name} in {state.path} is damaged: {shown}. Rerun {how}: it rebuilds what is missing "
        "and keeps the intact shards"
    )


def open_index(name: str | None = None, year: int | None = None, home=None, engine=None) -> Index:
    """Open index ``name``, or the one complete index for ``year``, or, given neither, the
    workspace's only complete index.

    Goes by the index files, not the catalog. Raises IndexNotFoundError for an unknown
    name, a year with no index, a year with several (naming them: pick one with ``name``),
    or an index whose build has never completed; IndexCorruptError for an index whose
    files are missing or truncated (the message names the build-index run that repairs it).
    ``engine``: where searches run their shards, ``"local"`` (default: here) or ``"ray"``
    (one actor per node holds its share of the shards; see ``docs/scale.md``), or a
    :class:`~tessera_search.engine.Engine`; results are the same.
    """
    from ..config import resolve_home

    home = resolve_home(home)
    if name is None:
        states = _states(home)
        complete = [s for s in states if s.status == "complete"]
        if year is None:
            if len(complete) == 1:  # the workspace's only index: nothing to choose
                return open_index(complete[0].name, home=home, engine=engine)
            names = ", ".join(s.name for s in complete)
            raise InvalidInputError(
                "name an index (--index NAME) or a year (--year YEAR)"
                + (f"; this workspace has {names}" if complete else "; none is built yet (tessera-search build-index)")
            )
        rows = [s for s in complete if int(s.manifest["year"]) == int(year)]
        if not rows:
            damaged = [s for s in states if s.status == "damaged" and s.manifest and int(s.manifest.get("year", -1)) == int(year)]
            if len(damaged) == 1:
                raise _damaged(damaged[0])
            raise IndexNotFoundError(
                f"no index for {year} in {home}; build one with `tessera-search build-index --year {year} ...`"
            )
        if len(rows) > 1:
            raise IndexNotFoundError(
                f"{len(rows)} indexes for {year}: {', '.join(s.name for s in rows)}; pick one with --index NAME"
            )
        state = rows[0]
        name = state.name
    else:
        idir = index_dir(home, name)
        state = index_state(idir)
        if state is None or (state.generation is None and state.status != "damaged"):
            if idir.is_dir():
                raise IndexNotFoundError(
                    f"index {name} has no complete build yet (one is running or was interrupted); "
                    "run `tessera-search build-index` again to finish it"
                    + (f": {rebuild_hint(state.manifest)}" if state is not None and state.manifest else "")
                )
            known = index_names(home)
            hint = f"known indexes: {', '.join(known)}" if known else "no index is built yet"
            raise IndexNotFoundError(f"no index named {name!r} in {home} ({hint}); see `tessera-search indexes`")
    if state.status == "damaged":
        raise _damaged(state)
    manifest = state.manifest
    if year is not None and int(manifest["year"]) != int(year):
        raise IndexNotFoundError(f"index {name} is for {manifest['year']}, not {year}")
    index = Index(home, name, state.generation, manifest)
    index.engine = engine
    return index
