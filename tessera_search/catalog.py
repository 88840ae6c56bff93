"""The DuckDB catalog: what is in the workspace (tiles, indexes, shards, queries).

One file, ``<home>/catalog.duckdb``. No row per pixel: pixels are named by their 64-bit
ID (:mod:`tessera_search.grid`). Connections are short-lived (open, do one thing,
close) because DuckDB lets one process at a time hold a file open for writing; a
connection that finds the file locked by another process retries for a while before
failing with :class:`~tessera_search.errors.CatalogError`.

Reads never write: they open the file read-only (a published workspace may be read-only
for everyone), never create the home folder or run the schema, and a catalog that does
not exist reads as empty. A write to a workspace that cannot be written (``read_only``,
no write permission, a read-only filesystem, a full disk) is a
:class:`~tessera_search.errors.WriteError`; :meth:`Catalog.record_query_or_warning` turns
that into a sentence for a query that answers anyway.

The catalog is a summary; the tile store and the index files are the truth. A catalog
made anew (the first write in a workspace, or any command after a damaged catalog was
moved aside) re-records the stored tiles and the complete indexes from their files.

Tables::

    tiles    (tile, year) -> dataset_version, source, synthetic, epsg, transform,
             height, width, n_valid, ingested_at
    indexes  name -> year, dataset_version, region, factory, params (JSON), dims,
             n_vectors, n_shards, status, created_at, updated_at
             status: 'building' (first build running), 'complete', 'incomplete' (a build
             stopped before completing), 'damaged' (files missing since it completed);
             a rebuild keeps a complete row complete until the new generation is in
    shards   (index_name, shard) -> path, tiles (list), n_vectors, status, built_at
    index_tiles (index_name, tile) -> shard
    queries  id -> index_name, created_at, vector (FLOAT[]), params (JSON), n_results
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ._io import write_error, writing
from .errors import CatalogError, TesseraSearchError, WriteError

__all__ = ["Catalog"]

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS tiles (
        tile VARCHAR NOT NULL, year INTEGER NOT NULL, dataset_version VARCHAR,
        source VARCHAR, synthetic BOOLEAN, epsg INTEGER, transform DOUBLE[],
        height INTEGER, width INTEGER, n_valid BIGINT, ingested_at VARCHAR,
        PRIMARY KEY (tile, year))""",
    """CREATE TABLE IF NOT EXISTS indexes (
        name VARCHAR PRIMARY KEY, year INTEGER, dataset_version VARCHAR, region VARCHAR,
        factory VARCHAR, params VARCHAR, dims INTEGER, n_vectors BIGINT, n_shards INTEGER,
        status VARCHAR, created_at VARCHAR, updated_at VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS shards (
        index_name VARCHAR NOT NULL, shard INTEGER NOT NULL, path VARCHAR,
        tiles VARCHAR[], n_vectors BIGINT, status VARCHAR, built_at VARCHAR,
        PRIMARY KEY (index_name, shard))""",
    """CREATE TABLE IF NOT EXISTS index_tiles (
        index_name VARCHAR NOT NULL, tile VARCHAR NOT NULL, shard INTEGER,
        PRIMARY KEY (index_name, tile))""",
    """CREATE SEQUENCE IF NOT EXISTS query_ids START 1""",
    """CREATE TABLE IF NOT EXISTS queries (
        id BIGINT PRIMARY KEY DEFAULT nextval('query_ids'), index_name VARCHAR,
        created_at VARCHAR, vector FLOAT[], params VARCHAR, n_results BIGINT)""",
]


_INDEX_COLS = ["name", "year", "dataset_version", "region", "factory", "params", "dims",
               "n_vectors", "n_shards", "status", "created_at", "updated_at"]
# Substrings of DuckDB's messages, lower case.
_BUSY = ("could not set lock", "conflicting lock", "different configuration")  # another process; this one, other mode
_DENIED = ("permission denied", "read-only file system", "read only file system", "no space left",
           "disk quota", "not enough space")


class _Denied(Exception):
    """DuckDB could not open or write the file for a reason of the filesystem's."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# DuckDB refuses a second connection to a file, within one process, in the other mode
# (read-only vs read-write). Connections of this process therefore share a mode per file:
# a reader joins open writers (when it may write) and waits behind waiting writers, so
# neither side starves. State per file: [mode ('ro' | 'rw' | None), open connections,
# writers waiting].
_SLOTS: dict[str, list] = {}
_SLOTS_CV = threading.Condition()


def _acquire(key: str, want: str, flexible: bool, deadline: float) -> str:
    with _SLOTS_CV:
        slot = _SLOTS.setdefault(key, [None, 0, 0])
        writer = want == "rw"
        if writer:
            slot[2] += 1
        try:
            while True:
                mode, count, waiting = slot
                if writer or (flexible and (waiting or mode == "rw")):
                    if count == 0 or mode == "rw":
                        chosen = "rw"
                        break
                elif count == 0 or mode == want:
                    chosen = want
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CatalogError(f"the catalog {key} stayed busy in this process; retry")
                _SLOTS_CV.wait(min(remaining, 0.25))
        finally:
            if writer:
                slot[2] -= 1
        slot[0] = chosen
        slot[1] += 1
        return chosen


def _release(key: str) -> None:
    with _SLOTS_CV:
        slot = _SLOTS[key]
        slot[1] -= 1
        if slot[1] == 0:
            slot[0] = None
        _SLOTS_CV.notify_all()


class Catalog:
    """Short-lived DuckDB connections on ``<home>/catalog.duckdb``.

    ``read_only`` opens every connection read-only and refuses writes with a WriteError
    (a published, shared workspace). Without it, the catalog is written when the file
    and its folder are writable, and read read-only in any case.
    """

    def __init__(self, home: str | os.PathLike[str], lock_timeout: float = 30.0, read_only: bool = False) -> None:
        self.home = Path(home)
        self.path = self.home / "catalog.duckdb"
        self.lock_timeout = lock_timeout
        self.read_only = bool(read_only)
        self._schema_ready = False
        self._denied = False  # a write was refused by the filesystem: read from now on

    # -- connections ----------------------------------------------------------------
    def writable(self) -> bool:
        """Whether writes may be tried: not ``read_only``, and the file and folder are writable.

        (A process running as root passes every permission check; a refusal by the
        filesystem itself is caught when it happens.)
        """
        if self.read_only or self._denied:
            return False
        if self.path.exists():
            return os.access(self.path, os.W_OK) and os.access(self.home, os.W_OK)
        p = self.home.absolute()
        while not p.exists() and p != p.parent:
            p = p.parent
        return os.access(p, os.W_OK)

    def _has_data(self) -> bool:
        return (self.home / "store.zarr").exists() or (self.home / "index").is_dir()

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator:
        """A DuckDB connection; retries while another process holds the file.

        Read-only: yields None when there is no catalog (nothing recorded yet), unless the
        workspace holds data and can be written, when the catalog is made (and recovers
        what the files hold) first. Writing: creates the home folder and the schema; a
        new catalog re-records the stored tiles and built indexes (see the module notes).
        """
        import duckdb

        if read_only:
            if not self.path.exists():
                made = False
                if self.writable() and self._has_data():
                    with contextlib.suppress(WriteError):
                        with self.connect():
                            made = True
                if not made:
                    yield None
                    return
            with self._session(write=False) as con:
                yield con
            return
        if not self.writable():
            raise self._not_writable()
        created = not self.path.exists()
        with writing("the catalog", self.path):
            self.home.mkdir(parents=True, exist_ok=True)
        with self._session(write=True) as con:
            try:
                if created or not self._schema_ready:
                    for ddl in _SCHEMA:
                        con.execute(ddl)
                    self._schema_ready = True
                if created:
                    self._recover(con)
                yield con
            except duckdb.Error as exc:
                raise self._error(exc, write=True) from exc

    @contextlib.contextmanager
    def _session(self, write: bool) -> Iterator:
        key = os.path.abspath(self.path)
        deadline = time.monotonic() + self.lock_timeout
        while True:
            mode = _acquire(key, "rw" if write else "ro", not write and self.writable(), deadline)
            try:
                con = self._open(mode == "ro", deadline)
            except _Denied as exc:
                _release(key)
                if write:
                    raise write_error("the catalog", self.path, exc.__cause__) from exc.__cause__
                self._denied = True  # a reader that tried to join writers: read-only after all
                continue
            except BaseException:
                _release(key)
                raise
            break
        try:
            yield con
        finally:
            con.close()
            _release(key)

    def _open(self, read_only: bool, deadline: float):
        import duckdb

        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.Error as exc:
                text = str(exc).lower()
                if any(s in text for s in _DENIED):
                    raise _Denied(str(exc)) from exc
                if any(s in text for s in _BUSY) and time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                raise self._error(exc, write=not read_only) from exc

    def _not_writable(self) -> WriteError:
        why = "it was opened read-only" if (self.read_only or self._denied) else "its folder is not writable"
        return WriteError(
            f"cannot write the catalog {self.path}: {why}; downloads, builds and query history need a "
            "workspace you can write to (home=DIR or TESSERA_SEARCH_HOME)"
        )

    def _error(self, exc: BaseException, write: bool) -> TesseraSearchError:
        """A typed error for a DuckDB failure on this catalog (the message says what to do)."""
        import duckdb

        text = str(exc).lower()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if any(s in text for s in _DENIED):
            if write:
                return write_error("the catalog", self.path, exc)
            return CatalogError(f"cannot read the catalog {self.path}: {first}")
        if any(s in text for s in _BUSY):
            return CatalogError(
                f"the catalog {self.path} stayed locked by another process for {self.lock_timeout:.0f} s "
                f"({first}); wait for that download or build to finish and retry"
            )
        damaged = (duckdb.IOException, duckdb.SerializationException, duckdb.InternalException, duckdb.FatalException)
        if isinstance(exc, damaged):
            return CatalogError(
                f"the catalog {self.path} is damaged ({first}). The tile store and the index files are "
                f"intact and the catalog is rebuilt from them: move it aside (`mv {self.path} "
                f"{self.path}.damaged`) and run `tessera-search info`, which makes a new catalog that "
                "re-records the stored tiles and the built indexes"
            )
        return CatalogError(f"catalog {self.path}: {first}")

    def _rows(self, sql: str, params: list | None = None) -> list[dict]:
        import duckdb

        with self.connect(read_only=True) as con:
            if con is None:
                return []
            try:
                cur = con.execute(sql, params or [])
                cols = [d[0] for d in cur.description]
                return [dict(zip(cols, row)) for row in cur.fetchall()]
            except duckdb.CatalogException:  # a table this (older) catalog lacks: nothing recorded
                return []
            except duckdb.Error as exc:
                raise self._error(exc, write=False) from exc

    def _recover(self, con) -> None:
        """Record every stored tile-year in a new catalog (the store is the truth).

        Indexes are recorded from their own files by whoever lists or opens them
        (:func:`tessera_search.index.list_indexes`), so the catalog needs no knowledge of
        the index layout.
        """
        from .store import TileStore

        store = TileStore(self.home)
        for tile, year in store.list():
            try:
                self._insert_tile(con, store.attrs(tile, year))
            except (TesseraSearchError, KeyError, TypeError, ValueError):
                continue  # an unreadable tile is the store's problem, reported when it is read

    # -- tiles ----------------------------------------------------------------------
    @staticmethod
    def _insert_tile(con, attrs: dict) -> None:
        con.execute(
            "INSERT OR REPLACE INTO tiles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                attrs["tile"], int(attrs["year"]), attrs.get("dataset_version"), attrs.get("source"),
                bool(attrs.get("synthetic", False)), int(attrs["epsg"]), list(attrs["transform"]),
                int(attrs["height"]), int(attrs["width"]), int(attrs.get("n_valid", 0)),
                attrs.get("ingested_at") or _now(),
            ],
        )

    def record_tile(self, attrs: dict) -> None:
        """Insert or replace a tile-year row from store attributes."""
        with self.connect() as con:
            self._insert_tile(con, attrs)

    def tiles(self, year: int | None = None) -> list[dict]:
        """Tile rows, optionally for one year, sorted by year and tile."""
        if year is None:
            return self._rows("SELECT * FROM tiles ORDER BY year, tile")
        return self._rows("SELECT * FROM tiles WHERE year = ? ORDER BY tile", [int(year)])

    def tile_summary(self) -> list[dict]:
        """Per (year, dataset_version, source): tile count and valid pixels."""
        return self._rows(
            "SELECT year, dataset_version, source, bool_or(synthetic) AS synthetic, count(*) AS tiles, "
            "sum(n_valid) AS valid_pixels FROM tiles GROUP BY ALL ORDER BY year, dataset_version, source"
        )

    def delete_tile(self, tile: str, year: int) -> None:
        with self.connect() as con:
            con.execute("DELETE FROM tiles WHERE tile = ? AND year = ?", [tile, int(year)])

    # -- indexes --------------------------------------------------------------------
    @staticmethod
    def _upsert_index(con, row: dict) -> None:
        """One statement: insert the row, or update it keeping its ``created_at``."""
        row = dict(row)
        if isinstance(row.get("params"), dict):
            row["params"] = json.dumps(row["params"], sort_keys=True)
        row.setdefault("created_at", _now())
        row["updated_at"] = _now()
        updates = ", ".join(f"{c} = excluded.{c}" for c in _INDEX_COLS if c not in ("name", "created_at"))
        con.execute(
            f"INSERT INTO indexes ({', '.join(_INDEX_COLS)}) VALUES ({', '.join('?' * len(_INDEX_COLS))}) "
            f"ON CONFLICT (name) DO UPDATE SET {updates}",
            [row.get(c) for c in _INDEX_COLS],
        )

    @classmethod
    def _write_index(cls, con, row: dict, shards: list[dict]) -> None:
        name = row["name"]
        con.execute("DELETE FROM shards WHERE index_name = ?", [name])
        con.execute("DELETE FROM index_tiles WHERE index_name = ?", [name])
        cls._upsert_index(con, row)
        now = _now()
        if shards:
            con.executemany("INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?, ?, ?, ?)", [
                [name, int(s["shard"]), s["path"], list(s["tiles"]), int(s["n_vectors"]), s.get("status", "complete"), now]
                for s in shards])
            tiles = [[name, t, int(s["shard"])] for s in shards for t in s["tiles"]]
            if tiles:
                con.executemany("INSERT OR REPLACE INTO index_tiles VALUES (?, ?, ?)", tiles)

    def upsert_index(self, row: dict) -> None:
        """Insert or update an index row (``params`` may be a dict); ``created_at`` is kept."""
        with self.connect() as con:
            self._upsert_index(con, row)

    def record_index(self, row: dict, shards: list[dict]) -> None:
        """Replace an index's row, shards and tiles in one transaction: a reader sees the old
        entry or the new one, never none. ``shards``: dicts of shard, path, tiles, n_vectors."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                self._write_index(con, row, shards)
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def set_index_status(self, name: str, status: str) -> None:
        """Set the status of an existing index row."""
        with self.connect() as con:
            con.execute("UPDATE indexes SET status = ?, updated_at = ? WHERE name = ?", [status, _now(), name])

    def index(self, name: str) -> dict | None:
        rows = self._rows("SELECT * FROM indexes WHERE name = ?", [name])
        if not rows:
            return None
        row = rows[0]
        row["params"] = json.loads(row["params"]) if row.get("params") else {}
        return row

    def indexes(self) -> list[dict]:
        rows = self._rows("SELECT * FROM indexes ORDER BY name")
        for row in rows:
            row["params"] = json.loads(row["params"]) if row.get("params") else {}
        return rows

    def delete_index(self, name: str) -> None:
        with self.connect() as con:
            con.execute("DELETE FROM shards WHERE index_name = ?", [name])
            con.execute("DELETE FROM index_tiles WHERE index_name = ?", [name])
            con.execute("DELETE FROM indexes WHERE name = ?", [name])

    def record_shard(self, index_name: str, shard: int, path: str, tiles: list[str], n_vectors: int, status: str = "complete") -> None:
        with self.connect() as con:
            con.execute(
                "INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?, ?, ?, ?)",
                [index_name, int(shard), path, list(tiles), int(n_vectors), status, _now()],
            )
            con.executemany(
                "INSERT OR REPLACE INTO index_tiles VALUES (?, ?, ?)",
                [[index_name, t, int(shard)] for t in tiles],
            )

    def shards(self, index_name: str) -> list[dict]:
        return self._rows("SELECT * FROM shards WHERE index_name = ? ORDER BY shard", [index_name])

    def index_tiles(self, index_name: str) -> list[dict]:
        return self._rows("SELECT * FROM index_tiles WHERE index_name = ? ORDER BY tile", [index_name])

    # -- queries --------------------------------------------------------------------
    def record_query(self, index_name: str | None, vector, params: dict, n_results: int) -> int:
        """Record a query (its exact vector and parameters); returns its id.

        WriteError when the workspace cannot be written.
        """
        with self.connect() as con:
            row = con.execute(
                "INSERT INTO queries (index_name, created_at, vector, params, n_results) "
                "VALUES (?, ?, ?, ?, ?) RETURNING id",
                [index_name, _now(), [float(v) for v in vector], json.dumps(params, sort_keys=True), int(n_results)],
            ).fetchone()
        return int(row[0])

    def record_query_or_warning(self, index_name: str | None, vector, params: dict,
                                n_results: int) -> tuple[int | None, str | None]:
        """:meth:`record_query`, for a query that answers whether or not it is recorded:
        ``(id, None)``, or ``(None, sentence)`` saying why the history has no record of it."""
        try:
            return self.record_query(index_name, vector, params, n_results), None
        except (WriteError, CatalogError) as exc:
            return None, f"the query was not recorded in the history: {exc}"

    def query(self, query_id: int) -> dict | None:
        rows = self._rows("SELECT * FROM queries WHERE id = ?", [int(query_id)])
        if not rows:
            return None
        row = rows[0]
        row["params"] = json.loads(row["params"]) if row.get("params") else {}
        return row

    def queries(self, limit: int = 50) -> list[dict]:
        rows = self._rows("SELECT * FROM queries ORDER BY id DESC LIMIT ?", [int(limit)])
        for row in rows:
            row["params"] = json.loads(row["params"]) if row.get("params") else {}
        return rows
