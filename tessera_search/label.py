"""Few-shot labelling by nearest neighbours: class maps, validation, candidates, suggestions.

An analyst labels a handful of pixels (points or polygons, :mod:`tessera_search.examples`);
every pixel is then classified by its ``k`` nearest labelled examples.

The classifier (:class:`KNNClassifier`)
---------------------------------------
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
exact integers: ``x . e_j`` in int32 (torch's int8 matrix product when torch is
installed, else a float32 product of int8 values, which is exact below 2**24). Each
score ``(x . e_j) / |e_j|`` becomes a sortable int32 key, its fixed-point value in the
high bits and the column in the low bits, and one vectorised row sort (NumPy's SIMD
sort) gives the top k with their columns. A row whose k-th and (k+1)-th keys are within
one fixed-point step is redone in float64, so the set of neighbours is that of exact
arithmetic. Float inputs take a float32 product and ``k`` row-wise argmax passes.
When torch sees a GPU, int8 pixels go there instead (:class:`_DeviceTopK`): float64
products of int8 values are exact too, and ``torch.topk`` picks the neighbours.

Workflows
---------
- :func:`label_region`: a class map (COG: band 1 class code, band 2 confidence in
  percent), a legend (GeoTIFF tags and ``<out>.json``) and a PNG quicklook, streamed tile
  by tile.
- :func:`cross_validate`: spatially blocked k-fold cross-validation of the examples.
- :func:`label_candidates`: for each class, the pixels of an index (or tiles) nearest
  its examples.
- :func:`suggest`: the most uncertain pixels of a region, spread apart, to label next.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import resolve_home
from .errors import InvalidInputError, NoDataError
from .examples import (
    DEFAULT_MAX_PER_POLYGON,
    ExampleSamples,
    ExampleSet,
    ensure_tiles,
    sample_examples,
)
from .grid import Tile, TileGrid, owned_mask, pack_ids, unpack_ids, utm_epsg

__all__ = [
    "CVReport",
    "CandidateResult",
    "KNNClassifier",
    "LabelResult",
    "SuggestResult",
    "cross_validate",
    "label_candidates",
    "label_region",
    "sort_classes",
    "suggest",
]

WEIGHTS = ("uniform", "distance")
_BLOCK_ROWS = 32768  # pixels per matrix product: bounds temporary memory (~25 MB)
_READ_ROWS = 8 * _BLOCK_ROWS  # pixels gathered from a tile per predict call: one block per thread and more
_ARGMAX_K = 16  # up to this k, k argmax passes beat argpartition
_KEY_ROWS = 4096  # pixels per block of the int8 path: its buffers stay in cache (measured best)
_KEY_BITS = 20  # |x . e| / |e| <= |x| <= 128 * sqrt(128) < 2**11: keys of 11 + 20 bits fit int32
_KEY_MAX_EXAMPLES = 4096  # column bits beyond this leave too coarse a fixed-point step
_DEVICE_ROWS = 1 << 18  # pixels per block on a GPU


# ======================================================================================
# The classifier
# ======================================================================================


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

    if "torch" not in sys.modules and rows < _BLOCK_ROWS:
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
    """

    def __init__(self, k: int = 5, weights: str = "uniform") -> None:
        if int(k) < 1:
            raise InvalidInputError(f"k must be at least 1, got {k}")
        if weights not in WEIGHTS:
            raise InvalidInputError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
        self.k = int(k)
        self.weights = weights

    def fit(self, vectors: np.ndarray, labels: Sequence, classes: Sequence[str] | None = None) -> KNNClassifier:
        """Remember unit example vectors and their classes (``classes`` fixes the order)."""
        vectors = np.asarray(vectors)
        names = np.array([str(v) for v in labels], dtype=object)
        if vectors.ndim != 2 or vectors.shape[0] != names.size:
            raise InvalidInputError(f"{vectors.shape[0] if vectors.ndim else 0} vectors but {names.size} labels")
        if names.size < self.k:
            raise InvalidInputError(
                f"k={self.k} needs at least {self.k} examples, got {names.size}; lower --k or label more pixels"
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

    def _on_device(self, torch) -> _DeviceTopK | None:
        """The GPU path, when torch sees one (made once per classifier)."""
        if torch is None or self._keys is None:
            return None
        device = _cuda_device(torch)
        if device is None:
            return None
        cached = getattr(self, "_device", None)
        if cached is None or cached.device != device:
            cached = self._device = _DeviceTopK(self._keys, torch, device)
        return cached

    def _neighbours(self, x: np.ndarray, cosines: bool, torch=None) -> tuple[np.ndarray, np.ndarray | None]:
        """((n, k) example columns, (n, k) float64 cosines or None), in no particular order."""
        if self._keys_path(x):
            device = self._on_device(torch)
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

    def _votes(self, x: np.ndarray, torch=None) -> np.ndarray:
        cols, cos = self._neighbours(x, cosines=self.weights == "distance", torch=torch)
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
        return self._votes(x, _int8_torch(len(x)) if self._keys_path(x) else None)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((n,) class indices, (n,) float32 confidence = the winner's vote share).

        Blocks of pixels run on one thread per core, each with single-threaded matrix
        products and sorts, which keeps every core busy.
        """
        x = np.asarray(x)
        out_c = np.empty(len(x), dtype=np.intp)
        out_p = np.empty(len(x), dtype=np.float32)
        torch = _int8_torch(len(x)) if self._keys_path(x) else None
        on_device = self._on_device(torch) is not None
        rows = _DEVICE_ROWS if on_device else _BLOCK_ROWS
        ones = np.ones(self.n_classes)  # row sums as a matrix product: a row-wise sum is slow for few classes

        def block(s: int) -> None:
            v = self._votes(x[s:s + rows], torch)
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


# ======================================================================================
# Shared plumbing
# ======================================================================================


def _samples(examples, year, home, class_field, max_per_polygon, seed, source, progress) -> ExampleSamples:
    if isinstance(examples, ExampleSamples):
        if examples.year != int(year):
            raise InvalidInputError(f"the samples are from {examples.year}, not {year}")
        return examples
    return sample_examples(examples, year, home, class_field=class_field, max_per_polygon=max_per_polygon,
                           seed=seed, source=source, progress=progress)


def _fit(samples: ExampleSamples, class_field: str | None, k: int, weights: str) -> KNNClassifier:
    labels = samples.labels(class_field)
    return KNNClassifier(k, weights).fit(samples.vectors, labels)


def _warn_one_class(clf: KNNClassifier, what: str) -> None:
    """Warn (TesseraSearchWarning) when the examples hold one class: ``what`` is then trivial."""
    if clf.n_classes == 1:
        import warnings

        from .errors import TesseraSearchWarning

        name = clf.classes_[0]
        warnings.warn(TesseraSearchWarning(
            f"the examples hold one class only ({name!r}): {what} is trivial (every pixel is {name!r}); "
            "add examples of the other classes"), stacklevel=3)


def _region_tiles(region) -> tuple[list[Tile], Callable[[TileGrid], np.ndarray]]:
    """Tiles of a Region (or an iterable of Tiles) and its pixel-mask function."""
    if hasattr(region, "tiles") and hasattr(region, "mask"):
        return list(region.tiles), region.mask
    tiles = sorted(set(region))
    if not tiles or not all(isinstance(t, Tile) for t in tiles):
        raise InvalidInputError("region must be a Region or a list of Tiles")
    return tiles, owned_mask


def _scan(store, tiles: Sequence[Tile], year: int, mask_of, exclude_ids: np.ndarray | None = None,
          ) -> Iterator[tuple[Tile, TileGrid, np.ndarray, np.ndarray, dict]]:
    """Per tile: (tile, grid, (H*W, 128) int8 view, flat indices of pixels to use, attrs).

    Pixels to use: valid, in the region mask, and not one of ``exclude_ids``.
    """
    for t in tiles:
        data = store.read(t, year)
        mask = data.valid & mask_of(data.grid)
        if exclude_ids is not None and exclude_ids.size:
            prefix = pack_ids(t.ix, t.iy, 0, 0)
            mine = exclude_ids[(exclude_ids >> 32) == (int(prefix) >> 32)]
            if mine.size:
                _, _, r, c = unpack_ids(mine)
                ok = (r < data.grid.height) & (c < data.grid.width)
                mask[r[ok], c[ok]] = False
        flat = np.flatnonzero(mask)
        attrs = {"dataset_version": data.dataset_version, "synthetic": data.synthetic}
        yield t, data.grid, data.embeddings.reshape(-1, data.embeddings.shape[-1]), flat, attrs
        del data


def _classified_blocks(clf: KNNClassifier, store, tiles: Sequence[Tile], year: int, mask_of, exclude_ids,
                       progress: bool, label: str, seen: dict) -> Iterator[tuple[np.ndarray, ...]]:
    """Per block of a region's pixels: (ids, (n, C) class similarity, class, confidence).

    ``seen`` counts the pixels scanned (``"scanned"``) and ORs in whether any tile is
    synthetic (``"synthetic"``); the progress bar advances a tile at a time.
    """
    with _progress(progress, f"{label} {year}", len(tiles)) as advance:
        for t, grid, emb, flat, attrs in _scan(store, tiles, year, mask_of, exclude_ids):
            seen["synthetic"] = seen["synthetic"] or bool(attrs["synthetic"])
            seen["scanned"] += flat.size
            for s in range(0, flat.size, _BLOCK_ROWS):
                idx = flat[s:s + _BLOCK_ROWS]
                x = emb[idx]
                pred, conf = clf.predict(x)
                rows, cols = np.divmod(idx, grid.width)
                yield pack_ids(t.ix, t.iy, rows, cols), clf.class_similarity(x), pred, conf
            advance()


def _locate(store, year: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lon, lat, tile names (object array), rows, cols) of stored pixels' centres."""
    from types import SimpleNamespace

    from .query import locate_ids

    lon, lat, names, rows, cols = locate_ids(SimpleNamespace(grid=lambda tile: store.grid(tile, year)), ids)
    return lon, lat, np.array(names, dtype=object), rows, cols


def _progress(enabled: bool, label: str, total: int):
    from ._progress import progress_bar

    return progress_bar(enabled, label, total)


# ======================================================================================
# Class maps
# ======================================================================================


@dataclass
class LabelResult:
    """What :func:`label_region` made.

    ``legend``: code -> class name (0 is nodata); ``pixels``: classified pixels per class
    name; ``examples_per_class``: sampled example pixels per class; ``truth_*``: the
    map against a ground truth, when one was given (``truth_confusion`` rows are truth
    classes, columns predicted, both in ``classes`` order).
    """

    path: Path | None
    files: list[Path]
    legend: dict[int, str]
    classes: list[str]
    pixels: dict[str, int]
    examples_per_class: dict[str, int]
    tiles: list[Tile]
    year: int
    k: int
    weights: str
    crs: str | None
    transform: tuple | None
    width: int | None
    height: int | None
    synthetic: bool
    seconds: float
    dropped: list[tuple[int, str]] = field(default_factory=list)
    truth_accuracy: float | None = None
    truth_pixels: int = 0
    truth_confusion: np.ndarray | None = None

    @property
    def n_pixels(self) -> int:
        return int(sum(self.pixels.values()))

    def to_json(self) -> dict:
        return {
            "out": str(self.path) if self.path else None,
            "files": [str(p) for p in self.files],
            "legend": {str(k): v for k, v in self.legend.items()},
            "classes": self.classes,
            "pixels": self.pixels,
            "n_pixels": self.n_pixels,
            "examples_per_class": self.examples_per_class,
            "tiles": [t.name for t in self.tiles],
            "year": self.year,
            "k": self.k,
            "weights": self.weights,
            "crs": self.crs,
            "transform": list(self.transform) if self.transform else None,
            "width": self.width,
            "height": self.height,
            "synthetic": self.synthetic,
            "seconds": round(self.seconds, 3),
            "dropped": [{"example": i, "reason": r} for i, r in self.dropped],
            "truth_accuracy": self.truth_accuracy,
            "truth_pixels": self.truth_pixels,
            "truth_confusion": None if self.truth_confusion is None else self.truth_confusion.tolist(),
        }


TruthFn = Callable[[TileGrid], tuple[np.ndarray, dict[int, str]]]


def synthetic_truth(mirror: str | os.PathLike[str], year: int) -> TruthFn:
    """Ground truth from a synthetic mirror: ``grid -> ((H, W) codes, {code: name})``.

    The truth raster may be the whole tile while ``grid`` is a window of it (same CRS
    and pixel lattice): the window is cut out.
    """
    from .errors import CorruptTileError
    from .sources.synthetic import CLASSES, read_truth

    def truth(grid: TileGrid):
        codes, tgrid = read_truth(mirror, grid.tile, year)
        if tgrid.epsg != grid.epsg or tgrid.transform[0] != grid.transform[0]:
            raise CorruptTileError(f"ground truth of {grid.tile.name} is on another grid than the store's tile")
        c0 = (grid.transform[2] - tgrid.transform[2]) / grid.transform[0]
        r0 = (grid.transform[5] - tgrid.transform[5]) / grid.transform[4]
        r0i, c0i = int(round(r0)), int(round(c0))
        if abs(r0 - r0i) > 1e-6 or abs(c0 - c0i) > 1e-6 or r0i < 0 or c0i < 0 \
                or r0i + grid.height > tgrid.height or c0i + grid.width > tgrid.width:
            raise CorruptTileError(f"ground truth of {grid.tile.name} does not cover the store's grid")
        return codes[r0i:r0i + grid.height, c0i:c0i + grid.width], dict(CLASSES)

    return truth


def label_region(
    examples: ExampleSet | ExampleSamples | str | os.PathLike[str],
    region,
    year: int,
    out: str | os.PathLike[str] | None = None,
    *,
    class_field: str | None = None,
    k: int = 5,
    weights: str = "uniform",
    home: str | os.PathLike[str] | None = None,
    crs: str | None = None,
    per_tile: bool = False,
    quicklook: bool = True,
    max_per_polygon: int = DEFAULT_MAX_PER_POLYGON,
    seed: int = 0,
    source: str | None = None,
    truth: TruthFn | str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> LabelResult:
    """Classify every valid pixel of ``region`` in ``year`` by its k nearest examples.

    ``region``: a :class:`~tessera_search.regions.Region` or a list of Tiles. ``out``: the
    class map COG (band 1 class code, band 2 confidence in percent with GDAL scale 0.01),
    with ``<out>.json`` legend and ``<out>.png`` quicklook; ``None`` computes the counts
    (and truth accuracy) without writing. ``crs``: mosaic CRS (needed across UTM zones);
    ``per_tile``: one COG per tile. ``truth``: a synthetic mirror directory or a function
    ``grid -> (codes, {code: name})`` to score the map against. Tiles stream one at a time.
    """
    t0 = time.perf_counter()
    home = resolve_home(home)
    year = int(year)
    samples = _samples(examples, year, home, class_field, max_per_polygon, seed, source, progress)
    clf = _fit(samples, class_field, k, weights)
    _warn_one_class(clf, "the class map")
    tiles, mask_of = _region_tiles(region)
    if not tiles:
        raise InvalidInputError("the region selects no tiles")
    ensure_tiles(tiles, year, home, source, "the region", progress)
    if truth is not None and not callable(truth):
        truth = synthetic_truth(truth, year)

    from .store import TileStore

    store = TileStore(home)
    legend = {i + 1: name for i, name in enumerate(clf.classes_)}
    ncls = clf.n_classes
    dtype = "uint8" if ncls <= 255 else "uint16"
    grids = [store.grid(t, year) for t in tiles]
    attrs = [store.attrs(t, year) for t in tiles]
    synthetic = any(bool(a.get("synthetic")) for a in attrs) or samples.synthetic
    versions = sorted({str(a.get("dataset_version", "")) for a in attrs})
    labels = samples.labels(class_field)
    per_class = {c: int(np.sum(labels == c)) for c in clf.classes_}
    tags = {
        "software": "tessera-search label",
        "year": year,
        "dataset_version": ",".join(versions),
        "synthetic": synthetic,
        "legend": {str(code): name for code, name in legend.items()},
        "k": clf.k,
        "weights": clf.weights,
        "metric": "cosine",
        "class_field": samples.examples.class_field or class_field or "",
        "examples": Path(samples.examples.source).name if samples.examples.source else "",
        "examples_per_class": per_class,
        "band_1": "class code (0 = nodata); legend in the 'legend' tag",
        "band_2": "confidence: winning class's share of the k votes, percent (scale 0.01)",
    }
    counts = np.zeros(ncls + 1, dtype=np.int64)
    conf_truth = None
    truth_other = 0  # scored pixels whose true class is none of the examples' classes
    if truth is not None:
        conf_truth = np.zeros((ncls, ncls), dtype=np.int64)
        lookup = {name: i for i, name in enumerate(clf.classes_)}

    writer = None
    if out is not None:
        from .export import RasterWriter

        writer = RasterWriter(
            out, grids, count=2, dtype=dtype, nodata=0, crs=crs, per_tile=per_tile, tags=tags,
            band_descriptions=["class", "confidence (percent)"], band_scales=[1.0, 0.01],
            colormap=_colours(legend),
        )
    with contextlib.ExitStack() as stack:  # the writer finishes, or cleans up on error
        if writer is not None:
            stack.enter_context(writer)
        with _progress(progress, f"label {year}", len(tiles)) as advance:
            for t, grid, emb, flat, _ in _scan(store, tiles, year, mask_of):
                codes = np.zeros(grid.height * grid.width, dtype=dtype)
                pct = np.zeros(grid.height * grid.width, dtype=dtype)
                for s in range(0, flat.size, _READ_ROWS):
                    idx = flat[s:s + _READ_ROWS]
                    c, p = clf.predict(emb[idx])
                    codes[idx] = (c + 1).astype(dtype)
                    pct[idx] = np.clip(np.rint(p * 100.0), 1, 100).astype(dtype)
                counts += np.bincount(codes[flat].astype(np.int64), minlength=ncls + 1)
                if truth is not None:
                    tcodes, tlegend = truth(grid)
                    tnames = np.array([tlegend.get(int(v), "") for v in range(int(tcodes.max()) + 1)], dtype=object)
                    # truth code -> our class index (-1: a class no example has)
                    to_ours = np.array([lookup.get(n, -1) for n in tnames.tolist()], dtype=np.int64)
                    ti = to_ours[tcodes.ravel()[flat]]
                    known = ti >= 0
                    truth_other += int((~known).sum())
                    np.add.at(conf_truth, (ti[known], codes[flat][known].astype(np.int64) - 1), 1)
                if writer is not None:
                    writer.write_tile(grid, np.stack([codes.reshape(grid.shape), pct.reshape(grid.shape)]))
                advance()
    files: list[Path] = []
    plan = None
    if writer is not None:
        files = list(writer.written)
        plan = writer.plan
        from .export import legend_path, write_legend_json, write_quicklook

        files.append(write_legend_json(legend_path(out), legend))
        if quicklook and not per_tile:
            title = f"{len(legend)} classes, k={clf.k} {clf.weights}, {year}" + (" - SYNTHETIC DATA" if synthetic else "")
            files.append(write_quicklook(out, legend=legend, colours=_colours(legend), title=title))
    result = LabelResult(
        path=Path(out) if out is not None else None, files=files, legend=legend, classes=list(clf.classes_),
        pixels={name: int(counts[i + 1]) for i, name in enumerate(clf.classes_)},
        examples_per_class=per_class, tiles=list(tiles), year=year, k=clf.k, weights=clf.weights,
        crs=plan.crs if plan else (grids[0].crs if per_tile and len({g.epsg for g in grids}) == 1 else None),
        transform=tuple(plan.transform) if plan else None,
        width=plan.width if plan else None, height=plan.height if plan else None,
        synthetic=synthetic, seconds=time.perf_counter() - t0, dropped=list(samples.dropped),
    )
    if conf_truth is not None:
        scored = int(conf_truth.sum()) + truth_other
        result.truth_pixels = scored
        result.truth_accuracy = float(np.trace(conf_truth) / scored) if scored else None
        result.truth_confusion = conf_truth
    return result


def _colours(legend: dict[int, str]) -> dict[int, tuple[int, int, int]]:
    from .export import PALETTE

    return {code: PALETTE[(code - 1) % len(PALETTE)] for code in legend}


# ======================================================================================
# Cross-validation
# ======================================================================================


@dataclass
class CVReport:
    """Spatially blocked cross-validation of a set of examples.

    ``confusion[i, j]``: samples of class ``classes[i]`` predicted ``classes[j]``.
    ``folds[n]`` / ``blocks[n]``: the fold and the spatial block of sample ``n`` (every
    sample of one block, and every pixel of one polygon, is in one fold).
    """

    classes: list[str]
    confusion: np.ndarray
    accuracy: float
    macro_f1: float
    precision: dict[str, float]
    recall: dict[str, float]
    f1: dict[str, float]
    support: dict[str, int]
    folds: np.ndarray
    blocks: np.ndarray
    n_folds: int
    n_blocks: int
    block_size: float
    k: int
    weights: str
    fold_accuracy: list[float]
    year: int

    def to_json(self) -> dict:
        return {
            "year": self.year,
            "k": self.k,
            "weights": self.weights,
            "folds": self.n_folds,
            "blocks": self.n_blocks,
            "block_size_m": self.block_size,
            "samples": int(self.confusion.sum()),
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "classes": self.classes,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
            "confusion": self.confusion.tolist(),
            "fold_accuracy": self.fold_accuracy,
        }


def spatial_blocks(samples: ExampleSamples, block_size: float) -> np.ndarray:
    """(N,) int64 block id of every sample: square blocks of ``block_size`` metres.

    A sample is placed by its example's position (a polygon's representative point, so
    all pixels of a field share a block) in the UTM zone of that position.
    """
    if not block_size > 0:
        raise InvalidInputError(f"block size must be positive metres, got {block_size}")
    from .grid import _to_utm

    pos = {}
    for i in np.unique(samples.example).tolist():
        g = samples.examples[i].geometry
        p = g if g.geom_type == "Point" else g.representative_point()
        pos[i] = (p.x, p.y)
    keys = []
    for i in samples.example.tolist():
        lon, lat = pos[i]
        epsg = utm_epsg(lon, lat)
        x, y = _to_utm(epsg).transform(lon, lat)
        keys.append((epsg, math.floor(x / block_size), math.floor(y / block_size)))
    _, inverse = np.unique(np.array(keys, dtype=np.int64), axis=0, return_inverse=True)
    return inverse.ravel().astype(np.int64)


def assign_folds(blocks: np.ndarray, n_folds: int, seed: int = 0) -> np.ndarray:
    """(N,) fold of each sample: whole blocks, balanced by sample count, seeded order."""
    ids, sizes = np.unique(blocks, return_counts=True)
    if ids.size < n_folds:
        raise InvalidInputError(
            f"{n_folds} folds need at least {n_folds} spatial blocks, but the examples fall in "
            f"{ids.size}; use a smaller --block-size or fewer --cv folds"
        )
    order = np.random.default_rng(seed).permutation(ids.size)
    # Larger blocks first (stable over the seeded order), each to the emptiest fold.
    order = order[np.argsort(-sizes[order], kind="stable")]
    load = np.zeros(n_folds, dtype=np.int64)
    fold_of_block = np.empty(ids.size, dtype=np.int64)
    for b in order:
        f = int(np.argmin(load))
        fold_of_block[b] = f
        load[f] += sizes[b]
    return fold_of_block[np.searchsorted(ids, blocks)]


def _metrics(conf: np.ndarray, classes: list[str]) -> tuple[float, float, dict, dict, dict, dict]:
    tp = np.diag(conf).astype(np.float64)
    pred = conf.sum(axis=0).astype(np.float64)
    true = conf.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pred > 0, tp / pred, 0.0)
        recall = np.where(true > 0, tp / true, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = true > 0
    total = conf.sum()
    accuracy = float(tp.sum() / total) if total else 0.0
    macro_f1 = float(f1[present].mean()) if present.any() else 0.0
    return (
        accuracy, macro_f1,
        {c: float(v) for c, v in zip(classes, precision, strict=True)},
        {c: float(v) for c, v in zip(classes, recall, strict=True)},
        {c: float(v) for c, v in zip(classes, f1, strict=True)},
        {c: int(v) for c, v in zip(classes, true, strict=True)},
    )


def cross_validate(
    examples: ExampleSet | ExampleSamples | str | os.PathLike[str],
    year: int,
    *,
    folds: int = 5,
    block_size: float = 1000.0,
    class_field: str | None = None,
    k: int = 5,
    weights: str = "uniform",
    home: str | os.PathLike[str] | None = None,
    max_per_polygon: int = DEFAULT_MAX_PER_POLYGON,
    seed: int = 0,
    source: str | None = None,
) -> CVReport:
    """Spatially blocked ``folds``-fold cross-validation of the kNN classifier.

    Samples are grouped into square blocks of ``block_size`` metres (:func:`spatial_blocks`);
    whole blocks go to folds (:func:`assign_folds`), so neighbouring pixels, and the pixels
    of one polygon, are never on both sides of a split.
    """
    if int(folds) < 2:
        raise InvalidInputError(f"cross-validation needs at least 2 folds, got {folds}")
    samples = _samples(examples, year, home, class_field, max_per_polygon, seed, source, False)
    labels = samples.labels(class_field)
    classes = sort_classes(labels)
    lookup = {c: i for i, c in enumerate(classes)}
    y = np.array([lookup[v] for v in labels.tolist()], dtype=np.intp)
    blocks = spatial_blocks(samples, block_size)
    fold = assign_folds(blocks, int(folds), seed)
    conf = np.zeros((len(classes), len(classes)), dtype=np.int64)
    fold_acc = []
    for f in range(int(folds)):
        test = fold == f
        train = ~test
        if train.sum() < k:
            raise InvalidInputError(
                f"fold {f} leaves {int(train.sum())} training samples, fewer than k={k}; use fewer folds or a smaller --k"
            )
        clf = KNNClassifier(k, weights).fit(samples.vectors[train], labels[train],
                                            classes=[c for c in classes if c in set(labels[train].tolist())])
        pred, _ = clf.predict(samples.vectors[test])
        pred_global = np.array([lookup[clf.classes_[p]] for p in pred.tolist()], dtype=np.intp)
        np.add.at(conf, (y[test], pred_global), 1)
        fold_acc.append(float(np.mean(pred_global == y[test])) if test.any() else float("nan"))
    acc, mf1, prec, rec, f1, sup = _metrics(conf, classes)
    return CVReport(
        classes=classes, confusion=conf, accuracy=acc, macro_f1=mf1, precision=prec, recall=rec, f1=f1,
        support=sup, folds=fold, blocks=blocks, n_folds=int(folds), n_blocks=int(np.unique(blocks).size),
        block_size=float(block_size), k=int(k), weights=weights, fold_accuracy=fold_acc, year=int(samples.year),
    )


# ======================================================================================
# Candidates across an index
# ======================================================================================


@dataclass
class CandidateResult:
    """Per class, the pixels nearest its examples (best first).

    Arrays are aligned: ``class_name``, ``rank`` (1 = best within its class), ``score``
    (cosine to the class's nearest example), ``margin`` (score minus the best other
    class's), ``confidence`` (kNN vote share), ``ids``, ``tile``, ``row``, ``col``,
    ``lon``, ``lat``.
    """

    classes: list[str]
    class_name: np.ndarray
    rank: np.ndarray
    score: np.ndarray
    margin: np.ndarray
    confidence: np.ndarray
    ids: np.ndarray
    tile: np.ndarray
    row: np.ndarray
    col: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    year: int
    index: str | None
    n_scanned: int
    path: Path | None = None
    seconds: float = 0.0
    synthetic: bool = False

    def __len__(self) -> int:
        return int(self.ids.size)

    def counts(self) -> dict[str, int]:
        return {c: int(np.sum(self.class_name == c)) for c in self.classes}

    def to_json(self) -> dict:
        return {
            "out": str(self.path) if self.path else None,
            "index": self.index,
            "year": self.year,
            "classes": self.classes,
            "counts": self.counts(),
            "n_scanned": self.n_scanned,
            "seconds": round(self.seconds, 3),
            "synthetic": self.synthetic,
            "best": {c: (float(self.score[self.class_name == c][0]) if np.any(self.class_name == c) else None)
                     for c in self.classes},
        }


def _index_tiles(index: str, home) -> tuple[list[Tile], int]:
    from .catalog import Catalog
    from .errors import IndexNotFoundError

    cat = Catalog(home)
    row = cat.index(index) if cat.path.exists() else None
    if row is None:
        raise IndexNotFoundError(
            f"no index named {index!r} in {home}; list them with `tessera-search info`, or build one with "
            "`tessera-search build-index`"
        )
    tiles = sorted(Tile.from_name(r["tile"]) for r in cat.index_tiles(index))
    if not tiles:
        raise IndexNotFoundError(f"index {index!r} holds no tiles yet; finish its build with `tessera-search build-index`")
    return tiles, int(row["year"])


def label_candidates(
    examples: ExampleSet | ExampleSamples | str | os.PathLike[str],
    *,
    index: str | None = None,
    tiles: Sequence[Tile] | None = None,
    year: int | None = None,
    per_class: int = 100,
    out: str | os.PathLike[str] | None = None,
    class_field: str | None = None,
    k: int = 5,
    weights: str = "uniform",
    exclusive: bool = True,
    home: str | os.PathLike[str] | None = None,
    max_per_polygon: int = DEFAULT_MAX_PER_POLYGON,
    seed: int = 0,
    source: str | None = None,
    progress: bool = False,
) -> CandidateResult:
    """For each class, the ``per_class`` pixels of an index (or of ``tiles``) nearest its examples.

    A pixel's score for a class is its cosine to that class's nearest example. With
    ``exclusive`` (default) a pixel is a candidate only for the class the kNN rule gives
    it, so the lists never overlap. The scan is exact over the stored int8 vectors of
    every tile of the index (the index's own year), one tile at a time, keeping only
    the running top ``per_class`` of each class; example pixels are never candidates.
    ``out``: a GeoJSON of points, one per candidate.
    """
    t0 = time.perf_counter()
    home = resolve_home(home)
    if (index is None) == (tiles is None):
        raise InvalidInputError("give exactly one of --index NAME or tiles")
    if index is not None:
        tiles, idx_year = _index_tiles(index, home)
        if year is not None and int(year) != idx_year:
            raise InvalidInputError(f"index {index!r} is for {idx_year}, not {year}; drop --year or pick another index")
        year = idx_year
    if year is None:
        raise InvalidInputError("give --year with explicit tiles")
    if int(per_class) < 1:
        raise InvalidInputError(f"--per-class must be at least 1, got {per_class}")
    year = int(year)
    tiles = sorted(set(tiles))
    samples = _samples(examples, year, home, class_field, max_per_polygon, seed, source, progress)
    clf = _fit(samples, class_field, k, weights)
    ensure_tiles(tiles, year, home, source, f"index {index}" if index else "the tiles", progress)
    from .store import TileStore

    store = TileStore(home)
    C = clf.n_classes
    best = [dict(score=np.empty(0, np.float32), ids=np.empty(0, np.int64), margin=np.empty(0, np.float32),
                 conf=np.empty(0, np.float32)) for _ in range(C)]
    seen = {"scanned": 0, "synthetic": samples.synthetic}
    for ids, sim, pred, conf in _classified_blocks(clf, store, tiles, year, owned_mask, samples.ids, progress,
                                                   "candidates", seen):
        for c in range(C):
            sel = np.flatnonzero(pred == c) if exclusive else np.arange(ids.size)
            if sel.size == 0:
                continue
            sc = sim[sel, c]
            others = np.delete(sim[sel], c, axis=1)
            mg = sc - (others.max(axis=1) if others.shape[1] else np.float32(0))
            b = best[c]
            b.update(_keep_top(np.concatenate([b["score"], sc]), np.concatenate([b["ids"], ids[sel]]),
                               per_class, margin=np.concatenate([b["margin"], mg]),
                               conf=np.concatenate([b["conf"], conf[sel]])))
    # Assemble, best first within each class, classes in code order.
    parts = {key: [] for key in ("cls", "rank", "score", "margin", "conf", "ids")}
    for c in range(C):
        b = best[c]
        n = b["ids"].size
        parts["cls"].append(np.full(n, clf.classes_[c], dtype=object))
        parts["rank"].append(np.arange(1, n + 1))
        for key, src in (("score", "score"), ("margin", "margin"), ("conf", "conf"), ("ids", "ids")):
            parts[key].append(b[src])
    ids = np.concatenate(parts["ids"]).astype(np.int64)
    lon, lat, tile_names, row, col = _locate(store, year, ids)
    result = CandidateResult(
        classes=list(clf.classes_), class_name=np.concatenate(parts["cls"]), rank=np.concatenate(parts["rank"]),
        score=np.concatenate(parts["score"]), margin=np.concatenate(parts["margin"]),
        confidence=np.concatenate(parts["conf"]), ids=ids, tile=tile_names, row=row, col=col, lon=lon, lat=lat,
        year=year, index=index, n_scanned=seen["scanned"], synthetic=seen["synthetic"],
    )
    if out is not None:
        from .export import write_points_geojson

        field_name = samples.examples.class_field or class_field or "class"
        result.path = write_points_geojson(
            out, lon, lat,
            {field_name: result.class_name, "rank": result.rank, "score": result.score, "margin": result.margin,
             "confidence": result.confidence, "id": ids, "tile": tile_names, "row": row, "col": col},
            metadata={"kind": "label candidates", "index": index, "year": year, "k": clf.k,
                      "weights": clf.weights, "per_class": int(per_class), "exclusive": exclusive,
                      "synthetic": result.synthetic},
        )
    result.seconds = time.perf_counter() - t0
    return result


def _keep_top(score: np.ndarray, ids: np.ndarray, n: int, **extra: np.ndarray) -> dict:
    """The ``n`` best by score (ties: smaller pixel ID first), sorted best first."""
    if score.size > n:
        # Everything strictly better than the n-th score, plus ties resolved by ID.
        cut = np.partition(-score, n - 1)[n - 1]
        cand = np.flatnonzero(-score <= cut)
    else:
        cand = np.arange(score.size)
    order = cand[np.lexsort((ids[cand], -score[cand]))][:n]
    return {"score": score[order], "ids": ids[order], **{k: v[order] for k, v in extra.items()}}


# ======================================================================================
# What to label next
# ======================================================================================


@dataclass
class SuggestResult:
    """Pixels to label next, most uncertain first, at least ``min_distance`` metres apart.

    ``margin``: cosine to the nearest example of the best class minus that of the
    second-best class (small: the examples cannot tell those classes apart here);
    ``predicted`` / ``second``: those two classes; ``confidence``: kNN vote share.
    """

    predicted: np.ndarray
    second: np.ndarray
    margin: np.ndarray
    confidence: np.ndarray
    ids: np.ndarray
    tile: np.ndarray
    row: np.ndarray
    col: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    year: int
    min_distance: float
    n_scanned: int
    path: Path | None = None
    seconds: float = 0.0
    synthetic: bool = False

    def __len__(self) -> int:
        return int(self.ids.size)

    def to_json(self) -> dict:
        return {
            "out": str(self.path) if self.path else None,
            "year": self.year,
            "n": len(self),
            "min_distance_m": self.min_distance,
            "n_scanned": self.n_scanned,
            "seconds": round(self.seconds, 3),
            "synthetic": self.synthetic,
            "suggestions": [
                {"lon": float(self.lon[i]), "lat": float(self.lat[i]), "predicted": str(self.predicted[i]),
                 "second": str(self.second[i]), "margin": float(self.margin[i]),
                 "confidence": float(self.confidence[i]), "id": int(self.ids[i])}
                for i in range(len(self))
            ],
        }


def _metres_apart(lon0, lat0, lon, lat) -> np.ndarray:
    """Great-circle distance (metres, spherical Earth) from one point to many."""
    r = 6_371_008.8
    p0, p = math.radians(lat0), np.radians(lat)
    dlat = p - p0
    dlon = np.radians(lon - lon0)
    h = np.sin(dlat / 2) ** 2 + math.cos(p0) * np.cos(p) * np.sin(dlon / 2) ** 2
    return 2 * r * np.arcsin(np.sqrt(np.clip(h, 0, 1)))


def suggest(
    examples: ExampleSet | ExampleSamples | str | os.PathLike[str],
    region,
    year: int,
    *,
    n: int = 20,
    min_distance: float = 200.0,
    out: str | os.PathLike[str] | None = None,
    class_field: str | None = None,
    k: int = 5,
    weights: str = "uniform",
    home: str | os.PathLike[str] | None = None,
    max_per_polygon: int = DEFAULT_MAX_PER_POLYGON,
    seed: int = 0,
    source: str | None = None,
    pool: int | None = None,
    progress: bool = False,
) -> SuggestResult:
    """The ``n`` most uncertain pixels of ``region``, each ``min_distance`` metres from the
    others and from every example, as a GeoJSON ready to be labelled (``out``).

    Uncertainty is the margin between the two classes whose nearest examples are closest
    (smallest first). Each tile keeps its ``pool`` (default ``50 * n``) most uncertain
    pixels; the pools merge, and a greedy pass picks the spread-out ones. The GeoJSON's
    features carry the class field set to null: fill in the ones you label, and pass the
    file back as ``--examples`` (unlabelled rows are skipped).
    """
    t0 = time.perf_counter()
    if int(n) < 1:
        raise InvalidInputError(f"--n must be at least 1, got {n}")
    if min_distance < 0:
        raise InvalidInputError(f"--min-distance must be >= 0 metres, got {min_distance}")
    home = resolve_home(home)
    year = int(year)
    pool = int(pool) if pool is not None else max(50 * int(n), 500)
    samples = _samples(examples, year, home, class_field, max_per_polygon, seed, source, progress)
    clf = _fit(samples, class_field, k, weights)
    if clf.n_classes < 2:
        raise InvalidInputError(f"suggestions need examples of at least 2 classes, got {clf.classes_}")
    tiles, mask_of = _region_tiles(region)
    ensure_tiles(tiles, year, home, source, "the region", progress)
    from .store import TileStore

    store = TileStore(home)
    keep = dict(score=np.empty(0, np.float32), ids=np.empty(0, np.int64), first=np.empty(0, np.intp),
                second=np.empty(0, np.intp), conf=np.empty(0, np.float32))
    seen = {"scanned": 0, "synthetic": samples.synthetic}
    for ids, sim, pred, conf in _classified_blocks(clf, store, tiles, year, mask_of, samples.ids, progress,
                                                   "suggest", seen):
        top2 = np.argsort(-sim, axis=1, kind="stable")[:, :2]
        r = np.arange(ids.size)
        margin = sim[r, top2[:, 0]] - sim[r, top2[:, 1]]
        # Smallest margins are best: keep them with score = -margin.
        keep = _keep_top(
            np.concatenate([keep["score"], -margin]), np.concatenate([keep["ids"], ids]), pool,
            first=np.concatenate([keep["first"], pred]),
            second=np.concatenate([keep["second"], np.where(top2[:, 0] == pred, top2[:, 1], top2[:, 0])]),
            conf=np.concatenate([keep["conf"], conf]),
        )
    if keep["ids"].size == 0:
        raise NoDataError(f"the region has no valid pixels in {year} besides the examples")
    lon, lat, names, row, col = _locate(store, year, keep["ids"])
    # Greedy spread: most uncertain first, skipping pixels near a chosen one or an example.
    taken_lon = list(samples.lon.tolist())
    taken_lat = list(samples.lat.tolist())
    chosen: list[int] = []
    for i in range(lon.size):
        if len(chosen) >= n:
            break
        if min_distance > 0 and taken_lon:
            d = _metres_apart(lon[i], lat[i], np.asarray(taken_lon), np.asarray(taken_lat))
            if d.min() < min_distance:
                continue
        chosen.append(i)
        taken_lon.append(lon[i])
        taken_lat.append(lat[i])
    sel = np.array(chosen, dtype=np.intp)
    classes = np.array(clf.classes_, dtype=object)
    result = SuggestResult(
        predicted=classes[keep["first"][sel]], second=classes[keep["second"][sel]],
        margin=-keep["score"][sel], confidence=keep["conf"][sel], ids=keep["ids"][sel], tile=names[sel],
        row=row[sel], col=col[sel], lon=lon[sel], lat=lat[sel], year=year, min_distance=float(min_distance),
        n_scanned=seen["scanned"], synthetic=seen["synthetic"],
    )
    if out is not None:
        from .export import write_points_geojson

        field_name = samples.examples.class_field or class_field or "class"
        result.path = write_points_geojson(
            out, result.lon, result.lat,
            {field_name: [None] * len(result), "predicted": result.predicted, "second": result.second,
             "margin": result.margin, "confidence": result.confidence, "rank": np.arange(1, len(result) + 1),
             "id": result.ids, "tile": result.tile, "row": result.row, "col": result.col},
            metadata={"kind": "label suggestions", "year": year, "k": clf.k, "weights": clf.weights,
                      "min_distance_m": float(min_distance), "synthetic": result.synthetic,
                      "how_to_use": f"fill in {field_name!r} for the points you label, then pass this file "
                                    "as --examples (unlabelled points are skipped)"},
        )
    result.seconds = time.perf_counter() - t0
    return result
