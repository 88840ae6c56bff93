"""Points and polygons as GeoJSON, GeoParquet or CSV, with one metadata convention.

:func:`write_points` and :func:`write_polygons` write features in lon/lat degrees
(WGS84) by the path's suffix, with one metadata convention: a JSON object of facts
about the file (what it is, year, parameters, ``synthetic``) stored

- in GeoJSON as a top-level ``"tessera_search"`` member of the FeatureCollection;
- in (Geo)Parquet under the schema metadata key ``b"tessera_search"`` (JSON bytes),
  beside GeoParquet's ``b"geo"`` (WKB ``geometry`` column, CRS OGC:CRS84);
- for CSV in a sidecar ``<name>.csv.json`` (``{"tessera_search": {...}}``) beside the
  file (CSV has no place for it); points are ``lon``, ``lat`` columns, polygons a WKT
  ``geometry`` column.

:func:`read_metadata` reads it back from any of the three.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ._io import atomic_path
from .errors import InvalidInputError
from .export import VECTOR_SUFFIXES

__all__ = ["csv_metadata_path", "read_metadata", "write_points", "write_points_geojson", "write_polygons"]


def csv_metadata_path(path: str | os.PathLike[str]) -> Path:
    """The metadata sidecar of a CSV: ``places.csv.json`` for ``places.csv``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".geojson", ".json"):
        return "geojson"
    if suffix in (".parquet", ".csv"):
        return suffix[1:]
    got = f"'{path.suffix}'" if path.suffix else "no extension"
    raise InvalidInputError(f"{path}: {got} is not a vector format; use one of {', '.join(VECTOR_SUFFIXES)}")


def _columns(columns: Mapping[str, Sequence] | None, n: int, reserved: Sequence[str]) -> dict[str, object]:
    """Columns as numpy arrays (numbers, bools) or lists (anything else), each of ``n`` values."""
    out: dict[str, object] = {}
    for name, values in (columns or {}).items():
        name = str(name)
        if name in reserved:
            raise ValueError(f"column {name!r} is reserved for the geometry ({', '.join(reserved)})")
        if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
            col = values.ravel()
        else:
            col = values.tolist() if isinstance(values, np.ndarray) else list(values)
        if len(col) != n:
            raise ValueError(f"column {name!r} has {len(col)} values for {n} features")
        out[name] = col
    return out


def _as_list(col) -> list:
    return col.tolist() if isinstance(col, np.ndarray) else list(col)


def _meta_json(meta: Mapping[str, object] | None) -> dict:
    return json.loads(json.dumps({str(k): _json_value(v) for k, v in (meta or {}).items()}, default=str))


def write_points(
    path: str | os.PathLike[str],
    lon: Sequence[float] | np.ndarray,
    lat: Sequence[float] | np.ndarray,
    columns: Mapping[str, Sequence] | None = None,
    meta: Mapping[str, object] | None = None,
) -> Path:
    """Points (degrees, WGS84) with per-point ``columns`` as ``.geojson``/``.json``,
    ``.parquet`` or ``.csv`` (by suffix), atomically; returns the path.

    ``columns`` maps a name to one value per point (numpy arrays keep their dtype in
    Parquet; NaN and None become null in GeoJSON and empty in CSV). ``meta``: facts about
    the file, stored by the convention of the module docstring. GeoJSON coordinates are
    rounded to 1e-8 degrees (about 1 mm); Parquet also has plain ``lon``/``lat`` columns.
    """
    path = Path(path)
    fmt = _format(path)
    lon = np.asarray(lon, dtype=np.float64).ravel()
    lat = np.asarray(lat, dtype=np.float64).ravel()
    if lon.shape != lat.shape:
        raise ValueError(f"{lon.size} longitudes for {lat.size} latitudes")
    cols = _columns(columns, lon.size, ("lon", "lat", "geometry"))
    if fmt == "geojson":
        geoms = [{"type": "Point", "coordinates": [round(x, 8), round(y, 8)]}
                 for x, y in zip(lon.tolist(), lat.tolist(), strict=True)]
        _write_geojson(path, geoms, cols, meta)
    elif fmt == "parquet":
        import shapely

        wkb = shapely.to_wkb(shapely.points(lon, lat)) if lon.size else np.empty(0, object)
        bbox = [float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())] if lon.size else None
        _write_parquet(path, {"lon": lon, "lat": lat, **cols}, list(wkb), ["Point"], bbox, meta)
    else:
        _write_csv(path, {"lon": lon, "lat": lat, **cols}, meta)
    return path


def write_polygons(
    path: str | os.PathLike[str],
    geometries: Sequence,
    columns: Mapping[str, Sequence] | None = None,
    meta: Mapping[str, object] | None = None,
) -> Path:
    """Polygons (or any geometry; lon/lat degrees, WGS84) with per-feature ``columns`` as
    ``.geojson``/``.json``, ``.parquet`` (WKB) or ``.csv`` (a WKT ``geometry`` column), by
    suffix, atomically; returns the path.

    ``geometries``: GeoJSON geometry dicts or shapely geometries. ``columns`` and ``meta``
    as for :func:`write_points`.
    """
    import shapely
    from shapely.geometry import mapping, shape

    path = Path(path)
    fmt = _format(path)
    geoms = list(geometries)
    cols = _columns(columns, len(geoms), ("geometry",))
    if fmt == "geojson":
        _write_geojson(path, [g if isinstance(g, Mapping) else mapping(g) for g in geoms], cols, meta)
        return path
    shapes = [shape(g) if isinstance(g, Mapping) else g for g in geoms]
    if fmt == "parquet":
        bounds = shapely.total_bounds(shapes) if shapes else None
        bbox = [float(v) for v in bounds] if shapes else None
        types = sorted({g.geom_type for g in shapes})
        wkb = list(shapely.to_wkb(shapes)) if shapes else []
        _write_parquet(path, cols, wkb, types, bbox, meta)
    else:
        wkt = [shapely.to_wkt(g, rounding_precision=-1) for g in shapes]
        _write_csv(path, {**cols, "geometry": wkt}, meta)
    return path


def write_points_geojson(
    path: str | os.PathLike[str],
    lon: np.ndarray,
    lat: np.ndarray,
    properties: Mapping[str, Sequence],
    metadata: Mapping[str, object] | None = None,
) -> Path:
    """GeoJSON points whatever the suffix of ``path``: :func:`write_points` for callers that
    always want GeoJSON (``properties`` are its ``columns``, ``metadata`` its ``meta``)."""
    path = Path(path)
    lon = np.asarray(lon, dtype=np.float64).ravel()
    lat = np.asarray(lat, dtype=np.float64).ravel()
    if lon.shape != lat.shape:
        raise ValueError(f"{lon.size} longitudes for {lat.size} latitudes")
    cols = _columns(properties, lon.size, ("geometry",))
    geoms = [{"type": "Point", "coordinates": [round(x, 8), round(y, 8)]}
             for x, y in zip(lon.tolist(), lat.tolist(), strict=True)]
    _write_geojson(path, geoms, cols, metadata)
    return path


def _write_geojson(path: Path, geoms: list, cols: dict, meta) -> None:
    lists = {k: _as_list(v) for k, v in cols.items()}
    features = [
        {"type": "Feature", "geometry": g, "properties": {k: _json_value(v[i]) for k, v in lists.items()}}
        for i, g in enumerate(geoms)
    ]
    doc = {"type": "FeatureCollection", "tessera_search": _meta_json(meta), "features": features}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, default=str) + "\n")


def _write_parquet(path: Path, cols: dict, wkb: list, types: list[str], bbox, meta) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {k: pa.array(v) for k, v in cols.items()}
    arrays["geometry"] = pa.array(wkb, type=pa.binary())
    column = {"encoding": "WKB", "geometry_types": types}
    if bbox is not None:
        column["bbox"] = bbox
    geo = {"version": "1.0.0", "primary_column": "geometry", "columns": {"geometry": column}}
    table = pa.table(arrays).replace_schema_metadata({
        b"geo": json.dumps(geo).encode(),
        b"tessera_search": json.dumps(_meta_json(meta)).encode(),
    })
    with atomic_path(path) as tmp:
        pq.write_table(table, str(tmp))


def _csv_cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if not math.isfinite(v) else repr(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(_json_value(v), default=str)
    return str(v)


def _write_csv(path: Path, cols: dict, meta) -> None:
    import csv

    # The sidecar first: a CSV is never visible without its metadata.
    side = csv_metadata_path(path)
    with atomic_path(side) as tmp:
        tmp.write_text(json.dumps({"tessera_search": _meta_json(meta)}, indent=1) + "\n")
    names = list(cols)
    lists = [_as_list(cols[k]) for k in names]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(names)
        for row in zip(*lists, strict=True):
            w.writerow([_csv_cell(v) for v in row])


def read_metadata(path: str | os.PathLike[str]) -> dict:
    """The ``tessera_search`` metadata of a file :func:`write_points` / :func:`write_polygons`
    wrote (GeoJSON member, Parquet schema key or CSV sidecar); ``{}`` when it has none."""
    path = Path(path)
    fmt = _format(path)
    if fmt == "geojson":
        return dict(json.loads(path.read_text()).get("tessera_search") or {})
    if fmt == "parquet":
        import pyarrow.parquet as pq

        raw = (pq.read_schema(str(path)).metadata or {}).get(b"tessera_search")
        return dict(json.loads(raw)) if raw else {}
    side = csv_metadata_path(path)
    return dict(json.loads(side.read_text()).get("tessera_search") or {}) if side.exists() else {}


def _json_value(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, np.ndarray):
        return [_json_value(x) for x in v.tolist()]
    return v
