"""Tile inference: TileInputs -> int8 embeddings + per-pixel scales -> release-layout tiles.

:func:`encode_tile` streams a tile through the model in row blocks (memory-mapped input,
bounded buffers), builds each pixel's sequences by the configuration's rule
(:mod:`.data`), and quantises every 128-d embedding with the production rule
(:func:`tessera_search.quant.quantize`). A pixel without any usable observation is no data:
scale NaN and a zero vector, never an invented embedding:

* v1.0 (``random``): a pixel needs at least one usable S2 observation (mask set and bands
  not all zero). S1 without a valid row is fed as the official "no S1" input.
* v1.1 (``bucket``): a pixel needs a usable S2 observation or a valid S1 row; a missing
  sensor gets the official all-zero input of length 8.

:func:`encode` is the whole ``tessera-search encode`` command as one call: read the input,
load or build the model, run, and write a release mirror (``write_release_tile`` +
``write_manifest``) that ``download --source DIR`` ingests.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError, MissingDependencyError
from ..quant import quantize
from .config import EncoderConfig, get_config, norm_stats
from .data import TileInputs, load_input
from .inputs import bucket_indices, bucket_size, normalize, s1_stack, sample_official, sample_random

__all__ = ["EncodeResult", "EncodedTile", "encode", "encode_tile", "require_torch", "resolve_device"]

Progress = Callable[[int, int], None]


def require_torch():
    """Import torch or raise :class:`MissingDependencyError` with the install line."""
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            "the bundled encoder needs PyTorch: pip install torch==2.13.0 (CPU) "
            "or pip install 'tessera-search[encoder]'"
        ) from exc
    return torch


def resolve_device(device: str | None) -> str:
    """``None``/``auto`` -> ``cuda`` when available, else ``cpu``; otherwise validated as given."""
    torch = require_torch()
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} asked for, but CUDA is not available here; use device=cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise InvalidInputError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
    return device


@dataclass
class EncodedTile:
    """embeddings (H, W, save_dim) int8; scales (H, W) float32, NaN = no data."""

    embeddings: np.ndarray
    scales: np.ndarray
    n_embedded: int
    n_pixels: int


@dataclass
class _Sink:
    emb: np.ndarray
    scales: np.ndarray
    model: object
    device: str
    autocast: bool
    save_dim: int
    count: int = 0

    def run(self, s2: np.ndarray, s1: np.ndarray, flat_pos: np.ndarray) -> None:
        import torch

        with torch.no_grad():
            x2 = torch.from_numpy(np.ascontiguousarray(s2)).to(self.device)
            x1 = torch.from_numpy(np.ascontiguousarray(s1)).to(self.device)
            if self.autocast:
                with torch.autocast(device_type=self.device.split(":")[0], dtype=torch.bfloat16):
                    out = self.model(x2, x1)
            else:
                out = self.model(x2, x1)
            out = out[:, : self.save_dim].float().cpu().numpy()
        q, s = quantize(out)
        self.emb.reshape(-1, self.emb.shape[-1])[flat_pos] = q
        self.scales.reshape(-1)[flat_pos] = s
        self.count += len(flat_pos)


def _s2_usable(bands: np.ndarray, masks: np.ndarray, official: bool) -> np.ndarray:
    """(N, T, 10), (N, T) -> (N, T) bool usable S2 observations."""
    m = masks != 0
    return m if official else m & (bands != 0).any(axis=-1)


def _run_random(tile: TileInputs, cfg: EncoderConfig, sink: _Sink, batch_size: int, seed: int, official: bool,
                rows_per_block: int, progress: Progress | None) -> None:
    """v1.0: fixed-size random draws, batches of consecutive embedded pixels (row-major)."""
    stats = norm_stats(cfg.stats)
    h, w = tile.shape
    s2_doys = np.asarray(tile.doys, dtype=np.int64)
    rng = np.random.RandomState(seed) if official else None
    buf: dict[str, list[np.ndarray]] = {k: [] for k in ("bands", "s2v", "s1", "s1v", "keys", "emb")}
    n_buf = 0
    _, s1_doys, s1_flag = s1_stack(np.zeros((tile.sar_asc.shape[0], 0, 2), np.int16), tile.sar_asc_doy,
                                   np.zeros((tile.sar_desc.shape[0], 0, 2), np.int16), tile.sar_desc_doy)

    def flush(n: int) -> None:
        nonlocal n_buf
        cat = {k: np.concatenate(v) for k, v in buf.items()}
        take = {k: v[:n] for k, v in cat.items()}
        for k in buf:
            buf[k] = [cat[k][n:]]
        n_buf -= n
        keys = take["keys"]
        if official:
            i2 = sample_official(take["s2v"], cfg.sample_size_s2, rng)
            i1 = sample_official(take["s1v"], cfg.sample_size_s1, rng)
        else:
            i2 = sample_random(take["s2v"], cfg.sample_size_s2, keys, seed, 0)
            i1 = sample_random(take["s1v"], cfg.sample_size_s1, keys, seed, 1)
        s2 = normalize(np.take_along_axis(take["bands"], i2[..., None], axis=1), s2_doys[i2], stats.s2_mean, stats.s2_std)
        raw1 = np.take_along_axis(take["s1"], i1[..., None], axis=1)
        desc = (s1_flag[i1] == 1)[..., None]
        mean1 = np.where(desc, stats.s1_desc_mean, stats.s1_asc_mean).astype(np.float32)
        std1 = np.where(desc, stats.s1_desc_std, stats.s1_asc_std).astype(np.float32)
        s1 = np.concatenate([(raw1.astype(np.float32) - mean1) / std1, s1_doys[i1][..., None].astype(np.float32)], axis=-1)
        embed = take["emb"]
        if embed.any():
            sink.run(s2[embed], s1[embed], keys[embed])

    for r0 in range(0, h, rows_per_block):
        r1 = min(h, r0 + rows_per_block)
        n = (r1 - r0) * w
        bands = np.asarray(tile.bands[:, r0:r1]).reshape(-1, n, 10).transpose(1, 0, 2)
        masks = np.asarray(tile.masks[:, r0:r1]).reshape(-1, n).T
        s1, _, _ = s1_stack(np.asarray(tile.sar_asc[:, r0:r1]).reshape(-1, n, 2), tile.sar_asc_doy,
                            np.asarray(tile.sar_desc[:, r0:r1]).reshape(-1, n, 2), tile.sar_desc_doy)
        s1 = s1.transpose(1, 0, 2)
        usable = _s2_usable(bands, masks, official=False)
        embed = usable.any(axis=1)
        # Official pixel filter (any S2 value non-zero, mask ignored): keeps the official RNG
        # stream aligned in official mode; pixels it passes but we do not embed are drawn, not run.
        drawn = (bands != 0).any(axis=(1, 2)) if official else embed
        keys = (np.arange(n, dtype=np.int64) + r0 * w)
        sel = np.flatnonzero(drawn)
        if sel.size:
            buf["bands"].append(bands[sel])
            buf["s2v"].append(_s2_usable(bands[sel], masks[sel], official))
            buf["s1"].append(s1[sel])
            buf["s1v"].append((s1[sel] != 0).any(axis=-1))
            buf["keys"].append(keys[sel])
            buf["emb"].append(embed[sel])
            n_buf += sel.size
        while n_buf >= batch_size:
            flush(batch_size)
        if progress:
            progress(r1 * w, h * w)
    if n_buf:
        flush(n_buf)


def _bucket_inputs(values: np.ndarray, valid: np.ndarray, step: int, max_size: int):
    """Per-pixel v1.1 sequences: (N, T, C+1) normalised values + (N, T) valid -> {(bin): (idx, (n, bin, C+1))}."""
    counts = valid.sum(axis=1)
    order = np.argsort(~valid, axis=1, kind="stable")  # valid steps first, in time order
    out: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for c in np.unique(counts):
        sel = np.flatnonzero(counts == c)
        b = bucket_size(int(c), step, max_size)
        if c == 0:
            seq = np.zeros((sel.size, b, values.shape[2]), dtype=np.float32)
        else:
            pos = order[sel, :c][:, bucket_indices(int(c), b)]
            seq = np.take_along_axis(values[sel], pos[..., None], axis=1)
        out.setdefault(b, ([], []))
        out[b][0].append(sel)
        out[b][1].append(seq)
    return {b: (np.concatenate(i), np.concatenate(s)) for b, (i, s) in out.items()}


def _run_bucket(tile: TileInputs, cfg: EncoderConfig, sink: _Sink, batch_size: int, official: bool,
                rows_per_block: int, progress: Progress | None) -> None:
    """v1.1: all usable observations, resampled to buckets; batches per (s2_bin, s1_bin)."""
    stats = norm_stats(cfg.stats)
    h, w = tile.shape
    pending: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    sizes: dict[tuple[int, int], int] = {}
    cap = 8 * batch_size

    def run_key(key: tuple[int, int]) -> None:
        parts = pending.pop(key)
        sizes.pop(key)
        pos = np.concatenate([p[0] for p in parts])
        s2 = np.concatenate([p[1] for p in parts])
        s1 = np.concatenate([p[2] for p in parts])
        for i in range(0, len(pos), batch_size):
            sink.run(s2[i : i + batch_size], s1[i : i + batch_size], pos[i : i + batch_size])

    for r0 in range(0, h, rows_per_block):
        r1 = min(h, r0 + rows_per_block)
        n = (r1 - r0) * w
        bands = np.asarray(tile.bands[:, r0:r1]).reshape(-1, n, 10).transpose(1, 0, 2)
        masks = np.asarray(tile.masks[:, r0:r1]).reshape(-1, n).T
        asc = np.asarray(tile.sar_asc[:, r0:r1]).reshape(-1, n, 2).transpose(1, 0, 2)
        desc = np.asarray(tile.sar_desc[:, r0:r1]).reshape(-1, n, 2).transpose(1, 0, 2)
        v2 = _s2_usable(bands, masks, official)
        v1 = np.concatenate([(asc != 0).any(axis=-1), (desc != 0).any(axis=-1)], axis=1)
        embed = v2.any(axis=1) | v1.any(axis=1)
        keys = np.arange(n, dtype=np.int64) + r0 * w
        idx = np.flatnonzero(embed)
        if idx.size:
            x2 = normalize(bands[idx], np.broadcast_to(tile.doys, (idx.size, len(tile.doys))), stats.s2_mean, stats.s2_std)
            x1 = np.concatenate([
                normalize(asc[idx], np.broadcast_to(tile.sar_asc_doy, (idx.size, len(tile.sar_asc_doy))), stats.s1_asc_mean, stats.s1_asc_std),
                normalize(desc[idx], np.broadcast_to(tile.sar_desc_doy, (idx.size, len(tile.sar_desc_doy))), stats.s1_desc_mean, stats.s1_desc_std),
            ], axis=1)
            g2 = _bucket_inputs(x2, v2[idx], cfg.bucket_step, cfg.bucket_max)
            g1 = _bucket_inputs(x1, v1[idx], cfg.bucket_step, cfg.bucket_max)
            bin2 = np.empty(idx.size, dtype=np.int64)
            seq2 = {}
            for b, (sel, seq) in g2.items():
                bin2[sel] = b
                seq2[b] = dict(zip(sel.tolist(), range(len(sel)), strict=True)), seq
            for b1, (sel1, seq1) in g1.items():
                for b2 in np.unique(bin2[sel1]):
                    m = bin2[sel1] == b2
                    px = sel1[m]
                    lookup, s2seq = seq2[int(b2)]
                    rows2 = np.fromiter((lookup[int(p)] for p in px), dtype=np.int64, count=px.size)
                    key = (int(b2), int(b1))
                    pending.setdefault(key, []).append((keys[idx[px]], s2seq[rows2], seq1[m]))
                    sizes[key] = sizes.get(key, 0) + px.size
        for key in [k for k, s in sizes.items() if s >= batch_size]:
            run_key(key)
        while sum(sizes.values()) > cap:
            run_key(max(sizes, key=sizes.get))
        if progress:
            progress(r1 * w, h * w)
    for key in sorted(pending):
        run_key(key)


def encode_tile(
    tile: TileInputs,
    model,
    *,
    batch_size: int = 1024,
    device: str = "cpu",
    seed: int = 0,
    official_sampling: bool = False,
    precision: str = "auto",
    block_pixels: int = 65536,
    progress: Progress | None = None,
) -> EncodedTile:
    """Embed every pixel of ``tile`` with ``model`` (a :class:`~.model.TesseraEncoder`).

    ``seed`` fixes the v1.0 draws (per pixel, batch-independent); ``official_sampling``
    switches to the official legacy-RNG draw order (and the official mask-only candidate
    rule). ``precision``: ``auto`` (fp32, except v1.1 on CUDA, which runs under bf16
    autocast as upstream), ``fp32`` or ``bf16`` (autocast). Memory is bounded by
    ``block_pixels`` rows-worth of input plus a few batches.
    Returns int8 embeddings (H, W, save_dim) and float32 scales (H, W), NaN = no data.
    """
    if batch_size <= 0:
        raise InvalidInputError("batch size must be positive")
    if precision not in ("auto", "fp32", "bf16"):
        raise InvalidInputError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    tile.validate()
    cfg: EncoderConfig = model.config
    if tile.bands.shape[-1] != cfg.s2_bands:
        raise InvalidInputError(f"model expects {cfg.s2_bands} S2 bands, tile has {tile.bands.shape[-1]}")
    h, w = tile.shape
    on_cuda = str(device).startswith("cuda")
    autocast = precision == "bf16" or (precision == "auto" and on_cuda and cfg.sampling == "bucket")
    emb = np.zeros((h, w, cfg.save_dim), dtype=np.int8)
    scales = np.full((h, w), np.nan, dtype=np.float32)
    model.eval()
    sink = _Sink(emb, scales, model, device, autocast, cfg.save_dim)
    rows = max(1, block_pixels // max(1, w))
    if cfg.sampling == "random":
        _run_random(tile, cfg, sink, batch_size, seed, official_sampling, rows, progress)
    else:
        _run_bucket(tile, cfg, sink, batch_size, official_sampling, rows, progress)
    return EncodedTile(emb, scales, sink.count, h * w)


@dataclass
class EncodeResult:
    """What :func:`encode` wrote: paths relative to ``out``, and whether it can be ingested."""

    out: Path
    tile: str | None
    year: int | None
    version: str
    ingestible: bool
    paths: dict[str, str]
    n_embedded: int
    n_pixels: int
    shape: tuple[int, int]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "out": str(self.out), "tile": self.tile, "year": self.year, "version": self.version,
            "ingestible": self.ingestible, "paths": self.paths, "n_embedded": self.n_embedded,
            "n_pixels": self.n_pixels, "shape": list(self.shape), "notes": self.notes,
        }


def _save_array(path: Path, array: np.ndarray) -> None:
    from .._io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def _grid_from_reference(path: Path, shape: tuple[int, int]):
    import rasterio
    from rasterio.errors import RasterioIOError

    from .data import epsg_from_crs, grid_for

    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise InvalidInputError(f"reference {path} has no CRS")
            if src.shape != shape:
                raise InvalidInputError(f"reference {path} is {src.shape} pixels, the tile is {shape}")
            return grid_for(epsg_from_crs(src.crs.to_wkt(), str(path)), tuple(src.transform)[:6], *shape)
    except RasterioIOError as exc:
        raise InvalidInputError(f"reference {path} is not a readable GeoTIFF: {exc}") from exc


def _grid_from_tile(name: str, shape: tuple[int, int]):
    from ..grid import Tile, expected_grid

    grid = expected_grid(Tile.from_name(name))
    if grid.shape != shape:
        raise InvalidInputError(f"tile {name}'s grid is {grid.shape} pixels, the input is {shape}; pass reference= with the tile's GeoTIFF instead")
    return grid


def build_model(weights: str | os.PathLike[str] | None, config: str | EncoderConfig | None, device: str, seed: int = 0, data_source: str | None = None):
    """Model from a checkpoint (sizes checked against ``config`` when it names one) or random init."""
    torch = require_torch()
    from .checkpoint import load_checkpoint
    from .model import TesseraEncoder

    cfg = get_config(config) if isinstance(config, str) else config
    if weights is not None:
        model = load_checkpoint(weights, device="cpu")
        if cfg is not None and (model.config.sampling, model.config.reducer_hidden > 0) != (cfg.sampling, cfg.reducer_hidden > 0):
            from ..errors import CheckpointError

            raise CheckpointError(f"{weights} is a {model.config.name}-family checkpoint, not {cfg.name}; pass config={model.config.name}")
    else:
        torch.manual_seed(seed)
        model = TesseraEncoder(cfg or get_config("v1.0"))
        model.eval().requires_grad_(False)
    if data_source is not None:
        if model.config.sampling != "bucket":
            raise InvalidInputError("data_source (mpc/aws statistics) applies to v1.1 only")
        model.config = model.config.with_(stats=data_source)
    return model.to(device)


def encode(
    input: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    config: str | EncoderConfig = "v1.0",
    batch_size: int = 1024,
    device: str | None = None,
    seed: int = 0,
    official_sampling: bool = False,
    precision: str = "auto",
    substitute: dict[str, str] | None = None,
    reference: str | os.PathLike[str] | None = None,
    tile: str | None = None,
    year: int | None = None,
    version: str | None = None,
    data_source: str | None = None,
    s1_encoding: str = "auto",
    progress: Progress | None = None,
) -> EncodeResult:
    """Encode one input (tile dir, datacube, GeoTIFF stack) into a release mirror at ``out``.

    Writes ``npy/<version>/<year>/<tile>/<tile>{,_scales}.npy``, the landmask GeoTIFF
    (CRS + transform) and ``manifest.parquet``. Georeferencing comes from the input, or, for
    the official tile layout, from ``reference`` (a GeoTIFF on the same pixel grid) or
    ``tile`` (a tile name; its expected grid must match the input's shape). Without it the
    arrays are written as ``<name>.npy`` / ``<name>_scales.npy`` directly under ``out`` and
    the result says it cannot be ingested. ``version`` defaults to ``v1`` (v1.0 config) or
    ``v1.1``; ``year`` defaults to the input's (the year holding most acquisitions).
    """
    from ..sources.layout import write_manifest, write_release_tile

    dev = resolve_device(device)
    out = Path(out)
    inputs = load_input(input, substitute, s1_encoding)
    notes = list(inputs.notes)
    if reference is not None and tile is not None:
        raise InvalidInputError("give reference= or tile=, not both")
    grid = inputs.grid
    if grid is not None and (reference is not None or tile is not None):
        notes.append("the input carries its own georeferencing: reference=/tile= ignored")
    elif reference is not None:
        grid = _grid_from_reference(Path(reference), inputs.shape)
    elif tile is not None:
        grid = _grid_from_tile(tile, inputs.shape)
    model = build_model(weights, config, dev, seed, data_source)
    if weights is None:
        notes.append("no weights given: the encoder is randomly initialised, embeddings carry no meaning")
    result = encode_tile(inputs, model, batch_size=batch_size, device=dev, seed=seed,
                         official_sampling=official_sampling, precision=precision, progress=progress)
    version = version or ("v1.1" if model.config.sampling == "bucket" else "v1")
    year = year if year is not None else inputs.year
    if grid is None or year is None:
        why = "no georeferencing (pass reference=FILE.tif or tile=grid_X_Y)" if grid is None else "no year (give year=)"
        name = inputs.name
        paths = {"grid": f"{name}.npy", "scales": f"{name}_scales.npy"}
        _save_array(out / paths["grid"], result.embeddings)
        _save_array(out / paths["scales"], result.scales)
        notes.append(f"the result cannot be ingested: {why}; wrote bare arrays")
        return EncodeResult(out, None, year, version, False, paths, result.n_embedded, result.n_pixels, inputs.shape, notes)
    tags = {"source": "tessera-search encode", "encoder_config": model.config.name, "weights": str(weights) if weights else "random-init"}
    paths = write_release_tile(out, version, int(year), grid, result.embeddings, result.scales, tags=tags)
    paths["manifest"] = str(write_manifest(out, version, variant="encoder" if weights else "encoder-untrained").relative_to(out))
    return EncodeResult(out, grid.tile.name, int(year), version, True, paths, result.n_embedded, result.n_pixels, inputs.shape, notes)
