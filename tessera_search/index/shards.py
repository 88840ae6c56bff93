"""Shard files, shard planning, and the on-disk layout of an index.

Layout under the workspace::

    index/<name>/
      .build.lock             held (flock) by the one process building <name>
      CURRENT                 the name of the last complete generation, e.g. "gen-00002"
      gen-00002/
        manifest.json         identity, parameters, tiles, shard list, status
        trained.faissindex    the empty trained index (coarse centroids + PQ codebooks)
        shard-00000.faissindex    IVF lists: codes + 64-bit positions in the shard (memory-mapped)
        shard-00000.ids           (n,) int64 pixel ID at each position, ascending (raw, memory-mapped)
        shard-00000.vectors       (n, 128) int8 embedding at each position (raw, memory-mapped)

A build writes a new generation and, once every shard is in, switches ``CURRENT`` with
one ``os.replace``; readers open the generation ``CURRENT`` names, so a query running
while a build runs sees the last complete index. Every file is written under a
temporary name and renamed into place; a shard counts as done only once the manifest
(itself replaced atomically) says so.

The faiss index stores each vector under its position in the shard (0..n-1), so a
candidate's pixel ID and exact int8 vector are one direct read each from the ``.ids``
and ``.vectors`` memory maps (a search by pixel ID would binary-search the IDs and touch
some 12 pages per candidate). Both maps are opened for random access (no read-ahead);
they stay on disk, and only the IVF lists (codes + 8-byte positions) count as resident.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._io import atomic_path
from ..errors import IndexCorruptError

__all__ = [
    "DIMS",
    "ShardFiles",
    "ShardPlan",
    "current_generation",
    "index_dir",
    "plan_shards",
    "read_faiss_index",
    "read_manifest",
    "set_current",
    "write_faiss_index",
    "write_manifest",
]

DIMS = 128
MANIFEST = "manifest.json"
TRAINED = "trained.faissindex"
CURRENT = "CURRENT"
LOCK = ".build.lock"


def index_dir(home: str | os.PathLike[str], name: str) -> Path:
    """``<home>/index/<name>``."""
    return Path(home) / "index" / name


@dataclass(frozen=True)
class ShardFiles:
    """The three files of shard ``number`` in generation directory ``gen_dir``."""

    gen_dir: Path
    number: int

    @property
    def stem(self) -> str:
        return f"shard-{self.number:05d}"

    @property
    def index(self) -> Path:
        return self.gen_dir / f"{self.stem}.faissindex"

    @property
    def ids(self) -> Path:
        return self.gen_dir / f"{self.stem}.ids"

    @property
    def vectors(self) -> Path:
        return self.gen_dir / f"{self.stem}.vectors"

    def exist(self) -> bool:
        return self.index.exists() and self.ids.exists() and self.vectors.exists()


@dataclass(frozen=True)
class ShardPlan:
    """Which tiles go in which shard: consecutive runs of the sorted tile list."""

    shards: tuple[tuple[str, ...], ...]
    capacity: int  # planned vectors per shard (an upper bound from tile valid counts)

    def to_json(self) -> dict:
        return {"capacity": self.capacity, "shards": [list(s) for s in self.shards]}


def plan_shards(tile_counts: list[tuple[str, int]], capacity: int) -> ShardPlan:
    """Group sorted ``(tile name, vector upper bound)`` pairs into shards of <= ``capacity``.

    Deterministic: the same tiles and counts always give the same plan, so an
    interrupted build resumes with the same shards. A tile larger than the capacity gets
    a shard of its own (a shard holds whole tiles).
    """
    capacity = max(int(capacity), 1)
    shards: list[tuple[str, ...]] = []
    current: list[str] = []
    filled = 0
    for name, count in tile_counts:
        if current and filled + count > capacity:
            shards.append(tuple(current))
            current, filled = [], 0
        current.append(name)
        filled += int(count)
    if current:
        shards.append(tuple(current))
    return ShardPlan(tuple(shards), capacity)


# -- faiss files ---------------------------------------------------------------------


def write_faiss_index(index, path: Path) -> None:
    """``faiss.write_index`` to a temporary name, then rename onto ``path``."""
    import faiss

    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def read_faiss_index(path: Path, mmap: bool = True):
    """Read a faiss index; IVF lists memory-mapped when ``mmap`` (``IO_FLAG_MMAP``).

    ``IO_FLAG_MMAP`` maps the inverted lists of a plain IVF index written by
    :func:`write_faiss_index` (tested: searching the mapped index gives the results of
    the loaded one). Fast-scan IVF lists are loaded into memory whatever the flag.
    """
    import faiss

    if not Path(path).exists():
        raise IndexCorruptError(f"index file {path} is missing; rebuild with `tessera-search build-index`")
    flags = faiss.IO_FLAG_MMAP if mmap else 0
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError as exc:
        raise IndexCorruptError(
            f"faiss cannot read {path}: {exc}; rebuild with `tessera-search build-index`"
        ) from exc


# -- manifests and generations -------------------------------------------------------


def write_manifest(gen_dir: Path, manifest: dict) -> None:
    """Replace ``gen_dir/manifest.json`` atomically."""
    with atomic_path(gen_dir / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def read_manifest(gen_dir: Path) -> dict:
    """The generation's manifest; IndexCorruptError when missing or damaged."""
    path = gen_dir / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IndexCorruptError(f"index manifest {path} is unreadable: {exc}") from exc


def current_generation(idir: Path) -> Path | None:
    """The directory ``CURRENT`` names, or None when no build has completed."""
    try:
        name = (idir / CURRENT).read_text().strip()
    except FileNotFoundError:
        return None
    gen = idir / name
    return gen if name and gen.is_dir() else None


def set_current(idir: Path, gen_dir: Path) -> None:
    """Point ``CURRENT`` at ``gen_dir`` in one rename."""
    with atomic_path(idir / CURRENT) as tmp:
        tmp.write_text(gen_dir.name + "\n")


def generations(idir: Path) -> list[Path]:
    """Generation directories, oldest first."""
    if not idir.is_dir():
        return []
    return sorted(p for p in idir.iterdir() if p.is_dir() and p.name.startswith("gen-"))


def _map(path: Path, dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A read-only array over a raw file, advised for random access (no read-ahead)."""
    import mmap

    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if hasattr(mm, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        mm.madvise(mmap.MADV_RANDOM)
    arr = np.frombuffer(mm, dtype=dtype)
    expected = int(np.prod(shape))
    if arr.size != expected:
        raise ValueError(f"{path.name} holds {arr.size} values, expected {expected}")
    return arr.reshape(shape)


def open_vectors(files: ShardFiles, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Memory maps of a shard's ((n,) int64 IDs, (n, 128) int8 vectors), by position."""
    try:
        if n == 0:
            return np.zeros(0, np.int64), np.zeros((0, DIMS), np.int8)
        ids = _map(files.ids, np.dtype("<i8"), (n,))
        vec = _map(files.vectors, np.int8, (n, DIMS))
    except (OSError, ValueError) as exc:
        raise IndexCorruptError(f"re-rank vectors of {files.stem} in {files.gen_dir} are unreadable: {exc}") from exc
    return ids, vec
