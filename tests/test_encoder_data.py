"""Encoder inputs and outputs on real data: the WorldCereal datacube and the Tanzania GeoTIFFs.

Models here are small and randomly initialised (the point is the data path and the
release layout, not the numbers). The written mirror is read back with the layout's own
paths, numpy and rasterio.
"""

from __future__ import annotations

from pathlib import Path

from _helpers import SHARED

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("xarray")
rasterio = pytest.importorskip("rasterio")

from affine import Affine  # noqa: E402

from tessera_search.encoder.config import get_config  # noqa: E402
from tessera_search.encoder.data import encode_s1_db, load_datacube, load_geotiff_stack, scl_to_mask  # noqa: E402
from tessera_search.encoder.infer import encode  # noqa: E402
from tessera_search.errors import InvalidInputError  # noqa: E402
from tessera_search.grid import Tile, pixel_to_lonlat  # noqa: E402
from tessera_search.quant import valid_scales  # noqa: E402
from tessera_search.sources.layout import bucket_paths  # noqa: E402

DATA = SHARED / Path("data/worldcereal")
CUBE = DATA / "belgium_patch_2020-2021.nc"
TZ = DATA / "s2_tanzania_36MXB"
FIX = SHARED / Path("reference/encoder-fixtures")
TINY_V10 = get_config("v1.0", d_model=32, n_heads=2, n_layers=1, dim_feedforward=64)
TINY_V11 = get_config("v1.1", d_model=32, n_heads=2, n_layers=1, dim_feedforward=64, reducer_hidden=64)
needs_data = pytest.mark.skipif(not CUBE.exists(), reason="shared real data not available")



def read_back(out: Path, version: str, year: int, tile_name: str):
    """The written tile through the layout's paths: (emb, scales, rasterio profile)."""
    import pyarrow.parquet as pq

    paths = bucket_paths(version, year, Tile.from_name(tile_name))
    emb = np.load(out / paths["grid"])
    scales = np.load(out / paths["scales"])
    with rasterio.open(out / paths["landmask"]) as src:
        prof = {"crs": src.crs, "transform": src.transform, "shape": src.shape, "mask": src.read(1)}
    manifest = pq.read_table(out / paths["manifest"]).to_pylist()
    assert [(r["year"], r["directory"]) for r in manifest] == [(year, paths["directory"])]
    return emb, scales, prof


def test_s1_encoding_and_scl():
    assert encode_s1_db(np.array([-11.3, np.nan, -40.0])).tolist() == [5480, 0, 0]
    assert scl_to_mask(np.arange(12)).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1]


@needs_data
def test_datacube_missing_band_fails_clearly_then_substitutes():
    with pytest.raises(InvalidInputError, match=r"lacks Sentinel-2 band B8A.*substitute_bands=B8A="):
        load_datacube(CUBE)
    t = load_datacube(CUBE, substitute={"B8A": "B08"})
    assert t.bands.shape == (12, 100, 100, 10) and t.bands.dtype == np.uint16
    assert np.array_equal(t.bands[..., 4], t.bands[..., 3])  # B8A slot holds B08
    assert t.grid.epsg == 32631 and t.grid.transform[0] == 10.0 and t.grid.transform[4] == -10.0
    assert t.year == 2021 and t.doys[0] == 306  # 2020-11-01: the time axis is sorted by date
    lon, lat = pixel_to_lonlat(t.grid, 50, 50)
    assert t.grid.tile.bounds[0] <= lon < t.grid.tile.bounds[2] and t.grid.tile.bounds[1] <= lat < t.grid.tile.bounds[3]
    # ~17 % of S2 values are 65535 no data: the mask drops those observations, bands there are 0
    assert 0.5 < t.masks.mean() < 0.95
    assert not t.bands[t.masks == 0].any()
    vv = t.sar_asc[..., 0][t.sar_asc[..., 0] > 0]
    assert 3000 < np.median(vv) < 8000  # VV around -11 dB on the official scale (mean 5484)


@needs_data
def test_datacube_encodes_to_a_release_tile(tmp_path):
    res = encode(CUBE, tmp_path / "m", config=TINY_V10, substitute={"B8A": "B08"}, device="cpu", batch_size=512)
    assert res.ingestible and res.version == "v1" and res.year == 2021
    emb, scales, prof = read_back(tmp_path / "m", "v1", 2021, res.tile)
    assert emb.shape == (100, 100, 128) and emb.dtype == np.int8 and scales.dtype == np.float32
    assert prof["crs"].to_epsg() == 32631 and prof["shape"] == (100, 100)
    t = load_datacube(CUBE, substitute={"B8A": "B08"})
    assert tuple(prof["transform"])[:6] == t.grid.transform
    has_obs = (t.masks != 0).any(axis=0)
    assert np.array_equal(valid_scales(scales), has_obs)  # no observation -> no data, never a vector
    assert np.all(np.isnan(scales[~has_obs])) and not emb[~has_obs].any()
    assert np.array_equal(prof["mask"], has_obs.astype(np.uint8))
    assert np.abs(emb[has_obs]).max(axis=-1).min() == 127


@needs_data
def test_tanzania_geotiffs_encode_without_s1(tmp_path):
    t = load_geotiff_stack(TZ, substitute={"B8A": "B08"})
    assert t.bands.shape == (21, 6, 6, 10) and t.sar_asc.shape[0] == 0 and t.sar_desc.shape[0] == 0
    assert t.grid.epsg == 32736 and t.grid.transform == (10.0, 0.0, 661440.0, 0.0, -10.0, 9648860.0)
    assert np.all(np.diff(t.doys[:14]) > 0)
    assert any("no S1" in n for n in t.notes)
    for cfg, version in ((TINY_V10, "v1"), (TINY_V11, "v1.1")):
        res = encode(TZ, tmp_path / version, config=cfg, substitute={"B8A": "B08"}, device="cpu")
        emb, scales, prof = read_back(tmp_path / version, version, res.year, res.tile)
        assert res.tile == "grid_34.45_-3.15" and emb.shape == (6, 6, 128) and prof["crs"].to_epsg() == 32736
        assert valid_scales(scales).sum() == (t.masks != 0).any(axis=0).sum()


@pytest.mark.skipif(not FIX.exists(), reason="encoder fixtures not available")
def test_official_layout_georeferencing_options(tmp_path):
    tile_dir = FIX / "tiles" / "synthetic_tile_a"
    ckpt = FIX / "v1_0_small" / "checkpoint.pt"
    bare = encode(tile_dir, tmp_path / "bare", weights=ckpt, device="cpu")
    assert not bare.ingestible and any("cannot be ingested" in n for n in bare.notes)
    assert np.load(tmp_path / "bare" / "synthetic_tile_a.npy").shape == (9, 8, 128)
    with pytest.raises(InvalidInputError, match="grid is"):
        encode(tile_dir, tmp_path / "t", weights=ckpt, tile="grid_0.15_52.05", year=2024, device="cpu")
    ref = tmp_path / "ref.tif"
    with rasterio.open(ref, "w", driver="GTiff", height=9, width=8, count=1, dtype="uint8", crs="EPSG:32631",
                       transform=Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5770000.0)) as dst:
        dst.write(np.ones((1, 9, 8), np.uint8))
    no_year = encode(tile_dir, tmp_path / "ny", weights=ckpt, reference=ref, device="cpu")
    assert not no_year.ingestible and any("no year" in n for n in no_year.notes)
    res = encode(tile_dir, tmp_path / "r", weights=ckpt, reference=ref, year=2024, device="cpu")
    assert res.ingestible and res.version == "v1"
    emb, scales, prof = read_back(tmp_path / "r", "v1", 2024, res.tile)
    ref_q = np.load(FIX / "v1_0_small" / "pipeline_out" / "synthetic_tile_a.npy")
    ok = valid_scales(scales)
    assert ok.sum() == 64 and np.abs(emb[ok].astype(int) - ref_q[ok]).max() <= 1
    assert tuple(prof["transform"])[:6] == (10.0, 0.0, 500000.0, 0.0, -10.0, 5770000.0)
