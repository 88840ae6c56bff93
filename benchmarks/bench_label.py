"""Few-shot labelling vs scikit-learn's KNeighborsClassifier, on 4 full synthetic tiles.

    python benchmarks/bench_label.py [--per-class 10] [--k 5] [--backend auto] [--size PX] [--json results.json]

Builds a workspace of the 4 tiles of the Nairobi box (about 4.9 M pixels, SYNTHETIC data
with ground truth; ``--size PX``: a PX x PX window of each tile instead, for a quick
smoke run), labels ``--per-class`` random points of each land class, and measures in one
run:

1. **Classifier, same inputs**: every valid pixel of the region, already in memory,
   classified by :class:`tessera_search.label.KNNClassifier` (fed the stored int8
   vectors) and by ``KNeighborsClassifier(n_neighbors=k, metric="cosine",
   algorithm="brute", weights=...)`` (fed the same vectors as float32, converted
   outside the timing); the ratio of the median ``predict`` times (``--repeat`` each,
   interleaved, after one warm-up on a slice) and the share of identical predictions,
   for uniform and distance weights. Ours runs on ``--backend`` (``KNNClassifier``'s
   ``backend=``: auto, numpy, torch or cuda); the same predictions are also timed on
   ``backend="numpy"`` (what a machine without torch gets), which must give identical
   results.
2. **End to end**: :func:`tessera_search.label.label_region` from the store to the COG,
   legend and quicklook, with the map's accuracy against the ground truth.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from tessera_search.examples import ExampleSet
from tessera_search.grid import Tile, TileGrid, expected_grid, owned_mask, pixel_to_lonlat
from tessera_search.label import KNNClassifier, label_region
from tessera_search.regions import resolve_region
from tessera_search.sources.synthetic import CLASSES, generate_tile
from tessera_search.store import TileStore

BBOX = "36.7,-1.4,36.9,-1.2"
YEAR = 2023


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def _torch_version() -> str | None:
    """torch's version when installed (the int8 matrix product), else None (NumPy path)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def window(tile: Tile, size: int | None) -> TileGrid | None:
    """A centred ``size`` x ``size`` window of the tile's real grid (None: the whole tile)."""
    if not size:
        return None
    g = expected_grid(tile)
    h, w = min(size, g.height), min(size, g.width)
    r0, c0 = (g.height - h) // 2, (g.width - w) // 2
    a, b, c, d, e, f = g.transform
    return TileGrid(tile, g.epsg, (a, b, c + a * c0, d, e, f + e * r0), h, w)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="timed predictions per side (median reported)")
    ap.add_argument("--backend", default="auto", choices=["auto", "numpy", "torch", "cuda"],
                    help="KNNClassifier backend for ours (the numpy-only timing always uses numpy)")
    ap.add_argument("--size", type=int, default=None, metavar="PX",
                    help="a PX x PX window of each tile instead of the whole tile (a quick smoke run)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-label-"))
    try:
        return run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> dict:
    """The measurements, in workspace ``tmp`` (see the module docstring)."""
    from sklearn import __version__ as skl_version
    from sklearn.neighbors import KNeighborsClassifier

    region = resolve_region(bbox=BBOX)
    home = tmp / "ws"
    store = TileStore(home)
    truth, grids = {}, {}
    t0 = time.perf_counter()
    for t in region.tiles:
        st = generate_tile(t, YEAR, seed=args.seed, grid=window(t, args.size))
        store.write(st.data)
        truth[t], grids[t] = st.classes, st.data.grid
    print(f"generated {len(region.tiles)} SYNTHETIC tiles in {time.perf_counter() - t0:.1f} s")

    # Examples: per land class, random owned valid pixels, as points.
    rng = np.random.default_rng(args.seed)
    lons, lats, names = [], [], []
    for code, name in CLASSES.items():
        if code < 3:
            continue
        pix = [(t, r, c) for t in region.tiles
               for r, c in zip(*np.nonzero((truth[t] == code) & owned_mask(grids[t])))]
        if len(pix) < args.per_class:
            continue
        for i in rng.choice(len(pix), args.per_class, replace=False):
            t, r, c = pix[i]
            lo, la = pixel_to_lonlat(grids[t], r, c)
            lons.append(float(lo))
            lats.append(float(la))
            names.append(name)
    examples = ExampleSet.from_points(lons, lats, names, class_field="crop")

    # All valid pixels of the region, in memory (the classifier comparison's input).
    xs, ys = [], []
    for t in region.tiles:
        d = store.read(t, YEAR)
        use = d.valid & region.mask(d.grid)
        xs.append(d.embeddings[use])
        ys.append(truth[t][use])
    x_int8 = np.concatenate(xs)
    y_true = np.concatenate(ys)
    del xs, ys
    x_f32 = x_int8.astype(np.float32)
    n = x_int8.shape[0]
    print(f"{n:,} valid pixels, {len(names)} examples in {len(set(names))} classes")

    from tessera_search.examples import sample_examples

    samples = sample_examples(examples, YEAR, home)
    labels = samples.labels()
    results: dict = {
        "machine": cpu_model(), "cores": len(os.sched_getaffinity(0)),
        "pixels": int(n), "tiles": len(region.tiles), "examples": len(samples), "classes": len(set(labels)),
        "k": args.k, "backend": args.backend, "sklearn": skl_version, "numpy": np.__version__,
        "torch": _torch_version(), "runs": [],
    }
    # Both sides warm up once on a slice (imports, thread pools), then each predict is
    # timed --repeat times, interleaved, and the medians compared.
    for weights in ("uniform", "distance"):
        ours = KNNClassifier(args.k, weights, backend=args.backend).fit(samples.vectors, labels)
        numpy_only = KNNClassifier(args.k, weights, backend="numpy").fit(samples.vectors, labels)
        codes = np.array(ours.classes_, dtype=object)
        ref = KNeighborsClassifier(n_neighbors=args.k, metric="cosine", algorithm="brute", weights=weights)
        # class indices in the same (sorted) order, so vote ties resolve alike
        ref.fit(samples.vectors.astype(np.float32), np.array([ours.classes_.index(v) for v in labels]))
        ours.predict(x_int8[:100_000])
        numpy_only.predict(x_int8[:100_000])
        ref.predict(x_f32[:100_000])
        t_ours, t_ref, t_numpy = [], [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            pred, _ = ours.predict(x_int8)
            t_ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ref_pred = ref.predict(x_f32)
            t_ref.append(time.perf_counter() - t0)
            t0 = time.perf_counter()  # what a machine without torch gets
            pred_numpy, _ = numpy_only.predict(x_int8)
            t_numpy.append(time.perf_counter() - t0)
        assert np.array_equal(pred, pred_numpy)
        t_ours, t_ref, t_numpy = float(np.median(t_ours)), float(np.median(t_ref)), float(np.median(t_numpy))
        agree = float(np.mean(pred == ref_pred))
        # Where the two differ, who matches float64 arithmetic (scikit-learn on float64)?
        differ = np.flatnonzero(pred != ref_pred)
        ref64 = KNeighborsClassifier(n_neighbors=args.k, metric="cosine", algorithm="brute", weights=weights)
        ref64.fit(samples.vectors.astype(np.float64), np.array([ours.classes_.index(v) for v in labels]))
        truth64 = ref64.predict(x_int8[differ].astype(np.float64)) if differ.size else np.empty(0, int)
        name_of = {c: n for c, n in CLASSES.items()}
        acc = float(np.mean(codes[pred] == np.array([name_of[v] for v in y_true.tolist()], dtype=object)))
        run = {"weights": weights, "ours_s": round(t_ours, 3), "sklearn_s": round(t_ref, 3),
               "speedup": round(t_ref / t_ours, 1), "agreement": agree, "accuracy_vs_truth": round(acc, 4),
               "ours_ns_per_pixel": round(t_ours / n * 1e9, 1), "sklearn_ns_per_pixel": round(t_ref / n * 1e9, 1),
               "ours_numpy_only_s": round(t_numpy, 3), "speedup_numpy_only": round(t_ref / t_numpy, 1),
               "differing_pixels": int(differ.size), "of_which_ours_match_float64": int(np.sum(pred[differ] == truth64)),
               "of_which_sklearn_matches_float64": int(np.sum(ref_pred[differ] == truth64))}
        results["runs"].append(run)
        print(json.dumps(run))
    del x_f32

    t0 = time.perf_counter()

    def truth_fn(grid):
        return truth[grid.tile], dict(CLASSES)

    res = label_region(samples, region, YEAR, tmp / "classes.tif", k=args.k, home=home, truth=truth_fn,
                       backend=args.backend)
    results["end_to_end"] = {"seconds": round(time.perf_counter() - t0, 2), "pixels": res.n_pixels,
                             "accuracy_vs_truth": round(res.truth_accuracy, 4), "crs": res.crs,
                             "width": res.width, "height": res.height}
    print(json.dumps(results["end_to_end"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
