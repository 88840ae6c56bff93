"""Ground truth as a function of a grid: ``grid -> ((H, W) class codes, {code: name})``.

Scoring a class map needs the true class of every pixel it classified. A :data:`TruthFn`
gives it per tile grid; :func:`synthetic_truth` reads it from a synthetic mirror (the
rasters :func:`~tessera_search.sources.synthetic.synthesize_mirror` writes beside the
embeddings), cut to the store's grid.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from ..errors import CorruptTileError
from ..grid import TileGrid

__all__ = ["TruthFn", "synthetic_truth"]

TruthFn = Callable[[TileGrid], tuple[np.ndarray, dict[int, str]]]
"""``grid -> ((H, W) integer class codes on that grid, {code: class name})``."""


def synthetic_truth(mirror: str | os.PathLike[str], year: int) -> TruthFn:
    """Ground truth from a synthetic mirror: ``grid -> ((H, W) uint8 codes, {code: name})``.

    The truth raster may be the whole tile while ``grid`` is a window of it (same CRS
    and pixel lattice): the window is cut out. A truth raster on another grid, or one
    that does not cover ``grid``, raises :class:`~tessera_search.errors.CorruptTileError`.
    """
    from .synthetic import CLASSES, read_truth

    def truth(grid: TileGrid):
        codes, tgrid = read_truth(mirror, grid.tile, year)
        if tgrid.epsg != grid.epsg or tgrid.transform[0] != grid.transform[0]:
            raise CorruptTileError(f"ground truth of {grid.tile.name} is on another grid than the store's tile")
        c0 = (grid.transform[2] - tgrid.transform[2]) / grid.transform[0]
        r0 = (grid.transform[5] - tgrid.transform[5]) / grid.transform[4]
        r0i, c0i = int(round(r0)), int(round(c0))
        if abs(r0 - r0i) > 1e-6 or abs(c0 - c0i) > 1e-6 or r0i < 0 or c0i < 0 \
                or r0i + grid.height > tgrid.height or c0i + grid.width > tgrid.width:
            raise CorruptTileError(f"ground truth of {grid.tile.name} does not cover the store's grid")
        return codes[r0i:r0i + grid.height, c0i:c0i + grid.width], dict(CLASSES)

    return truth
