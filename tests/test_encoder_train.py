"""Training as the paper: a short CPU run on synthetic series learns something a kNN probe sees."""

from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tessera_search.encoder.checkpoint import load_checkpoint  # noqa: E402
from tessera_search.encoder.config import get_config  # noqa: E402
from tessera_search.encoder.data import load_tile_dir  # noqa: E402
from tessera_search.encoder.infer import encode_tile  # noqa: E402
from tessera_search.encoder.model import TesseraEncoder  # noqa: E402
from tessera_search.encoder.synthetic_series import CLASSES, generate_tile, write_synthetic_tiles  # noqa: E402
from tessera_search.encoder.train import (  # noqa: E402
    PixelPool,
    TrainConfig,
    barlow_twins_loss,
    knn_probe,
    mix_regularizer,
    train,
)
from tessera_search.quant import dequantize  # noqa: E402

ENC = get_config("v1.0", d_model=32, n_heads=2, n_layers=1, dim_feedforward=64, out_dim=32, save_dim=32,
                 sample_size_s2=12, sample_size_s1=8)



def _cfg(**kw) -> TrainConfig:
    base = dict(encoder=ENC, steps=50, batch_size=128, lr=3e-3, warmup_steps=10, projector_hidden=128,
                projector_out=128, projector_layers=2, sample_size_s2=12, sample_size_s1=8, checkpoint_every=0)
    base.update(kw)
    return TrainConfig(**base)


def _probe_features(model, tiles):
    xs, ys = [], []
    for t in tiles:
        res = encode_tile(load_tile_dir(t), model, batch_size=512)
        xs.append(dequantize(res.embeddings, res.scales).reshape(-1, res.embeddings.shape[-1]))
        ys.append(np.load(t / "labels.npy").reshape(-1))
    return np.concatenate(xs), np.concatenate(ys)


def test_synthetic_series_look_like_the_official_layout():
    a = generate_tile(5, 8, 8)
    t = a["bands"].shape[0]
    assert a["bands"].dtype == np.uint16 and a["bands"].shape == (t, 8, 8, 10)
    assert a["masks"].shape == (t, 8, 8) and 0.3 < a["masks"].mean() < 0.95  # clouds
    assert np.all(np.diff(a["doys"].astype(int)) > 0) and len(set(np.diff(a["doys"].astype(int)))) > 1  # irregular
    assert a["sar_ascending"].dtype == np.int16 and a["labels"].max() < len(CLASSES)


def test_short_cpu_training_learns(tmp_path):
    t0 = time.perf_counter()
    write_synthetic_tiles(tmp_path / "train", n_tiles=6, height=16, width=16, seed=1)
    probe = write_synthetic_tiles(tmp_path / "probe", n_tiles=2, height=16, width=16, seed=2)
    res = train(tmp_path / "train", tmp_path / "out", _cfg(), device="cpu")
    assert res.step == 50 and res.n_tiles == 6 and res.checkpoint.exists()
    first, last = np.mean(res.losses[:3]), np.mean(res.losses[-10:])
    assert last < 0.5 * first, (first, last)
    trained = load_checkpoint(res.checkpoint)
    torch.manual_seed(0)
    random_init = TesseraEncoder(ENC).eval()
    x, y = _probe_features(trained, probe)
    x0, _ = _probe_features(random_init, probe)
    half = len(y) // 2  # fit on one probe tile, test on the other
    acc = knn_probe(x[:half], y[:half], x[half:], y[half:])
    acc0 = knn_probe(x0[:half], y[:half], x0[half:], y[half:])
    assert acc > acc0 + 0.05, (acc, acc0)
    assert time.perf_counter() - t0 < 60


def test_resume_continues_the_same_run(tmp_path):
    write_synthetic_tiles(tmp_path / "d", n_tiles=2, height=8, width=8, seed=3)
    cfg = _cfg(steps=4, batch_size=32, warmup_steps=2)
    straight = train(tmp_path / "d", tmp_path / "a", cfg, device="cpu")
    train(tmp_path / "d", tmp_path / "b", _cfg(steps=2, batch_size=32, warmup_steps=2), device="cpu")
    resumed = train(tmp_path / "d", tmp_path / "b", cfg, resume=tmp_path / "b" / "checkpoint_last.pt", device="cpu")
    assert resumed.step == 4 and len(resumed.losses) == 4
    np.testing.assert_allclose(resumed.losses, straight.losses, rtol=1e-4)
    raw = torch.load(resumed.checkpoint, weights_only=True)
    assert raw["step"] == 4 and "optimizer_state_dict" in raw and any(k.startswith("projector.") for k in raw["model_state_dict"])


def test_global_shuffling_mixes_tiles(tmp_path):
    write_synthetic_tiles(tmp_path / "d", n_tiles=4, height=8, width=8, seed=4)
    pool = PixelPool(tmp_path / "d", min_valid=1, seed=0)
    n = len(pool)
    first = pool.indices(0, 32)
    assert len(np.unique(first[:, 0])) == 4  # one batch draws on every tile
    # consecutive pixels of a batch are not raster neighbours
    assert np.mean(np.abs(np.diff(first[:, 1])) <= 1) < 0.2
    epoch = np.concatenate([pool.indices(s, 16) for s in range(n // 16)])
    assert len({tuple(r) for r in epoch}) == (n // 16) * 16  # an epoch visits pixels without repeats


def test_losses_behave():
    torch.manual_seed(0)
    z = torch.randn(256, 16)
    assert barlow_twins_loss(z, z, 5e-3) < barlow_twins_loss(z, torch.randn(256, 16), 5e-3)
    zb = z + 0.1 * torch.randn(256, 16)
    perm = torch.randperm(256)
    assert mix_regularizer(z, z, zb, perm, 1.0, 5e-3, 1.0) < 1e-6  # a = 1: the mix is view A itself
    assert mix_regularizer(torch.randn(256, 16), z, zb, perm, 0.5, 5e-3, 1.0) > 1e-3
