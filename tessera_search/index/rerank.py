"""Exact vectors for re-ranking, read from the store's own bytes: the one int8 copy.

An index keeps no copy of the int8 vectors. A candidate's pixel ID names its tile, row
and column; :meth:`~tessera_search.store.TileStore.embedding_file` says at which row of
the tile's embeddings shard file each 64 x 64 inner chunk begins, so the vector is one
128-byte read from that file, memory-mapped for random access (:class:`StoreVectors`).
Stores laid out otherwise (another codec) are read through zarr instead, chunk by chunk.

At build time each tile gets a check in the manifest: the digest of 16 of its indexed
vectors (:func:`tile_check`). A tile's first read verifies it, so a tile whose bytes
changed since (re-ingested from a corrected source) is refused with an IndexCorruptError
naming the rebuild, rather than silently ranked by stale codes; the same bytes fetched
again (a deleted tile downloaded anew) pass.

:func:`exact_cosine` and :func:`top_k` are the one exact ranking every search uses.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from ..errors import IndexCorruptError
from ..grid import Tile, pack_ids, unpack_ids
from .shards import DIMS, map_readonly, release_pages

__all__ = ["StoreVectors", "exact_cosine", "mapped_bytes", "tile_check", "top_k"]

_N_CHECK = 16

MAX_MAPPED = 256 << 20  # store pages mapped into this process before they are all released
MAX_INVERSES = 16  # clustered tiles whose order inverse (pixel -> row) stays in memory
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# The pixel-ID layout (grid.py): tile bits above bit 32, then 16 bits of row and of column.
_ROW_SHIFT, _ROW_MASK, _COL_MASK = 16, 0xFFFF, 0xFFFF


def tile_check(ids: np.ndarray, vecs: np.ndarray) -> list:
    """``[digest, [16 pixel IDs]]``: what :class:`StoreVectors` verifies a tile against,
    from its (n,) indexed IDs and (n, 128) int8 vectors."""
    import hashlib

    if not len(ids):
        return ["", []]
    pick = np.unique(np.linspace(0, len(ids) - 1, _N_CHECK).astype(np.int64))
    return [hashlib.sha256(np.ascontiguousarray(vecs[pick]).tobytes()).hexdigest()[:16], [int(i) for i in ids[pick]]]


def exact_cosine(q: np.ndarray, vecs: np.ndarray) -> np.ndarray:
    """(n,) float32 cosine between unit ``q`` (d,) and int8 rows ``vecs`` (n, d).

    float32 holds every int8 dot product and squared norm exactly (|sum| < 2**24), so
    the only rounding is the query's own float32 precision.
    """
    x = np.asarray(vecs, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms == 0] = np.inf
    # Row by row (einsum, not BLAS, whose blocking makes a row's float32 sum depend on the
    # rows beside it): a pixel's similarity is the same whatever else is scored with it.
    # Clipped: float32 rounding can put a pixel's similarity to itself at 1.0000001.
    return np.clip(np.einsum("ij,j->i", x, np.asarray(q, dtype=np.float32)) / norms, -1.0, 1.0)


def top_k(ids: np.ndarray, sims: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k best by (similarity descending, ID ascending), in that order."""
    if len(sims) > k:
        kth = np.partition(sims, len(sims) - k)[len(sims) - k]
        keep = np.flatnonzero(sims >= kth)  # every tie at the boundary, so IDs decide
    else:
        keep = np.arange(len(sims))
    return keep[np.lexsort((ids[keep], -sims[keep]))[:k]]


def mapped_bytes(unknown: int = 1 << 62) -> int:
    """File pages mapped into this process (``/proc/self/statm`` shared), or ``unknown``."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[2]) * _PAGE
    except (OSError, ValueError, IndexError):
        return unknown


class _TileFile:
    """One tile's embeddings file, mapped: (rows, 128) int8 and the chunk start table."""

    def __init__(self, store, tile: Tile, year: int) -> None:
        self.tile, self.year, self.store = tile, year, store
        found = store.embedding_file(tile, year)
        self.clustered, self.at = None, None
        if found is None:
            self.rows, self.first = None, None
            self.clustered = store.clustered_file(tile, year) if store.has(tile, year) else None
            if self.clustered is not None:
                self.width = int(store.attrs(tile, year)["width"])
            return
        path, self.first = found
        raw = map_readonly(path)
        self.rows = raw[: raw.size // DIMS * DIMS].view(np.int8).reshape(-1, DIMS)

    def read(self, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        """(n, 128) int8 at pixels (r, c) of the tile; all-zero for chunks never written."""
        out = np.zeros((len(r), DIMS), np.int8)
        if self.clustered is not None:  # in an int8-lists index's order: row of each pixel
            rows = self.clustered[0]
            if self.at is None:  # the store's inverse of the order, else computed (kept until released)
                self.at = self.store.clustered_rowof(self.tile, self.year, compute=True)
            flat = r * self.width + c
            pos = (self._pread(self.at, np.sort(flat))[np.argsort(np.argsort(flat))]
                   if isinstance(self.at, np.memmap) else self.at[flat]).astype(np.int64)
            srt = np.argsort(pos)
            out[srt] = self._pread(rows, pos[srt])
            return out
        if self.rows is None:
            if len(r):
                out[:] = self.store.read_pixels(self.tile, self.year, r, c)[0]
            return out
        first = self.first[r >> 6, c >> 6]
        row = first + ((r & 63) << 6) + (c & 63)
        if np.all(first >= 0):
            order = np.argsort(row)  # file order: each page faulted once
            out[order] = self.rows[row[order]]
        else:
            ok = np.flatnonzero(first >= 0)
            order = ok[np.argsort(row[ok])]
            out[order] = self.rows[row[order]]
        return out

    def _pread(self, arr, at: np.ndarray) -> np.ndarray:
        """``arr[at]`` for sorted ``at``, read with ``pread`` where ``arr`` maps a whole file
        (random reads then map no pages: a fault maps 64 KiB or more, and a read of
        k = 1000 results across 90 tiles faulted 2,000 windows, 40 ms), else indexed."""
        from .lists import _kernel, _open_fd, gather

        fds = self.__dict__.setdefault("_fds", {})
        fd = fds.get(id(arr))
        if fd is None:
            fd = fds[id(arr)] = _open_fd(arr)
        lib, _ = _kernel()
        if fd < 0 or lib is None or not len(at):
            return np.asarray(arr[at])
        out = np.empty((len(at),) + arr.shape[1:], arr.dtype)
        return gather(np.full(len(at), fd, np.int32), at, out, f"tile {self.tile.name}'s clustered rows")

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def release(self) -> None:
        if self.clustered is not None:
            release_pages(self.clustered[0])
            release_pages(self.clustered[1])
            if isinstance(self.at, np.memmap):
                release_pages(self.at)
        if self.rows is not None:
            release_pages(self.rows)


class StoreVectors:
    """The stored int8 vectors of an index's pixels, by pixel ID, from the store's files.

    ``checks`` maps tile name to its :func:`tile_check` from the build (verified once per
    tile, on first read). Thread-safe: shards are re-ranked from threads.
    """

    def __init__(self, store, year: int, checks: dict[str, list] | None = None) -> None:
        self.store, self.year = store, int(year)
        self.checks = dict(checks or {})
        self._files: dict[int, _TileFile] = {}
        self._recent: dict[int, None] = {}
        self._lock = threading.Lock()
        self.max_mapped = MAX_MAPPED

    def _file(self, key: int) -> _TileFile:
        f = self._files.get(key)
        if f is not None:
            return f
        with self._lock:
            f = self._files.get(key)
            if f is None:
                ix, iy, _, _ = unpack_ids(np.array([key << 32], np.int64))
                tile = Tile(int(ix[0]), int(iy[0]))
                f = _TileFile(self.store, tile, self.year)
                want = self.checks.get(tile.name)
                if want is not None and want[1]:
                    ids = np.asarray(want[1], np.int64)
                    got = tile_check(ids, f.read((ids >> _ROW_SHIFT) & _ROW_MASK, ids & _COL_MASK))[0]
                    if got != want[0]:
                        raise IndexCorruptError(
                            f"tile {tile.name} ({self.year}) in the store holds other vectors than the index was "
                            "built from; rebuild the index with `tessera-search build-index --rebuild` (with the "
                            "options it was built with)")
                self._files[key] = f
        return f

    def _keep_inverses(self, key: int) -> None:
        """Keep the order inverses of the :data:`MAX_INVERSES` tiles read last (4 bytes a
        pixel each: 5 MB a whole tile)."""
        self._recent.pop(key, None)
        self._recent[key] = None
        while len(self._recent) > MAX_INVERSES:
            old = next(iter(self._recent))
            del self._recent[old]
            f = self._files.get(old)
            if f is not None and not isinstance(f.at, np.memmap):  # the store's own stays mapped
                f.at = None

    def read(self, ids: np.ndarray) -> np.ndarray:
        """(n, 128) int8 stored vectors of pixel ``ids`` (any order, any tiles)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), DIMS), np.int8)
        if not len(ids):
            return out
        r, c = (ids >> _ROW_SHIFT) & _ROW_MASK, ids & _COL_MASK
        keys = ids >> 32
        if np.all(keys == keys[0]):
            out[:] = self._file(int(keys[0])).read(r, c)
            self._keep_inverses(int(keys[0]))
        else:
            order = np.argsort(keys, kind="stable")
            bounds = np.flatnonzero(np.diff(keys[order])) + 1
            for grp in np.split(order, bounds):
                out[grp] = self._file(int(keys[grp[0]])).read(r[grp], c[grp])
                self._keep_inverses(int(keys[grp[0]]))
                self._bound_mapped()  # after each tile: a few pixels of each of many tiles map a lot
        self._bound_mapped()
        return out

    def blocks(self, ids: np.ndarray, block: int):
        """The stored vectors of one tile's pixels ``ids`` (sorted), about ``block`` rows at
        a time, in the order the store keeps them: ``(ids, (n, 128) int8)`` pairs. One
        sequential pass: a clustered tile is read in its list order, not pixel by pixel."""
        ids = np.asarray(ids, np.int64)
        if not len(ids):
            return
        f = self._file(int(ids[0] >> 32))
        if f.clustered is None:
            for a in range(0, len(ids), block):
                yield ids[a:a + block], self.read(ids[a:a + block])
            return
        rows, order, _ = f.clustered
        member = np.zeros(len(order), bool)
        member[((ids >> _ROW_SHIFT) & _ROW_MASK) * f.width + (ids & _COL_MASK)] = True
        for a in range(0, len(order), block):
            pix = order[a:a + block].astype(np.int64)
            keep = np.flatnonzero(member[pix])
            if len(keep):
                x = np.array(rows[a:a + len(pix)]) if len(keep) == len(pix) else rows[a + keep]
                p = pix[keep]
                yield pack_ids(f.tile.ix, f.tile.iy, p // f.width, p % f.width), x
            self._bound_mapped()

    def _bound_mapped(self) -> None:
        """Unmap every file's pages from this process once the mapped store pages exceed
        ``max_mapped`` bytes (they stay in the page cache): resident memory stays bounded
        whatever the index size, and most reads between releases find their page mapped."""
        # Counted above the floor a release leaves (libraries and other maps are file pages
        # too: a floor over the bound would otherwise release every file at every check).
        floor = getattr(self, "_floor", 0)
        if mapped_bytes(floor + self.max_mapped + 1) - floor > self.max_mapped:
            for f in list(self._files.values()):
                f.release()
            self._floor = mapped_bytes(0)
