"""Writing results: GeoTIFF / COG rasters from per-tile arrays, PNG quicklooks, GeoJSON.

Rasters are written **tile by tile**: a :class:`RasterWriter` takes one tile's
``(bands, H, W)`` array at a time and puts it in place, so memory does not grow with the
region. Three layouts:

- **Mosaic on the tiles' own grid** (all tiles in one UTM zone, no ``crs``): the output
  covers the union of the tiles' 10 m grids. Tiles of one zone have grids whose origins
  are multiples of 10 m, so each tile is an integer window of the mosaic and its pixels
  are copied, not resampled; a grid that is not aligned is resampled (nearest).
- **Mosaic in a target CRS** (``crs="EPSG:4326"`` etc., required when tiles span UTM
  zones): each tile is reprojected with :func:`rasterio.warp.reproject` into its window
  of the output (nearest neighbour, so class codes stay codes). The resolution is the
  finest size, in target units, of one 10 m pixel at any tile's centre (square pixels),
  and the extent is snapped to whole pixels.
- **Per tile** (``per_tile=True``): one COG per tile on the tile's own grid,
  ``<stem>_<tile>.tif`` beside ``path``.

Only a tile's non-nodata pixels are written (the edge pixels it does not own are nodata),
so overlapping tile grids never overwrite each other's pixels. The mosaic is staged in a
tiled GeoTIFF beside the output and turned into a Cloud-Optimized GeoTIFF (GDAL's
``COG`` driver: internal tiling, overviews, deflate) in one streaming copy, then renamed
into place: a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._io import atomic_path, write_error, writing
from .errors import InvalidInputError
from .grid import TileGrid

__all__ = [
    "PALETTE",
    "POINT_SUFFIXES",
    "QUERY_SUFFIXES",
    "RASTER_SUFFIXES",
    "check_output",
    "MosaicPlan",
    "RasterWriter",
    "legend_path",
    "plan_mosaic",
    "quicklook_path",
    "write_legend_json",
    "write_points_geojson",
    "write_quicklook",
]

PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
)
"""Distinct colours for class codes 1, 2, ... (cycled beyond 20)."""

RASTER_SUFFIXES = (".tif", ".tiff")
"""A Cloud-Optimized GeoTIFF."""
POINT_SUFFIXES = (".geojson", ".json")
"""GeoJSON points."""
QUERY_SUFFIXES = (".tif", ".tiff", ".png", ".geojson", ".json", ".parquet", ".csv")
"""What a query's matches can be written as (COG mask, PNG quicklook, points or blobs)."""


def check_output(path: str | os.PathLike[str], suffixes: Sequence[str], option: str = "--out",
                 directory: bool = False) -> Path:
    """Check an output path before any work: a known suffix and a place it can be written.

    ``directory``: the path is a folder of per-tile files (no suffix rule). Raises
    :class:`InvalidInputError` naming every supported extension for an unknown suffix,
    :class:`~tessera_search.errors.WriteError` for a path under a file or onto a folder.
    """
    path = Path(path)
    if not directory and path.suffix.lower() not in suffixes:
        got = f"'{path.suffix}'" if path.suffix else "no extension"
        raise InvalidInputError(
            f"{option} {path}: {got} is not a supported output; use one of {', '.join(suffixes)}"
        )
    if not directory and path.is_dir():
        raise write_error(f"{option}", path, IsADirectoryError(21, "Is a directory"))
    parent = path if directory else path.parent
    for up in (parent, *parent.parents):
        if up.exists():
            if not up.is_dir():
                raise write_error(f"{option}", path, NotADirectoryError(20, f"{up} is a file, not a folder"))
            break
    return path


_ALIGN_TOL = 1e-6  # pixels: a grid this close to a whole-pixel offset counts as aligned


def legend_path(path: str | os.PathLike[str]) -> Path:
    """The sidecar legend of a raster: ``classes.json`` for ``classes.tif``."""
    return Path(path).with_suffix(".json")


def quicklook_path(path: str | os.PathLike[str]) -> Path:
    """The PNG quicklook of a raster: ``classes.png`` for ``classes.tif``."""
    return Path(path).with_suffix(".png")


# ======================================================================================
# Planning the output grid
# ======================================================================================


@dataclass(frozen=True)
class MosaicPlan:
    """The output raster's grid: CRS, north-up transform (GDAL 6-tuple) and shape."""

    crs: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    reproject: bool  # True when tiles are warped into a CRS other than their own

    def affine(self):
        from affine import Affine

        return Affine(*self.transform)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        a, _, c, _, e, f = self.transform
        return (c, f + e * self.height, c + a * self.width, f)


def _crs_text(crs) -> str:
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        c = CRS.from_user_input(crs)
    except CRSError as exc:
        raise InvalidInputError(f"--crs {crs!r} is not a CRS GDAL knows ({exc}); e.g. EPSG:4326") from None
    epsg = c.to_epsg()
    return f"EPSG:{epsg}" if epsg else c.to_wkt()


def plan_mosaic(grids: Sequence[TileGrid], crs: str | None = None) -> MosaicPlan:
    """The mosaic grid for ``grids`` (see the module docstring for the rules).

    Raises :class:`InvalidInputError` when the tiles span UTM zones and no ``crs`` is
    given.
    """
    if not grids:
        raise InvalidInputError("nothing to write: no tiles")
    epsgs = sorted({g.epsg for g in grids})
    target = _crs_text(crs) if crs is not None else None
    if target is None or (len(epsgs) == 1 and target == f"EPSG:{epsgs[0]}"):
        if len(epsgs) > 1:
            raise InvalidInputError(
                f"the tiles span UTM zones ({', '.join(f'EPSG:{e}' for e in epsgs)}); pass --crs "
                "EPSG:4326 (or another CRS) for one mosaic, or --per-tile for one file per tile"
            )
        res = {(g.transform[0], -g.transform[4]) for g in grids}
        if len(res) != 1:
            raise InvalidInputError(f"the tiles have different pixel sizes {sorted(res)}; pass --crs to resample")
        a, e = grids[0].transform[0], grids[0].transform[4]
        xmin = min(g.bounds[0] for g in grids)
        ymax = max(g.bounds[3] for g in grids)
        xmax = max(g.bounds[2] for g in grids)
        ymin = min(g.bounds[1] for g in grids)
        width = int(math.ceil((xmax - xmin) / a - _ALIGN_TOL))
        height = int(math.ceil((ymax - ymin) / -e - _ALIGN_TOL))
        return MosaicPlan(f"EPSG:{epsgs[0]}", (a, 0.0, xmin, 0.0, e, ymax), width, height, False)

    from pyproj import Transformer
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds

    dst = CRS.from_user_input(target)
    res = math.inf
    xmin = ymin = math.inf
    xmax = ymax = -math.inf
    for g in grids:
        src = CRS.from_epsg(g.epsg)
        # The target's pixel size: one source pixel's steps east and north at the tile's
        # centre, measured in target units; the finest over all tiles.
        x0, y0 = (g.bounds[0] + g.bounds[2]) / 2, (g.bounds[1] + g.bounds[3]) / 2
        step = g.transform[0]
        tr = Transformer.from_crs(src.to_wkt(), dst.to_wkt(), always_xy=True)
        px, py = tr.transform([x0, x0 + step, x0], [y0, y0, y0 + step])
        res = min(res, math.hypot(px[1] - px[0], py[1] - py[0]), math.hypot(px[2] - px[0], py[2] - py[0]))
        b = transform_bounds(src, dst, *g.bounds, densify_pts=21)
        xmin, ymin = min(xmin, b[0]), min(ymin, b[1])
        xmax, ymax = max(xmax, b[2]), max(ymax, b[3])
    # Snap outward to whole pixels of the target resolution.
    x0 = math.floor(xmin / res) * res
    y1 = math.ceil(ymax / res) * res
    width = int(math.ceil((xmax - x0) / res))
    height = int(math.ceil((y1 - ymin) / res))
    return MosaicPlan(target, (res, 0.0, x0, 0.0, -res, y1), width, height, True)


# ======================================================================================
# Writing rasters
# ======================================================================================


def _nodata_mask(data: np.ndarray, nodata) -> np.ndarray:
    """(H, W) bool: pixels where every band is nodata."""
    if nodata is None:
        return np.zeros(data.shape[1:], dtype=bool)
    if isinstance(nodata, float) and math.isnan(nodata):
        return np.all(np.isnan(data), axis=0)
    return np.all(data == nodata, axis=0)


class RasterWriter:
    """Stream per-tile ``(count, H, W)`` arrays into a COG mosaic (or per-tile COGs).

    Use as a context manager; :meth:`write_tile` once per tile, in any order. On a clean
    exit the COG is finalised and renamed onto ``path`` (per tile: one file per tile);
    on an error nothing is left behind. ``colormap`` applies to band 1 (``{code: (r, g, b)}``),
    ``band_scales`` sets GDAL's per-band scale (e.g. 0.01 for a percent band).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        grids: Sequence[TileGrid],
        *,
        count: int,
        dtype: str,
        nodata: float | int | None,
        crs: str | None = None,
        per_tile: bool = False,
        tags: Mapping[str, object] | None = None,
        band_descriptions: Sequence[str] | None = None,
        band_scales: Sequence[float] | None = None,
        colormap: Mapping[int, tuple[int, int, int]] | None = None,
        overview_resampling: str = "nearest",
    ) -> None:
        self.path = Path(path)
        self.grids = list(grids)
        self.count, self.dtype, self.nodata = int(count), str(dtype), nodata
        self.per_tile = bool(per_tile)
        if self.per_tile and crs is not None:
            raise InvalidInputError("--per-tile writes each tile on its own UTM grid; drop --crs, or drop --per-tile")
        self.tags = {k: _tag(v) for k, v in (tags or {}).items()}
        self.band_descriptions = list(band_descriptions or [])
        self.band_scales = list(band_scales or [])
        self.colormap = dict(colormap or {})
        self.overview_resampling = overview_resampling
        self.plan = None if self.per_tile else plan_mosaic(self.grids, crs)
        self.written: list[Path] = []
        self._tmp: Path | None = None
        self._dst = None

    # -- context --------------------------------------------------------------------
    def __enter__(self) -> RasterWriter:
        if not self.per_tile:
            import tempfile

            import rasterio

            with writing("the raster", self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".stage.tif", dir=self.path.parent)
                os.close(fd)
                self._tmp = Path(tmp)
                p = self.plan
                self._dst = rasterio.open(
                    self._tmp, "w+", driver="GTiff", width=p.width, height=p.height, count=self.count,
                    dtype=self.dtype, crs=p.crs, transform=p.affine(), nodata=self.nodata, tiled=True,
                    blockxsize=256, blockysize=256, compress="deflate", zlevel=1, bigtiff="IF_SAFER",
                )
                self._blank()
        return self

    def _fill(self):
        return 0 if self.nodata is None else self.nodata

    def _blank(self) -> None:
        """Fill the stage file with nodata, one row of blocks at a time (bounded memory)."""
        from rasterio.windows import Window

        p = self.plan
        for r0 in range(0, p.height, 256):
            h = min(256, p.height - r0)
            self._dst.write(np.full((self.count, h, p.width), self._fill(), dtype=self.dtype),
                            window=Window(0, r0, p.width, h))

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and not self.per_tile:
                with writing("the raster", self.path):
                    self._finish()
        finally:
            if self._dst is not None and not self._dst.closed:
                self._dst.close()
            if self._tmp is not None and self._tmp.exists():
                self._tmp.unlink()

    # -- writing --------------------------------------------------------------------
    def write_tile(self, grid: TileGrid, data: np.ndarray) -> None:
        """Place one tile's ``(count, H, W)`` array (nodata where the tile has nothing)."""
        data = np.asarray(data)
        if data.ndim == 2:
            data = data[None]
        if data.shape != (self.count, grid.height, grid.width):
            raise ValueError(f"tile array {data.shape} does not match ({self.count}, {grid.height}, {grid.width})")
        data = data.astype(self.dtype, copy=False)
        with writing("the raster", self.path):
            if self.per_tile:
                self._write_one(grid, data)
            elif not self.plan.reproject and self._aligned(grid):
                self._place(grid, data)
            else:
                self._warp(grid, data)

    def _aligned(self, grid: TileGrid) -> bool:
        a, _, c, _, e, f = self.plan.transform
        if (grid.transform[0], grid.transform[4]) != (a, e):
            return False
        dx, dy = (grid.transform[2] - c) / a, (grid.transform[5] - f) / e
        return abs(dx - round(dx)) < _ALIGN_TOL and abs(dy - round(dy)) < _ALIGN_TOL

    def _merge(self, window, data: np.ndarray) -> None:
        """Write ``data`` into ``window`` except where it is nodata (keeps neighbours' pixels)."""
        empty = _nodata_mask(data, self.nodata)
        if empty.all():
            return
        if empty.any():
            old = self._dst.read(window=window)
            data = np.where(empty[None], old, data)
        self._dst.write(data, window=window)

    def _place(self, grid: TileGrid, data: np.ndarray) -> None:
        from rasterio.windows import Window

        a, _, c, _, e, f = self.plan.transform
        col0 = int(round((grid.transform[2] - c) / a))
        row0 = int(round((grid.transform[5] - f) / e))
        self._merge(Window(col0, row0, grid.width, grid.height), data)

    def _warp(self, grid: TileGrid, data: np.ndarray) -> None:
        from rasterio.crs import CRS
        from rasterio.enums import Resampling
        from rasterio.warp import reproject, transform_bounds
        from rasterio.windows import Window, from_bounds

        p = self.plan
        b = transform_bounds(CRS.from_epsg(grid.epsg), CRS.from_user_input(p.crs), *grid.bounds, densify_pts=21)
        win = from_bounds(*b, transform=p.affine())
        col0 = max(int(math.floor(win.col_off)) - 1, 0)
        row0 = max(int(math.floor(win.row_off)) - 1, 0)
        col1 = min(int(math.ceil(win.col_off + win.width)) + 1, p.width)
        row1 = min(int(math.ceil(win.row_off + win.height)) + 1, p.height)
        if col0 >= col1 or row0 >= row1:
            return
        window = Window(col0, row0, col1 - col0, row1 - row0)
        dest = np.full((self.count, window.height, window.width), self._fill(), dtype=self.dtype)
        reproject(
            source=data, destination=dest, src_transform=grid.affine(), src_crs=grid.crs,
            src_nodata=self.nodata, dst_transform=_window_transform(p, col0, row0), dst_crs=p.crs,
            dst_nodata=self.nodata,
            resampling=Resampling.nearest,
        )
        self._merge(window, dest)

    def _style(self, dst) -> None:
        """Tags, colour map, band descriptions and scales on an open dataset."""
        if self.tags:
            dst.update_tags(**self.tags)
        for i, d in enumerate(self.band_descriptions, 1):
            dst.set_band_description(i, d)
        if self.band_scales:
            dst.scales = tuple(self.band_scales)
        if self.colormap:
            dst.write_colormap(1, {int(k): (*v[:3], 255) for k, v in self.colormap.items()})

    def _cog_copy(self, src, path: Path) -> None:
        from rasterio.shutil import copy

        with atomic_path(path) as tmp:
            copy(src, tmp, driver="COG", compress="deflate", blocksize=512,
                 overview_resampling=self.overview_resampling, bigtiff="IF_SAFER")
            _readable(tmp)
        self.written.append(path)

    def _finish(self) -> None:
        self._style(self._dst)
        self._dst.close()
        self._cog_copy(str(self._tmp), self.path)

    def _write_one(self, grid: TileGrid, data: np.ndarray) -> None:
        from rasterio.io import MemoryFile

        with MemoryFile() as mem:
            with mem.open(driver="GTiff", width=grid.width, height=grid.height, count=self.count,
                          dtype=self.dtype, crs=grid.crs, transform=grid.affine(), nodata=self.nodata) as d:
                d.write(data)
                self._style(d)
                d.update_tags(tile=grid.tile.name)
            with mem.open() as d:
                self._cog_copy(d, self.path.with_name(f"{self.path.stem}_{grid.tile.name}.tif"))


def _window_transform(plan: MosaicPlan, col0: int, row0: int):
    from affine import Affine

    a, b, c, d, e, f = plan.transform
    return Affine(a, b, c + a * col0, d, e, f + e * row0)


def _readable(path: Path) -> None:
    """Give a finished output ordinary permissions (temporary files are created 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _tag(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    return str(value)


# ======================================================================================
# Sidecars, quicklooks and points
# ======================================================================================


def write_legend_json(path: str | os.PathLike[str], legend: Mapping[int, str]) -> Path:
    """Write ``{"<code>": "<class name>"}`` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({str(int(k)): str(v) for k, v in sorted(legend.items())}, indent=1) + "\n")
        _readable(tmp)
    return path


def _nice_length(metres: float) -> float:
    """The largest 1, 2 or 5 x 10^n not above ``metres``."""
    if metres <= 0:
        return 0.0
    p = 10.0 ** math.floor(math.log10(metres))
    for m in (5.0, 2.0, 1.0):
        if m * p <= metres:
            return m * p
    return p


def write_quicklook(
    raster: str | os.PathLike[str],
    png: str | os.PathLike[str] | None = None,
    *,
    legend: Mapping[int, str] | None = None,
    colours: Mapping[int, tuple[int, int, int]] | None = None,
    title: str = "",
    max_size: int = 1024,
    band: int = 1,
) -> Path:
    """A PNG picture of a raster band with a legend and a scale bar.

    With ``legend`` the band holds class codes, drawn with ``colours`` (default
    :data:`PALETTE`); without, values are drawn on a grey ramp between the band's
    2nd and 98th percentiles. Nodata is white. The raster is read decimated (from its
    overviews when it has them) to at most ``max_size`` pixels a side.
    """
    import rasterio
    from PIL import Image, ImageDraw, ImageFont
    from rasterio.enums import Resampling

    raster = Path(raster)
    png = quicklook_path(raster) if png is None else Path(png)
    with rasterio.open(raster) as src:
        f = max(src.width / max_size, src.height / max_size, 1.0)
        w, h = max(1, int(round(src.width / f))), max(1, int(round(src.height / f)))
        arr = src.read(band, out_shape=(h, w), resampling=Resampling.nearest)
        nodata = src.nodata
        crs = src.crs
        px_x = src.transform.a * src.width / w
        centre_y = src.transform.f + src.transform.e * src.height / 2
    empty = _nodata_mask(arr[None], nodata) if nodata is not None else np.zeros(arr.shape, bool)
    rgb = np.full((h, w, 3), 255, dtype=np.uint8)
    if legend:
        cols = dict(colours or {})
        for code in legend:
            colour = cols.get(code, PALETTE[(int(code) - 1) % len(PALETTE)])
            rgb[(arr == code) & ~empty] = colour
    elif (~empty).any():
        vals = arr[~empty].astype(np.float64)
        lo, hi = np.percentile(vals, [2, 98])
        scaled = np.clip((arr.astype(np.float64) - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
        grey = (40 + 200 * scaled).astype(np.uint8)
        rgb[~empty] = np.repeat(grey[~empty][:, None], 3, axis=1)

    font = ImageFont.load_default()
    rows = list(legend.items()) if legend else []
    panel_w = 0
    if rows:
        panel_w = 30 + max(int(font.getlength(str(name))) for _, name in rows) + 20
    header = 22 if title else 0
    footer = 34
    canvas = Image.new("RGB", (w + panel_w + 20, max(h, 22 * len(rows) + 10) + header + footer + 10), "white")
    canvas.paste(Image.fromarray(rgb), (10, header + 5))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((10, 4), title, fill=(0, 0, 0), font=font)
    draw.rectangle([9, header + 4, 10 + w, header + 5 + h], outline=(0, 0, 0))
    for i, (code, name) in enumerate(rows):
        y = header + 8 + 22 * i
        colour = (colours or {}).get(code, PALETTE[(int(code) - 1) % len(PALETTE)])
        draw.rectangle([w + 22, y, w + 38, y + 14], fill=tuple(colour), outline=(0, 0, 0))
        draw.text((w + 44, y + 1), str(name), fill=(0, 0, 0), font=font)
    # Scale bar: metres per quicklook pixel along x at the raster's centre.
    metres_px = px_x
    if crs is not None and crs.is_geographic:
        metres_px = px_x * 111_320.0 * math.cos(math.radians(centre_y))
    length = _nice_length(metres_px * w / 4)
    if length > 0:
        bar = int(round(length / metres_px))
        y = header + 5 + h + 12
        draw.rectangle([10, y, 10 + bar, y + 5], fill=(0, 0, 0))
        label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
        draw.text((14 + bar, y - 3), label, fill=(0, 0, 0), font=font)
    with atomic_path(png) as tmp:
        canvas.save(tmp, format="PNG")
        _readable(tmp)
    return png


def write_points_geojson(
    path: str | os.PathLike[str],
    lon: np.ndarray,
    lat: np.ndarray,
    properties: Mapping[str, Sequence],
    metadata: Mapping[str, object] | None = None,
) -> Path:
    """A GeoJSON FeatureCollection of points (degrees) with per-point properties.

    ``properties`` maps a name to a column (one value per point; numpy values become
    JSON numbers). ``metadata`` goes into a top-level ``"tessera_search"`` member.
    """
    path = Path(path)
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    cols = {k: (v.tolist() if isinstance(v, np.ndarray) else list(v)) for k, v in properties.items()}
    for k, v in cols.items():
        if len(v) != lon.size:
            raise ValueError(f"property {k!r} has {len(v)} values for {lon.size} points")
    features = []
    for i in range(lon.size):
        props = {k: _json_value(v[i]) for k, v in cols.items()}
        features.append({
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [round(float(lon[i]), 8), round(float(lat[i]), 8)]},
            "properties": props,
        })
    doc: dict = {"type": "FeatureCollection", "features": features}
    if metadata:
        doc["tessera_search"] = {k: _json_value(v) for k, v in metadata.items()}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc) + "\n")
        _readable(tmp)
    return path


def _json_value(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    return v
