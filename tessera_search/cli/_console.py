"""Consoles: results on stdout, progress and messages on stderr."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def rich_progress(label: str, total: int | None) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr; yields ``advance(n=1)`` (the library's ``progress``)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err_console,
    )
    with bar:
        task = bar.add_task(label, total=total, note="")

        def advance(n: int = 1, note: str | None = None) -> None:
            bar.update(task, advance=n, **({} if note is None else {"note": note}))

        yield advance


def warn(message: str) -> None:
    """One ``Warning: ...`` line on stderr."""
    err_console.print(f"[yellow]Warning[/]: {message}", highlight=False, soft_wrap=True)


def bar(json: bool):
    """The ``progress`` to pass the library: the rich bar, or None when printing JSON."""
    return None if json else rich_progress
