"""The DuckDB catalog: what is in the workspace (tiles, indexes, shards, queries).

One file, ``<home>/catalog.duckdb``. No row per pixel: pixels are named by their 64-bit
ID (:mod:`tessera_search.grid`). Connections are short-lived (open, do one thing,
close) because DuckDB lets one process at a time hold a file open for writing; a
connection that finds the file locked by another process retries for a while before
failing with :class:`~tessera_search.errors.CatalogError`.

Tables::

    tiles    (tile, year) -> dataset_version, source, synthetic, epsg, transform,
             height, width, n_valid, ingested_at
    indexes  name -> year, dataset_version, region, factory, params (JSON), dims,
             n_vectors, n_shards, status ('building' | 'complete'), created_at, updated_at
    shards   (index_name, shard) -> path, tiles (list), n_vectors, status, built_at
    index_tiles (index_name, tile) -> shard
    queries  id -> index_name, created_at, vector (FLOAT[]), params (JSON), n_results
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import CatalogError

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


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Catalog:
    """Short-lived DuckDB connections on ``<home>/catalog.duckdb``."""

    def __init__(self, home: str | os.PathLike[str], lock_timeout: float = 30.0) -> None:
        self.home = Path(home)
        self.path = self.home / "catalog.duckdb"
        self.lock_timeout = lock_timeout
        self._schema_ready = False

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator:
        """A DuckDB connection; retries while another process holds the file."""
        import duckdb

        if read_only and not self.path.exists():
            read_only = False  # nothing to read yet: create it
        self.home.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise CatalogError(f"cannot open the catalog {self.path}: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            except duckdb.Error as exc:
                raise CatalogError(f"cannot open the catalog {self.path}: {exc}") from exc
        try:
            if not read_only and not self._schema_ready:
                for ddl in _SCHEMA:
                    con.execute(ddl)
                self._schema_ready = True
            yield con
        except duckdb.Error as exc:
            raise CatalogError(f"catalog {self.path}: {exc}") from exc
        finally:
            con.close()

    def _rows(self, sql: str, params: list | None = None) -> list[dict]:
        with self.connect() as con:
            cur = con.execute(sql, params or [])
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row)) for row in cur.fetchall()]

    # -- tiles ----------------------------------------------------------------------
    def record_tile(self, attrs: dict) -> None:
        """Insert or replace a tile-year row from store attributes."""
        with self.connect() as con:
            con.execute(
                "INSERT OR REPLACE INTO tiles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    attrs["tile"], int(attrs["year"]), attrs.get("dataset_version"), attrs.get("source"),
                    bool(attrs.get("synthetic", False)), int(attrs["epsg"]), list(attrs["transform"]),
                    int(attrs["height"]), int(attrs["width"]), int(attrs.get("n_valid", 0)),
                    attrs.get("ingested_at") or _now(),
                ],
            )

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
    def upsert_index(self, row: dict) -> None:
        """Insert or replace an index row (``params`` may be a dict)."""
        row = dict(row)
        if isinstance(row.get("params"), dict):
            row["params"] = json.dumps(row["params"], sort_keys=True)
        row.setdefault("created_at", _now())
        row["updated_at"] = _now()
        cols = ["name", "year", "dataset_version", "region", "factory", "params", "dims",
                "n_vectors", "n_shards", "status", "created_at", "updated_at"]
        with self.connect() as con:
            existing = con.execute("SELECT created_at FROM indexes WHERE name = ?", [row["name"]]).fetchone()
            if existing:
                row["created_at"] = existing[0]
            con.execute(
                f"INSERT OR REPLACE INTO indexes ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                [row.get(c) for c in cols],
            )

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
        """Record a query (its exact vector and parameters); returns its id."""
        with self.connect() as con:
            row = con.execute(
                "INSERT INTO queries (index_name, created_at, vector, params, n_results) "
                "VALUES (?, ?, ?, ?, ?) RETURNING id",
                [index_name, _now(), [float(v) for v in vector], json.dumps(params, sort_keys=True), int(n_results)],
            ).fetchone()
        return int(row[0])

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
