"""Reading an Icechunk repository of TESSERA embeddings (the dClimate v1.1 global run).

The repository holds one group per UTM zone and hemisphere, ``01N`` ... ``60S``, **each in
its own CRS** (EPSG:326NN for ``NNN``, 327NN for ``NNS``: southern northings are positive),
with arrays ordered (time, northing, easting[, band]):

- ``embeddings`` int8 (T, N, E, 128), band last; ``scales`` float32 (T, N, E), NaN fill =
  not embedded;
- ``s2_obs_count``, ``s1_asc_obs_count``, ``s1_desc_obs_count`` uint16 (T, N, E): the valid
  observations each pixel was embedded from (kept per tile, see
  :data:`~tessera_search.sources.base.OBSERVATION_KINDS`);
- a ``time`` coordinate (years, integer or datetime) and group attrs ``spatial:transform``,
  ``spatial:shape``, ``proj:code`` and ``years_complete``.

``years_complete`` is authoritative: a year the group lists in ``time`` but not there is a
publication gap (its pixels read back as fill), reported as such, never as an empty year.
Each group extends past the equator to whole shards: only rows whose centre is on the
group's side of the equator are read (a northern tile always comes from ``NNN``, a southern
one from ``NNS``). Older snapshots stored ``spatial:transform`` at the first pixel's
centre; that is recognised against ``spatial:bbox``.

Tiles stay the unit exactly as for the geoemb Zarr layout (:mod:`.zarrstore`, whose
windowing this class shares): a tile is the window of its group covering the tile's own
UTM grid, checked to sit on the group's lattice, so pixel IDs and everything downstream
are the same whichever layout a tile came from.

The repository is opened read-only on branch ``main`` with no config object (one would
replace the repository's saved settings). ``location`` is a local path or
``s3://bucket/prefix``: anonymous by default (the public bucket); with
``AWS_ACCESS_KEY_ID`` in the environment, credentials come from there. ``AWS_ENDPOINT_URL``
(or ``AWS_ENDPOINT_URL_S3``) points at another S3 endpoint (path-style requests);
``AWS_REGION`` / ``AWS_DEFAULT_REGION`` name the region (default ``us-west-2``, the
bucket's).
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import numpy as np

from ..errors import CorruptTileError, InvalidInputError, SourceUnavailableError
from ..grid import PIXEL_SIZE, Tile, TileGrid
from .base import EMBEDDING_DIM, OBSERVATION_KINDS
from .zarrstore import _VERSION_RE, ZarrSource, _Window, _Zone, lattice_origin

__all__ = ["DCLIMATE_REGION", "IcechunkSource", "is_icechunk_repo", "parse_s3_url", "s3_http_url", "s3_zarr_store"]

DCLIMATE_REGION = "us-west-2"  # the public bucket's region
_GROUP_RE = re.compile(r"^(0[1-9]|[1-5][0-9]|60)([NS])$")
_OBS_ARRAYS = tuple(f"{k}_obs_count" for k in OBSERVATION_KINDS)
_EQUATOR_SOUTH = 10_000_000.0  # the equator's northing in EPSG:327NN
T = TypeVar("T")


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket/prefix``; InvalidInputError when it is not one."""
    parts = urlsplit(url)
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if parts.scheme.lower() != "s3" or not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", bucket or "") \
            or parts.query or parts.fragment or ".." in prefix.split("/"):
        raise InvalidInputError(f"{url!r} is not an s3://bucket/prefix URL")
    return bucket, prefix


def s3_endpoint() -> str | None:
    """The S3 endpoint override from the environment (None: AWS itself)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DCLIMATE_REGION


def check_reachable(url: str, bucket: str, timeout: float = 5.0) -> None:
    """Fail fast (SourceUnavailableError) when the S3 endpoint cannot be connected to.

    Without this an offline open waits out the object store client's own retries (about
    30 s) before saying so.
    """
    endpoint = s3_endpoint()
    if endpoint:
        parts = urlsplit(endpoint)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    else:
        host = f"s3.{s3_region()}.amazonaws.com" if "." in bucket else f"{bucket}.s3.{s3_region()}.amazonaws.com"
        port = 443
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise SourceUnavailableError(
            f"cannot reach the object store for {url} ({host}:{port}: {exc.strerror or exc}); check the network"
        ) from exc


def s3_http_url(url: str) -> str:
    """The HTTPS address of an ``s3://bucket/prefix`` (anonymous reads of a public bucket):
    path-style below ``AWS_ENDPOINT_URL`` when set, else the bucket's virtual host (path-style
    on the regional endpoint for a bucket name with dots, which no wildcard certificate covers)."""
    bucket, prefix = parse_s3_url(url)
    endpoint = s3_endpoint()
    if endpoint:
        base = f"{endpoint.rstrip('/')}/{bucket}"
    elif "." in bucket:
        base = f"https://s3.{s3_region()}.amazonaws.com/{bucket}"
    else:
        base = f"https://{bucket}.s3.{s3_region()}.amazonaws.com"
    return f"{base}/{prefix}/" if prefix else f"{base}/"


def s3_zarr_store(url: str):
    """A read-only zarr store over ``s3://bucket/prefix`` signed with the environment's
    credentials (obstore; ``AWS_ENDPOINT_URL`` and ``AWS_REGION`` honoured)."""
    from obstore.store import S3Store
    from zarr.storage import ObjectStore

    bucket, prefix = parse_s3_url(url)
    endpoint = s3_endpoint()
    opts: dict = {"region": s3_region()}
    if endpoint:
        opts.update(endpoint=endpoint, virtual_hosted_style_request=False,
                    client_options={"allow_http": endpoint.lower().startswith("http://")})
    return ObjectStore(S3Store(bucket, prefix=prefix or None, **opts), read_only=True)


def is_icechunk_repo(location: str | os.PathLike[str]) -> bool:
    """True for a local directory laid out as an Icechunk repository (``snapshots/`` beside
    ``refs/`` in format 1, or beside the ``repo`` file in format 2), or an ``s3://`` URL whose
    prefix ends in ``.icechunk``."""
    loc = str(location)
    if loc.lower().startswith("s3://"):
        return loc.rstrip("/").lower().endswith(".icechunk")
    if "://" in loc:
        return False
    path = Path(loc).expanduser()
    return (path / "snapshots").is_dir() and ((path / "refs").is_dir() or (path / "repo").is_file())


def _storage(loc: str):
    import icechunk

    if not loc.lower().startswith("s3://"):
        return icechunk.local_filesystem_storage(str(Path(loc).expanduser().absolute()))
    bucket, prefix = parse_s3_url(loc)
    endpoint = s3_endpoint()
    opts: dict = {"bucket": bucket, "prefix": prefix or None, "region": s3_region()}
    if endpoint:
        opts.update(endpoint_url=endpoint, allow_http=endpoint.lower().startswith("http://"), force_path_style=True)
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        opts["from_env"] = True
    else:
        opts["anonymous"] = True
    return icechunk.s3_storage(**opts)


def _years(values) -> tuple[int, ...]:
    arr = np.asarray(values).ravel()
    if np.issubdtype(arr.dtype, np.datetime64):
        return tuple(int(v) + 1970 for v in arr.astype("datetime64[Y]").astype(np.int64))
    return tuple(int(v) for v in arr)


class IcechunkSource(ZarrSource):
    """An Icechunk repository (hemisphere groups ``NNN``/``NNS``), local or ``s3://``, as a
    tile source. Remote reads are retried ``retries`` times (back-off ``backoff`` seconds,
    doubling) and run at most ``workers`` chunk requests at once."""

    def __init__(self, location: str | os.PathLike[str], version: str | None = None, *,
                 retries: int = 3, backoff: float = 0.5, workers: int = 8, branch: str = "main") -> None:
        import icechunk
        import zarr

        loc = str(location)
        self.is_s3 = loc.lower().startswith("s3://")
        self.is_http = self.is_s3  # a remote source (for callers that ask)
        self.url = loc if self.is_s3 else None
        self.root = None if self.is_s3 else Path(loc).expanduser().absolute()
        self.label = loc if self.is_s3 else str(self.root)
        self._retries, self._backoff, self._workers = max(0, int(retries)), float(backoff), max(1, int(workers))
        if version is not None and not _VERSION_RE.match(version):
            raise InvalidInputError(f"dataset version {version!r} is not a plain name like v1.1")
        if self.is_s3:
            check_reachable(loc, parse_s3_url(loc)[0])
        elif not is_icechunk_repo(self.root):
            raise SourceUnavailableError(f"{self.root} is not an Icechunk repository (no snapshots/ beside refs/ or repo)")
        try:
            storage = _storage(loc)
            repo = self._call(lambda: icechunk.Repository.open(storage), "open the repository")
            self._session = repo.readonly_session(branch=branch)
            self._group = zarr.open_group(self._session.store, mode="r", zarr_format=3)
            attrs = dict(self._group.attrs)
        except (SourceUnavailableError, InvalidInputError):
            raise
        except Exception as exc:  # icechunk and zarr raise a variety of errors for damaged repositories
            raise SourceUnavailableError(f"Icechunk repository {self.label} is unreadable: {exc}") from exc
        self.version = version or _version(attrs)
        self.synthetic = bool(attrs.get("tessera-search:synthetic", False))
        self._zones: dict = {}
        self._listed: frozenset[str] | None = None

    # -- remote calls -------------------------------------------------------------------
    def _call(self, fn: Callable[[], T], what: str) -> T:
        """``fn()``, retried with back-off when the repository is remote."""
        tries = self._retries + 1 if self.is_s3 else 1
        for attempt in range(tries):
            try:
                return fn()
            except (CorruptTileError, InvalidInputError, KeyError):
                raise  # not transient: no retry
            except Exception as exc:  # noqa: BLE001 - object store errors come in many types
                if _newer_format(exc):
                    raise SourceUnavailableError(_format_advice(self.label)) from exc
                if attempt + 1 >= tries:
                    if self.is_s3:
                        raise SourceUnavailableError(
                            f"could not {what} at {self.label} after {tries} tries: {_short(exc)}"
                        ) from exc
                    raise
                time.sleep(self._backoff * 2 ** attempt)
        raise AssertionError("unreachable")

    def _read_array(self, group: str, array: str, key: tuple):
        import zarr

        def read():
            with zarr.config.set({"async.concurrency": self._workers}):
                return np.asarray(self._group[group][array][key])

        return self._call(read, f"read {group}/{array}")

    # -- groups -------------------------------------------------------------------------
    def _zone_names(self) -> list[str]:
        return sorted(self._names())

    def _names(self) -> frozenset[str]:
        """The hemisphere groups of the repository (listed once)."""
        if self._listed is None:
            try:
                keys = self._call(lambda: list(self._group.group_keys()), "list its groups")
            except SourceUnavailableError:
                raise
            except Exception as exc:
                raise SourceUnavailableError(f"Icechunk repository {self.label}: cannot list its groups: {exc}") from exc
            self._listed = frozenset(k for k in keys if _GROUP_RE.match(k))
        return self._listed

    def _group_name(self, tile: Tile) -> str:
        return f"{tile.epsg % 100:02d}{'S' if tile.epsg // 100 == 327 else 'N'}"

    def _zone_of(self, grid: TileGrid) -> _Zone | None:
        return self._zone(self._group_name(grid.tile))

    def _holds(self, zone: _Zone, tile: Tile) -> bool:
        return self._group_name(tile) == zone.name

    @staticmethod
    def _zone_key(name: str) -> str:
        return name

    def _load_zone(self, name: str) -> _Zone | CorruptTileError | None:  # type: ignore[override]
        m = _GROUP_RE.match(name)
        if m is None:
            return None
        zone, south = int(m.group(1)), m.group(2) == "S"
        epsg = (32700 if south else 32600) + zone
        if name not in self._names():
            return None
        try:
            g = self._call(lambda: self._group[name], f"open group {name}")
        except KeyError:
            return None
        except SourceUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001
            return CorruptTileError(f"group {name} of {self.label} is unreadable: {exc}")
        try:
            attrs = dict(g.attrs)
            emb, sc = g["embeddings"], g["scales"]
            years = _years(self._call(lambda: g["time"][...], f"read {name}/time"))
        except SourceUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001
            return CorruptTileError(f"group {name} of {self.label} is unreadable: {exc}")
        code = str(attrs.get("proj:code", f"EPSG:{epsg}"))
        if code.upper() != f"EPSG:{epsg}":
            return CorruptTileError(f"group {name} is in {code}, expected EPSG:{epsg}")
        if sc.ndim != 3 or emb.ndim != 4:
            return CorruptTileError(f"group {name}: scales {sc.shape} / embeddings {emb.shape} are not (time, northing, easting[, band])")
        h, w = int(sc.shape[1]), int(sc.shape[2])
        if emb.dtype != np.int8 or tuple(emb.shape) != (sc.shape[0], h, w, EMBEDDING_DIM):
            return CorruptTileError(
                f"group {name}: embeddings {emb.dtype} {emb.shape}, expected int8 (time, {h}, {w}, {EMBEDDING_DIM})"
            )
        if len(years) != sc.shape[0]:
            return CorruptTileError(f"group {name}: time holds {len(years)} years, its arrays {sc.shape[0]}")
        shape = attrs.get("spatial:shape")
        if shape is not None and [int(v) for v in shape] != [h, w]:
            return CorruptTileError(f"group {name}: spatial:shape {shape} does not match its scales {sc.shape}")
        origin = lattice_origin(name, attrs.get("spatial:transform"), attrs.get("spatial:bbox"), h, w)
        if isinstance(origin, CorruptTileError):
            return origin
        x0, y0 = origin
        complete = attrs.get("years_complete")
        complete = None if complete is None else tuple(int(v) for v in complete)
        return _Zone(name, zone, x0, y0, h, w, years, epsg=epsg, rows=_hemisphere_rows(y0, h, south),
                     complete=complete)

    # -- reads --------------------------------------------------------------------------
    def _sibling(self, win: _Window, t: int) -> tuple[_Window, int] | None:
        """The other hemisphere group's placement of the window's grid and its time index,
        when the grid reaches across the equator (a northern tile's grid has one row below
        it): those rows are the other group's, as they are in the one merged zone grid of
        the geoemb layout. None when the grid stays on its group's side."""
        z, g = win.zone, win.grid
        top = g.transform[5]
        bottom = top - PIXEL_SIZE * g.height
        if not (bottom < 0.0 if g.epsg // 100 == 326 else top > _EQUATOR_SOUTH):
            return None
        year = z.years[t]
        try:
            other = self._zone(f"{z.zone:02d}{'N' if z.name.endswith('S') else 'S'}")
        except CorruptTileError:
            return None
        if other is None or year not in other.years or self._year_gap(other, year):
            return None
        shift = _EQUATOR_SOUTH if other.crs_epsg // 100 == 327 else -_EQUATOR_SOUTH
        col, row = (g.transform[2] - other.x0) / PIXEL_SIZE, (other.y0 - (g.transform[5] + shift)) / PIXEL_SIZE
        if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
            raise CorruptTileError(f"{g.tile.name}: groups {z.name} and {other.name} are not on one lattice")
        return _Window(g, other, round(row), round(col)), other.years.index(year)

    def _read(self, win: _Window, t: int) -> tuple[np.ndarray, np.ndarray]:
        emb, sc = super()._read(win, t)
        sib = self._sibling(win, t)
        if sib is not None and (ov := self._overlap(sib[0])) is not None:
            e2, s2 = super()._read(*sib)
            _, _, tr, tc = ov
            emb[tr, tc], sc[tr, tc] = e2[tr, tc], s2[tr, tc]
        return emb, sc

    def _scales_block(self, win: _Window, t: int, zr: slice, zc: slice) -> np.ndarray:
        return np.asarray(self._read_array(win.zone.name, "scales", (t, zr, zc)), dtype=np.float32)

    def _embeddings_block(self, win: _Window, t: int, zr: slice, zc: slice) -> np.ndarray:
        return self._read_array(win.zone.name, "embeddings", (t, zr, zc, slice(None)))

    def _read_observations(self, win: _Window, t: int) -> np.ndarray | None:
        out = self._observations_of(win, t)
        sib = self._sibling(win, t)
        if out is not None and sib is not None and (ov := self._overlap(sib[0])) is not None:
            part = self._observations_of(*sib)
            if part is not None:
                _, _, tr, tc = ov
                out[tr, tc] = part[tr, tc]
        return out

    def _observations_of(self, win: _Window, t: int) -> np.ndarray | None:
        """The window's counts from its own group (zero outside it); None without the arrays."""
        names = self._call(lambda: set(self._group[win.zone.name].array_keys()), f"list {win.zone.name}'s arrays")
        if not all(a in names for a in _OBS_ARRAYS):
            return None
        out = np.zeros((*win.grid.shape, len(_OBS_ARRAYS)), dtype=np.uint16)
        for i, a in enumerate(_OBS_ARRAYS):
            self._fill(out[..., i], win, t, lambda w, t_, zr, zc, a=a: self._read_array(w.zone.name, a, (t_, zr, zc)), a)
        return out


def _hemisphere_rows(y0: float, height: int, south: bool) -> tuple[int, int]:
    """Rows of a hemisphere group whose centre lies on its own side of the equator."""
    centres = y0 - PIXEL_SIZE * (np.arange(height) + 0.5)
    keep = centres < _EQUATOR_SOUTH if south else centres > 0.0
    idx = np.flatnonzero(keep)
    return (int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, 0)


def _version(attrs: dict) -> str:
    """The dataset version the repository says (``tessera:version``/``version``), else v1.1."""
    for key in ("tessera:version", "dataset_version", "version"):
        v = attrs.get(key)
        if isinstance(v, str) and _VERSION_RE.match(v):
            return v
    return "v1.1"


def _newer_format(exc: Exception) -> bool:
    """Whether icechunk refused the repository for being written in a newer format."""
    return "format" in str(exc) and "upgrade the icechunk library" in str(exc)


def _format_advice(label: str) -> str:
    import sys

    import icechunk

    where = ("install icechunk >= 2 (pip install -U 'icechunk>=2')" if sys.version_info >= (3, 12) else
             "icechunk >= 2 needs Python >= 3.12: run tessera-search on Python 3.12 or newer with icechunk >= 2")
    return (f"the Icechunk repository {label} is written in a newer Icechunk format than the installed "
            f"icechunk {icechunk.__version__} reads; {where}, or read a Zarr copy of the dataset with --source")


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")
