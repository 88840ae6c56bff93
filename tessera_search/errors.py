"""The tessera-search error tree.

Every error the library raises on purpose derives from :class:`TesseraSearchError`, and
each subclass also inherits the built-in exception it is closest to, so callers can catch
either. The CLI maps the whole tree to ``ErrorName: message`` on stderr in exactly one
place (``tessera_search.cli.main``): exit code 2 for :class:`InvalidInputError` (what was
asked cannot be used as given, like a usage error), 1 for everything else. An error may
carry ``details`` (a JSON-able dict) that ``--json`` output includes. Warnings the library
gives (:class:`TesseraSearchWarning`, through :func:`warnings.warn`) are shown by the CLI
as one line each::

    TesseraSearchError
    ├── InvalidInputError (ValueError)          bad user input of any kind
    │   ├── InvalidTileNameError
    │   ├── InvalidBBoxError
    │   ├── InvalidPointError
    │   ├── UnknownRegionError                  carries close-name suggestions
    │   └── KTooLargeError                      k larger than the index holds
    ├── TileNotFoundError (FileNotFoundError)   tile absent from the store / a source
    ├── NoCoverageError (LookupError)           a point no stored tile (or index) covers
    ├── NoDataError (ValueError)                a point on water / a no-data pixel
    ├── CorruptTileError (ValueError)           truncated .npy, wrong shape, bad checksum
    ├── SourceUnavailableError (ConnectionError) a source that cannot be reached
    ├── NothingStoredError (LookupError)        a download that stored none of the tiles asked for
    ├── StoreError (OSError)                    the zarr store is unreadable
    ├── WriteError (OSError)                    a file cannot be written (disk full, read-only, no folder)
    ├── CatalogError (RuntimeError)             DuckDB failed
    ├── IndexNotFoundError (LookupError)
    ├── IndexCorruptError (RuntimeError)        faiss could not read a shard
    ├── IndexBusyError (RuntimeError)           another build of the same index runs
    ├── MissingDependencyError (ImportError)    an optional extra is not installed
    ├── EngineError (RuntimeError)              a cluster cannot be reached, or a shard's task on it failed
    └── CheckpointError (ValueError)            an encoder checkpoint does not fit
"""

from __future__ import annotations

__all__ = [
    "CatalogError",
    "CheckpointError",
    "CorruptTileError",
    "EngineError",
    "IndexBusyError",
    "IndexCorruptError",
    "IndexNotFoundError",
    "InvalidBBoxError",
    "InvalidInputError",
    "InvalidPointError",
    "InvalidTileNameError",
    "KTooLargeError",
    "MissingDependencyError",
    "NoCoverageError",
    "NoDataError",
    "SourceUnavailableError",
    "StoreError",
    "NothingStoredError",
    "TesseraSearchError",
    "TesseraSearchWarning",
    "TileNotFoundError",
    "UnknownRegionError",
    "WriteError",
]


class TesseraSearchError(Exception):
    """Root of every error tessera-search raises on purpose.

    ``details``: optional JSON-able facts for machine readers (``--json`` prints them).
    """

    details: dict | None = None

    def __init__(self, *args: object, details: dict | None = None) -> None:
        super().__init__(*args)
        if details is not None:
            self.details = details


class TesseraSearchWarning(UserWarning):
    """Something a caller should know that does not stop the work (a trivial class map, ...)."""


class InvalidInputError(TesseraSearchError, ValueError):
    """User input that cannot be used as given."""


class InvalidTileNameError(InvalidInputError):
    """A tile name that is not ``grid_{lon:.2f}_{lat:.2f}`` on the 0.1 degree grid."""


class InvalidBBoxError(InvalidInputError):
    """A bounding box that is not ``W,S,E,N`` in degrees with W < E and S < N."""


class InvalidPointError(InvalidInputError):
    """A point that is not ``LON,LAT`` in degrees on the globe."""


class UnknownRegionError(InvalidInputError):
    """A region name that matches no country; ``suggestions`` lists close names."""

    def __init__(self, message: str, suggestions: list[str] | None = None) -> None:
        super().__init__(message)
        self.suggestions = list(suggestions or [])


class KTooLargeError(InvalidInputError):
    """More results asked for than the index holds."""


class TileNotFoundError(TesseraSearchError, FileNotFoundError):
    """A tile-year that is not in the store or not offered by a source.

    Made by :meth:`missing` for tiles absent from the store: ``tiles`` (names) and
    ``year`` say which, so a caller (the CLI) can name the command that fetches them.
    """

    tiles: tuple[str, ...] = ()
    year: int | None = None

    @classmethod
    def missing(cls, tiles, year: int, what: str = "this") -> TileNotFoundError:
        """The error for tiles not in the store: which, for what, and how to get them."""
        names = sorted({getattr(t, "name", str(t)) for t in tiles})
        shown = ", ".join(names[:6]) + (f", ... ({len(names)} tiles)" if len(names) > 6 else "")
        plural = len(names) != 1
        err = cls(
            f"{what} need{'' if plural else 's'} tile{'s' if plural else ''} {shown} ({year}), not in the store; "
            "fetch them with download(...) first, or pass source= to fetch them on the way",
            details={"tiles": names, "year": int(year)},
        )
        err.tiles, err.year = tuple(names), int(year)
        return err

    @classmethod
    def missing_years(cls, missing: dict, what: str = "this") -> TileNotFoundError:
        """:meth:`missing` for several years: ``missing`` maps a year to its absent tiles."""
        parts, by_year = [], {}
        for year, tiles in sorted(missing.items()):
            names = sorted({getattr(t, "name", str(t)) for t in tiles})
            if names:
                by_year[int(year)] = names
                parts.append(f"{year}: " + ", ".join(names[:6]) + (f", ... ({len(names)} tiles)" if len(names) > 6 else ""))
        err = cls(f"{what} needs tiles that are not in the store ({'; '.join(parts)}); fetch them with "
                  "download(...) first, or pass source= to fetch them on the way",
                  details={"missing": {str(y): n for y, n in by_year.items()}})
        err.tiles = tuple(sorted({n for names in by_year.values() for n in names}))
        return err


class NoCoverageError(TesseraSearchError, LookupError):
    """A point that no stored tile or built index covers."""


class NoDataError(TesseraSearchError, ValueError):
    """A pixel without a valid embedding (water, or a no-data scale)."""


class CorruptTileError(TesseraSearchError, ValueError):
    """A tile whose files are truncated, mis-shaped, or fail their checksum."""


class SourceUnavailableError(TesseraSearchError, ConnectionError):
    """A source (directory or URL) that cannot be reached or read."""


class NothingStoredError(TesseraSearchError, LookupError):
    """A download that stored none of the tiles asked for (each was skipped or not offered)."""


class StoreError(TesseraSearchError, OSError):
    """The local zarr tile store cannot be read or written."""


class WriteError(TesseraSearchError, OSError):
    """A file or folder that cannot be written: disk full, read-only, missing folder.

    The message says what was being written, where, why (the OS's reason) and what to do.
    """


class CatalogError(TesseraSearchError, RuntimeError):
    """The DuckDB catalog failed."""


class IndexNotFoundError(TesseraSearchError, LookupError):
    """No index of that name (or for that year) is in the catalog."""


class IndexCorruptError(TesseraSearchError, RuntimeError):
    """An index shard that faiss cannot read."""


class IndexBusyError(TesseraSearchError, RuntimeError):
    """Another process is building the same index."""


class MissingDependencyError(TesseraSearchError, ImportError):
    """An optional dependency is missing; the message names the pip install line."""


class EngineError(TesseraSearchError, RuntimeError):
    """A distributed engine (Ray) cannot be reached, or a shard's task on it failed.

    The message names the shard, the node and the error (``details``: the same as fields).
    """


class CheckpointError(TesseraSearchError, ValueError):
    """An encoder checkpoint whose keys or shapes do not fit the model."""
