"""geotessera's NPY release layouts: paths, the manifest, and a writer for mirrors.

Two layouts (``reference/tessera-formats.md``)::

    bucket (remote mirror, also written by `synthesize` and `encode`):
      npy/<version>/<year>/grid_X_Y/grid_X_Y.npy           int8 (H, W, 128)
      npy/<version>/<year>/grid_X_Y/grid_X_Y_scales.npy    float32 (H, W)
      npy/<version>/manifest.parquet                       one row per tile-year
      landmasks/<v1|v1.1|v2>/grid_X_Y.tiff                 CRS, transform, 0 = water

    cache (geotessera's local download directory):
      global_0.1_degree_representation/<year>/grid_X_Y/grid_X_Y{,_scales}.npy
      global_0.1_degree_tiff_all/grid_X_Y.tiff

Manifest columns: ``version, variant, year, lon, lat, directory, grid_path, scales_path,
grid_size, scales_size`` as geotessera writes them, plus ``grid_md5, scales_md5,
landmask_path`` which our writer adds (readers treat them as optional). A mirror whose
``variant`` is ``synthetic`` is generated data, and says so everywhere downstream.

A path a manifest names is data from the mirror, not a path to trust:
:func:`safe_relative_path` accepts only a plain relative POSIX path that stays below the
mirror's root, and readers resolve it (symlinks too) before opening anything.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .._io import atomic_path, file_md5
from ..grid import Tile, TileGrid

__all__ = [
    "BUCKET_NPY",
    "CACHE_NPY",
    "CACHE_TIFF",
    "bucket_paths",
    "cache_paths",
    "landmask_version",
    "safe_relative_path",
    "write_landmask",
    "write_manifest",
    "write_release_tile",
]

BUCKET_NPY = "npy"
BUCKET_LANDMASKS = "landmasks"
CACHE_NPY = "global_0.1_degree_representation"
CACHE_TIFF = "global_0.1_degree_tiff_all"
MANIFEST = "manifest.parquet"

_SCHEME_OR_DRIVE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # "https:", "file:", "C:"


def safe_relative_path(path: object) -> str:
    """``path`` as a normalised relative POSIX path that cannot leave the mirror's root.

    Empty and ``.`` segments are dropped; anything that could name a place outside the
    root raises ValueError saying why (without repeating the string): not a string,
    empty, absolute (``/x``, ``//host/x``), a ``..`` segment, a URL scheme or a drive
    letter, a backslash, or a NUL or other control character. Symlinks are the reader's
    to resolve: this looks at the string only.
    """
    if not isinstance(path, str):
        raise ValueError("is not a string")
    if not path:
        raise ValueError("is empty")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        raise ValueError("holds a NUL or control character")
    if "\\" in path:
        raise ValueError("holds a backslash")
    if path.startswith("/"):
        raise ValueError("is absolute")
    if _SCHEME_OR_DRIVE.match(path):
        raise ValueError("is a URL or a drive path, not a path inside the mirror")
    parts = [seg for seg in path.split("/") if seg not in ("", ".")]
    if ".." in parts:
        raise ValueError("climbs out with '..'")
    if not parts:
        raise ValueError("names no file")
    return "/".join(parts)


def landmask_version(dataset_version: str) -> str:
    """The landmask directory for a dataset version: v1, v1.1 or v2."""
    v = dataset_version.lower()
    if v.startswith("v1.1"):
        return "v1.1"
    if v.startswith("v2"):
        return "v2"
    return "v1"


def bucket_paths(version: str, year: int, tile: Tile) -> dict[str, str]:
    """Relative (POSIX) paths of a tile-year in the bucket layout."""
    n = tile.name
    d = f"{BUCKET_NPY}/{version}/{year}/{n}"
    return {
        "directory": d,
        "grid": f"{d}/{n}.npy",
        "scales": f"{d}/{n}_scales.npy",
        "landmask": f"{BUCKET_LANDMASKS}/{landmask_version(version)}/{n}.tiff",
        "manifest": f"{BUCKET_NPY}/{version}/{MANIFEST}",
    }


def cache_paths(year: int, tile: Tile) -> dict[str, str]:
    """Relative (POSIX) paths of a tile-year in geotessera's cache layout."""
    n = tile.name
    d = f"{CACHE_NPY}/{year}/{n}"
    return {
        "directory": d,
        "grid": f"{d}/{n}.npy",
        "scales": f"{d}/{n}_scales.npy",
        "landmask": f"{CACHE_TIFF}/{n}.tiff",
    }


def write_landmask(path: str | os.PathLike[str], grid: TileGrid, landmask: np.ndarray, tags: dict | None = None) -> None:
    """Write a uint8 landmask GeoTIFF (1 = land, 0 = water) carrying the tile's grid."""
    import rasterio

    landmask = np.asarray(landmask, dtype=np.uint8)
    if landmask.shape != grid.shape:
        raise ValueError(f"landmask {landmask.shape} does not match grid {grid.shape}")
    with atomic_path(path) as tmp:
        with rasterio.open(
            tmp,
            "w",
            driver="GTiff",
            height=grid.height,
            width=grid.width,
            count=1,
            dtype="uint8",
            crs=grid.crs,
            transform=grid.affine(),
            compress="lzw",
            tiled=True,
            blockxsize=256,
            blockysize=256,
        ) as dst:
            dst.write(landmask, 1)
            dst.update_tags(tile=grid.tile.name, **(tags or {}))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def write_release_tile(
    root: str | os.PathLike[str],
    version: str,
    year: int,
    grid: TileGrid,
    embeddings: np.ndarray,
    scales: np.ndarray,
    landmask: np.ndarray | None = None,
    tags: dict | None = None,
) -> dict[str, str]:
    """Write one tile-year in the bucket layout under ``root``; returns its relative paths.

    embeddings (H, W, 128) int8, scales (H, W) float32 (NaN = no data). The landmask
    defaults to "land wherever the scale is valid". Every file is written atomically.
    Call :func:`write_manifest` once after the last tile.
    """
    from ..quant import valid_scales

    root = Path(root)
    paths = bucket_paths(version, year, grid.tile)
    embeddings = np.ascontiguousarray(embeddings, dtype=np.int8)
    scales = np.ascontiguousarray(scales, dtype=np.float32)
    if embeddings.shape[:2] != grid.shape or scales.shape != grid.shape:
        raise ValueError(f"arrays {embeddings.shape}/{scales.shape} do not match grid {grid.shape}")
    _save_npy(root / paths["grid"], embeddings)
    _save_npy(root / paths["scales"], scales)
    if landmask is None:
        landmask = valid_scales(scales).astype(np.uint8)
    lm_path = root / paths["landmask"]
    write_landmask(lm_path, grid, landmask, tags)
    return paths


def write_manifest(root: str | os.PathLike[str], version: str, variant: str = "") -> Path:
    """Scan ``root``'s bucket layout for ``version`` and (re)write its manifest.parquet.

    One row per tile-year with sizes and MD5s, atomically replacing any earlier manifest.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    base = root / BUCKET_NPY / version
    rows: dict[str, list] = {k: [] for k in (
        "version", "variant", "year", "lon", "lat", "directory", "grid_path", "scales_path",
        "grid_size", "scales_size", "grid_md5", "scales_md5", "landmask_path",
    )}
    for year_dir in sorted(p for p in base.iterdir() if p.is_dir() and p.name.isdigit()):
        for tile_dir in sorted(p for p in year_dir.iterdir() if p.is_dir()):
            tile = Tile.from_name(tile_dir.name)
            paths = bucket_paths(version, int(year_dir.name), tile)
            g, s = root / paths["grid"], root / paths["scales"]
            if not (g.exists() and s.exists()):
                continue
            rows["version"].append(version)
            rows["variant"].append(variant)
            rows["year"].append(int(year_dir.name))
            rows["lon"].append(tile.lon)
            rows["lat"].append(tile.lat)
            rows["directory"].append(paths["directory"])
            rows["grid_path"].append(paths["grid"])
            rows["scales_path"].append(paths["scales"])
            rows["grid_size"].append(g.stat().st_size)
            rows["scales_size"].append(s.stat().st_size)
            rows["grid_md5"].append(file_md5(g))
            rows["scales_md5"].append(file_md5(s))
            rows["landmask_path"].append(paths["landmask"])
    table = pa.table(rows, schema=pa.schema([
        ("version", pa.string()), ("variant", pa.string()), ("year", pa.int32()),
        ("lon", pa.float64()), ("lat", pa.float64()), ("directory", pa.string()),
        ("grid_path", pa.string()), ("scales_path", pa.string()), ("grid_size", pa.int64()),
        ("scales_size", pa.int64()), ("grid_md5", pa.string()), ("scales_md5", pa.string()),
        ("landmask_path", pa.string()),
    ]))
    out = base / MANIFEST
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    return out
