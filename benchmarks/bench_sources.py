"""Benchmark: tile read throughput by source (issue 12), NPY vs geoemb Zarr and Icechunk, local and remote.

    python benchmarks/bench_sources.py [--tiles 2] [--runs 3] [--shard 4096] [--ice-shard 2048]
                                       [--work DIR] [--json PATH]
    python benchmarks/bench_sources.py --tiny --json PATH     # smoke run: one small window, seconds

The same pixels are read, through the product's own sources, from:

- **NPY (local)**: a release mirror in the bucket layout written by the product's
  synthetic generator (``synthesize_mirror``; with ``--tiny`` one centred window of a
  tile's real grid from ``generate_tile(..., grid=window)`` written with
  ``write_release_tile``), read with :class:`~tessera_search.sources.release.ReleaseSource`;
- **Zarr (local)**: a geoemb Zarr v3 store laid out like the published one (zone group
  ``utmNN`` on EPSG:326NN with negative northings in the south, ``embeddings`` int8
  (time, band, y, x) in inner chunks (1, 128, 32, 32) inside shards (1, 128, S, S),
  ``scales`` float32 (time, y, x) fill +inf, Blosc zstd, ``time``/``x``/``y``/``band``
  coordinates, the reference root attributes, consolidated metadata) holding exactly the
  NPY tiles' pixels, read with :class:`~tessera_search.sources.zarrstore.ZarrSource`;
- **Zarr over HTTP**: that store directory served by a threaded ``http.server`` on
  127.0.0.1 with Range support (this file's handler, which counts the bytes it sends),
  read with ``ZarrSource(url)``.
- **Icechunk (local)**: an Icechunk repository (written with icechunk itself) laid out
  like the published v1.1 one: hemisphere group ``NNS``/``NNN`` in its own CRS
  (EPSG:327NN: positive northings in the south), ``embeddings`` int8 (time, northing,
  easting, band) in chunks (1, 256, 256, 128) inside shards of ``--ice-shard`` px (2048;
  0: no sharding), ``scales`` float32 (time, northing, easting) NaN fill, the three uint16
  ``*_obs_count`` arrays (deterministic counts, checked too), ``time``/``northing``/
  ``easting``/``band`` coordinates and group attrs ``spatial:transform``,
  ``spatial:shape``, ``spatial:bbox``, ``proj:code``, ``years_complete``; same Blosc zstd
  codec as the Zarr store; read with :class:`~tessera_search.sources.icechunkstore.IcechunkSource`;
- **Icechunk over S3**: the same repository written through icechunk into a public-read
  bucket of moto's S3 server on 127.0.0.1 (this file's WSGI wrapper counts the response
  body bytes and requests), read anonymously with ``IcechunkSource("s3://...")`` via
  ``AWS_ENDPOINT_URL``. Skipped (reported) where moto is not installed (the ``dev`` extra).

Per source: one untimed warm-up fetch (so the page cache is warm for every source: the
files were just written and read), then ``--runs`` timed runs, each opening a fresh
source (open time reported apart) and fetching every tile. Reported: median seconds per
tile, MB/s of int8 + float32 scales delivered (the NPY tiles' pixels x 132 bytes, the same
for every source; the Icechunk rows read the three uint16 observation counts as well, 6 B/px
more), HTTP (S3) response body bytes and requests per tile, and the ratio of seconds per tile to
NPY. Every source's tiles are checked bit for bit against the NPY ones. Prints a Markdown
table; ``--json PATH`` writes the results.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import http.server
import json
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

YEAR = 2023
SEED = 0
VERSION = "v1"
BAND = 128
CHUNK = 32
PAD = 64  # pixels of zone grid around the tiles
TINY_WINDOW = 128
ICE_CHUNK = 256  # the published repository's inner chunk side
BUCKET = "tessera-bench"
PREFIX = "v1.1/dclimate.icechunk"
# a column of tiles near Nairobi (UTM 37 south), 0.2 degree apart so their grids never overlap
_TILE_NAMES = [f"grid_36.85_{-1.25 - 0.2 * i:.2f}" for i in range(8)]
ROOT_ATTRS = {
    "geoemb:type": "pixel", "geoemb:dimensions": BAND, "geoemb:data_type": "int8",
    "geoemb:model": "https://example.org/tessera/model/v1.1", "geoemb:gsd": 10.0,
    "geoemb:spatial_layout": "utm_zones", "geoemb:build_version": "bench",
    "geoemb:quantization": {"method": "per_pixel_scale", "scale": {"array_name": "scales", "nodata": "+inf"}},
    "tessera-search:synthetic": True,
}


# -- machine ------------------------------------------------------------------------


def _machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], check=False, capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "Model name":
                info["cpu_model"] = val.strip()
            elif key.strip() == "Flags":
                flags = set(val.split())
                info["avx2"] = "avx2" in flags
                info["avx512"] = sorted(f for f in flags if f.startswith("avx512"))
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib import metadata

    info["versions"] = {"numpy": np.__version__}
    for pkg in ("zarr", "numcodecs", "icechunk", "moto"):
        try:
            info["versions"][pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info["versions"][pkg] = None
    return info


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


# -- data ---------------------------------------------------------------------------


def _window_grid(tile, size: int):
    """A centred (size, size) window of the tile's real UTM grid (same CRS and lattice)."""
    from tessera_search.grid import centred_window, expected_grid

    return centred_window(expected_grid(tile), size, size)


def make_mirror(out: Path, tiles, tiny: bool) -> None:
    """An NPY release mirror (bucket layout) of the product's synthetic tiles."""
    from tessera_search.sources.layout import write_manifest, write_release_tile
    from tessera_search.sources.synthetic import generate_tile, synthesize_mirror

    if not tiny:
        synthesize_mirror(tiles, YEAR, out, seed=SEED, version=VERSION)
        return
    for tile in tiles:
        d = generate_tile(tile, YEAR, SEED, VERSION, grid=_window_grid(tile, TINY_WINDOW)).data
        write_release_tile(out, VERSION, YEAR, d.grid, d.embeddings, d.scales, d.landmask)
    write_manifest(out, VERSION)


def _north_corner(grid) -> tuple[float, float]:
    """(x, y) of the grid's corner in the zone's northern frame (EPSG:326NN)."""
    _, _, x, _, _, y = grid.transform
    return x, (y - 10_000_000.0 if grid.epsg // 100 == 327 else y)


def write_zarr(root: Path, datas, shard: int) -> dict:
    """A geoemb Zarr v3 store holding exactly ``datas``' pixels; returns its layout."""
    import zarr
    from zarr.codecs import BloscCodec

    codec = [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")]
    g = zarr.open_group(str(root), mode="w", zarr_format=3, attributes=dict(ROOT_ATTRS))
    layout = {}
    by_zone: dict[int, list] = {}
    for d in datas:
        by_zone.setdefault(d.grid.epsg % 100, []).append(d)
    for zone, ds in sorted(by_zone.items()):
        xs, ys = zip(*(_north_corner(d.grid) for d in ds))
        x0 = min(xs) - 10.0 * PAD
        y0 = max(ys) + 10.0 * PAD
        rows = max(round((y0 - y) / 10.0) + d.grid.height for d, y in zip(ds, ys)) + PAD
        cols = max(round((x - x0) / 10.0) + d.grid.width for d, x in zip(ds, xs)) + PAD
        h, w = shard * math.ceil(rows / shard), shard * math.ceil(cols / shard)
        z = g.create_group(f"utm{zone:02d}", attributes={
            "proj:code": f"EPSG:{32600 + zone}", "spatial:dimensions": ["y", "x"],
            "spatial:transform": [10.0, 0.0, x0, 0.0, -10.0, y0], "spatial:shape": [h, w],
            "spatial:bbox": [x0, y0 - 10.0 * h, x0 + 10.0 * w, y0], "spatial:registration": "pixel",
        })
        emb = z.create_array("embeddings", shape=(1, BAND, h, w), dtype="int8", chunks=(1, BAND, CHUNK, CHUNK),
                             shards=(1, BAND, shard, shard), fill_value=0, compressors=codec,
                             dimension_names=["time", "band", "y", "x"])
        sc = z.create_array("scales", shape=(1, h, w), dtype="float32", chunks=(1, CHUNK, CHUNK),
                            shards=(1, shard, shard), fill_value=float("inf"), compressors=codec,
                            dimension_names=["time", "y", "x"])
        z.create_array("time", shape=(1,), dtype="int32", dimension_names=["time"])[...] = np.asarray([YEAR])
        z.create_array("band", shape=(BAND,), dtype="int32", dimension_names=["band"])[...] = np.arange(BAND)
        z.create_array("x", shape=(w,), dtype="float64", dimension_names=["x"])[...] = x0 + 10.0 * np.arange(w) + 5.0
        z.create_array("y", shape=(h,), dtype="float64", dimension_names=["y"])[...] = y0 - 10.0 * np.arange(h) - 5.0
        for d, x, y in zip(ds, xs, ys):
            r, c = round((y0 - y) / 10.0), round((x - x0) / 10.0)
            gh, gw = d.grid.shape
            emb[0, :, r:r + gh, c:c + gw] = np.ascontiguousarray(d.embeddings.transpose(2, 0, 1))
            sc[0, r:r + gh, c:c + gw] = d.scales
        layout[f"utm{zone:02d}"] = {"shape": [h, w], "shard": shard, "chunk": CHUNK}
    with warnings.catch_warnings():  # zarr warns consolidated metadata is not in the v3 spec
        warnings.simplefilter("ignore", UserWarning)
        zarr.consolidate_metadata(str(root))
    return layout


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def obs_counts(d) -> np.ndarray:
    """Deterministic observation counts for a tile: (H, W, 3) uint16, 0 where not embedded."""
    from tessera_search.quant import valid_scales

    h, w = d.grid.shape
    base = (np.arange(h)[:, None] * 7 + np.arange(w)[None, :] * 3) % 40
    out = np.stack([base + 15, base // 2, base // 3 + 1], axis=-1).astype(np.uint16)
    out[~valid_scales(d.scales)] = 0
    return out


def _group_name(grid) -> str:
    return f"{grid.epsg % 100:02d}{'S' if grid.epsg // 100 == 327 else 'N'}"


def write_icechunk(storage, datas, shard: int) -> dict:
    """An Icechunk repository (published v1.1 layout) holding exactly ``datas``' pixels; its layout."""
    import icechunk
    import zarr
    from zarr.codecs import BloscCodec

    from tessera_search.sources.base import OBSERVATION_KINDS

    codec = [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")]
    side = shard or ICE_CHUNK
    repo = icechunk.Repository.create(storage)
    session = repo.writable_session("main")
    root = zarr.group(store=session.store, attributes={"tessera:version": VERSION, "tessera-search:synthetic": True})
    layout = {}
    by_group: dict[str, list] = {}
    for d in datas:
        by_group.setdefault(_group_name(d.grid), []).append(d)
    dims = ["time", "northing", "easting"]
    for name, ds in sorted(by_group.items()):
        epsg = ds[0].grid.epsg  # the group's own CRS: the tiles' transforms as they are
        x0 = min(d.grid.transform[2] for d in ds) - 10.0 * PAD
        y0 = max(d.grid.transform[5] for d in ds) + 10.0 * PAD
        rows = max(round((y0 - d.grid.transform[5]) / 10.0) + d.grid.height for d in ds) + PAD
        cols = max(round((d.grid.transform[2] - x0) / 10.0) + d.grid.width for d in ds) + PAD
        h, w = side * math.ceil(rows / side), side * math.ceil(cols / side)
        g = root.create_group(name, attributes={
            "proj:code": f"EPSG:{epsg}", "spatial:dimensions": ["northing", "easting"],
            "spatial:transform": [10.0, 0.0, x0, 0.0, -10.0, y0], "spatial:shape": [h, w],
            "spatial:bbox": [x0, y0 - 10.0 * h, x0 + 10.0 * w, y0], "spatial:registration": "pixel",
            "years_complete": [YEAR],
        })

        def grid_kw(band: bool) -> dict:
            tail = (BAND,) if band else ()
            kw = {"chunks": (1, ICE_CHUNK, ICE_CHUNK, *tail), "compressors": codec,
                  "dimension_names": dims + (["band"] if band else [])}
            if shard:
                kw["shards"] = (1, shard, shard, *tail)
            return kw

        emb = g.create_array("embeddings", shape=(1, h, w, BAND), dtype="int8", fill_value=0, **grid_kw(True))
        sc = g.create_array("scales", shape=(1, h, w), dtype="float32", fill_value=float("nan"), **grid_kw(False))
        obs = [g.create_array(f"{k}_obs_count", shape=(1, h, w), dtype="uint16", fill_value=0, **grid_kw(False))
               for k in OBSERVATION_KINDS]
        g.create_array("time", shape=(1,), dtype="int32", dimension_names=["time"])[...] = np.asarray([YEAR])
        g.create_array("band", shape=(BAND,), dtype="int32", dimension_names=["band"])[...] = np.arange(BAND)
        g.create_array("easting", shape=(w,), dtype="float64", dimension_names=["easting"])[...] = \
            x0 + 10.0 * np.arange(w) + 5.0
        g.create_array("northing", shape=(h,), dtype="float64", dimension_names=["northing"])[...] = \
            y0 - 10.0 * np.arange(h) - 5.0
        for d in ds:
            r, c = round((y0 - d.grid.transform[5]) / 10.0), round((d.grid.transform[2] - x0) / 10.0)
            gh, gw = d.grid.shape
            emb[0, r:r + gh, c:c + gw, :] = d.embeddings
            sc[0, r:r + gh, c:c + gw] = d.scales
            counts = obs_counts(d)
            for i, a in enumerate(obs):
                a[0, r:r + gh, c:c + gw] = counts[..., i]
        layout[name] = {"epsg": epsg, "shape": [h, w], "shard": shard or None, "chunk": ICE_CHUNK}
    session.commit("bench_sources: synthetic tiles")
    del emb, sc, obs, a, g, root, session, repo  # freed here, in the main thread (not by zarr's I/O thread)
    gc.collect()
    return layout


# -- HTTP server ----------------------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bytes = 0
        self.requests = 0

    def add(self, n: int) -> None:
        with self.lock:
            self.bytes += n
            self.requests += 1

    def snapshot(self) -> tuple[int, int]:
        with self.lock:
            return self.bytes, self.requests


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single Range requests (a-b, a-, -n); counts body bytes sent."""

    counter: _Counter = _Counter()

    def log_message(self, *args):  # quiet
        pass

    def _range(self, size: int) -> tuple[int, int] | None | bool:
        """(first, last) inclusive; None for the whole file; False when unsatisfiable."""
        rng = self.headers.get("Range")
        if not rng or not rng.startswith("bytes=") or "," in rng:
            return None
        a, _, b = rng[6:].strip().partition("-")
        try:
            if not a:
                n = int(b)
                return (max(0, size - n), size - 1) if n > 0 and size else False
            first = int(a)
            last = min(int(b), size - 1) if b else size - 1
        except ValueError:
            return None
        return (first, last) if first <= last and first < size else False

    def _serve(self, body: bool) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.counter.add(0)
            self.send_error(404)
            return
        size = path.stat().st_size
        rng = self._range(size)
        if rng is False:
            self.counter.add(0)
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        first, last = (0, size - 1) if rng is None else rng
        n = last - first + 1 if size else 0
        self.send_response(200 if rng is None else 206)
        if rng is not None:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Length", str(n))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if not body:
            self.counter.add(0)
            return
        with open(path, "rb") as fh:
            fh.seek(first)
            left = n
            while left > 0:
                buf = fh.read(min(left, 1 << 20))
                if not buf:
                    break
                self.wfile.write(buf)
                left -= len(buf)
        self.counter.add(n - left)

    def do_GET(self):
        self._serve(True)

    def do_HEAD(self):
        self._serve(False)


def serve(directory: Path):
    """(server, url, counter) for ``directory`` on 127.0.0.1."""
    counter = _Counter()
    handler = type("Handler", (RangeHandler,), {"counter": counter})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **k: handler(*a, directory=str(directory), **k))
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/", counter


class _CountingApp:
    """WSGI wrapper: counts response body bytes and requests of ``app``."""

    def __init__(self, app, counter: _Counter) -> None:
        self.app, self.counter = app, counter

    def __call__(self, environ, start_response):
        body = self.app(environ, start_response)
        n = 0
        try:
            for part in body:
                n += len(part)
                yield part
        finally:
            if hasattr(body, "close"):
                body.close()
            self.counter.add(n)


def serve_s3():
    """(server, endpoint, counter): moto's S3 server on 127.0.0.1 with a public-read bucket;
    None when moto is not installed."""
    try:
        import boto3
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server
    except ImportError:
        return None
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    counter = _Counter()
    app = _CountingApp(DomainDispatcherApplication(create_backend_app), counter)
    srv = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{srv.server_port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench",
                      region_name="us-west-2")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject", "s3:ListBucket"],
        "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]}]}))
    return srv, endpoint, counter


@contextlib.contextmanager
def anonymous_s3(endpoint: str):
    """The environment pointed at ``endpoint`` with no credentials (anonymous reads), restored after."""
    keys = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN")
    saved = {k: os.environ.pop(k, None) for k in keys}
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_REGION="us-west-2")
    try:
        yield
    finally:
        for k in keys:
            os.environ.pop(k, None)
        os.environ.update({k: v for k, v in saved.items() if v is not None})


# -- measuring ------------------------------------------------------------------------


def check_same(got, want, obs: bool = False) -> None:
    """``got`` (a source's tile) holds ``want`` (the NPY tile) bit for bit, no data elsewhere;
    with ``obs``, also the observation counts :func:`obs_counts` wrote (0 elsewhere)."""
    from tessera_search.quant import valid_scales
    from tessera_search.sources.base import TileData

    assert isinstance(got, TileData), f"not read: {got}"
    r = round((got.grid.transform[5] - want.grid.transform[5]) / 10.0)
    c = round((want.grid.transform[2] - got.grid.transform[2]) / 10.0)
    h, w = want.grid.shape
    assert got.grid.epsg == want.grid.epsg and r >= 0 and c >= 0, (got.grid, want.grid)
    assert np.array_equal(got.embeddings[r:r + h, c:c + w], want.embeddings), f"{want.tile.name}: int8 differ"
    assert np.array_equal(got.scales[r:r + h, c:c + w].view(np.uint32), want.scales.view(np.uint32)), \
        f"{want.tile.name}: scales differ"
    outside = np.ones(got.grid.shape, bool)
    outside[r:r + h, c:c + w] = False
    assert not valid_scales(got.scales[outside]).any(), f"{want.tile.name}: valid pixels outside the tile"
    if obs:
        assert got.observations is not None, f"{want.tile.name}: no observation counts"
        assert np.array_equal(got.observations[r:r + h, c:c + w], obs_counts(want)), \
            f"{want.tile.name}: observation counts differ"
        assert not got.observations[outside].any(), f"{want.tile.name}: observation counts outside the tile"


def measure(name: str, open_source, tiles, want, runs: int, counter: _Counter | None, delivered: int,
            obs: bool = False) -> dict:
    """Warm-up (checked against ``want``), then ``runs`` timed runs of open + fetch."""
    src = open_source()
    got = list(src.fetch(tiles, YEAR))
    for g, w in zip(got, want, strict=True):
        check_same(g, w, obs)
    del got, src  # sources are freed here, in the main thread (icechunk/zarr: not from an I/O thread)
    gc.collect()
    opens, fetches, http_bytes, http_reqs = [], [], [], []
    for _ in range(runs):
        b0, q0 = counter.snapshot() if counter else (0, 0)
        t0 = time.perf_counter()
        src = open_source()
        t1 = time.perf_counter()
        n = 0
        for d in src.fetch(tiles, YEAR):
            assert d.embeddings is not None
            n += 1
        t2 = time.perf_counter()
        del d, src
        gc.collect()
        assert n == len(tiles)
        opens.append(t1 - t0)
        fetches.append((t2 - t1) / len(tiles))
        if counter:
            b1, q1 = counter.snapshot()
            http_bytes.append((b1 - b0) / len(tiles))
            http_reqs.append((q1 - q0) / len(tiles))
    s = statistics.median(fetches)
    out = {"source": name, "runs": runs, "s_per_tile": s, "s_per_tile_all": fetches,
           "open_s": statistics.median(opens), "mb_per_s": delivered / s / 1e6, "identical": True}
    if counter:
        out["http_bytes_per_tile"] = statistics.median(http_bytes)
        out["http_requests_per_tile"] = statistics.median(http_reqs)
    return out


def _table(results: list[dict], delivered: int) -> str:
    npy = next(r for r in results if r["source"] == "NPY (local)")["s_per_tile"]
    lines = ["| source | s/tile (median) | MB/s delivered | open s | HTTP MB/tile | HTTP requests/tile | vs NPY |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "s_per_tile" not in r:
            lines.append(f"| {r['source']} | {r['note']} | | | | | |")
            continue
        hb = f"{r['http_bytes_per_tile'] / 1e6:.1f}" if "http_bytes_per_tile" in r else "-"
        hq = f"{r['http_requests_per_tile']:.0f}" if "http_requests_per_tile" in r else "-"
        lines.append(f"| {r['source']} | {r['s_per_tile']:.3f} | {r['mb_per_s']:.0f} | {r['open_s']:.3f} | {hb} | "
                     f"{hq} | {r['s_per_tile'] / npy:.2f}x |")
    return "\n".join(lines) + f"\n\nDelivered per tile: {delivered / 1e6:.1f} MB (int8 + float32 scales)."


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiles", type=int, default=2, help="whole tiles to read (1-8)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--shard", type=int, default=4096, help="shard side in pixels (a multiple of 32)")
    p.add_argument("--ice-shard", type=int, default=2048,
                   help="Icechunk shard side in pixels (a multiple of 256; 0: unsharded 256 px chunks)")
    p.add_argument("--workers", type=int, default=8, help="concurrent requests of the Zarr and Icechunk readers")
    p.add_argument("--work", type=Path, help="keep the data here (default: a temporary directory)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--tiny", action="store_true", help=f"one {TINY_WINDOW} x {TINY_WINDOW} window, 256 px shards")
    a = p.parse_args(argv)
    if a.tiny:
        a.tiles, a.shard, a.runs = 1, 256, min(a.runs, 3)
    if not 1 <= a.tiles <= len(_TILE_NAMES) or a.shard % CHUNK or a.shard <= 0 or a.runs < 1 \
            or a.ice_shard < 0 or a.ice_shard % ICE_CHUNK:
        p.error("--tiles 1-8, --runs >= 1, --shard a positive multiple of 32, --ice-shard 0 or a multiple of 256")

    import icechunk

    from tessera_search.grid import Tile
    from tessera_search.sources.icechunkstore import IcechunkSource
    from tessera_search.sources.release import ReleaseSource
    from tessera_search.sources.zarrstore import ZarrSource

    machine, load_before = _machine(), _load()
    work = a.work or Path(tempfile.mkdtemp(prefix="bench_sources_"))
    work.mkdir(parents=True, exist_ok=True)
    mirror, store, ice = work / "npy", work / "site" / "geoemb.zarr", work / "v1.1.icechunk"
    for d in (mirror, store, ice):
        if d.exists():
            shutil.rmtree(d)
    tiles = [Tile.from_name(n) for n in _TILE_NAMES[:a.tiles]]
    srv = s3 = None
    try:
        t0 = time.perf_counter()
        make_mirror(mirror, tiles, a.tiny)
        t_synth = time.perf_counter() - t0
        want = list(ReleaseSource(mirror).fetch(tiles, YEAR))
        for w in want:
            assert hasattr(w, "embeddings"), f"NPY mirror tile not read: {w}"
        t0 = time.perf_counter()
        layout = write_zarr(store, want, a.shard)
        t_zarr = time.perf_counter() - t0
        t0 = time.perf_counter()
        ice_layout = write_icechunk(icechunk.local_filesystem_storage(str(ice)), want, a.ice_shard)
        t_ice = time.perf_counter() - t0
        srv, url, counter = serve(store.parent)
        store_url = url + "geoemb.zarr/"
        s3 = serve_s3()
        t_s3 = None
        if s3 is not None:
            t0 = time.perf_counter()
            write_icechunk(icechunk.s3_storage(bucket=BUCKET, prefix=PREFIX, region="us-west-2", endpoint_url=s3[1],
                                               allow_http=True, force_path_style=True, access_key_id="bench",
                                               secret_access_key="bench"), want, a.ice_shard)
            t_s3 = time.perf_counter() - t0
        pixels = [w.grid.height * w.grid.width for w in want]
        delivered = round(statistics.mean(pixels)) * (BAND + 4)
        results = [
            measure("NPY (local)", lambda: ReleaseSource(mirror), tiles, want, a.runs, None, delivered),
            measure("Zarr (local)", lambda: ZarrSource(store), tiles, want, a.runs, None, delivered),
            measure("Zarr over HTTP (127.0.0.1)", lambda: ZarrSource(store_url, workers=a.workers), tiles, want,
                    a.runs, counter, delivered),
            measure("Icechunk (local)", lambda: IcechunkSource(ice, workers=a.workers), tiles, want, a.runs, None,
                    delivered, obs=True),
        ]
        s3_name = "Icechunk over S3 (moto on 127.0.0.1)"
        if s3 is None:
            results.append({"source": s3_name, "note": "not measured: moto is not installed (the dev extra)"})
        else:
            with anonymous_s3(s3[1]):  # a public-read bucket, read like the published one
                results.append(measure(s3_name, lambda: IcechunkSource(f"s3://{BUCKET}/{PREFIX}", workers=a.workers),
                                       tiles, want, a.runs, s3[2], delivered, obs=True))
        doc = {
            "machine": machine, "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "load_before": load_before, "load_after": _load(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "page_cache": "warm (one untimed fetch per source first)",
            "data": {"tiles": [t.name for t in tiles], "year": YEAR, "tiny": a.tiny,
                     "pixels_per_tile": pixels, "delivered_bytes_per_tile": delivered,
                     "npy_bytes": _du(mirror / "npy"), "zarr_bytes": _du(store), "zarr_layout": layout,
                     "icechunk_bytes": _du(ice), "icechunk_layout": ice_layout, "synth_s": t_synth,
                     "zarr_write_s": t_zarr, "icechunk_write_s": t_ice, "icechunk_s3_write_s": t_s3,
                     "http_workers": a.workers},
            "identical": all(r.get("identical", True) for r in results), "results": results,
        }
    finally:
        for server in (srv, s3[0] if s3 else None):
            if server is not None:
                server.shutdown()
                server.server_close()
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"tiles: {', '.join(doc['data']['tiles'])} ({'window ' + str(TINY_WINDOW) if a.tiny else 'whole'}), "
          f"{a.runs} runs, shard {a.shard}, Icechunk shard {a.ice_shard or 'none'}, load {doc['load_before']} -> {doc['load_after']}")
    print(_table(doc["results"], delivered))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
