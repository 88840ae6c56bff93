"""Load and save TESSERA checkpoints in the official format, safely.

Format (``reference/encoder-spec.md`` section 4): a ``torch.save`` dict whose state dict is
under ``model_state`` or, failing that, ``model_state_dict``; keys ``s2_backbone.*``,
``s1_backbone.*``, ``dim_reducer.*``. Loading here:

* always uses ``torch.load(..., weights_only=True)``: no pickled code runs; a file that
  needs more than tensors and plain containers is refused (:class:`CheckpointError`);
* removes every ``_orig_mod.`` (torch.compile) occurrence from key names;
* ignores training-only heads (``projector.*``, ``segmented_matryoshka_projector.*``);
* is strict about everything else: a missing key, an unexpected key or a shape mismatch
  raises :class:`CheckpointError` naming the keys (the official v1.1 loader only logs them).

When no configuration is given the sizes are read from the tensor shapes, and the head
count from the checkpoint's ``config`` (``nhead`` / ``s2_num_heads`` / ``n_heads``), else 4
as in the released models. :func:`save_checkpoint` writes the same format (plus our config
and, for training, optimizer state), atomically.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from .._io import atomic_path
from ..errors import CheckpointError, InvalidInputError
from .config import EncoderConfig, get_config

__all__ = [
    "TRAINING_ONLY_PREFIXES",
    "config_from_state_dict",
    "load_checkpoint",
    "load_state_dict",
    "read_checkpoint",
    "save_checkpoint",
]

TRAINING_ONLY_PREFIXES = ("projector.", "segmented_matryoshka_projector.")
_MODEL_PREFIXES = ("s2_backbone.", "s1_backbone.", "dim_reducer.")
_OUR_MARK = "tessera_search"


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True`` on CPU; the top-level dict."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not _looks_like_checkpoint(path):
        raise CheckpointError(
            f"{path} is not a torch checkpoint (neither a torch zip archive nor a pickle); "
            "pass the .pt file of an official or tessera-search encoder checkpoint"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "invalid load key" in str(exc):
            raise CheckpointError(f"{path} is not a torch checkpoint (its bytes are not a pickle)") from exc
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain containers, so it is not loaded "
            f"(weights_only=True refuses to run pickled code): {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {exc}") from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: top level is {type(ckpt).__name__}, expected a dict with 'model_state_dict'")
    return ckpt


def _looks_like_checkpoint(path: Path) -> bool:
    """A torch checkpoint is a zip archive (torch >= 1.6) or a pickle stream (legacy)."""
    import zipfile

    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc.strerror or exc}") from exc
    # protocol 2+ pickles start with PROTO (0x80) and the protocol number
    return zipfile.is_zipfile(path) or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def load_state_dict(ckpt: dict[str, Any], where: str = "checkpoint") -> dict[str, Any]:
    """The model tensors of a checkpoint dict: prefixes stripped, training-only keys dropped."""
    import torch

    if "model_state" in ckpt:
        sd = ckpt["model_state"]
    elif "model_state_dict" in ckpt:
        sd = ckpt["model_state_dict"]
    else:
        raise CheckpointError(
            f"{where} has neither 'model_state' nor 'model_state_dict' (top-level keys: {sorted(map(str, ckpt))})"
        )
    if not isinstance(sd, dict):
        raise CheckpointError(f"{where}: the state dict is a {type(sd).__name__}, not a dict")
    out: dict[str, Any] = {}
    for key, value in sd.items():
        name = str(key).replace("_orig_mod.", "")
        if name.startswith(TRAINING_ONLY_PREFIXES):
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{where}: entry {name!r} is a {type(value).__name__}, not a tensor")
        out[name] = value
    return out


def _heads_from(cfg: dict[str, Any]) -> int | None:
    for k in ("n_heads", "nhead", "s2_num_heads", "num_heads"):
        v = cfg.get(k)
        if isinstance(v, int) and v > 0:
            return v
    return None


def config_from_state_dict(sd: dict[str, Any], ckpt_config: dict[str, Any] | None = None, n_heads: int | None = None) -> EncoderConfig:
    """Infer an :class:`EncoderConfig` from tensor shapes (and the checkpoint's config dict)."""
    cfg = dict(ckpt_config or {})
    if cfg.get(_OUR_MARK):
        return EncoderConfig.from_dict(cfg)
    try:
        d_model, s2_bands = sd["s2_backbone.embedding.0.weight"].shape
        s1_bands = sd["s1_backbone.embedding.0.weight"].shape[1]
        ffn = sd["s2_backbone.transformer_encoder.layers.0.linear1.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"cannot infer the model sizes: key {exc.args[0]!r} is missing") from None
    layer_ids = {int(m.group(1)) for k in sd if (m := re.match(r"s2_backbone\.transformer_encoder\.layers\.(\d+)\.", k))}
    n_layers = max(layer_ids) + 1 if layer_ids else 0
    if "dim_reducer.4.weight" in sd:
        family = get_config("v1.1")
        reducer_hidden = sd["dim_reducer.0.weight"].shape[0]
        out_dim = sd["dim_reducer.4.weight"].shape[0]
        save_dim = int(cfg.get("save_embedding_dim", min(128, out_dim)))
    elif "dim_reducer.0.weight" in sd:
        family = get_config("v1.0")
        reducer_hidden = 0
        out_dim = sd["dim_reducer.0.weight"].shape[0]
        save_dim = min(128, out_dim)
    else:
        raise CheckpointError("cannot infer the model sizes: no dim_reducer weights")
    heads = n_heads or _heads_from(cfg) or family.n_heads
    stats = cfg.get("data_source") if family.sampling == "bucket" and cfg.get("data_source") in ("mpc", "aws") else family.stats
    try:
        return family.with_(
            d_model=int(d_model), n_heads=int(heads), n_layers=int(n_layers), dim_feedforward=int(ffn),
            s2_bands=int(s2_bands), s1_bands=int(s1_bands), reducer_hidden=int(reducer_hidden),
            out_dim=int(out_dim), save_dim=int(save_dim), stats=stats,
        )
    except InvalidInputError as exc:
        raise CheckpointError(f"the checkpoint's shapes give an impossible configuration: {exc}") from None


def _check_keys(model, sd: dict[str, Any], where: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    mismatched = [
        f"{k} {tuple(sd[k].shape)} != {tuple(expected[k].shape)}"
        for k in sorted(set(sd) & set(expected))
        if tuple(sd[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    if mismatched:
        problems.append(f"shape mismatches (checkpoint != model) ({len(mismatched)}): {'; '.join(mismatched[:8])}")
    if problems:
        raise CheckpointError(f"{where} does not fit the model (config {model.config.name}, D={model.config.d_model}): " + " | ".join(problems))


def load_checkpoint(
    path: str | os.PathLike[str],
    config: EncoderConfig | None = None,
    device: str = "cpu",
    n_heads: int | None = None,
):
    """Load a checkpoint into a frozen :class:`~.model.TesseraEncoder` in eval mode.

    ``config`` None infers the sizes from the file (see the module docstring); given, the
    file must match it exactly. Returns the model on ``device``.
    """
    import torch

    from .model import TesseraEncoder

    ckpt = read_checkpoint(path)
    sd = load_state_dict(ckpt, where=str(path))
    if config is None:
        raw_cfg = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else None
        config = config_from_state_dict(sd, raw_cfg, n_heads=n_heads)
    model = TesseraEncoder(config)
    _check_keys(model, sd, str(path))
    with torch.no_grad():
        model.load_state_dict(sd, strict=True)
    model.eval().requires_grad_(False)
    return model.to(device)


def save_checkpoint(
    path: str | os.PathLike[str],
    model,
    *,
    epoch: int = 0,
    step: int = 0,
    projector=None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``{'epoch', 'step', 'model_state_dict', 'config', ...}`` atomically.

    The state dict holds ``s2_backbone.*``, ``s1_backbone.*``, ``dim_reducer.*`` (and
    ``projector.*`` when given, which official loaders ignore), as CPU tensors, so the file
    loads with ``weights_only=True`` here and with the official loaders.
    ``extra`` adds top-level entries (tensors, numbers, strings, lists, dicts only).
    """
    import torch

    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if projector is not None:
        sd.update({f"projector.{k}": v.detach().cpu() for k, v in projector.state_dict().items()})
    config = dict(model.config.to_dict(), **{_OUR_MARK: True, "nhead": model.config.n_heads})
    ckpt: dict[str, Any] = {"epoch": int(epoch), "step": int(step), "model_state_dict": sd, "config": config}
    ckpt.update(extra or {})
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path
