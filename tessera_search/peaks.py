"""The most changed places of a distance map: local peaks per tile, kept at least
``min_separation`` metres apart over the whole region.

Per tile, :func:`local_peaks` keeps pixels that are the maximum of a disk slightly smaller
than the separation (so the local stage never drops a place the global rule keeps);
:class:`Places` pools the best of them over all tiles, bounded, and thins them globally
(:func:`tessera_search.geodesy.thin`, best first).
"""

from __future__ import annotations

import math

import numpy as np

from .geodesy import thin
from .grid import TileGrid, pixel_to_lonlat

__all__ = ["Places", "disk", "local_peaks"]

# Local suppression radius factor: a grid distance below 0.99 * min_separation is a
# spherical distance below min_separation (UTM scale error < 0.1 %, sphere vs ellipsoid
# < 0.6 % north-south at the equator), so the local stage never drops a place the rule keeps.
_LOCAL_SLACK = 0.99


def disk(radius_px: float) -> tuple[int, np.ndarray]:
    """(R, (2R+1, 2R+1) bool): offsets whose centre distance is below ``radius_px`` pixels."""
    r = int(math.ceil(radius_px))
    off = np.arange(-r, r + 1)
    return r, (off[:, None] ** 2 + off[None, :] ** 2) < radius_px**2


def local_peaks(dist: np.ndarray, want: int, radius_px: float) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of up to ``want`` greedy peaks of (H, W) ``dist`` (NaN ignored).

    Pixels in decreasing distance (ties: lower flat index); a pixel closer than
    ``radius_px`` pixels to an earlier pick is skipped.
    """
    h, w = dist.shape
    values = dist.ravel()
    flat = np.flatnonzero(np.isfinite(values))
    if flat.size == 0 or want <= 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    order = flat[np.argsort(-values[flat], kind="stable")]
    if radius_px <= 1.0:  # only the pixel itself is within the radius
        return np.divmod(order[:want].astype(np.int64), w)
    r, mask = disk(radius_px)
    supp = np.zeros((h + 2 * r, w + 2 * r), dtype=bool)
    picks: list[int] = []
    for s in range(0, order.size, 4096):
        block = order[s:s + 4096]
        br, bc = np.divmod(block, w)
        alive = ~supp[br + r, bc + r]
        for pr, pc in zip(br[alive].tolist(), bc[alive].tolist(), strict=True):
            if supp[pr + r, pc + r]:
                continue
            picks.append(pr * w + pc)
            supp[pr:pr + 2 * r + 1, pc:pc + 2 * r + 1] |= mask
            if len(picks) >= want:
                break
        if len(picks) >= want:
            break
    return np.divmod(np.array(picks, dtype=np.int64), w)


class Places:
    """The running pool of local peaks over all tiles, bounded to the best ``cap``."""

    def __init__(self, top: int, min_separation: float) -> None:
        self.top = top
        self.min_separation = min_separation
        self.cap = max(32 * top, 1024)
        self.cols = {"distance": np.empty(0, np.float32), "key": np.empty(0, np.int64), "row": np.empty(0, np.int64),
                     "col": np.empty(0, np.int64), "lon": np.empty(0), "lat": np.empty(0),
                     "tile": np.empty(0, dtype=object)}

    def add(self, grid: TileGrid, dist: np.ndarray) -> None:
        if self.top <= 0:
            return
        radius_px = _LOCAL_SLACK * self.min_separation / grid.transform[0]
        rows, cols = local_peaks(dist, 2 * self.top + 16, radius_px)
        if rows.size == 0:
            return
        lon, lat = pixel_to_lonlat(grid, rows, cols)
        t = grid.tile
        new = {"distance": dist[rows, cols], "key": np.full(rows.size, (t.ix + 1800) * 2000 + t.iy + 900),
               "row": rows, "col": cols, "lon": lon, "lat": lat,
               "tile": np.full(rows.size, t.name, dtype=object)}
        self.cols = {k: np.concatenate([self.cols[k], new[k]]) for k in self.cols}
        order = self._order()
        if order.size > self.cap:
            self.cols = {k: v[order[:self.cap]] for k, v in self.cols.items()}

    def _order(self) -> np.ndarray:
        c = self.cols
        return np.lexsort((c["col"], c["row"], c["key"], -c["distance"].astype(np.float64)))

    def select(self) -> dict[str, np.ndarray]:
        """The global greedy: best first, skipping places within ``min_separation``."""
        order = self._order()
        c = {k: v[order] for k, v in self.cols.items()}
        sel = thin(c["lon"], c["lat"], self.min_separation, limit=self.top)
        return {k: v[sel] for k, v in c.items()}
