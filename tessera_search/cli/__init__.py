"""The ``tessera-search`` command line: a thin typer layer over the library.

Each command group lives in its own module and registers itself on :data:`app`;
:func:`main` is the one place where errors become messages and exit codes:

- a :class:`~tessera_search.errors.TesseraSearchError` prints ``ErrorName: message`` on
  stderr and exits 1;
- bad parameters (typer/click usage errors) exit 2;
- success exits 0. Results go to stdout (one JSON object with ``--json``); progress and
  logs go to stderr.
"""

from __future__ import annotations

import sys

from ._app import app

__all__ = ["app", "main", "run"]


_COMMAND_MODULES = (
    "commands_tiles", "commands_index", "commands_query", "commands_history", "commands_change",
    "commands_label", "commands_encoder",
)


def _register() -> None:
    """Import every command module; importing one registers its commands on `app`."""
    import importlib

    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:  # a command group not in this build
            if exc.name != f"{__name__}.{name}":
                raise


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: sys.argv[1:]) and return the exit code."""
    import typer.main

    from ..errors import TesseraSearchError
    from ._console import err_console

    _register()
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="tessera-search", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        err_console.print(str(code))
        return 1
    except TesseraSearchError as exc:
        err_console.print(f"[bold red]{type(exc).__name__}[/]: {exc}", highlight=False, soft_wrap=True)
        return 1
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
