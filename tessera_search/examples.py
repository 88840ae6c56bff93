"""Labelled examples: read them from files, and sample their embeddings from the store.

Used by few-shot labelling (:mod:`tessera_search.label`) and by query-by-examples.

Reading (:func:`read_examples`)
-------------------------------
- **GeoJSON** (``.geojson`` / ``.json``): a FeatureCollection, a Feature or a bare
  geometry, WGS84 lon/lat. Point, MultiPoint, Polygon and MultiPolygon geometries;
  properties are kept as given. A MultiPoint becomes one example per point.
- **GeoParquet** (``.parquet`` with ``geo`` metadata): the primary geometry column
  (WKB), reprojected to lon/lat when the metadata names another CRS.
- **Plain Parquet / CSV**: one point per row from a pair of coordinate columns, found by
  name (case-insensitive): ``lon``/``lat``, ``lng``/``lat``, ``longitude``/``latitude``
  or ``x``/``y`` (degrees).

A *class field* names the property holding each example's class; rows whose class is
missing or null are skipped (counted in :attr:`ExampleSet.skipped`), so a suggestion
file (``tessera-search suggest``) can be fed back with only some rows labelled. A
*polarity field* (``positive`` by default) marks positive and negative examples for
query-by-examples (:meth:`ExampleSet.polarity`).

Sampling (:func:`sample_examples`)
----------------------------------
A point gives the pixel that holds it (:func:`~tessera_search.grid.tile_for_point`,
then :func:`~tessera_search.grid.lonlat_to_pixel`; when that pixel's centre lies in a
neighbouring cell and the neighbour is stored, the neighbour's own pixel, as the
ownership rule says). A polygon gives the valid pixels whose centres lie inside it and in
their tile's own cell, at most ``max_per_polygon`` of them, drawn with a seeded
generator. Examples on water or no-data pixels are dropped and listed in
:attr:`ExampleSamples.dropped`. Tiles missing from the store raise
:class:`~tessera_search.errors.TileNotFoundError` naming them and the download command,
or are fetched first when a ``source`` is given.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from .config import resolve_home
from .example_files import check_lonlat, read_csv, read_geojson, read_parquet
from .errors import InvalidInputError, NoDataError
from .grid import (
    Tile,
    lonlat_to_pixel,
    owned_mask,
    pack_ids,
    pixel_to_lonlat,
    tile_for_point,
)

__all__ = [
    "DEFAULT_MAX_PER_POLYGON",
    "Example",
    "ExampleSamples",
    "ExampleSet",
    "read_examples",
    "sample_examples",
]

DEFAULT_MAX_PER_POLYGON = 200
"""Pixels sampled at most from one polygon (a large field would otherwise dominate)."""
_TRUE = {"1", "true", "yes", "y", "positive", "pos", "+", "t"}
_FALSE = {"0", "false", "no", "n", "negative", "neg", "-", "f"}

# ======================================================================================
# Examples
# ======================================================================================


@dataclass(frozen=True)
class Example:
    """One labelled geometry: a shapely Point or (Multi)Polygon in lon/lat degrees.

    ``index`` is the example's position in its :class:`ExampleSet`; ``feature`` the
    position of the feature or row it came from in the file (a MultiPoint feature gives
    several examples with one ``feature``).
    """

    geometry: BaseGeometry
    properties: dict
    index: int
    feature: int

    @property
    def kind(self) -> str:
        """``"point"`` or ``"polygon"``."""
        return "point" if self.geometry.geom_type == "Point" else "polygon"


@dataclass
class ExampleSet:
    """Examples read from one file (or built in Python), with their class field.

    ``skipped`` counts features or rows left out because their class was missing.
    """

    examples: list[Example]
    class_field: str | None = None
    source: str = ""
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self):
        return iter(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]

    @classmethod
    def from_points(cls, lon: Sequence[float], lat: Sequence[float], labels: Sequence | None = None,
                    class_field: str = "class") -> ExampleSet:
        """Point examples from coordinate arrays (degrees) and optional class labels."""
        lon = np.asarray(lon, dtype=np.float64).ravel()
        lat = np.asarray(lat, dtype=np.float64).ravel()
        if lon.shape != lat.shape:
            raise InvalidInputError(f"{lon.size} longitudes but {lat.size} latitudes")
        if labels is not None and len(labels) != lon.size:
            raise InvalidInputError(f"{lon.size} points but {len(labels)} labels")
        out = []
        for i, (x, y) in enumerate(zip(lon.tolist(), lat.tolist(), strict=True)):
            check_lonlat(x, y, f"point {i}")
            props = {} if labels is None else {class_field: _plain(labels[i])}
            out.append(Example(shapely.Point(x, y), props, i, i))
        return cls(out, class_field if labels is not None else None, "points")

    def labels(self, class_field: str | None = None) -> list[str]:
        """The class name of every example (``str`` of the property; ints stay ints as text)."""
        key = class_field or self.class_field
        if key is None:
            raise InvalidInputError("no class field given; pass class_field=NAME (e.g. crop)")
        out = []
        for ex in self.examples:
            value = ex.properties.get(key)
            name = _class_name(value)
            if name is None:
                raise InvalidInputError(
                    f"example {ex.index} ({self.source or 'examples'}) has no {key!r}; "
                    "label it or remove it"
                )
            out.append(name)
        return out

    def polarity(self, field: str = "positive") -> np.ndarray:
        """(N,) bool: True for positive examples, from ``field`` (missing: positive).

        Accepted values: true/false, 1/0, yes/no, positive/negative, +/-.
        """
        out = np.ones(len(self.examples), dtype=bool)
        for ex in self.examples:
            value = ex.properties.get(field)
            if value is None:
                continue
            text = str(value).strip().lower()
            if text in _TRUE:
                continue
            if text in _FALSE:
                out[ex.index] = False
                continue
            raise InvalidInputError(
                f"example {ex.index}: {field}={value!r} is neither positive nor negative "
                "(use true/false, 1/0, positive/negative)"
            )
        return out

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of all examples, degrees."""
        if not self.examples:
            raise InvalidInputError("no examples")
        b = np.array([ex.geometry.bounds for ex in self.examples])
        return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())


def _plain(value):
    """numpy scalars -> Python scalars (JSON-friendly properties)."""
    return value.item() if isinstance(value, np.generic) else value


def _class_name(value) -> str | None:
    """A class label as text: None / NaN / '' are missing; 3.0 reads as '3'."""
    value = _plain(value)
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value.is_integer():
            return str(int(value))
        return repr(value)
    text = str(value).strip()
    return text or None


# ======================================================================================
# Reading files
# ======================================================================================


def read_examples(path: str | os.PathLike[str], class_field: str | None = None) -> ExampleSet:
    """Read examples from GeoJSON, GeoParquet, Parquet or CSV (see the module docstring).

    With ``class_field``, examples without a class are skipped (and counted), and a
    field that no example has raises :class:`InvalidInputError` naming the fields there
    are. Without it, every example is kept.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"examples file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".geojson", ".json"):
        raw = read_geojson(path)
    elif suffix in (".parquet", ".geoparquet", ".pq"):
        raw = read_parquet(path)
    elif suffix in (".csv", ".txt"):
        raw = read_csv(path)
    else:
        raise InvalidInputError(
            f"examples file {path}: unknown format {suffix or '(no suffix)'}; use .geojson, "
            ".parquet (GeoParquet or lon/lat columns) or .csv (lon/lat columns)"
        )
    return _finish(raw, class_field, str(path))


def _finish(raw: list[tuple[BaseGeometry, dict, int]], class_field: str | None, source: str) -> ExampleSet:
    """Split multi-points, validate, apply the class field."""
    if not raw:
        raise InvalidInputError(f"{source} holds no examples")
    if class_field is not None and not any(class_field in props for _, props, _ in raw):
        names = sorted({k for _, props, _ in raw for k in props})
        shown = ", ".join(names[:25]) + (", ..." if len(names) > 25 else "")
        raise InvalidInputError(
            f"{source}: no example has the class field {class_field!r}; fields there: "
            f"{shown or '(none)'}; pass class_field=NAME with one of them"
        )
    examples: list[Example] = []
    skipped = 0
    for geom, props, feature in raw:
        if class_field is not None and _class_name(props.get(class_field)) is None:
            skipped += 1
            continue
        parts = shapely.get_parts(geom) if geom.geom_type == "MultiPoint" else [geom]
        for part in parts:
            examples.append(Example(part, props, len(examples), feature))
    if not examples:
        raise InvalidInputError(f"{source}: no example has a value in {class_field!r}")
    return ExampleSet(examples, class_field, source, skipped)


# ======================================================================================
# Sampling embeddings
# ======================================================================================


@dataclass
class ExampleSamples:
    """Embeddings of examples, one row per sampled pixel.

    vectors: (N, 128) int8; scales: (N,) float32 (embedding = vectors * scales);
    example: (N,) int64 index into :attr:`examples`; ids: (N,) int64 pixel IDs;
    tile_ix, tile_iy, row, col: (N,) int64; lon, lat: (N,) float64 pixel centres (degrees).
    ``dropped`` lists ``(example index, reason)`` for examples that gave no pixel.
    """

    examples: ExampleSet
    year: int
    vectors: np.ndarray
    scales: np.ndarray
    example: np.ndarray
    ids: np.ndarray
    tile_ix: np.ndarray
    tile_iy: np.ndarray
    row: np.ndarray
    col: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    dropped: list[tuple[int, str]] = field(default_factory=list)
    synthetic: bool = False
    dataset_versions: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def labels(self, class_field: str | None = None) -> np.ndarray:
        """(N,) object array: the class name of each sampled pixel's example."""
        names = self.examples.labels(class_field)
        return np.array([names[i] for i in self.example.tolist()], dtype=object)

    def subset(self, keep: np.ndarray) -> ExampleSamples:
        """The samples selected by a boolean mask or index array."""
        k = np.asarray(keep)
        return ExampleSamples(
            self.examples, self.year, self.vectors[k], self.scales[k], self.example[k], self.ids[k],
            self.tile_ix[k], self.tile_iy[k], self.row[k], self.col[k], self.lon[k], self.lat[k],
            list(self.dropped), self.synthetic, self.dataset_versions,
        )


def _example_tiles(ex: Example) -> list[Tile]:
    if ex.kind == "point":
        return [tile_for_point(ex.geometry.x, ex.geometry.y)]
    from .regions import tiles_for_geometry

    return tiles_for_geometry(ex.geometry)


def sample_examples(
    examples: ExampleSet | str | os.PathLike[str],
    year: int,
    home: str | os.PathLike[str] | None = None,
    *,
    class_field: str | None = None,
    max_per_polygon: int = DEFAULT_MAX_PER_POLYGON,
    seed: int = 0,
    source: str | None = None,
    progress=None,
) -> ExampleSamples:
    """Sample the embeddings of ``examples`` (a file or an :class:`ExampleSet`) for ``year``.

    Points give one pixel each, polygons up to ``max_per_polygon`` valid pixels. Raises
    :class:`TileNotFoundError` when tiles are not stored (unless ``source`` is given,
    then they are downloaded), :class:`NoDataError` when no example has a valid pixel.
    """
    from .store import TileStore

    if not isinstance(examples, ExampleSet):
        examples = read_examples(examples, class_field)
    if max_per_polygon < 1:
        raise InvalidInputError(f"max_per_polygon must be at least 1, got {max_per_polygon}")
    year = int(year)
    home = resolve_home(home)
    store = TileStore(home)
    where: dict[Tile, list[int]] = {}
    dropped: list[tuple[int, str]] = []
    for ex in examples:
        ts = _example_tiles(ex)
        if not ts:
            dropped.append((ex.index, "covers no tile"))
        for t in ts:
            where.setdefault(t, []).append(ex.index)
    from .workspace import Workspace

    Workspace.of(home).ensure_tiles(where, year, source=source,
                                    what=f"the examples in {examples.source or 'the example set'}", progress=progress)

    # Points first: the pixel holding each point, then the ownership rule.
    point_hits: dict[Tile, list[tuple[int, int, int]]] = {}  # tile -> [(example, row, col)]
    poly_hits: dict[int, list[tuple[Tile, np.ndarray, np.ndarray]]] = {}
    valid_cache: dict[Tile, np.ndarray] = {}

    def valid_of(t: Tile) -> np.ndarray:
        if t not in valid_cache:
            valid_cache[t] = store.read_valid(t, year)
        return valid_cache[t]

    for t in sorted(where):
        grid = store.grid(t, year)
        idx = where[t]
        pts = [i for i in idx if examples[i].kind == "point"]
        if pts:
            lon = np.array([examples[i].geometry.x for i in pts])
            lat = np.array([examples[i].geometry.y for i in pts])
            rows, cols, inside = lonlat_to_pixel(grid, lon, lat)
            clon, clat = pixel_to_lonlat(grid, np.where(inside, rows, 0), np.where(inside, cols, 0))
            for j, i in enumerate(pts):
                if not inside[j]:
                    dropped.append((i, f"outside the grid of {t.name}"))
                    continue
                tt, r, c = t, int(rows[j]), int(cols[j])
                owner = tile_for_point(float(clon[j]), float(clat[j]))
                if owner != t and store.has(owner, year):
                    og = store.grid(owner, year)
                    r2, c2, in2 = lonlat_to_pixel(og, lon[j], lat[j])
                    if bool(np.ravel(in2)[0]):
                        tt, r, c = owner, int(np.ravel(r2)[0]), int(np.ravel(c2)[0])
                if not valid_of(tt)[r, c]:
                    dropped.append((i, f"no valid embedding at pixel ({r}, {c}) of {tt.name} (water or no data)"))
                    continue
                point_hits.setdefault(tt, []).append((i, r, c))
        for i in idx:
            if examples[i].kind != "polygon":
                continue
            rows, cols = _polygon_pixels(examples[i].geometry, grid, valid_of(t))
            if rows.size:
                poly_hits.setdefault(i, []).append((t, rows, cols))

    # Polygons: every candidate pixel over all their tiles, then a seeded cap.
    for ex in examples:
        if ex.kind != "polygon":
            continue
        parts = poly_hits.get(ex.index, [])
        n = sum(r.size for _, r, _ in parts)
        if n == 0:
            dropped.append((ex.index, "no valid pixel centre inside the polygon"))
            continue
        chosen = np.arange(n)
        if n > max_per_polygon:
            rng = np.random.default_rng([int(seed), ex.index])
            chosen = np.sort(rng.choice(n, size=max_per_polygon, replace=False))
        offset = 0
        for t, r, c in parts:
            sel = chosen[(chosen >= offset) & (chosen < offset + r.size)] - offset
            offset += r.size
            for rr, cc in zip(r[sel].tolist(), c[sel].tolist(), strict=True):
                point_hits.setdefault(t, []).append((ex.index, rr, cc))

    if not point_hits:
        reasons = "; ".join(f"example {i}: {why}" for i, why in dropped[:5])
        raise NoDataError(
            f"none of the {len(examples)} examples has a valid pixel in {year} ({reasons}); "
            "move them onto land, or check the year"
        )
    chunks = []
    versions, synthetic = set(), False
    for t in sorted(point_hits):
        hits = np.array(point_hits[t], dtype=np.int64)
        vec, sc = store.read_pixels(t, year, hits[:, 1], hits[:, 2])
        grid = store.grid(t, year)
        lon, lat = pixel_to_lonlat(grid, hits[:, 1], hits[:, 2])
        attrs = store.attrs(t, year)
        versions.add(str(attrs.get("dataset_version", "")))
        synthetic |= bool(attrs.get("synthetic", False))
        chunks.append((t, hits, vec, sc, lon, lat))
    ex_idx = np.concatenate([h[:, 0] for _, h, *_ in chunks])
    order = np.argsort(ex_idx, kind="stable")  # samples in example order
    cat = lambda k: np.concatenate([c[k] for c in chunks])[order]  # noqa: E731
    tix = np.concatenate([np.full(len(h), t.ix, np.int64) for t, h, *_ in chunks])[order]
    tiy = np.concatenate([np.full(len(h), t.iy, np.int64) for t, h, *_ in chunks])[order]
    rows = np.concatenate([h[:, 1] for _, h, *_ in chunks])[order]
    cols = np.concatenate([h[:, 2] for _, h, *_ in chunks])[order]
    return ExampleSamples(
        examples=examples, year=year, vectors=cat(2), scales=cat(3), example=ex_idx[order],
        ids=pack_ids(tix, tiy, rows, cols), tile_ix=tix, tile_iy=tiy, row=rows, col=cols,
        lon=cat(4), lat=cat(5), dropped=sorted(dropped), synthetic=synthetic,
        dataset_versions=tuple(sorted(versions)),
    )


def _polygon_pixels(poly: BaseGeometry, grid, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the grid's valid, owned pixels whose centres lie inside ``poly``."""
    # The window: the polygon's envelope, densified (its edges curve in UTM), projected.
    coords = shapely.get_coordinates(shapely.segmentize(poly.envelope, 0.001))
    x_rows, x_cols = _raw_pixel(grid, coords[:, 0], coords[:, 1])
    r0 = max(int(np.floor(x_rows.min())) - 1, 0)
    r1 = min(int(np.ceil(x_rows.max())) + 2, grid.height)
    c0 = max(int(np.floor(x_cols.min())) - 1, 0)
    c1 = min(int(np.ceil(x_cols.max())) + 2, grid.width)
    if r0 >= r1 or c0 >= c1:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    rr, cc = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
    keep = valid[r0:r1, c0:c1] & owned_mask(grid)[r0:r1, c0:c1]
    rr, cc = rr[keep], cc[keep]
    if rr.size == 0:
        return rr.astype(np.int64), cc.astype(np.int64)
    lon, lat = pixel_to_lonlat(grid, rr, cc)
    inside = shapely.contains_xy(poly, lon, lat)
    return rr[inside].astype(np.int64), cc[inside].astype(np.int64)


def _raw_pixel(grid, lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """Fractional (row, col) positions of lon/lat points on the grid (may be outside)."""
    from .grid import to_utm

    x, y = to_utm(grid.epsg).transform(np.asarray(lon, np.float64), np.asarray(lat, np.float64))
    a, _, c, _, e, f = grid.transform
    return (np.asarray(y) - f) / e, (np.asarray(x) - c) / a
