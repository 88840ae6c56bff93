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

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from ._search import Blob

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
        """Matches as points (with blobs: polygons with area) in .geojson, .parquet or .csv,
        with :meth:`metadata` stored by :mod:`tessera_search.export`'s one convention."""
        from ..vectors import write_points, write_polygons

        path = Path(path)
        if path.suffix.lower() not in VECTOR_SUFFIXES:
            raise InvalidInputError(f"cannot write {path.name}: use one of {', '.join(VECTOR_SUFFIXES)}")
        meta = json.loads(json.dumps(self.metadata(), default=str))
        if self.blobs is None:
            cols = {"rank": np.arange(1, len(self) + 1, dtype=np.int32), "id": np.asarray(self.ids, np.int64),
                    "tile": list(self.tiles), "row": np.asarray(self.rows, np.int32),
                    "col": np.asarray(self.cols, np.int32), "similarity": np.asarray(self.similarity, np.float32)}
            return write_points(path, self.lon, self.lat, cols, meta)
        rows = [b.to_json() for b in self.blobs]
        names = list(Blob(0, "", 0, 0, 0, 0, 0, 0, {}).to_json())
        return write_polygons(path, [b.geometry for b in self.blobs], {k: [r[k] for r in rows] for k in names}, meta)
