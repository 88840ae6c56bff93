"""Shard files, shard planning, and the on-disk layout of an index.

Layout under the workspace::

    index/<name>/
      .build.lock             held (flock) by the one process building <name>
      CURRENT                 the name of the last complete generation, e.g. "gen-00002"
      gen-00002/
        manifest.json         identity, parameters, tiles, shard list, status, tuned search parameters
        trained.faissindex    the empty trained index: coarse centroids + PQ codebooks, once per index
        shard-00000.faissindex    IVF lists: codes + 64-bit pixel IDs (its coarse quantizer left
                                  empty: the shard is searched with the one in trained.faissindex)
        shard-00000.pixels        which pixels of each of the shard's tiles it holds: one bit per
                                  grid pixel, row-major, np.packbits, tile after tile

A build writes a new generation and, once every shard is in, switches ``CURRENT`` with
one ``os.replace``; readers open the generation ``CURRENT`` names, so a query running
while a build runs sees the last complete index. Every file is written under a
temporary name and renamed into place; a shard counts as done only once the manifest
(itself replaced atomically) says so. The manifest records each shard file's size, so
:func:`generation_problems` can tell a complete generation from one whose files were
deleted or truncated since, and :func:`index_state` says what the files on disk hold
(``complete``, ``building``, ``incomplete`` or ``damaged``): the files are the truth, the
catalog a summary reconciled from them.

The faiss index stores each vector under its pixel ID. There is no second copy of the
int8 vectors: candidates are re-ranked from the store's own embeddings file, memory-mapped
(:mod:`.rerank`; a pixel ID gives its tile, row and column, hence its byte offset), so the
workspace keeps one int8 copy per pixel. The ``.pixels`` bitmaps (1 bit per grid pixel)
answer "is this pixel indexed" and list a tile's indexed pixels without reading the store.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import atomic_path, write_error
from ..errors import IndexCorruptError

__all__ = [
    "DIMS",
    "IndexState",
    "ShardFiles",
    "ShardPlan",
    "build_running",
    "catalog_entry",
    "current_generation",
    "faiss_write",
    "file_sizes",
    "generation_problems",
    "index_dir",
    "index_names",
    "index_state",
    "map_readonly",
    "plan_shards",
    "read_faiss_index",
    "read_manifest",
    "release_pages",
    "remove_debris",
    "set_current",
    "shard_problems",
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
    """The files of shard ``number`` in generation directory ``gen_dir``: its index and
    pixel bitmap, and for an int8-lists index with a first pass its rows' PQ codes."""

    gen_dir: Path
    number: int

    @property
    def stem(self) -> str:
        return f"shard-{self.number:05d}"

    @property
    def index(self) -> Path:
        return self.gen_dir / f"{self.stem}.faissindex"

    @property
    def pixels(self) -> Path:
        return self.gen_dir / f"{self.stem}.pixels"

    @property
    def codes(self) -> Path:
        return self.gen_dir / f"{self.stem}.codes"

    def exist(self) -> bool:
        return self.index.exists() and self.pixels.exists()

    def path(self, kind: str) -> Path:
        return {"index": self.index, "pixels": self.pixels, "codes": self.codes}[kind]

    @property
    def paths(self) -> dict[str, Path]:
        """``{"index": ..., "pixels": ...}``, and ``"codes"`` where that file is: the kinds
        a manifest records sizes for."""
        out = {"index": self.index, "pixels": self.pixels}
        if self.codes.exists():
            out["codes"] = self.codes
        return out


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


def write_faiss_index(index, path: Path, what: str = "the index file") -> None:
    """``faiss.write_index`` to a temporary name, then rename onto ``path``.

    A failed write (disk full, read-only folder) is a :class:`~tessera_search.errors.WriteError`.
    """
    with atomic_path(path, what) as tmp:
        faiss_write(index, tmp, what, path)


def faiss_write(index, tmp: Path, what: str, path: Path) -> None:
    """``faiss.write_index(index, tmp)``; faiss' RuntimeError on a failed write becomes a WriteError."""
    import faiss

    try:
        faiss.write_index(index, str(tmp))
    except RuntimeError as exc:  # faiss ends its message with the OS's reason: "... (No space left on device)"
        text = str(exc).strip()
        m = re.search(r"\(([^()]+)\)$", text)
        reason = m.group(1) if m else (text.splitlines()[-1] if text else "faiss could not write the file")
        raise write_error(what, path, OSError(None, reason)) from exc


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
    with atomic_path(gen_dir / MANIFEST, "the index manifest") as tmp:
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
    with atomic_path(idir / CURRENT, "the index pointer") as tmp:
        tmp.write_text(gen_dir.name + "\n")


def generations(idir: Path) -> list[Path]:
    """Generation directories, oldest first."""
    if not idir.is_dir():
        return []
    return sorted(p for p in idir.iterdir() if p.is_dir() and p.name.startswith("gen-"))


def map_readonly(path: Path) -> np.ndarray:
    """A read-only (n,) uint8 array over a whole file, advised for random access (no read-ahead)."""
    import mmap

    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return np.zeros(0, np.uint8)
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if hasattr(mm, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        mm.madvise(mmap.MADV_RANDOM)
    return np.frombuffer(mm, dtype=np.uint8)


def release_pages(arr: np.ndarray) -> None:
    """Unmap the resident pages of a memory-mapped array from this process (they stay in
    the page cache, so the next read is a minor fault, not a disk read)."""
    import mmap

    base = arr
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None) if not isinstance(base, memoryview) else base.obj
    if base is not None and hasattr(base, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        base.madvise(mmap.MADV_DONTNEED)


# -- what the files on disk hold -----------------------------------------------------


def file_sizes(files: ShardFiles) -> dict[str, int]:
    """Bytes of a shard's files, as the manifest records them."""
    return {kind: path.stat().st_size for kind, path in files.paths.items()}


def shard_problems(files: ShardFiles, info: dict) -> list[str]:
    """What is wrong with a finished shard's files against its manifest entry ([] when intact).

    Checks that each file exists and has the size the manifest records.
    """
    want = {k: int(v) for k, v in (info.get("bytes") or {}).items()}
    problems = [f"{files.path(kind).name} is missing" for kind in want if kind not in files.paths]
    for kind, path in files.paths.items():
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            problems.append(f"{path.name} is missing")
            continue
        except OSError as exc:
            problems.append(f"{path.name} is unreadable ({exc.strerror or exc})")
            continue
        if kind in want and size != want[kind]:
            problems.append(f"{path.name} holds {size:,} bytes, the manifest says {want[kind]:,}")
    return problems


def generation_problems(gen_dir: Path, manifest: dict) -> list[str]:
    """What keeps a generation marked complete from being searchable ([] when every shard is intact)."""
    planned = len((manifest.get("plan") or {}).get("shards") or manifest.get("shards") or {})
    shards = manifest.get("shards") or {}
    problems = [f"shard {i} was never built" for i in range(planned) if str(i) not in shards]
    for key in sorted(shards, key=int):
        problems += shard_problems(ShardFiles(gen_dir, int(key)), shards[key])
    return problems


def build_running(idir: Path) -> bool:
    """Whether a live process holds the build lock of ``idir`` (by the pid it wrote there).

    Reads the pid instead of probing the lock, because a probe holding the lock for an
    instant would make a build starting at that instant fail as busy.
    """
    try:
        text = (idir / LOCK).read_text().strip()
    except OSError:
        return False
    if not text.isdigit():
        return False
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return False
    return True


@dataclass
class IndexState:
    """What an index's folder holds.

    ``status``: ``complete`` (the current generation is whole), ``damaged`` (it names files
    that are missing or the wrong size, listed in ``problems``), ``building`` (no complete
    generation yet and a build is running) or ``incomplete`` (no complete generation and no
    build running: an interrupted or failed build, which ``build-index`` resumes).
    ``building`` is True while a build of the index runs, whatever the status (a rebuild
    keeps the last complete generation visible). ``manifest`` is the current generation's,
    else the newest unfinished one's (None when there is none).
    """

    name: str
    path: Path
    status: str
    generation: Path | None
    manifest: dict | None
    problems: list[str] = field(default_factory=list)
    building: bool = False


def index_names(home: str | os.PathLike[str]) -> list[str]:
    """Names of the index folders under ``<home>/index`` (sorted)."""
    root = Path(home) / "index"
    try:
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def index_state(idir: Path, idle: bool = False) -> IndexState | None:
    """What the files of the index at ``idir`` hold; None when there is no trace of a build
    (no folder, or one with neither ``CURRENT`` nor a generation). ``idle``: take no build
    to be running (the caller holds the build lock)."""
    if not idir.is_dir():
        return None
    live = False if idle else build_running(idir)
    try:
        pointer = (idir / CURRENT).read_text().strip()
    except FileNotFoundError:
        pointer = ""
    except OSError as exc:
        return IndexState(idir.name, idir, "damaged", None, None, [f"{CURRENT} is unreadable ({exc})"], live)
    if pointer:
        gen = idir / pointer
        if not gen.is_dir():
            return IndexState(idir.name, idir, "damaged", None, None,
                              [f"{CURRENT} names {pointer}, which is missing"], live)
        try:
            manifest = read_manifest(gen)
        except IndexCorruptError as exc:
            return IndexState(idir.name, idir, "damaged", gen, None, [str(exc)], live)
        if manifest.get("status") != "complete":
            problems = [f"{pointer} is not marked complete in its manifest"]
        else:
            problems = generation_problems(gen, manifest)
        return IndexState(idir.name, idir, "damaged" if problems else "complete", gen, manifest, problems, live)
    gens = generations(idir)
    if not gens and not live:
        return None
    manifest = None
    for g in reversed(gens):
        try:
            manifest = read_manifest(g)
            break
        except IndexCorruptError:
            continue
    return IndexState(idir.name, idir, "building" if live else "incomplete", None, manifest, [], live)


def catalog_entry(manifest: dict, gen: Path) -> tuple[dict, list[dict]]:
    """The catalog's index row and shard rows for complete generation ``gen``."""
    row = {
        "name": manifest["name"], "year": int(manifest["year"]), "dataset_version": manifest["dataset_version"],
        "region": manifest["region"], "factory": manifest["params"]["factory"],
        "params": {**manifest["params"], "generation": gen.name, "synthetic": bool(manifest.get("synthetic", False))},
        "dims": DIMS, "n_vectors": int(manifest.get("n_vectors", sum(int(s["n_vectors"]) for s in manifest["shards"].values()))),
        "n_shards": len(manifest["shards"]), "status": "complete",
    }
    shards = [{"shard": int(k), "path": str(ShardFiles(gen, int(k)).index), "tiles": list(info["tiles"]),
               "n_vectors": int(info["n_vectors"])}
              for k, info in sorted(manifest["shards"].items(), key=lambda kv: int(kv[0]))]
    return row, shards


def remove_debris(idir: Path) -> list[Path]:
    """Remove the temporary ``.*.tmp`` files and folders a killed build left in ``idir`` and
    its generations; returns what was removed. Call only under the build lock."""
    removed = []
    for folder in [idir, *generations(idir)]:
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for p in entries:
            if not (p.name.startswith(".") and p.name.endswith(".tmp")):
                continue
            try:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(p)
            except OSError:
                continue
    return removed
