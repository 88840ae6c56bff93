"""Progress reporting for long work: the library calls back, it never draws.

Every long-running library function takes ``progress``:

- ``None`` / ``False`` (the default): nothing;
- a callable ``progress(label, total)`` returning a context manager that yields
  ``advance(n=1)``: the caller draws what it likes (the CLI passes a rich bar);
The CLI's rich bar is :func:`tessera_search.cli.rich_progress`; pass it to see one.
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
    if not callable(progress):
        from .errors import InvalidInputError

        raise InvalidInputError(
            f"progress is a callback progress(label, total) returning a context manager that yields "
            f"advance(n), not {progress!r}; for a bar on stderr pass tessera_search.cli.rich_progress"
        )
    with progress(label, total) as advance:
        yield advance
