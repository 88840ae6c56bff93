"""Query by example, fully: many examples, negatives, result modes, exports, replay.

The query vector
----------------
Examples are points (one pixel each) and polygons (their valid pixels, capped per
polygon), each positive or negative, taken from the index's year or from another year
(``example_year``). With ``u`` the unit-norm int8 vector of a pixel:

- each example's direction is ``e_i = normalise(mean_j u_ij)`` over its pixels, so a
  large polygon counts as one example, not as hundreds;
- ``p = mean_i e_i`` over positives, ``n = mean_i e_i`` over negatives;
- the query is ``q = normalise(p - push * n)`` (``push`` defaults to 0.5; 0 ignores the
  negatives). Subtracting the negatives' mean moves ``q`` away from what they share with
  the positives, so pixels like the negatives fall down the ranking while pixels like
  the positives keep most of their similarity.

Result modes (exact cosine similarity in every mode, re-ranked from the int8 vectors)
-------------------------------------------------------------------------------------
- **top k** (default);
- **threshold** ``S``: every pixel with similarity >= S, found by searching with a
  growing k (x4 each round) until the k-th similarity falls below S, up to
  ``max_results`` (the result says when that bound cut it short);
- **min_separation** ``M`` metres: greedy suppression in similarity order (a candidate is
  kept when it is at least M metres from every pixel kept so far, measured as the chord
  between points on the WGS84 mean sphere, which is zone-independent and equals the
  ground distance to < 1 mm at these scales). Candidates are fetched in growing batches
  (x4) until k places are kept or every pixel of the index has been considered, so
  exactly k results come back whenever the greedy pass over the whole index can find
  them;
- **group**: matching pixels connected through their 8 neighbours, within a tile, merge
  into blobs, ranked by size (pixels) then mean similarity; each blob has a polygon and
  its area in m2. (Blobs do not merge across tile edges: neighbouring tiles have
  different grids.)

Exports: ``.tif`` (a COG match mask, or similarity), ``.geojson`` / ``.parquet`` / ``.csv``
(points, or blob polygons), ``.png`` (a quicklook). Every query is recorded in the
catalog with its exact vector and parameters; :func:`replay` reruns one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._io import atomic_path
from ._progress import warn
from .config import resolve_home
from .errors import InvalidInputError, NoDataError
from .grid import Tile, pixel_to_lonlat, unpack_ids

__all__ = [
    "Blob",
    "DEFAULT_PUSH",
    "QuerySpec",
    "Retrieval",
    "example_query",
    "point_query",
    "history",
    "replay",
    "retrieve",
    "search",
]

DEFAULT_PUSH = 0.5
DEFAULT_MAX_RESULTS = 100_000
_MAX_MARKERS = 5000  # quicklook: above this many matches, paint blocks instead of markers
EARTH_RADIUS = 6_371_008.8  # metres, WGS84 mean radius


# ======================================================================================
# The query vector
# ======================================================================================


@dataclass
class QuerySpec:
    """A query vector and where it came from. ``vector``: (128,) float32, unit norm."""

    vector: np.ndarray
    year: int
    push: float = DEFAULT_PUSH
    positives: list[dict] = field(default_factory=list)
    negatives: list[dict] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"example_year": self.year, "push": self.push, "positives": self.positives,
                "negatives": self.negatives, "dropped": self.dropped}


def _unit_rows(q: np.ndarray) -> np.ndarray:
    x = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    n[n == 0] = 1.0
    return x / n


def combine(positive_dirs: np.ndarray, negative_dirs: np.ndarray | None, push: float) -> np.ndarray:
    """``normalise(mean(positives) - push * mean(negatives))`` of unit example directions."""
    p = np.asarray(positive_dirs, dtype=np.float64).mean(axis=0)
    q = p - float(push) * np.asarray(negative_dirs, dtype=np.float64).mean(axis=0) if (
        negative_dirs is not None and len(negative_dirs)) else p
    norm = np.linalg.norm(q)
    if norm == 0 or not np.isfinite(norm):
        raise InvalidInputError("the positives and negatives cancel out: lower --push or change the examples")
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
    positive). Embeddings come from ``example_year`` (default ``year``).
    """
    import shapely

    from .examples import Example, ExampleSet, read_examples, sample_examples

    if push < 0 or not math.isfinite(push):
        raise InvalidInputError(f"--push must be a finite number >= 0, got {push}")
    ex: list[Example] = []
    pos: list[bool] = []
    for p in points:
        ex.append(Example(shapely.Point(float(p[0]), float(p[1])), {"source": "--point"}, len(ex), len(ex)))
        pos.append(True)
    for p in negatives:
        ex.append(Example(shapely.Point(float(p[0]), float(p[1])), {"source": "--negative"}, len(ex), len(ex)))
        pos.append(False)
    label = "the query's points"
    if examples is not None:
        file_set = read_examples(examples)
        polarity = file_set.polarity(polarity_field)
        for e, is_pos in zip(file_set, polarity, strict=True):
            ex.append(Example(e.geometry, dict(e.properties), len(ex), len(ex)))
            pos.append(bool(is_pos))
        label = f"the examples in {Path(examples).name}"
    if not ex:
        raise InvalidInputError("no examples: give --point LON,LAT (repeatable) or --examples FILE")
    if not any(pos):
        raise InvalidInputError("every example is negative: give at least one positive example")
    yr = int(example_year if example_year is not None else year)
    samples = sample_examples(ExampleSet(ex, None, label), yr, home=home, max_per_polygon=max_per_polygon,
                              source=source)
    dirs, info = {}, {}
    u = _unit_rows(samples.vectors)
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
    dropped = [f"example {i} ({ex[i].properties.get('source', ex[i].kind)}): {why}" for i, why in samples.dropped]
    pos_idx = [i for i in range(len(ex)) if pos[i] and i in dirs]
    neg_idx = [i for i in range(len(ex)) if not pos[i] and i in dirs]
    if not pos_idx:
        raise NoDataError(
            "no positive example has a valid pixel (water or no data)"
            + (f": {'; '.join(dropped)}" if dropped else "") + "; pick another place"
        )
    for d in dropped:
        warn(f"dropped {d}")
    q = combine(np.array([dirs[i] for i in pos_idx]), np.array([dirs[i] for i in neg_idx]) if neg_idx else None, push)
    return QuerySpec(q, yr, float(push), [info[i] for i in pos_idx], [info[i] for i in neg_idx], dropped)


def point_query(index, point, source=None) -> QuerySpec:
    """The query spec of one example pixel that must lie in ``index`` (the plain query)."""
    from .query import index_pixel

    qp = index_pixel(index, point, source=source)
    return QuerySpec(np.asarray(qp.vector, np.float32), index.year, DEFAULT_PUSH,
                     [{"kind": "point", "pixels": 1, **qp.to_json(), "lon": qp.centre_lon, "lat": qp.centre_lat}])


# ======================================================================================
# Result modes
# ======================================================================================


@dataclass
class Blob:
    """Connected matching pixels of one tile."""

    rank: int
    tile: str
    n_pixels: int
    area_m2: float
    mean_similarity: float
    max_similarity: float
    lon: float  # centroid of the pixel centres, degrees
    lat: float
    geometry: dict  # GeoJSON (Multi)Polygon, lon/lat
    members: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))  # match indices

    def to_json(self) -> dict:
        return {"rank": self.rank, "tile": self.tile, "n_pixels": self.n_pixels, "area_m2": self.area_m2,
                "mean_similarity": self.mean_similarity, "max_similarity": self.max_similarity,
                "lon": self.lon, "lat": self.lat}


@dataclass
class Retrieval:
    """Ranked matches (exact cosine) and, with ``group``, blobs. Arrays are best first."""

    index: str
    year: int
    dataset_version: str
    synthetic: bool
    vector: np.ndarray
    params: dict
    query: dict
    ids: np.ndarray
    similarity: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    tiles: list[str]
    rows: np.ndarray
    cols: np.ndarray
    truncated: bool = False
    blobs: list[Blob] | None = None
    query_id: int | None = None  # None when not recorded (record=False, or see warnings)
    warnings: list[str] = field(default_factory=list)  # e.g. why the history has no record of it

    def __len__(self) -> int:
        return len(self.ids)

    def matches(self) -> list[dict]:
        """One dict per match: rank (1-based), id, lon, lat, tile, row, col, similarity."""
        from .query import match_dicts

        return match_dicts(self)

    def to_json(self) -> dict:
        doc = {"index": self.index, "year": self.year, "dataset_version": self.dataset_version,
               "synthetic": self.synthetic, "query_id": self.query_id, "warnings": list(self.warnings),
               "query": self.query,
               "params": self.params, "truncated": self.truncated, "count": len(self), "matches": self.matches()}
        if self.blobs is not None:
            doc["blobs"] = [b.to_json() for b in self.blobs]
        return doc


def _ecef(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    lo, la = np.radians(lon), np.radians(lat)
    return EARTH_RADIUS * np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=1)


def thin(lon: np.ndarray, lat: np.ndarray, min_separation: float, limit: int) -> np.ndarray:
    """Greedy suppression: indices (in input order) of points >= ``min_separation`` m apart.

    Input order is priority order; stops after ``limit`` kept points.
    """
    if min_separation <= 0:
        return np.arange(min(limit, len(lon)))
    xyz = _ecef(np.asarray(lon, np.float64), np.asarray(lat, np.float64))
    cells = np.floor(xyz / min_separation).astype(np.int64)
    kept: list[int] = []
    buckets: dict[tuple[int, int, int], list[int]] = {}
    r2 = min_separation * min_separation
    offsets = [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)]
    for i in range(len(lon)):
        cx, cy, cz = (int(v) for v in cells[i])
        ok = True
        for dx, dy, dz in offsets:
            for j in buckets.get((cx + dx, cy + dy, cz + dz), ()):
                d = xyz[i] - xyz[j]
                if float(d @ d) < r2:
                    ok = False
                    break
            if not ok:
                break
        if ok:
            kept.append(i)
            buckets.setdefault((cx, cy, cz), []).append(i)
            if len(kept) >= limit:
                break
    return np.array(kept, dtype=np.int64)


def _locate(index, ids: np.ndarray):
    from .query import locate_ids

    return locate_ids(index, ids)


def search(index, vector, k: int = 10, threshold: float | None = None, min_separation: float | None = None,
           max_results: int = DEFAULT_MAX_RESULTS, nprobe: int | None = None,
           refine_factor: int | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """(ids, exact similarities, truncated) for one of the result modes on an open index."""
    n = index.n_vectors
    if threshold is not None:
        if not -1.0 <= threshold <= 1.0:
            raise InvalidInputError(f"--threshold is a cosine similarity in [-1, 1], got {threshold}")
        if max_results < 1:
            raise InvalidInputError("--max-results must be at least 1")
        want = min(max(1024, int(k) if k else 0), n, max_results)
        while True:
            res = index.search(vector, k=want, nprobe=nprobe, refine_factor=refine_factor)
            done = len(res.ids) < want or float(res.similarity[-1]) < threshold
            if done or want >= min(n, max_results):
                keep = res.similarity >= threshold
                ids, sims = res.ids[keep], res.similarity[keep]
                truncated = not done and want < n
                return ids[:max_results], sims[:max_results], truncated
            want = min(want * 4, n, max_results)
    if min_separation is not None and min_separation > 0:
        k = int(k)
        batch = min(max(4 * k, 1024), n)
        while True:
            res = index.search(vector, k=batch, nprobe=nprobe, refine_factor=refine_factor)
            lon, lat, _, _, _ = _locate(index, res.ids)
            kept = thin(lon, lat, float(min_separation), k)
            if len(kept) >= k or batch >= n:
                return res.ids[kept], res.similarity[kept], False
            batch = min(batch * 4, n)
    res = index.search(vector, k=int(k), nprobe=nprobe, refine_factor=refine_factor)
    return res.ids, res.similarity, False


def _blobs(index, ids, sims, tiles, rows, cols) -> list[Blob]:
    """8-connected components of the matches, per tile, with polygons in lon/lat."""
    import rasterio.features
    import shapely
    from pyproj import Transformer
    from shapely.geometry import mapping, shape

    blobs: list[Blob] = []
    by_tile: dict[str, list[int]] = {}
    for i, t in enumerate(tiles):
        by_tile.setdefault(t, []).append(i)
    for tname, members in by_tile.items():
        members = np.array(members)
        pos = {(int(rows[i]), int(cols[i])): int(i) for i in members}
        seen: set[int] = set()
        grid = index.grid(Tile.from_name(tname))
        to_ll = Transformer.from_crs(grid.epsg, 4326, always_xy=True)
        for start in members:
            if int(start) in seen:
                continue
            comp, stack = [], [int(start)]
            seen.add(int(start))
            while stack:
                i = stack.pop()
                comp.append(i)
                r, c = int(rows[i]), int(cols[i])
                for dr in (-1, 0, 1):
                    for dc in (-1, 0, 1):
                        j = pos.get((r + dr, c + dc))
                        if j is not None and j not in seen:
                            seen.add(j)
                            stack.append(j)
            comp_a = np.array(comp)
            rr, cc = rows[comp_a].astype(int), cols[comp_a].astype(int)
            r0, c0 = rr.min(), cc.min()
            win = np.zeros((rr.max() - r0 + 1, cc.max() - c0 + 1), np.uint8)
            win[rr - r0, cc - c0] = 1
            a, b, c, d, e, f = grid.transform
            from affine import Affine

            tr = Affine(a, b, c + a * c0, d, e, f + e * r0)
            polys = [shape(g) for g, v in rasterio.features.shapes(win, mask=win.astype(bool), connectivity=8,
                                                                      transform=tr) if v == 1]
            geom = shapely.union_all(polys) if len(polys) > 1 else polys[0]
            geom_ll = shapely.transform(geom, lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1])))
            s = sims[comp_a]
            lon, lat = pixel_to_lonlat(grid, rr, cc)
            blobs.append(Blob(0, tname, len(comp), float(len(comp) * abs(a * e)), float(s.mean()), float(s.max()),
                              float(lon.mean()), float(lat.mean()), mapping(geom_ll), comp_a))
    blobs.sort(key=lambda b: (-b.n_pixels, -b.mean_similarity, b.tile, int(b.members.min())))
    for r, b in enumerate(blobs, 1):
        b.rank = r
    return blobs


def retrieve(
    index,
    spec: QuerySpec,
    k: int = 10,
    threshold: float | None = None,
    min_separation: float | None = None,
    group: bool = False,
    max_results: int = DEFAULT_MAX_RESULTS,
    nprobe: int | None = None,
    refine_factor: int | None = None,
    record: bool = True,
) -> Retrieval:
    """Run a query (see the module docstring for the modes) on an opened index."""
    from .catalog import Catalog

    if threshold is not None and min_separation:
        raise InvalidInputError("--threshold and --min-separation do not combine; pick one")
    ids, sims, truncated = search(index, spec.vector, k=k, threshold=threshold, min_separation=min_separation,
                                  max_results=max_results, nprobe=nprobe, refine_factor=refine_factor)
    lon, lat, names, rows, cols = _locate(index, ids)
    params = {"mode": "threshold" if threshold is not None else ("min_separation" if min_separation else "top_k"),
              "k": int(k), "threshold": threshold, "min_separation": min_separation, "group": bool(group),
              "max_results": int(max_results), "nprobe": nprobe, "refine_factor": refine_factor,
              "year": index.year, **spec.to_json()}
    if truncated:
        warn(f"--threshold {threshold}: stopped at --max-results {max_results}; more pixels pass the threshold")
    out = Retrieval(index.name, index.year, index.dataset_version, index.synthetic, spec.vector, params,
                    {"positives": spec.positives, "negatives": spec.negatives, "example_year": spec.year,
                     "push": spec.push}, ids, sims.astype(np.float32), lon, lat, names, rows, cols, truncated)
    if group:
        out.blobs = _blobs(index, ids, sims, names, rows, cols)
    if record:  # a read-only workspace still answers; the result says it was not recorded
        out.query_id, why = Catalog(index.home).record_query_or_warning(index.name, spec.vector, params, len(ids))
        if why:
            out.warnings.append(why)
    return out


# ======================================================================================
# History and replay
# ======================================================================================


def history(home=None, limit: int = 50) -> list[dict]:
    """Recorded queries, newest first: id, index, created_at, n_results, params."""
    from .catalog import Catalog

    cat = Catalog(resolve_home(home))
    if not cat.path.exists():
        return []
    return [{"id": q["id"], "index": q["index_name"], "created_at": q["created_at"], "n_results": q["n_results"],
             "mode": q["params"].get("mode", "top_k"), "k": q["params"].get("k"), "params": q["params"]}
            for q in cat.queries(limit)]


def replay(query_id: int, home=None, record: bool = False) -> Retrieval:
    """Rerun recorded query ``query_id`` with its exact vector and parameters."""
    from .catalog import Catalog
    from .errors import IndexNotFoundError
    from .index import open_index

    row = Catalog(resolve_home(home)).query(int(query_id))
    if row is None:
        raise IndexNotFoundError(f"no recorded query {query_id}; `tessera-search history` lists them")
    p = row["params"]
    spec = QuerySpec(np.asarray(row["vector"], np.float32), int(p.get("example_year") or p.get("year") or 0),
                     float(p.get("push", DEFAULT_PUSH)), p.get("positives", []), p.get("negatives", []),
                     p.get("dropped", []))
    with open_index(row["index_name"], home=home) as idx:
        return retrieve(idx, spec, k=int(p.get("k") or 10), threshold=p.get("threshold"),
                        min_separation=p.get("min_separation"), group=bool(p.get("group")),
                        max_results=int(p.get("max_results") or DEFAULT_MAX_RESULTS), nprobe=p.get("nprobe"),
                        refine_factor=p.get("refine_factor"), record=record)


# ======================================================================================
# Exports
# ======================================================================================


def _tile_coverage(index, tile: Tile) -> np.ndarray:
    """(H, W) bool: the pixels of ``tile`` that are in the index."""
    grid = index.grid(tile)
    mask = np.zeros(grid.shape, bool)
    for shard in index.shards:
        if tile.name not in shard.tiles or shard.n_vectors == 0:
            continue
        from .grid import tile_id_prefix

        lo = tile_id_prefix(tile)
        hi = lo + (1 << 32)
        ids = np.asarray(shard.ids)
        a, b = np.searchsorted(ids, lo), np.searchsorted(ids, hi)
        _, _, r, c = unpack_ids(ids[a:b])
        mask[r, c] = True
    return mask


def _tile_similarity(index, tile: Tile, vector: np.ndarray) -> np.ndarray:
    """(H, W) float32: exact cosine of every indexed pixel of ``tile`` to ``vector``; NaN elsewhere."""
    from .grid import tile_id_prefix

    grid = index.grid(tile)
    out = np.full(grid.shape, np.nan, np.float32)
    q = np.asarray(vector, np.float32)
    for shard in index.shards:
        if tile.name not in shard.tiles or shard.n_vectors == 0:
            continue
        lo = tile_id_prefix(tile)
        ids = np.asarray(shard.ids)
        a, b = np.searchsorted(ids, lo), np.searchsorted(ids, lo + (1 << 32))
        _, _, r, c = unpack_ids(ids[a:b])
        v = np.asarray(shard.vectors[a:b], dtype=np.float32)
        n = np.linalg.norm(v, axis=1)
        n[n == 0] = np.inf
        out[r, c] = (v @ q) / n
    return out


def _tags(result: Retrieval, extra: dict | None = None) -> dict:
    return {"year": result.year, "dataset_version": result.dataset_version, "index": result.index,
            "synthetic": result.synthetic, "query_id": result.query_id,
            "query_params": json.dumps({k: v for k, v in result.params.items()}, default=str),
            "producer": "tessera-search", **(extra or {})}


def write_raster(result: Retrieval, index, path, values: str = "mask", crs: str | None = None,
                 per_tile: bool = False) -> list[Path]:
    """A COG of the matches: uint8 mask (1 match, 0 indexed but no match, 255 nodata) or
    float32 similarity of every indexed pixel (``values="similarity"``, NaN nodata).

    The mosaic covers the tiles holding matches, on their own 10 m grid when they share a
    UTM zone, in ``crs`` otherwise; ``per_tile`` writes one COG per tile into directory
    ``path``. Returns the files written.
    """
    from .export import RasterWriter

    if values not in ("mask", "similarity"):
        raise InvalidInputError(f"--values is mask or similarity, not {values!r}")
    if len(result) == 0:
        raise NoDataError("no matches to write; loosen --threshold or raise --k")
    names = sorted(set(result.tiles))
    tiles = [Tile.from_name(n) for n in names]
    grids = [index.grid(t) for t in tiles]
    path = Path(path)
    target = path
    if per_tile:
        path.mkdir(parents=True, exist_ok=True)
        target = path / "matches.tif"
    kw = dict(count=1, crs=crs, per_tile=per_tile, tags=_tags(result, {"values": values}))
    if values == "mask":
        writer = RasterWriter(target, grids, dtype="uint8", nodata=255, band_descriptions=["match"],
                              colormap={0: (40, 40, 40), 1: (255, 215, 0)}, **kw)
    else:
        writer = RasterWriter(target, grids, dtype="float32", nodata=float("nan"),
                              band_descriptions=["cosine similarity"], overview_resampling="average", **kw)
    with writer:
        for t, g in zip(tiles, grids, strict=True):
            if values == "mask":
                cov = _tile_coverage(index, t)
                data = np.where(cov, 0, 255).astype(np.uint8)
                sel = np.array([n == t.name for n in result.tiles])
                data[result.rows[sel], result.cols[sel]] = 1
            else:
                data = _tile_similarity(index, t, result.vector)
            writer.write_tile(g, data)
    return list(writer.written) if per_tile else [target]


def write_vectors(result: Retrieval, path) -> Path:
    """Matches as points (or, with blobs, polygons with area) in .geojson, .parquet or .csv."""
    path = Path(path)
    suffix = path.suffix.lower()
    meta = {k: v for k, v in result.to_json().items() if k not in ("matches", "blobs")}
    if result.blobs is None:
        from .query import QueryResult

        qr = QueryResult(index=result.index, year=result.year, query=result.query, ids=result.ids, lon=result.lon,
                         lat=result.lat, tiles=result.tiles, rows=result.rows, cols=result.cols,
                         similarity=result.similarity, params=result.params, synthetic=result.synthetic,
                         query_id=result.query_id)
        return qr.write(path)
    rows = [b.to_json() for b in result.blobs]
    if suffix in (".geojson", ".json"):
        doc = {"type": "FeatureCollection", "tessera_search": json.loads(json.dumps(meta, default=str)),
               "features": [{"type": "Feature", "geometry": b.geometry, "properties": r}
                            for b, r in zip(result.blobs, rows, strict=True)]}
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(doc))
        return path
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        import shapely
        from shapely.geometry import shape

        cols = {k: [r[k] for r in rows] for k in (rows[0] if rows else Blob(0, "", 0, 0, 0, 0, 0, 0, {}).to_json())}
        cols["geometry"] = [shapely.to_wkb(shape(b.geometry)) for b in result.blobs]
        geo = {"version": "1.0.0", "primary_column": "geometry", "columns": {"geometry": {
            "encoding": "WKB", "geometry_types": ["Polygon", "MultiPolygon"], "crs": None}}}
        table = pa.table(cols).replace_schema_metadata(
            {b"geo": json.dumps(geo).encode(), b"tessera_search": json.dumps(meta, default=str).encode()})
        with atomic_path(path) as tmp:
            pq.write_table(table, str(tmp))
        return path
    if suffix == ".csv":
        import csv

        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["rank"])
            w.writeheader()
            w.writerows(rows)
        return path
    from .export import QUERY_SUFFIXES

    raise InvalidInputError(f"cannot write {path.name}: use one of {', '.join(QUERY_SUFFIXES)}")


def write_quicklook(result: Retrieval, index, path, max_size: int = 1024) -> Path:
    """A PNG: the matches (yellow dots) over a false-colour PCA view of the embeddings of the
    tiles holding them, the query's example points marked (cyan +, red x for negatives),
    with a scale bar. Tiles of several UTM zones are drawn in EPSG:4326."""
    import rasterio
    from PIL import Image, ImageDraw, ImageFont
    from rasterio.enums import Resampling

    from .export import RasterWriter

    if len(result) == 0:
        raise NoDataError("no matches to draw; loosen --threshold or raise --k")
    path = Path(path)
    tiles = [Tile.from_name(n) for n in sorted(set(result.tiles))]
    grids = [index.grid(t) for t in tiles]
    crs = None if len({g.epsg for g in grids}) == 1 else "EPSG:4326"
    # PCA basis from a sample of the tiles' indexed vectors.
    sample = []
    rng = np.random.default_rng(0)
    per_tile: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    from .grid import tile_id_prefix

    for t in tiles:
        for shard in index.shards:
            if t.name in shard.tiles and shard.n_vectors:
                ids = np.asarray(shard.ids)
                lo = tile_id_prefix(t)
                a, b = np.searchsorted(ids, lo), np.searchsorted(ids, lo + (1 << 32))
                v = _unit_rows(np.asarray(shard.vectors[a:b]))
                _, _, r, c = unpack_ids(ids[a:b])
                per_tile[t.name] = (v, r, c)
                take = rng.choice(len(v), size=min(len(v), 20000), replace=False) if len(v) else []
                sample.append(v[take])
    x = np.concatenate(sample) if sample else np.zeros((1, 128))
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    basis = vt[:3].T
    proj = (x - mean) @ basis
    lo_p, hi_p = np.percentile(proj, 2, axis=0), np.percentile(proj, 98, axis=0)
    stage = path.with_name(f".{path.stem}.rgb.tif")
    try:
        with RasterWriter(stage, grids, count=4, dtype="uint8", nodata=0, crs=crs) as w:
            for t, g in zip(tiles, grids, strict=True):
                arr = np.zeros((4, g.height, g.width), np.uint8)
                if t.name in per_tile:
                    v, r, c = per_tile[t.name]
                    rgb = np.clip(((v - mean) @ basis - lo_p) / np.maximum(hi_p - lo_p, 1e-9), 0, 1)
                    arr[:3, r, c] = (30 + 200 * rgb.T).astype(np.uint8)
                    arr[3, r, c] = 1
                w.write_tile(g, arr)
        with rasterio.open(stage) as src:
            f = max(src.width / max_size, src.height / max_size, 1.0)
            wpx, hpx = max(1, int(round(src.width / f))), max(1, int(round(src.height / f)))
            img = src.read(out_shape=(4, hpx, wpx), resampling=Resampling.nearest)
            transform = src.transform @ src.transform.scale(src.width / wpx, src.height / hpx)
            src_crs = src.crs
    finally:
        stage.unlink(missing_ok=True)
    from pyproj import Transformer

    to_img = Transformer.from_crs(4326, src_crs.to_wkt(), always_xy=True)
    def to_pixel(x, y):  # north-up: (col, row) of map coordinates in the quicklook
        return (np.asarray(x) - transform.c) / transform.a, (np.asarray(y) - transform.f) / transform.e

    rgb = np.transpose(img[:3], (1, 2, 0)).copy()
    rgb[img[3] == 0] = 255
    # Matches are painted from their coordinates, so they stay visible however much the
    # picture is decimated.
    mx, my = to_img.transform(result.lon, result.lat)
    mc, mr = to_pixel(mx, my)
    mc, mr = np.floor(mc).astype(int), np.floor(mr).astype(int)
    ok = (mc >= 0) & (mc < wpx) & (mr >= 0) & (mr < hpx)
    if ok.sum() > _MAX_MARKERS:  # many matches: paint 3 x 3 blocks, markers would clutter
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rr, cc = np.clip(mr[ok] + dr, 0, hpx - 1), np.clip(mc[ok] + dc, 0, wpx - 1)
                rgb[rr, cc] = (255, 215, 0)
    header, footer = 22, 34
    canvas = Image.new("RGB", (wpx + 20, hpx + header + footer + 10), "white")
    canvas.paste(Image.fromarray(rgb), (10, header + 5))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    title = (f"{len(result)} matches in {result.index} ({result.year})"
             + (" - SYNTHETIC data" if result.synthetic else ""))
    draw.text((10, 4), title, fill=(0, 0, 0), font=font)
    draw.rectangle([9, header + 4, 10 + wpx, header + 5 + hpx], outline=(0, 0, 0))
    if ok.sum() <= _MAX_MARKERS:  # few matches: a ringed dot each, visible at any zoom
        for c, r in zip(mc[ok][::-1], mr[ok][::-1], strict=True):  # best drawn last, on top
            x, y = 10 + c, header + 5 + r
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(255, 215, 0), outline=(0, 0, 0))
    for ex, colour, cross in ([(e, (0, 200, 255), False) for e in result.query.get("positives", [])]
                              + [(e, (220, 0, 0), True) for e in result.query.get("negatives", [])]):
        x, y = to_img.transform(ex["lon"], ex["lat"])
        c, r = to_pixel(x, y)
        px, py = 10 + c, header + 5 + r
        if 0 <= c < wpx and 0 <= r < hpx:
            draw.ellipse([px - 11, py - 11, px + 11, py + 11], outline=(0, 0, 0), width=2)
            if cross:
                draw.line([px - 8, py - 8, px + 8, py + 8], fill=colour, width=3)
                draw.line([px - 8, py + 8, px + 8, py - 8], fill=colour, width=3)
            else:
                draw.line([px - 9, py, px + 9, py], fill=colour, width=3)
                draw.line([px, py - 9, px, py + 9], fill=colour, width=3)
    metres_px = transform.a
    if src_crs.is_geographic:
        metres_px *= 111_320.0 * math.cos(math.radians(transform.f + transform.e * hpx / 2))
    from .export import _nice_length

    length = _nice_length(metres_px * wpx / 4)
    if length > 0:
        bar = int(round(length / metres_px))
        y = header + 5 + hpx + 12
        draw.rectangle([10, y, 10 + bar, y + 5], fill=(0, 0, 0))
        draw.text((14 + bar, y - 3), f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m",
                  fill=(0, 0, 0), font=font)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def export(result: Retrieval, index, path, values: str = "mask", crs: str | None = None,
           per_tile: bool = False) -> list[Path]:
    """Write ``result`` by the suffix of ``path`` (.tif, .png, .geojson, .parquet, .csv);
    ``per_tile`` takes a directory. A .tif also gets its PNG quicklook beside it."""
    path = Path(path)
    if per_tile or path.suffix.lower() in (".tif", ".tiff"):
        files = write_raster(result, index, path, values=values, crs=crs, per_tile=per_tile)
        if not per_tile:
            files.append(write_quicklook(result, index, path.with_suffix(".png")))
        return files
    if path.suffix.lower() == ".png":
        return [write_quicklook(result, index, path)]
    if crs is not None:
        raise InvalidInputError("--crs applies to .tif output; points and polygons are written in lon/lat")
    return [write_vectors(result, path)]
