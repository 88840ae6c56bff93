"""The Ray engine on a real 2-node local cluster (head + one worker, small resources).

The same shards built as Ray tasks are byte-identical to a local build; queries fanned
out to one actor per node return exactly the local IDs and similarities, and so do label
candidates across the index; a worker node lost mid-build stops the build with an error
naming the shard, and a rerun after the node is back completes the same index; the CLI's
``--engine ray`` and the benchmark's smoke run go through the same cluster. The cluster
is started once for the module and shut down at the end, leaving no Ray process behind
(checked).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the ray extra (pip install -e '.[ray]') is part of the test set-up")

from ray.cluster_utils import Cluster  # noqa: E402

from tessera_search.engine import LocalEngine, get_engine  # noqa: E402
from tessera_search.engine._ray import RayEngine, _balance  # noqa: E402
from tessera_search.errors import EngineError, InvalidInputError  # noqa: E402
from tessera_search.index import build_index  # noqa: E402
from tessera_search.regions import resolve_region  # noqa: E402
from tessera_search.workspace import Workspace  # noqa: E402

from _helpers import NAIROBI_TILES, small_tile  # noqa: E402

H, W = 60, 64  # 4 tiles of about 3,600 indexed pixels: 4 shards of one tile each
SHARD = 5000
GiB = 2**30
HEAD_MEMORY, WORKER_MEMORY = int(1.5 * GiB), 3 * GiB  # Ray's logical memory resource per node
SMALL, LARGE = "1GiB", "2GiB"  # --max-memory: fits both nodes / only the worker


def _fill(home: Path) -> None:
    ws = Workspace(home)
    for name in NAIROBI_TILES:
        ws.put(small_tile(name, height=H, width=W))


def _node_args(memory: int) -> dict:
    return {"num_cpus": 1, "memory": memory, "object_store_memory": 80 * 2**20,
            "include_dashboard": False}


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args=_node_args(HEAD_MEMORY))
    c.add_node(**_node_args(WORKER_MEMORY))
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False, logging_level="warning")
    session = ray._private.worker._global_node.get_session_dir_path()
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
    left = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if session in cmd:
                left.append(f"{pid}: {cmd[:120]}")
    assert not left, f"Ray processes left behind: {left}"


def _gen_files(gen: Path) -> dict[str, bytes]:
    """Every file of a generation but its manifest (which records timings), by name."""
    return {p.name: p.read_bytes() for p in sorted(gen.iterdir()) if p.is_file() and p.name != "manifest.json"}


def _same_manifests(a: dict, b: dict) -> None:
    """The shards, plan and parameters two manifests record agree (timings aside; the
    workspaces' ingest times, and so the build keys, differ)."""
    strip = ("seconds",)
    a, b = ({k: doc.get(k) for k in ("shards", "plan", "params", "tiles", "n_vectors")} for doc in (a, b))

    def clean(doc):
        if isinstance(doc, dict):
            return {k: clean(v) for k, v in doc.items() if k not in strip}
        if isinstance(doc, list):
            return [clean(v) for v in doc]
        return doc

    assert clean(a) == clean(b)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same four-shard index built locally: the truth the Ray builds must equal."""
    home = tmp_path_factory.mktemp("local")
    _fill(home)
    rep = build_index(resolve_region(tiles=NAIROBI_TILES), 2023, home=home, progress=False, shard_size=SHARD,
                      max_memory=SMALL)
    assert rep.n_shards == 4
    return home, rep


def test_balance_splits_by_weight():
    assert _balance([1, 1, 1, 1], 2) == [[0, 1], [2, 3]]
    assert _balance([10, 1, 1, 1], 2) == [[0], [1, 2, 3]]
    assert _balance([0, 0, 0], 3) == [[0], [1], [2]]
    assert sum(_balance([5, 3, 2, 7, 1], 3), []) == [0, 1, 2, 3, 4]


def test_engine_names():
    assert isinstance(get_engine(None), LocalEngine) and isinstance(get_engine("local"), LocalEngine)
    with pytest.raises(InvalidInputError, match="unknown engine"):
        get_engine("dask")
    with pytest.raises(InvalidInputError, match="--engine ray"):
        get_engine("local", "127.0.0.1:6379")


def test_an_address_nobody_answers_is_an_engine_error_at_once(cli):
    # Runs before the module's cluster starts (file order): no Ray runtime in this process yet.
    import socket

    with socket.socket() as s:  # a free port: nothing listens there once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = cli("query", "--point", "36.8,-1.3", "--index", "x", "--engine", "ray",
                         "--ray-address", f"127.0.0.1:{port}")
    assert code == 1 and "EngineError: no Ray cluster answers at 127.0.0.1:" in err and "ray start --head" in err


def test_ray_build_is_byte_identical_to_local(cluster, reference, tmp_path):
    ref_home, ref = reference
    _fill(tmp_path)
    steps = []

    def progress(label, total):
        import contextlib

        @contextlib.contextmanager
        def bar():
            yield lambda n=1: steps.append(n)

        return bar()

    eng = RayEngine()
    rep = build_index(resolve_region(tiles=NAIROBI_TILES), 2023, home=tmp_path, progress=progress, shard_size=SHARD,
                      max_memory=SMALL, engine=eng)
    assert rep.n_shards == 4 and rep.shards_built == 4 and rep.n_vectors == ref.n_vectors
    # Both nodes built shards; the bar counted every tile of every shard.
    assert len(set(eng.placements.values())) == 2, eng.placements
    assert sum(steps) >= len(NAIROBI_TILES)
    assert _gen_files(rep.path) == _gen_files(ref.path)
    import json

    _same_manifests(json.loads((rep.path / "manifest.json").read_text()),
                    json.loads((ref.path / "manifest.json").read_text()))


def _queries(home: Path, n: int = 6) -> np.ndarray:
    """(n, 128) unit float32: stored pixels of different tiles and classes."""
    from tessera_search.grid import Tile
    from tessera_search.index.build import normalise
    from tessera_search.store import TileStore

    store, out = TileStore(home), []
    for j in range(n):
        data = store.read(Tile.from_name(NAIROBI_TILES[j % 4]), 2023)
        out.append(data.embeddings[7 + 9 * j, 10 + 8 * j])
    return normalise(np.array(out))


def test_ray_queries_equal_local_search(cluster, reference):
    from tessera_search.index import open_index

    home, ref = reference
    q = _queries(home)
    eng = RayEngine()
    with open_index(ref.name, home=home) as local, open_index(ref.name, home=home, engine=eng) as remote:
        for k in (1, 10, 100, 1000):
            a, b = local.search_many(q, k=k), remote.search_many(q, k=k)
            for ra, rb in zip(a, b):
                assert len(ra.ids) == k
                assert np.array_equal(ra.ids, rb.ids) and np.array_equal(ra.similarity, rb.similarity)
                assert ra.candidates == rb.candidates and ra.nprobe == rb.nprobe
        held = remote._held
        assert len(held.holders.groups) == 2 and sorted(sum(held.holders.groups, [])) == [0, 1, 2, 3]
        assert len(set(held.holders.nodes)) == 2  # one holder on each node
        one = remote.search(q[0], k=50, nprobe=1)  # few lists: fewer than k at first, raised until enough
        assert np.array_equal(one.ids, local.search(q[0], k=50, nprobe=1).ids)
    assert remote._held is None  # closed with the index: the actors are gone


def test_ray_first_pass_equals_local_search(cluster, tmp_path):
    """An index with first-pass codes (``Int8,PQ16``): the holders' first passes, merged
    on the driver and re-ranked where the rows are, give the local answers bit for bit."""
    from tessera_search.index import open_index

    _fill(tmp_path)
    rep = build_index(resolve_region(tiles=NAIROBI_TILES), 2023, home=tmp_path, progress=False, shard_size=SHARD,
                      max_memory=SMALL, factory="IVF64,Int8,PQ16", name="fp")
    q = _queries(tmp_path)
    forced = {"cand": 3000, "cand_nprobe": 32, "cand10": 1500, "cand_nprobe10": 32}
    with open_index(rep.name, home=tmp_path) as local, \
            open_index(rep.name, home=tmp_path, engine=RayEngine()) as remote:
        for idx in (local, remote):
            idx.params.update(forced)
        for k in (10, 1000):
            for ra, rb in zip(local.search_many(q, k=k), remote.search_many(q, k=k)):
                assert len(ra.ids) == k
                assert np.array_equal(ra.ids, rb.ids) and np.array_equal(ra.similarity, rb.similarity)


def _examples(home: Path, path: Path) -> Path:
    """A GeoJSON of labelled example points: two pixels of each of the tiles' four patterns."""
    import json

    from tessera_search.grid import Tile, pixel_to_lonlat
    from tessera_search.store import TileStore

    tile = Tile.from_name(NAIROBI_TILES[1])
    grid = TileStore(home).grid(tile, 2023)
    feats = []
    for r, c, cls in ((5, 5, "a"), (25, 30, "a"), (5, 17, "b"), (27, 41, "b"), (5, 29, "c"), (15, 6, "c"),
                      (5, 41, "d"), (15, 17, "d")):
        lon, lat = pixel_to_lonlat(grid, np.array([r]), np.array([c]))
        feats.append({"type": "Feature", "properties": {"class": cls},
                      "geometry": {"type": "Point", "coordinates": [float(lon[0]), float(lat[0])]}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def test_label_candidates_across_the_index_fan_out_like_a_search(cluster, reference, tmp_path):
    from tessera_search.label import label_candidates

    home, ref = reference
    ex = _examples(home, tmp_path / "ex.geojson")
    local = label_candidates(ex, index=ref.name, per_class=40, home=home, class_field="class")
    remote = label_candidates(ex, index=ref.name, per_class=40, home=home, class_field="class", engine=RayEngine())
    assert len(local) == 4 * 40 and local.n_scanned == remote.n_scanned == ref.n_vectors - 8
    for field in ("class_name", "rank", "ids", "score", "margin", "confidence", "lon", "lat"):
        assert np.array_equal(getattr(local, field), getattr(remote, field)), field


def test_cli_query_with_engine_ray_prints_the_local_matches(cluster, reference, cli):
    import json

    home, ref = reference
    ex_point = "--point"
    from tessera_search.grid import Tile, pixel_to_lonlat
    from tessera_search.store import TileStore

    grid = TileStore(home).grid(Tile.from_name(NAIROBI_TILES[2]), 2023)
    lon, lat = pixel_to_lonlat(grid, np.array([20]), np.array([30]))
    point = f"{lon[0]:.7f},{lat[0]:.7f}"
    docs = []
    for extra in ((), ("--engine", "ray", "--ray-address", cluster.address)):
        code, out, err = cli("--home", home, "query", ex_point, point, "--k", "200", "--index", ref.name, "--json",
                             *extra)
        assert code == 0, err
        docs.append(json.loads(out))
    assert [m["id"] for m in docs[0]["matches"]] == [m["id"] for m in docs[1]["matches"]]
    assert [m["similarity"] for m in docs[0]["matches"]] == [m["similarity"] for m in docs[1]["matches"]]
    code, out, err = cli("--home", home, "query", ex_point, point, "--index", ref.name, "--engine", "dask")
    assert code == 2 and "unknown engine 'dask'" in err


def test_lost_worker_mid_build_then_rerun_gives_the_same_index(cluster, reference, tmp_path):
    """--max-memory 2GiB fits only the worker (3 GiB of Ray memory, the head 1.5): every
    shard runs there; the test removes the worker after the first shard is recorded."""
    ref_home, ref = reference
    _fill(tmp_path)
    region = resolve_region(tiles=NAIROBI_TILES)
    worker = next(n for n in cluster.worker_nodes)
    seen = []

    def lose_worker(done, total):
        seen.append(done)
        if done == 1:
            cluster.remove_node(worker)

    with pytest.raises(EngineError, match=r"shard") as err:
        build_index(region, 2023, home=tmp_path, progress=False, shard_size=SHARD, max_memory=LARGE,
                    engine=RayEngine(max_retries=0), on_shard=lose_worker)
    assert seen[0] == 1 and "node" in str(err.value)
    cluster.add_node(**_node_args(WORKER_MEMORY))
    cluster.wait_for_nodes()
    again = []
    rep = build_index(region, 2023, home=tmp_path, progress=False, shard_size=SHARD, max_memory=LARGE,
                      engine=RayEngine(), on_shard=lambda d, t: again.append(d))
    assert rep.shards_reused >= 1 and rep.shards_built == 4 - rep.shards_reused and again[-1] == 4
    assert _gen_files(rep.path) == _gen_files(ref.path)


def test_no_node_fits_the_memory_bound(cluster, tmp_path):
    _fill(tmp_path)
    with pytest.raises(EngineError, match="no live node"):
        build_index(resolve_region(tiles=NAIROBI_TILES), 2023, home=tmp_path, progress=False, shard_size=SHARD,
                    max_memory="8GiB", engine="ray")


def test_bench_ray_tiny_on_the_cluster(cluster, tmp_path):
    """``benchmarks/bench_ray.py --tiny`` end to end against this cluster (as run by hand,
    in a subprocess): the same index and results through both engines, sane numbers."""
    import json
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_ray.py"
    work = tmp_path / "bench"
    proc = subprocess.run([sys.executable, str(bench), "--tiny", "--work", str(work), "--address", cluster.address,
                           "--max-memory", SMALL],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| byte-identical index / identical results | - | True / True |" in proc.stdout
    doc = json.loads((work / "bench_ray.json").read_text())
    assert doc["identical_files"] and doc["identical_results"] and doc["holders"] == 2
    assert doc["local"]["n_vectors"] == doc["ray"]["n_vectors"] > 10_000 and doc["ray"]["n_shards"] == 4
    assert doc["ray"]["nodes_used"] == 2
    for key in ("build_ratio", "shards_ratio"):
        assert doc[key] > 0
    for k in ("10", "1000"):
        assert doc["search"][k]["local"]["median_ms"] > 0 and doc["search"][k]["ray"]["median_ms"] > 0
    assert doc["bytes_per_pixel"]["store_disk"] > 0 and doc["bytes_per_pixel"]["index_disk"] > 0


def test_cli_build_index_with_engine_ray_writes_the_local_files(cluster, cli, tmp_path):
    import json

    a, b = tmp_path / "a", tmp_path / "b"
    _fill(a)
    _fill(b)
    ref = build_index(resolve_region(tiles=NAIROBI_TILES), 2023, home=a, progress=False, max_memory=SMALL)
    tiles = [arg for t in NAIROBI_TILES for arg in ("--tile", t)]
    code, out, err = cli("--home", b, "build-index", "--year", "2023", *tiles, "--max-memory", SMALL,
                         "--engine", "ray", "--ray-address", cluster.address, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["n_vectors"] == ref.n_vectors and doc["shards_built"] == ref.n_shards
    assert _gen_files(Path(doc["path"])) == _gen_files(ref.path)


def test_the_local_engine_never_imports_ray(tmp_path):
    """A local build and query (what every command does by default) run without Ray."""
    import subprocess
    import sys

    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from _helpers import NAIROBI_TILES, small_tile
from tessera_search.index import build_index, open_index
from tessera_search.regions import resolve_region
from tessera_search.workspace import Workspace
ws = Workspace({str(tmp_path)!r})
for name in NAIROBI_TILES[:2]:
    ws.put(small_tile(name, height=30, width=32))
rep = build_index(resolve_region(tiles=NAIROBI_TILES[:2]), 2023, home={str(tmp_path)!r}, progress=False, engine="local")
with open_index(rep.name, home={str(tmp_path)!r}, engine="local") as idx:
    import numpy as np
    idx.search(np.ones(128, np.float32), k=5)
assert "ray" not in sys.modules, "ray was imported"
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr
