"""What to label next: the most uncertain pixels of a region, spread apart (:func:`suggest`).

Uncertainty is the margin between the two classes whose nearest examples are closest;
spacing is :func:`tessera_search.geodesy.thin`, the one greedy "M metres apart" pass.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import resolve_home
from ..errors import InvalidInputError, NoDataError
from ..examples import DEFAULT_MAX_PER_POLYGON, ExampleSamples, ExampleSet
from ..workspace import Workspace
from ..geodesy import thin
from ._common import ProgressFn, classified_blocks, fit_examples, keep_top, locate, region_tiles, samples_for

__all__ = ["SuggestResult", "suggest"]


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
    backend: str = "auto",
    progress=None,
    on_progress: ProgressFn | None = None,
) -> SuggestResult:
    """The ``n`` most uncertain pixels of ``region``, each ``min_distance`` metres from the
    others and from every example, as a GeoJSON ready to be labelled (``out``).

    Uncertainty is the margin between the two classes whose nearest examples are closest
    (smallest first). Each tile keeps its ``pool`` (default ``50 * n``) most uncertain
    pixels; the pools merge, and :func:`tessera_search.geodesy.thin` picks the spread-out
    ones. The GeoJSON's features carry the class field set to null: fill in the ones you
    label, and pass the file back as the examples (unlabelled rows are skipped).
    ``backend``: the classifier's (:class:`~tessera_search.label.KNNClassifier`);
    ``on_progress(done, total)``: called after each tile.
    """
    t0 = time.perf_counter()
    if int(n) < 1:
        raise InvalidInputError(f"n must be at least 1, got {n}")
    if min_distance < 0:
        raise InvalidInputError(f"min_distance must be >= 0 metres, got {min_distance}")
    home = resolve_home(home)
    year = int(year)
    pool = int(pool) if pool is not None else max(50 * int(n), 500)
    samples = samples_for(examples, year, home, class_field, max_per_polygon, seed, source, progress)
    clf = fit_examples(samples, class_field, k, weights, backend)
    if clf.n_classes < 2:
        raise InvalidInputError(f"suggestions need examples of at least 2 classes, got {clf.classes_}")
    tiles, mask_of = region_tiles(region)
    Workspace.of(home).ensure_tiles(tiles, year, source=source, what="the region", progress=progress)
    from ..store import TileStore

    store = TileStore(home)
    keep = dict(score=np.empty(0, np.float32), ids=np.empty(0, np.int64), first=np.empty(0, np.intp),
                second=np.empty(0, np.intp), conf=np.empty(0, np.float32))
    seen = {"scanned": 0, "synthetic": samples.synthetic}
    for ids, sim, pred, conf in classified_blocks(clf, store, tiles, year, mask_of, samples.ids, progress,
                                                   "suggest", seen, on_progress):
        top2 = np.argsort(-sim, axis=1, kind="stable")[:, :2]
        r = np.arange(ids.size)
        margin = sim[r, top2[:, 0]] - sim[r, top2[:, 1]]
        # Smallest margins are best: keep them with score = -margin.
        keep = keep_top(
            np.concatenate([keep["score"], -margin]), np.concatenate([keep["ids"], ids]), pool,
            first=np.concatenate([keep["first"], pred]),
            second=np.concatenate([keep["second"], np.where(top2[:, 0] == pred, top2[:, 1], top2[:, 0])]),
            conf=np.concatenate([keep["conf"], conf]),
        )
    if keep["ids"].size == 0:
        raise NoDataError(f"the region has no valid pixels in {year} besides the examples")
    lon, lat, names, row, col = locate(store, year, keep["ids"])
    # Greedy spread: most uncertain first, skipping pixels near a chosen one or an example.
    sel = thin(lon, lat, float(min_distance), limit=int(n), keep=(samples.lon, samples.lat)).astype(np.intp)
    classes = np.array(clf.classes_, dtype=object)
    result = SuggestResult(
        predicted=classes[keep["first"][sel]], second=classes[keep["second"][sel]],
        margin=-keep["score"][sel], confidence=keep["conf"][sel], ids=keep["ids"][sel], tile=names[sel],
        row=row[sel], col=col[sel], lon=lon[sel], lat=lat[sel], year=year, min_distance=float(min_distance),
        n_scanned=seen["scanned"], synthetic=seen["synthetic"],
    )
    if out is not None:
        from ..vectors import write_points_geojson

        field_name = samples.examples.class_field or class_field or "class"
        result.path = write_points_geojson(
            out, result.lon, result.lat,
            {field_name: [None] * len(result), "predicted": result.predicted, "second": result.second,
             "margin": result.margin, "confidence": result.confidence, "rank": np.arange(1, len(result) + 1),
             "id": result.ids, "tile": result.tile, "row": result.row, "col": result.col},
            metadata={"kind": "label suggestions", "year": year, "k": clf.k, "weights": clf.weights,
                      "min_distance_m": float(min_distance), "synthetic": result.synthetic,
                      "how_to_use": f"fill in {field_name!r} for the points you label, then pass this file "
                                    "back as the examples (unlabelled points are skipped)"},
        )
    result.seconds = time.perf_counter() - t0
    return result
