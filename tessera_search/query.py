"""Query by example: a pixel's stored embedding in, the most similar pixels out.

Two separable steps, so other kinds of examples can reuse the search:

- :func:`query_vector` turns a point (lon, lat) into the unit-norm float32 embedding of
  the stored pixel holding it (fetching its tile when the store lacks it);
- :meth:`tessera_search.index.Index.search` takes any unit-norm (128,) float32 vector and
  returns pixel IDs with exact cosine similarities.

:func:`query` strings them together and turns IDs back into places: a
:class:`QueryResult` with lon, lat, tile, row and col per match, as JSON, CSV, Parquet
or GeoJSON.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._io import atomic_path
from .errors import (
    InvalidInputError,
    NoCoverageError,
    NoDataError,
    SourceUnavailableError,
    TileNotFoundError,
)
from .grid import Tile, parse_point, pixel_to_lonlat, tile_for_point, unpack_ids

__all__ = ["QueryPixel", "QueryResult", "index_pixel", "locate_ids", "query", "query_index", "query_vector"]

_COLUMNS = ["rank", "id", "lon", "lat", "tile", "row", "col", "similarity"]


@dataclass(frozen=True)
class QueryPixel:
    """The stored pixel at a point: where it is and its (128,) float32 unit-norm embedding."""

    lon: float
    lat: float
    year: int
    tile: str
    row: int
    col: int
    id: int
    centre_lon: float
    centre_lat: float
    vector: np.ndarray = field(repr=False)

    def to_json(self) -> dict:
        return {"lon": self.lon, "lat": self.lat, "year": self.year, "tile": self.tile, "row": self.row,
                "col": self.col, "id": self.id, "centre_lon": self.centre_lon, "centre_lat": self.centre_lat}


def _point(point) -> tuple[float, float]:
    if isinstance(point, str):
        return parse_point(point)
    try:
        lon, lat = (float(v) for v in point)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{point!r} is not a (lon, lat) point") from None
    parse_point(f"{lon},{lat}")  # range checks
    return lon, lat


def query_vector(point, year: int, home=None, source=None) -> QueryPixel:
    """The unit-norm embedding of the stored pixel at ``point`` ((lon, lat) or "LON,LAT").

    The tile is fetched from ``source`` when the store lacks it. NoCoverageError when no
    tile can be had there; NoDataError when the pixel is water or has no valid embedding.
    """
    from .config import resolve_home
    from .ingest import ensure_tile
    from .store import TileStore
    from .workspace import pixel_at

    lon, lat = _point(point)
    home = resolve_home(home)
    tile = tile_for_point(lon, lat)
    if not TileStore(home).has(tile, year):
        try:
            ensure_tile(tile, year, source=source, home=home)
        except (TileNotFoundError, SourceUnavailableError) as exc:
            raise NoCoverageError(f"no embedding for ({lon}, {lat}) in {year}: {exc}") from exc
    px = pixel_at(lon, lat, year, home=home)
    if not px["valid"]:
        raise NoDataError(
            f"({lon}, {lat}) falls on pixel row {px['row']}, col {px['col']} of {px['tile']} ({year}), which has "
            "no embedding (water or no data); pick a point on land"
        )
    v = np.asarray(px["int8"], dtype=np.float32)
    norm = float(np.linalg.norm(v))
    if norm == 0:
        raise NoDataError(f"the pixel at ({lon}, {lat}) has a zero embedding: nothing to search for")
    return QueryPixel(lon=lon, lat=lat, year=int(year), tile=px["tile"], row=int(px["row"]), col=int(px["col"]),
                      id=int(px["id"]), centre_lon=float(px["lon"]), centre_lat=float(px["lat"]), vector=v / norm)


@dataclass
class QueryResult:
    """Ranked matches of one query. Arrays are (k,), best first; ``similarity`` is exact cosine."""

    index: str
    year: int
    query: dict
    ids: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    tiles: list[str]
    rows: np.ndarray
    cols: np.ndarray
    similarity: np.ndarray
    params: dict = field(default_factory=dict)
    synthetic: bool = False
    query_id: int | None = None  # None when not recorded (record=False, or see warnings)
    warnings: list[str] = field(default_factory=list)  # e.g. why the history has no record of it

    def __len__(self) -> int:
        return len(self.ids)

    def matches(self) -> list[dict]:
        """One dict per match: rank (1-based), id, lon, lat, tile, row, col, similarity."""
        return match_dicts(self)

    def to_json(self) -> dict:
        """``{"index", "query", "matches": [...]}`` plus year, params and the synthetic label."""
        return {"index": self.index, "year": self.year, "synthetic": self.synthetic, "query": self.query,
                "params": self.params, "query_id": self.query_id, "warnings": list(self.warnings),
                "matches": self.matches()}

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the matches to ``.csv``, ``.parquet`` or ``.geojson`` (atomically); returns the path."""
        path = Path(path)
        suffix = path.suffix.lower()
        writers = {".csv": self._write_csv, ".parquet": self._write_parquet, ".geojson": self._write_geojson,
                   ".json": self._write_geojson}
        if suffix not in writers:
            raise InvalidInputError(f"cannot write {path.name}: use one of {', '.join(writers)}")
        with atomic_path(path) as tmp:
            writers[suffix](tmp)
        return path

    def _write_csv(self, tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=_COLUMNS)
            w.writeheader()
            for m in self.matches():
                w.writerow({**m, "lon": repr(m["lon"]), "lat": repr(m["lat"]), "similarity": repr(m["similarity"])})

    def _write_parquet(self, tmp: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({
            "rank": pa.array(np.arange(1, len(self) + 1, dtype=np.int32)),
            "id": pa.array(np.asarray(self.ids, np.int64)),
            "lon": pa.array(np.asarray(self.lon, np.float64)),
            "lat": pa.array(np.asarray(self.lat, np.float64)),
            "tile": pa.array(self.tiles, pa.string()),
            "row": pa.array(np.asarray(self.rows, np.int32)),
            "col": pa.array(np.asarray(self.cols, np.int32)),
            "similarity": pa.array(np.asarray(self.similarity, np.float32)),
        })
        meta = {b"tessera_search": json.dumps({k: v for k, v in self.to_json().items() if k != "matches"}).encode()}
        pq.write_table(table.replace_schema_metadata(meta), str(tmp))

    def _write_geojson(self, tmp: Path) -> None:
        doc = {
            "type": "FeatureCollection",
            "properties": {k: v for k, v in self.to_json().items() if k != "matches"},
            "features": [
                {"type": "Feature", "geometry": {"type": "Point", "coordinates": [m["lon"], m["lat"]]},
                 "properties": {k: m[k] for k in _COLUMNS if k not in ("lon", "lat")}}
                for m in self.matches()
            ],
        }
        tmp.write_text(json.dumps(doc))


def match_dicts(result) -> list[dict]:
    """The ranked matches of any result with ids, lon, lat, tiles, rows, cols, similarity arrays."""
    r = result
    return [
        {"rank": i + 1, "id": int(r.ids[i]), "lon": float(r.lon[i]), "lat": float(r.lat[i]), "tile": r.tiles[i],
         "row": int(r.rows[i]), "col": int(r.cols[i]), "similarity": float(r.similarity[i])}
        for i in range(len(r.ids))
    ]


def locate_ids(index, ids) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, np.ndarray]:
    """(lon, lat, tile names, rows, cols) of pixel centres for IDs of ``index``'s pixels."""
    ids = np.asarray(ids, dtype=np.int64)
    ix, iy, rows, cols = unpack_ids(ids)
    lon = np.empty(len(ids), np.float64)
    lat = np.empty(len(ids), np.float64)
    names: list[str] = [""] * len(ids)
    keys = ix * 4096 + iy
    for key in np.unique(keys):
        sel = np.flatnonzero(keys == key)
        tile = Tile(int(ix[sel[0]]), int(iy[sel[0]]))
        lon[sel], lat[sel] = pixel_to_lonlat(index.grid(tile), rows[sel], cols[sel])
        for j in sel:
            names[j] = tile.name
    return lon, lat, names, rows, cols


def index_pixel(index, point, source=None) -> QueryPixel:
    """The query pixel at ``point`` for an opened index: stored, valid, and in the index.

    NoCoverageError when the point's tile or pixel is not in the index; NoDataError on
    water / no data.
    """
    lon, lat = _point(point)
    tile = tile_for_point(lon, lat)
    if tile.name not in set(index.tiles):
        raise NoCoverageError(
            f"({lon}, {lat}) is outside index {index.name} ({index.region}, {index.year}): its tile {tile.name} "
            "is not in the index; query another index or build one that covers it"
        )
    qp = query_vector((lon, lat), index.year, home=index.home, source=source)
    if not bool(index.contains(qp.id)[0]):
        raise NoCoverageError(
            f"({lon}, {lat}) is outside index {index.name}: pixel row {qp.row}, col {qp.col} of {qp.tile} lies "
            f"outside its region ({index.region})"
        )
    return qp


def query_index(index, point, k: int = 10, nprobe: int | None = None, refine_factor: int | None = None,
                source=None, record: bool = True) -> QueryResult:
    """Query an opened :class:`~tessera_search.index.Index` by the pixel at ``point``."""
    from .catalog import Catalog

    qp = index_pixel(index, point, source=source)
    lon, lat = qp.lon, qp.lat
    res = index.search(qp.vector, k=k, nprobe=nprobe, refine_factor=refine_factor)
    lons, lats, names, rows, cols = locate_ids(index, res.ids)
    params = {"k": int(k), "nprobe": res.nprobe, "refine_factor": int(refine_factor or index.params.get("refine_factor", 10)),
              "candidates": res.candidates, "point": [lon, lat]}
    result = QueryResult(index=index.name, year=index.year, query=qp.to_json(), ids=res.ids, lon=lons, lat=lats,
                         tiles=names, rows=rows, cols=cols, similarity=res.similarity, params=params,
                         synthetic=index.synthetic)
    if record:  # a read-only workspace still answers; the result says it was not recorded
        result.query_id, why = Catalog(index.home).record_query_or_warning(index.name, qp.vector, params, len(res.ids))
        if why:
            result.warnings.append(why)
    return result


def query(point, k: int = 10, index: str | None = None, year: int | None = None, nprobe: int | None = None,
          refine_factor: int | None = None, home=None, source=None, record: bool = True) -> QueryResult:
    """The ``k`` pixels most similar to the stored pixel at ``point`` ((lon, lat) or "LON,LAT").

    ``index`` names the index; or give ``year`` to use the one index built for it.
    Errors: IndexNotFoundError (unknown index, none or several for the year),
    KTooLargeError (k above the index size), NoCoverageError (the point is outside the
    index or no tile holds it), NoDataError (water / no-data pixel).
    """
    from .index import open_index

    with open_index(index, year=year, home=home) as idx:
        return query_index(idx, point, k=k, nprobe=nprobe, refine_factor=refine_factor, source=source, record=record)
