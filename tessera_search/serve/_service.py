"""What the web app does, without the web: one object over the workspace that answers each
API call with the library call the CLI makes, in the CLI's ``--json`` schema.

- query: :func:`tessera_search.query.run_query` (``query --json``), replay, history;
- label: :func:`tessera_search.label.label_region` and ``cross_validate`` (``label --json``),
  :func:`tessera_search.label.suggest` (``suggest --json``), as background jobs;
- export: :func:`tessera_search.query.write_result` on the replayed query (``query --out``);
- maps: the embeddings' false colours and the GeoTIFFs the app wrote, as XYZ tiles.

Files the app writes (drawn examples, exports) go to one server-side folder, ``exports``,
under names the app makes; clients download them by name and never give a path.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path

from ..errors import IndexNotFoundError, InvalidInputError
from ._jobs import Jobs
from ._params import (
    LIMITS,
    examples_features,
    get_bbox,
    get_bool,
    get_choice,
    get_float,
    get_int,
    safe_name,
    split_examples,
)

__all__ = ["Service", "error_doc"]

EXPORT_FORMATS = {"tif": ".tif", "geojson": ".geojson", "parquet": ".parquet", "csv": ".csv", "png": ".png"}
_RECHECK_S = 10.0  # how often a cached index renderer checks for a newer generation


def error_doc(exc: BaseException) -> dict:
    """``{"error": Name, "message": ...}`` (plus suggestions / details), as ``--json`` prints errors."""
    from ..errors import TesseraSearchError

    if not isinstance(exc, TesseraSearchError):
        return {"error": "InternalError", "message": f"{type(exc).__name__}: {exc}"}
    doc: dict = {"error": type(exc).__name__, "message": str(exc)}
    if getattr(exc, "suggestions", None):
        doc["suggestions"] = list(exc.suggestions)
    if getattr(exc, "details", None):
        doc["details"] = exc.details
    return doc


def _jsonable(obj):
    from ..cli._console import _jsonable as cli_jsonable

    return cli_jsonable(obj)


class Service:
    """The app's state: workspace, export folder, jobs and map renderers.

    ``index`` / ``year``: the index the page opens on (checked now: an unknown one is an
    error before anything serves). ``basemap``: an XYZ URL template the page offers as a
    layer (off by default). ``exports``: the folder for files (default ``<home>/exports``).
    """

    def __init__(self, home=None, index: str | None = None, year: int | None = None,
                 basemap: str | None = None, exports=None) -> None:
        from ..workspace import Workspace

        self.workspace = Workspace.of(home)
        self.home = self.workspace.home
        self.exports = Path(exports) if exports is not None else self.home / "exports"
        self.basemap = basemap
        self.jobs = Jobs(error_doc)
        self._renderers: dict = {}
        self._lock = threading.Lock()
        self._names = itertools.count(1)
        self.default_index = None
        if index is not None or year is not None:
            with self.workspace.open_index(index, year=year) as idx:
                self.default_index = idx.name
        else:
            complete = [r["name"] for r in self.indexes()["indexes"] if r["status"] == "complete"]
            self.default_index = complete[0] if complete else None

    # -- reading ------------------------------------------------------------------------
    def indexes(self) -> dict:
        """``indexes --json``."""
        from ..index import list_indexes

        keys = ("name", "year", "dataset_version", "region", "factory", "params", "n_vectors", "n_shards",
                "status", "created_at", "updated_at")
        return _jsonable({"indexes": [{k: r[k] for k in keys} | {"problems": list(r.get("problems") or []),
                                                                  "building": bool(r.get("building"))}
                                      for r in list_indexes(self.home)]})

    def info(self) -> dict:
        """``info --json``."""
        return _jsonable(self.workspace.info())

    def config(self) -> dict:
        """What the page needs to start: indexes with their extents, the default, limits."""
        from ..grid import Tile

        out = []
        for row in self.indexes()["indexes"]:
            if row["status"] != "complete":
                continue
            try:
                with self.workspace.open_index(row["name"]) as idx:
                    tiles = [Tile.from_name(t) for t in idx.tiles]
                    synthetic = idx.synthetic
            except (IndexNotFoundError, InvalidInputError):
                continue
            if not tiles:
                continue
            w = min(t.ix for t in tiles) / 10.0
            s = min(t.iy for t in tiles) / 10.0
            e = (max(t.ix for t in tiles) + 1) / 10.0
            n = (max(t.iy for t in tiles) + 1) / 10.0
            out.append({"name": row["name"], "year": row["year"], "n_vectors": row["n_vectors"],
                        "synthetic": synthetic, "bounds": [w, s, e, n], "n_tiles": len(tiles),
                        "cells": [[t.ix / 10.0, t.iy / 10.0] for t in tiles[:4096]]})
        from ..export import PALETTE

        return {"index": self.default_index, "indexes": out, "basemap": self.basemap,
                "limits": dict(LIMITS), "years": sorted({r["year"] for r in out}),
                "store_years": sorted({int(y) for _, y in self.workspace.store.list()}),
                "palette": ["#%02x%02x%02x" % tuple(rgb) for rgb in PALETTE]}

    # -- query --------------------------------------------------------------------------
    def _examples_file(self, features: list[dict], stem: str) -> Path:
        """Write drawn examples as a GeoJSON in the export folder (the CLI's ``--examples FILE``)."""
        from .._io import atomic_path

        self.exports.mkdir(parents=True, exist_ok=True)
        path = self.exports / f"{stem}-{self._stamp()}.geojson"
        with atomic_path(path, "examples") as tmp:
            tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
        return path

    def _stamp(self) -> str:
        return f"{time.strftime('%Y%m%dT%H%M%S')}-{next(self._names)}"

    def query(self, body: dict) -> tuple[dict, float]:
        """``query --json`` for the request's examples and parameters; and the seconds it took."""
        from ..query import run_query

        features = examples_features(body)
        pos, neg, polys = split_examples(features)
        if not pos and not any(f["properties"]["positive"] for f in polys):
            raise InvalidInputError("examples: give at least one positive example")
        kw = self._query_params(body)
        examples = self._examples_file(polys, "examples") if polys else None
        t0 = time.perf_counter()
        res = run_query(pos, negatives=neg, examples=examples, home=self.workspace, **kw)
        return _jsonable(res.to_json()), time.perf_counter() - t0

    def _query_params(self, body: dict) -> dict:
        threshold = get_float(body, "threshold", None, -1.0, 1.0)
        min_sep = get_float(body, "min_separation", None, 0.0, LIMITS["min_separation"])
        if threshold is not None and min_sep:
            raise InvalidInputError("threshold and min_separation do not combine; pick one")
        index = body.get("index")
        if index is not None and not isinstance(index, str):
            raise InvalidInputError("index must be an index name")
        return dict(index=index or (None if body.get("year") is not None else self.default_index),
                    year=get_int(body, "year", None, 1900, 2200),
                    example_year=get_int(body, "example_year", None, 1900, 2200),
                    push=get_float(body, "push", 0.5, 0.0, LIMITS["push"]),
                    k=get_int(body, "k", 10, 1, LIMITS["k"]), threshold=threshold, min_separation=min_sep,
                    group=get_bool(body, "group"),
                    max_results=get_int(body, "max_results", 100_000, 1, LIMITS["max_results"]),
                    nprobe=get_int(body, "nprobe", None, 1, 65_536))

    def replay(self, query_id: int) -> tuple[dict, float]:
        """``query --replay ID --json``."""
        from ..query import replay

        t0 = time.perf_counter()
        res = replay(int(query_id), home=self.workspace)
        return _jsonable(res.to_json()), time.perf_counter() - t0

    def history(self, limit: int = 50) -> dict:
        """``history --json``."""
        from ..query import history

        limit = get_int({"limit": limit}, "limit", 50, 1, LIMITS["history"])
        rows = history(self.workspace, limit=limit)
        return _jsonable({"count": len(rows), "queries": rows})

    # -- jobs ---------------------------------------------------------------------------
    def start_export(self, body: dict):
        """Export a recorded query (rerun exactly) with the CLI's writers: a COG mask (+ PNG),
        GeoJSON, GeoParquet, CSV or a PNG quicklook, into the export folder."""
        from ..query import replay, write_result

        query_id = get_int(body, "query_id", None, 1, 2**62)
        if query_id is None:
            raise InvalidInputError("query_id is required: export a recorded query (see history)")
        fmt = get_choice(body, "format", "tif", tuple(EXPORT_FORMATS))
        values = get_choice(body, "values", "mask", ("mask", "similarity"))
        path = self.exports / f"query-{query_id}-{self._stamp()}{EXPORT_FORMATS[fmt]}"
        self.exports.mkdir(parents=True, exist_ok=True)

        def run(job):
            def write(res, idx):
                return write_result(res, idx, path, values=values, progress=job.progress)

            res, files = replay(query_id, home=self.workspace, then=write)
            return {"query_id": query_id, "format": fmt, "count": len(res),
                    "files": [self._file_entry(f) for f in files]}

        return self.jobs.submit("export", run)

    def _label_inputs(self, body: dict):
        """(examples file, region, year, common kwargs) of a label or suggest request."""
        import shapely

        from ..grid import Tile, tiles_in_bbox
        from ..regions import Region

        features = examples_features(body, need_class=True)
        index = body.get("index") or self.default_index
        with self.workspace.open_index(index if isinstance(index, str) else None,
                                       year=get_int(body, "year", None, 1900, 2200)) as idx:
            year, index_tiles = idx.year, {Tile.from_name(t) for t in idx.tiles}
        scope = get_choice(body, "scope", "view", ("view", "index"))
        if scope == "view":
            w, s, e, n = get_bbox(body)
            tiles = sorted(set(tiles_in_bbox(w, s, e, n)) & index_tiles)
            region = Region(f"view {w:.4f},{s:.4f},{e:.4f},{n:.4f}", shapely.box(w, s, e, n), tuple(tiles))
        else:
            tiles = sorted(index_tiles)
            region = Region(f"index {index}", None, tuple(tiles))
        if not tiles:
            raise InvalidInputError("the view holds none of the index's tiles; pan to the index or pick scope index")
        if len(tiles) > LIMITS["label_tiles"]:
            raise InvalidInputError(f"the {scope} covers {len(tiles)} tiles, more than the {LIMITS['label_tiles']} "
                                    "one run may; zoom in")
        common = dict(class_field="class", k=get_int(body, "k", 5, 1, 100),
                      weights=get_choice(body, "weights", "uniform", ("uniform", "distance")),
                      max_per_polygon=get_int(body, "max_per_polygon", 200, 1, 5000),
                      seed=get_int(body, "seed", 0, 0, 2**31), home=self.workspace)
        return self._examples_file(features, "labels"), region, year, common

    def start_label(self, body: dict):
        """``label --examples F --year Y --out classes.tif [--cv N] --json`` over the view or the index."""
        from .. import label as lab

        examples, region, year, common = self._label_inputs(body)
        folds = get_int(body, "cv", None, 2, LIMITS["cv_folds"])
        block = get_float(body, "block_size", 1000.0, 10.0, 100_000.0)
        out = self.exports / f"classes-{self._stamp()}.tif"

        def run(job):
            report = {}
            if folds is not None:
                job.stage = "cross-validation"
                report["cv"] = lab.cross_validate(examples, year, folds=folds, block_size=block, **common).to_json()
                job.check()
            res = lab.label_region(examples, region, year, out, progress=job.progress, **common)
            doc = res.to_json()
            doc["file"] = self._file_entry(out)
            doc["legend_colours"] = _legend_colours(res.legend)
            report["map"] = doc
            return _jsonable(report if folds is not None else report["map"])

        return self.jobs.submit("label", run)

    def start_suggest(self, body: dict):
        """``suggest --json``: the most uncertain pixels of the view or the index, spread apart."""
        from ..label import suggest

        examples, region, year, common = self._label_inputs(body)
        n = get_int(body, "n", 20, 1, LIMITS["suggest_n"])
        min_distance = get_float(body, "min_distance", 200.0, 0.0, 100_000.0)
        out = self.exports / f"suggest-{self._stamp()}.geojson"

        def run(job):
            res = suggest(examples, region, year, n=n, min_distance=min_distance, out=out, progress=job.progress,
                          **common)
            doc = res.to_json()
            doc["file"] = self._file_entry(out)
            return _jsonable(doc)

        return self.jobs.submit("suggest", run)

    # -- files --------------------------------------------------------------------------
    def _file_entry(self, path) -> dict:
        path = Path(path)
        return {"name": path.name, "url": f"/api/files/{path.name}", "bytes": path.stat().st_size,
                "tiles": f"/api/tiles/files/{path.name}/{{z}}/{{x}}/{{y}}.png"
                if path.suffix.lower() in (".tif", ".tiff") else None}

    def file_path(self, name: str) -> Path:
        """The export-folder file called ``name`` (InvalidInputError for anything else)."""
        from ..errors import TileNotFoundError

        name = safe_name(name)
        root = self.exports.resolve()
        path = (root / name).resolve()
        if path.parent != root:
            raise InvalidInputError(f"{name!r} is not a file this server gave out")
        if not path.is_file():
            raise TileNotFoundError(f"no exported file {name!r}; export it first")
        return path

    def files(self) -> dict:
        if not self.exports.is_dir():
            return {"files": []}
        return {"files": [self._file_entry(p) for p in sorted(self.exports.iterdir())
                          if p.is_file() and not p.name.startswith(".")]}

    # -- maps ---------------------------------------------------------------------------
    def renderer(self, name: str):
        """The :class:`~._tiles.EmbeddingTiles` of index ``name`` (reopened when rebuilt)."""
        from ._tiles import EmbeddingTiles

        now = time.monotonic()
        with self._lock:
            hit = self._renderers.get(name)
        if hit is not None and now - hit[1] < _RECHECK_S:
            return hit[0]
        idx = self.workspace.open_index(name)
        with self._lock:
            hit = self._renderers.get(name)
            if hit is not None and hit[0].index.generation == idx.generation:
                self._renderers[name] = (hit[0], now)
                idx.close()
                return hit[0]
            if hit is not None:
                hit[0].close()
            tiles = EmbeddingTiles(idx)
            self._renderers[name] = (tiles, now)
            return tiles

    def embedding_tile(self, name: str, z: int, x: int, y: int) -> bytes | None:
        from ._tiles import check_tile

        check_tile(z, x, y)
        return self.renderer(name).render(z, x, y)

    def file_tile(self, name: str, z: int, x: int, y: int) -> bytes | None:
        from ._tiles import check_tile, raster_tile

        check_tile(z, x, y)
        path = self.file_path(name)
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise InvalidInputError(f"{name} is not a raster; only .tif exports draw as map tiles")
        return raster_tile(path, z, x, y)

    def outlines(self, bbox: str) -> dict:
        from ._tiles import outlines

        try:
            parts = [float(v) for v in str(bbox).split(",")]
        except ValueError:
            raise InvalidInputError(f"bbox {bbox!r} is not W,S,E,N") from None
        w, s, e, n = get_bbox({"bbox": parts})
        if (e - w) * (n - s) > 400:
            raise InvalidInputError("bbox: outlines are drawn for at most 20 x 20 degrees at a time")
        return outlines((w, s, e, n))

    def close(self) -> None:
        self.jobs.close()
        with self._lock:
            for tiles, _ in self._renderers.values():
                tiles.close()
            self._renderers.clear()


def _legend_colours(legend: dict) -> dict:
    """Class code -> '#rrggbb': the colours the class map itself was written with."""
    from ..label._maps import _colours

    return {str(code): "#%02x%02x%02x" % tuple(rgb) for code, rgb in _colours(legend).items()}
