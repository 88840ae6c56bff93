"""Writing results: the one home of raster writing (COG), output-path checks and raster
quicklooks (through :mod:`tessera_search.quicklook`); vectors live in
:mod:`tessera_search.vectors`.

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

Memory stays at one tile plus one block row: the stage file is sparse (blocks never
written read back as nodata, so it is not pre-filled), each tile is merged into its
window alone, and GDAL's block cache is capped at :data:`GDAL_CACHE_MB` while the
writer is open (GDAL's default is 5 % of the machine's memory, which a large mosaic
otherwise fills). A 2 x 2 mosaic of full 1,108 x 1,115 tiles peaks at about 0.23 GB
resident (0.16 GB of it is Python, NumPy and GDAL themselves).

Bands are plain: band 1 is grey, or a palette with ``colormap``; bands 2+ are
"undefined", never alpha. (GDAL's GeoTIFF copy marks the second band of a two-band
paletted file as alpha, so QGIS would draw a class map as mostly transparent; the
writer rewrites that one TIFF field in place, which changes no offset, so the COG
layout stays valid.)
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
from .quicklook import PALETTE, nice_length  # noqa: F401 - PALETTE is re-exported

__all__ = [
    "GDAL_CACHE_MB",
    "PALETTE",
    "POINT_SUFFIXES",
    "QUERY_SUFFIXES",
    "RASTER_SUFFIXES",
    "VECTOR_SUFFIXES",
    "check_output",
    "MosaicPlan",
    "RasterWriter",
    "legend_path",
    "plan_mosaic",
    "quicklook_path",
    "write_legend_json",
    "write_quicklook",
]


GDAL_CACHE_MB = 256
"""GDAL's block cache while a :class:`RasterWriter` is open, in MB."""

RASTER_SUFFIXES = (".tif", ".tiff")
"""A Cloud-Optimized GeoTIFF."""
POINT_SUFFIXES = (".geojson", ".json")
"""GeoJSON points."""
VECTOR_SUFFIXES = (".geojson", ".json", ".parquet", ".csv")
"""What :func:`write_points` and :func:`write_polygons` write (GeoJSON, GeoParquet, CSV)."""
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
        raise InvalidInputError(f"crs {crs!r} is not a CRS GDAL knows ({exc}); e.g. EPSG:4326") from None
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
                f"the tiles span UTM zones ({', '.join(f'EPSG:{e}' for e in epsgs)}); give a crs (e.g. "
                "EPSG:4326; `--crs` on the command line) for one mosaic, or per_tile (`--per-tile`) for one "
                "file per tile"
            )
        res = {(g.transform[0], -g.transform[4]) for g in grids}
        if len(res) != 1:
            raise InvalidInputError(
                f"the tiles have different pixel sizes {sorted(res)}; give a crs (`--crs`) to resample"
            )
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
            raise InvalidInputError("per_tile writes each tile on its own UTM grid and takes no crs: drop one of "
                                    "them (`--per-tile`, `--crs`)")
        self.tags = {k: _tag(v) for k, v in (tags or {}).items()}
        self.band_descriptions = list(band_descriptions or [])
        self.band_scales = list(band_scales or [])
        self.colormap = dict(colormap or {})
        self.overview_resampling = overview_resampling
        self.plan = None if self.per_tile else plan_mosaic(self.grids, crs)
        self.written: list[Path] = []
        self._tmp: Path | None = None
        self._dst = None
        self._env = None

    # -- context --------------------------------------------------------------------
    def __enter__(self) -> RasterWriter:
        import rasterio

        self._env = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)
        self._env.__enter__()
        try:
            if not self.per_tile:
                self._open_stage()
        except BaseException:
            self._env.__exit__(None, None, None)
            self._env = None
            raise
        return self

    def _open_stage(self) -> None:
        import tempfile

        import rasterio

        with writing("the raster", self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".stage.tif", dir=self.path.parent)
            os.close(fd)
            self._tmp = Path(tmp)
            p = self.plan
            # Sparse: a block never written reads back as nodata, so the stage needs no
            # pre-filling pass and a tile's window is merged against nodata.
            self._dst = rasterio.open(
                self._tmp, "w+", driver="GTiff", width=p.width, height=p.height, count=self.count,
                dtype=self.dtype, crs=p.crs, transform=p.affine(), nodata=self.nodata, tiled=True,
                blockxsize=256, blockysize=256, compress="deflate", zlevel=1, bigtiff="IF_SAFER", sparse_ok=True,
            )
            self._interpretation(self._dst)

    def _fill(self):
        return 0 if self.nodata is None else self.nodata

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and not self.per_tile:
                with writing("the raster", self.path):
                    self._finish()
        finally:
            try:
                if self._dst is not None and not self._dst.closed:
                    self._dst.close()
                if self._tmp is not None and self._tmp.exists():
                    self._tmp.unlink()
            finally:
                if self._env is not None:
                    self._env.__exit__(None, None, None)
                    self._env = None

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

    def _interpretation(self, dst) -> None:
        """Colour map and colour interpretation, set before any pixel is written (GDAL
        cannot change a GeoTIFF's photometric tag once data is in it)."""
        from rasterio.enums import ColorInterp

        if self.colormap:
            dst.write_colormap(1, {int(k): (*v[:3], 255) for k, v in self.colormap.items()})
        first = ColorInterp.palette if self.colormap else ColorInterp.gray
        dst.colorinterp = [first] + [ColorInterp.undefined] * (self.count - 1)

    def _style(self, dst) -> None:
        """Tags, band descriptions and scales on an open dataset."""
        if self.tags:
            dst.update_tags(**self.tags)
        for i, d in enumerate(self.band_descriptions, 1):
            dst.set_band_description(i, d)
        if self.band_scales:
            dst.scales = tuple(self.band_scales)

    def _cog_copy(self, src, path: Path) -> None:
        from rasterio.shutil import copy

        with atomic_path(path) as tmp:
            copy(src, tmp, driver="COG", compress="deflate", blocksize=512,
                 overview_resampling=self.overview_resampling, bigtiff="IF_SAFER")
            _no_alpha(tmp)
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
                self._interpretation(d)
                d.write(data)
                self._style(d)
                d.update_tags(tile=grid.tile.name)
            with mem.open() as d:
                self._cog_copy(d, self.path.with_name(f"{self.path.stem}_{grid.tile.name}.tif"))


_EXTRA_SAMPLES = 338  # TIFF tag ExtraSamples: 0 unspecified, 1 associated alpha, 2 unassociated alpha


def _no_alpha(path: Path) -> None:
    """Mark every extra sample of every image (full resolution and overviews) of a GeoTIFF
    "unspecified" instead of alpha, in place.

    GDAL's GeoTIFF copy always marks the second band of a two-band paletted file as alpha.
    The field is a few bytes at a fixed place of each image file directory, so rewriting
    it moves nothing and keeps the COG layout intact.
    """
    import struct

    with open(path, "r+b") as fh:
        head = fh.read(16)
        order = {b"II": "<", b"MM": ">"}.get(head[:2])
        if order is None:
            return
        magic = struct.unpack(order + "H", head[2:4])[0]
        big = magic == 43
        if magic not in (42, 43):
            return
        ifd = struct.unpack(order + ("Q" if big else "I"), head[8:16] if big else head[4:8])[0]
        count_fmt, entry_size, off_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
        value_size = 8 if big else 4
        seen = set()
        while ifd and ifd not in seen:
            seen.add(ifd)
            fh.seek(ifd)
            n = struct.unpack(order + count_fmt, fh.read(struct.calcsize(count_fmt)))[0]
            start = ifd + struct.calcsize(count_fmt)
            fh.seek(start)
            entries = fh.read(n * entry_size)
            for i in range(n):
                entry = entries[i * entry_size:(i + 1) * entry_size]
                tag, typ = struct.unpack(order + "HH", entry[:4])
                if tag != _EXTRA_SAMPLES or typ != 3:  # SHORT
                    continue
                k = struct.unpack(order + off_fmt, entry[4:4 + value_size])[0]  # the value count
                if 2 * k <= value_size:  # the values sit in the entry itself
                    where = start + i * entry_size + 4 + value_size
                else:
                    where = struct.unpack(order + off_fmt, entry[4 + value_size:])[0]
                fh.seek(where)
                values = list(struct.unpack(order + "H" * k, fh.read(2 * k)))
                if any(v in (1, 2) for v in values):
                    fh.seek(where)
                    fh.write(struct.pack(order + "H" * k, *[0 if v in (1, 2) else v for v in values]))
            fh.seek(start + n * entry_size)
            ifd = struct.unpack(order + off_fmt, fh.read(value_size))[0]


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
# Sidecars and quicklooks
# ======================================================================================


def write_legend_json(path: str | os.PathLike[str], legend: Mapping[int, str]) -> Path:
    """Write ``{"<code>": "<class name>"}`` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({str(int(k)): str(v) for k, v in sorted(legend.items())}, indent=1) + "\n")
    return path


def write_quicklook(
    raster: str | os.PathLike[str],
    png: str | os.PathLike[str] | None = None,
    *,
    legend: Mapping[int, str] | None = None,
    colours: Mapping[int, tuple[int, int, int]] | None = None,
    title: str = "",
    max_size: int = 1024,
    band: int = 1,
    synthetic: bool | None = None,
) -> Path:
    """A PNG picture of one band of a raster (default ``<raster>.png``); returns its path.

    With ``legend`` ``{code: name}`` the band holds class codes, drawn with ``colours``
    (default :data:`PALETTE`) and listed in the legend box; without, values are drawn on a
    grey ramp between the band's 2nd and 98th percentiles with a colour bar. Nodata is
    white. Lon/lat ticks, a scale bar, and the ``SYNTHETIC DATA`` badge when
    ``synthetic`` (default: the raster's ``synthetic`` tag). The raster is read decimated
    (from its overviews) to at most ``max_size`` pixels a side
    (:func:`tessera_search.raster_view.read_raster`, :func:`~tessera_search.quicklook.paint`).
    """
    from .quicklook import RAMP_GREY, ClassLayer, ValueLayer, paint
    from .raster_view import read_raster

    raster = Path(raster)
    png = quicklook_path(raster) if png is None else Path(png)
    view = read_raster(raster, band, max_size=max_size)
    arr = view.data[0]
    empty = view.empty()
    if legend:
        codes = np.where(empty, -1, arr).astype(np.int64)  # -1: no code, drawn as no data
        base = ClassLayer(codes, dict(legend), dict(colours) if colours else None, nodata=None)
    else:
        vals = arr.astype(np.float64)
        vals[empty] = np.nan
        finite = vals[np.isfinite(vals)]
        lo, hi = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
        name = view.descriptions[0] if view.descriptions and view.descriptions[0] else f"band {band}"
        base = ValueLayer(vals, float(lo), float(hi) if hi > lo else float(lo) + 1.0, RAMP_GREY, name, open_top=False)
    return paint(png, base, view.extent, title=title, max_size=max_size,
                 synthetic=view.synthetic if synthetic is None else bool(synthetic))
