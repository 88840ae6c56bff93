"""Spatially blocked cross-validation of a set of examples (:func:`cross_validate`).

Samples are grouped into square blocks of ground (:func:`spatial_blocks`), whole blocks go
to folds (:func:`assign_folds`), and the kNN classifier is scored on each held-out fold.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError
from ..examples import DEFAULT_MAX_PER_POLYGON, ExampleSamples, ExampleSet
from ..grid import to_utm, utm_epsg
from ._common import samples_for
from ._knn import KNNClassifier, sort_classes

__all__ = ["CVReport", "assign_folds", "cross_validate", "spatial_blocks"]


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
        raise InvalidInputError(f"block_size must be positive metres, got {block_size}")

    pos = {}
    for i in np.unique(samples.example).tolist():
        g = samples.examples[i].geometry
        p = g if g.geom_type == "Point" else g.representative_point()
        pos[i] = (p.x, p.y)
    keys = []
    for i in samples.example.tolist():
        lon, lat = pos[i]
        epsg = utm_epsg(lon, lat)
        x, y = to_utm(epsg).transform(lon, lat)
        keys.append((epsg, math.floor(x / block_size), math.floor(y / block_size)))
    _, inverse = np.unique(np.array(keys, dtype=np.int64), axis=0, return_inverse=True)
    return inverse.ravel().astype(np.int64)


def assign_folds(blocks: np.ndarray, n_folds: int, seed: int = 0) -> np.ndarray:
    """(N,) fold of each sample: whole blocks, balanced by sample count, seeded order."""
    ids, sizes = np.unique(blocks, return_counts=True)
    if ids.size < n_folds:
        raise InvalidInputError(
            f"{n_folds} folds need at least {n_folds} spatial blocks, but the examples fall in "
            f"{ids.size}; use a smaller block_size or fewer folds"
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
    backend: str = "auto",
) -> CVReport:
    """Spatially blocked ``folds``-fold cross-validation of the kNN classifier.

    Samples are grouped into square blocks of ``block_size`` metres (:func:`spatial_blocks`);
    whole blocks go to folds (:func:`assign_folds`), so neighbouring pixels, and the pixels
    of one polygon, are never on both sides of a split.
    """
    if int(folds) < 2:
        raise InvalidInputError(f"cross-validation needs at least 2 folds, got {folds}")
    samples = samples_for(examples, year, home, class_field, max_per_polygon, seed, source, False)
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
                f"fold {f} leaves {int(train.sum())} training samples, fewer than k={k}; use fewer folds or a smaller k"
            )
        clf = KNNClassifier(k, weights, backend=backend).fit(samples.vectors[train], labels[train],
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
