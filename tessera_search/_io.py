"""Small durable-write helpers: nothing half-written is ever visible under its final name."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import TesseraSearchError, WriteError

__all__ = ["atomic_dir", "atomic_path", "file_md5", "write_error", "writing"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], what: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    An OS error inside (disk full, read-only, no such folder) becomes a :class:`WriteError`
    naming ``what`` (default: the file's name) and ``path``.
    """
    path = Path(path)
    with writing(what or path.name, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
            yield tmp_path
            os.replace(tmp_path, path)
        finally:
            if tmp_path.exists():
                tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], staging: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces ``path`` in one rename.

    ``staging`` is where the temporary directory is made (same filesystem as ``path``);
    by default beside ``path``, with a dot name.
    """
    path = Path(path)
    parent = Path(staging) if staging is not None else path.parent
    parent.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_md5(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex MD5 of a file, read in chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_ADVICE = {
    errno.ENOSPC: "the disk is full; free space there or choose another location",
    errno.EDQUOT: "the disk quota is exhausted; free space there or choose another location",
    errno.EROFS: "that filesystem is read-only; choose a writable location",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "permission denied; choose a folder you can write to",
    errno.ENOENT: "the folder does not exist; create it first or choose another",
    errno.ENOTDIR: "a part of that path is a file, not a folder",
    errno.EEXIST: "a part of that path is a file, not a folder",
    errno.EISDIR: "that path is a folder; give a file name",
}


def write_error(what: str, path: str | os.PathLike[str], exc: BaseException) -> WriteError:
    """A :class:`WriteError` for ``exc`` raised while writing ``what`` to ``path``.

    The message names what, where, the OS's reason and what to do about it.
    """
    code = getattr(exc, "errno", None)
    reason = getattr(exc, "strerror", None) or str(exc)
    advice = _ADVICE.get(code) if code is not None else None
    if advice is None:
        text = str(exc).lower()
        if "no space" in text:
            advice = _ADVICE[errno.ENOSPC]
        elif "read-only" in text:
            advice = _ADVICE[errno.EROFS]
        elif "permission denied" in text:
            advice = _ADVICE[errno.EACCES]
        elif "no such file or directory" in text:
            advice = _ADVICE[errno.ENOENT]
    msg = f"cannot write {what} to {path}: {reason}"
    return WriteError(f"{msg}; {advice}" if advice else msg)


@contextlib.contextmanager
def writing(what: str, path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn OS and GDAL errors raised inside the block into :class:`WriteError`.

    The one place where a failed write becomes a typed error: wrap every write of the
    library (``with writing("the index shard", path): ...``). Errors of our own pass through.
    """
    try:
        yield
    except TesseraSearchError:
        raise
    except OSError as exc:
        raise write_error(what, path, exc) from exc
    except Exception as exc:
        if _is_gdal_error(exc):
            raise write_error(what, path, exc) from exc
        raise


def _is_gdal_error(exc: BaseException) -> bool:
    mod = type(exc).__module__ or ""
    return mod.startswith("rasterio")
