"""Progress bars and warnings on stderr (rich), shared by every long-running operation."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

__all__ = ["progress_bar", "warn"]


def warn(message: str) -> None:
    """A yellow line on stderr."""
    from rich.console import Console

    Console(stderr=True).print(f"[yellow]{message}[/]", highlight=False, soft_wrap=True)


@contextlib.contextmanager
def progress_bar(enabled: bool, label: str, total: int | None) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr; yields ``advance(n=1)``. Disabled: a no-op."""
    if not enabled:
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
    )
    with bar:
        task = bar.add_task(label, total=total)
        yield lambda n=1: bar.advance(task, n)
