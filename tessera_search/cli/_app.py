"""The typer application object and the global options (workspace, verbosity)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="tessera-search",
    help="Search the Earth by example over TESSERA pixel embeddings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


class State:
    """Options every command sees (set by the top-level callback): the workspace, built once."""

    workspace = None  # tessera_search.workspace.Workspace

    @property
    def home(self):
        """The workspace, which library functions take wherever they take ``home``."""
        return self.workspace


state = State()


@app.callback()
def _global(
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            help="Workspace directory (store, catalog, indexes). Default: $TESSERA_SEARCH_HOME or ./indexes.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Search the Earth by example over TESSERA pixel embeddings.

    Typical use: `tessera-search build-index --region kenya --year 2023`, then
    `tessera-search query --point 36.8,-1.3 --k 1000 --out matches.tif`.
    """
    from ..workspace import Workspace

    state.workspace = Workspace(home)
