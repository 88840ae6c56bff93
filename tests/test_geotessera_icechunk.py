"""The Icechunk layout cross-checked with geotessera 0.11 and icechunk 2 (issue 12).

Runs where geotessera's Python 3.12 environment is installed (see
``test_geotessera_zarr``): its ``python`` has geotessera and icechunk 2.x, which write and
read the repository format the published v1.1 run uses; this project's own environment
(Python 3.11) has icechunk 1.1, which reads format 1 only.

1. geotessera's own reader (``geotessera.icechunk.IcechunkStore``, which merges the two
   hemisphere groups into one northern-CRS zone grid) reads a repository this suite wrote,
   and gives the same pixels as :class:`IcechunkSource` for a tile either side of the
   equator: both agree on groups, CRSs, the equator rule and the window placement.
2. A repository written by icechunk 2 (format 2) is read by :class:`IcechunkSource`
   running under that Python with icechunk 2, exactly as the NPY tile; under icechunk 1.1
   the same repository is refused with a message that says what to install.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _helpers import small_tile
from test_geotessera_zarr import _geotessera_tool
from test_icechunk_source import EQ_NORTH, EQ_SOUTH, Repo, at_equator, group_origin, obs_counts

from tessera_search.errors import SourceUnavailableError
from tessera_search.grid import Tile
from tessera_search.sources.icechunkstore import IcechunkSource

icechunk = pytest.importorskip("icechunk")
REPO_ROOT = Path(__file__).resolve().parents[1]
SIZE, ROWS_PAST = 256, 80  # group edge, rows each group runs past the equator


def _python() -> Path:
    tool = _geotessera_tool()
    if tool is None:
        pytest.skip("geotessera (Python 3.12 environment) is not installed here")
    py = tool.parent / "python"
    if not py.is_file():
        pytest.skip(f"no python beside {tool}")
    return py


def _run(py: Path, script: str, *args) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run([str(py), "-c", script, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _equator_pair():
    north, south = at_equator(small_tile(EQ_NORTH, seed=1)), at_equator(small_tile(EQ_SOUTH, seed=2))
    return north, south


def _write_pair(repo: Repo, north, south) -> None:
    """37N runs ROWS_PAST rows south of the equator, 37S ROWS_PAST rows north, other data there."""
    n_row = SIZE - ROWS_PAST - north.grid.height
    repo.group("37N", *group_origin(north, n_row, 40), size=SIZE)
    repo.group("37S", *group_origin(south, ROWS_PAST, 40), size=SIZE)
    repo.place("37N", north, n_row, 40)
    repo.place("37S", south, ROWS_PAST, 40)
    repo.place("37N", small_tile(EQ_SOUTH, seed=8, height=ROWS_PAST, width=48), SIZE - ROWS_PAST, 40)
    repo.place("37S", small_tile(EQ_NORTH, seed=9, height=ROWS_PAST, width=48), 0, 40)
    repo.commit()


GEOTESSERA_READ = r"""
import json, sys
import numpy as np
from geotessera.icechunk import IcechunkStore
repo, spec, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
store = IcechunkStore(repo)
ds = store.open_zone(37)
arrays = store.zone_arrays(37)
px, _, west, _, _, top = ds.attrs["spatial:transform"]
height, width = ds.attrs["spatial:shape"]
res = {}
for name, (x0, y0, h, w) in spec.items():   # the tile grid, in the zone's northern CRS
    r, c = round((top - y0) / px), round((x0 - west) / px)
    r0, c0, r1, c1 = max(r, 0), max(c, 0), min(r + h, height), min(c + w, width)  # the part the zone covers
    res[name + "_box"] = np.asarray([r0 - r, c0 - c, r1 - r, c1 - c])
    res[name + "_emb"] = np.asarray(arrays["embeddings"][0, :, r0:r1, c0:c1]).transpose(1, 2, 0)
    res[name + "_sc"] = np.asarray(arrays["scales"][0, r0:r1, c0:c1])
    res[name + "_obs"] = np.asarray(arrays["s2_obs_count"][0, r0:r1, c0:c1])
np.savez(out, **res)
"""


def test_geotessera_reads_our_repository_as_we_do(tmp_path):
    py = _python()
    north, south = _equator_pair()
    _write_pair(Repo(icechunk.local_filesystem_storage(str(tmp_path / "ours.icechunk"))), north, south)
    src = IcechunkSource(tmp_path / "ours.icechunk")
    got = {d.tile.name: d for d in src.fetch([north.tile, south.tile], 2023)}
    spec = {}
    for name, d in got.items():
        _, _, x0, _, _, y0 = d.grid.transform
        spec[name] = (x0, y0 - (10_000_000.0 if d.grid.epsg // 100 == 327 else 0.0), *d.grid.shape)
    _run(py, GEOTESSERA_READ, tmp_path / "ours.icechunk", json.dumps(spec), tmp_path / "gt.npz")
    with np.load(tmp_path / "gt.npz") as gt:
        for name, d in got.items():
            r0, c0, r1, c1 = (int(v) for v in gt[name + "_box"])
            inside = np.zeros(d.grid.shape, bool)
            inside[r0:r1, c0:c1] = True
            np.testing.assert_array_equal(gt[name + "_emb"], d.embeddings[r0:r1, c0:c1], err_msg=name)
            np.testing.assert_array_equal(gt[name + "_sc"].view(np.uint32), d.scales[r0:r1, c0:c1].view(np.uint32),
                                          err_msg=name)
            np.testing.assert_array_equal(gt[name + "_obs"], d.observations[r0:r1, c0:c1, 0], err_msg=name)
            # beyond the groups' extent (which geotessera's merged grid ends at) there is no data
            assert not np.isfinite(d.scales[~inside]).any() and not d.embeddings[~inside].any()
    # the northern tile's row below the equator holds the southern tile's first row in both readers
    assert np.isfinite(got[EQ_NORTH].scales).sum() == np.isfinite(north.scales).sum() + np.isfinite(south.scales[0]).sum()


ICECHUNK2_WRITE_AND_READ = r"""
import sys
sys.path.insert(0, sys.argv[3])
import numpy as np
import icechunk, zarr
from tessera_search.sources.icechunkstore import IcechunkSource
from tessera_search.grid import Tile
assert int(icechunk.__version__.split(".")[0]) >= 2, icechunk.__version__
src = np.load(sys.argv[1])
repo_path, out = sys.argv[2], sys.argv[4]
repo = icechunk.Repository.create(icechunk.local_filesystem_storage(repo_path))
session = repo.writable_session("main")
root = zarr.group(store=session.store)
x0, y0, size, row, col = (float(v) for v in src["placement"])
size, row, col = int(size), int(row), int(col)
g = root.create_group("37S", attributes={
    "proj:code": "EPSG:32737", "spatial:transform": [10.0, 0.0, x0, 0.0, -10.0, y0],
    "spatial:shape": [size, size], "years_complete": [2023]})
emb = g.create_array("embeddings", shape=(1, size, size, 128), dtype="int8", chunks=(1, 64, 64, 128), fill_value=0,
                     dimension_names=["time", "northing", "easting", "band"])
sc = g.create_array("scales", shape=(1, size, size), dtype="float32", chunks=(1, 64, 64), fill_value=float("nan"),
                    dimension_names=["time", "northing", "easting"])
obs = {}
for k in ("s2", "s1_asc", "s1_desc"):
    obs[k] = g.create_array(f"{k}_obs_count", shape=(1, size, size), dtype="uint16", chunks=(1, 64, 64),
                            fill_value=0, dimension_names=["time", "northing", "easting"])
g.create_array("time", shape=(1,), dtype="int64", dimension_names=["time"])[...] = np.asarray([2023])
h, w = src["scales"].shape
emb[0, row:row + h, col:col + w, :] = src["embeddings"]
sc[0, row:row + h, col:col + w] = src["scales"]
for i, k in enumerate(("s2", "s1_asc", "s1_desc")):
    obs[k][0, row:row + h, col:col + w] = src["obs"][..., i]
session.commit("format 2")
del session, root, repo
(got,) = IcechunkSource(repo_path).fetch([Tile.from_name(str(src["tile"]))], 2023)
np.savez(out, embeddings=got.embeddings, scales=got.scales, observations=got.observations,
         transform=np.asarray(got.grid.transform))
"""


def test_a_format_2_repository_reads_under_icechunk_2_and_is_explained_under_1(tmp_path):
    py = _python()
    data = small_tile("grid_36.85_-1.25")
    x0, y0 = group_origin(data, 100, 60)
    np.savez(tmp_path / "tile.npz", embeddings=data.embeddings, scales=data.scales, obs=obs_counts(data),
             tile=data.tile.name, placement=np.asarray([x0, y0, 512, 100, 60]))
    repo = tmp_path / "v2.icechunk"
    _run(py, ICECHUNK2_WRITE_AND_READ, tmp_path / "tile.npz", repo, REPO_ROOT, tmp_path / "got.npz")
    with np.load(tmp_path / "got.npz") as got:
        r = round((got["transform"][5] - data.grid.transform[5]) / 10.0)
        c = round((data.grid.transform[2] - got["transform"][2]) / 10.0)
        h, w = data.grid.shape
        np.testing.assert_array_equal(got["embeddings"][r:r + h, c:c + w], data.embeddings)
        np.testing.assert_array_equal(got["scales"][r:r + h, c:c + w].view(np.uint32), data.scales.view(np.uint32))
        np.testing.assert_array_equal(got["observations"][r:r + h, c:c + w], obs_counts(data))
    if int(icechunk.__version__.split(".")[0]) < 2:
        with pytest.raises(SourceUnavailableError, match="newer Icechunk format.*icechunk >= 2"):
            IcechunkSource(repo)
    else:
        (tile,) = IcechunkSource(repo).fetch([Tile.from_name(data.tile.name)], 2023)
        assert tile.valid.sum() == data.valid.sum()
