"""The zarr tile store, the catalog, and quantization maths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tessera_search.catalog import Catalog
from tessera_search.errors import TileNotFoundError
from tessera_search.grid import Tile
from tessera_search.quant import dequantize, per_pixel_from_per_channel, quantize, valid_scales
from tessera_search.store import TileStore

from _helpers import small_tile


def test_write_read_roundtrip_is_exact(home):
    data = small_tile("grid_36.85_-1.25")
    store = TileStore(home)
    attrs = store.write(data)
    assert store.has(data.tile, 2023)
    back = store.read(data.tile, 2023)
    np.testing.assert_array_equal(back.embeddings, data.embeddings)
    # NaN, inf, sentinels and negatives are kept bit for bit, as published
    np.testing.assert_array_equal(back.scales.view(np.uint32), data.scales.view(np.uint32))
    assert back.grid == data.grid
    assert attrs["crs"] == "EPSG:32737"
    valid = store.read_valid(data.tile, 2023)
    np.testing.assert_array_equal(valid, valid_scales(data.scales))
    assert not valid[0, 5] and not valid[1, 5] and not valid[2, 5] and not valid[3, 5]
    assert attrs["n_valid"] == int(valid.sum())


def test_read_pixels_matches_whole_tile(home):
    data = small_tile("grid_36.85_-1.25", height=70, width=75)
    store = TileStore(home)
    store.write(data)
    rng = np.random.default_rng(1)
    rows, cols = rng.integers(0, 70, 200), rng.integers(0, 75, 200)
    q, s = store.read_pixels(data.tile, 2023, rows, cols)
    np.testing.assert_array_equal(q, data.embeddings[rows, cols])
    np.testing.assert_array_equal(s.view(np.uint32), data.scales[rows, cols].view(np.uint32))
    with pytest.raises(IndexError):
        store.read_pixels(data.tile, 2023, [70], [0])


def test_missing_tile_error_names_the_command(home):
    with pytest.raises(TileNotFoundError, match="tessera-search download --tile grid_1.05_1.05"):
        TileStore(home).read(Tile.from_name("grid_1.05_1.05"), 2023)


def test_interrupted_write_leaves_nothing_visible(home, monkeypatch):
    import zarr

    data = small_tile("grid_36.85_-1.25")
    store = TileStore(home)
    real = zarr.Group.create_array
    calls = []

    def failing(self, name, *args, **kwargs):
        calls.append(name)
        if name == "scales":
            raise OSError("disk full")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(zarr.Group, "create_array", failing)
    with pytest.raises(OSError):
        store.write(data)
    assert calls == ["embeddings", "scales"]
    assert not store.has(data.tile, 2023)
    assert store.list() == []
    assert not (store.root / "2023" / data.tile.name).exists()
    monkeypatch.setattr(zarr.Group, "create_array", real)
    store.write(data)  # a rerun completes
    assert store.list() == [(data.tile, 2023)]


def test_catalog_records_and_summarises(home):
    store, cat = TileStore(home), Catalog(home)
    for name in ("grid_36.85_-1.25", "grid_36.75_-1.25"):
        cat.record_tile(store.write(small_tile(name)))
    cat.record_tile(store.write(small_tile("grid_36.85_-1.25")))  # replace, not duplicate
    rows = cat.tiles(2023)
    assert [r["tile"] for r in rows] == ["grid_36.75_-1.25", "grid_36.85_-1.25"]
    summary = cat.tile_summary()
    assert summary[0]["tiles"] == 2 and summary[0]["valid_pixels"] == sum(r["n_valid"] for r in rows)
    qid = cat.record_query("idx", np.arange(128, dtype=np.float32) / 7, {"k": 10}, 10)
    got = cat.query(qid)
    np.testing.assert_array_equal(np.array(got["vector"], dtype=np.float32), np.arange(128, dtype=np.float32) / 7)
    assert got["params"] == {"k": 10}


finite = st.floats(-50, 50, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 6), st.just(128)), elements=finite))
def test_quantize_roundtrip_error_within_half_a_step(x):
    q, s = quantize(x)
    assert q.dtype == np.int8 and s.dtype == np.float32
    back = dequantize(q, s)
    assert np.all(np.abs(back - x) <= s[:, None] * 0.5 + 1e-6 * np.abs(x) + 1e-7)
    assert np.all(np.abs(q).max(axis=1)[np.abs(x).max(axis=1) > 1e-6] == 127)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 5), st.just(128)), elements=finite))
def test_cosine_on_int8_equals_cosine_on_dequantized(x):
    q, s = quantize(x)
    deq = dequantize(q, s)
    qf = q.astype(np.float64)
    ok = np.linalg.norm(qf, axis=1) > 0
    a = qf[ok] / np.linalg.norm(qf[ok], axis=1, keepdims=True)
    b = deq[ok].astype(np.float64) / np.linalg.norm(deq[ok].astype(np.float64), axis=1, keepdims=True)
    np.testing.assert_allclose(a, b, atol=1e-6)


@given(st.floats(allow_nan=True, allow_infinity=True, width=32))
def test_scale_validity_rule(s):
    expected = bool(np.isfinite(s) and 0 < s < 1.0)
    assert bool(valid_scales(np.float32(s))) is expected


def test_dequantize_invalid_scale_gives_nan_rows():
    q = np.ones((3, 128), np.int8)
    out = dequantize(q, np.array([0.05, np.nan, 3.4e38], np.float32))
    assert np.allclose(out[0], 0.05)
    assert np.isnan(out[1]).all() and np.isnan(out[2]).all()


def test_per_channel_scales_become_per_pixel():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 2, (4, 5, 128)).astype(np.float32)
    sc = np.abs(x).max(axis=(0, 1)) / 127
    q = np.clip(np.rint(x / sc), -128, 127).astype(np.int8)
    scales = np.broadcast_to(sc, x.shape).copy()
    scales[0, 0, 3] = np.nan
    q2, s2 = per_pixel_from_per_channel(q, scales)
    assert np.isnan(s2[0, 0]) and valid_scales(s2[1:]).all()
    np.testing.assert_allclose(dequantize(q2, s2)[1:], (q * sc)[1:], atol=float(s2[1:].max()))


# -- staging debris ----------------------------------------------------------------------
_WRITER = r"""
import os, signal, sys
import zarr
from _helpers import small_tile
from tessera_search.store import TileStore

home, tile, mode = sys.argv[1:4]
real = zarr.Group.create_array

def paused(self, name, *args, **kwargs):
    if name == "scales":  # the embeddings are in the staging folder, the tile is not yet stored
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        print("paused", flush=True)
        sys.stdin.readline()
    return real(self, name, *args, **kwargs)

if mode != "write":
    zarr.Group.create_array = paused
TileStore(home).write(small_tile(tile))
print("done", flush=True)
"""


def _writer(home, tile, mode):
    """Another process writing ``tile``: ``kill`` dies mid-write (SIGKILL), ``pause`` waits
    mid-write for a line on stdin, ``write`` just writes."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.Popen([sys.executable, "-c", _WRITER, str(home), tile, mode], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _staged(home, tile):
    """Staging debris of ``tile``'s write anywhere under <home>/tmp."""
    return [p for p in (home / "tmp").rglob(f".{tile}.*")] if (home / "tmp").exists() else []


def test_next_write_removes_staging_of_killed_writers_but_not_of_live_ones(home):
    dead, live, mine = "grid_36.75_-1.35", "grid_36.75_-1.25", "grid_36.85_-1.25"
    killed = _writer(home, dead, "kill")
    assert killed.wait(120) == -9
    assert _staged(home, dead), "the killed writer left its staging behind"
    running = _writer(home, live, "pause")
    try:
        assert running.stdout.readline().strip() == "paused"
        assert _staged(home, live)
        store = TileStore(home)
        store.write(small_tile(mine))  # the next write, here, clears the dead writer's debris
        assert not _staged(home, dead)
        assert _staged(home, live), "a running writer's staging was removed"
        store.clean_staging()
        assert _staged(home, live)
        running.stdin.write("\n")
        running.stdin.flush()
        assert running.stdout.readline().strip() == "done"  # its write still completes
    finally:
        running.stdin.close()
        assert running.wait(120) == 0
        running.stdout.close()
        killed.stdout.close()
        killed.stdin.close()
    assert sorted(t.name for t, _ in store.list()) == [live, mine]
    assert not store.has(Tile.from_name(dead), 2023)
    # our own staging folder survives another process's sweep, and the finished one's goes
    ours = [p for p in (home / "tmp").iterdir() if p.name.startswith(f"{os.getpid()}-")]
    assert len(ours) == 1
    sweeper = _writer(home, "grid_36.85_-1.35", "write")
    assert sweeper.wait(120) == 0
    sweeper.stdout.close()
    sweeper.stdin.close()
    left = sorted(p.name for p in (home / "tmp").iterdir())
    assert ours[0].name in left and len(left) == 2, left  # ours, and the sweeper's (gone, swept next time)
    store.write(small_tile(mine))
    assert [p.name for p in (home / "tmp").iterdir()] == [ours[0].name]
