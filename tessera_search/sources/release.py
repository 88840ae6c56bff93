"""Reading geotessera's NPY releases from a directory or an http(s) mirror.

A :class:`ReleaseSource` answers two questions: which tiles a year has
(:meth:`~ReleaseSource.available`, from the manifest or a directory listing), and what a
tile-year holds (:meth:`~ReleaseSource.fetch`, yielding :class:`TileData` or, for a tile
that cannot be used, a :class:`TileFailure` naming the tile and the reason). One bad tile
never aborts the others.

Checks on every tile: file sizes against the manifest; MD5 against the manifest's
``grid_md5`` / ``scales_md5`` columns when present and, over HTTP, against an ETag that
is a content MD5; ``.npy`` headers against the bytes actually present (a truncated file
is named as such); dtype and shape of the vectors and the scales against the landmask
GeoTIFF's grid. The scale validity rule (finite, > 0, < 1) is applied by every reader of
the data (:attr:`TileData.valid`).

HTTP downloads run in parallel threads, retry transient failures with exponential
back-off, resume partial files with Range requests (``*.part`` beside the target) and
move a file into place only once complete and verified. Every response's length is
checked (``Content-Length``; for a resumed transfer ``Content-Range`` must start where the
``.part`` ends), so a connection that drops mid-body is retried and blamed, and the
``.part`` is kept for the next run; a ``200`` answer to a Range request starts again.

Paths a manifest names are data from the mirror, never trusted: each must be a plain
relative path (:func:`~tessera_search.sources.layout.safe_relative_path`) that resolves,
symlinks followed, inside the mirror's root; over HTTP it becomes a URL below the source
URL (same scheme, host and port), and redirects that leave it are refused. A tile whose
path escapes is skipped (``manifest path escapes the mirror``) without opening or
fetching anything. Downloads land under ``download_dir`` at names of our own making
(``<quoted source URL>/`` plus the bucket layout of the tile-year), never at a name
taken from the manifest. Error messages never quote a file's bytes.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CorruptTileError, InvalidInputError, SourceUnavailableError, TesseraSearchError
from ..grid import Tile, TileGrid, expected_grid
from ..quant import per_pixel_from_per_channel
from .base import EMBEDDING_DIM, TileData, TileFailure
from .httpmirror import DEFAULT_RETRIES, HttpMirror, NotFound, int_or_none, verify
from .layout import BUCKET_NPY, CACHE_NPY, MANIFEST, bucket_paths, cache_paths, safe_relative_path

__all__ = ["DEFAULT_SOURCE_URL", "ReleaseSource", "read_release_tile"]

DEFAULT_SOURCE_URL = "https://dl2.geotessera.org/"
DEFAULT_VERSION = "v1"
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~+-]*$")  # one path segment: v1, v1.1-cam, v2-2B-L~beta1


@dataclass(frozen=True)
class _Entry:
    """Where one tile-year's three files live, relative to the source root."""

    tile: Tile
    year: int
    grid: str
    scales: str
    landmask: str
    grid_size: int | None = None
    scales_size: int | None = None
    grid_md5: str | None = None
    scales_md5: str | None = None
    from_manifest: bool = False

    def files(self) -> tuple[tuple[str, str, int | None, str | None], ...]:
        """(column, path, size, md5) for the vectors, the scales and the landmask."""
        return (("grid_path", self.grid, self.grid_size, self.grid_md5),
                ("scales_path", self.scales, self.scales_size, self.scales_md5),
                ("landmask_path", self.landmask, None, None))


class _Escape(CorruptTileError):
    """A path (from a manifest or a listing) that leads outside the mirror."""

    def __init__(self, entry: _Entry, column: str, why: str) -> None:
        origin = "manifest" if entry.from_manifest else "listed"
        super().__init__(f"{origin} path escapes the mirror ({column} {why}); nothing was read or fetched")


def _npy_check(path: Path, what: str) -> None:
    """Raise CorruptTileError unless ``path`` is a complete .npy file."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise CorruptTileError(f"{what}: unsupported .npy format version {version[0]}.{version[1]}")
            offset = f.tell()
    except (ValueError, OSError, EOFError) as exc:
        # numpy's message quotes the file's first bytes; never echo a file's content
        raise CorruptTileError(f"{what}: not a readable .npy (bad or missing header)") from exc
    if dtype.hasobject:
        raise CorruptTileError(f"{what}: .npy holds Python objects; refusing to load it")
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = path.stat().st_size
    if have < need:
        raise CorruptTileError(f"truncated .npy ({what}: {have} of {need} bytes)")


def _load_npy(path: Path, what: str) -> np.ndarray:
    _npy_check(path, what)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CorruptTileError(f"{what}: unreadable .npy ({type(exc).__name__})") from exc


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    """Two (xmin, ymin, xmax, ymax) boxes share area."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def read_release_tile(
    tile: Tile,
    year: int,
    grid_path: Path,
    scales_path: Path,
    landmask_path: Path,
    dataset_version: str,
    source: str,
    synthetic: bool = False,
) -> TileData:
    """Parse one tile-year's files into :class:`TileData`; CorruptTileError if unusable."""
    import rasterio
    from rasterio.errors import RasterioError

    if not landmask_path.exists():
        raise CorruptTileError(f"landmask GeoTIFF {landmask_path.name} is missing (it carries the CRS and transform)")
    try:
        with rasterio.open(landmask_path) as ds:
            epsg = ds.crs.to_epsg() if ds.crs else None
            transform = tuple(ds.transform)[:6]
            landmask = ds.read(1)
    except RasterioError as exc:
        raise CorruptTileError(f"unreadable landmask GeoTIFF {landmask_path.name}: {exc}") from exc
    if epsg is None:
        raise CorruptTileError(f"landmask GeoTIFF {landmask_path.name} has no EPSG CRS")
    if int(epsg) != tile.epsg:
        raise CorruptTileError(
            f"landmask GeoTIFF {landmask_path.name} is in EPSG:{epsg}, but {tile.name} lies in UTM zone "
            f"EPSG:{tile.epsg}; a tile's grid is in its own zone, so this landmask is not the tile's"
        )
    try:
        grid = TileGrid(tile, int(epsg), transform, landmask.shape[0], landmask.shape[1])
    except TesseraSearchError as exc:
        raise CorruptTileError(f"landmask GeoTIFF {landmask_path.name}: {exc}") from exc
    if not _overlaps(grid.bounds, expected_grid(tile).bounds):
        raise CorruptTileError(
            f"landmask GeoTIFF {landmask_path.name}: its grid {grid.bounds} does not overlap the cell of "
            f"{tile.name} in EPSG:{epsg}; it is another place's landmask"
        )

    emb = _load_npy(grid_path, grid_path.name)
    if emb.dtype != np.int8 or emb.ndim != 3:
        raise CorruptTileError(f"{grid_path.name} holds {emb.dtype} {emb.shape}, expected int8 (H, W, 128)")
    if emb.shape[2] != EMBEDDING_DIM:
        raise CorruptTileError(
            f"{grid_path.name} holds {emb.shape[2]}-channel embeddings {emb.shape}, expected {EMBEDDING_DIM}"
        )
    if emb.shape[:2] != grid.shape:
        raise CorruptTileError(f"{grid_path.name} is {emb.shape[:2]} but its landmask grid is {grid.shape}")
    scales = _load_npy(scales_path, scales_path.name)
    if not np.issubdtype(scales.dtype, np.floating):
        raise CorruptTileError(f"{scales_path.name} holds {scales.dtype}, expected float32")
    if scales.shape == emb.shape:
        emb, scales = per_pixel_from_per_channel(emb, scales)
    elif scales.shape != emb.shape[:2]:
        raise CorruptTileError(
            f"scales of shape {scales.shape} do not match embeddings {emb.shape} "
            f"(expected {emb.shape[:2]} or {emb.shape})"
        )
    return TileData(
        tile=tile, year=int(year), embeddings=emb, scales=scales.astype(np.float32, copy=False),
        grid=grid, dataset_version=dataset_version, source=source, synthetic=synthetic,
        landmask=landmask.astype(np.uint8, copy=False),
    )


class ReleaseSource:
    """A geotessera NPY release: a local directory (bucket or cache layout) or a URL.

    ``version`` picks the bucket layout's dataset version directory (``npy/<version>``);
    by default the only one present locally, or ``v1`` remotely. ``download_dir`` is
    where HTTP downloads are staged (resumable ``.part`` files).
    """

    def __init__(
        self,
        location: str | os.PathLike[str],
        version: str | None = None,
        download_dir: str | os.PathLike[str] | None = None,
        workers: int = 4,
        retries: int | None = None,
        backoff: float = 0.5,
        timeout: float = 60.0,
    ) -> None:
        loc = str(location)
        self.is_http = loc.startswith(("http://", "https://"))
        self.workers = max(1, int(workers))
        self.retries = max(0, int(DEFAULT_RETRIES if retries is None else retries))
        self.backoff = backoff
        self.timeout = timeout
        self.synthetic = False
        if self.is_http:
            self.url = loc if loc.endswith("/") else loc + "/"
            self.root = None
            self.layout = "bucket"
            self.version = version or DEFAULT_VERSION
            if not _VERSION_RE.match(self.version):
                raise InvalidInputError(
                    f"dataset version {self.version!r} is not a plain name like v1 or v1.1-cam"
                )
            self.download_dir = Path(download_dir) if download_dir else Path.cwd() / ".tessera-downloads"
            self.label = self.url
            self.http = HttpMirror(self.url, self.retries, self.backoff, self.timeout)
        else:
            self.url = None
            self.root = Path(loc).expanduser().absolute()
            self.label = str(self.root)
            self.download_dir = None
            if not self.root.is_dir():
                raise SourceUnavailableError(f"source directory {self.root} does not exist")
            self._real_root = self.root.resolve()
            if (self.root / BUCKET_NPY).is_dir():
                self.layout = "bucket"
                versions = sorted(p.name for p in (self.root / BUCKET_NPY).iterdir() if p.is_dir())
                if version is None:
                    if len(versions) != 1:
                        raise SourceUnavailableError(
                            f"{self.root} holds dataset versions {versions or 'none'}; pick one with version="
                        )
                    version = versions[0]
                elif version not in versions:
                    raise SourceUnavailableError(f"{self.root} has no dataset version {version!r} (it has {versions})")
                self.version = version
            elif (self.root / CACHE_NPY).is_dir():
                self.layout = "cache"
                self.version = version or DEFAULT_VERSION
            else:
                raise SourceUnavailableError(
                    f"{self.root} is not a TESSERA release: expected {BUCKET_NPY}/<version>/ (bucket layout) "
                    f"or {CACHE_NPY}/ (geotessera cache layout)"
                )
        self._manifest: dict[tuple[str, int], _Entry] | None = None
        self._variant = ""

    # -- manifest / availability -------------------------------------------------------
    def _read_manifest(self) -> dict[tuple[str, int], _Entry] | None:
        """Entries from manifest.parquet, or None where there is none (local listing)."""
        import pyarrow.parquet as pq

        rel = f"{BUCKET_NPY}/{self.version}/{MANIFEST}"
        if self.is_http:
            dest = self.download_dir / "manifests" / urllib.parse.quote(self.url, safe="") / rel
            try:
                self.http.download(self.http.join(rel), dest, None, None, MANIFEST, fresh=True)
            except NotFound:
                raise SourceUnavailableError(
                    f"{self.url} has no manifest at {rel}; is it a TESSERA release mirror? "
                    "(use source=DIR|URL|synthetic)"
                ) from None
            path = dest
        else:
            path = self.root / rel
            if not path.exists():
                return None
        try:
            table = pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises ArrowInvalid and friends
            raise SourceUnavailableError(f"manifest {rel} of {self.label} is unreadable: {exc}") from exc
        entries: dict[tuple[str, int], _Entry] = {}
        for row in table:
            try:
                tile = Tile(int(round(float(row["lon"]) * 10 - 0.5)), int(round(float(row["lat"]) * 10 - 0.5)))
                year = int(row["year"])
            except (KeyError, TypeError, ValueError, TesseraSearchError):
                continue
            self._variant = str(row.get("variant") or self._variant or "")
            default = bucket_paths(self.version, year, tile)
            entries[(tile.name, year)] = _Entry(
                tile, year,
                grid=row.get("grid_path") or default["grid"],
                scales=row.get("scales_path") or default["scales"],
                landmask=row.get("landmask_path") or default["landmask"],
                grid_size=int_or_none(row.get("grid_size")),
                scales_size=int_or_none(row.get("scales_size")),
                grid_md5=row.get("grid_md5") or None,
                scales_md5=row.get("scales_md5") or None,
                from_manifest=True,
            )
        return entries

    def _entries(self) -> dict[tuple[str, int], _Entry] | None:
        if self._manifest is None:
            self._manifest = self._read_manifest()
            if self._manifest is not None:
                self.synthetic = self._variant == "synthetic"
        return self._manifest

    def _listed_entry(self, tile: Tile, year: int) -> _Entry | None:
        paths = bucket_paths(self.version, year, tile) if self.layout == "bucket" else cache_paths(year, tile)
        if (self.root / paths["grid"]).exists() or (self.root / paths["scales"]).exists():
            return _Entry(tile, year, paths["grid"], paths["scales"], paths["landmask"])
        return None

    def available(self, year: int, tiles: Iterable[Tile] | None = None) -> set[Tile]:
        """Tiles this source offers for ``year`` (restricted to ``tiles`` if given)."""
        entries = self._entries()
        if entries is not None:
            have = {e.tile for (_, y), e in entries.items() if y == int(year)}
            return have if tiles is None else have & set(tiles)
        if tiles is not None:
            return {t for t in tiles if self._listed_entry(t, year) is not None}
        base = (self.root / BUCKET_NPY / self.version / str(year)) if self.layout == "bucket" else (self.root / CACHE_NPY / str(year))
        if not base.is_dir():
            return set()
        out = set()
        for p in base.iterdir():
            if p.is_dir() and p.name.startswith("grid_"):
                try:
                    out.add(Tile.from_name(p.name))
                except TesseraSearchError:
                    continue
        return out

    def _entry(self, tile: Tile, year: int) -> _Entry | None:
        entries = self._entries()
        if entries is not None:
            return entries.get((tile.name, int(year)))
        return self._listed_entry(tile, year)

    # -- fetching -----------------------------------------------------------------------
    def fetch(
        self,
        tiles: Iterable[Tile],
        year: int,
        on_progress: Callable[[int], None] | None = None,
    ) -> Iterator[TileData | TileFailure]:
        """Yield each tile-year's data, or a TileFailure saying why it was skipped.

        ``on_progress(n)`` is called with the number of tiles finished so far.
        """
        tiles = list(tiles)
        done = 0
        if not self.is_http:
            for tile in tiles:
                yield self._local_tile(tile, year)
                done += 1
                if on_progress:
                    on_progress(done)
            return
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="tessera-dl") as pool:
            futures = {pool.submit(self._download_tile, t, year): t for t in tiles}
            for fut in as_completed(futures):
                tile = futures[fut]
                try:
                    paths = fut.result()
                except CorruptTileError as exc:
                    yield TileFailure(tile, year, str(exc))
                except NotFound as exc:
                    yield TileFailure(tile, year, f"missing on the server ({exc})")
                except SourceUnavailableError as exc:
                    yield TileFailure(tile, year, str(exc))
                else:
                    try:
                        yield self._parse(tile, year, *paths)
                    except CorruptTileError as exc:
                        yield TileFailure(tile, year, str(exc))
                    finally:
                        for p in paths:
                            p.unlink(missing_ok=True)
                done += 1
                if on_progress:
                    on_progress(done)

    def _parse(self, tile: Tile, year: int, grid: Path, scales: Path, landmask: Path) -> TileData:
        return read_release_tile(
            tile, year, grid, scales, landmask,
            dataset_version=self.version, source=self.label, synthetic=self.synthetic,
        )

    def _local_path(self, entry: _Entry, column: str, rel: str) -> Path:
        """``rel`` under the root, every symlink resolved; _Escape unless it stays inside."""
        try:
            clean = safe_relative_path(rel)
        except ValueError as exc:
            raise _Escape(entry, column, str(exc)) from None
        try:
            real = (self.root / clean).resolve()  # follows every symlink that exists
        except (OSError, RuntimeError):  # a symlink loop
            raise _Escape(entry, column, "cannot be resolved (a symlink loop)") from None
        if not real.is_relative_to(self._real_root):
            raise _Escape(entry, column, "leads outside the mirror through a symlink")
        return real

    def _local_tile(self, tile: Tile, year: int) -> TileData | TileFailure:
        entry = self._entry(tile, year)
        if entry is None:
            return TileFailure(tile, year, f"not in the source {self.label}")
        try:
            files = [(self._local_path(entry, col, rel), size, md5) for col, rel, size, md5 in entry.files()]
            for p, size, md5 in files[:2]:
                if not p.is_file():
                    raise CorruptTileError(f"{p.name} is missing")
                verify(p, size, md5)
            return self._parse(tile, year, *(p for p, _, _ in files))
        except CorruptTileError as exc:
            return TileFailure(tile, year, str(exc))

    def _download_tile(self, tile: Tile, year: int) -> tuple[Path, Path, Path]:
        entry = self._entry(tile, year)
        if entry is None:
            raise NotFound(f"{tile.name} ({year}) is not in the manifest")
        # Every URL is checked before anything is fetched; files land at names of our own
        # making (the bucket layout of this tile-year), never at the manifest's strings.
        urls = [self._url_for(entry, col, rel) for col, rel, _, _ in entry.files()]
        base = self.download_dir / urllib.parse.quote(self.url, safe="")
        ours = bucket_paths(self.version, year, tile)
        out = []
        for url, key, (_, _, size, md5) in zip(urls, ("grid", "scales", "landmask"), entry.files()):
            dest = base / ours[key]
            self.http.download(url, dest, size, md5, Path(ours[key]).name)
            out.append(dest)
        return out[0], out[1], out[2]

    # -- HTTP -----------------------------------------------------------------------------
    def _url_for(self, entry: _Entry, column: str, rel: str) -> str:
        """The URL of a manifest path; _Escape unless it lies below the source URL."""
        try:
            clean = safe_relative_path(rel)
        except ValueError as exc:
            raise _Escape(entry, column, str(exc)) from None
        url = self.http.join(clean)
        if not self.http.inside(url):  # cannot happen for a clean path; checked all the same
            raise _Escape(entry, column, "leads outside the source URL")
        return url
