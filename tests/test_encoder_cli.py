"""The encode / train commands: set up with the library, act through the CLI, check with the library."""

from __future__ import annotations

import sys
from pathlib import Path

from _helpers import SHARED

import numpy as np
import pytest

from tessera_search.cli import main

FIX = SHARED / Path("reference/encoder-fixtures")
CUBE = SHARED / Path("data/worldcereal/belgium_patch_2020-2021.nc")



def test_help_lists_encoder_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "encode" in out and "train" in out
    assert main(["encode", "--help"]) == 0
    out = capsys.readouterr().out
    for opt in ("--input", "--out", "--weights", "--config", "--batch-size", "--device", "--substitute-band", "--reference", "--tile"):
        assert opt in out
    assert main(["train", "--help"]) == 0
    assert "--projector-dim" in capsys.readouterr().out


def test_missing_torch_names_the_install_line(monkeypatch):
    from tessera_search.encoder.infer import require_torch
    from tessera_search.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingDependencyError, match=r"pip install torch==2\.13\.0"):
        require_torch()


@pytest.mark.skipif(not FIX.exists(), reason="encoder fixtures not available")
def test_encode_official_tile_with_tile_reference(tmp_path, capsys):
    pytest.importorskip("torch")
    import rasterio
    from affine import Affine

    ref = tmp_path / "ref.tif"
    with rasterio.open(ref, "w", driver="GTiff", height=9, width=8, count=1, dtype="uint8", crs="EPSG:32631",
                       transform=Affine(10.0, 0.0, 360000.0, 0.0, -10.0, 5780000.0)) as dst:
        dst.write(np.ones((1, 9, 8), np.uint8))
    code = main(["encode", "--input", str(FIX / "tiles" / "synthetic_tile_a"), "--out", str(tmp_path / "m"),
                 "--weights", str(FIX / "v1_0_small" / "checkpoint_orig_mod_prefix.pt"), "--reference", str(ref),
                 "--year", "2024", "--device", "cpu", "--batch-size", "16", "--json"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    import json

    res = json.loads(cap.out)
    assert res["ingestible"] and res["n_embedded"] == 64
    emb = np.load(tmp_path / "m" / res["paths"]["grid"])
    want = np.load(FIX / "v1_0_small" / "pipeline_out" / "synthetic_tile_a.npy")
    assert np.abs(emb[:8].astype(int) - want[:8]).max() <= 1


@pytest.mark.skipif(not CUBE.exists(), reason="shared real data not available")
def test_encode_missing_band_is_an_error_with_the_fix(tmp_path, capsys):
    pytest.importorskip("xarray")
    code = main(["encode", "--input", str(CUBE), "--out", str(tmp_path / "m"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "InvalidInputError" in err and "B8A" in err and "--substitute-band" in err
    assert main(["encode", "--input", str(CUBE), "--out", str(tmp_path / "m"), "--substitute-band", "B8A"]) == 2
    assert "MISSING=USE" in capsys.readouterr().err


@pytest.mark.skipif(not FIX.exists(), reason="encoder fixtures not available")
def test_encode_bad_checkpoint_is_a_checkpoint_error(tmp_path, capsys):
    pytest.importorskip("torch")
    code = main(["encode", "--input", str(FIX / "tiles" / "synthetic_tile_a"), "--out", str(tmp_path / "m"),
                 "--weights", str(FIX / "v1_0_small" / "checkpoint.pt"), "--config", "v1.1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "CheckpointError" in err and "--config v1.0" in err


def test_train_cli_runs_and_resumes(tmp_path, capsys):
    pytest.importorskip("torch")
    from tessera_search.encoder.synthetic_series import write_synthetic_tiles

    write_synthetic_tiles(tmp_path / "d", n_tiles=2, height=6, width=6, seed=9)
    args = ["train", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--d-model", "16", "--heads", "2",
            "--layers", "1", "--ffn", "32", "--batch-size", "16", "--projector-dim", "32", "--projector-layers", "1",
            "--sample-size", "6", "--warmup", "1", "--device", "cpu", "--json"]
    assert main([*args, "--steps", "2"]) == 0
    assert '"step": 2' in capsys.readouterr().out
    ckpt = tmp_path / "o" / "checkpoint_last.pt"
    assert main([*args, "--steps", "3", "--resume", str(ckpt)]) == 0
    assert '"step": 3' in capsys.readouterr().out
    assert main(["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]) == 2
    assert "InvalidInputError" in capsys.readouterr().err
