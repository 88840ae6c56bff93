"""Encoder configurations (sizes, input construction) and the normalisation constants.

Two released configurations exist (``reference/encoder-spec.md``):

* ``v1.0`` (the QAT checkpoint behind the original GeoTessera int8 tiles): backbone width
  D = 512, 4 heads, 4 layers, FFN 4096, ``dim_reducer`` = Linear(1024 -> 128); inputs are 40
  randomly drawn observations per sensor, normalised with the v1.0 statistics.
* ``v1.1``: D = 768, FFN 2048, ``dim_reducer`` = Linear(1536 -> 3072) -> LayerNorm -> ReLU ->
  Dropout(0.2) -> Linear(3072 -> 192), of which the first 128 dims are kept; inputs are all
  valid observations, resampled deterministically to a multiple of 8 ("buckets"), normalised
  with per-source (MPC or AWS) and per-orbit statistics.

This module needs numpy only (no torch), so the CLI can validate options cheaply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import InvalidInputError

__all__ = [
    "EncoderConfig",
    "NormStats",
    "S2_BAND_ORDER",
    "S1_BAND_ORDER",
    "V1_0",
    "V1_1",
    "get_config",
    "norm_stats",
]

#: Channel order of the S2 input. Not wavelength order: the weights and statistics depend on it.
S2_BAND_ORDER: tuple[str, ...] = ("B04", "B02", "B03", "B08", "B8A", "B05", "B06", "B07", "B11", "B12")
#: Channel order of the S1 input.
S1_BAND_ORDER: tuple[str, ...] = ("VV", "VH")

_F32 = np.float32


@dataclass(frozen=True)
class NormStats:
    """Per-channel float32 means/stds; S1 may differ between ascending and descending orbits."""

    s2_mean: np.ndarray  # (10,) float32, DN
    s2_std: np.ndarray  # (10,) float32, DN
    s1_asc_mean: np.ndarray  # (2,) float32, encoded dB
    s1_asc_std: np.ndarray
    s1_desc_mean: np.ndarray
    s1_desc_std: np.ndarray


def _a(values: list[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=_F32)
    arr.setflags(write=False)
    return arr


_V10_S1_MEAN = [5484.0407, 3003.7812]
_V10_S1_STD = [1871.2334, 1726.0670]
_STATS = {
    "v1.0": NormStats(
        s2_mean=_a([1711.0938, 1308.8511, 1546.4543, 3010.1293, 3106.5083, 2068.3044, 2685.0845, 2931.5889, 2514.6928, 1899.4922]),
        s2_std=_a([1926.1026, 1862.9751, 1803.1792, 1741.7837, 1677.4543, 1888.7862, 1736.3090, 1715.8104, 1514.5199, 1398.4779]),
        s1_asc_mean=_a(_V10_S1_MEAN),
        s1_asc_std=_a(_V10_S1_STD),
        s1_desc_mean=_a(_V10_S1_MEAN),
        s1_desc_std=_a(_V10_S1_STD),
    ),
    "mpc": NormStats(
        s2_mean=_a([2683.4553, 2223.3630, 2432.0950, 3633.1970, 3602.1755, 3006.4324, 3400.2710, 3515.6392, 2456.9163, 1983.8783]),
        s2_std=_a([2739.5217, 2846.2993, 2690.8250, 2290.0439, 2088.8970, 2673.1106, 2381.4521, 2229.5225, 1601.0942, 1495.3545]),
        s1_asc_mean=_a([5588.3291, 3025.6270]),
        s1_asc_std=_a([1713.4646, 1693.0471]),
        s1_desc_mean=_a([5552.9683, 2955.0520]),
        s1_desc_std=_a([1685.5857, 1677.6414]),
    ),
    "aws": NormStats(
        s2_mean=_a([2793.6589, 2356.7776, 2551.0496, 3741.9229, 3713.7844, 3120.1997, 3516.3342, 3637.0342, 2501.0283, 2038.1504]),
        s2_std=_a([2810.0093, 2933.8835, 2755.6360, 2344.5027, 2145.7986, 2743.9019, 2438.8601, 2286.5977, 1680.7367, 1585.5529]),
        s1_asc_mean=_a([5697.0859, 2838.6687]),
        s1_asc_std=_a([1671.3737, 1789.4116]),
        s1_desc_mean=_a([5759.1367, 2873.2854]),
        s1_desc_std=_a([1583.2858, 1747.8390]),
    ),
}


def norm_stats(name: str) -> NormStats:
    """Statistics by name: ``v1.0``, ``mpc`` or ``aws`` (the v1.1 data sources)."""
    try:
        return _STATS[name]
    except KeyError:
        raise InvalidInputError(f"unknown normalisation statistics {name!r}; use one of {sorted(_STATS)}") from None


@dataclass(frozen=True)
class EncoderConfig:
    """Sizes and input construction of a TESSERA encoder.

    ``d_model`` is the backbone width D (= 4 * latent_dim in the released models).
    ``reducer_hidden`` = 0 means a single Linear(2D -> out_dim) reducer (v1.0); otherwise the
    v1.1 MLP Linear(2D -> hidden) -> LayerNorm -> ReLU -> Dropout -> Linear(hidden -> out_dim).
    ``sampling`` is ``random`` (v1.0: ``sample_size_s2``/``sample_size_s1`` draws per pixel) or
    ``bucket`` (v1.1: every valid observation, deterministically resampled to a multiple of 8).
    ``stats`` names the normalisation statistics (``v1.0``, ``mpc``, ``aws``).
    """

    name: str = "v1.0"
    d_model: int = 512
    n_heads: int = 4
    n_layers: int = 4
    dim_feedforward: int = 4096
    dropout: float = 0.1
    s2_bands: int = 10
    s1_bands: int = 2
    reducer_hidden: int = 0
    reducer_dropout: float = 0.2
    out_dim: int = 128
    save_dim: int = 128
    sampling: str = "random"
    sample_size_s2: int = 40
    sample_size_s1: int = 40
    bucket_step: int = 8
    bucket_max: int = 256
    stats: str = "v1.0"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.d_model <= 0 or self.n_heads <= 0 or self.d_model % self.n_heads:
            raise InvalidInputError(f"d_model {self.d_model} must be a positive multiple of n_heads {self.n_heads}")
        if self.d_model % 2:
            raise InvalidInputError("d_model must be even (sin/cos day-of-year encoding)")
        if self.n_layers <= 0 or self.dim_feedforward <= 0:
            raise InvalidInputError("n_layers and dim_feedforward must be positive")
        if not 0 < self.save_dim <= self.out_dim:
            raise InvalidInputError(f"save_dim {self.save_dim} must be in 1..out_dim ({self.out_dim})")
        if self.sampling not in ("random", "bucket"):
            raise InvalidInputError(f"sampling must be 'random' or 'bucket', not {self.sampling!r}")
        if self.sample_size_s2 <= 0 or self.sample_size_s1 <= 0:
            raise InvalidInputError("sample sizes must be positive")
        norm_stats(self.stats)

    @property
    def latent_dim(self) -> int:
        return self.d_model // 4

    def with_(self, **changes: Any) -> EncoderConfig:
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (ints, floats, strings) for a checkpoint's ``config`` entry."""
        d = asdict(self)
        d.pop("extra")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderConfig:
        names = set(cls.__dataclass_fields__) - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in names})


V1_0 = EncoderConfig()
V1_1 = EncoderConfig(
    name="v1.1",
    d_model=768,
    dim_feedforward=2048,
    reducer_hidden=3072,
    out_dim=192,
    save_dim=128,
    sampling="bucket",
    stats="mpc",
)
_PRESETS = {"v1.0": V1_0, "v1.1": V1_1}


def get_config(name: str = "v1.0", **overrides: Any) -> EncoderConfig:
    """A released configuration by name (``v1.0`` default, or ``v1.1``), with size overrides."""
    try:
        base = _PRESETS[name]
    except KeyError:
        raise InvalidInputError(f"unknown encoder config {name!r}; use v1.0 or v1.1") from None
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return base.with_(**overrides) if overrides else base
