"""The source throughput benchmark still runs: ``benchmarks/bench_sources.py --tiny`` end to
end (NPY mirror, local geoemb Zarr, Zarr over HTTP on 127.0.0.1, local Icechunk repository,
Icechunk over moto's S3 server on 127.0.0.1), in a subprocess."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sources.py"
S3_ROW = "Icechunk over S3 (moto on 127.0.0.1)"


def test_bench_sources_tiny_run_writes_sane_json(tmp_path):
    pytest.importorskip("icechunk")
    moto = importlib.util.find_spec("moto") is not None  # the dev extra; without it the S3 row says so
    out = tmp_path / "bench_sources.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--tiny", "--json", str(out)],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| Zarr over HTTP (127.0.0.1) |" in proc.stdout and f"| {S3_ROW} |" in proc.stdout
    assert "not implemented" not in proc.stdout and ("not measured" in proc.stdout) is not moto
    doc = json.loads(out.read_text())
    assert {"machine", "date", "command", "data", "results"} <= set(doc)
    assert doc["identical"] is True and doc["data"]["tiny"] is True
    assert doc["data"]["delivered_bytes_per_tile"] > 0
    measured = {r["source"]: r for r in doc["results"] if "s_per_tile" in r}
    assert set(measured) == {"NPY (local)", "Zarr (local)", "Zarr over HTTP (127.0.0.1)", "Icechunk (local)",
                             *([S3_ROW] if moto else [])}
    assert len(doc["results"]) == 5
    for name, r in measured.items():
        assert r["identical"] is True, name
        assert r["s_per_tile"] > 0 and r["mb_per_s"] > 0 and r["open_s"] >= 0, (name, r)
        assert len(r["s_per_tile_all"]) == r["runs"] >= 1
    for name in ("Zarr over HTTP (127.0.0.1)", *([S3_ROW] if moto else [])):
        remote = measured[name]
        assert remote["http_bytes_per_tile"] > 0 and remote["http_requests_per_tile"] >= 1, (name, remote)
    if moto:  # the window's embeddings travel: its 128 x 128 x 128 int8 compress little (Blosc zstd)
        assert measured[S3_ROW]["http_bytes_per_tile"] > 128 * 128 * 128 // 2
    (group,) = doc["data"]["icechunk_layout"].values()
    assert group["epsg"] == 32737 and group["chunk"] == 256 and group["shard"] == 2048
    assert doc["data"]["icechunk_bytes"] > 0 and doc["machine"]["versions"]["icechunk"]
