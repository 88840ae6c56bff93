"""Test data builders: small tiles with real georeferencing and release mirrors.

Small tiles are windows of a tile's real UTM grid (same CRS, same 10 m pixels, an origin
inside the cell so every pixel is the tile's own), which keeps tests fast while the
georeferencing stays real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tessera_search.grid import Tile, TileGrid, centred_window, expected_grid
from tessera_search.quant import quantize
from tessera_search.sources.base import TileData
from tessera_search.sources.layout import write_manifest, write_release_tile

NAIROBI_BBOX = "36.7,-1.4,36.9,-1.2"
NAIROBI_TILES = ["grid_36.75_-1.35", "grid_36.75_-1.25", "grid_36.85_-1.35", "grid_36.85_-1.25"]


def small_grid(tile: Tile, height: int = 40, width: int = 48) -> TileGrid:
    """A (height, width) window of the tile's real UTM grid, centred in its cell."""
    return centred_window(expected_grid(tile), height, width)


def small_tile(tile: Tile | str, year: int = 2023, seed: int = 0, height: int = 40, width: int = 48,
               bad_scales: bool = True, version: str = "v1") -> TileData:
    """Clustered embeddings on a small real grid; a water strip (NaN) and bad scale sentinels."""
    tile = Tile.from_name(tile) if isinstance(tile, str) else tile
    rng = np.random.default_rng([seed, tile.ix + 2000, tile.iy + 1000, year])
    centres = rng.normal(0, 3, (4, 128)).astype(np.float32)
    labels = (np.arange(height)[:, None] // 10 + np.arange(width)[None, :] // 12) % 4
    x = centres[labels] + rng.normal(0, 1.0, (height, width, 128)).astype(np.float32)
    q, s = quantize(x)
    s[:, :3] = np.nan  # a river on the west edge
    if bad_scales:
        s[0, 5], s[1, 5], s[2, 5], s[3, 5] = np.inf, 3.4e38, -161685.0, 0.0
    landmask = np.where(np.isnan(s), 0, 1).astype(np.uint8)
    return TileData(tile, year, q, s, small_grid(tile, height, width), version, "test", False, landmask)


def write_mirror(root: Path, tiles, year: int = 2023, seed: int = 0, version: str = "v1") -> dict[str, TileData]:
    """A bucket-layout mirror of small tiles; returns the TileData written, by tile name."""
    out = {}
    for name in tiles:
        data = small_tile(name, year, seed, version=version)
        write_release_tile(root, version, year, data.grid, data.embeddings, data.scales, data.landmask)
        out[data.tile.name] = data
    write_manifest(root, version)
    return out


def _shared_dir() -> Path:
    """``shared/`` beside the checkout (as CI lays it out), else the workplace's copy."""
    here = Path(__file__).resolve().parents[2] / "shared"
    return here if here.is_dir() else Path("/work/shared")


SHARED = _shared_dir()
