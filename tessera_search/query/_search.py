"""Result modes on an open index: top k, every pixel above a threshold, k places at
least M metres apart, and connected blobs; pixel IDs back to places."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidInputError
from ..geodesy import thin
from ..grid import Tile, pixel_to_lonlat, unpack_ids

DEFAULT_MAX_RESULTS = 100_000


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


def search_modes(index, vector, k: int = 10, threshold: float | None = None, min_separation: float | None = None,
           max_results: int = DEFAULT_MAX_RESULTS, nprobe: int | None = None,
           refine_factor: int | None = None, progress=None) -> tuple[np.ndarray, np.ndarray, bool]:
    """(ids, exact similarities, truncated) for one of the result modes on an open index.

    Threshold and min-separation searches grow k by 4x per round; ``progress`` (see
    :mod:`tessera_search._progress`) counts the rounds.
    """
    from .._progress import progress_bar

    with progress_bar(progress, "search", None) as advance:
        return _search_modes(index, vector, k, threshold, min_separation, max_results, nprobe, refine_factor,
                             advance)


def _search_modes(index, vector, k, threshold, min_separation, max_results, nprobe, refine_factor, advance):
    n = index.n_vectors
    if threshold is not None:
        if not -1.0 <= threshold <= 1.0:
            raise InvalidInputError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
        if max_results < 1:
            raise InvalidInputError("max_results must be at least 1")
        want = min(max(1024, int(k) if k else 0), n, max_results)
        while True:
            res = index.search(vector, k=want, nprobe=nprobe, refine_factor=refine_factor)
            advance()
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
            advance()
            lon, lat, _, _, _ = locate_ids(index, res.ids)
            kept = thin(lon, lat, float(min_separation), k)
            if len(kept) >= k or batch >= n:
                return res.ids[kept], res.similarity[kept], False
            batch = min(batch * 4, n)
    res = index.search(vector, k=int(k), nprobe=nprobe, refine_factor=refine_factor)
    return res.ids, res.similarity, False


def find_blobs(index, ids, sims, tiles, rows, cols) -> list[Blob]:
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
