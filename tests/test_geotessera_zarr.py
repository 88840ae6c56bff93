"""A geoemb Zarr store written by geotessera's own tools ingests exactly (issue 12).

``tessera-search synthesize`` makes a two-tile NPY mirror straddling the equator (one
tile in the southern UTM zone EPSG:32737, one in the northern EPSG:32637, both in zone
group ``utm37`` of the store); ``geotessera-registry zarr-init`` + ``zarr-fill`` turn it
into a store; the mirror and the store are each ingested with ``tessera-search download``
and the stored int8 vectors and float32 scales compared bit for bit.

geotessera 0.11 places each tile by its centre-derived footprint: the tile's cell
corners projected to UTM, ``h = round(extent_y / 10)``, ``w = round(extent_x / 10)``,
copying NPY rows ``[0, h)`` and columns ``[0, w)``. That is one (sometimes two) rows and
one column short of the NPY's outward-snapped grid, so the tile's last row(s)/column
are not in the store: there the Zarr ingest must hold what the store holds instead,
the neighbouring tile's pixels where one covers them (the equator row) and no data
(scale +inf, vector 0) elsewhere.

Runs where geotessera's CLI is installed (Python 3.12 venv): ``$TESSERA_GEOTESSERA_BIN``
(the folder holding ``geotessera-registry``), else ``/work/gt312/bin``, else ``PATH``.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tessera_search.grid import PIXEL_SIZE, Tile, to_utm
from tessera_search.store import TileStore

YEAR = 2024
SOUTH, NORTH = "grid_36.85_-0.05", "grid_36.85_0.05"
TOOL = "geotessera-registry"


def _geotessera_tool() -> Path | None:
    env = os.environ.get("TESSERA_GEOTESSERA_BIN")
    candidates = [Path(env) / TOOL] if env else []
    candidates.append(Path("/work/gt312/bin") / TOOL)
    found = shutil.which(TOOL)
    if found:
        candidates.append(Path(found))
    return next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


def _footprint(tile: Tile) -> tuple[float, float, int, int]:
    """geotessera 0.11's placement of a tile: (origin_x, origin_y, height, width)."""
    lon, lat = tile.ix / 10 + 0.05, tile.iy / 10 + 0.05
    w, e, s, n = lon - 0.05, lon + 0.05, lat - 0.05, lat + 0.05
    xs, ys = to_utm(tile.epsg).transform([w, e, w, e], [n, n, s, s])  # ul, ur, ll, lr
    x0, y0 = min(xs[0], xs[2]), max(ys[0], ys[1])
    return x0, y0, round((y0 - min(ys[2], ys[3])) / PIXEL_SIZE), round((max(xs[1], xs[3]) - x0) / PIXEL_SIZE)


def _geotessera_registry(mirror: Path, out: Path) -> None:
    """manifest.parquet / landmasks.parquet as geotessera's registry expects them.

    Its Registry keeps manifest rows whose ``version`` is the normalised model version
    (``1.0`` for npy/v1) and whose ``variant`` is the one asked for; synthesize writes
    ``v1`` / ``synthetic``. Without a local landmasks.parquet it goes to the network.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(mirror / "npy" / "v1" / "manifest.parquet")
    i = table.schema.get_field_index("version")
    table = table.set_column(i, "version", pa.array(["1.0"] * table.num_rows, pa.string()))
    pq.write_table(table, out / "manifest.parquet")
    rows = table.to_pydict()
    pq.write_table(pa.table({
        "lon": pa.array(rows["lon"], pa.float64()),
        "lat": pa.array(rows["lat"], pa.float64()),
        "file_size": pa.array([(mirror / p).stat().st_size for p in rows["landmask_path"]], pa.int64()),
    }), out / "landmasks.parquet")


def _run(*args, env) -> None:
    done = subprocess.run([str(a) for a in args], check=False, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args[:2]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _bits(scales: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(scales, dtype=np.float32).view(np.uint32)


def test_geotessera_zarr_fill_store_ingests_exactly(tmp_path, cli):
    tool = _geotessera_tool()
    if tool is None:
        pytest.skip(f"geotessera's {TOOL} not found ($TESSERA_GEOTESSERA_BIN, /work/gt312/bin, PATH)")
    mirror, registry, store = tmp_path / "mirror", tmp_path / "registry", tmp_path / "tessera.zarr"
    registry.mkdir()

    code, _out, err = cli("synthesize", "--tile", SOUTH, "--tile", NORTH, "--year", YEAR, "--out", mirror)
    assert code == 0, err
    _geotessera_registry(mirror, registry)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # geotessera's registry cache, kept out of ~
    common = ["--registry-dir", registry, "--dataset-variant", "synthetic"]
    source = f"file://{mirror}"  # the published npy/<version>/ + landmasks/<version>/ layout
    _run(tool, "zarr-init", source, "--years", YEAR, "--output", store, *common, env=env)
    _run(tool, "zarr-fill", source, store, "--workers", 1, *common, env=env)

    npy_home, zarr_home = tmp_path / "from-npy", tmp_path / "from-zarr"
    for home, src in ((npy_home, mirror), (zarr_home, store)):
        code, _out, err = cli("--home", home, "download", "--tile", SOUTH, "--tile", NORTH,
                             "--year", YEAR, "--source", src)
        assert code == 0, err

    got = {}
    for name in (SOUTH, NORTH):
        tile = Tile.from_name(name)
        a = TileStore(npy_home).read(tile, YEAR)
        b = TileStore(zarr_home).read(tile, YEAR)
        assert b.grid == a.grid
        assert a.dataset_version == b.dataset_version == "v1"  # store says geoemb:model .../1.0
        x0, y0, h, w = _footprint(tile)
        _, _, ac, _, _, af = a.grid.transform
        # geotessera's floor placement lands on our grid's corner pixel (no lattice shift)
        assert math.floor((x0 - ac) / PIXEL_SIZE) == 0 and math.floor((af - y0) / PIXEL_SIZE) == 0
        H, W = a.grid.height, a.grid.width
        assert 0 <= H - h <= 2 and 0 <= W - w <= 2, (H, W, h, w)

        inside = np.zeros((H, W), bool)
        inside[:h, :w] = True
        assert np.array_equal(b.embeddings[inside], a.embeddings[inside])
        assert np.array_equal(_bits(b.scales[inside]), _bits(a.scales[inside]))  # NaN payloads too
        assert np.isnan(a.scales[inside]).any() and np.isfinite(a.scales[inside]).sum() > 0.9 * h * w
        got[name] = (a, b, inside)

    # The northern tile's grid reaches one row below the equator (y in (-10, 0]); in the
    # store that row is the southern tile's first row (northing 10 000 000 - 0 .. 10).
    (sa, _, s_in), (na, nb, n_in) = got[SOUTH], got[NORTH]
    assert sa.grid.transform[2] == na.grid.transform[2] and sa.grid.transform[5] == 10_000_000.0
    assert na.grid.transform[5] - PIXEL_SIZE * na.grid.height == -PIXEL_SIZE
    sw = int(s_in[0].sum())
    assert np.array_equal(nb.embeddings[-1, :sw], sa.embeddings[0, :sw])
    assert np.array_equal(_bits(nb.scales[-1, :sw]), _bits(sa.scales[0, :sw]))
    n_in[-1, :sw] = True

    # Everything else outside the footprints is not in the store: no data.
    for name, (a, b, covered) in got.items():
        rest = ~covered
        assert rest.any()
        assert np.all(np.isposinf(b.scales[rest])), name
        assert not b.embeddings[rest].any(), name

    # geotessera's own per-zone statistics were kept for training: its reservoir sample holds
    # stored pixels' vectors, and its exact mean is that of the zone's valid pixels
    from tessera_search import zone_samples
    from tessera_search.quant import valid_scales

    kept = zone_samples.load(zarr_home, YEAR, "v1", "utm37")
    assert kept is not None and len(kept.vectors) > 0 and kept.count > 0
    vecs, scs = [], []
    for name, (a, b, covered) in got.items():
        ok = covered & valid_scales(b.scales)
        if name == NORTH:
            ok[-1, :] = False  # the row below the equator is the southern tile's
        vecs.append(b.embeddings[ok])
        scs.append(b.scales[ok])
    vecs, scs = np.concatenate(vecs), np.concatenate(scs)
    rows = {v.tobytes() for v in vecs}
    assert all(v.tobytes() in rows for v in kept.vectors)
    if kept.mean is not None:
        mean = (vecs.astype(np.float64) * scs[:, None]).mean(axis=0)
        assert kept.count == len(vecs), (kept.count, len(vecs))
        np.testing.assert_allclose(kept.mean, mean, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("model, version", [
    ("https://geotessera.org/model/1.0", "v1"),  # what geotessera 0.11's zarr-init writes
    ("https://geotessera.org/model/1.1", "v1.1"),
    ("https://geotessera.org/model/2.0", "v2"),
    ("https://example.org/tessera/model/v1.1", "v1.1"),
])
def test_dataset_version_from_geotessera_model_uri(model, version):
    from tessera_search.sources.zarrstore import _dataset_version

    # geoemb:build_version is geotessera's package version, never the dataset's
    assert _dataset_version({"geoemb:model": model, "geoemb:build_version": "0.11.0"}) == version
