"""Index parameters: the faiss factory string and search defaults for a size and a
memory budget (:func:`choose_params`), memory sizes (:func:`parse_size`), and empty
faiss indexes of a factory (:func:`new_index`)."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from ..errors import InvalidInputError
from .shards import DIMS

__all__ = ["DEFAULT_MAX_MEMORY", "IndexParams", "bytes_per_vector", "choose_params",
           "new_index", "parse_size"]

DEFAULT_MAX_MEMORY = 2 << 30
# From this many lists the coarse quantizer is an HNSW graph over the centroids: assigning
# a vector then costs about log(nlist) distance computations instead of nlist.
HNSW_MIN_LISTS = 4096
# The first pass (``Int8,PQ16``: each row's 16-byte PQ code of its residual, scanned before
# the rows) is not a default at any size: on the product's landscape at 100 M pixels its
# estimates held 58 % of the exact top 1000 in 12,000 candidates (docs/benchmarks.md), so
# the build's tuning never kept it and it cost 16 bytes a pixel for nothing. A factory
# asks for it where codes separate the neighbours better.
SEED = 1234
_IVF_RE = re.compile(r"IVF(\d+)")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class IndexParams:
    """How an index is built and searched by default.

    factory: faiss factory string (inner-product metric); nlist: IVF lists (None for a
    non-IVF factory); train_size: training vectors; nprobe: default lists probed per
    query (raised automatically when k needs more candidates); refine_factor: the search
    over-fetches ``refine_factor * k`` candidates and re-ranks them exactly; seed: the
    sample and k-means seed.
    """

    factory: str
    nlist: int | None
    train_size: int
    nprobe: int
    refine_factor: int
    seed: int = SEED

    def to_json(self) -> dict:
        return asdict(self)


def parse_size(size: int | str) -> int:
    """Bytes from an int or text such as ``"2GiB"``, ``"512M"``, ``"1.5 GB"`` (binary units)."""
    if isinstance(size, int):
        value = size
    else:
        m = _SIZE_RE.match(str(size))
        if not m:
            raise InvalidInputError(f"{size!r} is not a size; use e.g. 512MiB, 2GiB or a number of bytes")
        value = int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " "))
    if value <= 0:
        raise InvalidInputError(f"a size must be positive, got {size!r}")
    return value


def choose_params(n_vectors: int, factory: str | None = None, max_memory: int | str = DEFAULT_MAX_MEMORY,
                  gpu: bool | None = None) -> IndexParams:
    """Parameters for an index of ``n_vectors`` (documented in ``docs/index.md``).

    - nlist: the power of two nearest sqrt(n), at most n / 39 (faiss' minimum of 39
      training points per centroid) and 65536;
    - coarse quantizer: from 4096 lists an HNSW graph over the centroids
      (``IVFn_HNSW32``), so assigning a vector does not cost nlist dot products;
    - lists: ``Int8`` (:mod:`.lists`): the lists are the store's own int8 rows, which the
      build clusters in list order, scanned exactly by a compiled kernel. No codes and no
      second copy: the index adds its list table (8 bytes per list per tile) to the
      store, and recall depends only on the lists probed, which the build tunes
      (:mod:`.tune`). With a GPU (``gpu``, default: whether faiss sees one) the index is
      faiss' GPU IVF-PQ instead (``IVFn,PQ8``: 8-byte codes, re-ranked exactly from the
      store). Any faiss factory string still builds a faiss index (PQ codes re-ranked
      from the store, e.g. ``IVF4096_HNSW32,PQ16x4fsr``);
    - first pass: only when the factory asks (``...,Int8,PQ16``): a 16-byte PQ code a row
      (16 bytes a pixel more on disk), which a search scans first, re-ranking its best
      candidates from the store (:mod:`.lists`); the build keeps it only where it is
      faster at the recall target;
    - training sample: 64 per list, at least 65536 and at most 2 M vectors (or all of
      them), and at most a quarter of ``max_memory`` as float32;
    - nprobe: nlist / 128, at least 16: the floor; a search probes enough lists to hold
      ``list_factor`` times its candidates; refine_factor 10 until the build tunes it.
    ``factory`` overrides the index type (any faiss factory string; nlist read from it).
    """
    n = max(int(n_vectors), 1)
    budget = parse_size(max_memory)
    if factory is None:
        nlist = 2 ** round(math.log2(math.sqrt(n)))
        nlist = int(max(1, min(nlist, n // 39, 65536)))
        if gpu is None:
            from .gpu import gpu_count

            gpu = gpu_count() > 0
        coarse = f"IVF{nlist}_HNSW32" if nlist >= HNSW_MIN_LISTS else f"IVF{nlist}"
        factory = f"IVF{nlist},PQ8" if gpu else f"{coarse},Int8"
    else:
        factory = factory.strip()
        m = _IVF_RE.search(factory)
        nlist = int(m.group(1)) if m else None
    lists = nlist or 1
    train_size = min(n, max(65536, 64 * lists), 2_000_000, max(1, budget // 4 // (DIMS * 4)))
    nprobe = min(lists, max(16, lists // 128))
    return IndexParams(factory=factory, nlist=nlist, train_size=int(train_size), nprobe=int(nprobe), refine_factor=10)


def new_index(factory: str):
    """An untrained index for ``factory`` with the inner-product metric and 64-bit IDs."""
    import faiss

    from .lists import faiss_factory, is_lists_factory

    try:
        # An int8-lists index trains only its coarse quantizer: an IVF-Flat that is never added to.
        index = faiss.index_factory(DIMS, faiss_factory(factory) if is_lists_factory(factory) else factory,
                                    faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise InvalidInputError(f"faiss cannot build the factory string {factory!r}: {str(exc).strip().splitlines()[-1]}") from exc
    # Polysemous training only reorders codes for Hamming pre-filtering, which we never
    # use, and costs most of PQ training time (5.6 s of 5.9 s for PQ32x4 on 3,600 vectors).
    sub = faiss.try_extract_index_ivf(index) or index
    sub = faiss.downcast_index(sub) if hasattr(faiss, "downcast_index") else sub
    if hasattr(sub, "do_polysemous_training"):
        sub.do_polysemous_training = False
    if faiss.try_extract_index_ivf(index) is None and not isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        index = faiss.IndexIDMap2(index)  # flat, HNSW, PQ...: IDs kept beside the codes
    return index


def bytes_per_vector(index, factory: str | None = None) -> int:
    """Resident bytes per added vector: codes plus the 8-byte ID (an int8-lists
    ``factory``: its list table holds nothing per vector; count 1)."""
    import faiss

    from .lists import is_lists_factory

    if is_lists_factory(factory):
        return 1
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return int(ivf.code_size) + 8
    return int(index.sa_code_size()) + 8 if hasattr(index, "sa_code_size") else DIMS * 4 + 8
