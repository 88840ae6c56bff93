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

import re
import sys

from ._app import app
from ._console import rich_progress

__all__ = ["app", "cli_message", "main", "rich_progress", "run"]


_COMMAND_MODULES = (
    "commands_tiles", "commands_index", "commands_query", "commands_history", "commands_change",
    "commands_label", "commands_encoder",
    "commands_serve",
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
    with warnings.catch_warnings():
        warnings.simplefilter("always", TesseraSearchWarning)
        warnings.showwarning = _show_warning
        try:
            result = command.main(args=args, prog_name="tessera-search", standalone_mode=False)
        except typer.TyperException as exc:  # typer's own (vendored click) parameter and usage errors
            _usage_error(exc, want_json)
            return int(getattr(exc, "exit_code", 2))
        except typer.Abort:
            err_console.print("aborted")
            return 1
        except SystemExit as exc:  # rich on a closed pipe, or a command's own exit
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except TesseraSearchError as exc:
            code = exit_code(exc)
            message = cli_message(exc)
            if want_json:
                print_error_json(exc, message=message)
            err_console.print(f"[bold red]{type(exc).__name__}[/]: {message}", highlight=False, soft_wrap=True)
            return code
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    return 0


# Library parameters that are CLI options of the same name (underscores as dashes).
_PARAMS = ("k", "push", "threshold", "max_results", "min_separation", "nprobe", "refine_factor", "example_year",
           "source", "values", "crs", "top_out", "per_tile", "max_memory", "per_class", "min_distance", "n",
           "class_field", "block_size", "folds", "top", "weights", "max_per_polygon", "region", "bbox",
           "region_file", "tiles", "tile", "device", "reference", "config", "data_source", "lr", "out", "seed",
           "version", "home", "year", "substitute_bands", "dataset", "train_from")
_FLAGS = {"tiles": "--tile", "version": "--dataset-version", "substitute_bands": "--substitute-band",
          "folds": "--cv"}
_PARAM_RE = re.compile(r"(?<![\w-])(" + "|".join(_PARAMS) + r")(=|(?= must | is a | applies | and | do | needs | were | was ))")
_PY_FETCH = re.compile(r"(download it first, or pass source= to fetch it|fetch them with download\(\.\.\.\) first, "
                       r"or pass source= to fetch them on the way|download them first)")


def cli_message(exc: BaseException) -> str:
    """The library's message in the CLI's words: flags for parameters, commands for next steps."""
    text = str(exc)
    details = getattr(exc, "details", None) or {}
    tiles, year = details.get("tiles"), details.get("year")
    by_year = details.get("missing") or ({str(year): tiles} if tiles and year is not None else {})
    if by_year and _PY_FETCH.search(text):
        cmds = " and ".join(f"`{download_command(names, int(y))}`" for y, names in by_year.items())
        text = _PY_FETCH.sub(f"run {cmds} (add --source DIR|URL|synthetic to fetch from elsewhere), or pass "
                             "--source to this command to fetch them first", text)
    def flag(m: re.Match) -> str:
        name = _FLAGS.get(m.group(1), "--" + m.group(1).replace("_", "-"))
        if m.group(2) != "=":
            return name
        nxt = text[m.end(2):m.end(2) + 1]
        return f"{name} " if nxt and not nxt.isspace() and nxt not in ",;:)" else name  # name=VALUE: --name VALUE

    return _PARAM_RE.sub(flag, text)


def download_command(tiles, year: int) -> str:
    """The ``tessera-search download`` line that fetches ``tiles`` (names) for ``year``."""
    from ..grid import Tile

    tiles = sorted(Tile.from_name(t) if isinstance(t, str) else t for t in tiles)
    if len(tiles) <= 6:
        return "tessera-search download " + " ".join(f"--tile {t.name}" for t in tiles) + f" --year {year}"
    w, s = min(t.ix for t in tiles) / 10.0, min(t.iy for t in tiles) / 10.0
    e, n = (max(t.ix for t in tiles) + 1) / 10.0, (max(t.iy for t in tiles) + 1) / 10.0
    return f"tessera-search download --bbox {w:.1f},{s:.1f},{e:.1f},{n:.1f} --year {year}"


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
        name = "UsageError" if getattr(exc, "exit_code", 2) == 2 else type(exc).__name__
        print_error_json(exc, name=name, message=exc.format_message())
    rich_utils.rich_format_error(exc)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Library warnings as one yellow line on stderr (no file and line noise)."""
    from ._console import warn

    warn(str(message))


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
