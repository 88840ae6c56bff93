"""The workspace: one object for the store, the catalog and the indexes under one home.

:class:`Workspace` is built once (per CLI command, or by a Python caller) and handed to
library functions, which also accept a path (or None: ``$TESSERA_SEARCH_HOME`` or
``./indexes``) as sugar (:meth:`Workspace.of`). It answers the questions about the
workspace as a whole: what it holds (:meth:`~Workspace.info`), what one stored pixel is
(:meth:`~Workspace.pixel`), and makes sure tiles are stored (:meth:`~Workspace.ensure_tiles`,
the one place a missing tile becomes :meth:`TileNotFoundError.missing`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .catalog import Catalog
from .config import resolve_home
from .errors import CatalogError, NoCoverageError, TesseraSearchError, TileNotFoundError, WriteError
from .grid import Tile, lonlat_to_pixel, pack_ids, pixel_to_lonlat, tile_for_point
from .quant import valid_scales
from .store import TileStore

__all__ = ["Pixel", "Workspace", "workspace_info"]


def _dir_bytes(path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, f))
            except OSError:
                continue
    return total


def _tile_summary(store: TileStore, catalog: Catalog, stored: list) -> list[dict]:
    """Per (year, dataset_version, source): tiles and valid pixels of the tile-years in the store.

    The store is the truth: catalog rows describe the tiles they have; a stored tile the
    catalog lacks (a download killed before recording it, a catalog made anew) is read
    from the store and recorded when the catalog can be written.
    """
    known = {(r["tile"], int(r["year"])): r for r in catalog.tiles()}
    groups: dict[tuple, dict] = {}
    unrecorded = []
    for tile, year in stored:
        row = known.get((tile.name, int(year)))
        if row is None:
            try:
                row = store.attrs(tile, year)
            except TesseraSearchError:
                continue  # unreadable metadata: the store reports it when the tile is read
            unrecorded.append(row)
        key = (int(year), row.get("dataset_version"), row.get("source"))
        g = groups.setdefault(key, {"year": key[0], "dataset_version": key[1], "source": key[2],
                                    "synthetic": False, "tiles": 0, "valid_pixels": 0})
        g["synthetic"] = g["synthetic"] or bool(row.get("synthetic", False))
        g["tiles"] += 1
        g["valid_pixels"] += int(row.get("n_valid") or 0)
    if unrecorded and catalog.writable():
        for attrs in unrecorded:
            try:
                catalog.record_tile(attrs)
            except (WriteError, CatalogError, KeyError, TypeError, ValueError):
                break  # best effort: the summary above does not depend on it
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], str(k[1]), str(k[2])))]


def workspace_info(home=None) -> dict:
    """Summary of store and catalog: tiles per (year, version, source), indexes, sizes.

    Reads only (a read-only workspace works), except that it records in the catalog what
    the files hold and the catalog lacks, when the catalog can be written.
    """
    from .index.search import list_indexes

    ws = Workspace.of(home)
    home, store, catalog = ws.home, ws.store, ws.catalog
    stored = store.list()
    indexes = list_indexes(home)
    return {
        "home": str(home),
        "store": str(store.root),
        "store_bytes": _dir_bytes(store.root) if store.root.exists() else 0,
        "stored_tile_years": len(stored),
        "tiles": _tile_summary(store, catalog, stored),
        "indexes": [
            {"name": i["name"], "year": i["year"], "dataset_version": i["dataset_version"],
             "n_vectors": i["n_vectors"], "n_shards": i["n_shards"], "status": i["status"],
             "problems": i["problems"]}
            for i in indexes
        ],
    }


def _locate(store: TileStore, lon: float, lat: float, year: int) -> tuple[Tile, int, int]:
    """(tile, row, col) of the stored pixel at (lon, lat), by the ownership rule."""
    tile = tile_for_point(lon, lat)
    if not store.has(tile, year):
        raise NoCoverageError(
            f"no stored tile holds ({lon}, {lat}) for {year}: tile {tile.name} is not in the store; "
            "download it first, or pass source= to fetch it",
            details={"tiles": [tile.name], "year": int(year)},
        )
    grid = store.grid(tile, year)
    row, col, inside = lonlat_to_pixel(grid, lon, lat)
    if not bool(np.ravel(inside)[0]):
        raise NoCoverageError(f"({lon}, {lat}) is outside the grid of {tile.name} ({year})")
    row, col = int(np.ravel(row)[0]), int(np.ravel(col)[0])
    # The pixel holding the point may have its centre in a neighbour's cell; then it is
    # that neighbour's pixel (ownership rule), found in the neighbour's own grid.
    clon, clat = pixel_to_lonlat(grid, row, col)
    owner = tile_for_point(float(clon), float(clat))
    if owner != tile and store.has(owner, year):
        ngrid = store.grid(owner, year)
        r2, c2, in2 = lonlat_to_pixel(ngrid, lon, lat)
        if bool(np.ravel(in2)[0]):
            return owner, int(np.ravel(r2)[0]), int(np.ravel(c2)[0])
    return tile, row, col


@dataclass(frozen=True)
class Pixel:
    """One stored pixel: where it is, its int8 vector and scale, and its embedding.

    ``lon``/``lat`` are the pixel centre; ``embedding`` is ``int8 * scale`` (float32), None
    for a no-data pixel (water), whose ``valid`` is False.
    """

    tile: str
    year: int
    row: int
    col: int
    id: int
    lon: float
    lat: float
    valid: bool
    scale: float | None
    int8: np.ndarray = field(repr=False)
    dataset_version: str | None = None
    synthetic: bool = False
    observations: dict[str, int] | None = None

    @property
    def embedding(self) -> np.ndarray | None:
        return None if not self.valid else self.int8.astype(np.float32) * np.float32(self.scale)

    def unit_vector(self) -> np.ndarray:
        """The (128,) float32 unit-norm direction of the int8 vector (cosine is scale-free)."""
        v = self.int8.astype(np.float32)
        n = float(np.linalg.norm(v))
        return v / n if n > 0 else v

    def to_json(self) -> dict:
        emb = self.embedding
        return {"tile": self.tile, "year": self.year, "row": self.row, "col": self.col, "id": self.id,
                "lon": self.lon, "lat": self.lat, "valid": self.valid, "scale": self.scale,
                "int8": [int(v) for v in self.int8], "embedding": None if emb is None else [float(v) for v in emb],
                "dataset_version": self.dataset_version, "synthetic": self.synthetic,
                "observations": self.observations}


class Workspace:
    """The store, catalog and indexes under ``home`` (default: ``$TESSERA_SEARCH_HOME`` or
    ``./indexes``). Cheap to build; build one and pass it around."""

    def __init__(self, home: str | os.PathLike[str] | None = None, read_only: bool = False) -> None:
        self.home: Path = resolve_home(home)
        self.store = TileStore(self.home)
        self.catalog = Catalog(self.home, read_only=read_only)

    @classmethod
    def of(cls, where: Workspace | str | os.PathLike[str] | None) -> Workspace:
        """``where`` itself when it is a Workspace, else the workspace at that path."""
        return where if isinstance(where, Workspace) else cls(where)

    def __fspath__(self) -> str:  # a Workspace goes wherever a home path does
        return str(self.home)

    def __repr__(self) -> str:
        return f"Workspace({str(self.home)!r})"

    # -- tiles --------------------------------------------------------------------------
    def put(self, data) -> dict:
        """Store a tile-year (:class:`~tessera_search.sources.base.TileData`) and record it."""
        attrs = self.store.write(data)
        self.catalog.record_tile(attrs)
        return attrs

    def ensure_tiles(self, tiles, year: int, source=None, what: str = "this", progress=None) -> None:
        """Make sure ``tiles`` are stored for ``year``, fetching them from ``source`` if given.

        :meth:`TileNotFoundError.missing` (naming the tiles) when some are not stored and no
        source is given; TileNotFoundError naming the source when it could not provide them.
        """
        missing = sorted({t for t in tiles if not self.store.has(t, year)})
        if not missing:
            return
        if source is None:
            raise TileNotFoundError.missing(missing, year, what)
        from .ingest import download

        download(missing, year, source=source, home=self, progress=progress)
        missing = [t for t in missing if not self.store.has(t, year)]
        if missing:
            raise TileNotFoundError(
                f"{what}: source {source} could not provide {', '.join(t.name for t in missing[:6])}"
                f"{' ...' if len(missing) > 6 else ''} ({year}); check the source",
                details={"tiles": [t.name for t in missing], "year": int(year)},
            )

    def pixel(self, lon: float, lat: float, year: int) -> Pixel:
        """The stored pixel holding (lon, lat) in ``year``, by the ownership rule.

        NoCoverageError when no stored tile holds the point.
        """
        tile, row, col = _locate(self.store, lon, lat, year)
        q, s = self.store.read_pixels(tile, year, [row], [col])
        scale = np.float32(s[0])
        clon, clat = pixel_to_lonlat(self.store.grid(tile, year), row, col)
        attrs = self.store.attrs(tile, year)
        obs = self.store.read_observations(tile, year, [row], [col])
        return Pixel(tile=tile.name, year=int(year), row=row, col=col, id=int(pack_ids(tile.ix, tile.iy, row, col)),
                     lon=float(clon), lat=float(clat), valid=bool(valid_scales(scale)),
                     scale=float(scale) if np.isfinite(scale) else None, int8=np.asarray(q[0], np.int8),
                     dataset_version=attrs.get("dataset_version"), synthetic=bool(attrs.get("synthetic", False)),
                     observations=None if obs is None else {k: int(v[0]) for k, v in obs.items()})

    # -- the whole ------------------------------------------------------------------------
    def info(self) -> dict:
        """See :func:`workspace_info`."""
        return workspace_info(self)

    def indexes(self) -> list[dict]:
        """The indexes, from their files (see :func:`tessera_search.index.list_indexes`)."""
        from .index.search import list_indexes

        return list_indexes(self.home)

    def open_index(self, name: str | None = None, year: int | None = None):
        """An opened :class:`~tessera_search.index.Index` (see ``open_index``)."""
        from .index.search import open_index

        return open_index(name, year=year, home=self.home)
