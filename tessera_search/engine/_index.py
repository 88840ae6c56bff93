"""The index's shards held by an engine: one holder per node opens its share of the
shards; a search fans :func:`~tessera_search.index.search.search_shard` out to them.

The holders open the same generation the driver opened (its folder and manifest travel
with the call), so a build switching ``CURRENT`` meanwhile does not mix generations.
Merging the parts and the exact re-rank stay with the caller
(:meth:`~tessera_search.index.search.Index.search_many`), exactly as for a local search.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["held_shards", "search_held", "tiles_held"]


class _Held:
    """What a holder keeps: its shards by number (sharing one trained quantizer)."""

    def __init__(self, items: list) -> None:
        from ..index.search import open_shard
        from ..index.shards import TRAINED, ShardFiles, read_faiss_index
        from ..index.rerank import StoreVectors
        from ..store import TileStore

        self.shards: dict[int, object] = {}
        self.home = None
        if not items:
            return
        home, gen, year, stamps = items[0][:4]
        self.home = home
        self._trained = read_faiss_index(Path(gen) / TRAINED, mmap=False)  # kept alive: the shards point at it
        vectors = StoreVectors(TileStore(home), int(year), stamps)
        for _, gen_dir, _, _, number, info in items:
            self.shards[int(number)] = open_shard(ShardFiles(Path(gen_dir), int(number)), info, vectors, self._trained)

    def close(self) -> None:
        self.shards = {}
        self._trained = None


def _open(items: list) -> _Held:
    return _Held(items)


def _search(held: _Held, q: np.ndarray, r: int, nprobe: int | None) -> list:
    """[(number, (scores, ids))] for the held shards, in number order (threads over shards)."""
    from concurrent.futures import ThreadPoolExecutor

    from ..index.search import search_shard

    numbers = sorted(held.shards)
    if len(numbers) == 1:
        return [(numbers[0], search_shard(held.shards[numbers[0]], q, r, nprobe))]
    with ThreadPoolExecutor(len(numbers)) as pool:
        parts = list(pool.map(lambda n: search_shard(held.shards[n], q, r, nprobe), numbers))
    return list(zip(numbers, parts))


def _scan(held: _Held, q: np.ndarray, r: int, lists: np.ndarray, cand: int | None = None) -> list:
    """[(number, scans)] for the held shards of an int8-lists index: the kernel's
    candidates of each query in its ``lists`` (-1 for none), or the first pass's ``cand``
    best (:meth:`~tessera_search.index.lists.ListShard.scan_many`)."""
    return [(n, held.shards[n].scan_many(q, lists, r, cand)) for n in sorted(held.shards)]


def _take(held: _Held, q: np.ndarray, kept: dict, r: int) -> list:
    """[(number, (scores, ids))] for the held shards: the exact scores of the candidates
    the driver kept for them (:meth:`~tessera_search.index.lists.ListShard.take_many`)."""
    return [(n, held.shards[n].take_many(q, kept[n], r)) for n in sorted(held.shards)]


def _tiles_call(held: _Held, fn, *args):
    from ..grid import Tile

    names = sorted({t for s in held.shards.values() for t in s.tiles})
    return fn(held.home, [Tile.from_name(t) for t in names], *args)


class _Holding:
    """An index's holders, with the engine made for them (closed with them when made here)."""

    def __init__(self, index, engine) -> None:
        from . import Engine, get_engine

        self._own = not isinstance(engine, Engine)
        self.engine = get_engine(engine)
        shards = sorted(index.manifest["shards"].items(), key=lambda kv: int(kv[0]))
        items = [(str(index.home), str(index.generation), index.year, index.manifest.get("stamps"), int(k), info)
                 for k, info in shards]
        try:
            self.holders = self.engine.hold(_open, items, [int(info["n_vectors"]) for _, info in shards])
        except BaseException:
            if self._own:
                self.engine.close()
            raise
        self.order = [int(k) for k, _ in shards]

    def close(self) -> None:
        self.holders.close()
        if self._own:
            self.engine.close()


def held_shards(index):
    """The index's holders (made on first use, kept on the index until it closes)."""
    if getattr(index, "_held", None) is None:
        index._held = _Holding(index, index.engine)
    return index._held


def search_held(index, q: np.ndarray, r: int, nprobe: int | None, stop: tuple | None = None,
                cand: int | None = None) -> list:
    """:func:`~tessera_search.index.search.search_shard` on every shard, where its holder
    is; the parts in shard order, as the local dispatch returns them. ``stop``: as
    :meth:`~tessera_search.index.search.Index._search_shards`."""
    held = held_shards(index)
    if index.kind == "int8-lists" and nprobe:
        # As the local search: the lists come from the one quantizer (here), the rounds of
        # scans (lists.scan_rounds) run on the holders, and the kernel's candidates of every
        # shard merge first, so only the rows that can be in the overall best r are read
        # back (lists.select_across).
        from ..index.lists import scan_rounds, select_across

        scores, lists = index.quantizer().search(q, int(min(nprobe, index.params["nlist"])))

        def scan(ls):
            got = {n: found for group in held.holders.call(_scan, q, r, ls, cand) for n, found in group}
            return [got[n] for n in held.order]

        margin, first = stop if stop is not None and not cand else (None, 0)
        kept = dict(zip(held.order, select_across(scan_rounds(scan, cand or r, lists, scores, margin, first),
                                                  cand or r)))
        by_number = {n: part for group in held.holders.call(_take, q, kept, r) for n, part in group}
    else:
        by_number = {n: part for group in held.holders.call(_search, q, r, nprobe) for n, part in group}
    return [by_number[n] for n in held.order]


def tiles_held(index, fn, *args) -> list:
    """``fn(home, tiles, *args)`` on every holder, ``tiles`` being those of the shards it
    holds (sorted :class:`~tessera_search.grid.Tile`); the results in holder order."""
    return held_shards(index).holders.call(_tiles_call, fn, *args)
