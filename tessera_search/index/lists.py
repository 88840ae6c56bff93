"""The int8-lists index: IVF lists that are the store's own int8 rows, scanned exactly.

Factory ``IVFn[_HNSW32],Int8``. Training fits only the coarse quantizer (k-means, with an
HNSW graph over the centroids from 4096 lists). Building a shard assigns every usable
pixel of each tile (valid, not the zero vector) to its list and has the store rewrite
the tile in list order (:meth:`~tessera_search.store.TileStore.cluster`): a list of a tile
is then one contiguous run of rows in the store's ``clustered`` file, and the workspace
still keeps exactly one int8 copy of each vector. The shard's files are its list table
(``shard-NNNNN.faissindex``, here a ``.npy`` of (tiles, nlist + 1) int64 row starts: list
``l`` of tile ``t`` is rows ``table[t, l]:table[t, l + 1]``) and the usual pixel bitmap.

A search finds the ``nprobe`` nearest centroids, scans those lists' rows in every tile
with the compiled kernel (``_scan.c``: int8 rows times the query rounded to int16,
integer sums, so every CPU gives the same answer; cosine within ~1e-5), keeps the best
``r`` by that score and every row within 2e-4 of the r-th (more than the kernel's error), and scores those exactly (:func:`~.rerank.exact_cosine`, the
same float32 arithmetic every search ends with). Recall depends only on ``nprobe``,
which the build tunes (:func:`tune_lists`). Pixels of a tile the index's region only
partly covers are clustered too (the order does not depend on the region, so indexes of
other regions on the same quantizer share it); the kernel skips them (a flag per row).

A tile fetched again since (a download writes the plain layout) is clustered back on
the shard's first use of it, once its vectors are checked to be those the index was
built from; a tile re-clustered since by another quantizer, or holding other vectors, is
refused with an IndexCorruptError that names the rebuild.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import mmap
import os
import re
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._io import atomic_path, writing
from ..errors import IndexCorruptError, StoreError
from ..grid import Tile, pack_ids
from .rerank import exact_cosine, mapped_bytes, tile_check, top_k
from .search import Shard
from .shards import DIMS, file_sizes, read_faiss_index, release_pages

__all__ = ["KIND", "LISTS_SHARD_VECTORS", "ListShard", "adc_top", "build_lists_shard", "codes_m", "encode_rows",
           "faiss_factory", "first_pass_for", "is_lists_factory", "pq_of",
           "cluster_order", "prefetch", "probe_for", "quantizer_key", "scan_rounds", "scan_top", "stop_for",
           "tune_lists"]

KIND = "int8-lists"
TOKEN = "Int8"
_PQ_RE = re.compile(r"PQ(\d+)")
BATCH = 65536
_Q16 = 32767.0
_TIE = 2e-4  # rows scoring this close to the r-th best are scored exactly too (the kernel's
# scores are within ~7e-5 of the cosine at worst: the query's int16 rounding)
MAX_MAPPED = 256 << 20  # store pages a process's scans map (all shards together) before they are all released
MAP_MISSES = False  # True: rows of lists the row cache has no room for are scanned through the maps, not read (measured 2x slower at 100 M)
CACHE_BYTES = 768 << 20  # rows of scanned lists a process keeps in memory (RowCache), all shards together
LISTS_SHARD_VECTORS = 16_000_000  # vectors per shard (whole tiles): the unit of parallel builds and searches

_CORES = os.cpu_count() or 1  # asked once: each call reads /sys (tens of microseconds a query)
_lib_lock = threading.Lock()
_LIB: tuple | None = None


def _parts(factory: str | None) -> list[str]:
    return (factory or "").replace(" ", "").split(",")


def codes_m(factory: str | None) -> int:
    """Bytes of the first-pass PQ code a row of an int8-lists ``factory`` has (``...,Int8,PQm``),
    0 when it has none."""
    parts = _parts(factory)
    if len(parts) >= 3 and parts[-2] == TOKEN and _PQ_RE.fullmatch(parts[-1]):
        return int(_PQ_RE.fullmatch(parts[-1]).group(1))
    return 0


def is_lists_factory(factory: str | None) -> bool:
    """Whether ``factory`` names the int8-lists index (last component ``Int8``, or ``Int8``
    then the first pass's ``PQm``)."""
    return bool(factory) and (_parts(factory)[-1] == TOKEN or codes_m(factory) > 0)


def faiss_factory(factory: str) -> str:
    """The faiss factory that trains an int8-lists ``factory``: its coarse quantizer (a
    ``Flat`` IVF), and with a first pass the PQ of the residuals too (an IVF-PQ, whose
    codebooks encode each row's residual from its list's centroid)."""
    parts, m = _parts(factory), codes_m(factory)
    return ",".join(parts[:-2] + [f"PQ{m}"]) if m else ",".join(parts[:-1] + ["Flat"])


def exact_quantizer(trained):
    """The coarse quantizer a search asks for its lists: the trained centroids searched
    exhaustively (nlist x 128 multiply-adds a query: 0.5 M at 4096 lists). An HNSW graph
    over them (what assigns vectors at build time, fast) returns only approximately the
    nearest lists, most of all when asked for many, which capped recall below 1 whatever
    nprobe."""
    import faiss

    ivf = faiss.extract_index_ivf(trained)
    q = ivf.quantizer
    if isinstance(faiss.downcast_index(q), faiss.IndexFlat):
        return q
    flat = faiss.IndexFlatIP(ivf.d) if ivf.metric_type == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(ivf.d)
    flat.add(q.reconstruct_n(0, ivf.nlist))
    return flat


def quantizer_key(trained) -> str:
    """A short digest of the trained coarse centroids: what a clustered tile records."""
    import faiss

    ivf = faiss.extract_index_ivf(trained)
    cent = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    return hashlib.sha256(np.ascontiguousarray(cent, dtype="<f4").tobytes()).hexdigest()[:16]


# -- the kernel ----------------------------------------------------------------------


_SIMD_CAP = {"plain": 0, "avx2": 1}  # TESSERA_SEARCH_SCAN: the widest scan to use (the answers are the same)


def _kernel():
    """(ctypes library, SIMD level: 0 plain C, 1 AVX2, 2 AVX-512 VNNI) or (None, 0) when
    the compiled kernel is missing."""
    global _LIB
    if _LIB is not None:
        return _LIB
    with _lib_lock:
        if _LIB is None:
            lib, simd = None, 0
            try:
                spec = importlib.util.find_spec("tessera_search.index._scan")
                if spec is None or not spec.origin or spec.origin.endswith(".c"):
                    raise OSError("not built")
                lib = ctypes.CDLL(spec.origin)
                if lib.ts_abi() != 15:
                    raise OSError("an older build")
                lib.ts_scan_top.restype = ctypes.c_int64
                lib.ts_prefetch.restype = ctypes.c_int64
                simd = min(int(lib.ts_simd()), _SIMD_CAP.get(os.environ.get("TESSERA_SEARCH_SCAN", ""), 2))
                lib.ts_gather.restype = ctypes.c_int64
                lib.ts_work.restype = ctypes.c_int64
                lib.ts_copy.restype = None
                lib.ts_adc_top.restype = ctypes.c_int64
            except (ImportError, OSError, AttributeError) as exc:
                lib = None
                warnings.warn(f"the compiled int8 scan kernel is unavailable ({exc}); scanning with NumPy, "
                              "several times slower: reinstall tessera-search where a C compiler is present",
                              RuntimeWarning, stacklevel=3)
            _LIB = (lib, simd)
    return _LIB


def query16(q: np.ndarray) -> np.ndarray:
    """The unit query rounded to int16 (largest component +-32767): what the kernel scans with."""
    q = np.asarray(q, np.float32)
    m = float(np.abs(q).max()) or 1.0
    return np.ascontiguousarray(np.rint(q * (_Q16 / m)).astype(np.int16))


def _scores_numpy(arrays: list, tile_of: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                  q16: np.ndarray, skips: list | None = None) -> np.ndarray:
    """The kernel's scores, bit for bit, in NumPy (the fallback)."""
    parts = [np.asarray(arrays[t][a:b]) for t, a, b in zip(tile_of, starts, ends) if b > a]
    if not parts:
        return np.zeros(0, np.float32)
    x = np.concatenate(parts).astype(np.int32)
    s = (x @ q16.astype(np.int32)).astype(np.float32)
    nn = np.einsum("ij,ij->i", x, x).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = s / np.sqrt(nn)
    out[nn == 0] = -np.inf
    flags = _row_flags(skips, tile_of, starts, ends)
    if flags is not None:
        out[flags != 0] = -np.inf
    return out.astype(np.float32)


def _row_flags(skips: list | None, tile_of, starts, ends) -> np.ndarray | None:
    """The ranges' rows' flags (``skips``: per array, None or a flag a row), one after
    another, or None when no array has flags."""
    if skips is None or all(k is None for k in skips):
        return None
    return np.concatenate([np.asarray(skips[t][a:b]) if skips[t] is not None else np.zeros(max(0, b - a), np.uint8)
                           for t, a, b in zip(tile_of, starts, ends) if b > a] or [np.zeros(0, np.uint8)])


def _flag_addresses(skips: list | None, tile_of: np.ndarray) -> np.ndarray:
    """Per range, the address of its array's flags for the kernels (0: none)."""
    if skips is None or not len(tile_of):
        return np.zeros(len(tile_of), np.int64)
    return np.array([k.ctypes.data if k is not None else 0 for k in skips], np.int64)[tile_of]


def _split_ranges(lens: np.ndarray, split: int) -> tuple[np.ndarray, list] | None:
    """How a scan of ranges of ``lens`` rows splits over the cores: (row number each range
    starts at, [(first range, end range)] a part), or None for one part (fewer than
    ``split`` rows a core)."""
    total = int(lens.sum())
    parts = min(_CORES, 4, max(1, total // split))
    if parts == 1:
        return None
    cum = np.concatenate([[0], np.cumsum(lens)])
    cuts = np.searchsorted(cum, np.linspace(0, total, parts + 1)[1:-1])
    bounds = [0, *sorted(set(int(c) for c in cuts)), len(lens)]
    return cum, [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _band(s: np.ndarray, i: np.ndarray, r: int, band: float, cap: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Of scores ``s`` (row numbers ``i``): the best ``r`` and all within ``band`` of the
    r-th, at most ``cap`` of them (the best first) and how many qualified."""
    if len(s) > r:
        t = np.float32(np.partition(s, len(s) - r)[len(s) - r]) - np.float32(band)
        keep = np.flatnonzero(s >= t)
    else:
        keep = np.arange(len(s))
    found = len(keep)
    if found > cap:
        keep = keep[np.lexsort((i[keep], -s[keep]))[:cap]]
    return s[keep], i[keep], found


def scan_top(arrays: list, tile_of: np.ndarray, starts: np.ndarray, ends: np.ndarray, q16: np.ndarray, r: int,
             band: float = 0.0, cap: int | None = None, lib=None, first: int = 0,
             skips: list | None = None, fds: list | None = None, dests: np.ndarray | None = None,
             filled: np.ndarray | None = None, through_map: bool = False, release_maps: bool = False
             ) -> tuple[np.ndarray, np.ndarray, int]:
    """The best ``r`` rows by the kernel's approximate cosine over ranges of int8 arrays,
    and every row within ``band`` of the r-th best: range ``g`` is rows
    ``starts[g]:ends[g]`` of ``arrays[tile_of[g]]`` ((n, 128) int8, C-contiguous).
    Returns ((m,) float32 scores, (m,) int64 numbers of those rows counted over the
    ranges one after another, from ``first``; unordered) and how many qualified: more
    than ``cap`` (default r + band room) means only ``cap`` were kept, the best ``r``
    among them. ``skips``: per array, None or (n,) uint8 flags, one a row: a flagged row
    is never kept. ``lib``: (library, simd) to use instead of the default. ``fds``: per
    array, None or an open file descriptor of the file whose bytes it maps: the kernel then
    reads those rows with ``pread`` into a small buffer instead of through the mapping, so
    a scan maps no pages (resident memory stays flat whatever it reads, and there is no
    page-table work: Linux maps a 64 KiB window on every fault). ``dests``: per range, 0
    or the address of room for its rows (a :class:`RowCache` slot): a read goes there,
    and where ``filled`` (per range) says so, the rows are there already and nothing is
    read (with the kernel only). ``through_map``: with ``dests``, only the ranges read
    into room are read with ``pread``; the others are scanned through the arrays' maps
    (no copy: the page cache's own pages). ``release_maps``: the pages of the ranges
    scanned through a map are unmapped again array by array as the scan goes (they stay
    in the page cache), so a scan keeps about one array's ranges mapped, not all of them."""
    tile_of = np.asarray(tile_of, np.int64)
    starts = np.ascontiguousarray(starts, np.int64)
    ends = np.ascontiguousarray(ends, np.int64)
    lib, simd = lib if lib is not None else _kernel()
    r = int(max(0, r))
    cap = int(max(r, cap if cap is not None else r + 64 + r // 4))
    if lib is None:
        s = _scores_numpy(arrays, tile_of, starts, ends, q16, skips)
        s, i, found = _band(s, np.arange(len(s), dtype=np.int64) + first, r, band, cap)
        keep = np.isfinite(s)  # flagged rows (-inf) are never kept
        return s[keep], i[keep], found - int(np.sum(~keep))
    bases = np.array([a.ctypes.data for a in arrays], np.int64)[tile_of] if len(tile_of) else np.zeros(0, np.int64)
    flags = _flag_addresses(skips, tile_of)
    hs, hi = np.empty(cap, np.float32), np.empty(cap, np.int64)
    work = np.empty(int(lib.ts_work(ctypes.c_int64(cap))), np.float32)
    p = ctypes.c_void_p
    fd = None
    if fds is not None and any(f is not None and f >= 0 for f in fds):
        fd = np.array([-1 if f is None else f for f in fds], np.int32)[tile_of]
    if dests is not None:
        filled = np.zeros(len(tile_of), np.bool_) if filled is None else np.asarray(filled, np.bool_)
        fd = np.where(filled | (through_map & (dests == 0)), -1, fd if fd is not None else -1).astype(np.int32)
        dests = np.ascontiguousarray(np.where(filled | (fd >= 0), dests, 0), np.int64)
    limits = None
    if release_maps:  # only read-only file maps: unmapping private memory would zero it
        ends_at = np.array([a.ctypes.data + a.nbytes if _read_only_map(a) else 0 for a in arrays], np.int64)
        limits = np.ascontiguousarray(ends_at[tile_of]) if ends_at.any() else None
    found = lib.ts_scan_top(p(bases.ctypes.data), p(fd.ctypes.data) if fd is not None else None,
                            p(dests.ctypes.data) if dests is not None else None, p(flags.ctypes.data),
                            p(starts.ctypes.data), p(ends.ctypes.data),
                            ctypes.c_int64(len(starts)), p(q16.ctypes.data), ctypes.c_int64(r), ctypes.c_float(band),
                            ctypes.c_int64(cap), p(hs.ctypes.data), p(hi.ctypes.data), ctypes.c_int64(first),
                            int(simd), p(limits.ctypes.data) if limits is not None else None, p(work.ctypes.data))
    if found < 0:
        raise StoreError(f"reading the store's clustered rows failed: {os.strerror(-int(found))}")
    n = min(int(found), cap)
    hs, hi = hs[:n], hi[:n]
    if skips is not None and n and not np.all(np.isfinite(hs)):  # flagged rows tied into the band (r > members)
        keep = np.isfinite(hs)
        return hs[keep], hi[keep], int(found) - int(np.sum(~keep))
    return hs, hi, int(found)


def _read_only_map(a) -> bool:
    """Whether array ``a`` shows a read-only map of a file (its pages can be unmapped from
    the process and read again from the page cache)."""
    import mmap

    if a.flags.writeable:
        return False
    base = a
    while base is not None and not isinstance(base, mmap.mmap):
        if isinstance(base, memoryview):
            base = base.obj
        else:
            base = getattr(base, "base", None)
    if base is None:
        return False
    try:  # a map open for writing (shared or copy-on-write) is not read-only
        with memoryview(base) as view:
            return bool(view.readonly)
    except (TypeError, ValueError):  # closed
        return False


def prefetch(arrays: list, tile_of: np.ndarray, starts: np.ndarray, ends: np.ndarray, sample: int = 8) -> int:
    """Read ahead, all at once, the row ranges ``[starts[g], ends[g])`` of
    ``arrays[tile_of[g]]`` (memory-mapped, all with the same row size) that a scan is
    about to read, when they are not in memory (checked on ``sample`` of them first): a
    cold scan then waits for the disk about once instead of once per list. Returns the
    ranges advised (0 when warm)."""
    lib, _ = _kernel()
    if lib is None or not len(tile_of):
        return 0
    bases = np.array([a.ctypes.data for a in arrays], np.int64)[np.asarray(tile_of, np.int64)]
    starts = np.ascontiguousarray(starts, np.int64)
    ends = np.ascontiguousarray(ends, np.int64)
    p = ctypes.c_void_p
    row_bytes = int(arrays[0].strides[0]) if arrays else DIMS
    return int(lib.ts_prefetch(p(bases.ctypes.data), p(starts.ctypes.data), p(ends.ctypes.data),
                               ctypes.c_int64(len(starts)), ctypes.c_int64(sample), ctypes.c_int64(row_bytes)))


_BUF_ROWS = 2048  # the kernel's read buffer, in rows (BUF_ROWS in _scan.c)
_SPLIT = 1 << 15  # rows from which one query's scan is split over the cores
_pool_lock = threading.Lock()
_POOL = None


def _pool():
    """The scan threads (one pool a process: a query's scan split over the cores)."""
    global _POOL
    with _pool_lock:
        if _POOL is None:
            from concurrent.futures import ThreadPoolExecutor

            _POOL = ThreadPoolExecutor(min(_CORES, 4), thread_name_prefix="int8-scan")
    return _POOL


def _scan_parallel(arrays, tile_of, starts, ends, q16, r, band: float = 0.0, cap: int | None = None,
                   skips: list | None = None, fds: list | None = None, dests: np.ndarray | None = None,
                   filled: np.ndarray | None = None, through_map: bool = False, release_maps: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`scan_top` split over the cores by rows (the same answer: each part keeps
    its best ``r`` and their band, a superset of the whole's; the parts then merge)."""
    split = _split_ranges(ends - starts, _SPLIT)
    if split is None:
        return scan_top(arrays, tile_of, starts, ends, q16, r, band, cap, skips=skips, fds=fds, dests=dests,
                        filled=filled, through_map=through_map, release_maps=release_maps)
    cum, jobs = split
    got = list(_pool().map(lambda ab: scan_top(arrays, tile_of[ab[0]:ab[1]], starts[ab[0]:ab[1]], ends[ab[0]:ab[1]],
                                                 q16, r, band, cap, first=int(cum[ab[0]]), skips=skips,
                                                 fds=fds, dests=None if dests is None else dests[ab[0]:ab[1]],
                                                 filled=None if filled is None else filled[ab[0]:ab[1]],
                                                 through_map=through_map, release_maps=release_maps), jobs))
    cap = int(max(r, cap if cap is not None else r + 64 + r // 4))
    s, i, found = _band(np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got]), r, band, cap)
    if any(g[2] > len(g[0]) for g in got):  # a part was cut short: its band may be missing
        found = max(found, cap + 1)
    return s, i, found


def _adc_numpy(views: list, tile_of, starts, ends, bias, lut, at=None) -> np.ndarray:
    """The kernel's first-pass estimates, bit for bit, in NumPy (the same float32 sums in
    the same order)."""
    if at is None:
        parts = [np.asarray(views[t][a:b]) for t, a, b in zip(tile_of, starts, ends)]
    else:
        parts = [np.asarray(views[0][c:c + b - a]) for c, a, b in zip(at, starts, ends)]
    if not parts:
        return np.zeros(0, np.float32)
    x = np.concatenate(parts)
    m = x.shape[1]
    acc = [np.zeros(len(x), np.float32) for _ in range(4)]
    for j in range(m - m % 4):
        acc[j % 4] += lut[j][x[:, j]]
    for j in range(m - m % 4, m):
        acc[0] += lut[j][x[:, j]]
    return np.repeat(bias, ends - starts) + ((acc[0] + acc[1]) + (acc[2] + acc[3]))


def adc_top(views: list, tile_of: np.ndarray, starts: np.ndarray, ends: np.ndarray, bias: np.ndarray,
            lut: np.ndarray, r: int, skips: list | None = None, first: int = 0, lib=None,
            at: np.ndarray | None = None, fd: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """The best ``r`` rows by first-pass estimate (``bias[g]`` plus the sum of ``lut``'s
    entries for the row's code bytes) over ranges of code arrays: range ``g`` is rows
    ``starts[g]:ends[g]`` of ``views[tile_of[g]]`` ((n, M) uint8, C-contiguous), or with
    ``at``, rows ``at[g]:at[g] + ends[g] - starts[g]`` of ``views[0]`` (a shard's codes,
    list by list; ``starts`` and ``tile_of`` then still place the rows' flags). Returns
    ((m,) float32 estimates, (m,) int64 row numbers counted over the ranges from
    ``first``), unordered; flagged rows (``skips``, as :func:`scan_top`) are never kept.
    ``lib``: the library to use instead of the default, False for NumPy. ``fd``: with
    ``at``, a descriptor open on the file ``views[0]`` maps (its rows from byte 0): the
    kernel then reads the codes with ``pread``, a window at a time, so a process maps
    none of them (its resident memory does not grow with the codes it reads)."""
    tile_of = np.asarray(tile_of, np.int64)
    starts = np.ascontiguousarray(starts, np.int64)
    ends = np.ascontiguousarray(ends, np.int64)
    lib = lib if lib is not None else _kernel()[0]
    r = int(max(0, r))
    if not lib or r == 0:
        s = _adc_numpy(views, tile_of, starts, ends, bias, lut, at)
        flags = _row_flags(skips, tile_of, starts, ends)
        if flags is not None:
            s[flags != 0] = -np.inf
        keep = np.flatnonzero(np.isfinite(s))
        if len(keep) > r:
            keep = keep[np.lexsort((keep, -s[keep]))[:r]]
        return s[keep], keep.astype(np.int64) + first
    m = int(lut.shape[0])
    if at is not None:  # the kernel reads range g's codes at bases[g] + starts[g] * M
        bases = (views[0].ctypes.data if fd < 0 else 0) + (np.asarray(at, np.int64) - starts) * m
    else:
        fd = -1
        bases = np.array([v.ctypes.data for v in views], np.int64)[tile_of] if len(tile_of) else np.zeros(0, np.int64)
    bases = np.ascontiguousarray(bases, np.int64)
    flags = _flag_addresses(skips, tile_of)
    bias = np.ascontiguousarray(bias, np.float32)
    lut = np.ascontiguousarray(lut, np.float32)
    hs, hi = np.empty(r, np.float32), np.empty(r, np.int64)
    work = np.empty(int(lib.ts_work(ctypes.c_int64(r))), np.float32)
    p = ctypes.c_void_p
    n = lib.ts_adc_top(p(bases.ctypes.data), ctypes.c_int(int(fd)), p(flags.ctypes.data), p(bias.ctypes.data),
                       p(starts.ctypes.data),
                       p(ends.ctypes.data), ctypes.c_int64(len(starts)), p(lut.ctypes.data), ctypes.c_int64(m),
                       ctypes.c_int64(r), p(hs.ctypes.data), p(hi.ctypes.data), ctypes.c_int64(first),
                       p(work.ctypes.data))
    if n < 0:
        raise StoreError(f"reading first-pass codes failed: {os.strerror(-int(n))}")
    hs, hi = hs[:n], hi[:n]
    keep = np.isfinite(hs)
    return (hs, hi) if keep.all() else (hs[keep], hi[keep])


_ADC_SPLIT = 1 << 17  # rows from which one query's first pass is split over the cores


def _adc_parallel(views, tile_of, starts, ends, bias, lut, r: int, skips: list | None = None,
                  at: np.ndarray | None = None, fd: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """:func:`adc_top` split over the cores by ranges (each part keeps its best ``r``: a
    superset of the whole's best, which the merge then takes)."""
    split = _split_ranges(ends - starts, _ADC_SPLIT)
    if split is None:
        return adc_top(views, tile_of, starts, ends, bias, lut, r, skips, at=at, fd=fd)
    cum, jobs = split
    got = list(_pool().map(lambda ab: adc_top(views, tile_of[ab[0]:ab[1]], starts[ab[0]:ab[1]], ends[ab[0]:ab[1]],
                                              bias[ab[0]:ab[1]], lut, r, skips, first=int(cum[ab[0]]),
                                              at=None if at is None else at[ab[0]:ab[1]], fd=fd), jobs))
    s, i = np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got])
    if len(s) > r:
        keep = np.lexsort((i, -s))[:r]
        s, i = s[keep], i[keep]
    return s, i


# -- building a shard ----------------------------------------------------------------


def _assign(quantizer, vecs: np.ndarray) -> np.ndarray:
    from .shard_build import normalise

    out = np.empty(len(vecs), np.int64)
    for s in range(0, len(vecs), BATCH):
        _, i = quantizer.search(normalise(vecs[s:s + BATCH]), 1)
        out[s:s + BATCH] = i[:, 0]
    return out


def cluster_order(quantizer, data, nlist: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A tile's list order: ((H*W,) row-major pixel of each row: usable pixels (valid,
    not zero) by list, then the rest; (nlist + 1,) starts of each list's rows; (H*W,)
    bool usable)."""
    h, w, _ = data.embeddings.shape
    flat = data.embeddings.reshape(h * w, DIMS)
    usable = data.valid.ravel() & np.any(flat != 0, axis=1)
    at = np.flatnonzero(usable)
    lists = _assign(quantizer, flat[at])
    srt = np.argsort(lists, kind="stable")
    order = np.concatenate([at[srt], np.flatnonzero(~usable)])
    return order, np.searchsorted(lists[srt], np.arange(nlist + 1)), usable


def pq_of(trained):
    """The trained first-pass product quantizer of an int8-lists index with codes (its
    IVF-PQ's), or None."""
    import faiss

    ivf = faiss.downcast_index(faiss.extract_index_ivf(trained))
    return ivf.pq if isinstance(ivf, faiss.IndexIVFPQ) else None


def encode_rows(pq, cent: np.ndarray, rows: np.ndarray, lists: np.ndarray) -> np.ndarray:
    """(n, M) uint8 first-pass codes of int8 ``rows`` in ``lists``: the PQ code of each
    unit row's residual from its list's centroid (``cent``: (nlist, 128) float32)."""
    from .shard_build import normalise

    out = np.empty((len(rows), int(pq.M)), np.uint8)
    for s in range(0, len(rows), BATCH):
        res = normalise(rows[s:s + BATCH]) - cent[lists[s:s + BATCH]]
        out[s:s + BATCH] = pq.compute_codes(np.ascontiguousarray(res, np.float32))
    return out


def code_offsets(table: np.ndarray) -> np.ndarray:
    """(tiles, nlist) first code row of list ``l`` of tile ``t`` in a shard's codes, which
    hold list after list, and within a list the shard's tiles in turn (so the lists a
    query probes are a few long runs, not one short run a tile)."""
    counts = np.diff(np.asarray(table, np.int64), axis=1)  # (tiles, nlist)
    flat = counts.T.ravel()  # list-major
    return (np.concatenate([[0], np.cumsum(flat)[:-1]]).reshape(counts.shape[1], counts.shape[0]).T
            if flat.size else np.zeros(counts.shape, np.int64))


def _codes_by_list(src_fd: int, dst: Path, table: np.ndarray, m: int) -> None:
    """Write the codes of ``src_fd`` (tile after tile, each tile's usable rows in their
    clustered order) to ``dst`` list after list (:func:`code_offsets`), fsynced."""
    start = np.concatenate([[0], np.cumsum(table[:, -1])]) if len(table) else np.zeros(1, np.int64)
    with open(dst, "wb") as out:
        for lst in range(table.shape[1] - 1):
            for t in range(len(table)):
                a, b = int(table[t, lst]), int(table[t, lst + 1])
                if b > a:
                    out.write(os.pread(src_fd, (b - a) * m, int(start[t] + a) * m))
        out.flush()
        os.fsync(out.fileno())


def build_lists_shard(job, progress: Callable[[int], None] | None = None) -> dict:
    """:func:`~.shard_build.build_shard` for an int8-lists index: cluster each tile of
    ``job`` in the store by the trained quantizer (skipped where it already is, in the
    same order) and write the shard's list table and pixel bitmap atomically; with a
    first pass, also each usable row's PQ code (``shard-NNNNN.codes``, M bytes a row,
    list after list: :func:`code_offsets`)."""
    import faiss

    from ..store import TileStore

    t0 = time.monotonic()
    store, region, files = TileStore(job.home), job.region(), job.files
    tiles = [Tile.from_name(t) for t in job.tiles]
    year = int(job.year)
    trained = read_faiss_index(Path(job.trained), mmap=False)
    ivf = faiss.extract_index_ivf(trained)
    quantizer, nlist = ivf.quantizer, int(ivf.nlist)
    pq = pq_of(trained)
    cent = quantizer.reconstruct_n(0, nlist) if pq is not None else None
    key = quantizer_key(trained)
    table = np.zeros((len(tiles), nlist + 1), np.int64)
    n, offset, pixels, checks, partial, rewritten = 0, 0, {}, {}, [], 0
    what = f"index shard {files.stem}"
    with contextlib.ExitStack() as stack:
        stack.enter_context(writing(what, files.gen_dir))
        tmp_pix = stack.enter_context(atomic_path(files.pixels, what))
        tmp_idx = stack.enter_context(atomic_path(files.index, what))
        f_pix = stack.enter_context(open(tmp_pix, "wb"))
        f_codes = None
        if pq is not None:  # tile by tile first, then list by list into the shard's codes (below)
            tmp_codes = stack.enter_context(atomic_path(files.codes, what))
            f_codes = stack.enter_context(tempfile.TemporaryFile(dir=files.gen_dir, prefix=f".{files.stem}.codes-"))
        for i, tile in enumerate(tiles):
            data = store.read(tile, year)
            h, w, _ = data.embeddings.shape
            order, table[i], usable = cluster_order(quantizer, data, nlist)
            cur = store.clustered_file(tile, year)
            if (cur is None or cur[2] != key or not np.array_equal(cur[1], order)
                    or store.clustered_rowof(tile, year) is None):  # older layout: add each pixel's row
                del cur
                store.cluster(tile, year, order, key)
                rewritten += 1
            if f_codes is not None:
                flat = data.embeddings.reshape(h * w, DIMS)
                nu = int(table[i, nlist])
                lst = np.repeat(np.arange(nlist), np.diff(table[i]))
                for s in range(0, nu, BATCH * 4):
                    f_codes.write(encode_rows(pq, cent, flat[order[s:min(nu, s + BATCH * 4)]], lst[s:s + BATCH * 4])
                                  .tobytes())
            mask = usable.reshape(h, w) & region.mask(data.grid)
            if not np.array_equal(mask.ravel(), usable):
                partial.append(tile.name)
            rows, cols = np.nonzero(mask)
            ids = pack_ids(tile.ix, tile.iy, rows, cols)
            bits = np.packbits(mask.ravel()).tobytes()
            f_pix.write(bits)
            pixels[tile.name] = [offset, int(h), int(w), int(len(ids))]
            checks[tile.name] = tile_check(ids, data.embeddings[rows, cols])
            offset += len(bits)
            n += len(ids)
            del data
            if progress:
                progress(1)
        f_pix.flush()
        os.fsync(f_pix.fileno())
        if f_codes is not None:
            f_codes.flush()
            _codes_by_list(f_codes.fileno(), tmp_codes, table, int(pq.M))
        with open(tmp_idx, "wb") as f:
            np.save(f, table)
            f.flush()
            os.fsync(f.fileno())
    return {"shard": files.number, "tiles": list(job.tiles), "n_vectors": int(n), "kind": KIND, "key": key,
            "partial": partial, "clustered": rewritten, "bytes": file_sizes(files), "bytes_resident": int(table.nbytes),
            "codes": int(pq.M) if pq is not None else 0,
            "seconds": round(time.monotonic() - t0, 3), "pixels": pixels, "checks": checks}


# -- searching a shard ---------------------------------------------------------------


class RowCache:
    """The budget of rows of scanned lists that a process keeps in memory (``CACHE_BYTES``
    for all its shards together): a scan reads a list's rows into room it takes here
    (the read it makes anyway) and later scans of that list read nothing, so lists
    probed again and again (queries of one kind of place, a batch, a map's clicks) cost
    their arithmetic alone. First come, first kept; a shard's ``release`` gives its room
    back. The rows are a copy in memory only: the store stays the one copy on disk."""

    def __init__(self, budget: int) -> None:
        self.budget, self.used = int(budget), 0
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> bool:
        with self._lock:
            if nbytes <= 0 or self.used + nbytes > self.budget:
                return False
            self.used += nbytes
            return True

    def give(self, nbytes: int) -> None:
        with self._lock:
            self.used = max(0, self.used - int(nbytes))


ROW_CACHE = RowCache(CACHE_BYTES)


def _room(nbytes: int) -> np.ndarray:
    """``nbytes`` of memory for rows the row cache keeps: anonymous memory the kernel may
    back with 2 MiB pages (``MADV_HUGEPAGE``), where it can, so the scan that first reads
    rows into it takes one page fault per 2 MiB instead of one per 4 KiB."""
    if nbytes >= 2 << 20 and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            room = mmap.mmap(-1, nbytes)
        except OSError:
            return np.empty(nbytes, np.int8)
        try:
            room.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass
        return np.frombuffer(room, np.int8)  # holds the map: unmapped with the last view
    return np.empty(nbytes, np.int8)


def _give_back(held: list) -> None:
    ROW_CACHE.give(held[0])
    held[0] = 0


def _open_fd(arr) -> int:
    """A read-only descriptor of the file a whole-file memory map ``arr`` shows, or -1."""
    name = getattr(arr, "filename", None)
    if not isinstance(arr, np.memmap) or name is None or arr.offset != 0 or not hasattr(os, "pread"):
        return -1
    try:
        return os.open(name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return -1


def gather(fds: np.ndarray, pos: np.ndarray, out: np.ndarray, what: str) -> np.ndarray:
    """``out`` filled with item ``pos[i]`` of the file open as ``fds[i]`` (items of
    ``out``'s row size, counted from byte 0), read with ``pread`` by the kernel (no pages
    mapped); a failed read raises StoreError naming ``what``. Needs the kernel."""
    lib, _ = _kernel()
    fds, pos = np.ascontiguousarray(fds, np.int32), np.ascontiguousarray(pos, np.int64)
    item = out.itemsize * (int(np.prod(out.shape[1:])) if out.ndim > 1 else 1)
    p = ctypes.c_void_p
    e = lib.ts_gather(p(fds.ctypes.data), p(pos.ctypes.data), ctypes.c_int64(len(pos)), ctypes.c_int64(item),
                      p(out.ctypes.data))
    if e < 0:
        raise StoreError(f"reading {what} failed: {os.strerror(-int(e))}")
    return out


def _close_fd(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


class _TileLists:
    """One tile of a shard, opened: its clustered rows and order (memory-mapped, and open
    for ``pread``: scans read through descriptors, so they map no pages), and for a tile
    the region covers only partly, a flag for each row outside it."""

    def __init__(self, rows, order, width: int, tile: Tile, member=None) -> None:
        self.rows, self.order, self.width, self.tile = rows, order, width, tile
        self.skip = None if member is None else np.ascontiguousarray(~member, dtype=np.uint8)
        self.fd, self.order_fd = _open_fd(rows), _open_fd(order)

    def take(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows at sorted positions ``pos`` and their row-major pixel numbers, read
        with ``pread`` where the files are open (no pages mapped), else from the maps."""
        lib, _ = _kernel()
        if lib is None or self.fd < 0 or self.order_fd < 0:
            return np.asarray(self.rows[pos]), np.asarray(self.order[pos]).astype(np.int64)
        what = f"tile {self.tile.name}'s clustered rows"
        rows = gather(np.full(len(pos), self.fd, np.int32), pos, np.empty((len(pos), DIMS), np.int8), what)
        pix = gather(np.full(len(pos), self.order_fd, np.int32), pos, np.empty(len(pos), "<i4"), what)
        return rows, pix.astype(np.int64)

    def __del__(self) -> None:
        for fd in (getattr(self, "fd", -1), getattr(self, "order_fd", -1)):
            _close_fd(fd)


def _all_open(tiles: list[_TileLists]) -> bool:
    """Whether every tile's files are open for the kernel's ``pread`` gathers."""
    return _kernel()[0] is not None and all(t.fd >= 0 and t.order_fd >= 0 for t in tiles)


def _take_pixels(tiles: list[_TileLists], which: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """The row-major pixel numbers of the rows at positions ``pos`` of ``tiles[which]``."""
    if not _all_open(tiles):
        return _take_rows(tiles, which, pos)[1]
    what = "the store's clustered rows"
    return gather(np.array([t.order_fd for t in tiles], np.int32)[which], pos, np.empty(len(pos), "<i4"),
                  what).astype(np.int64)


def _take_rows(tiles: list[_TileLists], which: np.ndarray, pos: np.ndarray, addr: np.ndarray | None = None,
               pixels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows at positions ``pos`` of tiles ``tiles[which]`` and their row-major pixel
    numbers (None without ``pixels``, where the files are open): one ``pread`` gather over
    all the tiles where every file is open (no pages mapped), else tile by tile.
    ``addr``: per row, 0 or where a scan kept it in memory (:meth:`ListShard._kept_at`),
    copied from there instead."""
    lib, _ = _kernel()
    if not _all_open(tiles):
        rows, pix = np.empty((len(pos), DIMS), np.int8), np.empty(len(pos), np.int64)
        for i in np.unique(which):
            at = np.flatnonzero(which == i)
            rows[at], pix[at] = tiles[i].take(pos[at])
        return rows, pix
    what = "the store's clustered rows"
    rows = np.empty((len(pos), DIMS), np.int8)
    read = np.flatnonzero(addr == 0) if addr is not None else slice(None)
    if addr is not None and len(read) < len(pos):
        kept = np.flatnonzero(addr != 0)
        got, at = np.empty((len(kept), DIMS), np.int8), np.ascontiguousarray(addr[kept], np.int64)
        lib.ts_copy(ctypes.c_void_p(at.ctypes.data), ctypes.c_int64(len(kept)),
                    ctypes.c_int64(DIMS), ctypes.c_void_p(got.ctypes.data))
        rows[kept] = got
    if addr is None or len(read):
        rows[read] = gather(np.array([t.fd for t in tiles], np.int32)[which[read]], pos[read],
                            np.empty((len(pos[read]), DIMS), np.int8), what)
    return rows, _take_pixels(tiles, which, pos) if pixels else None


def _positions(rown: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row positions, range index) of ``rown``: row numbers counted over the ranges
    ``[starts[g], ends[g])`` one after another."""
    lens = ends - starts
    cum = np.cumsum(lens)
    seg = np.searchsorted(cum, rown, side="right")
    return starts[seg] + rown - (cum[seg] - lens[seg]), seg


@dataclass
class _Found:
    """A shard's scan for one query: the kernel's scores of the rows it kept (as cosines:
    within ~7e-5 of the exact ones, the query's int16 rounding), their
    positions in their tiles' clustered arrays, those tiles (indices into the shard's
    opened tiles) and the lists they are in."""

    scores: np.ndarray
    pos: np.ndarray
    tile: np.ndarray
    lists: np.ndarray

    @classmethod
    def none(cls) -> _Found:
        return cls(np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))

    def subset(self, keep: np.ndarray) -> _Found:
        return _Found(self.scores[keep], self.pos[keep], self.tile[keep], self.lists[keep])

    def join(self, other: _Found) -> _Found:
        """Both scans' rows (of disjoint lists)."""
        return _Found(*(np.concatenate([a, b]) for a, b in ((self.scores, other.scores), (self.pos, other.pos),
                                                            (self.tile, other.tile), (self.lists, other.lists))))


def select_across(scans: list[list[_Found]], r: int) -> list[list[_Found]]:
    """Of every shard's scans (``scans[shard][query]``), the rows that can be in the
    overall best ``r`` of each query: the kernel's best ``r`` over all the shards and every
    row within ``_TIE`` of the r-th, so only those are read back and scored exactly."""
    out = [list(f) for f in scans]
    for j in range(len(scans[0]) if scans else 0):
        sc = [f[j].scores for f in scans]
        allsc = np.concatenate(sc)
        if len(allsc) > r:
            t = np.float32(np.partition(allsc, len(allsc) - r)[len(allsc) - r]) - np.float32(_TIE)
            for n, f in enumerate(scans):
                out[n][j] = f[j].subset(f[j].scores >= t)
    return out


def scan_rounds(scan: Callable, r: int, lists: np.ndarray, scores: np.ndarray, margin: float | None,
                first: int) -> list[list[_Found]]:
    """The shards' scans (``scan(lists)`` -> ``[shard][query]`` :class:`_Found`, for
    (m, n) lists to probe, -1 for none) of the (m, cap) ``lists`` the quantizer gave, best
    first, whose centroid scores are ``scores``. ``margin`` None: every list, in one
    round. Else the adaptive stop: the first ``first`` lists, then, round after round
    (each as large as all before it), only the next lists whose centroid score plus
    ``margin`` reaches the r-th best row found so far (over all the shards): a list
    whose centroid scores that far below it rarely holds a row above it, and the
    rounds stop where none is left. ``margin`` is tuned at build time to the recall
    target (:func:`tune_lists`)."""
    m, cap = lists.shape
    lists = np.where(scores > -np.inf, lists, -1)  # past the end of a small index
    if margin is None or cap <= first:
        return scan(lists)
    got = scan(np.ascontiguousarray(lists[:, :first]))
    at = np.full(m, first)
    while True:
        grow = int(at.max())
        nxt = np.full((m, grow), -1, np.int64)
        for j in range(m):
            sc = np.concatenate([f[j].scores for f in got])
            kth = np.partition(sc, len(sc) - r)[len(sc) - r] if len(sc) >= r else -np.inf
            rest = scores[j, at[j]:at[j] + grow]
            n = int(np.searchsorted(-(rest + np.float32(margin)), -kth, side="right"))  # rest is best first
            nxt[j, :n] = lists[j, at[j]:at[j] + n]
            at[j] = at[j] + n if n == len(rest) else cap  # a list below the bar: the rest are lower still
        if not np.any(nxt >= 0):
            return got
        more = scan(nxt)
        got = [[a.join(b) for a, b in zip(fa, fb)] for fa, fb in zip(got, more)]


def stop_for(params: dict, k: int) -> tuple[float | None, int, int]:
    """(margin, first, cap) of the adaptive stop (:func:`scan_rounds`) for a search of
    ``k`` with the tuned ``params``, or (None, 0, 0) when the index has none: for k <= 10
    the one tuned for recall@10, from k = 1000 the one tuned for recall@1000 (its lists
    growing with the square root of k beyond, as :func:`probe_for`), between the larger
    of the two."""
    a = (params.get("margin"), int(params.get("first") or 0), int(params.get("cap") or 0))
    b = (params.get("margin10"), int(params.get("first10") or 0), int(params.get("cap10") or 0))
    if k <= 10:
        pick = b
    elif k >= 1000:
        grow = float(np.sqrt(k / 1000))
        pick = (a[0], int(np.ceil(a[1] * grow)), int(np.ceil(a[2] * grow)))
    elif a[0] is None or b[0] is None:
        pick = (None, 0, 0)
    else:
        pick = tuple(max(x, y) for x, y in zip(a, b))
    return (None, 0, 0) if pick[0] is None else (float(pick[0]), max(1, pick[1]), max(1, pick[2]))


def first_pass_for(params: dict, k: int) -> tuple[int, int] | None:
    """(candidates, lists to probe) of the first pass for a search of ``k`` with the tuned
    ``params``, or None where the build kept none (the lists are then scanned exactly):
    for k <= 10 the pair tuned for recall@10, from k = 1000 the one tuned for
    recall@1000 (candidates growing with k beyond, lists with its square root, as
    :func:`probe_for`), between the larger of the two."""
    c1, p1 = params.get("cand"), params.get("cand_nprobe")
    c10, p10 = params.get("cand10"), params.get("cand_nprobe10")
    if k >= 1000 and c1:
        grow = k / 1000
        return max(k, int(np.ceil(c1 * grow))), int(np.ceil(p1 * np.sqrt(grow)))
    if k <= 10 and c10:
        return max(k, int(c10)), int(p10)
    if c1 and c10 and 10 < k < 1000:
        return max(k, int(c10), int(np.ceil(c1 * k / 1000))), max(int(p10), int(p1))
    return None


def search_across(shards: list, q: np.ndarray, r: int, lists: np.ndarray, pool, scores: np.ndarray | None = None,
                  margin: float | None = None, first: int = 0, cand: int | None = None
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every shard's part of the exact best ``r`` for (m, 128) unit queries ``q`` probing
    ``lists`` (m, nprobe), as :meth:`ListShard.search` gives them, but the store's rows are
    read back only for the rows that can be in the overall best ``r``
    (:func:`select_across`), so a k = 1000 search over 7 shards reads 1,000-odd rows, not
    7,000. With ``margin`` (and the lists' centroid ``scores``), the lists are probed in
    rounds that stop early (:func:`scan_rounds`). With ``cand``, the shards' first pass
    (:meth:`ListShard.scan_codes`) gives the best ``cand`` of all the shards by their
    codes, whose rows are then read and scored exactly. An engine runs the same steps
    where its shards are."""
    def scan(ls):
        return list(pool.map(lambda s: s.scan_many(q, ls, r, cand), shards))

    scans = scan_rounds(scan, cand or r, lists, scores if scores is not None else np.zeros(lists.shape, np.float32),
                        None if cand else margin, first)
    kept = select_across(scans, cand or r)
    return list(pool.map(lambda n: shards[n].take_many(q, kept[n], r), range(len(shards))))


class ListShard(Shard):
    """One opened shard of an int8-lists index (see the module docstring): a
    :class:`~.search.Shard` whose :meth:`search` scans the store's clustered rows and
    returns exact cosines (``exact = True``)."""

    exact = True

    def __init__(self, files, info: dict, vectors, trained) -> None:
        import faiss

        self._open_pixels(files, info, vectors, trained)
        self.key = str(info["key"])
        self._partial = set(info.get("partial") or [])
        try:
            self._table = np.load(files.index, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise IndexCorruptError(f"list table {files.index} is unreadable: {exc}; rebuild the index") from exc
        self._quantizer = exact_quantizer(trained)
        self.nlist = int(self._table.shape[1] - 1)
        self._codes = self._open_codes(files, info, trained)
        self._code_at_open: np.ndarray | None = None  # code_offsets of the opened tiles
        self._open: dict[int, _TileLists] = {}
        self._all: tuple | None = None
        self._slot: np.ndarray | None = None  # (tiles, nlist): address of a list's rows in memory, or 0
        self._ready: np.ndarray | None = None  # (tiles, nlist): those rows are read in
        self._blocks: list[np.ndarray] = []  # the memory those addresses are in (ROW_CACHE's)
        self._held = [0]  # bytes of ROW_CACHE's budget those blocks hold (given back when the shard goes)
        weakref.finalize(self, _give_back, self._held)
        self._lock = threading.Lock()
        self._direct = True  # set by _opened

    def _open_codes(self, files, info: dict, trained) -> np.ndarray | None:
        """The shard's first-pass codes ((usable rows of all its tiles, M) uint8,
        memory-mapped), with the codebooks and centroids that score them; None without."""
        m = int(info.get("codes") or 0)
        pq = pq_of(trained) if m else None
        if pq is None:
            return None
        import faiss

        want = int(np.asarray(self._table)[:, -1].sum())
        try:
            size = files.codes.stat().st_size
            codes = (np.memmap(files.codes, np.uint8, "r").reshape(-1, m) if size else np.zeros((0, m), np.uint8))
        except (OSError, ValueError) as exc:
            raise IndexCorruptError(f"first-pass codes {files.codes} are unreadable: {exc}; rebuild the index") from exc
        if len(codes) != want or int(pq.M) != m:
            raise IndexCorruptError(f"first-pass codes {files.codes} hold {len(codes):,} rows of {m} bytes, the "
                                    f"shard has {want:,} rows and the trained codebooks {int(pq.M)} bytes; rebuild "
                                    "the index")
        self._code_at = code_offsets(self._table)
        self._codes_fd = _open_fd(codes) if size else -1  # read with pread: nothing of it mapped
        weakref.finalize(self, _close_fd, self._codes_fd)
        self._pq = faiss.vector_to_array(pq.centroids).reshape(int(pq.M), int(pq.ksub), int(pq.dsub)).astype(np.float32)
        self._cent = np.ascontiguousarray(self._quantizer.reconstruct_n(0, self.nlist), np.float32)
        return codes

    @property
    def has_codes(self) -> bool:
        return self._codes is not None

    def _tile(self, i: int) -> _TileLists:
        got = self._open.get(i)
        if got is not None:
            return got
        with self._lock:
            got = self._open.get(i)
            if got is None:
                name = self.tiles[i]
                tile = Tile.from_name(name)
                store, year = self.store_vectors.store, self.store_vectors.year
                found = store.clustered_file(tile, year)
                if found is None:  # fetched again (plain): put it back in this index's order
                    found = self._recluster(i, tile, store, year)
                if found[2] != self.key:
                    raise IndexCorruptError(
                        f"tile {name} ({year}) in the store was clustered by another index since this one was "
                        "built; rebuild the index with `tessera-search build-index --rebuild` (with the options "
                        "it was built with)")
                rows, order, _ = found
                width = self._layout[name][2]
                member = self._mask(name).ravel()[order] if name in self._partial else None
                got = _TileLists(rows, order, width, tile, member)
                self._open[i] = got
        return got

    def _recluster(self, i: int, tile: Tile, store, year: int):
        """Cluster a tile that is in the plain layout again (a fresh download writes it so)
        in this index's order, provided it holds the vectors the index was built from
        (the manifest's check) and they fall into the same lists; else IndexCorruptError."""
        data = store.read(tile, year)
        order, starts, _ = cluster_order(self._quantizer, data, self.nlist)
        want = self.store_vectors.checks.get(tile.name)
        ok = np.array_equal(starts, np.asarray(self._table[i]))
        if ok and want is not None and want[1]:
            ids = np.asarray(want[1], np.int64)
            r, c = (ids >> 16) & 0xFFFF, ids & 0xFFFF
            ok = tile_check(ids, data.embeddings[r, c])[0] == want[0]
        if not ok:
            raise IndexCorruptError(
                f"tile {tile.name} ({year}) in the store holds other vectors than the index was built from; "
                "rebuild the index with `tessera-search build-index --rebuild` (with the options it was built with)")
        store.cluster(tile, year, order, self.key)
        return store.clustered_file(tile, year)

    def search(self, q: np.ndarray, r: int, nprobe: int | None, lists: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Exact best ``r`` of the probed lists for (m, 128) unit queries: ((m, r') float32
        cosines, (m, r') int64 pixel IDs; -1 pads), r' = min(r, shard size). ``lists``:
        the (m, nprobe) lists to probe, when the caller already asked the quantizer."""
        q = np.ascontiguousarray(q.reshape(-1, DIMS), dtype=np.float32)
        r = int(min(r, self.n_vectors))
        if self.n_vectors == 0 or r <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if lists is None:
            probe = int(max(1, min(nprobe or self.nlist, self.nlist)))
            _, lists = self._quantizer.search(q, probe)
        return self.take_many(q, self.scan_many(q, lists, r), r)

    def _opened(self) -> tuple[list[_TileLists], np.ndarray]:
        """The shard's non-empty tiles, opened, and their (tiles, nlist + 1) list starts."""
        if self._all is None:
            keep = [i for i in range(len(self.tiles)) if self._layout[self.tiles[i]][3] > 0]
            tiles = [self._tile(i) for i in keep]
            table = np.asarray(self._table)[keep] if keep else np.zeros((0, self.nlist + 1), np.int64)
            if self._codes is not None:
                self._code_at_open = self._code_at[keep] if keep else np.zeros((0, self.nlist), np.int64)
            self._slot = np.zeros((len(tiles), self.nlist), np.int64)
            self._ready = np.zeros((len(tiles), self.nlist), np.bool_)
            # every read with pread (nothing mapped, rows kept in the row cache), or through the maps
            self._direct = _all_open(tiles)
            self._all = (tiles, np.ascontiguousarray(table))
        return self._all

    def _slots(self, tile_of: np.ndarray, list_of: np.ndarray, st: np.ndarray, en: np.ndarray, admit: bool = True
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
        """Where a scan of these ranges (list ``list_of[g]`` of tile ``tile_of[g]``) finds
        or keeps their rows in memory: (dests, filled, filling, blocks) for
        :func:`scan_top`: the address of each range's rows (0: not kept), whether they are
        there already, which ranges this scan reads in (room for them was just taken from
        :data:`ROW_CACHE`; marked filled by :meth:`_filled` once the scan has read them),
        and the memory those addresses point into (held by the scan, so a
        :meth:`release` meanwhile frees nothing under it). ``admit``: False keeps no new
        lists (a cold scan waits for the disk; writing its rows into fresh memory as well,
        a page fault per 4 KiB, would only add to that)."""
        with self._lock:
            addr = self._slot[tile_of, list_of]
            filled = self._ready[tile_of, list_of]
            new = addr == 0
            filling = np.zeros(len(addr), np.bool_)
            if admit and new.any():
                size = (en[new] - st[new]) * DIMS
                total = int(size.sum())
                if ROW_CACHE.take(total):
                    self._held[0] += total
                    block = _room(total)
                    self._blocks.append(block)
                    at = block.ctypes.data + np.concatenate([[0], np.cumsum(size)[:-1]])
                    self._slot[tile_of[new], list_of[new]] = at
                    addr = addr.copy()
                    addr[new] = at
                    filling = new
            dests = np.where(filled | filling, addr, 0)
            return dests, filled, filling, list(self._blocks)

    def _kept_at(self, which: np.ndarray, lst: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray | None, list]:
        """Where rows ``pos`` (in lists ``lst``) of opened tiles ``which`` are kept in
        memory by a scan (0: not kept), and the blocks holding them (None, [] when nothing
        is kept)."""
        with self._lock:
            if not self._blocks or self._ready is None:
                return None, []
            table = self._all[1]  # opened (by the caller's scan)
            ok = self._ready[which, lst]
            addr = np.where(ok, self._slot[which, lst] + (pos - table[which, lst]) * DIMS, 0)
            return addr, list(self._blocks)

    def _filled(self, tile_of: np.ndarray, list_of: np.ndarray, filling: np.ndarray, dests: np.ndarray) -> None:
        with self._lock:  # only the slots still theirs (a release meanwhile took them back)
            t, l = tile_of[filling], list_of[filling]
            ours = self._slot[t, l] == dests[filling]
            self._ready[t[ours], l[ours]] = True

    def release(self) -> None:
        """Unmap the store pages the shard's reads mapped (they stay in the page cache)
        and drop the rows its scans kept in memory (the next scans read them again)."""
        with self._lock:
            self._unmap()
            _give_back(self._held)
            self._blocks = []
            if self._slot is not None:
                self._slot[:] = 0
                self._ready[:] = False

    def _unmap(self) -> None:
        for t in list(self._open.values()):
            release_pages(t.rows)
            release_pages(t.order)
        if self._codes is not None:
            release_pages(self._codes)
        with _map_lock:
            _MAPPING.discard(self)

    def _mapping(self) -> None:
        """Note that a read of this shard is about to go through its maps (see :func:`_bound_maps`)."""
        with _map_lock:
            if not _MAPPING:
                _floor[0] = mapped_bytes(0)
            _MAPPING.add(self)

    def _ranges(self, lists: np.ndarray):
        """The opened tiles, and the non-empty row ranges of ``lists`` in them: (starts,
        ends, tile, list) per range, each tile's in file order."""
        tiles, table = self._opened()
        lists = np.sort(lists)
        st, en = table[:, lists].ravel(), table[:, lists + 1].ravel()
        tile_of = np.repeat(np.arange(len(tiles)), len(lists))
        list_of = np.tile(lists, len(tiles))
        keep = en > st
        return tiles, st[keep], en[keep], tile_of[keep], list_of[keep]

    def scan_codes(self, q: np.ndarray, lists: np.ndarray, cand: int) -> _Found:
        """The first pass: the ``cand`` rows of the probed ``lists`` whose PQ codes
        estimate the highest cosine with unit query ``q`` (scores: the estimates; the
        exact order is settled by :meth:`take`, which reads their rows)."""
        tiles, st, en, tile_of, list_of = self._ranges(lists)
        total = int(np.sum(en - st))
        if not tiles or total == 0:
            return _Found.none()
        by = np.lexsort((tile_of, list_of))  # list by list, as the codes lie
        st, en, tile_of, list_of = st[by], en[by], tile_of[by], list_of[by]
        at = self._code_at_open[tile_of, list_of]
        q = np.asarray(q, np.float32).reshape(-1)
        m, _, dsub = self._pq.shape
        lut = np.ascontiguousarray(np.einsum("md,mkd->mk", q.reshape(m, dsub), self._pq), np.float32)
        ul = np.unique(list_of)
        bias = np.ascontiguousarray((self._cent[ul] @ q)[np.searchsorted(ul, list_of)], np.float32)
        skips = [t.skip for t in tiles] if any(t.skip is not None for t in tiles) else None
        codes = self._codes
        prefetch([codes], np.zeros(len(at), np.int64), at, at + en - st)  # cold: wait for the disk once
        fd = self._codes_fd if _kernel()[0] is not None else -1
        if fd < 0:  # without a descriptor the codes are read through their map
            self._mapping()
        sc, rown = _adc_parallel([codes], tile_of, st, en, bias, lut, min(int(cand), total), skips, at=at, fd=fd)
        pos, seg = _positions(rown, st, en)
        return _Found(sc, pos, tile_of[seg], list_of[seg])

    def scan(self, q: np.ndarray, lists: np.ndarray, r: int, cand: int | None = None) -> _Found:
        """The kernel's best ``r`` rows of the probed ``lists`` for unit query ``q``, and
        every row within ``_TIE`` of the r-th (their exact order is settled by
        :meth:`take`). ``cand``: with first-pass codes, the best ``cand`` by them instead
        (:meth:`scan_codes`)."""
        if cand is not None and self._codes is not None:
            return self.scan_codes(q, lists, cand)
        tiles, table = self._opened()
        if not tiles or not len(lists):
            return _Found.none()
        q16 = query16(q)
        lists = np.sort(lists)  # each tile's ranges in file order
        st, en = table[:, lists].ravel(), table[:, lists + 1].ravel()
        tile_of = np.repeat(np.arange(len(tiles)), len(lists))
        list_of = np.tile(lists, len(tiles))
        keep = en > st
        st, en, tile_of, list_of = st[keep], en[keep], tile_of[keep], list_of[keep]
        total = int(np.sum(en - st))
        if total == 0:
            return _Found.none()
        want = min(r, total)
        cap = want + 64 + want // 4
        rows = [t.rows for t in tiles]
        fds = [t.fd for t in tiles]
        skips = [t.skip for t in tiles] if any(t.skip is not None for t in tiles) else None
        # Cold: every range read ahead at once. Not the order files' ranges: those are a
        # page read for each range where the kept rows need about one each (take reads them).
        cold = prefetch(rows, tile_of, st, en) > 0
        kept = self._direct
        dests, filled, filling, _blocks = (self._slots(tile_of, list_of, st, en, admit=not cold) if kept
                                           else (None, None, None, []))
        through = kept and MAP_MISSES and not cold and bool(np.any(dests == 0))
        if not kept or through:
            self._mapping()
        per_cos = _Q16 / (float(np.abs(np.asarray(q, np.float32)).max()) or 1.0)  # kernel units per unit of cosine
        while True:  # rows outside the region (partly covered tiles) score -inf in the kernel
            sc, rown, found = _scan_parallel(rows, tile_of, st, en, q16, want, _TIE * per_cos, cap, skips, fds,
                                             dests, filled, through, release_maps=not kept or through)
            if filling is not None and filling.any():  # read in now: a second pass reads nothing
                self._filled(tile_of, list_of, filling, dests)
                filled, filling = filled | filling, None
            if found <= cap:
                break
            cap = found  # more rows tie within the band at the cut than room was kept for
        if not kept or through:
            _bound_maps()  # after each shard's scan: one query maps ~64 KiB a list and tile
        pos, seg = _positions(rown, st, en)
        return _Found((sc / np.float32(per_cos)).astype(np.float32), pos, tile_of[seg], list_of[seg])

    def scan_many(self, q: np.ndarray, lists: np.ndarray, r: int, cand: int | None = None) -> list[_Found]:
        """:meth:`scan` for each of (m, 128) unit queries ``q``, probing ``lists[j]``."""
        r = int(min(r, self.n_vectors))
        return [self.scan(q[j], lists[j][lists[j] >= 0], r, cand) for j in range(len(q))]

    def take_many(self, q: np.ndarray, found: list[_Found], r: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`take` for each query: ((m, r') float32 cosines, (m, r') int64 pixel IDs;
        -1 pads), r' = min(r, shard size), as :meth:`search` returns them."""
        r = int(min(r, self.n_vectors))
        scores = np.full((len(q), r), -np.inf, np.float32)
        ids = np.full((len(q), r), -1, np.int64)
        for j in range(len(q)):
            s, i = self.take(q[j], found[j], r)
            scores[j, :len(s)], ids[j, :len(s)] = s, i
            _bound_maps()  # after each query: a batch must not map the whole store
        return scores, ids

    def take(self, q: np.ndarray, found: _Found, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact cosines and pixel IDs of the best ``r`` rows of ``found``, read from the store."""
        pos, which, lst = found.pos, found.tile, found.lists
        if not len(pos):
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        tiles, _ = self._opened()
        if not self._direct:
            self._mapping()
        many = len(pos) > 2 * r  # a first pass's candidates: most are not kept
        if not many:
            prefetch([t.order for t in tiles], which, pos, pos + 1)  # the kept rows' pixels, cold or not
        prefetch([t.rows for t in tiles], which, pos, pos + 1)  # and the rows: a first pass read none of them
        by = np.lexsort((pos, which))  # tile by tile, in file order
        pos, which, lst = pos[by], which[by], lst[by]
        addr, _blocks = self._kept_at(which, lst, pos)  # the blocks stay alive while the rows are copied
        x, flat = _take_rows(tiles, which, pos, addr, pixels=not many)
        sims = exact_cosine(q, x)
        if flat is None:  # the pixels of the best r only (with every tie at the r-th: IDs break them)
            if len(sims) > r:
                keep = np.flatnonzero(sims >= np.partition(sims, len(sims) - r)[len(sims) - r])
                sims, pos, which = sims[keep], pos[keep], which[keep]
            prefetch([t.order for t in tiles], which, pos, pos + 1)
            flat = _take_pixels(tiles, which, pos)
        ix = np.array([t.tile.ix for t in tiles], np.int64)[which]
        iy = np.array([t.tile.iy for t in tiles], np.int64)[which]
        width = np.array([t.width for t in tiles], np.int64)[which]
        ids = pack_ids(ix, iy, flat // width, flat % width)
        best = top_k(ids, sims, r)
        return sims[best].astype(np.float32), ids[best]


_map_lock = threading.Lock()
_MAPPING: weakref.WeakSet = weakref.WeakSet()  # shards read through their maps since the last release
_floor = [0]  # file pages this process mapped before them (libraries are file pages too)


def _bound_maps() -> None:
    """Unmap every shard's store pages (they stay in the page cache) once the file pages
    this process maps pass ``MAX_MAPPED`` beyond what it mapped before the shards' reads,
    as :class:`~.rerank.StoreVectors` does; the row cache (not file pages) stays. One bound
    for all shards: each query maps a little of every shard. Only reads through the maps
    map pages (``pread``, ``mincore`` and ``madvise`` map none), so without them this is
    free."""
    with _map_lock:
        if not _MAPPING or mapped_bytes(_floor[0] + MAX_MAPPED + 1) - _floor[0] <= MAX_MAPPED:
            return
        shards = list(_MAPPING)
    for shard in shards:
        shard._unmap()


# -- tuning --------------------------------------------------------------------------


MARGIN = 0.005  # at least this far above the targets, so that fresh queries meet them too


def _sure(recalls: list[float], target: float) -> bool:
    """Whether the mean of per-query ``recalls`` clears ``target`` by MARGIN and by two
    standard errors (a fresh draw of queries then meets it too, nearly always)."""
    r = np.asarray(recalls, float)
    if r.mean() >= 1.0:
        return True
    se = r.std(ddof=1) / np.sqrt(len(r)) if len(r) > 1 else 0.0
    return bool(r.mean() >= min(1.0, target + max(MARGIN, 2 * se)))


def _probes(nlist: int) -> list[int]:
    out, p = [], max(1, nlist // 512)
    while p < nlist:
        out.append(p)
        p = int(np.ceil(p * 1.2)) if p >= 8 else p + 1 if p < 4 else p * 2
    return out + [nlist]


def probe_for(params: dict, k: int) -> int:
    """Lists probed for a search of ``k`` with the tuned ``params``: the count tuned for
    recall@10 (``nprobe10``) up to k = 10, the one tuned for recall@1000 (``nprobe``)
    from k = 1000, growing with the square root of k beyond (a larger k reaches into more
    lists), and the larger of the two between (neither is known to hold there: an index
    whose lists are small can meet recall@1000 at fewer lists than recall@100 needs, as a
    search probes more lists until it has k rows). So k = 1000 is not made to probe what
    recall@10 needed, nor k = 10 what recall@1000 needed."""
    p1000 = int(params.get("nprobe", 16))
    p10 = int(params.get("nprobe10") or p1000)
    if k <= 10:
        return p10
    if k >= 1000:
        return int(np.ceil(p1000 * np.sqrt(k / 1000)))
    return max(p10, p1000)


def tune_lists(index, q: np.ndarray, truth: np.ndarray, target_recall: float, recall10: float) -> dict:
    """The fewest lists to probe for recall@1000 >= ``target_recall`` at k = 1000
    (``nprobe``) and for recall@10 >= ``recall10`` at k = 10 (``nprobe10``), each with
    room to spare (:func:`_sure`), measured on the sample queries ``q`` against their exact
    ``truth`` (recall only grows with the lists probed: the scan is exact). A result counts
    as a true neighbour when it is as similar as the k-th one: ties are interchangeable."""
    k = min(1000, truth.shape[1])
    nlist = int(index.params["nlist"])
    # A result counts when it is as similar as the k-th true neighbour (to 1e-6): pixels
    # tied with it are interchangeable, whichever float rounding broke the tie.
    kth = np.array([exact_cosine(qj, index.vectors.read(truth[j, [k - 1, min(9, k - 1)]]))
                    for j, qj in enumerate(q)]) - 1e-6
    tried, n1000, n10 = [], None, None
    for probe in _probes(nlist):
        lat, lat10, r1000, r10 = [], [], [], []
        for j in range(len(q)):
            t0 = time.perf_counter()
            res = index.search(q[j], k=k, nprobe=probe)
            lat.append(time.perf_counter() - t0)
            r1000.append(float(np.sum(res.similarity >= kth[j, 0])) / k)
            t0 = time.perf_counter()
            small = index.search(q[j], k=10, nprobe=probe)
            lat10.append(time.perf_counter() - t0)
            r10.append(float(np.sum(small.similarity >= kth[j, 1])) / min(10, k))
        m = {"nprobe": probe, "recall1000": float(np.mean(r1000)), "recall10": float(np.mean(r10)),
             "median_s": float(np.median(lat)), "median10_s": float(np.median(lat10))}
        tried.append(m)
        if n1000 is None and _sure(r1000, target_recall):
            n1000 = m
        if n10 is None and _sure(r10, recall10):
            n10 = m
        if n1000 is not None and n10 is not None:
            break
    last = tried[-1]
    n1000, n10 = n1000 or last, n10 or last
    at = max(n1000, n10, key=lambda m: m["nprobe"])
    out = {"target_recall": float(target_recall), "kind": KIND, "nprobe": int(n1000["nprobe"]),
           "nprobe10": int(n10["nprobe"]), "recall1000": at["recall1000"], "recall10": at["recall10"],
           "median_s": at["median_s"], "median10_s": at["median10_s"], "n_queries": int(len(q)),
           "reached": bool(at["recall1000"] >= target_recall and at["recall10"] >= recall10), "tried": tried}
    # The adaptive stop, for each target where it is surely as good and faster than the fixed count.
    out["stop_tried"] = []
    for k_, fixed, target, suffix, col, base in ((k, n1000, target_recall, "", 0, n1000["median_s"]),
                                                  (min(10, k), n10, recall10, "10", 1, n10["median10_s"])):
        got = _tune_stop(index, q, kth[:, col], k_, int(fixed["nprobe"]), nlist, target, suffix)
        out["stop_tried"] += got["tried"]
        if got["pick"] is not None and got["pick"]["median_s"] < _FASTER * base:
            out.update({f"margin{suffix}": got["pick"]["margin"], f"first{suffix}": got["pick"]["first"],
                        f"cap{suffix}": got["pick"]["cap"]})
    # The first pass, for each target where it is surely as good and faster than the best so far.
    if codes_m(index.params.get("factory")):
        out["codes_tried"] = []
        for k_, fixed, target, suffix, col, base in ((k, n1000, target_recall, "", 0, n1000["median_s"]),
                                                      (min(10, k), n10, recall10, "10", 1, n10["median10_s"])):
            stop = [m for m in out["stop_tried"] if m["k"] == k_ and out.get("margin" + suffix) == m["margin"]]
            best = min([base] + [m["median_s"] for m in stop[-1:]])
            got = _tune_codes(index, q, kth[:, col], k_, int(fixed["nprobe"]), nlist, target, suffix, best)
            out["codes_tried"] += got["tried"]
            if got["pick"] is not None:
                out.update({f"cand{suffix}": got["pick"]["cand"], f"cand_nprobe{suffix}": got["pick"]["nprobe"]})
    return out


CAND_FACTORS = (1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32)  # first-pass candidates tried, in max(k, 100)s


def _tune_codes(index, q: np.ndarray, kth: np.ndarray, k: int, fixed: int, nlist: int, target: float,
                suffix: str, best: float) -> dict:
    """The fastest first pass (lists to probe, candidates re-ranked) that surely reaches
    ``target`` recall@k on the sample queries ``q`` (true neighbours: as similar as
    ``kth``): for the ``fixed`` lists the exact scan needed and the next two counts of
    :func:`_probes` (the codes' estimates lose a little of what the lists hold, which
    more lists or more candidates win back), the fewest candidates of
    :data:`CAND_FACTORS` that reach it; a count is left as soon as it is not
    ``_FASTER`` times ``best`` (the search without the first pass), which no more
    candidates would mend."""
    probes = [p for p in _probes(nlist) if p >= fixed][:3]
    tried: list[dict] = []
    keys = ("cand" + suffix, "cand_nprobe" + suffix)
    with _trying(index.params, keys):
        for probe in probes:
            for f in CAND_FACTORS:
                cand = int(np.ceil(max(k, 100) * f))
                index.params.update({keys[0]: cand, keys[1]: probe})
                lat, rec = _measure(index, q, kth, k)
                m = {"k": k, "nprobe": probe, "cand": cand, "recall": float(np.mean(rec)),
                     "median_s": float(np.median(lat)), "sure": _sure(rec, target)}
                tried.append(m)
                if m["sure"] or m["median_s"] >= _FASTER * best:  # more candidates only cost more
                    break
        ok = [m for m in tried if m["sure"] and m["median_s"] < _FASTER * best]
        return {"pick": min(ok, key=lambda m: m["median_s"]) if ok else None, "tried": tried}


def _measure(index, q: np.ndarray, kth: np.ndarray, k: int) -> tuple[list[float], list[float]]:
    """Each sample query's latency and recall@k at the index's current parameters (a
    result counts when it is as similar as the k-th true neighbour, ``kth``)."""
    lat, rec = [], []
    for j in range(len(q)):
        t0 = time.perf_counter()
        res = index.search(q[j], k=k)
        lat.append(time.perf_counter() - t0)
        rec.append(float(np.sum(res.similarity >= kth[j])) / k)
    return lat, rec


@contextlib.contextmanager
def _trying(params: dict, keys) -> Iterator[None]:
    """Let a tuning set ``params[keys]`` to what it tries; put back what was there after."""
    saved = {key: params.get(key) for key in keys}
    try:
        yield
    finally:
        for key, v in saved.items():
            if v is None:
                params.pop(key, None)
            else:
                params[key] = v


MARGINS = (0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.08)  # tried in turn: recall grows with the margin
_FASTER = 0.9  # the adaptive stop is kept only when its median latency is at most this times the fixed count's


def _tune_stop(index, q: np.ndarray, kth: np.ndarray, k: int, fixed: int, nlist: int, target: float,
               suffix: str) -> dict:
    """The smallest margin of :data:`MARGINS` whose adaptive stop (:func:`scan_rounds`:
    the first quarter of the ``fixed`` lists tuned for this ``k``, then rounds up to
    twice them) surely reaches ``target`` recall@k on the sample queries ``q`` (true
    neighbours: as similar as ``kth``), with its median latency; pick None when none does
    or the stop cannot skip anything (the fixed count is a single list or all of them)."""
    first, cap = max(1, -(-fixed // 4)), min(nlist, 2 * fixed)
    tried: list[dict] = []
    if cap <= first:
        return {"pick": None, "tried": tried}
    with _trying(index.params, ("margin" + suffix, "first" + suffix, "cap" + suffix)):
        for margin in MARGINS:
            index.params.update({"margin" + suffix: margin, "first" + suffix: first, "cap" + suffix: cap})
            lat, rec = _measure(index, q, kth, k)
            m = {"k": k, "margin": margin, "first": first, "cap": cap, "recall": float(np.mean(rec)),
                 "median_s": float(np.median(lat))}
            tried.append(m)
            if _sure(rec, target):
                return {"pick": m, "tried": tried}
        return {"pick": None, "tried": tried}
