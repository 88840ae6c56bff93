"""Class maps: every pixel of a region classified by its nearest examples (:func:`label_region`).

The map is a COG (band 1 class code, band 2 confidence in percent), with a legend (GeoTIFF
tags and ``<out>.json``) and a PNG quicklook, streamed tile by tile; against a ground
truth (:mod:`tessera_search.sources.truth`) it is also scored.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import resolve_home
from ..errors import InvalidInputError
from ..examples import DEFAULT_MAX_PER_POLYGON, ExampleSamples, ExampleSet
from ..workspace import Workspace
from ..grid import Tile
from ..sources.truth import TruthFn
from ._common import ProgressFn, fit_examples, tile_progress, region_tiles, samples_for, scan_tiles, warn_one_class
from ._knn import BLOCK_ROWS

__all__ = ["LabelResult", "label_region"]

_READ_ROWS = 8 * BLOCK_ROWS  # pixels gathered from a tile per predict call: one block per thread and more


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
    backend: str = "auto",
    progress=None,
    on_progress: ProgressFn | None = None,
) -> LabelResult:
    """Classify every valid pixel of ``region`` in ``year`` by its k nearest examples.

    ``region``: a :class:`~tessera_search.regions.Region` or a list of Tiles. ``out``: the
    class map COG (band 1 class code, band 2 confidence in percent with GDAL scale 0.01),
    with ``<out>.json`` legend and ``<out>.png`` quicklook; ``None`` computes the counts
    (and truth accuracy) without writing. ``crs``: mosaic CRS (needed across UTM zones);
    ``per_tile``: one COG per tile. ``truth``: a synthetic mirror directory or a function
    ``grid -> (codes, {code: name})`` to score the map against. ``backend``: the
    classifier's (:class:`~tessera_search.label.KNNClassifier`). ``on_progress(done, total)``: called after each
    tile. Tiles stream one at a time.
    """
    t0 = time.perf_counter()
    home = resolve_home(home)
    year = int(year)
    samples = samples_for(examples, year, home, class_field, max_per_polygon, seed, source, progress)
    clf = fit_examples(samples, class_field, k, weights, backend)
    warn_one_class(clf, "the class map")
    tiles, mask_of = region_tiles(region)
    if not tiles:
        raise InvalidInputError("the region selects no tiles")
    Workspace.of(home).ensure_tiles(tiles, year, source=source, what="the region", progress=progress)
    if truth is not None and not callable(truth):
        from ..sources.truth import synthetic_truth

        truth = synthetic_truth(truth, year)

    from ..store import TileStore

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
        from ..export import RasterWriter

        writer = RasterWriter(
            out, grids, count=2, dtype=dtype, nodata=0, crs=crs, per_tile=per_tile, tags=tags,
            band_descriptions=["class", "confidence (percent)"], band_scales=[1.0, 0.01],
            colormap=_colours(legend),
        )
    with contextlib.ExitStack() as stack:  # the writer finishes, or cleans up on error
        if writer is not None:
            stack.enter_context(writer)
        with tile_progress(progress, f"label {year}", len(tiles), on_progress) as advance:
            for t, grid, emb, flat, _ in scan_tiles(store, tiles, year, mask_of):
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
        from ..export import legend_path, write_legend_json, write_quicklook

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
    from ..export import PALETTE

    return {code: PALETTE[(code - 1) % len(PALETTE)] for code in legend}

