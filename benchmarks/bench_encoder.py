"""CPU inference throughput of the bundled TESSERA encoder (v1.0 configuration) vs batch size.

Random weights (throughput does not depend on their values), random normalised inputs of
the v1.0 shape: S2 (B, 40, 11) and S1 (B, 40, 3). Pixels/s = B * repeats / seconds, after
one warm-up batch, under ``torch.no_grad`` in eval mode, float32.

    python benchmarks/bench_encoder.py --threads 2 --batch-sizes 1 8 32 128 512 --seconds 20

Prints a Markdown table (for docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    import torch

    from tessera_search.encoder.config import get_config
    from tessera_search.encoder.model import TesseraEncoder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="v1.0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 128, 512])
    ap.add_argument("--seconds", type=float, default=20.0, help="time budget per batch size")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = get_config(args.config)
    model = TesseraEncoder(cfg).eval().requires_grad_(False).to(args.device)
    t2, t1 = (cfg.sample_size_s2, cfg.sample_size_s1) if cfg.sampling == "random" else (40, 40)
    print(f"| batch size | pixels/s | ms/batch |  ({cfg.name}, {args.threads} threads, {args.device})")
    print("|---:|---:|---:|")
    for b in args.batch_sizes:
        s2 = torch.randn(b, t2, 11, device=args.device)
        s1 = torch.randn(b, t1, 3, device=args.device)
        s2[..., -1] = torch.randint(1, 366, (b, t2)).float()
        s1[..., -1] = torch.randint(1, 366, (b, t1)).float()
        with torch.no_grad():
            model(s2, s1)
            n, t0 = 0, time.perf_counter()
            while True:
                model(s2, s1)
                n += 1
                dt = time.perf_counter() - t0
                if dt > args.seconds or (n >= 3 and dt > args.seconds / 4):
                    break
        print(f"| {b} | {b * n / dt:.1f} | {1000 * dt / n:.1f} |", flush=True)


if __name__ == "__main__":
    main()
