"""Change between two years: per-pixel cosine distance maps and the most changed places.

For every pixel of a region stored in both years ``A`` and ``B``::

    d = 1 - cos(a, b) = 1 - (a . b) / (|a| |b|)        float32, in [0, 2]

computed on the int8 vectors as stored: each year's vector is ``scale * int8`` with a
positive per-pixel scale, so the scales cancel in the cosine and pixels are never
dequantized. The dot products are exact (int8 products summed over 128 dimensions stay
below 2**24, so float32 sums are integers). ``d`` is NaN where either year's pixel is
invalid (water, no-data scale), where either vector is all zeros (no direction), and
where the pixel is outside the region or not owned by the tile
(:meth:`tessera_search.regions.Region.mask`).

Streaming
---------
:func:`change_map` reads one tile (both years) at a time, writes its window of the COG
(:class:`tessera_search.export.RasterWriter`), adds its distances to a fixed 20,000-bin
histogram over [0, 2] and keeps its best local peaks for ``top``; memory does not grow
with the region. Summary percentiles come from the histogram (within 1e-4 of exact);
mean, minimum and maximum are exact. Nothing is printed: ``progress`` is a callback (see
:mod:`tessera_search._progress`; the CLI passes its bar), ``on_progress(done, total)`` is
called after each tile.

Grids
-----
The output is on year ``A``'s grid of each tile. Year ``B``'s grid must have the same
CRS and pixel size and lie on the same pixel lattice; a different extent (a release that
added or dropped an edge row) is fine, and pixels of ``A``'s grid outside ``B``'s are
NaN. Anything else (another UTM zone, a shifted lattice) raises
:class:`~tessera_search.errors.InvalidInputError` rather than resampling embeddings.

Most changed places (``top``)
-----------------------------
The ``top`` largest distances, thinned so that no two places are closer than
``min_separation`` metres, greedily in decreasing distance. Two stages keep memory
bounded: per tile, a greedy over all its pixels on the tile's grid picks up to
``2 * top + 16`` local peaks (suppressing pixels whose grid distance is below
``0.99 * min_separation``, never more than the true rule would: UTM's scale error is
below 0.1 % and the sphere's departure from the ellipsoid below 0.6 %); then a global
greedy over the best ``max(32 * top, 1024)`` peaks of all tiles decides
(:func:`tessera_search.geodesy.thin`, distances on the mean Earth sphere), so the rule
holds across tiles and UTM zones. Only near tile edges can this differ from one greedy
over every pixel of the region (by picking another pixel of the same place). Ties go to
the lower (tile, row, col).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InvalidInputError, NoDataError, TileNotFoundError
from .peaks import Places
from .grid import Tile, TileGrid

__all__ = [
    "ChangeResult",
    "ChangeStats",
    "change_map",
    "cosine_distance",
    "parse_years",
    "write_change_quicklook",
]

_BLOCK = 8192  # pixels per block of the distance computation: float32 copies stay in cache (2.5x faster than 65536)
_HIST_BINS = 20000  # histogram of distances over [0, 2]: bins of 1e-4


# ======================================================================================
# The distance
# ======================================================================================


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``1 - cos(a, b)`` along the last axis: (..., D) int8 (or float) -> (...) float32.

    NaN where either vector is all zeros. Clipped to [0, 2]. Exact for int8 inputs with
    D <= 1024 (integer float32 sums), so identical vectors give 0 and orthogonal ones 1.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise InvalidInputError(f"vectors of shapes {a.shape} and {b.shape} cannot be compared")
    shape = a.shape[:-1]
    af = a.reshape(-1, a.shape[-1]).astype(np.float32)
    bf = b.reshape(-1, b.shape[-1]).astype(np.float32)
    return _distance_rows(af, bf).reshape(shape)


def _distance_rows(af: np.ndarray, bf: np.ndarray) -> np.ndarray:
    """(N,) float32 distances of float32 rows (see :func:`cosine_distance`)."""
    dot = np.einsum("ij,ij->i", af, bf, dtype=np.float32).astype(np.float64)
    na = np.einsum("ij,ij->i", af, af, dtype=np.float32).astype(np.float64)
    nb = np.einsum("ij,ij->i", bf, bf, dtype=np.float32).astype(np.float64)
    den = np.sqrt(na * nb)
    ok = den > 0
    cos = np.divide(dot, den, out=np.zeros_like(dot), where=ok)
    out = np.clip(1.0 - cos, 0.0, 2.0).astype(np.float32)
    out[~ok] = np.nan
    return out


def parse_years(text: str | Sequence[int]) -> tuple[int, int]:
    """``"2020,2024"`` (or a pair) -> ``(2020, 2024)``: two distinct integer years."""
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",")]
    else:
        parts = list(text)
    try:
        years = [int(p) for p in parts]
        if any(isinstance(p, float) and p != int(p) for p in parts):
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidInputError(f"years {text!r} is not two integer years A,B, e.g. 2020,2024") from None
    if len(years) != 2:
        raise InvalidInputError(f"years {text!r} needs exactly two years A,B, e.g. 2020,2024")
    if years[0] == years[1]:
        raise InvalidInputError(f"years {text!r} names the same year twice; give two different years")
    if not all(1900 <= y <= 2200 for y in years):
        raise InvalidInputError(f"years {text!r}: years must be between 1900 and 2200")
    return years[0], years[1]


# ======================================================================================
# Results
# ======================================================================================


@dataclass
class ChangeStats:
    """Distances over the pixels valid in both years (``None`` when there are none).

    Percentiles are read from a histogram of 1e-4 wide bins (the upper edge of the bin
    holding the percentile); mean, min and max are exact.
    """

    valid_pixels: int = 0
    mean: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    min: float | None = None
    max: float | None = None

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in ("valid_pixels", "mean", "p50", "p95", "p99", "min", "max")}


@dataclass
class ChangeResult:
    """What :func:`change_map` made.

    ``top_*`` arrays are aligned, most changed first: ``top_lon``/``top_lat`` (degrees,
    pixel centres), ``top_tile`` (names), ``top_row``/``top_col`` (on the tile's grid of
    year A), ``top_distance``.
    """

    years: tuple[int, int]
    region: str
    path: Path | None
    files: list[Path]
    tiles: list[Tile]
    skipped: list[Tile]
    stats: ChangeStats
    crs: str | None
    transform: tuple | None
    width: int | None
    height: int | None
    synthetic: bool
    dataset_versions: dict[int, str]
    min_separation: float
    top_lon: np.ndarray = field(default_factory=lambda: np.empty(0))
    top_lat: np.ndarray = field(default_factory=lambda: np.empty(0))
    top_tile: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    top_row: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    top_col: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    top_distance: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.float32))
    top_path: Path | None = None
    quicklooks: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def top(self) -> list[dict]:
        """The most changed places as records (rank 1 = most changed)."""
        return [
            {"rank": i + 1, "lon": float(self.top_lon[i]), "lat": float(self.top_lat[i]),
             "tile": str(self.top_tile[i]), "row": int(self.top_row[i]), "col": int(self.top_col[i]),
             "distance": float(self.top_distance[i])}
            for i in range(self.top_distance.size)
        ]

    def to_json(self) -> dict:
        return {
            "years": list(self.years),
            "region": self.region,
            "out": str(self.path) if self.path else None,
            "files": [str(p) for p in self.files],
            "stats": self.stats.to_json(),
            "top": self.top(),
            "top_out": str(self.top_path) if self.top_path else None,
            "min_separation_m": self.min_separation,
            "tiles": [t.name for t in self.tiles],
            "skipped": [t.name for t in self.skipped],
            "crs": self.crs,
            "transform": list(self.transform) if self.transform else None,
            "width": self.width,
            "height": self.height,
            "synthetic": self.synthetic,
            "dataset_versions": {str(y): v for y, v in self.dataset_versions.items()},
            "seconds": round(self.seconds, 3),
        }


# ======================================================================================
# Tiles: selection, fetching, grids
# ======================================================================================


def _region_tiles(region) -> tuple[str, list[Tile], Callable[[TileGrid], np.ndarray]]:
    """(name, tiles, mask function) of a Region or an iterable of Tiles."""
    from .regions import as_region

    reg = as_region(region)
    return reg.name, list(reg.tiles), reg.mask


def _ensure_both_years(store, tiles: list[Tile], years: tuple[int, int], name: str, home, source,
                       progress: bool) -> tuple[list[Tile], list[Tile]]:
    """(tiles stored in both years, tiles skipped because the source lacks them)."""
    missing = {y: [t for t in tiles if not store.has(t, y)] for y in years}
    if not any(missing.values()):
        return tiles, []
    if source is None:
        raise TileNotFoundError.missing_years(missing, f"the change {years[0]} -> {years[1]} of {name}")
    from .ingest import download

    for year, todo in missing.items():
        if todo:
            download(todo, year, source=source, home=home, progress=progress)
    ready = [t for t in tiles if all(store.has(t, y) for y in years)]
    done = set(ready)
    skipped = [t for t in tiles if t not in done]
    if not ready:
        still = {y: [t for t in tiles if not store.has(t, y)] for y in years}
        raise TileNotFoundError(
            f"source {source} could not provide the tiles of {name} for both years "
            f"({'; '.join(f'{y}: {len(v)} missing' for y, v in still.items())}); check the source and the years "
            f"by downloading them first"
        )
    return ready, skipped


def _overlap(ga: TileGrid, gb: TileGrid, year_a: int, year_b: int) -> tuple[int, int]:
    """(row, col) of grid B's origin on grid A's lattice; raises when they do not share it."""
    a0, _, c0, _, e0, f0 = ga.transform
    a1, _, c1, _, e1, f1 = gb.transform
    if ga.epsg != gb.epsg or a0 != a1 or e0 != e1:
        raise InvalidInputError(
            f"tile {ga.tile.name} is stored on different grids in {year_a} ({ga.crs}, {a0:g} m pixels) and "
            f"{year_b} ({gb.crs}, {a1:g} m pixels); change needs one pixel grid: re-download {ga.tile.name} for "
            f"{year_b} from the same dataset version"
        )
    dc, dr = (c1 - c0) / a0, (f1 - f0) / e0
    if abs(dc - round(dc)) > 1e-6 or abs(dr - round(dr)) > 1e-6:
        raise InvalidInputError(
            f"tile {ga.tile.name}: the {year_b} grid is shifted by a fraction of a pixel against {year_a} "
            f"({dc:.3f}, {dr:.3f} pixels); change does not resample embeddings: re-download one year from "
            "the same dataset version"
        )
    return int(round(dr)), int(round(dc))


def _tile_distance(store, tile: Tile, years: tuple[int, int], mask_of) -> tuple[TileGrid, np.ndarray, dict]:
    """(grid of year A, (H, W) float32 distances with NaN, {year: attrs}) of one tile."""
    da = store.read(tile, years[0])
    db = store.read(tile, years[1])
    ga, gb = da.grid, db.grid
    if da.embeddings.shape[-1] != db.embeddings.shape[-1]:
        raise InvalidInputError(
            f"tile {tile.name} has {da.embeddings.shape[-1]}-d embeddings in {years[0]} and "
            f"{db.embeddings.shape[-1]}-d in {years[1]}; both years must come from the same model"
        )
    dr, dc = _overlap(ga, gb, *years)
    # Pixels of A's grid that B's grid covers, and B's pixel for each.
    r0, r1 = max(0, dr), min(ga.height, dr + gb.height)
    c0, c1 = max(0, dc), min(ga.width, dc + gb.width)
    use = np.zeros(ga.shape, dtype=bool)
    if r0 < r1 and c0 < c1:
        use[r0:r1, c0:c1] = db.valid[r0 - dr:r1 - dr, c0 - dc:c1 - dc]
    use &= da.valid & mask_of(ga)
    flat = np.flatnonzero(use)
    rows, cols = np.divmod(flat, ga.width)
    flat_b = (rows - dr) * gb.width + (cols - dc)
    ea = da.embeddings.reshape(-1, da.embeddings.shape[-1])
    eb = db.embeddings.reshape(-1, db.embeddings.shape[-1])
    dist = np.full(ga.height * ga.width, np.nan, dtype=np.float32)
    for s in range(0, flat.size, _BLOCK):
        dist[flat[s:s + _BLOCK]] = _distance_rows(
            ea[flat[s:s + _BLOCK]].astype(np.float32), eb[flat_b[s:s + _BLOCK]].astype(np.float32)
        )
    meta = {y: {"dataset_version": d.dataset_version, "synthetic": d.synthetic} for y, d in zip(years, (da, db))}
    return ga, dist.reshape(ga.shape), meta


# ======================================================================================
# Statistics
# ======================================================================================


class _Histogram:
    """Streaming summary of distances in [0, 2]: exact count, sum, min, max; binned percentiles."""

    def __init__(self) -> None:
        self.counts = np.zeros(_HIST_BINS, dtype=np.int64)
        self.n = 0
        self.total = 0.0
        self.lo = math.inf
        self.hi = -math.inf

    def add(self, values: np.ndarray) -> None:
        v = values[np.isfinite(values)].astype(np.float64)
        if v.size == 0:
            return
        idx = np.minimum((v * (_HIST_BINS / 2.0)).astype(np.int64), _HIST_BINS - 1)
        self.counts += np.bincount(idx, minlength=_HIST_BINS)
        self.n += int(v.size)
        self.total += float(v.sum())
        self.lo = min(self.lo, float(v.min()))
        self.hi = max(self.hi, float(v.max()))

    def quantile(self, q: float) -> float:
        """Upper edge of the bin holding the q-quantile, within [min, max]."""
        rank = max(1, math.ceil(q * self.n))
        b = int(np.searchsorted(np.cumsum(self.counts), rank))
        return float(min(max((b + 1) * 2.0 / _HIST_BINS, self.lo), self.hi))

    def stats(self) -> ChangeStats:
        if self.n == 0:
            return ChangeStats()
        return ChangeStats(
            valid_pixels=self.n, mean=self.total / self.n, p50=self.quantile(0.5), p95=self.quantile(0.95),
            p99=self.quantile(0.99), min=self.lo, max=self.hi,
        )


# ======================================================================================
# The map
# ======================================================================================


def change_map(
    region,
    years: str | Sequence[int] = (),
    out: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    source: str | None = None,
    crs: str | None = None,
    per_tile: bool = False,
    top: int = 0,
    min_separation: float = 100.0,
    progress=None,
    *,
    top_out: str | os.PathLike[str] | None = None,
    quicklook: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> ChangeResult:
    """Per-pixel cosine distance between the embeddings of ``years = (A, B)`` over ``region``.

    ``region``: a :class:`~tessera_search.regions.Region` or a list of Tiles. ``out``: a
    float32 COG (nodata NaN) of distances on the tiles' own UTM grid (one zone), or in
    ``crs``, or one COG per tile (``per_tile``); plus ``<out>.png`` quicklooks unless
    ``quicklook=False``; ``None`` computes statistics and places only. ``top``: the most
    changed places, at least ``min_separation`` metres apart (``top_out`` writes them as
    points: ``.geojson``, ``.parquet`` or ``.csv``, :func:`tessera_search.vectors.write_points`).
    ``progress``: a progress bar on stderr; ``on_progress(done, total)``: called after
    each tile. Tiles missing in a year raise
    :class:`~tessera_search.errors.TileNotFoundError` naming them, unless ``source`` is
    given: then they are downloaded, and tiles the source lacks are skipped
    (``ChangeResult.skipped``). Raises :class:`~tessera_search.errors.NoDataError` when no
    pixel is valid in both years.
    """
    from ._progress import progress_bar
    from .config import resolve_home
    from .store import TileStore

    t0 = time.perf_counter()
    ya, yb = parse_years(years)
    top = int(top)
    if top < 0:
        raise InvalidInputError(f"top must be 0 or more, got {top}")
    min_separation = float(min_separation)
    if not (math.isfinite(min_separation) and min_separation >= 0):
        raise InvalidInputError(f"min_separation must be finite metres >= 0, got {min_separation}")
    if top_out is not None and top == 0:
        raise InvalidInputError("top_out writes the most changed places: give top > 0 as well")
    if per_tile and out is None:
        raise InvalidInputError("per_tile needs out (the file name stem of the per-tile COGs)")
    if top_out is not None:
        from .export import VECTOR_SUFFIXES, check_output

        check_output(top_out, VECTOR_SUFFIXES, option="top_out")
    name, tiles, mask_of = _region_tiles(region)
    if not tiles:
        raise InvalidInputError(f"{name} selects no tiles")
    home = resolve_home(home)
    store = TileStore(home)
    tiles, skipped = _ensure_both_years(store, tiles, (ya, yb), name, home, source, progress)
    attrs = {y: [store.attrs(t, y) for t in tiles] for y in (ya, yb)}
    versions = {y: ",".join(sorted({str(a.get("dataset_version", "")) for a in attrs[y]})) for y in (ya, yb)}
    synthetic = any(bool(a.get("synthetic")) for y in (ya, yb) for a in attrs[y])
    grids = [store.grid(t, ya) for t in tiles]

    tags = {
        "software": "tessera-search change",
        "years": f"{ya},{yb}",
        "year_a": ya,
        "year_b": yb,
        "region": name,
        "dataset_version": {str(y): v for y, v in versions.items()},
        "synthetic": synthetic,
        "metric": "cosine distance 1 - cos(a, b) of the int8 embeddings (per-pixel scales cancel)",
        "nodata": "NaN: invalid in either year, outside the region, or not the tile's own pixel",
    }
    writer = None
    if out is not None:
        from .export import RasterWriter

        writer = RasterWriter(
            out, grids, count=1, dtype="float32", nodata=float("nan"), crs=crs, per_tile=per_tile, tags=tags,
            band_descriptions=[f"cosine distance {ya} -> {yb}"], overview_resampling="average",
        )
    hist = _Histogram()
    places = Places(top, min_separation)
    with contextlib.ExitStack() as stack:  # the writer finishes, or cleans up on error
        if writer is not None:
            stack.enter_context(writer)
        with progress_bar(progress, f"change {ya}->{yb}", len(tiles)) as advance:
            for done, t in enumerate(tiles, 1):
                grid, dist, _ = _tile_distance(store, t, (ya, yb), mask_of)
                hist.add(dist)
                places.add(grid, dist)
                if writer is not None:
                    writer.write_tile(grid, dist)
                del dist
                advance()
                if on_progress is not None:
                    on_progress(done, len(tiles))
        if hist.n == 0:
            raise NoDataError(
                f"{name} has no pixel valid in both {ya} and {yb} (water, no-data or outside the tiles); "
                "check the region and the years with `tessera-search info`"
            )
        stats = hist.stats()
        if writer is not None and not per_tile:
            # Known only now: RasterWriter writes its tags when it finishes the mosaic.
            writer.tags["stats"] = json.dumps(stats.to_json(), sort_keys=True)
    files: list[Path] = []
    plan = None
    if writer is not None:
        files = list(writer.written)
        plan = writer.plan
    chosen = places.select() if top > 0 else None
    result = ChangeResult(
        years=(ya, yb), region=name, path=Path(out) if out is not None else None, files=files, tiles=list(tiles),
        skipped=skipped, stats=stats, crs=plan.crs if plan else None,
        transform=tuple(plan.transform) if plan else None, width=plan.width if plan else None,
        height=plan.height if plan else None, synthetic=synthetic, dataset_versions=versions,
        min_separation=min_separation,
    )
    if chosen is not None:
        result.top_lon, result.top_lat = chosen["lon"], chosen["lat"]
        result.top_tile, result.top_row, result.top_col = chosen["tile"], chosen["row"], chosen["col"]
        result.top_distance = chosen["distance"].astype(np.float32)
    if out is not None and quicklook:
        vmax = _ramp_max(stats)
        title = f"cosine distance {ya} -> {yb}, {name}"
        marks = (result.top_lon, result.top_lat) if top > 0 else None
        for path in files:
            result.quicklooks.append(write_change_quicklook(path, vmax=vmax, title=title, places=marks,
                                                            synthetic=synthetic))
        files.extend(result.quicklooks)
    if top_out is not None:
        from .vectors import write_points

        n = result.top_distance.size
        result.top_path = write_points(
            top_out, result.top_lon, result.top_lat,
            {"rank": np.arange(1, n + 1, dtype=np.int64), "distance": result.top_distance.astype(np.float32),
             "tile": [str(v) for v in result.top_tile], "row": result.top_row.astype(np.int64),
             "col": result.top_col.astype(np.int64)},
            meta={"kind": "most changed places", "years": [ya, yb], "region": name,
                  "metric": "cosine distance", "min_separation_m": min_separation, "synthetic": synthetic,
                  "dataset_versions": {str(y): v for y, v in versions.items()}},
        )
        files.append(result.top_path)
    result.seconds = time.perf_counter() - t0
    return result


# ======================================================================================
# Quicklook
# ======================================================================================


def _ramp_max(stats: ChangeStats) -> float:
    """The ramp's top: the 99th percentile rounded up to 0.05 (at least 0.05, at most 2)."""
    p = stats.p99 if stats.p99 is not None else 1.0
    return float(min(2.0, max(0.05, math.ceil(p * 20.0 - 1e-9) / 20.0)))


def write_change_quicklook(
    raster: str | os.PathLike[str],
    png: str | os.PathLike[str] | None = None,
    *,
    vmax: float = 1.0,
    title: str = "",
    places: tuple[np.ndarray, np.ndarray] | None = None,
    max_size: int = 1024,
    synthetic: bool | None = None,
) -> Path:
    """A PNG of a distance raster (default ``<raster>.png``); returns its path.

    The distance on a dark-to-yellow ramp from 0 to ``vmax`` (values above take the top
    colour; nodata white) with its colour bar, ``places`` ((lon, lat) degree arrays, most
    changed first) as numbered rings (ranks on the first 50), lon/lat ticks, a scale bar
    and the ``SYNTHETIC DATA`` badge when ``synthetic`` (default: the raster's tag). The
    raster is read averaged (from its overviews) to at most ``max_size`` pixels a side;
    a small one is enlarged by whole pixels (:mod:`tessera_search.quicklook`).
    """
    from .export import quicklook_path
    from .quicklook import RAMP_CHANGE, Markers, ValueLayer, paint
    from .raster_view import read_raster

    raster = Path(raster)
    png = quicklook_path(raster) if png is None else Path(png)
    view = read_raster(raster, 1, max_size=max_size, resampling="average")
    base = ValueLayer(view.data[0].astype(np.float64), 0.0, float(vmax), RAMP_CHANGE, "cosine distance")
    marks = []
    if places is not None:
        marks.append(Markers.places(places[0], places[1], label="most changed (rank)"))
    return paint(png, base, view.extent, markers=marks, title=title, max_size=max_size,
                 synthetic=view.synthetic if synthetic is None else bool(synthetic))
