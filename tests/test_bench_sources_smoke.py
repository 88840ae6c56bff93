"""The source throughput benchmark still runs: ``benchmarks/bench_sources.py --tiny`` end to
end (NPY mirror, local geoemb Zarr, Zarr over HTTP on 127.0.0.1), in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sources.py"


def test_bench_sources_tiny_run_writes_sane_json(tmp_path):
    out = tmp_path / "bench_sources.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--tiny", "--json", str(out)],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| Zarr over HTTP (127.0.0.1) |" in proc.stdout and "not implemented" in proc.stdout
    doc = json.loads(out.read_text())
    assert {"machine", "date", "command", "data", "results"} <= set(doc)
    assert doc["identical"] is True and doc["data"]["tiny"] is True
    assert doc["data"]["delivered_bytes_per_tile"] > 0
    measured = {r["source"]: r for r in doc["results"] if "s_per_tile" in r}
    assert set(measured) == {"NPY (local)", "Zarr (local)", "Zarr over HTTP (127.0.0.1)"}
    for name, r in measured.items():
        assert r["identical"] is True, name
        assert r["s_per_tile"] > 0 and r["mb_per_s"] > 0 and r["open_s"] >= 0, (name, r)
        assert len(r["s_per_tile_all"]) == r["runs"] >= 1
    http = measured["Zarr over HTTP (127.0.0.1)"]
    assert http["http_bytes_per_tile"] > 0 and http["http_requests_per_tile"] >= 1
    assert any("Icechunk" in r["source"] and "not implemented" in r["note"] for r in doc["results"])
