"""Progress reporting for long work: the library calls back, it never draws.

Every long-running library function takes ``progress``:

- ``None`` / ``False`` (the default): nothing;
- a callable ``progress(label, total)`` returning a context manager that yields
  ``advance(n=1)``: the caller draws what it likes (the CLI passes a rich bar);
- ``True``: the CLI's rich progress bar on stderr, for callers who ask for exactly that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

__all__ = ["progress_bar"]


@contextlib.contextmanager
def progress_bar(progress, label: str, total: int | None) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1)`` for ``label`` with ``total`` steps, reported as ``progress`` says."""
    if not progress:
        yield lambda n=1: None
        return
    if progress is True:
        from .cli._console import rich_progress as progress
    with progress(label, total) as advance:
        yield advance
