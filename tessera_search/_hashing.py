"""Counter-based hashing shared by the seeded generators: the splitmix64 finaliser.

Pure integer arithmetic (wrapping modulo 2**64), so a hash is the same on every CPU and
in any array shape: what makes seeded draws reproducible pixel by pixel.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GOLDEN", "splitmix64"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
"""The 64-bit golden-ratio increment of splitmix64's sequence."""


def splitmix64(h: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of a uint64 array (wraps modulo 2**64)."""
    h = h ^ (h >> np.uint64(30))
    h = h * _M1
    h = h ^ (h >> np.uint64(27))
    h = h * _M2
    return h ^ (h >> np.uint64(31))
