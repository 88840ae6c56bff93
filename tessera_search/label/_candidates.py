"""Candidates of every class across an index: the pixels nearest each class's examples.

:func:`label_candidates` scans the stored int8 vectors of an index's tiles (or of given
tiles) exactly, one tile at a time, keeping each class's running top ``per_class``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import resolve_home
from ..errors import InvalidInputError
from ..examples import DEFAULT_MAX_PER_POLYGON, ExampleSamples, ExampleSet
from ..workspace import Workspace
from ..grid import Tile, owned_mask
from ._common import ProgressFn, classified_blocks, fit_examples, keep_top, locate, samples_for, tile_progress

__all__ = ["CandidateResult", "label_candidates"]


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
    from ..catalog import Catalog
    from ..errors import IndexNotFoundError

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


def _scan_candidates(home, tiles: Sequence[Tile], clf, year: int, exclude_ids: np.ndarray, per_class: int,
                     exclusive: bool, progress=False, on_progress: ProgressFn | None = None) -> tuple[list[dict], dict]:
    """The running top ``per_class`` of each class over ``tiles`` of the store at ``home``:
    ([{"score", "ids", "margin", "conf"} per class], {"scanned", "synthetic"})."""
    from ..store import TileStore

    store = TileStore(home)
    best = [dict(score=np.empty(0, np.float32), ids=np.empty(0, np.int64), margin=np.empty(0, np.float32),
                 conf=np.empty(0, np.float32)) for _ in range(clf.n_classes)]
    seen = {"scanned": 0, "synthetic": False}
    for ids, sim, pred, conf in classified_blocks(clf, store, tiles, year, owned_mask, exclude_ids, progress,
                                                   "candidates", seen, on_progress):
        for c in range(clf.n_classes):
            sel = np.flatnonzero(pred == c) if exclusive else np.arange(ids.size)
            if sel.size == 0:
                continue
            sc = sim[sel, c]
            others = np.delete(sim[sel], c, axis=1)
            mg = sc - (others.max(axis=1) if others.shape[1] else np.float32(0))
            best[c] = _merge_top([best[c], {"score": sc, "ids": ids[sel], "margin": mg, "conf": conf[sel]}], per_class)
    return best, seen


def _scan_refitted(home, tiles: Sequence[Tile], recipe: tuple, *args) -> tuple[list[dict], dict]:
    """:func:`_scan_candidates` with the classifier refitted from ``recipe`` (k, weights,
    backend, example vectors, labels, classes): where the scan runs on another node, the
    examples travel, not the fitted classifier (which holds per-thread state)."""
    from ._knn import KNNClassifier

    k, weights, backend, vectors, labels, classes = recipe
    return _scan_candidates(home, tiles, KNNClassifier(k, weights, backend=backend).fit(vectors, labels, classes), *args)


def _merge_top(lists: list[dict], per_class: int) -> dict:
    """The best ``per_class`` of several {"score", "ids", "margin", "conf"} lists (ties: smaller ID)."""
    return keep_top(np.concatenate([b["score"] for b in lists]), np.concatenate([b["ids"] for b in lists]), per_class,
                    margin=np.concatenate([b["margin"] for b in lists]), conf=np.concatenate([b["conf"] for b in lists]))


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
    backend: str = "auto",
    progress=None,
    on_progress: ProgressFn | None = None,
    engine=None,
) -> CandidateResult:
    """For each class, the ``per_class`` pixels of an index (or of ``tiles``) nearest its examples.

    A pixel's score for a class is its cosine to that class's nearest example. With
    ``exclusive`` (default) a pixel is a candidate only for the class the kNN rule gives
    it, so the lists never overlap. The scan is exact over the stored int8 vectors of
    every tile of the index (the index's own year), one tile at a time, keeping only
    the running top ``per_class`` of each class; example pixels are never candidates.
    ``out``: a GeoJSON of points, one per candidate. ``backend``: the classifier's
    (:class:`~tessera_search.label.KNNClassifier`); ``on_progress(done, total)``: called
    after each tile. ``engine`` (with ``index``): ``"ray"`` scans each node's share of the
    index's tiles where the index's shards are held (the same fan-out as a search) and
    merges the per-class lists here; the result is the same as ``"local"`` (default).
    """
    t0 = time.perf_counter()
    home = resolve_home(home)
    if (index is None) == (tiles is None):
        raise InvalidInputError("give exactly one of index= (an index name) or tiles=")
    if index is not None:
        tiles, idx_year = _index_tiles(index, home)
        if year is not None and int(year) != idx_year:
            raise InvalidInputError(f"index {index!r} is for {idx_year}, not {year}; drop year= or pick another index")
        year = idx_year
    if year is None:
        raise InvalidInputError("give year= with explicit tiles")
    if int(per_class) < 1:
        raise InvalidInputError(f"per_class must be at least 1, got {per_class}")
    year = int(year)
    tiles = sorted(set(tiles))
    samples = samples_for(examples, year, home, class_field, max_per_polygon, seed, source, progress)
    clf = fit_examples(samples, class_field, k, weights, backend)
    what = f"index {index}" if index else "the tiles"
    Workspace.of(home).ensure_tiles(tiles, year, source=source, what=what, progress=progress)
    from ..store import TileStore

    store = TileStore(home)
    C = clf.n_classes
    from ..engine import elsewhere

    if index is not None and elsewhere(engine):
        from ..engine._index import tiles_held
        from ..index import open_index

        # Each node scans the tiles of the shards it holds; the per-class lists merge here.
        with open_index(index, home=home, engine=engine) as idx, \
                tile_progress(progress, f"candidates {year}", len(tiles), on_progress) as advance:
            recipe = (clf.k, clf.weights, clf.backend, samples.vectors, samples.labels(class_field), clf.classes_)
            parts = tiles_held(idx, _scan_refitted, recipe, year, samples.ids, per_class, exclusive)
            for _ in tiles:
                advance()
        best = [_merge_top([p[0][c] for p in parts], per_class) for c in range(C)]
        seen = {"scanned": sum(p[1]["scanned"] for p in parts),
                "synthetic": samples.synthetic or any(p[1]["synthetic"] for p in parts)}
    else:
        best, seen = _scan_candidates(home, tiles, clf, year, samples.ids, per_class, exclusive, progress, on_progress)
        seen["synthetic"] = seen["synthetic"] or samples.synthetic
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
    lon, lat, tile_names, row, col = locate(store, year, ids)
    result = CandidateResult(
        classes=list(clf.classes_), class_name=np.concatenate(parts["cls"]), rank=np.concatenate(parts["rank"]),
        score=np.concatenate(parts["score"]), margin=np.concatenate(parts["margin"]),
        confidence=np.concatenate(parts["conf"]), ids=ids, tile=tile_names, row=row, col=col, lon=lon, lat=lat,
        year=year, index=index, n_scanned=seen["scanned"], synthetic=seen["synthetic"],
    )
    if out is not None:
        from ..vectors import write_points_geojson

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
