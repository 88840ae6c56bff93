"""What a client may ask the web app, checked and bounded: JSON bodies into library arguments.

Every value a client sends is read here, with a bound (:data:`LIMITS`), and a bad one is
an :class:`~tessera_search.errors.InvalidInputError` naming the field. Clients never name
files: examples arrive as GeoJSON features, exports leave by the names the app gave them
(:func:`safe_name`).
"""

from __future__ import annotations

import math
import re

from ..errors import InvalidInputError

__all__ = ["LIMITS", "examples_features", "get_bbox", "get_bool", "get_choice", "get_float", "get_int",
           "safe_name", "split_examples"]

LIMITS = {
    "k": 10_000,  # matches per query
    "max_results": 100_000,  # threshold mode
    "min_separation": 100_000.0,  # metres
    "push": 10.0,
    "examples": 200,  # features per request
    "vertices": 1_000,  # per polygon
    "polygon_km2": 100.0,  # area of one drawn polygon
    "label_tiles": 64,  # index tiles one label / suggest run may cover
    "suggest_n": 500,
    "cv_folds": 10,
    "body_bytes": 1 << 20,
    "history": 500,
}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def get_int(body: dict, key: str, default: int | None, lo: int, hi: int) -> int | None:
    """``body[key]`` as an int in [lo, hi] (``default`` when absent or null)."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise InvalidInputError(f"{key} must be a whole number, got {value!r}")
    value = int(value)
    if not lo <= value <= hi:
        raise InvalidInputError(f"{key} must be in {lo}..{hi}, got {value}")
    return value


def get_float(body: dict, key: str, default: float | None, lo: float, hi: float) -> float | None:
    """``body[key]`` as a finite float in [lo, hi] (``default`` when absent or null)."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise InvalidInputError(f"{key} must be a number, got {value!r}")
    value = float(value)
    if not lo <= value <= hi:
        raise InvalidInputError(f"{key} must be in {lo:g}..{hi:g}, got {value:g}")
    return value


def get_bool(body: dict, key: str, default: bool = False) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidInputError(f"{key} must be true or false, got {value!r}")
    return value


def get_choice(body: dict, key: str, default: str, choices: tuple[str, ...]) -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if value not in choices:
        raise InvalidInputError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def get_bbox(body: dict, key: str = "bbox") -> tuple[float, float, float, float]:
    """``body[key]`` as (W, S, E, N) degrees with W < E and S < N."""
    value = body.get(key)
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise InvalidInputError(f"{key} must be [west, south, east, north] in degrees, got {value!r}")
    try:
        w, s, e, n = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{key} must hold four numbers, got {value!r}") from None
    w, e = max(w, -180.0), min(e, 180.0)
    s, n = max(s, -90.0), min(n, 90.0)
    if not all(math.isfinite(v) for v in (w, s, e, n)) or not (w < e and s < n):
        raise InvalidInputError(f"{key} must be [west, south, east, north] with west < east and south < north")
    return w, s, e, n


def safe_name(name: str) -> str:
    """A file name the app made (letters, digits, ``._-``; no folder, no leading dot)."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise InvalidInputError(f"{name!r} is not a file name this server gave out")
    return name


def _point(coords, where: str) -> tuple[float, float]:
    if not isinstance(coords, (list, tuple)) or len(coords) < 2:
        raise InvalidInputError(f"{where}: a point is [lon, lat], got {coords!r}")
    try:
        lon, lat = float(coords[0]), float(coords[1])
    except (TypeError, ValueError):
        raise InvalidInputError(f"{where}: a point is [lon, lat] numbers, got {coords!r}") from None
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        raise InvalidInputError(f"{where}: [{lon}, {lat}] is not a lon, lat on the globe")
    return lon, lat


def examples_features(body: dict, key: str = "examples", need_class: bool = False) -> list[dict]:
    """The request's example features (GeoJSON Point or Polygon Features), checked and bounded.

    Returns plain GeoJSON features (a ``positive`` property for queries, ``class`` for
    labelling). A polygon has at most ``vertices`` vertices and ``polygon_km2`` of area.
    """
    import shapely.geometry

    from ..geodesy import EARTH_RADIUS

    items = body.get(key)
    if not isinstance(items, list) or not items:
        raise InvalidInputError(f"{key} must be a non-empty list of GeoJSON Point or Polygon features")
    if len(items) > LIMITS["examples"]:
        raise InvalidInputError(f"{key}: at most {LIMITS['examples']} examples per request, got {len(items)}")
    out = []
    for i, feat in enumerate(items):
        where = f"{key}[{i}]"
        if not isinstance(feat, dict) or not isinstance(feat.get("geometry"), dict):
            raise InvalidInputError(f"{where} is not a GeoJSON Feature with a geometry")
        geom, props = feat["geometry"], feat.get("properties") or {}
        if not isinstance(props, dict):
            raise InvalidInputError(f"{where}: properties must be an object")
        kind = geom.get("type")
        if kind == "Point":
            coords = list(_point(geom.get("coordinates"), where))
        elif kind == "Polygon":
            rings = geom.get("coordinates")
            if not isinstance(rings, list) or len(rings) != 1 or not isinstance(rings[0], list):
                raise InvalidInputError(f"{where}: a polygon is one ring of [lon, lat] (no holes)")
            ring = [list(_point(p, where)) for p in rings[0]]
            if len(ring) > LIMITS["vertices"]:
                raise InvalidInputError(f"{where}: at most {LIMITS['vertices']} vertices, got {len(ring)}")
            if len(ring) < 3:
                raise InvalidInputError(f"{where}: a polygon needs at least 3 vertices")
            if ring[0] != ring[-1]:
                ring.append(ring[0])
            poly = shapely.geometry.Polygon(ring)
            if not poly.is_valid or poly.area == 0:
                raise InvalidInputError(f"{where}: the polygon crosses itself or has no area")
            lat0 = math.radians(poly.centroid.y)
            km2 = poly.area * (math.pi * EARTH_RADIUS / 180.0) ** 2 * math.cos(lat0) / 1e6
            if km2 > LIMITS["polygon_km2"]:
                raise InvalidInputError(f"{where}: the polygon covers {km2:,.1f} km2, more than the "
                                        f"{LIMITS['polygon_km2']:g} km2 a drawn example may")
            coords = [ring]
        else:
            raise InvalidInputError(f"{where}: a {kind!r} geometry; draw points or polygons")
        clean: dict = {}
        positive = props.get("positive", True)
        if not isinstance(positive, bool):
            raise InvalidInputError(f"{where}: positive must be true or false")
        clean["positive"] = positive
        if need_class:
            cls = props.get("class")
            if not isinstance(cls, (str, int)) or isinstance(cls, bool) or not str(cls).strip() or len(str(cls)) > 64:
                raise InvalidInputError(f"{where}: class must be a name (1-64 characters)")
            clean["class"] = str(cls).strip()
        out.append({"type": "Feature", "properties": clean, "geometry": {"type": kind, "coordinates": coords}})
    return out


def split_examples(features: list[dict]) -> tuple[list, list, list]:
    """(positive points, negative points, polygon features): what the CLI takes as
    ``--point``, ``--negative`` and ``--examples FILE``."""
    pos, neg, polys = [], [], []
    for f in features:
        if f["geometry"]["type"] == "Point":
            (pos if f["properties"]["positive"] else neg).append(tuple(f["geometry"]["coordinates"]))
        else:
            polys.append(f)
    return pos, neg, polys
