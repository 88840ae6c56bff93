"""Shared data for the labelling tests: a small synthetic landscape with ground truth.

Windows of real tile grids (real CRS and 10 m lattice) on both sides of a cell edge, so a
mosaic is compact and the tiles' overlapping edge pixels are exercised. Built once per
test session (about a second) in a temporary directory; each test copies what it
mutates. The tests in this module check the data itself.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from tessera_search.grid import Tile, TileGrid, expected_grid, owned_mask, pixel_to_lonlat
from tessera_search.sources.synthetic import CLASSES, generate_tile
from tessera_search.store import TileStore

YEAR = 2023
# Same UTM zone (EPSG:32737), sharing the cell edge at lon 36.8.
PAIR = (Tile.from_name("grid_36.75_-1.25"), Tile.from_name("grid_36.85_-1.25"))
# Either side of the zone 36 / 37 boundary at lon 36.0.
ZONES = (Tile.from_name("grid_35.95_-1.25"), Tile.from_name("grid_36.05_-1.25"))
SIZE = 160


def edge_grid(tile: Tile, side: str, height: int = SIZE, width: int = SIZE) -> TileGrid:
    """A window of the tile's real grid touching its ``side`` ('east' or 'west') edge."""
    g = expected_grid(tile)
    r0 = (g.height - height) // 2
    c0 = g.width - width if side == "east" else 0
    a, b, c, d, e, f = g.transform
    return TileGrid(tile, g.epsg, (a, b, c + a * c0, d, e, f + e * r0), height, width)


@dataclass
class Landscape:
    home: Path  # a workspace whose store holds the tiles (do not write to it)
    tiles: tuple[Tile, ...]
    grids: dict[Tile, TileGrid]
    truth: dict[Tile, np.ndarray]  # (H, W) uint8 codes of CLASSES

    def truth_fn(self, grid: TileGrid):
        return self.truth[grid.tile], dict(CLASSES)

    def copy_home(self, dest: Path) -> Path:
        shutil.copytree(self.home, dest)
        return dest

    def class_pixels(self, code: int) -> list[tuple[Tile, int, int]]:
        """Owned pixels of a ground-truth class, over all tiles."""
        out = []
        for t in self.tiles:
            rows, cols = np.nonzero((self.truth[t] == code) & owned_mask(self.grids[t]))
            out += [(t, int(r), int(c)) for r, c in zip(rows, cols)]
        return out

    def point_examples(self, per_class: int = 10, seed: int = 1, min_pixels: int = 50) -> dict:
        """A GeoJSON FeatureCollection: ``per_class`` random points of each land class present."""
        rng = np.random.default_rng(seed)
        feats = []
        for code, name in CLASSES.items():
            if code < 3:
                continue
            pix = self.class_pixels(code)
            if len(pix) < min_pixels:
                continue
            for i in rng.choice(len(pix), size=per_class, replace=False):
                t, r, c = pix[i]
                lon, lat = pixel_to_lonlat(self.grids[t], r, c)
                feats.append({"type": "Feature", "properties": {"crop": name},
                              "geometry": {"type": "Point", "coordinates": [float(lon), float(lat)]}})
        return {"type": "FeatureCollection", "features": feats}

    def write_examples(self, path: Path, per_class: int = 10, seed: int = 1) -> Path:
        path.write_text(json.dumps(self.point_examples(per_class, seed)))
        return path


def _build(tiles: tuple[Tile, ...], sides: tuple[str, ...]) -> Landscape:
    root = Path(tempfile.mkdtemp(prefix="tessera-label-tests-"))
    atexit.register(shutil.rmtree, root, True)
    store = TileStore(root / "ws")
    grids, truth = {}, {}
    for t, side in zip(tiles, sides, strict=True):
        st = generate_tile(t, YEAR, grid=edge_grid(t, side))
        store.write(st.data)
        grids[t], truth[t] = st.data.grid, st.classes
    return Landscape(root / "ws", tiles, grids, truth)


@lru_cache(maxsize=1)
def pair_landscape() -> Landscape:
    """Two neighbouring windows in one UTM zone (EPSG:32737)."""
    return _build(PAIR, ("east", "west"))


@lru_cache(maxsize=1)
def zones_landscape() -> Landscape:
    """Two neighbouring windows in two UTM zones (EPSG:32736 and EPSG:32737)."""
    return _build(ZONES, ("east", "west"))


def test_pair_windows_overlap_at_the_cell_edge():
    land = pair_landscape()
    a, b = (land.grids[t] for t in PAIR)
    assert a.epsg == b.epsg == 32737
    # The windows overlap (the UTM boxes of neighbouring cells do) but own disjoint pixels.
    assert b.bounds[0] < a.bounds[2]
    assert owned_mask(a).sum() < a.height * a.width and owned_mask(b).sum() < b.height * b.width


def test_examples_cover_several_classes_on_land():
    land = pair_landscape()
    doc = land.point_examples()
    names = {f["properties"]["crop"] for f in doc["features"]}
    assert len(names) >= 4 and not names & {"water", "river", "nodata"}
