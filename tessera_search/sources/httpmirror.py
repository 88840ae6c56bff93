"""An http(s) mirror, safely: every URL stays below the base URL, downloads resume.

:class:`HttpMirror` fetches files of one base URL: it builds URLs only from clean
relative paths (:meth:`HttpMirror.join`), refuses any URL or redirect that leaves the
base's scheme, host, port and path (:meth:`HttpMirror.inside`), and downloads into a
``.part`` beside the target, resuming with Range requests. Every response's length is
checked (a short body is a dropped connection: retried with exponential back-off, the
``.part`` kept); a file moves into place only once complete and verified (size, MD5 or a
content-MD5 ETag, :func:`verify`).
"""

from __future__ import annotations

import http.client
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .._io import file_md5, writing
from ..errors import CorruptTileError, SourceUnavailableError, TesseraSearchError

__all__ = ["DEFAULT_RETRIES", "HttpMirror", "NotFound", "int_or_none", "verify"]

DEFAULT_RETRIES = 4
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_BLOCK = 1 << 20
_USER_AGENT = "tessera-search/0.1"


class HttpMirror:
    """Files below one http(s) base ``url``; ``retries`` with ``backoff`` seconds doubling."""

    def __init__(self, url: str, retries: int = DEFAULT_RETRIES, backoff: float = 0.5, timeout: float = 60.0) -> None:
        self.url = url if url.endswith("/") else url + "/"
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.timeout = timeout
        self._base = urllib.parse.urlsplit(self.url)
        self._opener = urllib.request.build_opener(_ContainedRedirects(self.inside, self.url))

    def join(self, rel: str) -> str:
        """The URL of a relative path of our own making (already safe)."""
        return self.url + "/".join(urllib.parse.quote(seg, safe="") for seg in rel.split("/"))

    def inside(self, url: str) -> bool:
        """True when ``url`` has the source's scheme, host and port and lies below its path."""
        try:
            u = urllib.parse.urlsplit(url)
            port = u.port or _DEFAULT_PORTS.get(u.scheme.lower())
        except ValueError:
            return False
        b = self._base
        if (u.scheme.lower(), (u.hostname or "").lower(), port) != (
            b.scheme.lower(), (b.hostname or "").lower(), b.port or _DEFAULT_PORTS.get(b.scheme.lower())
        ):
            return False
        if u.username is not None or u.password is not None:
            return False
        if ".." in urllib.parse.unquote(u.path).split("/"):
            return False
        return u.path.startswith(b.path or "/")

    def download(self, url: str, dest: Path, size: int | None, md5: str | None, what: str,
                  fresh: bool = False) -> None:
        """Fetch ``url`` to ``dest`` (resuming ``dest.part``), verified; retries with back-off.

        ``what`` names the file in messages. A dropped connection keeps the ``.part`` (the
        next try, or the next run, resumes it); only a complete file that fails its checks
        is deleted.
        """
        if dest.exists() and not fresh:
            try:
                verify(dest, size, md5)
                return
            except CorruptTileError:
                dest.unlink()
        with writing(f"the download folder for {what}", dest.parent):
            dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        attempt = drops = 0
        while True:
            try:
                etag = self._get(url, part, what, size)
                verify(part, size, md5, etag=etag, what=what)
                os.replace(part, dest)
                return
            except (CorruptTileError, NotFound):
                part.unlink(missing_ok=True)
                raise
            except TesseraSearchError:  # refused redirect, HTTP 4xx, a failed write: no retry
                raise
            except (urllib.error.URLError, OSError, http.client.HTTPException, _Transient) as exc:
                attempt += 1
                drops += isinstance(exc, _Drop)
                if attempt > self.retries:
                    raise self._gave_up(url, part, what, attempt, drops, exc) from exc
                time.sleep(self.backoff * (2 ** (attempt - 1)))

    def _gave_up(self, url: str, part: Path, what: str, attempt: int, drops: int, exc: BaseException):
        have = part.stat().st_size if part.exists() else 0
        if isinstance(exc, _Drop):
            of = f" of {exc.total}" if exc.total is not None else ""
            return SourceUnavailableError(
                f"connection to {self._base.netloc} dropped {drops} times while fetching {what} "
                f"(have {have}{of} bytes; rerun to resume)"
            )
        reason = getattr(exc, "reason", exc)
        kept = f"; {have} bytes of {what} are kept, rerun to resume" if have else ""
        return SourceUnavailableError(
            f"cannot reach {url} after {attempt} tries ({reason}){kept}; check the network, "
            "or pass source=DIR|URL|synthetic"
        )

    def _get(self, url: str, part: Path, what: str, size: int | None) -> str | None:
        """One GET into ``part``, resuming with a Range request; returns the ETag.

        Raises _Drop when the body is shorter than the response promised (the bytes that
        did arrive stay in ``part``), _Transient for 5xx / 429.
        """
        have = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        if have:
            req.add_header("Range", f"bytes={have}-")
        try:
            resp = self._opener.open(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            headers = exc.headers
            exc.close()
            if exc.code == 404:
                raise NotFound(f"HTTP 404 for {url}") from None
            if exc.code == 416 and have:
                m = _UNSATISFIED_RANGE.match((headers or {}).get("Content-Range") or "")
                if m is None or int(m[1]) == have:
                    return None  # already complete; the checks that follow decide
                part.unlink()  # our partial file is longer than the file: start again
                raise _Transient(f"{what} on the server is not the file we had begun") from None
            raise _status_error(exc.code, url) from None
        with resp:
            if have and resp.status == 206:
                m = _CONTENT_RANGE.match(resp.headers.get("Content-Range") or "")
                if m is None or int(m[1]) != have:
                    part.unlink()  # cannot append what does not follow on: start again from zero
                    raise _Transient(f"the server resumed {what} at the wrong offset")
                start, expected = have, int(m[2]) - int(m[1]) + 1
                total = None if m[3] == "*" else int(m[3])
                mode = "ab"
            elif resp.status == 200:  # also the answer to a Range request the server ignored
                start, expected = 0, int_or_none(resp.headers.get("Content-Length"))
                total = expected
                mode = "wb"
            else:
                raise SourceUnavailableError(f"unexpected HTTP {resp.status} for {url}")
            told = total if total is not None else size  # for messages only: a chunked body ends itself
            got = 0
            with writing(f"the partial download {part.name}", part), open(part, mode) as f:
                while expected is None or got < expected:
                    try:
                        block = resp.read(_BLOCK if expected is None else min(_BLOCK, expected - got))
                    except (http.client.HTTPException, OSError) as exc:  # IncompleteRead, reset, timeout
                        partial = getattr(exc, "partial", b"")  # what did arrive, in order
                        if isinstance(exc, http.client.IncompleteRead) and partial:
                            f.write(partial)
                            got += len(partial)
                        raise _Drop(start + got, told) from exc
                    if not block:
                        break
                    f.write(block)
                    got += len(block)
            etag = resp.headers.get("ETag")
        if expected is not None and got < expected:
            raise _Drop(start + got, told)
        if total is not None and start + got < total:  # a server that sent only part of the range
            raise _Drop(start + got, told)
        return etag


    def fetch_bytes(self, url: str, start: int | None = None, end: int | None = None, *,
                    suffix: int | None = None, what: str | None = None,
                    missing: tuple[int, ...] = (404,)) -> bytes | None:
        """The body of ``url`` in memory, or part of it; None when the server has no such file.

        ``start`` (with ``end``, exclusive) asks for bytes ``start`` .. ``end - 1`` (fewer
        when the file ends first), ``start`` alone for the rest of the file, ``suffix`` for
        its last ``suffix`` bytes, all with one Range request. A server that ignores the
        Range is answered from the whole body. Every body's length is checked: a short one
        is a dropped connection, retried with back-off like 5xx / 429 and unreachable hosts,
        then SourceUnavailableError naming the URL. HTTP codes in ``missing`` give None,
        other 4xx SourceUnavailableError at once.
        """
        if not self.inside(url):
            raise SourceUnavailableError(f"{ascii(url)[1:-1]} is not below {self.url}; not fetched")
        what = what or url
        attempt = 0
        while True:
            try:
                return self._get_bytes(url, start, end, suffix, missing)
            except TesseraSearchError:
                raise
            except (urllib.error.URLError, OSError, http.client.HTTPException, _Transient) as exc:
                attempt += 1
                if attempt > self.retries:
                    reason = getattr(exc, "reason", exc)
                    raise SourceUnavailableError(
                        f"cannot fetch {what} from {url} after {attempt} tries ({reason}); check the "
                        "network, or pass source=DIR|URL|synthetic"
                    ) from exc
                time.sleep(self.backoff * (2 ** (attempt - 1)))

    def _get_bytes(self, url: str, start: int | None, end: int | None, suffix: int | None,
                   missing: tuple[int, ...]) -> bytes | None:
        """One GET for :meth:`fetch_bytes`; _Drop for a short body, _Transient for 5xx / 429."""
        req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        if suffix is not None:
            if suffix <= 0:
                return b""
            req.add_header("Range", f"bytes=-{int(suffix)}")
        elif start is not None:
            if end is not None and end <= start:
                return b""
            req.add_header("Range", f"bytes={int(start)}-" + ("" if end is None else str(int(end) - 1)))
        ranged = req.has_header("Range")
        try:
            resp = self._opener.open(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code in missing:
                return None
            raise _status_error(exc.code, url) from None
        with resp:
            if ranged and resp.status == 206:
                m = _CONTENT_RANGE.match(resp.headers.get("Content-Range") or "")
                if m is None:
                    raise _Transient(f"a 206 without a usable Content-Range for {url}")
                first, last = int(m[1]), int(m[2])
                total = None if m[3] == "*" else int(m[3])
                if suffix is not None:
                    if total is None or first != max(0, total - suffix) or last + 1 != total:
                        raise _Transient(f"the server answered the last {suffix} bytes of {url} with {m[0]}")
                elif first != start:
                    raise _Transient(f"the server answered bytes from {start} of {url} with {m[0]}")
                want = last - first + 1
                if end is not None:
                    want = min(want, end - first)  # a server that sends more than asked: keep what we asked
                body = self._read_exactly(resp, want)
                return body
            if resp.status != 200:
                raise SourceUnavailableError(f"unexpected HTTP {resp.status} for {url}")
            expected = int_or_none(resp.headers.get("Content-Length"))
            body = self._read_exactly(resp, expected)
        if suffix is not None:
            return body[max(0, len(body) - suffix):]
        if start is not None:
            return body[start:end]
        return body

    @staticmethod
    def _read_exactly(resp, n: int | None) -> bytes:
        """``n`` bytes of the body (all of it when ``n`` is None); _Drop when it ends early."""
        chunks, got = [], 0
        while n is None or got < n:
            try:
                block = resp.read(_BLOCK if n is None else min(_BLOCK, n - got))
            except (http.client.HTTPException, OSError) as exc:  # IncompleteRead, reset, timeout
                raise _Drop(got, n) from exc
            if not block:
                break
            chunks.append(block)
            got += len(block)
        if n is not None and got < n:
            raise _Drop(got, n)
        return b"".join(chunks)



def _status_error(code: int, url: str) -> Exception:
    """A failed HTTP status: transient (retried) for 5xx and 429, final otherwise."""
    if code >= 500 or code == 429:
        return _Transient(f"HTTP {code}")
    return SourceUnavailableError(f"HTTP {code} for {url}")


class _ContainedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only when it stays below the source URL."""

    def __init__(self, inside: Callable[[str], bool], label: str) -> None:
        super().__init__()
        self._inside = inside
        self._label = label

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not self._inside(newurl):
            try:
                u = urllib.parse.urlsplit(newurl)
                where = ascii(f"{u.scheme}://{u.netloc}{u.path}")[1:-1]
            except ValueError:
                where = "an unreadable address"
            if len(where) > 120:
                where = where[:117] + "..."
            fp.close()
            name = Path(urllib.parse.urlsplit(req.full_url).path).name
            raise _RedirectRefused(
                f"the server redirected {name} to {where}, outside {self._label}; "
                "refusing to follow it (a mirror must serve its own files)"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _RedirectRefused(SourceUnavailableError):
    pass


class NotFound(Exception):
    """The server has no such file (HTTP 404)."""


class _Transient(Exception):
    pass


class _Drop(_Transient):
    """The connection closed before the body was complete; ``have`` bytes are in the .part."""

    def __init__(self, have: int, total: int | None) -> None:
        super().__init__(f"connection dropped at byte {have}")
        self.have = have
        self.total = total


def int_or_none(v) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def verify(path: Path, size: int | None, md5: str | None, etag: str | None = None, what: str | None = None) -> None:
    """Size / MD5 checks; CorruptTileError naming the file on mismatch."""
    what = what or path.name
    have = path.stat().st_size
    if size is not None and have != size:
        if have < size and what.endswith(".npy"):
            raise CorruptTileError(f"truncated .npy ({what}: {have} of {size} bytes)")
        raise CorruptTileError(f"{what} is {have} bytes, the manifest says {size}")
    want = (md5 or "").lower() or None
    tag = (etag or "").strip('"').lower()
    if not want and _MD5_RE.match(tag):
        want = tag
    if want:
        got = file_md5(path)
        if got != want:
            raise CorruptTileError(f"MD5 mismatch for {what} ({got}, expected {want})")
