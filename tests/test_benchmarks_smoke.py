"""The benchmarks still run: each at its tiniest size, as a subprocess (as a person runs it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_label_runs_tiny(tmp_path):
    pytest.importorskip("sklearn")  # the reference it measures against (dev extra)
    out = tmp_path / "bench_label.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_label.py"), "--size", "48", "--repeat", "1",
         "--backend", "numpy", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["backend"] == "numpy" and doc["tiles"] == 4 and 0 < doc["pixels"] <= 4 * 48 * 48
    assert [r["weights"] for r in doc["runs"]] == ["uniform", "distance"]
    for run in doc["runs"]:
        assert run["agreement"] >= 0.99, run  # the same rule as scikit-learn
    assert doc["end_to_end"]["pixels"] == doc["pixels"]
    assert doc["end_to_end"]["accuracy_vs_truth"] > 0.5
