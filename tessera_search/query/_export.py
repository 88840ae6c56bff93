"""Files from a query result: a COG match mask or similarity raster, a PNG quicklook,
points or blobs (:meth:`QueryResult.write`), chosen by the path's suffix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._progress import progress_bar
from ..errors import InvalidInputError, NoDataError
from ..grid import Tile, unpack_ids
from ._result import QueryResult
from ._vectors import PcaColours, unit_rows

_MAX_MARKERS = 5000  # quicklook: above this many matches, paint blocks instead of markers
_BLOCK = 65_536  # vectors projected at a time


def _tile_rows(index, tile: Tile):
    """``(read, ids)``: the sorted IDs of ``tile``'s indexed pixels and ``read(i, j)``, their
    int8 vectors i..j read from the store (never mapped whole: memory stays a block)."""
    return index.tile_rows(tile)


def _sample_rows(read, n: int, size: int, rng) -> np.ndarray:
    """``size`` rows spread over the ``n`` rows ``read`` gives: evenly spaced runs of 64."""
    if n <= size:
        return read(0, n)
    runs = max(1, size // 64)
    starts = np.sort(rng.choice(max(1, n - 64), size=runs, replace=False))
    return np.concatenate([read(int(a), int(a) + 64) for a in starts])


def _tile_coverage(index, tile: Tile) -> np.ndarray:
    """(H, W) bool: the pixels of ``tile`` that are in the index."""
    mask = np.zeros(index.grid(tile).shape, bool)
    _, _, r, c = unpack_ids(_tile_rows(index, tile)[1])
    mask[r, c] = True
    return mask


def _tile_similarity(index, tile: Tile, vector: np.ndarray) -> np.ndarray:
    """(H, W) float32: exact cosine of every indexed pixel of ``tile`` to ``vector``; NaN elsewhere."""
    out = np.full(index.grid(tile).shape, np.nan, np.float32)
    q = np.asarray(vector, np.float32)
    read, ids = _tile_rows(index, tile)
    for a in range(0, len(ids), _BLOCK):  # blocks: one tile's float copy would be 0.6 GB
        _, _, r, c = unpack_ids(ids[a:a + _BLOCK])
        x = read(a, a + _BLOCK).astype(np.float32)
        n = np.linalg.norm(x, axis=1)
        n[n == 0] = np.inf
        out[r, c] = (x @ q) / n
    return out


def _tags(result: QueryResult, extra: dict | None = None) -> dict:
    return {"year": result.year, "dataset_version": result.dataset_version, "index": result.index,
            "synthetic": result.synthetic, "query_id": result.query_id,
            "query_params": json.dumps({k: v for k, v in result.params.items()}, default=str),
            "producer": "tessera-search", **(extra or {})}


def write_raster(result: QueryResult, index, path, values: str = "mask", crs: str | None = None,
                 per_tile: bool = False, progress=None) -> list[Path]:
    """A COG of the matches: uint8 mask (1 match, 0 indexed but no match, 255 nodata) or
    float32 similarity of every indexed pixel (``values="similarity"``, NaN nodata).

    The mosaic covers the tiles holding matches, on their own 10 m grid when they share a
    UTM zone, in ``crs`` otherwise; ``per_tile`` writes one COG per tile into directory
    ``path``. Returns the files written.
    """
    from ..export import RasterWriter

    if values not in ("mask", "similarity"):
        raise InvalidInputError(f"values is mask or similarity, not {values!r}")
    if len(result) == 0:
        raise NoDataError("no matches to write; loosen the threshold or raise k")
    names = sorted(set(result.tiles))
    tiles = [Tile.from_name(n) for n in names]
    grids = [index.grid(t) for t in tiles]
    path = Path(path)
    target = path
    if per_tile:
        path.mkdir(parents=True, exist_ok=True)
        target = path / "matches.tif"
    kw = dict(count=1, crs=crs, per_tile=per_tile, tags=_tags(result, {"values": values}))
    if values == "mask":
        writer = RasterWriter(target, grids, dtype="uint8", nodata=255, band_descriptions=["match"],
                              colormap={0: (40, 40, 40), 1: (255, 215, 0)}, **kw)
    else:
        writer = RasterWriter(target, grids, dtype="float32", nodata=float("nan"),
                              band_descriptions=["cosine similarity"], overview_resampling="average", **kw)
    with writer, progress_bar(progress, f"raster {Path(path).name}", len(tiles)) as advance:
        for t, g in zip(tiles, grids, strict=True):
            if values == "mask":
                cov = _tile_coverage(index, t)
                data = np.where(cov, 0, 255).astype(np.uint8)
                sel = np.array([n == t.name for n in result.tiles])
                data[result.rows[sel], result.cols[sel]] = 1
            else:
                data = _tile_similarity(index, t, result.vector)
            writer.write_tile(g, data)
            advance()
    return list(writer.written) if per_tile else [target]


def write_quicklook(result: QueryResult, index, path, max_size: int = 1024, progress=None) -> Path:
    """A PNG: the matches (yellow ringed dots) over a false-colour PCA view of the embeddings
    of the tiles holding them, the examples marked (cyan +, red x for negatives), with a
    legend, scale bar and lon/lat ticks. Tiles of several UTM zones are drawn in EPSG:4326."""
    from ..export import RasterWriter
    from ..quicklook import Markers, RGBLayer, paint
    from ..raster_view import read_raster

    if len(result) == 0:
        raise NoDataError("no matches to draw; loosen the threshold or raise k")
    path = Path(path)
    tiles = [Tile.from_name(n) for n in sorted(set(result.tiles))]
    grids = [index.grid(t) for t in tiles]
    crs = None if len({g.epsg for g in grids}) == 1 else "EPSG:4326"
    # PCA basis from a sample of the tiles' indexed vectors, then each tile projected in
    # blocks: memory holds one tile's colours, never its vectors.
    rng = np.random.default_rng(0)
    sample = [unit_rows(_sample_rows(read, len(ids), 20000, rng))
              for read, ids in (_tile_rows(index, t) for t in tiles) if len(ids)]
    pca = PcaColours(np.concatenate(sample) if sample else np.zeros((1, 128)))
    del sample
    stage = path.with_name(f".{path.stem}.rgb.tif")
    try:
        with RasterWriter(stage, grids, count=4, dtype="uint8", nodata=0, crs=crs) as w, \
                progress_bar(progress, f"quicklook {path.name}", len(tiles)) as advance:
            for t, g in zip(tiles, grids, strict=True):
                arr = np.zeros((4, g.height, g.width), np.uint8)
                read, ids = _tile_rows(index, t)
                for a in range(0, len(ids), _BLOCK):
                    _, _, r, c = unpack_ids(ids[a:a + _BLOCK])
                    arr[:3, r, c] = pca.colours(read(a, a + _BLOCK), 30, 200).T
                    arr[3, r, c] = 1
                w.write_tile(g, arr)
                advance()
        view = read_raster(stage, (1, 2, 3, 4), max_size=max_size)
    finally:
        stage.unlink(missing_ok=True)
    pos, neg = result.query.get("positives", []), result.query.get("negatives", [])
    markers = [Markers.matches(result.lon, result.lat)]
    if pos:
        markers.append(Markers.positives([e["lon"] for e in pos], [e["lat"] for e in pos]))
    if neg:
        markers.append(Markers.negatives([e["lon"] for e in neg], [e["lat"] for e in neg]))
    rgb = np.transpose(view.data[:3], (1, 2, 0))
    return paint(path, RGBLayer(rgb, view.data[3] > 0, "embeddings (PCA false colour)"), view.extent,
                 markers=markers, title=f"{len(result)} matches in {result.index} ({result.year})",
                 synthetic=result.synthetic, max_size=max_size, max_markers=_MAX_MARKERS)


def write_result(result: QueryResult, index, path, values: str = "mask", crs: str | None = None,
                 per_tile: bool = False, progress=None) -> list[Path]:
    """Write ``result`` by the suffix of ``path`` (.tif, .png, .geojson, .parquet, .csv);
    ``per_tile`` takes a directory. A .tif also gets its PNG quicklook beside it.
    ``progress``: see :mod:`tessera_search._progress`. Returns the files written."""
    path = Path(path)
    if per_tile or path.suffix.lower() in (".tif", ".tiff"):
        files = write_raster(result, index, path, values=values, crs=crs, per_tile=per_tile, progress=progress)
        if not per_tile:
            files.append(write_quicklook(result, index, path.with_suffix(".png"), progress=progress))
        return files
    if path.suffix.lower() == ".png":
        return [write_quicklook(result, index, path, progress=progress)]
    if crs is not None:
        raise InvalidInputError("crs applies to .tif output; points and polygons are written in lon/lat")
    return [result.write(path)]
