"""The bundled TESSERA encoder: official-compatible inference, int8 tiles, and training.

Given the same weights, :mod:`tessera_search.encoder` computes what the official TESSERA
implementation computes (``reference/encoder-spec.md``; parity tests against the official
fixtures), writes release-layout tiles, and trains the model as in the paper (Barlow Twins
on sparse temporal samples, global shuffling, mix regulariser).

    >>> from tessera_search.encoder import encode, load_checkpoint        # doctest: +SKIP
    >>> encode("tiles/grid_0.15_52.05", "mirror", weights="tessera_v1.pt",
    ...        tile="grid_0.15_52.05", year=2024)                          # doctest: +SKIP

Modules: :mod:`.config` (sizes, statistics; numpy only), :mod:`.model` (PyTorch modules),
:mod:`.checkpoint` (safe loading/saving), :mod:`.data` (inputs, normalisation, sampling),
:mod:`.infer` (tiles, ``encode``), :mod:`.train` (``train``, Barlow Twins),
:mod:`.synthetic_series` (synthetic S1/S2 pixel series). torch is imported on first use of
a name that needs it; without torch those names raise :class:`MissingDependencyError`.
"""

from __future__ import annotations

import importlib

from .config import V1_0, V1_1, EncoderConfig, get_config

__all__ = [
    "EncodeResult",
    "EncoderConfig",
    "TesseraEncoder",
    "TileInputs",
    "TrainConfig",
    "TrainResult",
    "V1_0",
    "V1_1",
    "encode",
    "encode_tile",
    "get_config",
    "knn_probe",
    "load_checkpoint",
    "load_input",
    "save_checkpoint",
    "train",
    "write_synthetic_tiles",
]

_LAZY = {
    "TesseraEncoder": "model",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "TileInputs": "data",
    "load_input": "data",
    "EncodeResult": "infer",
    "encode": "infer",
    "encode_tile": "infer",
    "TrainConfig": "train",
    "TrainResult": "train",
    "train": "train",
    "knn_probe": "train",
    "write_synthetic_tiles": "synthetic_series",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module in ("model", "train"):
        from .infer import require_torch

        require_torch()
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
