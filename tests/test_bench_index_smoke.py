"""The index benchmark still runs: ``benchmarks/bench_index.py --tiny`` end to end, on a
few 100 x 100 windows of synthetic tiles, in a subprocess (as it is run by hand)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_index.py"


def test_bench_index_tiny_run_writes_sane_json(tmp_path):
    work = tmp_path / "bench"
    proc = subprocess.run([sys.executable, str(BENCH), "--tiny", "--work", str(work)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| recall@1000 ours / bare faiss |" in proc.stdout
    doc = json.loads((work / "bench_index.json").read_text())
    assert {"machine", "date", "results"} <= set(doc)
    (r,) = doc["results"]
    assert {"data", "build", "exact", "ours", "bare", "n_vectors"} <= set(r)
    assert r["data"]["window"] == 100 and len(r["data"]["tiles"]) >= 2
    assert r["build"]["n_vectors"] == r["exact"]["n"] == r["n_vectors"] > 10_000
    for phase in ("ours", "bare"):
        for key in ("recall10", "recall1000"):
            assert 0.0 <= r[phase][key] <= 1.0, (phase, key, r[phase][key])
    assert r["ours"]["recall1000"] >= 0.9  # exact re-rank: near-perfect on this small index
    for phase, key in [("exact", "median_s"), ("ours", "median_s"), ("ours", "p95_s"), ("ours", "first_median_s"),
                       ("ours", "e2e_median_s"), ("bare", "median_s"), ("build", "throughput"),
                       ("bare", "throughput")]:
        assert r[phase][key] > 0, (phase, key)
    for phase in ("data", "build", "exact", "ours", "bare"):
        assert r[phase]["peak_rss"] > 0
    assert r["ours"]["nprobe"] >= 1 and r["build"]["factory"].startswith("IVF")
