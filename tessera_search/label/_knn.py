"""The exact cosine kNN engine behind few-shot labelling: :class:`KNNClassifier`.

Similarity is cosine, as everywhere in tessera-search. Because the scale is per pixel,
the cosine of two int8 vectors equals that of their dequantized embeddings, so pixels are
read as int8 and never dequantized. For pixel ``x`` and examples ``e_j`` (unit vectors)::

    cos_j(x) = (x . e_j) / |x|            d_j(x) = 1 - cos_j(x)   (clipped to [0, 2])

The ``k`` examples with the smallest ``d`` vote (ties between equal distances: the
example listed first). ``weights="uniform"`` gives each a vote of 1; ``"distance"``
a vote of ``1 / d``, except that when any neighbour is at distance 0 only the neighbours
at distance 0 vote, with 1 each (scikit-learn's rule). The class with the largest total
wins; a tie goes to the class that sorts first (scikit-learn's argmax over sorted
classes). **Confidence** is the winner's share of the votes. Classes sort numerically
when every class name is an integer (``1100000000`` after ``200``), else as text, and
class codes in maps are ``1, 2, ...`` in that order (0 is nodata).

Top-k is exact. For int8 pixels and int8 examples (what the store holds), the scores are
exact integers: ``x . e_j`` in int32 (torch's int8 matrix product, or a float32 product
of int8 values, which is exact below 2**24). Each score ``(x . e_j) / |e_j|`` becomes a
sortable int32 key, its fixed-point value in the high bits and the column in the low
bits, and one vectorised row sort (NumPy's SIMD sort) gives the top k with their columns.
A row whose k-th and (k+1)-th keys are within one fixed-point step is redone in float64,
so the set of neighbours is that of exact arithmetic. Float inputs take a float32 product
and ``k`` row-wise argmax passes. On a GPU (:class:`_DeviceTopK`), float64 products of
int8 values are exact too, and ``torch.topk`` picks the neighbours.

Backends
--------
``KNNClassifier(backend=...)`` picks how int8 pixels against int8 examples (at most
4,096 of them) are scored; other inputs always take NumPy's float32 product. All give
the same neighbours and predictions.

- ``"numpy"``: a float32 product of the int8 values.
- ``"torch"``: torch's int8 matrix product on the CPU (needs torch with ``_int_mm``).
- ``"cuda"``: float64 products and ``torch.topk`` on torch's CUDA device.
- ``"auto"`` (default): when torch is installed and has its int8 product, ``"cuda"`` if
  it sees a GPU, else ``"torch"``; otherwise ``"numpy"``. A job of fewer than 32,768
  pixels uses NumPy unless torch is already imported (importing torch costs a second).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import InvalidInputError, MissingDependencyError

__all__ = ["BACKENDS", "WEIGHTS", "KNNClassifier", "sort_classes"]

BACKENDS = ("auto", "numpy", "torch", "cuda")
WEIGHTS = ("uniform", "distance")
BLOCK_ROWS = 32768  # pixels per matrix product: bounds temporary memory (~25 MB)
_ARGMAX_K = 16  # up to this k, k argmax passes beat argpartition
_KEY_ROWS = 4096  # pixels per block of the int8 path: its buffers stay in cache (measured best)
_KEY_BITS = 20  # |x . e| / |e| <= |x| <= 128 * sqrt(128) < 2**11: keys of 11 + 20 bits fit int32
_KEY_MAX_EXAMPLES = 4096  # column bits beyond this leave too coarse a fixed-point step
_DEVICE_ROWS = 1 << 18  # pixels per block on a GPU
_TORCH_INSTALL = "`pip install torch` (CPU-only machines: `pip install torch --index-url https://download.pytorch.org/whl/cpu`)"


def sort_classes(names: Iterable) -> list[str]:
    """Distinct class names in code order: numeric when all are integers, else text."""
    uniq = sorted({str(n) for n in names})
    try:
        return sorted(uniq, key=lambda s: (int(s), s))
    except ValueError:
        return uniq


def _unit_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float32 rows, (N,) float32 norms); rows of norm 0 stay 0."""
    xf = np.asarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", xf, xf, dtype=np.float32))
    safe = np.where(norms > 0, norms, np.float32(1.0))
    return xf / safe[:, None], norms


def _topk(s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of ``s`` (n, E) by value, descending; ties: lower column first.

    Returns (values (n, k), columns (n, k)). ``s`` (C-contiguous) is overwritten.
    """
    n, e = s.shape
    if k >= e:
        cols = np.argsort(-s, axis=1, kind="stable")
        return np.take_along_axis(s, cols, axis=1), cols
    if k <= _ARGMAX_K:
        flat = s.reshape(-1)
        base = np.arange(n, dtype=np.intp) * e
        cols = np.empty((n, k), dtype=np.intp)
        vals = np.empty((n, k), dtype=s.dtype)
        for j in range(k):
            c = s.argmax(axis=1)  # first maximum: lower column wins ties
            pos = base + c
            cols[:, j] = c
            vals[:, j] = flat[pos]
            flat[pos] = -np.inf
        return vals, cols
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    pv = np.take_along_axis(s, part, axis=1)
    order = np.lexsort((part, -pv), axis=-1)
    return np.take_along_axis(pv, order, axis=1), np.take_along_axis(part, order, axis=1)


def _int8_torch(rows: int):
    """torch, for its exact int8 matrix product, when installed and worth importing.

    Importing torch costs about a second, so small jobs use NumPy unless it is loaded.
    """
    import sys

    if "torch" not in sys.modules and rows < BLOCK_ROWS:
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch if _int_mm_works(torch) else None


@functools.cache
def _int_mm_works(torch) -> bool:
    """Whether this torch build multiplies int8 matrices on the CPU (a private op, so probe it)."""
    try:
        a = torch.ones((17, 8), dtype=torch.int8)
        return bool((torch._int_mm(a, a.T.contiguous()) == 8).all())
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def _torch_for(backend: str):
    """torch for an explicit ``backend`` ("torch" or "cuda"), or a clear error."""
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            f"backend={backend!r} needs torch, which is not installed; run {_TORCH_INSTALL}, "
            "or use backend='numpy' (same results)"
        ) from exc
    if backend == "torch" and not _int_mm_works(torch):
        raise MissingDependencyError(
            f"backend='torch' needs torch's int8 matrix product on the CPU (torch._int_mm), which torch "
            f"{torch.__version__} lacks; install torch>=2.1 with {_TORCH_INSTALL}, or use backend='numpy'"
        )
    return torch


def _cuda_for(torch):
    """torch's CUDA device for backend="cuda", or a clear error when torch sees no GPU."""
    device = _cuda_device(torch)
    if device is None:
        build = "a CPU-only build" if getattr(torch.version, "cuda", None) is None else "a CUDA build"
        raise MissingDependencyError(
            f"backend='cuda' needs a CUDA GPU visible to torch, but torch {torch.__version__} ({build}) sees "
            "none (torch.cuda.is_available() is False); on a GPU machine install a CUDA build of torch, "
            "or use backend='auto' (the GPU when there is one), 'torch' or 'numpy' (same results)"
        )
    return device


def _single_threaded_blas():
    """Limit BLAS to one thread (our threads parallelise instead); a no-op without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _is_int8_valued(x: np.ndarray) -> bool:
    if x.dtype == np.int8:
        return True
    if x.size == 0 or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        return False
    return bool(np.all(x >= -128) and np.all(x <= 127) and np.all(np.floor(x) == x))


class _KeyTopK:
    """Exact top-k of ``x . e_j / |e_j|`` for int8 pixels ``x`` against int8 examples.

    Each score becomes an int32 key: its value in fixed point (truncated) in the high bits
    and its column ``j`` in the low ``col_bits``, so that one row sort orders by score and
    carries the columns along. Truncation keeps order (never reverses it), so the top k
    keys are the top k scores unless the k-th and (k+1)-th keys are within one fixed-point
    step (float32 rounding of the scaled score is far below a step); those rows are
    redone from the exact integer products in float64, where equal scores go to the lower
    column. Work runs in blocks of ``_KEY_ROWS`` pixels on per-thread buffers: a block's
    arrays stay in cache and no block pays for fresh pages.
    """

    @staticmethod
    def applies(examples: np.ndarray) -> bool:
        return 0 < examples.shape[0] <= _KEY_MAX_EXAMPLES and _is_int8_valued(examples)

    def __init__(self, examples: np.ndarray) -> None:
        import threading

        ex = examples.astype(np.int8)
        self.n_ex = ex.shape[0]
        self.col_bits = max(1, (self.n_ex - 1).bit_length())
        self.ex_t = np.ascontiguousarray(ex.T)  # (D, E) int8
        self.ex_f32 = self.ex_t.astype(np.float32)
        self.inv = 1.0 / np.sqrt(np.einsum("ij,ij->i", ex.astype(np.float64), ex.astype(np.float64)))
        self.scale = (self.inv * 2.0 ** (_KEY_BITS - self.col_bits)).astype(np.float32)
        self.cols = np.arange(self.n_ex, dtype=np.int32)
        self._local = threading.local()

    def _buffers(self, torch) -> dict:
        buf = getattr(self._local, "buf", None)
        if buf is None or (torch is not None) != ("torch" in buf):
            shape = (_KEY_ROWS, self.n_ex)
            keys = np.empty(shape, np.int32)
            buf = {"dots": np.empty(shape, np.int32 if torch is not None else np.float32),
                   "keys": keys, "prod": keys.view(np.float32),  # converted in place: one buffer fewer
                   "xf": np.empty((_KEY_ROWS, self.ex_t.shape[0]), np.float32)}
            if torch is not None:
                buf["torch"] = {name: torch.from_numpy(buf[name]) for name in ("dots", "prod", "keys")}
                buf["torch"].update(ex_t=torch.from_numpy(self.ex_t), scale=torch.from_numpy(self.scale),
                                    cols=torch.from_numpy(self.cols))
            self._local.buf = buf
        return buf

    def neighbours(self, x: np.ndarray, k: int, cosines: bool, torch=None):
        """((n, k) columns of the k best examples, unordered; (n, k) float64 cosines or None)."""
        n = x.shape[0]
        cols = np.empty((n, k), dtype=np.intp)
        cos = np.empty((n, k), dtype=np.float64) if cosines else None
        buf = self._buffers(torch)
        for a in range(0, n, _KEY_ROWS):
            xb = x[a:a + _KEY_ROWS]
            c, d, xf = self._block(xb, k, buf, torch, need_xf=cosines)
            cols[a:a + len(xb)] = c
            if cosines:
                norms = self._norms(xf, buf, torch)
                flat = c + np.arange(0, d.size, d.shape[1])[:, None]  # faster than take_along_axis
                sims = d.reshape(-1)[flat].astype(np.float64) * self.inv[c]
                cos[a:a + len(xb)] = sims * _safe_inverse(norms)[:, None]
        return cols, cos

    @staticmethod
    def _norms(xf: np.ndarray, buf: dict, torch) -> np.ndarray:
        """(n,) float64 norms of a block's int8 rows (their squares sum exactly in float32)."""
        if torch is None:
            return np.sqrt(np.einsum("ij,ij->i", xf, xf).astype(np.float64))
        return torch.linalg.vector_norm(torch.from_numpy(xf), dim=1).numpy().astype(np.float64)

    def _block(self, x: np.ndarray, k: int, buf: dict, torch, need_xf: bool):
        """(cols (n, k), exact products (n, E), float32 copy of x or None) for one block."""
        n, e, bits = x.shape[0], self.n_ex, self.col_bits
        dots, keys, xf = buf["dots"][:n], buf["keys"][:n], None
        if torch is not None:
            t = buf["torch"]
            xc = x if x.flags.c_contiguous and x.flags.writeable else np.array(x, order="C")
            if need_xf:
                xf = buf["xf"][:n]
                torch.from_numpy(xf).copy_(torch.from_numpy(xc))
            torch._int_mm(torch.from_numpy(xc), t["ex_t"], out=t["dots"][:n])
            torch.mul(t["dots"][:n], t["scale"], out=t["prod"][:n])
            kt = t["keys"][:n].copy_(t["prod"][:n])
            torch.add(t["cols"], kt, alpha=1 << bits, out=kt)  # value << bits | column
        else:  # int8 values: the float32 product is exact (|x . e| < 2**24)
            xf = buf["xf"][:n]
            np.copyto(xf, x)
            np.matmul(xf, self.ex_f32, out=dots)
            np.multiply(dots, self.scale, out=buf["prod"][:n])
            np.copyto(keys, buf["prod"][:n], casting="unsafe")
            np.left_shift(keys, bits, out=keys)
            np.bitwise_or(keys, self.cols, out=keys)
        keys.sort(axis=1)
        cols = (keys[:, e - k:] & ((1 << bits) - 1)).astype(np.intp)
        if k < e:
            gap = (keys[:, e - k] >> bits) - (keys[:, e - k - 1] >> bits)
            redo = np.flatnonzero(gap <= 1)
            if redo.size:
                cols[redo] = _topk(dots[redo].astype(np.float64) * self.inv, k)[1]
        return cols, dots, xf


def _cuda_device(torch):
    """torch's CUDA device when one is present, else None (the CPU paths run)."""
    try:
        return torch.device("cuda") if torch.cuda.is_available() else None
    except (AttributeError, RuntimeError):  # pragma: no cover - a broken CUDA setup
        return None


class _DeviceTopK:
    """Exact top-k on a torch device (a GPU) for int8 pixels against int8 examples.

    float64 products of int8 values are exact integers, so the scores equal the CPU
    path's exact scores. ``torch.topk`` takes ``k + 1`` per row; a row whose k-th and
    (k+1)-th scores are equal is redone on the CPU, where equal scores go to the lower
    column, as everywhere else.
    """

    def __init__(self, keys: _KeyTopK, torch, device) -> None:
        self.torch, self.device, self.n_ex = torch, device, keys.n_ex
        self.ex_t = torch.from_numpy(keys.ex_t.astype(np.float64)).to(device)  # (D, E)
        self.inv = torch.from_numpy(keys.inv).to(device)

    def neighbours(self, x: np.ndarray, k: int, cosines: bool):
        """((n, k) columns of the k best examples; (n, k) float64 cosines or None)."""
        torch, n, e = self.torch, x.shape[0], self.n_ex
        cols = np.empty((n, k), dtype=np.intp)
        cos = np.empty((n, k), dtype=np.float64) if cosines else None
        for a in range(0, n, _DEVICE_ROWS):
            xb = x[a:a + _DEVICE_ROWS]
            xb = xb if xb.flags.c_contiguous and xb.flags.writeable else np.array(xb, order="C")
            xt = torch.from_numpy(xb).to(self.device).to(torch.float64)
            s = (xt @ self.ex_t) * self.inv
            vals, idx = torch.topk(s, min(k + 1, e), dim=1)
            c = idx[:, :k].cpu().numpy().astype(np.intp)
            if k < e:
                tie = torch.nonzero(vals[:, k - 1] == vals[:, k]).flatten().cpu().numpy()
                if tie.size:
                    c[tie] = _topk(s[torch.from_numpy(tie).to(self.device)].cpu().numpy(), k)[1]
            cols[a:a + len(xb)] = c
            if cosines:
                norms = torch.linalg.vector_norm(xt, dim=1)
                inv = torch.where(norms > 0, 1.0 / torch.where(norms > 0, norms, 1.0), 0.0)
                sims = torch.gather(s, 1, torch.from_numpy(c).to(self.device))
                cos[a:a + len(xb)] = (sims * inv[:, None]).cpu().numpy()
        return cols, cos


class KNNClassifier:
    """Exact cosine k-nearest-neighbour classifier on embeddings (int8 or float).

    ``fit(vectors (N, D), labels (N,))`` then ``predict(X (n, D)) -> (class index (n,),
    confidence (n,))``; class ``i`` is ``classes_[i]``. See the module docstring for
    the rule (it is scikit-learn's ``KNeighborsClassifier(metric="cosine",
    algorithm="brute")``) and for how the int8 path keeps top-k exact.

    ``backend``: ``"auto"``, ``"numpy"``, ``"torch"`` or ``"cuda"`` (module docstring,
    *Backends*); every backend gives the same neighbours and predictions. An explicit
    ``"torch"`` or ``"cuda"`` that this machine cannot run raises
    :class:`~tessera_search.errors.MissingDependencyError` here, not at ``predict``.
    """

    def __init__(self, k: int = 5, weights: str = "uniform", *, backend: str = "auto") -> None:
        if int(k) < 1:
            raise InvalidInputError(f"k must be at least 1, got {k}")
        if weights not in WEIGHTS:
            raise InvalidInputError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
        if backend not in BACKENDS:
            raise InvalidInputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.k = int(k)
        self.weights = weights
        self.backend = backend
        self._torch = _torch_for(backend) if backend in ("torch", "cuda") else None
        self._cuda = _cuda_for(self._torch) if backend == "cuda" else None
        self._device = None

    def fit(self, vectors: np.ndarray, labels: Sequence, classes: Sequence[str] | None = None) -> KNNClassifier:
        """Remember unit example vectors and their classes (``classes`` fixes the order)."""
        vectors = np.asarray(vectors)
        names = np.array([str(v) for v in labels], dtype=object)
        if vectors.ndim != 2 or vectors.shape[0] != names.size:
            raise InvalidInputError(f"{vectors.shape[0] if vectors.ndim else 0} vectors but {names.size} labels")
        if names.size < self.k:
            raise InvalidInputError(
                f"k={self.k} needs at least {self.k} examples, got {names.size}; lower k or label more pixels"
            )
        self.classes_ = list(classes) if classes is not None else sort_classes(names)
        lookup = {c: i for i, c in enumerate(self.classes_)}
        missing = sorted(set(names.tolist()) - set(lookup))
        if missing:
            raise InvalidInputError(f"labels {missing} are not among the classes {self.classes_}")
        self.y_ = np.array([lookup[v] for v in names.tolist()], dtype=np.intp)
        unit, norms = _unit_rows(vectors)
        if np.any(norms == 0):
            raise InvalidInputError("an example vector is all zeros (no data); drop it")
        self.examples_ = np.ascontiguousarray(unit.T)  # (D, E)
        self._keys = _KeyTopK(vectors) if _KeyTopK.applies(vectors) else None
        self._device = None
        return self

    @property
    def n_classes(self) -> int:
        return len(self.classes_)

    # -- neighbours ---------------------------------------------------------------------

    def _keys_path(self, x: np.ndarray) -> bool:
        return self._keys is not None and x.dtype == np.int8 and x.ndim == 2

    def _engine(self, x: np.ndarray) -> tuple:
        """(torch or None, :class:`_DeviceTopK` or None): what scores the int8 job ``x``."""
        if not self._keys_path(x) or self.backend == "numpy":
            return None, None
        if self.backend == "torch":
            return self._torch, None
        if self.backend == "cuda":
            return self._torch, self._on(self._torch, self._cuda)
        torch = _int8_torch(len(x))
        device = _cuda_device(torch) if torch is not None else None
        return torch, (self._on(torch, device) if device is not None else None)

    def _on(self, torch, device) -> _DeviceTopK:
        """The device path on ``device`` (made once per fit)."""
        if self._device is None or self._device.device != device:
            self._device = _DeviceTopK(self._keys, torch, device)
        return self._device

    def _neighbours(self, x: np.ndarray, cosines: bool, engine: tuple | None = None,
                    ) -> tuple[np.ndarray, np.ndarray | None]:
        """((n, k) example columns, (n, k) float64 cosines or None), in no particular order.

        ``engine``: :meth:`_engine`'s choice, when the caller made it for a larger job.
        """
        if self._keys_path(x):
            torch, device = engine if engine is not None else self._engine(x)
            if device is not None:
                return device.neighbours(x, self.k, cosines)
            return self._keys.neighbours(x, self.k, cosines, torch)
        xf = np.asarray(x, dtype=np.float32)
        vals, cols = _topk(xf @ self.examples_, self.k)
        if not cosines:
            return cols, None
        norms = np.sqrt(np.einsum("ij,ij->i", xf, xf, dtype=np.float32)).astype(np.float64)
        return cols, vals.astype(np.float64) * _safe_inverse(norms)[:, None]

    def kneighbors(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((n, k) cosine distances, (n, k) example indices), nearest first."""
        cols, cos = self._neighbours(np.asarray(x), cosines=True)
        order = np.lexsort((cols, -cos), axis=-1)  # nearest first; equal: lower column first
        cols = np.take_along_axis(cols, order, axis=1)
        dist = np.clip(1.0 - np.take_along_axis(cos, order, axis=1), 0.0, 2.0)
        return dist.astype(np.float32), cols

    def _votes(self, x: np.ndarray, engine: tuple | None = None) -> np.ndarray:
        cols, cos = self._neighbours(x, cosines=self.weights == "distance", engine=engine)
        w = None
        if cos is not None:
            dist = np.clip(np.subtract(1.0, cos, out=cos), 0.0, 2.0, out=cos)
            with np.errstate(divide="ignore"):
                w = np.divide(1.0, dist)
            # A neighbour at distance 0: only those vote, 1 each (rare; found without a row-wise pass)
            at_zero = np.unique(np.flatnonzero(dist.ravel() == 0.0) // dist.shape[1])
            w[at_zero] = dist[at_zero] == 0.0
        n, c = cols.shape[0], self.n_classes
        # One bincount over (pixel, class) cells sums every neighbour's vote.
        cell = (np.arange(n, dtype=np.intp) * c)[:, None] + self.y_[cols]
        votes = np.bincount(cell.ravel(), weights=None if w is None else w.ravel(), minlength=n * c)
        return votes.reshape(n, c).astype(np.float64, copy=False)

    def votes(self, x: np.ndarray) -> np.ndarray:
        """(n, n_classes) float64 vote totals of the k neighbours."""
        x = np.asarray(x)
        return self._votes(x)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((n,) class indices, (n,) float32 confidence = the winner's vote share).

        Blocks of pixels run on one thread per core, each with single-threaded matrix
        products and sorts, which keeps every core busy.
        """
        x = np.asarray(x)
        out_c = np.empty(len(x), dtype=np.intp)
        out_p = np.empty(len(x), dtype=np.float32)
        engine = self._engine(x)
        torch, on_device = engine[0], engine[1] is not None
        rows = _DEVICE_ROWS if on_device else BLOCK_ROWS
        ones = np.ones(self.n_classes)  # row sums as a matrix product: a row-wise sum is slow for few classes

        def block(s: int) -> None:
            v = self._votes(x[s:s + rows], engine)
            c = v.argmax(axis=1)
            out_c[s:s + len(c)] = c
            out_p[s:s + len(c)] = np.take_along_axis(v, c[:, None], axis=1)[:, 0] / (v @ ones)

        starts = range(0, len(x), rows)
        workers = 1 if on_device else min(os.cpu_count() or 1, len(starts))
        if workers <= 1:
            for s in starts:
                block(s)
            return out_c, out_p
        from concurrent.futures import ThreadPoolExecutor

        # torch's thread count is per thread under OpenMP: each worker sets its own
        one = None if torch is None else (lambda: torch.set_num_threads(1))
        with _single_threaded_blas(), ThreadPoolExecutor(workers, "knn", initializer=one) as pool:
            for _ in pool.map(block, starts):
                pass
        return out_c, out_p

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, n_classes) vote shares."""
        v = self.votes(x)
        return v / v.sum(axis=1, keepdims=True)

    def class_similarity(self, x: np.ndarray) -> np.ndarray:
        """(n, n_classes) float32: cosine to the nearest example of each class."""
        xf = np.asarray(x, dtype=np.float32)
        norms = np.sqrt(np.einsum("ij,ij->i", xf, xf, dtype=np.float32))
        s = xf @ self.examples_
        out = np.full((len(xf), self.n_classes), -np.inf, dtype=np.float32)
        for c in range(self.n_classes):
            cols = np.flatnonzero(self.y_ == c)
            if cols.size:
                out[:, c] = s[:, cols].max(axis=1)
        return out * _safe_inverse(norms)[:, None].astype(np.float32)


def _safe_inverse(norms: np.ndarray) -> np.ndarray:
    """1 / norms, with 0 where a norm is 0 (an all-zero vector has cosine 0 with anything)."""
    return np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
