"""The query vector: example pixels (points, polygons, files, negatives, another year) in,
one unit-norm (128,) float32 vector out, with a record of where it came from."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError, NoCoverageError, NoDataError, SourceUnavailableError, TileNotFoundError
from ..grid import Tile, parse_point, tile_for_point

DEFAULT_PUSH = 0.5


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


@dataclass
class QuerySpec:
    """A query vector and where it came from. ``vector``: (128,) float32, unit norm.

    ``year`` is the examples' year; ``positives`` / ``negatives`` describe each example
    (kind, pixels, tile, lon, lat, and for a single point its row, col and id);
    ``dropped`` says which examples gave no pixel and why.
    """

    vector: np.ndarray
    year: int
    push: float = DEFAULT_PUSH
    positives: list[dict] = field(default_factory=list)
    negatives: list[dict] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"example_year": int(self.year), "push": float(self.push), "positives": list(self.positives),
                "negatives": list(self.negatives), "dropped": list(self.dropped)}

    @classmethod
    def from_json(cls, doc: dict, vector) -> QuerySpec:
        """The spec recorded by :meth:`to_json` with its exact vector (history, replay)."""
        return cls(np.asarray(vector, np.float32), int(doc["example_year"]), float(doc.get("push", DEFAULT_PUSH)),
                   list(doc.get("positives", [])), list(doc.get("negatives", [])), list(doc.get("dropped", [])))


def as_point(point) -> tuple[float, float]:
    """``(lon, lat)`` from a pair or a ``"LON,LAT"`` string, range-checked."""
    if isinstance(point, str):
        return parse_point(point)
    try:
        lon, lat = (float(v) for v in point)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{point!r} is not a (lon, lat) point") from None
    parse_point(f"{lon},{lat}")  # range checks
    return lon, lat


def unit_rows(q: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float64); zero rows stay zero."""
    x = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    n[n == 0] = 1.0
    return x / n


class PcaColours:
    """False colours of embeddings: their unit directions on the three principal axes of
    ``sample`` ((n, 128) unit vectors), each axis stretched between its 2nd and 98th
    percentile. Used by the query quicklook and the web app's embedding layer."""

    def __init__(self, sample: np.ndarray) -> None:
        x = np.asarray(sample, np.float64)
        self.mean = x.mean(axis=0)
        x = x - self.mean
        # the top 3 principal axes from the 128 x 128 covariance (no n x 128 SVD factor)
        _, vecs = np.linalg.eigh(x.T @ x)
        basis = vecs[:, ::-1][:, :3]
        # a fixed sign per axis (the largest loading positive), so colours do not flip between runs
        basis *= np.where(basis[np.argmax(np.abs(basis), axis=0), range(3)] < 0, -1.0, 1.0)
        self.basis = basis
        proj = x @ basis
        self.lo, self.hi = np.percentile(proj, 2, axis=0), np.percentile(proj, 98, axis=0)

    def stretch(self, rows: np.ndarray) -> np.ndarray:
        """(n, 3) values in [0, 1] of (n, 128) vectors (int8 or float; zero rows stay zero)."""
        return np.clip(((unit_rows(rows) - self.mean) @ self.basis - self.lo) / np.maximum(self.hi - self.lo, 1e-9), 0, 1)

    def colours(self, rows: np.ndarray, lo: int = 25, span: int = 225) -> np.ndarray:
        """(n, 3) uint8 colours ``lo + span * stretch``."""
        return (lo + span * self.stretch(rows)).astype(np.uint8)


def query_vector(point, year: int, home=None, source=None) -> QueryPixel:
    """The unit-norm embedding of the stored pixel at ``point`` ((lon, lat) or "LON,LAT").

    ``home``: a :class:`~tessera_search.workspace.Workspace` or its path. The tile is
    fetched from ``source`` when the store lacks it. NoCoverageError when no tile can be
    had there; NoDataError when the pixel is water or has no valid embedding.
    """
    from ..workspace import Workspace

    lon, lat = as_point(point)
    ws = Workspace.of(home)
    try:
        ws.ensure_tiles([tile_for_point(lon, lat)], year, source=source, what=f"the point ({lon}, {lat})")
    except (TileNotFoundError, SourceUnavailableError) as exc:
        raise NoCoverageError(f"no embedding for ({lon}, {lat}) in {year}: {exc}",
                              details=getattr(exc, "details", None)) from exc
    px = ws.pixel(lon, lat, year)
    if not px.valid:
        raise NoDataError(
            f"({lon}, {lat}) falls on pixel row {px.row}, col {px.col} of {px.tile} ({year}), which has "
            "no embedding (water or no data); pick a point on land"
        )
    v = px.unit_vector()
    if not np.any(v):
        raise NoDataError(f"the pixel at ({lon}, {lat}) has a zero embedding: nothing to search for")
    return QueryPixel(lon=lon, lat=lat, year=int(year), tile=px.tile, row=px.row, col=px.col, id=px.id,
                      centre_lon=px.lon, centre_lat=px.lat, vector=v)


def index_pixel(index, point, source=None) -> QueryPixel:
    """The query pixel at ``point`` for an opened index: stored, valid, and in the index.

    NoCoverageError when the point's tile or pixel is not in the index; NoDataError on
    water / no data.
    """
    lon, lat = as_point(point)
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


def point_query(index, point, source=None) -> QuerySpec:
    """The query spec of one example pixel that must lie in ``index`` (the plain query)."""
    qp = index_pixel(index, point, source=source)
    return QuerySpec(np.asarray(qp.vector, np.float32), index.year, DEFAULT_PUSH,
                     [{"kind": "point", "pixels": 1, **qp.to_json(), "lon": qp.centre_lon, "lat": qp.centre_lat}])


def combine(positive_dirs: np.ndarray, negative_dirs: np.ndarray | None, push: float) -> np.ndarray:
    """``normalise(mean(positives) - push * mean(negatives))`` of unit example directions."""
    p = np.asarray(positive_dirs, dtype=np.float64).mean(axis=0)
    q = p - float(push) * np.asarray(negative_dirs, dtype=np.float64).mean(axis=0) if (
        negative_dirs is not None and len(negative_dirs)) else p
    norm = np.linalg.norm(q)
    if norm == 0 or not np.isfinite(norm):
        raise InvalidInputError("the positives and negatives cancel out: lower push or change the examples")
    return (q / norm).astype(np.float32)


def example_query(
    year: int,
    points=(),
    negatives=(),
    examples: str | os.PathLike[str] | None = None,
    example_year: int | None = None,
    push: float = DEFAULT_PUSH,
    polarity_field: str = "positive",
    max_per_polygon: int = 500,
    home=None,
    source=None,
) -> QuerySpec:
    """Build the query vector from positive points, negative points and an examples file.

    ``points`` / ``negatives``: (lon, lat) pairs; ``examples``: GeoJSON, GeoParquet or
    CSV of points or polygons whose ``polarity_field`` says positive or negative (absent:
    positive). Embeddings come from ``example_year`` (default ``year``). Each example's
    direction is the normalised mean of its unit pixel vectors, so a polygon counts once.
    """
    import shapely

    from ..examples import Example, ExampleSet, read_examples, sample_examples

    if push < 0 or not math.isfinite(push):
        raise InvalidInputError(f"push must be a finite number >= 0, got {push}")
    ex: list[Example] = []
    pos: list[bool] = []
    for kind, pts, is_pos in (("point", points, True), ("negative", negatives, False)):
        for p in pts:
            lon, lat = as_point(p)
            ex.append(Example(shapely.Point(lon, lat), {"source": kind}, len(ex), len(ex)))
            pos.append(is_pos)
    label = "the query's points"
    if examples is not None:
        file_set = read_examples(examples)
        polarity = file_set.polarity(polarity_field)
        for e, is_pos in zip(file_set, polarity, strict=True):
            ex.append(Example(e.geometry, dict(e.properties), len(ex), len(ex)))
            pos.append(bool(is_pos))
        label = f"the examples in {Path(examples).name}"
    if not ex:
        raise InvalidInputError("no examples: give points (lon, lat) or an examples file")
    if not any(pos):
        raise InvalidInputError("every example is negative: give at least one positive example")
    yr = int(example_year if example_year is not None else year)
    samples = sample_examples(ExampleSet(ex, None, label), yr, home=home, max_per_polygon=max_per_polygon,
                              source=source)
    dirs, info = {}, {}
    u = unit_rows(samples.vectors)
    for i in np.unique(samples.example):
        sel = samples.example == i
        d = u[sel].mean(axis=0)
        n = np.linalg.norm(d)
        if n > 0:
            dirs[int(i)] = d / n
            j = np.flatnonzero(sel)[0]
            info[int(i)] = {"kind": ex[int(i)].kind, "pixels": int(sel.sum()), "tile": Tile(
                int(samples.tile_ix[j]), int(samples.tile_iy[j])).name,
                "lon": float(samples.lon[j]), "lat": float(samples.lat[j])}
            if ex[int(i)].kind == "point":
                info[int(i)].update(row=int(samples.row[j]), col=int(samples.col[j]), id=int(samples.ids[j]),
                                    year=yr)
    dropped = [f"example {i} ({ex[i].properties.get('source', ex[i].kind)}): {why}" for i, why in samples.dropped]
    pos_idx = [i for i in range(len(ex)) if pos[i] and i in dirs]
    neg_idx = [i for i in range(len(ex)) if not pos[i] and i in dirs]
    if not pos_idx:
        raise NoDataError(
            "no positive example has a valid pixel (water or no data)"
            + (f": {'; '.join(dropped)}" if dropped else "") + "; pick another place"
        )
    q = combine(np.array([dirs[i] for i in pos_idx]), np.array([dirs[i] for i in neg_idx]) if neg_idx else None, push)
    return QuerySpec(q, yr, float(push), [info[i] for i in pos_idx], [info[i] for i in neg_idx], dropped)
