"""The one shape every source yields: a tile-year of int8 embeddings with its grid."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import CorruptTileError
from ..grid import Tile, TileGrid
from ..quant import valid_scales

__all__ = ["EMBEDDING_DIM", "OBSERVATION_KINDS", "TileData", "TileFailure"]

EMBEDDING_DIM = 128  # channels of a TESSERA embedding; indexes and queries assume exactly this
# per-pixel observation counts a source may publish (the Icechunk run's *_obs_count arrays)
OBSERVATION_KINDS = ("s2", "s1_asc", "s1_desc")


@dataclass
class TileData:
    """One tile-year.

    embeddings: (H, W, 128) int8; scales: (H, W) float32 (no data: NaN / inf / out of
    range, see :func:`tessera_search.quant.valid_scales`); grid: the tile's UTM grid;
    landmask: optional (H, W) uint8 (0 = water); observations: optional (H, W, 3) uint16
    counts of the valid observations each pixel was embedded from, in the order of
    :data:`OBSERVATION_KINDS` (Sentinel-2, Sentinel-1 ascending, Sentinel-1 descending),
    where the source publishes them.
    """

    tile: Tile
    year: int
    embeddings: np.ndarray
    scales: np.ndarray
    grid: TileGrid
    dataset_version: str
    source: str
    synthetic: bool = False
    landmask: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    observations: np.ndarray | None = None

    def __post_init__(self) -> None:
        emb, sc = self.embeddings, self.scales
        if emb.dtype != np.int8 or emb.ndim != 3:
            raise CorruptTileError(f"{self.label}: embeddings must be (H, W, 128) int8, got {emb.dtype} {emb.shape}")
        if emb.shape[2] != EMBEDDING_DIM:
            raise CorruptTileError(
                f"{self.label}: embeddings are {emb.shape[2]} channels wide, expected {EMBEDDING_DIM}"
            )
        if sc.shape != emb.shape[:2]:
            raise CorruptTileError(
                f"{self.label}: scales of shape {sc.shape} do not match embeddings {emb.shape}"
            )
        if emb.shape[:2] != self.grid.shape:
            raise CorruptTileError(
                f"{self.label}: embeddings {emb.shape[:2]} do not match the grid {self.grid.shape}"
            )
        self.scales = np.asarray(sc, dtype=np.float32)
        obs = self.observations
        if obs is not None and (obs.dtype != np.uint16 or obs.shape != (*emb.shape[:2], len(OBSERVATION_KINDS))):
            raise CorruptTileError(
                f"{self.label}: observation counts must be (H, W, {len(OBSERVATION_KINDS)}) uint16, "
                f"got {obs.dtype} {obs.shape}"
            )

    @property
    def nbytes(self) -> int:
        """Bytes of the tile's arrays (what a source delivered)."""
        return sum(a.nbytes for a in (self.embeddings, self.scales, self.landmask, self.observations) if a is not None)

    @property
    def label(self) -> str:
        return f"{self.tile.name} ({self.year})"

    @property
    def valid(self) -> np.ndarray:
        """(H, W) bool: the scale validity rule (finite, > 0, < 1)."""
        return valid_scales(self.scales)


@dataclass(frozen=True)
class TileFailure:
    """A tile-year a source could not deliver, and why (``skipped grid_X_Y (2023): ...``)."""

    tile: Tile
    year: int
    reason: str

    def __str__(self) -> str:
        return f"skipped {self.tile.name} ({self.year}): {self.reason}"
