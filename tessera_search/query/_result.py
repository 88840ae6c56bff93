"""The one result of a query, in every mode: ranked matches, optional blobs, one JSON schema.

``QueryResult.to_json()`` (and ``query --json``, and the metadata every file written from
a result carries)::

    {"index", "year", "dataset_version", "synthetic", "query_id", "warnings",
     "query":  {"example_year", "push", "positives": [...], "negatives": [...], "dropped": [...]},
     "params": {"mode": "top_k" | "threshold" | "min_separation", "k", "threshold",
                "min_separation", "group", "max_results", "nprobe", "refine_factor", "year"},
     "truncated", "count",
     "matches": [{"rank", "id", "lon", "lat", "tile", "row", "col", "similarity"}, ...],
     "blobs":   null | [{"rank", "tile", "n_pixels", "area_m2", "mean_similarity",
                         "max_similarity", "lon", "lat"}, ...]}
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import atomic_path
from ..errors import InvalidInputError
from ._search import Blob

MATCH_COLUMNS = ("rank", "id", "lon", "lat", "tile", "row", "col", "similarity")
VECTOR_SUFFIXES = (".geojson", ".json", ".parquet", ".csv")


@dataclass
class QueryResult:
    """Ranked matches of one query (exact cosine), best first; with grouping, blobs too.

    ``query`` describes the examples (:meth:`QuerySpec.to_json`), ``params`` the mode;
    ``vector`` is the exact query vector. ``query_id`` is None when the query was not
    recorded (``record=False``, or a read-only workspace: see ``warnings``).
    """

    index: str
    year: int
    dataset_version: str
    synthetic: bool
    vector: np.ndarray
    query: dict
    params: dict
    ids: np.ndarray
    similarity: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    tiles: list[str]
    rows: np.ndarray
    cols: np.ndarray
    truncated: bool = False
    blobs: list[Blob] | None = None
    query_id: int | None = None
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def matches(self) -> list[dict]:
        """One dict per match: rank (1-based), id, lon, lat, tile, row, col, similarity."""
        return [
            {"rank": i + 1, "id": int(self.ids[i]), "lon": float(self.lon[i]), "lat": float(self.lat[i]),
             "tile": self.tiles[i], "row": int(self.rows[i]), "col": int(self.cols[i]),
             "similarity": float(self.similarity[i])}
            for i in range(len(self.ids))
        ]

    def metadata(self) -> dict:
        """Everything but the matches and blobs: what every written file carries."""
        return {"index": self.index, "year": self.year, "dataset_version": self.dataset_version,
                "synthetic": self.synthetic, "query_id": self.query_id, "warnings": list(self.warnings),
                "query": self.query, "params": self.params, "truncated": self.truncated, "count": len(self)}

    def to_json(self) -> dict:
        """The one JSON schema of a query result (see the module docstring)."""
        return {**self.metadata(), "matches": self.matches(),
                "blobs": None if self.blobs is None else [b.to_json() for b in self.blobs]}

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Matches as points (with blobs: polygons with area) in .geojson, .parquet or .csv."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in VECTOR_SUFFIXES:
            raise InvalidInputError(f"cannot write {path.name}: use one of {', '.join(VECTOR_SUFFIXES)}")
        meta = json.loads(json.dumps(self.metadata(), default=str))
        if self.blobs is None:
            rows = self.matches()
            geoms = [{"type": "Point", "coordinates": [m["lon"], m["lat"]]} for m in rows]
        else:
            rows = [b.to_json() for b in self.blobs]
            geoms = [b.geometry for b in self.blobs]
        writer = {".geojson": _write_geojson, ".json": _write_geojson, ".parquet": _write_parquet,
                  ".csv": _write_csv}[suffix]
        with atomic_path(path) as tmp:
            writer(tmp, rows, geoms, meta, points=self.blobs is None)
        return path


def _write_geojson(tmp: Path, rows, geoms, meta, points: bool) -> None:
    props = [{k: v for k, v in r.items() if not (points and k in ("lon", "lat"))} for r in rows]
    doc = {"type": "FeatureCollection", "tessera_search": meta,
           "features": [{"type": "Feature", "geometry": g, "properties": p} for g, p in zip(geoms, props, strict=True)]}
    tmp.write_text(json.dumps(doc))


def _write_parquet(tmp: Path, rows, geoms, meta, points: bool) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely
    from shapely.geometry import shape

    from ._search import Blob

    names = list(rows[0]) if rows else (list(MATCH_COLUMNS) if points else list(Blob(0, "", 0, 0, 0, 0, 0, 0, {}).to_json()))
    cols = {k: [r[k] for r in rows] for k in names}
    if points:
        cols = {"rank": pa.array(np.asarray(cols["rank"], np.int32)), "id": pa.array(np.asarray(cols["id"], np.int64)),
                "lon": pa.array(np.asarray(cols["lon"], np.float64)), "lat": pa.array(np.asarray(cols["lat"], np.float64)),
                "tile": pa.array(cols["tile"], pa.string()), "row": pa.array(np.asarray(cols["row"], np.int32)),
                "col": pa.array(np.asarray(cols["col"], np.int32)),
                "similarity": pa.array(np.asarray(cols["similarity"], np.float32))}
    cols["geometry"] = pa.array([shapely.to_wkb(shape(g)) for g in geoms], pa.binary())
    kinds = ["Point"] if points else ["Polygon", "MultiPolygon"]
    geo = {"version": "1.0.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": kinds, "crs": None}}}
    table = pa.table(cols).replace_schema_metadata(
        {b"geo": json.dumps(geo).encode(), b"tessera_search": json.dumps(meta).encode()})
    pq.write_table(table, str(tmp))


def _write_csv(tmp: Path, rows, geoms, meta, points: bool) -> None:
    names = list(rows[0]) if rows else list(MATCH_COLUMNS)
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=names)
        w.writeheader()
        for r in rows:
            w.writerow({k: repr(v) if isinstance(v, float) else v for k, v in r.items()})
