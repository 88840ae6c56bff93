"""Consoles: results on stdout, progress and messages on stderr."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from rich.console import Console

err_console = Console(stderr=True)


def out_console() -> Console:
    """A console on the *current* sys.stdout (tests swap it)."""
    return Console(file=sys.stdout, soft_wrap=True)


def _jsonable(value: Any) -> Any:
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def print_json(obj: Any) -> None:
    """One JSON object on stdout. Floats print with repr precision (float32 round-trips)."""
    sys.stdout.write(json.dumps(_jsonable(obj), allow_nan=False) + "\n")
    sys.stdout.flush()
