"""Tile sources: where (tile, year) embeddings come from.

Every source yields :class:`TileData` (int8 vectors, per-pixel scales, grid, validity),
whatever its origin: a release mirror (:mod:`.release`), the synthetic landscape
generator (:mod:`.synthetic`), or the bundled encoder (which writes release-layout tiles).
"""

from .base import TileData, TileFailure

__all__ = ["TileData", "TileFailure"]
