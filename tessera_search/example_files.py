"""Reading example files: GeoJSON, GeoParquet, Parquet and CSV into checked lon/lat
geometries with their properties (``(geometry, properties, row)`` per feature).

Coordinates must be WGS84 lon/lat degrees; polygons are made valid and must have area;
a GeoParquet in another CRS is transformed. :mod:`tessera_search.examples` turns the rows
into an :class:`~tessera_search.examples.ExampleSet`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from .errors import InvalidInputError

__all__ = ["check_lonlat", "read_csv", "read_geojson", "read_parquet"]

# Coordinate column pairs, tried in order (lower-cased names).
_COORD_PAIRS = (("lon", "lat"), ("lng", "lat"), ("longitude", "latitude"), ("long", "lat"), ("x", "y"))


def check_lonlat(lon: float, lat: float, where: str) -> None:
    """InvalidInputError naming ``where`` unless (lon, lat) are finite WGS84 degrees."""
    if not (math.isfinite(lon) and math.isfinite(lat) and -180.0 <= lon <= 180.0 and -90.0 <= lat < 90.0):
        raise InvalidInputError(
            f"{where}: ({lon}, {lat}) is not a lon/lat position in degrees; examples must be "
            "WGS84 lon/lat (EPSG:4326)"
        )


def read_geojson(path: Path) -> list[tuple[BaseGeometry, dict, int]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"examples file {path} cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"examples file {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or "type" not in doc:
        raise InvalidInputError(f"examples file {path} is not a GeoJSON object (no 'type' member)")
    crs = doc.get("crs")
    if crs is not None:
        name = str((crs.get("properties") or {}).get("name", "")) if isinstance(crs, dict) else ""
        if not re.search(r"(CRS84|EPSG:+4326)$", name, flags=re.IGNORECASE):
            raise InvalidInputError(
                f"examples file {path} declares CRS {name or crs!r}; examples must be WGS84 lon/lat "
                "(reproject, e.g. `ogr2ogr -t_srs EPSG:4326 out.geojson in.geojson`)"
            )
    kind = doc["type"]
    if kind == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list):
            raise InvalidInputError(f"examples file {path}: 'features' is not a list")
    elif kind == "Feature":
        features = [doc]
    else:
        features = [{"type": "Feature", "geometry": doc, "properties": {}}]
    out = []
    for i, f in enumerate(features):
        if not isinstance(f, dict) or f.get("type") != "Feature":
            raise InvalidInputError(f"examples file {path}: feature {i} is not a GeoJSON Feature")
        props = f.get("properties") or {}
        if not isinstance(props, dict):
            raise InvalidInputError(f"examples file {path}: feature {i} has properties that are not an object")
        if f.get("geometry") is None:
            raise InvalidInputError(f"examples file {path}: feature {i} has no geometry")
        out.append((_geometry(f["geometry"], f"{path}: feature {i}"), dict(props), i))
    return out


def _geometry(obj, where: str) -> BaseGeometry:
    """A valid Point / MultiPoint / (Multi)Polygon from a GeoJSON geometry object."""
    kind = obj.get("type") if isinstance(obj, dict) else None
    if kind not in ("Point", "MultiPoint", "Polygon", "MultiPolygon"):
        raise InvalidInputError(
            f"{where} is a {kind or type(obj).__name__}; examples are Points or Polygons "
            "(or MultiPoints / MultiPolygons)"
        )
    try:
        geom = shapely.geometry.shape(obj)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, shapely.errors.ShapelyError) as exc:
        raise InvalidInputError(f"{where} has bad coordinates ({exc})") from None
    return _clean(geom, where)


def _clean(geom: BaseGeometry, where: str) -> BaseGeometry:
    if geom is None or geom.is_empty:
        raise InvalidInputError(f"{where} has an empty geometry")
    coords = shapely.get_coordinates(geom)
    if not np.isfinite(coords).all():
        raise InvalidInputError(f"{where} has non-finite coordinates")
    w, s, e, n = geom.bounds
    if w < -180.0 or e > 180.0 or s < -90.0 or n >= 90.0:
        raise InvalidInputError(
            f"{where}: coordinates {geom.bounds} are not lon/lat degrees; examples must be "
            "WGS84 lon/lat (EPSG:4326)"
        )
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        if not geom.is_valid:
            fixed = shapely.make_valid(geom)
            parts = [g for g in shapely.get_parts(fixed) if g.geom_type in ("Polygon", "MultiPolygon")]
            geom = shapely.union_all(parts) if parts else shapely.Polygon()
        if geom.is_empty or geom.area == 0.0:
            raise InvalidInputError(f"{where} is a polygon without area")
    elif geom.geom_type not in ("Point", "MultiPoint"):
        raise InvalidInputError(f"{where} is a {geom.geom_type}; examples are Points or Polygons")
    return geom


def _table_rows(table, drop: Iterable[str]) -> list[dict]:
    """Rows of a pyarrow table as dicts of the remaining (scalar) columns."""
    keep = [c for c in table.column_names if c not in set(drop)]
    cols = {c: table.column(c).to_pylist() for c in keep}
    return [{c: cols[c][i] for c in keep} for i in range(table.num_rows)]


def _coords_from_table(table, source: Path) -> list[tuple[BaseGeometry, dict, int]]:
    lower = {c.lower(): c for c in table.column_names}
    for lon_name, lat_name in _COORD_PAIRS:
        if lon_name in lower and lat_name in lower:
            lon_col, lat_col = lower[lon_name], lower[lat_name]
            break
    else:
        raise InvalidInputError(
            f"examples file {source} has no coordinate columns; expected lon/lat, "
            f"longitude/latitude or x/y (degrees), found: {', '.join(table.column_names[:20])}"
        )
    try:
        lon = np.asarray(table.column(lon_col).to_numpy(zero_copy_only=False), dtype=np.float64)
        lat = np.asarray(table.column(lat_col).to_numpy(zero_copy_only=False), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"examples file {source}: columns {lon_col}/{lat_col} are not numbers ({exc})") from None
    rows = _table_rows(table, (lon_col, lat_col))
    out = []
    for i in range(table.num_rows):
        check_lonlat(float(lon[i]), float(lat[i]), f"{source} row {i}")
        props = {lon_col: float(lon[i]), lat_col: float(lat[i]), **rows[i]}
        out.append((shapely.Point(lon[i], lat[i]), props, i))
    return out


def read_parquet(path: Path) -> list[tuple[BaseGeometry, dict, int]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise InvalidInputError(f"examples file {path} is not a readable Parquet file: {exc}") from None
    meta = table.schema.metadata or {}
    if b"geo" in meta:
        return _read_geoparquet(table, json.loads(meta[b"geo"]), path)
    return _coords_from_table(table, path)


def _read_geoparquet(table, geo: dict, path: Path) -> list[tuple[BaseGeometry, dict, int]]:
    col = geo.get("primary_column", "geometry")
    if col not in table.column_names:
        raise InvalidInputError(f"GeoParquet file {path}: primary geometry column {col!r} is missing")
    info = (geo.get("columns") or {}).get(col, {})
    encoding = str(info.get("encoding", "WKB")).upper()
    if encoding != "WKB":
        raise InvalidInputError(
            f"GeoParquet file {path}: geometry encoding {encoding} is not supported; write it as WKB"
        )
    geoms = shapely.from_wkb(table.column(col).to_pylist())
    crs = info.get("crs", "OGC:CRS84")
    if crs is not None and not _is_lonlat_crs(crs):
        from pyproj import CRS, Transformer

        try:
            src = CRS.from_user_input(crs if not isinstance(crs, dict) else json.dumps(crs))
        except Exception as exc:  # pyproj raises CRSError for anything it cannot parse
            raise InvalidInputError(f"GeoParquet file {path}: cannot read its CRS ({exc})") from None
        tr = Transformer.from_crs(src, 4326, always_xy=True)
        geoms = shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    rows = _table_rows(table, (col,))
    return [(_clean(g, f"{path} row {i}"), rows[i], i) for i, g in enumerate(geoms)]


def _is_lonlat_crs(crs) -> bool:
    if isinstance(crs, dict):
        ident = crs.get("id") or {}
        return (str(ident.get("authority", "")).upper(), str(ident.get("code", ""))) in (
            ("OGC", "CRS84"), ("EPSG", "4326"))
    text = str(crs).upper().replace("::", ":")
    return text.endswith("CRS84") or text.endswith("EPSG:4326")


def read_csv(path: Path) -> list[tuple[BaseGeometry, dict, int]]:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    try:
        table = pcsv.read_csv(path)
    except (OSError, pa.ArrowException) as exc:
        raise InvalidInputError(f"examples file {path} is not a readable CSV file: {exc}") from None
    return _coords_from_table(table, path)
