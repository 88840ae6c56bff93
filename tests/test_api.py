"""The public API: ``__all__`` is honest, and every public module says what it is for."""

from __future__ import annotations

import importlib
import pkgutil

import tessera_search


def test_all_names_resolve():
    for name in tessera_search.__all__:
        assert getattr(tessera_search, name) is not None, name


def test_every_module_has_a_docstring():
    for info in pkgutil.walk_packages(tessera_search.__path__, "tessera_search."):
        if info.name.endswith("__main__"):
            continue
        mod = importlib.import_module(info.name)
        assert mod.__doc__ and mod.__doc__.strip(), f"{info.name} has no module docstring"


def test_error_tree_roots_and_builtin_parents():
    from tessera_search import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        if name == "TesseraSearchWarning":
            assert issubclass(cls, UserWarning) and not issubclass(cls, errors.TesseraSearchError)
            continue
        assert issubclass(cls, errors.TesseraSearchError)
    assert issubclass(errors.WriteError, OSError) and issubclass(errors.NothingStoredError, LookupError)
    assert issubclass(errors.TileNotFoundError, FileNotFoundError)
    assert issubclass(errors.UnknownRegionError, ValueError)
    assert issubclass(errors.SourceUnavailableError, ConnectionError)
