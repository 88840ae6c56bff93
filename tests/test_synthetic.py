"""The synthetic source: determinism, continuity, statistics, and the mirror it writes.

Most tests use windows of real tile grids (``generate_tile(..., grid=window)``), which
are exactly the corresponding part of the whole tile; the mirror tests write two whole
tiles at 65N (about 1110 x 470 pixels each) once per module.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from _helpers import SHARED

import numpy as np
import pytest

from tessera_search.errors import InvalidInputError, TileNotFoundError
from tessera_search.grid import Tile, TileGrid, expected_grid, lonlat_to_pixel, pixel_to_lonlat
from tessera_search.quant import dequantize, valid_scales
from tessera_search.sources.layout import bucket_paths
from tessera_search.sources.synthetic import (
    CLASSES,
    WATER_CLASSES,
    SynthesisReport,
    SyntheticTile,
    generate_tile,
    read_truth,
    synthesize_mirror,
    truth_path,
)

YEAR = 2024
NAIROBI = Tile.from_name("grid_36.85_-1.25")
WHEAT, BARLEY = 6, 7
# Mirror tiles: two neighbours far north, where grids are narrow (fast to write).
MIRROR_A = Tile.from_name("grid_25.05_65.05")
MIRROR_B = Tile.from_name("grid_25.15_65.05")
REFERENCE_STATS = SHARED / "reference" / "embedding-stats.json"


def window(tile: Tile, height: int, width: int, row0: int | None = None, col0: int | None = None) -> TileGrid:
    """A window of the tile's expected grid (same CRS and pixel lattice); centred by default."""
    g = expected_grid(tile)
    r0 = (g.height - height) // 2 if row0 is None else row0
    c0 = (g.width - width) // 2 if col0 is None else col0
    a, b, c, d, e, f = g.transform
    return TileGrid(tile, g.epsg, (a, b, c + a * c0, d, e, f + e * r0), height, width)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def sample() -> dict[str, np.ndarray]:
    """Land pixels from windows of four tiles far apart: vectors, classes, tile number."""
    names = ["grid_36.85_-1.25", "grid_0.15_52.15", "grid_-90.05_40.05", "grid_105.55_30.35"]
    xs, cs, ts, scales = [], [], [], []
    for k, name in enumerate(names):
        tile = Tile.from_name(name)
        st = generate_tile(tile, YEAR, seed=0, grid=window(tile, 320, 320))
        x = dequantize(st.data.embeddings, st.data.scales).reshape(-1, 128)
        c = st.classes.ravel()
        land = np.flatnonzero(np.isfinite(x[:, 0]))
        pick = np.random.default_rng(k).choice(land, 3000, replace=False)
        xs.append(x[pick])
        cs.append(c[pick])
        ts.append(np.full(pick.size, k))
        scales.append(st.data.scales[np.isfinite(st.data.scales)])
    return {"x": np.concatenate(xs), "c": np.concatenate(cs), "t": np.concatenate(ts),
            "scales": np.concatenate(scales)}


# --- the legend ---------------------------------------------------------------------------


def test_legend_codes():
    assert CLASSES[0] == "nodata"
    assert set(WATER_CLASSES) == {1, 2}
    assert {CLASSES[WHEAT], CLASSES[BARLEY]} == {"wheat", "barley"}
    assert sorted(CLASSES) == list(range(len(CLASSES)))


# --- determinism --------------------------------------------------------------------------


def test_same_inputs_same_tile_other_seed_other_tile():
    g = window(NAIROBI, 96, 80)
    a = generate_tile(NAIROBI, YEAR, seed=3, grid=g)
    b = generate_tile(NAIROBI, YEAR, seed=3, grid=g)
    assert isinstance(a, SyntheticTile)
    np.testing.assert_array_equal(a.data.embeddings, b.data.embeddings)
    np.testing.assert_array_equal(a.data.scales, b.data.scales)
    np.testing.assert_array_equal(a.classes, b.classes)
    c = generate_tile(NAIROBI, YEAR, seed=4, grid=g)
    assert not np.array_equal(a.classes, c.classes)
    assert not np.array_equal(a.data.embeddings, c.data.embeddings)


def test_tiledata_says_synthetic_and_has_real_georeferencing():
    g = window(NAIROBI, 64, 64)
    st = generate_tile(NAIROBI, YEAR, seed=0, version="v1.1", grid=g)
    d = st.data
    assert d.synthetic is True and d.source == "synthetic" and d.dataset_version == "v1.1"
    assert d.tile == NAIROBI and d.year == YEAR and d.grid == g
    assert d.grid.epsg == 32737  # UTM 37S
    assert d.embeddings.dtype == np.int8 and d.embeddings.shape == (64, 64, 128)
    assert d.scales.dtype == np.float32 and st.classes.dtype == np.uint8
    assert d.extra["seed"] == 0


def test_default_grid_is_the_expected_grid(mirror):
    emb = np.load(mirror["out"] / bucket_paths("v1", YEAR, MIRROR_A)["grid"], mmap_mode="r")
    assert emb.shape == (*expected_grid(MIRROR_A).shape, 128)


def test_window_equals_that_part_of_the_whole_tile(mirror):
    """A window of the grid gives exactly that part of the whole tile (embeddings too)."""
    full = expected_grid(MIRROR_A)
    r0, c0 = 500, 200
    st = generate_tile(MIRROR_A, YEAR, seed=0, grid=window(MIRROR_A, 40, 56, r0, c0))
    paths = bucket_paths("v1", YEAR, MIRROR_A)
    emb = np.load(mirror["out"] / paths["grid"], mmap_mode="r")
    sc = np.load(mirror["out"] / paths["scales"], mmap_mode="r")
    classes, grid = read_truth(mirror["out"], MIRROR_A, YEAR)
    assert grid == full
    np.testing.assert_array_equal(st.classes, classes[r0:r0 + 40, c0:c0 + 56])
    np.testing.assert_array_equal(st.data.embeddings, emb[r0:r0 + 40, c0:c0 + 56])
    np.testing.assert_array_equal(st.data.scales, sc[r0:r0 + 40, c0:c0 + 56])


# (height, width, row0, col0) of windows of MIRROR_A's grid (1129 x 506); -1 means "the
# last row/column", negative offsets reach past the tile's own grid (the lattice extends).
WINDOW_SHAPES = [
    (1, 506, 0, 0),  # the first row
    (1, 506, 777, 0),  # a row in the middle
    (1129, 1, 0, -1),  # the last column
    (1129, 1, 0, 251),  # a column in the middle
    (1, 1, 0, 0),  # single pixels: corners and an odd place
    (1, 1, -1, -1),
    (1, 1, 613, 97),
    (7, 13, 333, 101),  # odd sizes at odd offsets
    (2, 257, 901, 3),
    (129, 3, 17, 250),
    (31, 45, 1098, 461),  # the bottom right corner
    (20, 30, -9, -15),  # partly outside the tile's grid
]


@pytest.mark.parametrize("shape", WINDOW_SHAPES, ids=lambda s: "{}x{}@{},{}".format(*s))
def test_any_window_is_bit_identical_to_that_part_of_the_whole_tile(mirror, shape):
    """Rows, columns, single pixels, odd sizes and offsets: the same bits as the whole tile."""
    full = expected_grid(MIRROR_A)
    h, w, r0, c0 = shape
    r0 = full.height - h if r0 == -1 else r0
    c0 = full.width - w if c0 == -1 else c0
    st = generate_tile(MIRROR_A, YEAR, seed=0, grid=window(MIRROR_A, h, w, r0, c0))
    paths = bucket_paths("v1", YEAR, MIRROR_A)
    emb = np.load(mirror["out"] / paths["grid"], mmap_mode="r")
    sc = np.load(mirror["out"] / paths["scales"], mmap_mode="r")
    classes, _ = read_truth(mirror["out"], MIRROR_A, YEAR)
    # the part of the window inside the whole tile, in window and in tile coordinates
    a0, b0 = max(0, -r0), max(0, -c0)
    a1, b1 = min(h, full.height - r0), min(w, full.width - c0)
    assert a1 - a0 > 0 and b1 - b0 > 0, "window does not overlap the tile; the test is mis-built"
    mine = (slice(a0, a1), slice(b0, b1))
    theirs = (slice(r0 + a0, r0 + a1), slice(c0 + b0, c0 + b1))
    assert np.array_equal(st.classes[mine], classes[theirs])
    assert np.array_equal(st.data.embeddings[mine], emb[theirs])
    # bit for bit, NaN (water) included
    assert np.array_equal(st.data.scales[mine].view(np.uint32), np.asarray(sc[theirs]).view(np.uint32))


def _windows_digest() -> str:
    """SHA-256 of a few small windows (two seeds and years, land, lakes and a river)."""
    digest = hashlib.sha256()
    for name, year, seed, (h, w) in [
        ("grid_36.85_-1.25", 2024, 0, (24, 32)),
        ("grid_0.15_52.15", 2023, 3, (60, 50)),  # lakes and a river near the centre
        ("grid_25.05_65.05", 2024, 0, (1, 97)),
    ]:
        tile = Tile.from_name(name)
        st = generate_tile(tile, year, seed=seed, grid=window(tile, h, w))
        for a in (st.data.embeddings, st.data.scales, st.classes):
            digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def _cpu() -> tuple[list[str], dict[str, bool]]:
    """numpy's SIMD dispatch targets, and which CPU features it found (and may use)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    return list(__cpu_dispatch__), dict(__cpu_features__)


def _dispatched_features(avx512_only: bool) -> list[str]:
    """Dispatch targets present on this CPU: only the AVX-512 ones, or all of them."""
    targets, found = _cpu()
    return [f for f in targets if found.get(f) and (not avx512_only or "AVX512" in f or f == "X86_V4")]


@pytest.mark.parametrize("avx512_only", [True, False], ids=["without-avx512", "baseline-simd"])
def test_same_bits_with_other_simd_kernels_blas_and_threads(avx512_only):
    """A child process with numpy's AVX-512 (or all non-baseline) kernels switched off, a
    Haswell OpenBLAS kernel and one thread generates exactly the same bytes as this one."""
    features = _dispatched_features(avx512_only)
    if not features:
        pytest.skip("this CPU has no such SIMD kernels to switch off; nothing to compare")
    env = dict(os.environ)
    env.update(NPY_DISABLE_CPU_FEATURES=" ".join(features), OPENBLAS_CORETYPE="Haswell",
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parent), str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    code = (
        "import json, test_synthetic as t\n"
        f"print(json.dumps([t._windows_digest(), [t._cpu()[1][k] for k in {features!r}]]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    child_digest, still_on = json.loads(done.stdout.strip().splitlines()[-1])
    assert not any(still_on), f"the child did not switch off {features}; the test is mis-built"
    assert child_digest == _windows_digest()


def test_tile_is_the_same_whichever_region_it_is_generated_in(mirror, tmp_path):
    alone = synthesize_mirror([MIRROR_A], YEAR, tmp_path / "alone", seed=0, progress=False)
    assert alone.written == 1
    for key in ("grid", "scales", "landmask"):
        rel = bucket_paths("v1", YEAR, MIRROR_A)[key]
        assert (tmp_path / "alone" / rel).read_bytes() == (mirror["out"] / rel).read_bytes(), key
    a, _ = read_truth(tmp_path / "alone", MIRROR_A, YEAR)
    b, _ = read_truth(mirror["out"], MIRROR_A, YEAR)
    np.testing.assert_array_equal(a, b)


# --- continuity across tile edges ---------------------------------------------------------


def _edge_agreement(west: Tile, east: Tile):
    """Classes of both tiles at the same places along their shared (west|east) edge.

    Returns (agreement, west classes, east classes, (2, n) west rows/cols, west window).
    """
    gw, ge = expected_grid(west), expected_grid(east)
    h = 200
    # The west window is the east end of the west tile's grid; the east window starts 80
    # pixels west of the east tile's grid (grids are a tile's lattice, extendable), so
    # the two overlap widely even where the tiles' own grids barely do.
    w_win = window(west, h, 90, (gw.height - h) // 2, gw.width - 90)
    e_win = window(east, h + 40, 160, (ge.height - h) // 2 - 20, -80)
    a = generate_tile(west, YEAR, seed=0, grid=w_win).classes
    b = generate_tile(east, YEAR, seed=0, grid=e_win).classes
    rows, cols = np.mgrid[0:h, 0:90]
    lon, lat = pixel_to_lonlat(w_win, rows, cols)
    r, c, inside = lonlat_to_pixel(e_win, lon, lat)
    assert inside.sum() > 1000, "windows do not overlap; the test is mis-built"
    ca, cb = a[rows[inside], cols[inside]], b[r[inside], c[inside]]
    return float((ca == cb).mean()), ca, cb, np.stack([rows[inside], cols[inside]]), a


@pytest.mark.parametrize("west,east", [
    ("grid_36.75_-1.25", "grid_36.85_-1.25"),  # same UTM zone
    ("grid_5.95_45.05", "grid_6.05_45.05"),  # UTM 31N | 32N
])
def test_classes_agree_across_a_tile_edge(west, east):
    agree, ca, cb, rc, a = _edge_agreement(Tile.from_name(west), Tile.from_name(east))
    assert agree > 0.95
    # Every disagreement is at a class boundary: pixel centres of the two grids differ by
    # up to half a pixel, so the other tile's class must be within one pixel.
    padded = np.pad(a, 1, mode="edge")
    for (r, c), other in zip(rc.T[ca != cb], cb[ca != cb]):
        assert other in padded[r:r + 3, c:c + 3]


# --- scales, water, landmask --------------------------------------------------------------


def test_scale_distribution_like_real_tiles(sample):
    s = sample["scales"]
    assert valid_scales(s).all()
    median = float(np.median(s))
    assert 0.05 <= median <= 0.08
    assert 0.09 <= float(np.quantile(s, 0.999)) <= 0.15


def test_nan_scales_exactly_on_water():
    tile = Tile.from_name("grid_0.15_52.15")  # has lakes and a river near the centre
    st = generate_tile(tile, YEAR, seed=0, grid=window(tile, 400, 300))
    water = np.isin(st.classes, list(WATER_CLASSES))
    assert water.any() and (~water).any()
    np.testing.assert_array_equal(np.isnan(st.data.scales), water)
    assert valid_scales(st.data.scales[~water]).all()
    assert not st.data.embeddings[water].any()
    np.testing.assert_array_equal(st.data.landmask, (~water).astype(np.uint8))
    assert (st.classes != 0).all()


def test_channel_statistics_follow_the_reference(sample):
    from tessera_search.sources.synthetic import _reference_stats

    mean, std = _reference_stats()
    if REFERENCE_STATS.exists():  # the module's copy of the numbers is the reference file's
        ref = json.loads(REFERENCE_STATS.read_text())
        np.testing.assert_allclose(mean, ref["mean"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(std, ref["std"], rtol=0, atol=1e-5)
    x = sample["x"]
    assert np.mean(np.abs(x.mean(0) - mean) / std) < 0.15
    ratio = x.std(0) / std
    assert 0.9 < np.median(ratio) < 1.1
    assert ratio.min() > 0.7 and ratio.max() < 1.4


# --- embeddings: separable, with a confusable pair ----------------------------------------


def test_same_class_pixels_are_closer_but_not_identical(sample):
    u, c = unit(sample["x"]), sample["c"]
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(u), 50_000), rng.integers(0, len(u), 50_000)
    cos = (u[i] * u[j]).sum(1)
    same = (c[i] == c[j]) & (i != j)
    assert cos[same].mean() > cos[~same].mean() + 0.2
    assert cos[same].mean() < 0.9


def test_nearest_centroid_across_tiles_is_good_but_wheat_and_barley_get_confused(sample):
    """Train on two tiles, test on two others: high accuracy, the confusable pair is not."""
    u, c, t = unit(sample["x"]), sample["c"], sample["t"]
    train, test = t < 2, t >= 2
    classes = [k for k in np.unique(c) if (train & (c == k)).sum() >= 30]
    assert WHEAT in classes and BARLEY in classes
    centroids = unit(np.stack([sample["x"][train & (c == k)].mean(0) for k in classes]))
    pred = np.asarray(classes)[np.argmax(u[test] @ centroids.T, axis=1)]
    truth = c[test]
    known = np.isin(truth, classes)
    assert (pred[known] == truth[known]).mean() > 0.85
    pair = np.isin(truth, [WHEAT, BARLEY])
    pair_acc = (pred[pair] == truth[pair]).mean()
    assert 0.55 < pair_acc < 0.97
    confused = ((truth == WHEAT) & (pred == BARLEY)) | ((truth == BARLEY) & (pred == WHEAT))
    wrong = (pred != truth) & known
    assert confused.sum() > 0.25 * wrong.sum()  # the pair is the main source of errors
    # class means: the pair is far closer than other pairs (centred cosine)
    g = sample["x"].mean(0)
    m = {k: unit(sample["x"][c == k].mean(0) - g) for k in classes}
    pair_cos = float(m[WHEAT] @ m[BARLEY])
    others = [float(m[a] @ m[b]) for a in classes for b in classes if a < b and {a, b} != {WHEAT, BARLEY}]
    assert pair_cos > 0.75 and pair_cos > max(others) + 0.2


# --- years --------------------------------------------------------------------------------


def test_layout_mostly_stable_across_years_with_real_change():
    g = window(NAIROBI, 300, 300)
    a = generate_tile(NAIROBI, 2023, seed=0, grid=g)
    b = generate_tile(NAIROBI, 2024, seed=0, grid=g)
    water_a = np.isin(a.classes, list(WATER_CLASSES))
    np.testing.assert_array_equal(water_a, np.isin(b.classes, list(WATER_CLASSES)))
    changed = a.classes != b.classes
    assert 0.02 < changed.mean() < 0.35
    xa = unit(dequantize(a.data.embeddings, a.data.scales)[~water_a])
    xb = unit(dequantize(b.data.embeddings, b.data.scales)[~water_a])
    cos = (xa * xb).sum(1)
    ch = changed[~water_a]
    assert cos[~ch].mean() > cos[ch].mean() + 0.08  # measured: 0.81 vs 0.64
    assert not np.array_equal(a.data.embeddings, b.data.embeddings)


# --- errors -------------------------------------------------------------------------------


def test_bad_inputs_raise_typed_errors():
    with pytest.raises(InvalidInputError, match="seed"):
        generate_tile(NAIROBI, YEAR, seed=-1, grid=window(NAIROBI, 8, 8))
    with pytest.raises(InvalidInputError, match="year"):
        generate_tile(NAIROBI, 20245, grid=window(NAIROBI, 8, 8))
    with pytest.raises(InvalidInputError, match="grid_36.75_-1.25"):
        generate_tile(NAIROBI, YEAR, grid=window(Tile.from_name("grid_36.75_-1.25"), 8, 8))
    with pytest.raises(InvalidInputError, match="no tiles"):
        synthesize_mirror([], YEAR, "unused", progress=False)


def test_read_truth_of_a_missing_tile_says_what_to_run(tmp_path):
    with pytest.raises(TileNotFoundError, match="no ground truth for grid_36.85_-1.25.*synthesize"):
        read_truth(tmp_path, NAIROBI, YEAR)


# --- the mirror ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic-mirror")
    report = synthesize_mirror([MIRROR_A, MIRROR_B], YEAR, out, seed=0)
    return {"out": out, "report": report}


def test_mirror_report(mirror):
    r = mirror["report"]
    assert isinstance(r, SynthesisReport)
    assert (r.written, r.skipped, r.year, r.seed, r.tiles) == (2, 0, YEAR, 0, [MIRROR_A, MIRROR_B])
    assert r.out == mirror["out"]


def test_mirror_is_complete_and_readable(mirror):
    import pyarrow.parquet as pq
    import rasterio

    out = mirror["out"]
    table = pq.read_table(out / "npy/v1/manifest.parquet").to_pylist()
    assert len(table) == 2
    assert {row["variant"] for row in table} == {"synthetic"}
    assert {(row["lon"], row["lat"], row["year"]) for row in table} == {(25.05, 65.05, YEAR), (25.15, 65.05, YEAR)}
    for tile in (MIRROR_A, MIRROR_B):
        grid = expected_grid(tile)
        paths = bucket_paths("v1", YEAR, tile)
        emb = np.load(out / paths["grid"], mmap_mode="r")
        sc = np.load(out / paths["scales"])
        assert emb.dtype == np.int8 and emb.shape == (*grid.shape, 128)
        assert sc.dtype == np.float32 and sc.shape == grid.shape
        row = next(r for r in table if r["grid_path"] == paths["grid"])
        assert row["grid_size"] == os.path.getsize(out / paths["grid"])
        with rasterio.open(out / paths["landmask"]) as src:
            assert src.crs.to_epsg() == grid.epsg == 32635
            assert tuple(src.transform)[:6] == grid.transform
            assert (src.height, src.width) == grid.shape
            landmask = src.read(1)
            assert src.tags()["synthetic"] == "true"
        np.testing.assert_array_equal(landmask == 1, valid_scales(sc))
        classes, tgrid = read_truth(out, tile, YEAR)
        assert tgrid == grid and classes.dtype == np.uint8
        np.testing.assert_array_equal(np.isnan(sc), np.isin(classes, list(WATER_CLASSES)))
        with rasterio.open(truth_path(out, tile, YEAR)) as src:
            tags = src.tags()
            assert src.compression.name.lower() == "lzw"
            assert src.nodata == 0
        assert tags["synthetic"] == "true" and tags["seed"] == "0" and tags["year"] == str(YEAR)
        assert json.loads(tags["legend"]) == {str(k): v for k, v in CLASSES.items()}


def test_every_output_says_synthetic(mirror):
    out = mirror["out"]
    readme = (out / "SYNTHETIC.md").read_text()
    assert "SYNTHETIC" in readme and "not** TESSERA output" in readme
    assert "seed: 0" in readme and MIRROR_A.name in readme and str(YEAR) in readme
    for name in CLASSES.values():
        assert f"| {name} |" in readme
    state = json.loads((out / "synthetic.json").read_text())
    assert state["synthetic"] is True and state["seed"] == 0
    assert state["years"][str(YEAR)] == sorted([MIRROR_A.name, MIRROR_B.name])


def test_resume_skips_complete_tiles_and_redoes_missing_ones(mirror):
    out = mirror["out"]
    npy = out / bucket_paths("v1", YEAR, MIRROR_A)["grid"]
    before = npy.stat().st_mtime_ns
    again = synthesize_mirror([MIRROR_A, MIRROR_B], YEAR, out, seed=0, progress=False)
    assert (again.written, again.skipped) == (0, 2)
    assert npy.stat().st_mtime_ns == before
    truth = truth_path(out, MIRROR_B, YEAR)
    truth.unlink()
    redo = synthesize_mirror([MIRROR_A, MIRROR_B], YEAR, out, seed=0, progress=False)
    assert (redo.written, redo.skipped) == (1, 1)
    assert truth.exists()


def test_refuses_to_mix_seeds_or_real_data(mirror, tmp_path):
    with pytest.raises(InvalidInputError, match="seed=0"):
        synthesize_mirror([MIRROR_A], YEAR, mirror["out"], seed=1, progress=False)
    real = tmp_path / "real"
    (real / "npy/v1").mkdir(parents=True)
    (real / "npy/v1/manifest.parquet").write_bytes(b"")
    with pytest.raises(InvalidInputError, match="not synthetic"):
        synthesize_mirror([MIRROR_A], YEAR, real, seed=0, progress=False)
