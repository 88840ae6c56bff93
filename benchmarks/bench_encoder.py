"""CPU inference throughput of the bundled TESSERA encoder (v1.0 configuration) vs batch size.

Random weights (throughput does not depend on their values), random normalised inputs of
the v1.0 shape: S2 (B, 40, 11) and S1 (B, 40, 3), the raw day of year last. Pixels/s =
B * repeats / seconds, after one warm-up batch, under ``torch.no_grad`` in eval mode,
float32. The model is the public ``tessera_search.encoder.TesseraEncoder`` built from
``get_config(--config)``; no data files are read.

    python benchmarks/bench_encoder.py --threads 2 --batch-sizes 1 8 32 128 512 --seconds 20
    python benchmarks/bench_encoder.py --tiny --json out.json     # smoke run: seconds

Prints a Markdown table (for docs/benchmarks.md); ``--json PATH`` also writes the numbers.
``--tiny`` (= ``--batch-sizes 1 2 --seconds 0.2``) is what the smoke test runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

TINY = {"batch_sizes": [1, 2], "seconds": 0.2}


def measure(model, batch_sizes: list[int], seconds: float, device: str = "cpu") -> list[dict]:
    """Forward-pass throughput per batch size: batch_size, batches, seconds, pixels_per_s, ms_per_batch."""
    import torch

    cfg = model.config
    t2, t1 = (cfg.sample_size_s2, cfg.sample_size_s1) if cfg.sampling == "random" else (40, 40)
    out = []
    for b in batch_sizes:
        s2 = torch.randn(b, t2, cfg.s2_bands + 1, device=device)
        s1 = torch.randn(b, t1, cfg.s1_bands + 1, device=device)
        s2[..., -1] = torch.randint(1, 366, (b, t2)).float()
        s1[..., -1] = torch.randint(1, 366, (b, t1)).float()
        with torch.no_grad():
            model(s2, s1)  # warm-up
            n, t0 = 0, time.perf_counter()
            while True:
                model(s2, s1)
                n += 1
                dt = time.perf_counter() - t0
                if dt > seconds or (n >= 3 and dt > seconds / 4):
                    break
        out.append({"batch_size": b, "batches": n, "seconds": dt, "pixels_per_s": b * n / dt,
                    "ms_per_batch": 1000 * dt / n})
    return out


def _machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="v1.0", help="encoder configuration: v1.0 or v1.1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 128, 512])
    ap.add_argument("--seconds", type=float, default=20.0, help="time budget per batch size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tiny", action="store_true",
                    help=f"smoke run: --batch-sizes {' '.join(map(str, TINY['batch_sizes']))} --seconds {TINY['seconds']}")
    ap.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)
    if args.tiny:
        args.batch_sizes, args.seconds = TINY["batch_sizes"], TINY["seconds"]
    if min(args.batch_sizes) < 1 or args.seconds <= 0 or args.threads < 1:
        ap.error("batch sizes and --threads must be >= 1, --seconds > 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    import torch

    from tessera_search.encoder import TesseraEncoder, get_config

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = get_config(args.config)
    model = TesseraEncoder(cfg).eval().requires_grad_(False).to(args.device)
    print(f"| batch size | pixels/s | ms/batch |  ({cfg.name}, {args.threads} threads, {args.device})")
    print("|---:|---:|---:|")
    results = []
    for b in args.batch_sizes:  # one at a time, so each row prints as soon as it is measured
        (row,) = measure(model, [b], args.seconds, args.device)
        results.append(row)
        print(f"| {b} | {row['pixels_per_s']:.1f} | {row['ms_per_batch']:.1f} |", flush=True)
    if args.json:
        doc = {"machine": _machine(), "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
               "config": cfg.name, "parameters": sum(p.numel() for p in model.parameters()),
               "threads": args.threads, "device": args.device, "seconds_per_size": args.seconds,
               "results": results}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
