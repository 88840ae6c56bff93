"""Index parameters: the faiss factory string and search defaults for a size and a
memory budget (:func:`choose_params`), memory sizes (:func:`parse_size`), and empty
faiss indexes of a factory (:func:`new_index`)."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from ..errors import InvalidInputError
from .shards import DIMS

__all__ = ["DEFAULT_MAX_MEMORY", "FAST_SCAN_MAX_VECTORS", "IndexParams", "bytes_per_vector", "choose_params",
           "new_index", "parse_size"]

DEFAULT_MAX_MEMORY = 2 << 30
# Up to this many vectors the default lists are fast-scan (held in RAM, 16 bytes each:
# 1.8 GiB at 120 M); beyond, plain PQ lists that faiss memory-maps.
FAST_SCAN_MAX_VECTORS = 120_000_000
# From this many lists the coarse quantizer is an HNSW graph over the centroids: assigning
# a vector then costs about log(nlist) distance computations instead of nlist.
HNSW_MIN_LISTS = 4096
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
    - codes: 16 sub-quantizers of 8 dimensions with 16 centroids each (4-bit PQ): 8
      bytes, so codes + IDs take 16 bytes per vector, which keeps the whole workspace
      (store + index) under 170 bytes per pixel with the one int8 copy in the store. Up
      to 120 M vectors the lists are fast-scan (``PQ16x4fsr``, residual): SIMD scanning,
      held in RAM (1.6 GB at 100 M). Above that, plain ``PQ16x4``, whose lists faiss
      memory-maps, so an index larger than RAM still opens. With a GPU (``gpu``,
      default: whether faiss sees one) the codes are ``PQ8`` (8-bit, the same 8 bytes),
      which faiss' GPU IVF-PQ supports and 4-bit PQ is not. Exact re-ranking from the
      stored int8 vectors restores the recall PQ alone lacks; how many candidates it
      takes is tuned per index at build time (:mod:`.tune`);
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
        if gpu:
            factory = f"IVF{nlist},PQ8"
        elif n <= FAST_SCAN_MAX_VECTORS:
            factory = f"{coarse},PQ16x4fsr"
        else:
            factory = f"{coarse},PQ16x4"
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

    try:
        index = faiss.index_factory(DIMS, factory, faiss.METRIC_INNER_PRODUCT)
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


def bytes_per_vector(index) -> int:
    """Resident bytes per added vector: codes plus the 8-byte ID."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return int(ivf.code_size) + 8
    return int(index.sa_code_size()) + 8 if hasattr(index, "sa_code_size") else DIMS * 4 + 8
