"""Questions about the workspace as a whole: what it holds, and what one stored pixel is."""

from __future__ import annotations

import os

import numpy as np

from .catalog import Catalog
from .config import resolve_home
from .errors import CatalogError, NoCoverageError, TesseraSearchError, WriteError
from .grid import Tile, lonlat_to_pixel, pack_ids, pixel_to_lonlat, tile_for_point
from .quant import valid_scales
from .store import TileStore

__all__ = ["pixel_at", "workspace_info"]


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

    home = resolve_home(home)
    store, catalog = TileStore(home), Catalog(home)
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
            f"no stored tile holds ({lon}, {lat}) for {year}: tile {tile.name} is not in the store; run "
            f"`tessera-search download --tile {tile.name} --year {year}`"
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


def pixel_at(lon: float, lat: float, year: int, home=None) -> dict:
    """One stored pixel: tile, row, col, id, centre lon/lat, valid, scale, int8, embedding.

    ``embedding`` is the dequantized float32 vector (``int8 * scale``) as Python floats,
    or None for a no-data pixel (water), whose ``valid`` is False.
    """
    store = TileStore(resolve_home(home))
    tile, row, col = _locate(store, lon, lat, year)
    q, s = store.read_pixels(tile, year, [row], [col])
    scale = np.float32(s[0])
    valid = bool(valid_scales(scale))
    grid = store.grid(tile, year)
    clon, clat = pixel_to_lonlat(grid, row, col)
    attrs = store.attrs(tile, year)
    emb = (q[0].astype(np.float32) * scale) if valid else None
    return {
        "tile": tile.name,
        "year": int(year),
        "row": row,
        "col": col,
        "id": int(pack_ids(tile.ix, tile.iy, row, col)),
        "lon": float(clon),
        "lat": float(clat),
        "valid": valid,
        "scale": float(scale) if np.isfinite(scale) else None,
        "int8": [int(v) for v in q[0]],
        "embedding": None if emb is None else [float(v) for v in emb],
        "dataset_version": attrs.get("dataset_version"),
        "synthetic": bool(attrs.get("synthetic", False)),
    }
