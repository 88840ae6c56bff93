"""One pair of tiles written as an NPY mirror, a geoemb Zarr store and an Icechunk repository:
the CLI ingests, shows, indexes and queries them identically from all three."""

from __future__ import annotations

import gc
import json

import numpy as np
import pytest
from _helpers import small_tile

from tessera_search.grid import expected_grid, pixel_to_lonlat
from tessera_search.sources.layout import write_manifest, write_release_tile

pytest.importorskip("icechunk")

TILES = ["grid_36.75_-1.25", "grid_36.85_-1.25"]  # zone 37 south, side by side
CORNER = (100, 60)  # where the first tile's corner sits in the zone grids


def _offsets(written) -> dict[str, tuple[int, int]]:
    """(row, col) of each tile's corner in a zone grid whose first tile sits at CORNER."""
    a = written[TILES[0]].grid.transform
    out = {}
    for name, data in written.items():
        t = data.grid.transform
        out[name] = (CORNER[0] + round((a[5] - t[5]) / 10.0), CORNER[1] + round((t[2] - a[2]) / 10.0))
    return out


def _whole_grid(data):
    """(grid, embeddings, scales, landmask) of the tile's whole grid holding ``data``'s window."""
    full = expected_grid(data.tile)
    r = round((full.transform[5] - data.grid.transform[5]) / 10.0)
    c = round((data.grid.transform[2] - full.transform[2]) / 10.0)
    h, w = data.grid.shape
    emb = np.zeros((*full.shape, 128), np.int8)
    scales = np.full(full.shape, np.nan, np.float32)
    landmask = np.zeros(full.shape, np.uint8)
    emb[r:r + h, c:c + w], scales[r:r + h, c:c + w], landmask[r:r + h, c:c + w] = data.embeddings, data.scales, 1
    return full, emb, scales, landmask


@pytest.fixture(scope="module")
def three_sources(tmp_path_factory):
    from test_icechunk_source import Repo, group_origin
    from test_zarr_source import _zone_origin, place, write_store

    import icechunk

    root = tmp_path_factory.mktemp("agree")
    written = {name: small_tile(name, 2023, seed=3) for name in TILES}
    for data in written.values():  # a release tile covers its whole grid: no data around the window
        write_release_tile(root / "npy", "v1", 2023, *_whole_grid(data))
    write_manifest(root / "npy", "v1")
    where = _offsets(written)
    size = 1536
    first = written[TILES[0]]
    write_store(root / "geoemb.zarr", 37, *_zone_origin(first, *CORNER), size=size, shard=512, chunk=64)
    for name, data in written.items():
        place(root / "geoemb.zarr", 37, data, *where[name])
    repo = Repo(icechunk.local_filesystem_storage(str(root / "v11.icechunk")))
    repo.group("37S", *group_origin(first, *CORNER), size=size, obs=False)
    for name, data in written.items():
        repo.place("37S", data, *where[name])
    repo.commit()
    del repo  # icechunk's objects are freed here, not by a later garbage collection in zarr's I/O thread
    gc.collect()
    return root, written, {"npy": root / "npy", "zarr": root / "geoemb.zarr", "icechunk": root / "v11.icechunk"}


def _json(cli, *args):
    code, out, err = cli(*args)
    assert code == 0, err
    return json.loads(out)


def test_npy_zarr_and_icechunk_give_identical_pixels_indexes_and_queries(three_sources, cli, tmp_path):
    root, written, sources = three_sources
    rng = np.random.default_rng(7)
    points = []
    for name, data in written.items():
        h, w = data.grid.shape
        for r, c in zip(rng.integers(0, h, 12), rng.integers(0, w, 12), strict=True):
            lon, lat = pixel_to_lonlat(data.grid, int(r), int(c))
            points.append(f"{float(lon)},{float(lat)}")
    tile_args = [a for t in TILES for a in ("--tile", t)]
    pixels, queries = {}, {}
    for kind, src in sources.items():
        home = str(tmp_path / kind)
        rep = _json(cli, "--home", home, "download", *tile_args, "--year", "2023", "--source", str(src), "--json")
        assert sorted(rep["stored"]) == TILES, rep
        pixels[kind] = [_json(cli, "--home", home, "pixel", "--point", p, "--year", "2023", "--json") for p in points]
        _json(cli, "--home", home, "build-index", *tile_args, "--year", "2023", "--name", "same", "--json")
        queries[kind] = _json(cli, "--home", home, "query", "--point", points[3], "--k", "200", "--index", "same",
                              "--json")
    keys = ("tile", "row", "col", "id", "lon", "lat", "valid", "scale", "int8", "embedding")
    for kind in ("zarr", "icechunk"):
        for a, b in zip(pixels["npy"], pixels[kind], strict=True):
            assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    assert sum(p["valid"] for p in pixels["npy"]) >= 12  # the sample holds real vectors, not only water
    got = {kind: q["matches"] for kind, q in queries.items()}
    assert len(got["npy"]) == 200
    assert got["npy"] == got["zarr"] == got["icechunk"]
