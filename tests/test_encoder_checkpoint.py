"""Checkpoint loading: official keys, prefixes, strictness, no pickled code, round trips."""

from __future__ import annotations

from pathlib import Path

from _helpers import SHARED

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tessera_search.encoder.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint  # noqa: E402
from tessera_search.encoder.config import get_config  # noqa: E402
from tessera_search.encoder.model import ProjectionHead, TesseraEncoder  # noqa: E402
from tessera_search.errors import CheckpointError  # noqa: E402

FIX = SHARED / Path("reference/encoder-fixtures")
SMALL = get_config("v1.0", d_model=32, n_heads=2, n_layers=1, dim_feedforward=64)


def _official(path: Path, sd: dict, top: str = "model_state_dict") -> Path:
    torch.save({"epoch": 0, "step": 0, top: sd, "config": {"nhead": 2}}, path)
    return path


def _small_sd(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return TesseraEncoder(SMALL).state_dict()


@pytest.mark.skipif(not FIX.exists(), reason="encoder fixtures not available")
def test_every_fixture_checkpoint_loads_with_inferred_sizes():
    a = load_checkpoint(FIX / "v1_0_small" / "checkpoint.pt")
    b = load_checkpoint(FIX / "v1_0_small" / "checkpoint_orig_mod_prefix.pt")
    c = load_checkpoint(FIX / "v1_1_small" / "checkpoint.pt")
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    assert (a.config.d_model, a.config.n_heads, a.config.n_layers, a.config.dim_feedforward) == (64, 2, 2, 128)
    assert (c.config.reducer_hidden, c.config.out_dim, c.config.save_dim) == (256, 192, 128)
    assert not a.training and not any(p.requires_grad for p in a.parameters())


def test_missing_unexpected_and_mismatched_keys_are_named(tmp_path):
    sd = _small_sd()
    bad = dict(sd)
    bad.pop("s1_backbone.attn_pool.query.bias")
    with pytest.raises(CheckpointError, match=r"missing keys.*s1_backbone\.attn_pool\.query\.bias"):
        load_checkpoint(_official(tmp_path / "m.pt", bad), config=SMALL)
    bad = dict(sd, **{"s2_backbone.extra.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"unexpected keys.*s2_backbone\.extra\.weight"):
        load_checkpoint(_official(tmp_path / "u.pt", bad), config=SMALL)
    bad = dict(sd, **{"dim_reducer.0.bias": torch.zeros(7)})
    with pytest.raises(CheckpointError, match=r"dim_reducer\.0\.bias \(7,\) != \(128,\)"):
        load_checkpoint(_official(tmp_path / "s.pt", bad), config=SMALL)
    with pytest.raises(CheckpointError, match="model_state_dict"):
        torch.save({"weights": sd}, tmp_path / "n.pt")
        load_checkpoint(tmp_path / "n.pt")
    # v1.1 sizes asked for, v1.0 file given: shapes named
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(_official(tmp_path / "ok.pt", sd), config=SMALL.with_(d_model=64))


def test_training_keys_ignored_prefix_stripped_model_state_preferred(tmp_path):
    sd = _small_sd(1)
    proj = ProjectionHead(128, 16, 8, n_hidden=2).state_dict()
    noisy = {f"_orig_mod.{k}": v for k, v in sd.items()}
    noisy.update({f"projector.{k}": v for k, v in proj.items()})
    noisy["segmented_matryoshka_projector.w"] = torch.zeros(2)
    torch.save({"model_state": noisy, "model_state_dict": {"junk": torch.zeros(1)}, "config": {"nhead": 2}}, tmp_path / "c.pt")
    m = load_checkpoint(tmp_path / "c.pt")
    for k, v in m.state_dict().items():
        assert torch.equal(v, sd[k])


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(_Evil.target),))


def test_pickled_code_never_runs(tmp_path):
    _Evil.target = str(tmp_path / "pwned")
    torch.save({"model_state_dict": _small_sd(), "payload": _Evil()}, tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(CheckpointError, match="weights_only"):
        read_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "trunc.pt").write_bytes((tmp_path / "evil.pt").read_bytes()[:100])
    with pytest.raises(CheckpointError):
        read_checkpoint(tmp_path / "trunc.pt")


def test_save_load_round_trip_same_outputs(tmp_path):
    torch.manual_seed(2)
    model = TesseraEncoder(get_config("v1.1", d_model=32, n_heads=2, n_layers=1, dim_feedforward=48, reducer_hidden=64)).eval()
    proj = ProjectionHead(192, 16, 8, n_hidden=1)
    path = save_checkpoint(tmp_path / "x.pt", model, epoch=3, step=10, projector=proj)
    raw = torch.load(path, weights_only=True)
    assert {"epoch", "step", "model_state_dict", "config"} <= set(raw)
    assert any(k.startswith("projector.") for k in raw["model_state_dict"])
    back = load_checkpoint(path)
    assert back.config == model.config
    s2 = torch.randn(4, 9, 11)
    s1 = torch.randn(4, 5, 3)
    with torch.no_grad():
        assert np.array_equal(model(s2, s1).numpy(), back(s2, s1).numpy())
