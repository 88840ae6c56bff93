"""GPU use, guarded: faiss on a GPU when it sees one, the same code on CPU otherwise.

Everything here asks :func:`gpu_count` first, because moving an index to "all GPUs" on a
machine without one aborts the process on the first search (faiss-gpu wheels also run
on CPU-only machines). faiss' GPU search handles k and nprobe up to
:data:`GPU_MAX_K` (more only with cuVS); a search beyond that runs on the CPU copy of
the same index, so results do not depend on where they were computed beyond float
rounding, which the exact re-rank removes.
"""

from __future__ import annotations

import threading

__all__ = ["GPU_MAX_K", "gpu_count", "search_index", "to_gpu", "train_index"]

GPU_MAX_K = 2048

_resources = None
_lock = threading.Lock()


def gpu_count() -> int:
    """Number of GPUs faiss can use (0 with faiss-cpu or without a device)."""
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    if get is None:
        return 0
    try:
        return int(get())
    except RuntimeError:  # a broken CUDA install reads as "no GPU"
        return 0


def _gpu_resources():
    global _resources
    import faiss

    with _lock:
        if _resources is None:
            _resources = faiss.StandardGpuResources()
        return _resources


def to_gpu(index):
    """A GPU copy of ``index`` for search, or None (no GPU, or a type faiss-gpu lacks)."""
    if gpu_count() == 0:
        return None
    import faiss

    try:
        return faiss.index_cpu_to_gpu(_gpu_resources(), 0, index)
    except (RuntimeError, AttributeError):  # e.g. fast-scan IVF has no GPU implementation
        return None


def train_index(index, x) -> None:
    """Train ``index`` on (n, d) float32 ``x``; IVF coarse k-means runs on the GPU when present."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and gpu_count() > 0:
        try:
            flat = faiss.IndexFlatL2(ivf.d) if ivf.metric_type == faiss.METRIC_L2 else faiss.IndexFlatIP(ivf.d)
            ivf.clustering_index = faiss.index_cpu_to_gpu(_gpu_resources(), 0, flat)
        except RuntimeError:
            ivf.clustering_index = None
    index.train(x)
    if ivf is not None:
        ivf.clustering_index = None  # never serialised with the trained index


def search_index(cpu_index, gpu_index, x, k: int, nprobe: int | None):
    """Search on ``gpu_index`` when given and k, nprobe fit its limit; else on ``cpu_index``."""
    import faiss

    if gpu_index is not None and k <= GPU_MAX_K and (nprobe is None or nprobe <= GPU_MAX_K):
        if nprobe is not None:
            faiss.GpuParameterSpace().set_index_parameter(gpu_index, "nprobe", nprobe)
        return gpu_index.search(x, k)
    if nprobe is not None and faiss.try_extract_index_ivf(cpu_index) is not None:
        # Per-call parameters: shards may be searched from several threads at once.
        return cpu_index.search(x, k, params=faiss.SearchParametersIVF(nprobe=int(nprobe)))
    return cpu_index.search(x, k)
