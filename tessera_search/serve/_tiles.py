"""Map tiles for the web app: XYZ (web mercator, 256 px) PNGs drawn on the fly, cached.

- :class:`EmbeddingTiles`: a false-colour view of an index's embeddings. The three
  principal axes of a sample of the index's unit int8 vectors (spread over its tiles)
  become red, green and blue (2nd-98th percentile stretch, as the quicklooks do); a
  tile's colours are computed once from its indexed vectors (the store's int8 bytes, read
  from the index's re-rank file in blocks) and kept in a bounded LRU cache, and each XYZ
  pixel takes the colour of the indexed pixel that holds its centre, by the ownership
  rule (the 0.1 degree cell holding the point, then that tile's own UTM grid). Zoomed out
  (a screen pixel over 20 m), only every 2nd, 4th ... 16th pixel of every such row is
  coloured (:meth:`EmbeddingTiles.step_for`): the projection, most of the cost, shrinks
  with the square of the step.
- :func:`raster_tile`: any GeoTIFF the app wrote (a class map, a match mask) drawn with
  its colour map (class maps, masks) or a grey ramp, nodata transparent.
- :func:`outlines`: Natural Earth admin-0 outlines near a box, as GeoJSON.

Tile requests are bounded: zoom 0..:data:`MAX_ZOOM`, x and y on the zoom's grid, and an
XYZ tile over more than :data:`MAX_CELLS` index tiles is drawn empty (zoom in).
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError

__all__ = ["MAX_CELLS", "MAX_ZOOM", "TILE_SIZE", "EmbeddingTiles", "outlines", "raster_tile", "tile_lonlat"]

TILE_SIZE = 256
MAX_ZOOM = 20
MAX_CELLS = 64  # index tiles one XYZ tile may draw from
_CACHE_TILES = 64  # coloured index tiles kept in memory (about 5 MB each at full size, less zoomed out)
_SAMPLE_TILES = 64  # index tiles the PCA sample is drawn from (evenly spaced)
_SAMPLE_PER_TILE = 4096
_BLOCK = 65_536


def check_tile(z: int, x: int, y: int) -> None:
    """InvalidInputError unless (z, x, y) is a tile of the web mercator XYZ pyramid."""
    if not (0 <= z <= MAX_ZOOM):
        raise InvalidInputError(f"zoom {z} is outside 0..{MAX_ZOOM}")
    n = 1 << z
    if not (0 <= x < n and 0 <= y < n):
        raise InvalidInputError(f"tile {z}/{x}/{y} is not on zoom {z}'s grid (x and y in 0..{n - 1})")


def tile_lonlat(z: int, x: int, y: int, size: int = TILE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(size, size) float64 lon, lat (degrees) of the pixel centres of XYZ tile z/x/y."""
    check_tile(z, x, y)
    n = float(1 << z)
    f = (np.arange(size, dtype=np.float64) + 0.5) / size
    lon = (x + f) / n * 360.0 - 180.0
    lat = np.degrees(np.arctan(np.sinh(np.pi * (1.0 - 2.0 * (y + f) / n))))
    return np.broadcast_to(lon[None, :], (size, size)), np.broadcast_to(lat[:, None], (size, size))


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """(west, south, east, north) of XYZ tile z/x/y, degrees."""
    n = float(1 << z)

    def lat(v: float) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1.0 - 2.0 * v / n))))

    return x / n * 360.0 - 180.0, lat(y + 1), (x + 1) / n * 360.0 - 180.0, lat(y)


def png_bytes(rgba: np.ndarray) -> bytes:
    """A (H, W, 4) uint8 array as PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba), "RGBA").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def empty_png() -> bytes:
    return png_bytes(np.zeros((TILE_SIZE, TILE_SIZE, 4), np.uint8))


class EmbeddingTiles:
    """False-colour XYZ tiles of one index generation (thread-safe; see the module docstring).

    ``index``: an opened :class:`~tessera_search.index.Index`, kept open for the renderer's
    life (its shard files are read, never mapped whole).
    """

    def __init__(self, index, cache_tiles: int = _CACHE_TILES) -> None:
        from ..grid import Tile

        self.index = index
        self.tiles = {Tile.from_name(n): None for n in index.tiles}
        self._cells = {(t.ix, t.iy): t for t in self.tiles}
        self._pca = None
        self._cache: OrderedDict = OrderedDict()
        self._cache_tiles = int(cache_tiles)
        self._lock = threading.Lock()
        self._tile_locks: dict = {}

    @property
    def pca(self):
        """The PCA of a sample spread over the index's tiles (computed on first use)."""
        if self._pca is None:
            from ..query._export import _sample_rows, _tile_rows
            from ..query._vectors import PcaColours, unit_rows

            names = sorted(self.tiles)
            step = max(1, len(names) // _SAMPLE_TILES)
            rng = np.random.default_rng(0)
            parts = []
            for t in names[::step][:_SAMPLE_TILES]:
                read, ids = _tile_rows(self.index, t)
                if len(ids):
                    parts.append(unit_rows(_sample_rows(read, len(ids), _SAMPLE_PER_TILE, rng)))
            sample = np.concatenate(parts) if parts else np.zeros((2, 128), np.float32)
            self._pca = PcaColours(sample)
        return self._pca

    def tile_colours(self, tile, step: int = 1) -> np.ndarray:
        """(ceil(H / step), ceil(W / step), 4) uint8 RGBA of one index tile on its own grid:
        every ``step``-th pixel of every ``step``-th row (zoomed-out views need no more);
        alpha 0 where not indexed."""
        key = (tile, int(step))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            lock = self._tile_locks.setdefault(key, threading.Lock())
        with lock:  # one thread colours a tile; the others wait for it
            with self._lock:
                hit = self._cache.get(key)
            if hit is not None:
                return hit
            arr = self._colour(tile, int(step))
            with self._lock:
                self._cache[key] = arr
                while len(self._cache) > self._cache_tiles:
                    self._cache.popitem(last=False)
            return arr

    def _colour(self, tile, step: int) -> np.ndarray:
        from ..grid import unpack_ids
        from ..query._export import _tile_rows

        pca = self.pca
        grid = self.index.grid(tile)
        arr = np.zeros((-(-grid.height // step), -(-grid.width // step), 4), np.uint8)
        read, ids = _tile_rows(self.index, tile)
        for a in range(0, len(ids), _BLOCK):
            _, _, r, c = unpack_ids(ids[a:a + _BLOCK])
            rows = read(a, a + _BLOCK)
            if step > 1:  # project only the pixels kept: most of the cost is the projection
                keep = (r % step == 0) & (c % step == 0)
                r, c, rows = r[keep], c[keep], rows[keep]
            arr[r // step, c // step, :3] = pca.colours(rows)
            arr[r // step, c // step, 3] = 255
        return arr

    @staticmethod
    def step_for(z: int, lat: float) -> int:
        """Grid pixels per coloured sample at zoom ``z``: 1 while a screen pixel is under 20 m,
        then 2, 4, ... up to 16."""
        metres = 156_543.034 * math.cos(math.radians(lat)) / (1 << z)
        return int(min(16, max(1, 2 ** math.floor(math.log2(max(metres / 10.0, 1.0))))))

    def render(self, z: int, x: int, y: int) -> bytes | None:
        """PNG bytes of XYZ tile z/x/y, or None when it holds no indexed pixel (or too many tiles)."""
        from ..grid import _cell_indices, lonlat_to_pixel

        lon, lat = tile_lonlat(z, x, y)
        w, s, e, n = tile_bounds(z, x, y)
        ix0, ix1 = math.floor(w * 10), math.floor(e * 10)
        iy0, iy1 = math.floor(s * 10), math.floor(n * 10)
        near = [t for (cx, cy), t in self._cells.items() if ix0 <= cx <= ix1 and iy0 <= cy <= iy1]
        if not near or len(near) > MAX_CELLS:
            return None
        cx, cy = _cell_indices(np.ascontiguousarray(lon), np.ascontiguousarray(lat))
        step = self.step_for(z, (s + n) / 2)
        out = np.zeros((TILE_SIZE, TILE_SIZE, 4), np.uint8)
        # First the tile whose cell holds the point; then, for a point near a cell edge whose
        # pixel there is the neighbour's (its centre lies across the edge), the neighbour's pixel.
        for first in (True, False):
            for t in near:
                sel = ((cx == t.ix) & (cy == t.iy)) if first else (out[..., 3] == 0)
                if not first:
                    w0, s0, e0, n0 = t.bounds
                    m = 0.001  # degrees: well over a 10 m pixel
                    sel &= (lon > w0 - m) & (lon < e0 + m) & (lat > s0 - m) & (lat < n0 + m)
                if not sel.any():
                    continue
                r, c, inside = lonlat_to_pixel(self.index.grid(t), lon[sel], lat[sel])
                colours = self.tile_colours(t, step)
                r, c = r // step, c // step
                got = out[sel]
                take = inside.copy()
                take[inside] = colours[r[inside], c[inside], 3] > 0
                got[take] = colours[r[take], c[take]]
                out[sel] = got
        if not out[..., 3].any():
            return None
        return png_bytes(out)

    def close(self) -> None:
        self._cache.clear()
        self.index.close()


def raster_tile(path: str | Path, z: int, x: int, y: int) -> bytes | None:
    """PNG bytes of XYZ tile z/x/y of a GeoTIFF (band 1), or None when it does not cover it.

    A band with a colour map (class maps, match masks) is drawn in it; other bands on a grey
    ramp between the band's overview 2nd and 98th percentiles. Nodata (and NaN) is transparent.
    """
    import rasterio
    from pyproj import Transformer
    from rasterio.windows import Window

    lon, lat = tile_lonlat(z, x, y)
    with rasterio.open(path) as src:
        tr = Transformer.from_crs(4326, src.crs, always_xy=True)
        xs, ys = tr.transform(np.ascontiguousarray(lon).ravel(), np.ascontiguousarray(lat).ravel())
        inv = ~src.transform
        xs, ys = np.asarray(xs), np.asarray(ys)
        col, row = inv.a * xs + inv.b * ys + inv.c, inv.d * xs + inv.e * ys + inv.f
        col, row = np.floor(col).astype(np.int64), np.floor(row).astype(np.int64)
        inside = (row >= 0) & (row < src.height) & (col >= 0) & (col < src.width)
        if not inside.any():
            return None
        r0, r1 = int(row[inside].min()), int(row[inside].max()) + 1
        c0, c1 = int(col[inside].min()), int(col[inside].max()) + 1
        f = max((r1 - r0) / 512.0, (c1 - c0) / 512.0, 1.0)  # read at most ~512 px a side (overviews)
        h, w = max(1, int(math.ceil((r1 - r0) / f))), max(1, int(math.ceil((c1 - c0) / f)))
        data = src.read(1, window=Window(c0, r0, c1 - c0, r1 - r0), out_shape=(h, w))
        rr = np.clip(((row[inside] - r0) / (r1 - r0) * h).astype(np.int64), 0, h - 1)
        cc = np.clip(((col[inside] - c0) / (c1 - c0) * w).astype(np.int64), 0, w - 1)
        vals = data[rr, cc]
        nodata = src.nodata
        try:
            cmap = src.colormap(1)
        except ValueError:
            cmap = None
        rgba = np.zeros((lon.size, 4), np.uint8)
        ok = np.ones(vals.shape, bool)
        if nodata is not None:
            ok &= ~(np.isnan(vals) if np.isnan(nodata) else vals == nodata)
        if np.issubdtype(vals.dtype, np.floating):
            ok &= np.isfinite(vals)
        if cmap:
            lut = np.zeros((max(max(cmap), int(vals.max(initial=0))) + 1, 4), np.uint8)
            for code, colour in cmap.items():
                lut[code] = colour[:3] + (255,)
            got = lut[np.clip(vals.astype(np.int64), 0, len(lut) - 1)]
            got[~ok] = 0
        else:
            fin = vals[ok]
            lo, hi = (np.percentile(fin, 2), np.percentile(fin, 98)) if fin.size else (0.0, 1.0)
            g = (np.clip((vals - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8)
            got = np.stack([g, g, g, np.where(ok, 255, 0).astype(np.uint8)], axis=1)
            got[~ok] = 0
        idx = np.flatnonzero(inside)
        rgba[idx] = got
    if not rgba[:, 3].any():
        return None
    return png_bytes(rgba.reshape(TILE_SIZE, TILE_SIZE, 4))


def outlines(bbox: tuple[float, float, float, float], tolerance: float | None = None) -> dict:
    """Natural Earth admin-0 outlines (public domain) meeting ``bbox`` (W, S, E, N degrees), as a
    GeoJSON FeatureCollection of boundary lines clipped to the box, simplified to
    ``tolerance`` degrees (default: the box's size / 2000)."""
    import shapefile
    import shapely
    import shapely.geometry

    from ..regions import _ne_zip

    w, s, e, n = bbox
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise InvalidInputError(f"bbox {bbox} is not W,S,E,N with W < E and S < N in degrees")
    box = shapely.box(w, s, e, n)
    tol = max(e - w, n - s) / 2000.0 if tolerance is None else float(tolerance)
    features = []
    with shapefile.Reader(str(_ne_zip()), encoding="utf-8") as reader:
        fields = [f[0] for f in reader.fields[1:]]
        name_at = fields.index("NAME") if "NAME" in fields else None
        for i, shp in enumerate(reader.iterShapes()):
            bw, bs, be, bn = shp.bbox
            if be < w or bw > e or bn < s or bs > n:
                continue
            geom = shapely.geometry.shape(shp.__geo_interface__)
            line = shapely.intersection(geom.boundary, box)
            if line.is_empty:
                continue
            name = reader.record(i)[name_at] if name_at is not None else ""
            features.append({"type": "Feature", "properties": {"name": name},
                             "geometry": shapely.geometry.mapping(line.simplify(tol))})
    return {"type": "FeatureCollection", "features": features}
