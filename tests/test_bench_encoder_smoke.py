"""The encoder benchmark still runs: ``benchmarks/bench_encoder.py --tiny`` in a
subprocess (as it is run by hand), with the real v1.0 model size and random weights."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_encoder.py"


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed (the [encoder] extra)")
def test_bench_encoder_tiny_run_writes_sane_json(tmp_path):
    out = tmp_path / "bench_encoder.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--tiny", "--threads", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| batch size | pixels/s | ms/batch |" in proc.stdout
    doc = json.loads(out.read_text())
    assert {"machine", "date", "torch", "config", "parameters", "threads", "device", "results"} <= set(doc)
    assert doc["config"] == "v1.0" and doc["threads"] == 1 and doc["parameters"] > 1_000_000
    assert [r["batch_size"] for r in doc["results"]] == [1, 2]
    for r in doc["results"]:
        assert r["batches"] >= 1
        assert r["pixels_per_s"] > 0 and r["ms_per_batch"] > 0
        assert r["pixels_per_s"] == pytest.approx(r["batch_size"] * 1000 / r["ms_per_batch"])
