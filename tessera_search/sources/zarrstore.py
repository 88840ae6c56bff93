"""Reading a local geoemb Zarr v3 store (geotessera's ``utm_zones`` layout) tile by tile.

The store holds one group per UTM zone, ``utm01`` ... ``utm60``, each on the zone's
northern grid (EPSG:326NN; southern rows have negative northings, northing - 10,000,000)
with ``spatial:transform [10, 0, x0, 0, -10, y0]`` (pixel corner) and arrays
``embeddings`` int8 (time, band, y, x), ``scales`` float32 (time, y, x) (fill +inf) and a
``time`` coordinate of years.

Tiles stay the unit: a 0.1 degree tile is read as the window of its zone grid covering the
tile's own UTM grid (:func:`~tessera_search.grid.expected_grid`, in EPSG:326NN or 327NN),
a plain slice of the zone arrays (only the window is read, never a whole shard's worth of
tiles). The window's origin must be a whole number of pixels from the zone grid's origin;
a store whose lattice does not line up is a :class:`~tessera_search.errors.CorruptTileError`
naming the tile (nothing is resampled). Parts of the tile's grid outside the zone array
read as no data (NaN scale, zero vectors). Scales are kept as published; NaN, +inf and
huge sentinels (>= 1e6) fail :func:`~tessera_search.quant.valid_scales`. A tile-year whose
window has no valid pixel is not available.

Only group names ``utmNN`` and the fixed array names are opened, and each zone group's
folder must resolve inside the store root.

The store may also be an ``http(s)://`` URL (a store served as static files): it is read
through :class:`~tessera_search.sources.zarrhttp.HttpStore` (every key a path below the
URL, byte ranges for inner chunks of shards, at most ``workers`` requests at once). Its
root ``zarr.json`` is fetched once; zone groups are found through the consolidated
metadata (or, without it, by asking for each ``utmNN/zarr.json``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CorruptTileError, InvalidInputError, SourceUnavailableError
from ..grid import PIXEL_SIZE, Tile, TileGrid, from_utm, expected_grid, tiles_in_bbox
from ..quant import valid_scales
from .base import EMBEDDING_DIM, TileData, TileFailure

__all__ = ["DEFAULT_ZARR_VERSION", "ZarrSource", "geoemb_source", "is_geoemb_store"]

DEFAULT_ZARR_VERSION = "v1.1"
MAX_SCAN_TILES = 20_000  # available(year) without tiles enumerates at most this many cells
_ZONE_RE = re.compile(r"^utm(0[1-9]|[1-5][0-9]|60)$")
_VERSION_RE = re.compile(r"^v\d[A-Za-z0-9._~+-]*$")
_BARE_VERSION_RE = re.compile(r"^(\d+)(?:\.(\d+))?$")  # geotessera's model path: 1.0, 1.1
_SOUTH_OFFSET = 10_000_000.0  # false northing of the southern UTM zones
_MAX_ROOT_META = 64 * 1024 * 1024


def _is_url(loc: str) -> bool:
    return loc.lower().startswith(("http://", "https://"))


def _mirror(url: str, retries: int | None, backoff: float, timeout: float):
    from .httpmirror import DEFAULT_RETRIES, HttpMirror

    return HttpMirror(url, DEFAULT_RETRIES if retries is None else retries, backoff, timeout)


def _http_root(mirror) -> tuple[dict, bytes] | None:
    """The root ``zarr.json`` of an http(s) store (parsed, raw); None when there is none.

    SourceUnavailableError when the server cannot be reached (after the mirror's retries).
    """
    raw = mirror.fetch_bytes(mirror.join("zarr.json"), what=f"zarr.json of {mirror.url}", missing=(403, 404, 410))
    if raw is None or len(raw) > _MAX_ROOT_META:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return (doc, raw) if isinstance(doc, dict) else None


def _says_geoemb(doc: dict) -> bool | None:
    """From a root ``zarr.json``: True/False when it decides, None when only listing can tell."""
    if doc.get("zarr_format") != 3 or doc.get("node_type") != "group":
        return False
    attrs = doc.get("attributes") or {}
    if isinstance(attrs, dict) and attrs.get("geoemb:spatial_layout") == "utm_zones":
        return True
    cons = doc.get("consolidated_metadata")
    members = cons.get("metadata") if isinstance(cons, dict) else None
    if isinstance(members, dict) and any(isinstance(k, str) and _ZONE_RE.match(k) for k in members):
        return True
    return None


def _root_meta(path: Path) -> dict | None:
    meta = path / "zarr.json"
    try:
        if not meta.is_file() or meta.stat().st_size > 64 * 1024 * 1024:
            return None
        doc = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def is_geoemb_store(location: str | os.PathLike[str], retries: int | None = None, backoff: float = 0.5,
                    timeout: float = 60.0) -> bool:
    """True for a local directory or http(s) URL that is a geoemb Zarr v3 store of UTM zones.

    Recognised by the root ``zarr.json`` (a v3 group) with ``geoemb:spatial_layout ==
    "utm_zones"``, or by child groups named ``utmNN`` (in a URL's consolidated metadata).
    A URL's root ``zarr.json`` is fetched (``retries`` with ``backoff``); a server that
    cannot be reached is a SourceUnavailableError, one without that file is no store.
    """
    loc = str(location)
    if _is_url(loc):
        found = _http_root(_mirror(loc, retries, backoff, timeout))
        return found is not None and bool(_says_geoemb(found[0]))
    if "://" in loc:
        return False
    path = Path(loc).expanduser()
    if not path.is_dir():
        return False
    doc = _root_meta(path)
    if doc is None:
        return False
    says = _says_geoemb(doc)
    if says is not None:
        return says
    try:
        return any(_ZONE_RE.match(p.name) and (p / "zarr.json").is_file() for p in path.iterdir())
    except OSError:
        return False


@dataclass(frozen=True)
class _Zone:
    """One zone group: its lattice, extent, years and CRS.

    ``epsg`` is the group's own CRS (326NN in the geoemb layout, 326NN or 327NN for an
    Icechunk hemisphere group); ``rows`` the half-open range of rows on the group's side of
    the equator (all rows unless the group is one hemisphere of a zone); ``complete`` the
    published years (``years_complete``) where the store says, else None.
    """

    name: str
    zone: int
    x0: float
    y0: float
    height: int
    width: int
    years: tuple[int, ...]
    epsg: int = 0
    rows: tuple[int, int] | None = None
    complete: tuple[int, ...] | None = None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) in the group's own metres."""
        return (self.x0, self.y0 - PIXEL_SIZE * self.height, self.x0 + PIXEL_SIZE * self.width, self.y0)

    @property
    def crs_epsg(self) -> int:
        return self.epsg or 32600 + self.zone


def lattice_origin(name: str, transform, bbox, height: int, width: int) -> tuple[float, float] | CorruptTileError:
    """(x0, y0) of a zone group's corner pixel from ``spatial:transform`` (checked north-up 10 m).

    Some older snapshots stored the transform at the first pixel's centre: when
    ``spatial:bbox`` is given and the transform's origin is half a pixel inside it, the
    corner is taken from there (a transform off the bbox by anything else is an error).
    """
    if not (isinstance(transform, list) and len(transform) >= 6):
        return CorruptTileError(f"zone group {name} has no spatial:transform")
    a, b, x0, d, e, y0 = (float(v) for v in transform[:6])
    if (a, b, d, e) != (PIXEL_SIZE, 0.0, 0.0, -PIXEL_SIZE):
        return CorruptTileError(
            f"zone group {name}: spatial:transform {transform[:6]} is not a north-up {PIXEL_SIZE:g} m grid"
        )
    if isinstance(bbox, list) and len(bbox) == 4:
        xmin, _, _, ymax = (float(v) for v in bbox)
        half = PIXEL_SIZE / 2
        if abs(x0 - half - xmin) < 1e-6 and abs(y0 + half - ymax) < 1e-6:
            return xmin, ymax  # a pixel-centre transform of an older snapshot
        if abs(x0 - xmin) > 1e-6 or abs(y0 - ymax) > 1e-6:
            return CorruptTileError(
                f"zone group {name}: spatial:transform origin ({x0}, {y0}) is neither the corner nor the "
                f"first pixel centre of its spatial:bbox {bbox}"
            )
    return x0, y0


@dataclass(frozen=True)
class _Window:
    """Where a tile's grid sits in its zone: row/col offset of the grid's corner pixel."""

    grid: TileGrid
    zone: _Zone
    row: int
    col: int


def _dataset_version(attrs: dict) -> str:
    """``v1.1`` etc. from the model path's last segment, else a version-like build_version."""
    model = attrs.get("geoemb:model")
    if isinstance(model, str):
        last = model.rstrip("/").rsplit("/", 1)[-1]
        if _VERSION_RE.match(last):
            return last
        # geotessera's zarr-init writes the normalised model version (".../model/1.0",
        # ".../model/1.1"); the release's version directories are v1, v1.1, v2.
        bare = _BARE_VERSION_RE.match(last)
        if bare:
            return f"v{bare.group(1)}" + (f".{bare.group(2)}" if bare.group(2) not in (None, "0") else "")
    build = attrs.get("geoemb:build_version")
    if isinstance(build, str) and _VERSION_RE.match(build):
        return build
    return DEFAULT_ZARR_VERSION


def geoemb_source(location: str | os.PathLike[str], version: str | None = None, **http) -> ZarrSource | None:
    """A :class:`ZarrSource` when ``location`` is a geoemb store, else None.

    For a URL the root ``zarr.json`` is fetched once, for both the check and the source;
    ``http`` takes ZarrSource's ``retries``, ``backoff``, ``timeout`` and ``workers``.
    SourceUnavailableError when the URL cannot be reached.
    """
    loc = str(location)
    if not _is_url(loc):
        return ZarrSource(loc, version=version) if is_geoemb_store(loc) else None
    opts = {k: http[k] for k in ("retries", "backoff", "timeout") if k in http}
    mirror = _mirror(loc, opts.get("retries"), opts.get("backoff", 0.5), opts.get("timeout", 60.0))
    found = _http_root(mirror)
    if found is None or not _says_geoemb(found[0]):
        return None
    return ZarrSource(loc, version=version, _root=found, **http)


class ZarrSource:
    """A geoemb Zarr v3 store (layout ``utm_zones``), local or http(s), as a tile source.

    ``available(year, tiles)`` checks each given tile's window cheaply (the scales window
    only). Without ``tiles`` it enumerates the cells overlapping each zone group's extent,
    which is bounded: a store whose zones span more than ``MAX_SCAN_TILES`` cells needs
    ``tiles`` (InvalidInputError otherwise). ``version`` overrides the dataset version read
    from the root attributes (the model path's version, else ``v1.1``).

    An http(s) ``location`` is read with ``retries`` (back-off ``backoff`` seconds,
    doubling), ``timeout`` seconds per request and at most ``workers`` requests at once.
    """

    def __init__(self, location: str | os.PathLike[str], version: str | None = None, *,
                 retries: int | None = None, backoff: float = 0.5, timeout: float = 60.0,
                 workers: int = 8, _root: tuple[dict, bytes] | None = None, _store=None) -> None:
        import zarr

        loc = str(location)
        self.is_http = _is_url(loc) or _store is not None
        if _store is not None:  # an object store (s3:// with credentials), see s3_zarr_source
            self.root, self.url, self.label = None, loc, loc
            where = _store
        elif self.is_http:
            from .zarrhttp import HttpStore

            mirror = _mirror(loc, retries, backoff, timeout)
            self.root = None
            self.url = self.label = mirror.url
            found = _root if _root is not None else _http_root(mirror)
            if found is None or not _says_geoemb(found[0]):
                raise SourceUnavailableError(
                    f"{self.url} is not a geoemb Zarr v3 store (no utm_zones root zarr.json); "
                    "pass source=DIR|URL|synthetic"
                )
            self._http_store = HttpStore(mirror, workers=workers, seed={"zarr.json": found[1]})
            where = self._http_store
        else:
            self.root = Path(loc).expanduser().absolute()
            self.url = None
            self.label = str(self.root)
            if not is_geoemb_store(self.root):
                raise SourceUnavailableError(f"{self.root} is not a geoemb Zarr v3 store (no utm_zones root zarr.json)")
            self._real_root = self.root.resolve()
            where = str(self.root)
        try:
            self._group = zarr.open_group(where, mode="r", zarr_format=3)
            attrs = dict(self._group.attrs)
        except SourceUnavailableError:
            raise
        except Exception as exc:  # zarr raises a variety of errors for damaged stores
            raise SourceUnavailableError(f"geoemb store {self.label} is unreadable: {exc}") from exc
        if version is not None and not _VERSION_RE.match(version):
            raise InvalidInputError(f"dataset version {version!r} is not a plain name like v1.1")
        if _store is not None and not _says_geoemb({"zarr_format": 3, "node_type": "group", "attributes": attrs}):
            raise SourceUnavailableError(f"{self.label} is not a geoemb Zarr v3 store (no utm_zones root attributes)")
        self.version = version or _dataset_version(attrs)
        self.synthetic = bool(attrs.get("tessera-search:synthetic", False))
        dims = attrs.get("geoemb:dimensions", EMBEDDING_DIM)
        if dims != EMBEDDING_DIM:
            raise SourceUnavailableError(f"geoemb store {self.label} holds {dims}-dim embeddings, expected {EMBEDDING_DIM}")
        self._zones: dict[int, _Zone | CorruptTileError] = {}

    # -- zones ------------------------------------------------------------------------
    def _zone_names(self) -> list[str]:
        try:
            return sorted(k for k in self._group.group_keys() if _ZONE_RE.match(k))
        except SourceUnavailableError:
            raise
        except Exception as exc:
            if self.is_http and self._group.metadata.consolidated_metadata is None:
                # a static server cannot list: ask for each zone group instead
                names = []
                for zone in range(1, 61):
                    try:
                        if self._zone(zone) is not None:
                            names.append(f"utm{zone:02d}")
                    except CorruptTileError:
                        names.append(f"utm{zone:02d}")
                return names
            raise SourceUnavailableError(f"geoemb store {self.label}: cannot list its zone groups: {exc}") from exc

    def _zone(self, zone) -> _Zone | None:
        """The zone group's description (cached by its key: the zone number here, the group
        name in a hemisphere layout); None if absent, CorruptTileError if unusable."""
        if zone not in self._zones:
            self._zones[zone] = self._load_zone(zone)
        z = self._zones[zone]
        if isinstance(z, CorruptTileError):
            raise z
        return z

    def _load_zone(self, zone: int):
        name = f"utm{zone:02d}"
        if self.is_http:
            try:
                self._group[name]
            except KeyError:
                return None
            except SourceUnavailableError:
                raise
            except Exception as exc:  # noqa: BLE001 - zarr raises a variety of errors for damaged groups
                return CorruptTileError(f"zone group {name} of {self.label} is unreadable: {exc}")
        else:
            folder = self.root / name
            if not folder.exists():
                return None
            if not folder.resolve().is_relative_to(self._real_root):
                return CorruptTileError(f"zone group {name} leads outside the store {self.root}; nothing was read")
        try:
            g = self._group[name]
            attrs = dict(g.attrs)
            emb, sc = g["embeddings"], g["scales"]
            years = tuple(int(v) for v in np.asarray(g["time"][...]).ravel()) if "time" in g else tuple(
                int(v) for v in np.asarray(self._group["time"][...]).ravel()
            )
        except SourceUnavailableError:
            raise  # not cached: the next tile asks again
        except Exception as exc:  # noqa: BLE001 - zarr raises a variety of errors for damaged groups
            return CorruptTileError(f"zone group {name} of {self.label} is unreadable: {exc}")
        code = str(attrs.get("proj:code", f"EPSG:{32600 + zone}"))
        if code.upper() != f"EPSG:{32600 + zone}":
            return CorruptTileError(f"zone group {name} is in {code}, expected EPSG:{32600 + zone}")
        h, w = int(sc.shape[-2]), int(sc.shape[-1])
        origin = lattice_origin(name, attrs.get("spatial:transform"), attrs.get("spatial:bbox"), h, w)
        if isinstance(origin, CorruptTileError):
            return origin
        x0, y0 = origin
        shape = attrs.get("spatial:shape")
        if shape is not None and [int(v) for v in shape] != [h, w]:
            return CorruptTileError(f"zone group {name}: spatial:shape {shape} does not match its scales {sc.shape}")
        if emb.dtype != np.int8 or emb.ndim != 4 or emb.shape[1] != EMBEDDING_DIM or tuple(emb.shape[2:]) != (h, w):
            return CorruptTileError(
                f"zone group {name}: embeddings {emb.dtype} {emb.shape}, expected int8 (time, {EMBEDDING_DIM}, {h}, {w})"
            )
        if sc.ndim != 3 or sc.shape[0] != emb.shape[0] or len(years) != sc.shape[0]:
            return CorruptTileError(
                f"zone group {name}: scales {sc.shape} / time {len(years)} do not match embeddings {emb.shape}"
            )
        return _Zone(name, zone, x0, y0, h, w, years, epsg=32600 + zone)

    def _zone_of(self, grid: TileGrid) -> _Zone | None:
        """The zone group holding a tile grid (None when the store lacks it)."""
        return self._zone(grid.epsg % 100)

    def _window(self, tile: Tile) -> _Window | None:
        """The tile's grid placed in its zone group; None when the store lacks the zone."""
        grid = expected_grid(tile)
        zone = self._zone_of(grid)
        if zone is None:
            return None
        x = grid.transform[2]
        # a southern tile's grid (327NN) in a northern-CRS group: northing - 10,000,000
        y = grid.transform[5] - (_SOUTH_OFFSET if grid.epsg != zone.crs_epsg else 0.0)
        col, row = (x - zone.x0) / PIXEL_SIZE, (zone.y0 - y) / PIXEL_SIZE
        if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
            raise CorruptTileError(
                f"{tile.name}: its grid corner ({x:.2f}, {y:.2f}) is ({col - math.floor(col):.3f}, "
                f"{row - math.floor(row):.3f}) pixels off the lattice of zone group {zone.name} "
                f"(spatial:transform origin {zone.x0}, {zone.y0}); the store is misaligned and "
                "tiles are never resampled"
            )
        return _Window(grid, zone, round(row), round(col))

    @staticmethod
    def _overlap(win: _Window) -> tuple[slice, slice, slice, slice] | None:
        """(zone rows, zone cols, tile rows, tile cols) of the part inside the zone array."""
        g, z = win.grid, win.zone
        lo, hi = z.rows or (0, z.height)
        r0, r1 = max(win.row, lo), min(win.row + g.height, hi)
        c0, c1 = max(win.col, 0), min(win.col + g.width, z.width)
        if r0 >= r1 or c0 >= c1:
            return None
        return (slice(r0, r1), slice(c0, c1),
                slice(r0 - win.row, r1 - win.row), slice(c0 - win.col, c1 - win.col))

    def _scales_block(self, win: _Window, t: int, zr: slice, zc: slice) -> np.ndarray:
        return np.asarray(self._group[win.zone.name]["scales"][t, zr, zc], dtype=np.float32)

    def _embeddings_block(self, win: _Window, t: int, zr: slice, zc: slice) -> np.ndarray:
        """(h, w, 128) int8 of the zone rows/cols."""
        return np.asarray(self._group[win.zone.name]["embeddings"][t, :, zr, zc]).transpose(1, 2, 0)

    def _fill(self, out: np.ndarray, win: _Window, t: int, block, what: str) -> np.ndarray:
        """``out`` (the tile grid's array, no data already) with the part of the window inside
        the zone array read by ``block(win, t, zone_rows, zone_cols)``."""
        ov = self._overlap(win)
        if ov is not None:
            zr, zc, tr, tc = ov
            try:
                out[tr, tc] = block(win, t, zr, zc)
            except (SourceUnavailableError, CorruptTileError):
                raise
            except Exception as exc:
                raise CorruptTileError(
                    f"{win.grid.tile.name}: {what} of zone group {win.zone.name} are unreadable: {exc}"
                ) from exc
        return out

    def _read_scales(self, win: _Window, t: int) -> np.ndarray:
        return self._fill(np.full(win.grid.shape, np.nan, dtype=np.float32), win, t, self._scales_block, "scales")

    def _read(self, win: _Window, t: int) -> tuple[np.ndarray, np.ndarray]:
        emb = np.zeros((*win.grid.shape, EMBEDDING_DIM), dtype=np.int8)
        return self._fill(emb, win, t, self._embeddings_block, "embeddings"), self._read_scales(win, t)

    def zone_sample(self, tile: Tile, year: int, dataset: str):
        """The published statistics of the zone group holding ``tile`` for ``year``
        (``stretch_sample*`` and ``stretch_stats_*``) as a
        :class:`~tessera_search.zone_samples.ZoneSample`; None where the store has none."""
        from ..zone_samples import from_arrays

        try:
            win = self._window(tile)
            if win is None or year not in win.zone.years:
                return None
            g = self._group[win.zone.name]
            names = set(g.array_keys())
            if not {"stretch_sample", "stretch_sample_scales", "stretch_sample_count"} <= names:
                return None
            t = win.zone.years.index(year)
            n = int(np.asarray(g["stretch_sample_count"][t]))
            moments = {"stretch_stats_count", "stretch_stats_sum", "stretch_stats_prod"} <= names
            return from_arrays(
                win.zone.name, year, dataset, g["stretch_sample"][t, :n], g["stretch_sample_scales"][t, :n], n,
                g["stretch_stats_count"][t] if moments else 0,
                g["stretch_stats_sum"][t] if moments else None, g["stretch_stats_prod"][t] if moments else None,
            )
        except SourceUnavailableError:
            raise
        except Exception:  # noqa: BLE001 - statistics are an optimisation: without them training reads tiles
            return None

    def _year_gap(self, zone: _Zone, year: int) -> str | None:
        """Why ``year`` is a publication gap of ``zone`` (not an empty year), or None."""
        if zone.complete is not None and year not in zone.complete:
            return (f"{year} is a publication gap of zone group {zone.name}: it is not in the group's "
                    f"years_complete {list(zone.complete)} (its pixels read back as fill, not as an empty year)")
        return None

    def _read_observations(self, win: _Window, t: int) -> np.ndarray | None:
        """(H, W, k) uint16 observation counts of the window, where the store has them."""
        return None

    # -- the source interface ---------------------------------------------------------
    def _has_valid(self, tile: Tile, year: int) -> bool:
        try:
            win = self._window(tile)
        except (CorruptTileError, SourceUnavailableError):
            return True  # let fetch report why it cannot be used
        if win is None or year not in win.zone.years:
            return False
        if self._year_gap(win.zone, year):
            return True  # fetch says it is a publication gap, per zone
        try:
            return bool(valid_scales(self._read_scales(win, win.zone.years.index(year))).any())
        except (CorruptTileError, SourceUnavailableError):
            return True

    @staticmethod
    def _zone_key(name: str):
        """The :meth:`_zone` key of a listed group name."""
        return int(name[3:])

    def _all_zones(self) -> Iterator[_Zone]:
        """Every usable zone group of the store."""
        for name in self._zone_names():
            try:
                z = self._zone(self._zone_key(name))
            except CorruptTileError:
                continue
            if z is not None:
                yield z

    def _candidates(self, year: int) -> list[Tile]:
        out: list[Tile] = []
        for z in self._all_zones():
            if year not in z.years:
                continue
            xmin, ymin, xmax, ymax = z.bounds
            if z.rows is not None:  # one hemisphere of the zone: only its side of the equator
                ymin = max(ymin, z.y0 - PIXEL_SIZE * z.rows[1])
                ymax = min(ymax, z.y0 - PIXEL_SIZE * z.rows[0])
            t = np.linspace(0.0, 1.0, 33)
            xs = np.concatenate([xmin + (xmax - xmin) * t, np.full_like(t, xmax), xmax - (xmax - xmin) * t, np.full_like(t, xmin)])
            ys = np.concatenate([np.full_like(t, ymin), ymin + (ymax - ymin) * t, np.full_like(t, ymax), ymax - (ymax - ymin) * t])
            lons, lats = from_utm(z.crs_epsg).transform(xs, ys)
            west = max(float(np.min(lons)), -180.0 + 6.0 * (z.zone - 1))
            east = min(float(np.max(lons)), -180.0 + 6.0 * z.zone)
            south, north = max(float(np.min(lats)), -80.0), min(float(np.max(lats)), 84.0)
            if west >= east or south >= north:
                continue
            n = (math.ceil(east * 10) - math.floor(west * 10)) * (math.ceil(north * 10) - math.floor(south * 10))
            if len(out) + n > MAX_SCAN_TILES:
                raise InvalidInputError(
                    f"geoemb store {self.label} spans more than {MAX_SCAN_TILES} tiles; "
                    "pass the tiles to check (available(year, tiles=...))"
                )
            out.extend(tile for tile in tiles_in_bbox(west, south, east, north) if self._holds(z, tile))
        return out

    def _group_name(self, tile: Tile) -> str:
        """The name of the zone group a tile's window is read from."""
        return f"utm{tile.epsg % 100:02d}"

    def _holds(self, zone: _Zone, tile: Tile) -> bool:
        """Whether ``tile``'s window is read from ``zone``."""
        return tile.epsg % 100 == zone.zone

    def available(self, year: int, tiles: Iterable[Tile] | None = None) -> set[Tile]:
        """Tiles whose window holds at least one valid pixel in ``year``."""
        year = int(year)
        todo = self._candidates(year) if tiles is None else list(tiles)
        return {t for t in todo if self._has_valid(t, year)}

    def fetch(self, tiles: Iterable[Tile], year: int, on_progress=None) -> Iterator[TileData | TileFailure]:
        """Each tile's window as :class:`TileData`, or a :class:`TileFailure` saying why not."""
        year = int(year)
        for i, tile in enumerate(tiles, 1):
            yield self._fetch_one(tile, year)
            if on_progress:
                on_progress(i)

    def _fetch_one(self, tile: Tile, year: int) -> TileData | TileFailure:
        try:
            win = self._window(tile)
            if win is None:
                return TileFailure(tile, year, f"{self.label} has no zone group {self._group_name(tile)}")
            if year not in win.zone.years:
                return TileFailure(
                    tile, year, f"zone group {win.zone.name} has no year {year} (its time coordinate holds "
                    f"{list(win.zone.years)})"
                )
            gap = self._year_gap(win.zone, year)
            if gap:
                return TileFailure(tile, year, gap)
            t = win.zone.years.index(year)
            emb, sc = self._read(win, t)
            if not valid_scales(sc).any():
                return TileFailure(tile, year, f"no valid pixel in zone group {win.zone.name} for {year}")
            return TileData(
                tile=tile, year=year, embeddings=emb, scales=sc, grid=win.grid,
                dataset_version=self.version, source=self.label, synthetic=self.synthetic,
                observations=self._read_observations(win, t),
            )
        except (CorruptTileError, SourceUnavailableError) as exc:
            return TileFailure(tile, year, str(exc))
