"""The index benchmark still runs: ``benchmarks/bench_index.py --tiny`` end to end, on a
few 100 x 100 windows of the synthetic landscape, in a subprocess (as it is run by hand),
and its report writes the generated part of a copy of docs/benchmarks.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_index.py"


def test_bench_index_tiny_run_writes_sane_json(tmp_path):
    work = tmp_path / "bench"
    proc = subprocess.run([sys.executable, str(BENCH), "--tiny", "--work", str(work)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| **recall@1000** ours (k = 1000) |" in proc.stdout
    assert "| cold query's reads alone" in proc.stdout and "| disk read GB/s by request size" in proc.stdout
    (path,) = work.glob("results-*.json")
    r = json.loads(path.read_text())
    assert {"machine", "data", "build", "exact", "ours", "faiss", "n_vectors", "load_start"} <= set(r)
    assert {"cpu", "flags", "faiss", "numpy", "date"} <= set(r["machine"])
    assert r["data"]["window"] == 100 and len(r["data"]["tiles"]) >= 2
    assert r["build"]["n_vectors"] == r["exact"]["n"] == r["n_vectors"] > 10_000
    assert r["build"]["search"]["target_recall"] == 0.95 and r["build"]["search"]["n_queries"] > 0
    for k in ("10", "100", "1000", "10000"):
        assert 0.0 <= r["ours"]["k"][k]["recall"] <= 1.0 and r["ours"]["k"][k]["median_s"] > 0
    assert r["ours"]["k"]["1000"]["recall"] >= 0.95  # the tuned default on the product's landscape
    assert r["ours"]["batch100_qps"] > 0 and r["ours"]["cold_median_s"] > 0 and r["ours"]["rerank_read_median_s"] > 0
    # the floor under a cold query, paired with it: its own ranges read, nothing computed
    assert r["ours"]["kind"] == "int8-lists" and r["ours"]["cold_reads_median_s"] > 0 and r["ours"]["cold_over_reads"] > 0
    assert r["ours"]["cold_ranges"] >= 1 and r["ours"]["cold_bytes"] >= 128 * r["ours"]["cold_ranges"]
    assert r["ours"]["disk"]["16384"] > 0 and all(v > 0 for v in r["ours"]["disk"].values())
    assert set(r["faiss"]) == {"ivfpq_refine", "ivfsq8", "rabitq_refine"}
    for f in r["faiss"].values():
        assert 0.0 <= f["recall1000"] <= 1.0 and f["median_s"] > 0 and f["tried"]
    assert r["exact"]["numpy_median_s"] > 0 and r["exact"]["flat_median_s"] > 0
    assert r["build"]["throughput"] > 0 and r["build"]["bare_throughput"] > 0
    assert r["build"]["index_bytes"] > 0 and r["build"]["store_bytes"] > 0
    assert r["build"]["peak_rss"] > 0 and r["ours"]["peak_rss"] > 0

    proc = subprocess.run([sys.executable, str(BENCH), "--tiny", "--retune", "--work", str(work)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    again = json.loads(path.read_text())
    assert again["retuned"]["seconds"] > 0 and again["build"]["search"]["n_queries"] > 0
    assert again["faiss"] == r["faiss"] and again["ours"]["k"]["1000"]["recall"] >= 0.95
    r = again

    sys.path.insert(0, str(BENCH.parent))
    try:
        import bench_index
    finally:
        sys.path.remove(str(BENCH.parent))
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# B\n\nbefore\n\n{bench_index.START}\nOLD-TABLE\n{bench_index.END}\n\nafter\n")
    bench_index.DOC = doc
    bench_index.write_docs([r])
    text = doc.read_text()
    assert "before" in text and "after" in text and "OLD-TABLE" not in text
    assert "**recall@1000** ours" in text and "Kenya estimate" in text and r["machine"]["cpu"] in text
    assert "Re-tuned with `--retune`" in text
