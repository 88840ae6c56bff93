"""The ``tessera-search`` command line: a thin typer layer over the library.

Each command group lives in its own module and registers itself on :data:`app`;
:func:`main` is the one place where errors become messages and exit codes:

- a :class:`~tessera_search.errors.TesseraSearchError` prints ``ErrorName: message`` on
  stderr and exits 2 when it is an :class:`~tessera_search.errors.InvalidInputError` (a bad
  value of an option or of an input file: the same as a usage error), 1 otherwise;
- bad parameters (typer/click usage errors) exit 2;
- with ``--json``, an error is also ``{"error": Name, "message": ...}`` on stdout;
- library warnings (:class:`~tessera_search.errors.TesseraSearchWarning`) print one
  ``Warning: ...`` line on stderr;
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
    """Run the CLI on ``argv`` (default: sys.argv[1:]) and return the exit code.

    The one place where errors become messages and exit codes (see :func:`exit_code`);
    with ``--json`` an error is also one JSON object on stdout.
    """
    import warnings

    import typer
    import typer.main

    from ..errors import TesseraSearchError, TesseraSearchWarning
    from ._console import err_console

    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    want_json = "--json" in args
    _register()
    command = typer.main.get_command(app)
    click_error = _click_exceptions().ClickException
    with warnings.catch_warnings():
        warnings.simplefilter("always", TesseraSearchWarning)
        warnings.showwarning = _show_warning
        try:
            result = command.main(args=args, prog_name="tessera-search", standalone_mode=False)
        except click_error as exc:
            _usage_error(exc, want_json)
            return exc.exit_code
        except typer.Abort:
            err_console.print("aborted")
            return 1
        except SystemExit as exc:  # rich on a closed pipe, or a command's own exit
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except TesseraSearchError as exc:
            code = exit_code(exc)
            if want_json:
                print_error_json(exc)
            err_console.print(f"[bold red]{type(exc).__name__}[/]: {exc}", highlight=False, soft_wrap=True)
            return code
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    return 0


def _click_exceptions():
    """The click exception module typer uses (vendored as ``typer._click`` from typer 0.29)."""
    try:
        from typer._click import exceptions
    except ImportError:  # older typer: click itself
        from click import exceptions
    return exceptions


def exit_code(exc: BaseException) -> int:
    """2 for input that cannot be used as given (usage), 1 for every other failure."""
    from ..errors import InvalidInputError

    return 2 if isinstance(exc, InvalidInputError) else 1


def print_error_json(exc: BaseException, name: str | None = None, message: str | None = None) -> None:
    """``{"error": Name, "message": ...}`` (plus suggestions / details) on stdout."""
    from ._console import print_json

    doc: dict = {"error": name or type(exc).__name__, "message": str(exc) if message is None else message}
    suggestions = getattr(exc, "suggestions", None)
    if suggestions:
        doc["suggestions"] = list(suggestions)
    details = getattr(exc, "details", None)
    if details:
        doc["details"] = details
    print_json(doc)


def _usage_error(exc, want_json: bool) -> None:
    """A click usage error: rich-formatted on stderr, and JSON on stdout with --json."""
    from typer import rich_utils

    if want_json:
        name = "UsageError" if isinstance(exc, _click_exceptions().UsageError) else type(exc).__name__
        print_error_json(exc, name=name, message=exc.format_message())
    rich_utils.rich_format_error(exc)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Library warnings as one yellow line on stderr (no file and line noise)."""
    from ._console import err_console

    err_console.print(f"[yellow]Warning[/]: {message}", highlight=False, soft_wrap=True)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
