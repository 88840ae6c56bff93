"""Progress reporting for long work: the library calls back, it never draws.

Every long-running library function takes ``progress``:

- ``None`` / ``False`` (the default): nothing;
- a callable ``progress(label, total)`` returning a context manager that yields
  ``advance(n=1)``: the caller draws what it likes (the CLI passes a rich bar). An
  ``advance`` that also takes ``note=`` gets a short running note beside the count (a
  download's bytes so far, say); one that does not is called without it.
The CLI's rich bar is :func:`tessera_search.cli.rich_progress`; pass it to see one.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator

__all__ = ["progress_bar"]


@contextlib.contextmanager
def progress_bar(progress, label: str, total: int | None) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1)`` for ``label`` with ``total`` steps, reported as ``progress`` says."""
    if not progress:
        yield lambda n=1, note=None: None
        return
    if not callable(progress):
        from .errors import InvalidInputError

        raise InvalidInputError(
            f"progress is a callback progress(label, total) returning a context manager that yields "
            f"advance(n), not {progress!r}; for a bar on stderr pass tessera_search.cli.rich_progress"
        )
    with progress(label, total) as advance:
        try:
            takes_note = "note" in inspect.signature(advance).parameters
        except (TypeError, ValueError):
            takes_note = False

        def step(n: int = 1, note: str | None = None) -> None:
            if note is not None and takes_note:
                advance(n, note=note)
            else:
                advance(n)

        yield step
