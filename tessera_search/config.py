"""Workspace location: the one place environment variables are read.

The workspace (store, catalog, index shards) is ``indexes/`` under the current directory,
unless ``TESSERA_SEARCH_HOME`` or an explicit ``home`` argument / ``--home`` option says
otherwise. Library functions take ``home`` explicitly; only :func:`resolve_home` looks
at the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_HOME", "ENV_HOME", "resolve_home"]

ENV_HOME = "TESSERA_SEARCH_HOME"
DEFAULT_HOME = Path("indexes")


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The workspace directory: ``home`` if given (a path or a Workspace), else
    $TESSERA_SEARCH_HOME, else ./indexes."""
    if getattr(home, "home", None) is not None and not isinstance(home, (str, Path)):
        return home.home  # a Workspace
    if home is None:
        home = os.environ.get(ENV_HOME) or DEFAULT_HOME
    return Path(home).expanduser().absolute()
