"""A read-only Zarr v3 store over http(s), on the project's contained :class:`HttpMirror`.

:class:`HttpStore` answers zarr's ``get(key, byte_range)`` with one GET of the key's URL
below the store's base URL (a ``Range`` request for a byte range, which is how sharded
arrays read single inner chunks and the shard index: a tile never reads a whole shard).
Every key passes :func:`~tessera_search.sources.layout.safe_relative_path` first, so
keys taken from the store's own metadata cannot name anything outside the store; the
mirror also refuses redirects that leave the base. HTTP 404 means the key is absent
(zarr reads it as fill); other failures are retried with back-off, then
:class:`~tessera_search.errors.SourceUnavailableError`. At most ``workers`` requests run
at once, whatever zarr's own concurrency. Static servers cannot list, so the store does
not either: stores are opened through their (consolidated) metadata.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from ..errors import CorruptTileError
from .httpmirror import HttpMirror
from .layout import safe_relative_path

__all__ = ["DEFAULT_HTTP_WORKERS", "HttpStore"]

DEFAULT_HTTP_WORKERS = 8


class HttpStore(Store):
    """The files below ``mirror.url`` as a read-only zarr store.

    ``seed`` maps keys to bytes already fetched (the root ``zarr.json`` read while
    recognising the store), answered without a request.
    """

    supports_writes = False
    supports_deletes = False
    supports_listing = False
    supports_partial_writes = False

    def __init__(self, mirror: HttpMirror, workers: int = DEFAULT_HTTP_WORKERS,
                 seed: dict[str, bytes] | None = None) -> None:
        super().__init__(read_only=True)
        self.mirror = mirror
        self.workers = max(1, int(workers))
        self._seed = dict(seed or {})
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="zarr-http")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HttpStore) and other.mirror.url == self.mirror.url

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"HttpStore({self.mirror.url!r})"

    def with_read_only(self, read_only: bool = False) -> HttpStore:
        if not read_only:
            raise ValueError(f"{self.mirror.url} is read-only")
        return HttpStore(self.mirror, self.workers, self._seed)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        super().close()

    # -- reading ------------------------------------------------------------------------
    def url_of(self, key: str) -> str:
        """The URL of a store key; CorruptTileError for a key that is not a path inside it."""
        try:
            rel = safe_relative_path(key)
        except ValueError as exc:
            raise CorruptTileError(
                f"the geoemb store {self.mirror.url} asked for a key that {exc}; refusing to fetch it"
            ) from None
        return self.mirror.join(rel)

    def fetch(self, key: str, byte_range: ByteRequest | None = None) -> bytes | None:
        """The bytes of ``key`` (or of its ``byte_range``), None when absent; blocking."""
        url = self.url_of(key)
        if byte_range is None:
            if key in self._seed:
                return self._seed[key]
            return self.mirror.fetch_bytes(url, what=key)
        if isinstance(byte_range, RangeByteRequest):
            return self.mirror.fetch_bytes(url, byte_range.start, byte_range.end, what=key)
        if isinstance(byte_range, OffsetByteRequest):
            return self.mirror.fetch_bytes(url, byte_range.offset, what=key)
        if isinstance(byte_range, SuffixByteRequest):
            return self.mirror.fetch_bytes(url, suffix=byte_range.suffix, what=key)
        raise TypeError(f"unexpected byte_range {byte_range!r}")

    async def get(self, key: str, prototype: BufferPrototype | None = None,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        prototype = prototype or default_buffer_prototype()
        data = await asyncio.get_running_loop().run_in_executor(self._pool, self.fetch, key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> list[Buffer | None]:
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        if key in self._seed:
            return True
        return await self.get(key, byte_range=RangeByteRequest(0, 1)) is not None

    # -- what a static server cannot do -------------------------------------------------
    async def set(self, key: str, value: Buffer) -> None:
        raise PermissionError(f"{self.mirror.url} is a read-only store")

    async def delete(self, key: str) -> None:
        raise PermissionError(f"{self.mirror.url} is a read-only store")

    def _no_listing(self) -> NotImplementedError:
        return NotImplementedError(f"{self.mirror.url} cannot be listed over http; its metadata must be consolidated")

    async def list(self) -> AsyncIterator[str]:
        raise self._no_listing()
        yield ""  # pragma: no cover - makes this an async generator

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        raise self._no_listing()
        yield ""  # pragma: no cover

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        raise self._no_listing()
        yield ""  # pragma: no cover
