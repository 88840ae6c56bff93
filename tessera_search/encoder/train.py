"""Training as in the TESSERA paper: Barlow Twins on sparse temporal samples.

One step (all randomness derived from ``(seed, step)``, so a resumed run continues the
same sequence of batches and draws):

1. **Global shuffling.** Every eligible pixel of every tile under ``--data`` (official tile
   layout; a pixel needs ``min_valid`` usable S2 observations) is one entry of a pool; each
   epoch is a seeded permutation of the whole pool, so a batch mixes pixels from many tiles
   and places, never one neighbourhood.
2. **Two views** of each pixel by sparse random temporal sampling of its *usable*
   observations (cloud mask honoured): ``sample_size_s2`` S2 and ``sample_size_s1`` S1 draws,
   independently per view, sorted by date (:func:`.inputs.sample_random`).
3. **Barlow Twins.** Representation = encoder output (``out_dim``); projector
   :class:`~.model.ProjectionHead` (size configurable); per-dimension batch
   standardisation; C = z_A^T z_B / N; loss = sum (1 - C_ii)^2 + lambda sum_{i!=j} C_ij^2.
4. **Mix regulariser** (Mixed Barlow Twins, Bandara et al. 2023): a mixed input
   x_M = a x_A + (1 - a) x_B[perm], a ~ Beta(alpha, alpha), mixing the normalised
   sequences step by step (DOY column included); its standardised projection z_M must have
   cross-correlations with z_A and z_B equal to the same mix of the real ones:
   C_MA ~ a C(z_A, z_A) + (1 - a) C(z_B[perm], z_A), likewise for z_B (targets detached);
   penalty ``mix_weight * lambda * (||C_MA - target||^2 + ||C_MB - target||^2)``.
5. **AdamW** with linear warm-up then cosine decay, gradient-norm clipping.

Checkpoints (official format plus ``projector.*``, optimizer state and the training
config) are written atomically every ``checkpoint_every`` steps and at the end;
``resume`` continues from one. :func:`knn_probe` measures embedding quality with labels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError, InvalidInputError
from .config import EncoderConfig, get_config, norm_stats
from .data import TileInputs, load_tile_dir
from .inputs import normalize, s1_stack, sample_random

__all__ = ["PixelPool", "TrainConfig", "TrainResult", "barlow_twins_loss", "knn_probe", "mix_regularizer", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train` (the encoder's sizes are in ``encoder``)."""

    encoder: EncoderConfig = field(default_factory=lambda: get_config("v1.0"))
    steps: int = 1000
    batch_size: int = 512
    lr: float = 1e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01
    clip_norm: float = 1.0
    projector_hidden: int = 2048
    projector_out: int = 2048
    projector_layers: int = 3
    bt_lambda: float = 5e-3
    mix_weight: float = 1.0
    mix_alpha: float = 1.0
    sample_size_s2: int = 40
    sample_size_s1: int = 40
    min_valid: int = 4
    seed: int = 0
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "sample_size_s2", "sample_size_s1", "projector_hidden", "projector_out", "projector_layers"):
            if getattr(self, name) <= 0:
                raise InvalidInputError(f"{name} must be positive, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise InvalidInputError("Barlow Twins needs a batch of at least 2 pixels")
        if self.lr <= 0 or self.warmup_steps < 0 or self.clip_norm <= 0:
            raise InvalidInputError("lr and clip_norm must be positive, warmup_steps >= 0")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["encoder"] = self.encoder.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["encoder"] = EncoderConfig.from_dict(d["encoder"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class TrainResult:
    """Where the checkpoint went, how far training got, and the loss per step."""

    checkpoint: Path
    step: int
    losses: list[float]
    n_pixels: int
    n_tiles: int


def _step_seed(seed: int, step: int, salt: int = 0) -> int:
    return (int(seed) * 1_000_003 + int(step) * 7919 + salt * 104_729) % (2**31 - 1)


class PixelPool:
    """All eligible pixels of all tiles under a directory, read lazily (memory-mapped).

    A pixel is eligible with at least ``min_valid`` usable S2 observations (mask set, bands
    not all zero). ``batch(step, size)`` returns the pixels of a global shuffle.
    """

    def __init__(self, root: str | os.PathLike[str], min_valid: int, seed: int) -> None:
        root = Path(root)
        if not root.is_dir():
            raise InvalidInputError(f"training data {root} is not a directory")
        dirs = sorted({p.parent for p in root.rglob("bands.npy")})
        if not dirs:
            raise InvalidInputError(f"no tiles (directories with bands.npy) under {root}; see docs/encoder.md")
        self.tiles: list[TileInputs] = []
        refs = []
        for k, d in enumerate(dirs):
            t = load_tile_dir(d)
            usable = np.zeros(t.shape, dtype=np.int64)
            for i in range(t.bands.shape[0]):  # per timestep: bounded memory
                usable += (np.asarray(t.masks[i]) != 0) & (np.asarray(t.bands[i]) != 0).any(axis=-1)
            flat = np.flatnonzero(usable.reshape(-1) >= min_valid)
            refs.append(np.stack([np.full(flat.size, k), flat], axis=1))
            self.tiles.append(t)
        self.refs = np.concatenate(refs)
        if len(self.refs) < 2:
            raise InvalidInputError(f"fewer than 2 pixels under {root} have >= {min_valid} usable S2 observations")
        self.seed = seed

    def __len__(self) -> int:
        return len(self.refs)

    def indices(self, step: int, size: int) -> np.ndarray:
        """(size, 2) [tile, flat pixel] of batch ``step``: consecutive slices of per-epoch permutations."""
        n = len(self.refs)
        pos = np.arange(step * size, (step + 1) * size)
        out = np.empty((size, 2), dtype=np.int64)
        for epoch in np.unique(pos // n):
            sel = pos // n == epoch
            perm = np.random.default_rng([self.seed, int(epoch)]).permutation(n)
            out[sel] = self.refs[perm[pos[sel] % n]]
        return out

    def gather(self, refs: np.ndarray) -> dict[str, np.ndarray]:
        """Raw series of the pixels, padded to the longest series among their tiles."""
        per = []
        for k in np.unique(refs[:, 0]):
            sel = np.flatnonzero(refs[:, 0] == k)
            t = self.tiles[int(k)]
            rows, cols = np.divmod(refs[sel, 1], t.shape[1])
            bands = np.asarray(t.bands[:, rows, cols]).transpose(1, 0, 2)
            masks = np.asarray(t.masks[:, rows, cols]).T
            s1, s1_doy, flag = s1_stack(np.asarray(t.sar_asc[:, rows, cols]), t.sar_asc_doy,
                                        np.asarray(t.sar_desc[:, rows, cols]), t.sar_desc_doy)
            per.append((sel, bands, masks, np.asarray(t.doys, np.int64), s1.transpose(1, 0, 2), s1_doy, flag))
        n = len(refs)
        t2 = max(p[1].shape[1] for p in per)
        t1 = max(p[4].shape[1] for p in per)
        out = {
            "bands": np.zeros((n, t2, 10), np.float32), "s2_valid": np.zeros((n, t2), bool), "s2_doy": np.zeros((n, t2), np.int64),
            "s1": np.zeros((n, t1, 2), np.float32), "s1_valid": np.zeros((n, t1), bool), "s1_doy": np.zeros((n, t1), np.int64),
            "s1_desc": np.zeros((n, t1), bool),
        }
        for sel, bands, masks, doys, s1, s1_doy, flag in per:
            a, b = bands.shape[1], s1.shape[1]
            out["bands"][sel, :a] = bands
            out["s2_valid"][sel, :a] = (masks != 0) & (bands != 0).any(axis=-1)
            out["s2_doy"][sel, :a] = doys
            out["s1"][sel, :b] = s1
            out["s1_valid"][sel, :b] = (s1 != 0).any(axis=-1)
            out["s1_doy"][sel, :b] = s1_doy
            out["s1_desc"][sel, :b] = flag == 1
        return out


def make_view(raw: dict[str, np.ndarray], keys: np.ndarray, cfg: TrainConfig, seed: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """One sparse temporal view: ((N, n2, 11), (N, n1, 3)) float32 normalised inputs."""
    stats = norm_stats(cfg.encoder.stats)
    i2 = sample_random(raw["s2_valid"], cfg.sample_size_s2, keys, seed, stream)
    i1 = sample_random(raw["s1_valid"], cfg.sample_size_s1, keys, seed, stream + 1)
    s2 = normalize(np.take_along_axis(raw["bands"], i2[..., None], axis=1), np.take_along_axis(raw["s2_doy"], i2, axis=1), stats.s2_mean, stats.s2_std)
    raw1 = np.take_along_axis(raw["s1"], i1[..., None], axis=1)
    desc = np.take_along_axis(raw["s1_desc"], i1, axis=1)[..., None]
    mean = np.where(desc, stats.s1_desc_mean, stats.s1_asc_mean).astype(np.float32)
    std = np.where(desc, stats.s1_desc_std, stats.s1_asc_std).astype(np.float32)
    s1 = np.concatenate([(raw1 - mean) / std, np.take_along_axis(raw["s1_doy"], i1, axis=1)[..., None].astype(np.float32)], axis=-1)
    return s2, s1


def _standardise(z):
    return (z - z.mean(0)) / (z.std(0, unbiased=False) + 1e-6)


def barlow_twins_loss(za, zb, lam: float):
    """Barlow Twins loss of (N, P) projections: on-diagonal (1 - C_ii)^2 + lam * off-diagonal C_ij^2."""
    import torch

    n = za.shape[0]
    c = _standardise(za).t() @ _standardise(zb) / n
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on + lam * off


def mix_regularizer(zm, za, zb, perm, alpha: float, lam: float, weight: float):
    """Mixed-Barlow-Twins penalty: the mixed sample's cross-correlations must mix linearly."""
    n = za.shape[0]
    sm, sa, sb = _standardise(zm), _standardise(za), _standardise(zb)
    c_ma, c_mb = sm.t() @ sa / n, sm.t() @ sb / n
    with_grad_off = [x.detach() for x in (sa, sb)]
    da, db = with_grad_off
    t_ma = alpha * (da.t() @ da) / n + (1 - alpha) * (db[perm].t() @ da) / n
    t_mb = alpha * (da.t() @ db) / n + (1 - alpha) * (db[perm].t() @ db) / n
    return weight * lam * ((c_ma - t_ma).pow(2).sum() + (c_mb - t_mb).pow(2).sum())


def _lr_at(cfg: TrainConfig, step: int) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    frac = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def train(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: TrainConfig | None = None,
    *,
    resume: str | os.PathLike[str] | None = None,
    device: str | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Train (or continue training) a TESSERA encoder on the tiles under ``data``.

    Writes ``out/checkpoint_last.pt`` (official format + projector + optimizer state).
    ``resume``: a checkpoint written by this function; its training config is used, with
    ``config.steps`` (when ``config`` is given) as the new total. ``progress(step, total,
    loss)`` is called after each step. Returns the checkpoint path and the loss history.
    """
    from .infer import require_torch, resolve_device

    torch = require_torch()
    from .checkpoint import load_state_dict, read_checkpoint, save_checkpoint
    from .model import ProjectionHead, TesseraEncoder

    dev = resolve_device(device)
    out = Path(out)
    start, losses, state = 0, [], None
    if resume is not None:
        state = read_checkpoint(resume)
        if not isinstance(state.get("train_config"), dict) or "optimizer_state_dict" not in state:
            raise CheckpointError(f"{resume} is not a training checkpoint written by `tessera-search train` (no optimizer state)")
        saved = TrainConfig.from_dict(state["train_config"])
        config = saved if config is None else TrainConfig(**{**asdict(saved), "encoder": saved.encoder, "steps": config.steps})
        start = int(state["step"])
        losses = [float(x) for x in state.get("losses", [])]
    cfg = config or TrainConfig()
    pool = PixelPool(data, cfg.min_valid, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = TesseraEncoder(cfg.encoder)
    projector = ProjectionHead(cfg.encoder.out_dim, cfg.projector_hidden, cfg.projector_out, cfg.projector_layers)
    if state is not None:
        sd = load_state_dict({"model_state_dict": {k: v for k, v in state["model_state_dict"].items()}})
        model.load_state_dict(sd, strict=True)
        proj = {k[len("projector."):]: v for k, v in state["model_state_dict"].items() if k.startswith("projector.")}
        projector.load_state_dict(proj, strict=True)
    model.to(dev).train()
    projector.to(dev).train()
    params = list(model.parameters()) + list(projector.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if state is not None:
        opt.load_state_dict(state["optimizer_state_dict"])
    ckpt_path = out / "checkpoint_last.pt"

    def save(step: int) -> None:
        save_checkpoint(ckpt_path, model, epoch=step * cfg.batch_size // len(pool), step=step, projector=projector,
                        extra={"optimizer_state_dict": opt.state_dict(), "train_config": cfg.to_dict(), "losses": list(losses)})

    for step in range(start, cfg.steps):
        rng = np.random.default_rng(_step_seed(cfg.seed, step, 1))
        torch.manual_seed(_step_seed(cfg.seed, step, 2))
        refs = pool.indices(step, cfg.batch_size)
        raw = pool.gather(refs)
        keys = refs[:, 0] * (1 << 32) + refs[:, 1]
        vseed = _step_seed(cfg.seed, step, 3)
        a2, a1 = make_view(raw, keys, cfg, vseed, 10)
        b2, b1 = make_view(raw, keys, cfg, vseed, 20)
        alpha = float(rng.beta(cfg.mix_alpha, cfg.mix_alpha))
        perm = rng.permutation(len(refs))
        m2 = alpha * a2 + (1 - alpha) * b2[perm]
        m1 = alpha * a1 + (1 - alpha) * b1[perm]
        for g in opt.param_groups:
            g["lr"] = _lr_at(cfg, step)
        t = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).to(dev) for k, v in
             {"a2": a2, "a1": a1, "b2": b2, "b1": b1, "m2": m2, "m1": m1}.items()}
        za = projector(model(t["a2"], t["a1"]))
        zb = projector(model(t["b2"], t["b1"]))
        loss = barlow_twins_loss(za, zb, cfg.bt_lambda)
        if cfg.mix_weight > 0:
            zm = projector(model(t["m2"], t["m1"]))
            loss = loss + mix_regularizer(zm, za, zb, torch.from_numpy(perm).to(dev), alpha, cfg.bt_lambda, cfg.mix_weight)
        if not torch.isfinite(loss):
            raise InvalidInputError(f"training diverged at step {step} (loss {loss.item()}); lower lr=")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
        opt.step()
        losses.append(float(loss.item()))
        if progress:
            progress(step + 1, cfg.steps, losses[-1])
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            save(step + 1)
    save(max(cfg.steps, start))
    model.eval()
    return TrainResult(ckpt_path, max(cfg.steps, start), losses, len(pool), len(pool.tiles))


def knn_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, k: int = 5) -> float:
    """Accuracy of a k-nearest-neighbour (cosine, majority vote) classifier: (N, D) features."""
    def unit(x):
        x = np.asarray(x, dtype=np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    sim = unit(test_x) @ unit(train_x).T
    nn_idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    votes = np.asarray(train_y)[nn_idx]
    n_cls = int(max(np.max(train_y), np.max(test_y))) + 1
    counts = np.zeros((len(test_x), n_cls))
    np.add.at(counts, (np.arange(len(test_x))[:, None], votes), 1)
    return float((counts.argmax(axis=1) == np.asarray(test_y)).mean())
