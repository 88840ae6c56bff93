"""The local tile store: one zarr v3 group holding every stored tile-year.

Layout under the workspace::

    store.zarr/                     root group   (attrs: format, layout)
      <year>/                       group per year
        grid_X_Y/                   group per tile-year (attrs: tile, year, epsg, crs,
                                    transform, height, width, dataset_version, source,
                                    synthetic, n_valid, ingested_at)
          embeddings   int8    (H, W, 128)  one shard per tile, inner chunks (64, 64, 128),
                                            uncompressed (int8 embeddings barely compress,
                                            and whole-tile scans feed index builds)
          scales       float32 (H, W)       as published (NaN / inf / sentinels kept),
                                            chunks (256, 256), zstd
          valid        bool    (H, W)       the scale validity rule, chunks (256, 256), zstd
          observations uint16  (H, W, 3)    optional: valid observations per pixel (S2, S1
                                            ascending, S1 descending; attrs["observations"]
                                            names them), where the source publishes them

A tile an int8-lists index has clustered (:meth:`TileStore.cluster`, attrs ``clustered``:
``{"key": ...}``, the index's coarse quantizer) holds its vectors in that index's list
order instead of ``embeddings``, still one copy::

          clustered    int8    (H*W, 128)   every pixel's vector, rows in list order, one
                                            uncompressed chunk (memory-mapped by the index:
                                            a list of a tile is one contiguous run of rows)
          order        int32   (H*W,)       the row-major pixel number of each row

:meth:`TileStore.read` and :meth:`TileStore.read_pixels` give the same arrays for either
layout; a plain :meth:`TileStore.write` (a tile fetched again) restores the plain layout.

The inner chunks make a random pixel read touch 512 KiB, not the whole tile; the single
shard keeps a whole-tile scan one sequential read (64-pixel inner chunks measured 3x
faster to write than 32-pixel ones, at the same read speed). Each tile-year group is
written in a staging directory and renamed into place, so a reader sees a tile complete
or not at all.

Staging: each process writes in its own folder ``<home>/tmp/<pid>-<random>/``, which holds
a ``.lock`` file the process keeps locked (``flock``) for as long as it lives. A process
killed mid-write (``kill -9``) leaves its folder behind; every write first removes the
folders whose lock can be taken, since their owner is gone (the kernel drops a dead
process's locks, so a reused pid cannot make debris look alive, nor a live writer look
dead). A folder is locked before it gets its final name, so a sweep never sees a live
folder unlocked. Anything else under ``tmp/`` (an older version's debris) is removed once
it is an hour old.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ._io import atomic_dir
from .errors import StoreError, TileNotFoundError
from .grid import Tile, TileGrid
from .quant import valid_scales
from .sources.base import OBSERVATION_KINDS, TileData

__all__ = ["TileStore"]

_CHUNK = 64  # inner chunk edge of the embeddings shard: 64 x 64 x 128 int8 = 512 KiB
_SMALL_CHUNK = 256  # chunk edge of the 2-D arrays (scales, valid)
_FORMAT = "tessera-search-store/1"
_LOCK = ".lock"
_OWNED = re.compile(r"^\d+-[0-9a-f]+$")  # <pid>-<random>: a process's staging folder
_UNOWNED_GRACE_S = 3600.0  # other debris (older layouts, a folder being set up) is kept this long

try:
    import fcntl
except ImportError:  # no flock (Windows): staging is never swept, only ever added to
    fcntl = None

# This process's staging folder per tmp/ directory, and the open (locked) .lock file that
# marks it alive; kept for the process's life. Re-made after a fork (other pid).
_staging_lock = threading.Lock()
_staging: dict[Path, tuple[int, Path, int]] = {}  # tmp -> (pid, folder, fd of its locked .lock)


def _staging_folder(tmp: Path) -> Path:
    """This process's own locked staging folder under ``tmp`` (made on first use)."""
    key = tmp.absolute()
    with _staging_lock:
        held = _staging.get(key)
        if held is not None:
            if held[0] == os.getpid() and (held[1] / _LOCK).is_file():
                return held[1]
            if held[0] == os.getpid():  # someone removed it: make a new one
                os.close(held[2])
        tmp.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{secrets.token_hex(6)}"
        building = tmp / f".{name}.new"
        building.mkdir()
        lock = os.open(building / _LOCK, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # open for life
        if fcntl is not None:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # no locks on this filesystem: sweeps there cannot lock it either
                pass
        final = tmp / name
        os.replace(building, final)  # only now visible to sweeps, and already locked
        _staging[key] = (os.getpid(), final, lock)
        return final


def _sweep_staging(tmp: Path, keep: Path | None = None) -> list[Path]:
    """Remove staging folders under ``tmp`` whose owner is gone; returns what was removed.

    A ``<pid>-<random>`` folder is stale when its ``.lock`` can be locked. Anything else
    (an older layout's debris, a folder still being set up) goes only once it is over an
    hour old. Never touches ``keep`` nor a folder whose lock is held.
    """
    if fcntl is None or not tmp.is_dir():
        return []
    removed = []
    for entry in tmp.iterdir():
        if keep is not None and entry == keep:
            continue
        try:
            if _OWNED.match(entry.name) and (entry / _LOCK).is_file():
                if _remove_if_unlocked(entry):
                    removed.append(entry)
            elif time.time() - entry.lstat().st_mtime > _UNOWNED_GRACE_S:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry)
        except OSError:
            continue  # vanished meanwhile, or not ours to judge: leave it
    return removed


def _remove_if_unlocked(folder: Path) -> bool:
    try:
        fd = os.open(folder / _LOCK, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held: its process is alive (or locks do not work here: keep it)
        shutil.rmtree(folder, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _raw_chunk(adir: Path, shape: tuple[int, ...], dtype, g) -> np.ndarray:
    """An uncompressed single-chunk array's one chunk file, memory-mapped read-only (what
    :meth:`TileStore.cluster` writes); read through zarr when laid out otherwise."""
    meta = json.loads((adir / "zarr.json").read_text())
    path = adir / "c" / "/".join("0" * len(shape))
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    plain = ([c["name"] for c in meta["codecs"]] == ["bytes"] and list(meta["shape"]) == list(shape)
             and meta["chunk_grid"]["configuration"]["chunk_shape"] == list(shape))
    if plain and path.is_file() and path.stat().st_size == nbytes:
        if nbytes == 0:
            return np.zeros(shape, dtype)
        return np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r", shape=shape)
    return np.asarray(g[adir.name][...]).astype(dtype, copy=False)


class TileStore:
    """Read and write tile-years in ``<home>/store.zarr``."""

    def __init__(self, home: str | os.PathLike[str]) -> None:
        self.home = Path(home)
        self.root = self.home / "store.zarr"
        self._tmp = self.home / "tmp"

    # -- layout ---------------------------------------------------------------------
    def _group_path(self, tile: Tile, year: int) -> Path:
        return self.root / str(int(year)) / tile.name

    def _ensure_root(self, year: int) -> None:
        for path, attrs in ((self.root, {"format": _FORMAT}), (self.root / str(int(year)), {"year": int(year)})):
            meta = path / "zarr.json"
            if not meta.exists():
                path.mkdir(parents=True, exist_ok=True)
                tmp = path / ".zarr.json.tmp"
                tmp.write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": attrs}))
                os.replace(tmp, meta)

    # -- queries --------------------------------------------------------------------
    def has(self, tile: Tile, year: int) -> bool:
        """True when the tile-year is completely stored."""
        return (self._group_path(tile, year) / "zarr.json").exists()

    def list(self, year: int | None = None) -> list[tuple[Tile, int]]:
        """Stored (tile, year) pairs, sorted."""
        out: list[tuple[Tile, int]] = []
        if not self.root.exists():
            return out
        years = [year] if year is not None else sorted(int(p.name) for p in self.root.iterdir() if p.name.isdigit())
        for y in years:
            ydir = self.root / str(y)
            if not ydir.is_dir():
                continue
            for p in sorted(ydir.iterdir()):
                if p.name.startswith("grid_") and (p / "zarr.json").exists():
                    out.append((Tile.from_name(p.name), y))
        return out

    def _open(self, tile: Tile, year: int):
        import zarr

        path = self._group_path(tile, year)
        if not (path / "zarr.json").exists():
            raise TileNotFoundError(
                f"tile {tile.name} ({year}) is not in the store at {self.root}; run "
                f"`tessera-search download --tile {tile.name} --year {year}`"
            )
        try:
            return zarr.open_group(str(path), mode="r", zarr_format=3)
        except Exception as exc:  # zarr raises a variety of errors for damaged groups
            raise StoreError(f"tile {tile.name} ({year}) in {self.root} is unreadable: {exc}") from exc

    def attrs(self, tile: Tile, year: int) -> dict:
        """The tile-year's metadata (tile, year, epsg, transform, dataset_version, ...)."""
        meta = self._group_path(tile, year) / "zarr.json"
        if not meta.exists():
            self._open(tile, year)  # raises the helpful TileNotFoundError
        try:
            return dict(json.loads(meta.read_text())["attributes"])
        except (OSError, ValueError, KeyError) as exc:
            raise StoreError(f"metadata of {tile.name} ({year}) is unreadable: {exc}") from exc

    def grid(self, tile: Tile, year: int) -> TileGrid:
        """The tile-year's UTM grid as stored."""
        a = self.attrs(tile, year)
        return TileGrid(tile, int(a["epsg"]), tuple(float(v) for v in a["transform"]), int(a["height"]), int(a["width"]))

    def read(self, tile: Tile, year: int) -> TileData:
        """The whole tile-year: (H, W, 128) int8, (H, W) float32 scales, grid, metadata."""
        g = self._open(tile, year)
        a = dict(g.attrs)
        try:
            if a.get("clustered"):
                rows, order = self._clustered(tile, year, g)
                emb = np.empty((len(order), int(a["dims"])), np.int8)
                emb[order] = rows
                emb = emb.reshape(int(a["height"]), int(a["width"]), -1)
            else:
                emb = np.asarray(g["embeddings"][...])
            scales = np.asarray(g["scales"][...])
        except Exception as exc:
            raise StoreError(f"tile {tile.name} ({year}) in {self.root} is unreadable: {exc}") from exc
        return TileData(
            tile=tile,
            year=int(year),
            embeddings=emb,
            scales=scales,
            grid=self.grid(tile, year),
            dataset_version=str(a.get("dataset_version", "")),
            source=str(a.get("source", "")),
            synthetic=bool(a.get("synthetic", False)),
            observations=np.asarray(g["observations"][...]) if a.get("observations") else None,
        )

    def read_observations(self, tile: Tile, year: int, rows, cols) -> dict[str, np.ndarray] | None:
        """Observation counts at the given pixels, by kind (``{"s2": (N,) uint16, ...}``);
        None when the tile's source did not publish them."""
        g = self._open(tile, year)
        kinds = g.attrs.get("observations")
        if not kinds:
            return None
        rows = np.asarray(rows, dtype=np.int64).ravel()
        cols = np.asarray(cols, dtype=np.int64).ravel()
        try:
            arr = g["observations"]
            got = np.stack([np.asarray(arr[int(r), int(c), :]) for r, c in zip(rows, cols, strict=True)]) \
                if rows.size else np.zeros((0, len(kinds)), np.uint16)
        except Exception as exc:
            raise StoreError(f"observation counts of {tile.name} ({year}) in {self.root} are unreadable: {exc}") from exc
        return {str(k): got[:, i] for i, k in enumerate(kinds)}

    def read_valid(self, tile: Tile, year: int) -> np.ndarray:
        """(H, W) bool validity mask (scale finite, > 0, < 1)."""
        g = self._open(tile, year)
        return np.asarray(g["valid"][...])

    def read_scales(self, tile: Tile, year: int) -> np.ndarray:
        """(H, W) float32 scales as published."""
        return np.asarray(self._open(tile, year)["scales"][...])

    def read_pixels(self, tile: Tile, year: int, rows, cols) -> tuple[np.ndarray, np.ndarray]:
        """Random pixel reads: ((N, 128) int8, (N,) float32 scales) for the given pixels.

        Touches only the 64 x 64 inner chunks that hold the pixels.
        """
        rows = np.asarray(rows, dtype=np.int64).ravel()
        cols = np.asarray(cols, dtype=np.int64).ravel()
        g = self._open(tile, year)
        sc_arr = g["scales"]
        h, w = sc_arr.shape
        if rows.size and (rows.min() < 0 or cols.min() < 0 or rows.max() >= h or cols.max() >= w):
            raise IndexError(f"pixel outside tile {tile.name} ({h} x {w})")
        if g.attrs.get("clustered"):
            vecs, order = self._clustered(tile, year, g)
            pos = self._rowof_or_inverse(tile, year, g, order)[rows * w + cols].astype(np.int64)
            emb = np.empty((rows.size, vecs.shape[1]), dtype=np.int8)
            srt = np.argsort(pos)
            emb[srt] = vecs[pos[srt]]
            sc = np.asarray(sc_arr[...])[rows, cols].astype(np.float32) if rows.size else np.empty(0, np.float32)
            return emb, sc
        emb_arr = g["embeddings"]
        emb = np.empty((rows.size, emb_arr.shape[2]), dtype=np.int8)
        sc = np.empty(rows.size, dtype=np.float32)
        if rows.size == 0:
            return emb, sc
        # Group by inner chunk so each chunk is read once.
        key = (rows // _CHUNK) * ((w + _CHUNK - 1) // _CHUNK) + cols // _CHUNK
        order = np.argsort(key, kind="stable")
        ks = key[order]
        bounds = np.flatnonzero(np.diff(ks)) + 1
        for grp in np.split(order, bounds):
            r0 = int(rows[grp[0]] // _CHUNK) * _CHUNK
            c0 = int(cols[grp[0]] // _CHUNK) * _CHUNK
            r1, c1 = min(r0 + _CHUNK, h), min(c0 + _CHUNK, w)
            block = np.asarray(emb_arr[r0:r1, c0:c1, :])
            sblock = np.asarray(sc_arr[r0:r1, c0:c1])
            emb[grp] = block[rows[grp] - r0, cols[grp] - c0]
            sc[grp] = sblock[rows[grp] - r0, cols[grp] - c0]
        return emb, sc

    def embedding_file(self, tile: Tile, year: int) -> tuple[Path, np.ndarray] | None:
        """Where each pixel's int8 vector lies in the tile's one embeddings shard file.

        Returns ``(path, first)``: ``first[i, j]`` is the row (of 128 bytes) of the file at
        which inner chunk (i, j) begins (-1: the chunk was never written, all zero), so pixel
        (r, c) is row ``first[r // 64, c // 64] + (r % 64) * 64 + c % 64``. This is what lets
        an index re-rank from the store's own bytes, memory-mapped, instead of keeping a
        second copy. None when the array is not laid out that way (another codec, an older
        store): read pixels with :meth:`read_pixels` then.
        """
        gdir = self._group_path(tile, year) / "embeddings"
        try:
            meta = json.loads((gdir / "zarr.json").read_text())
            (codec,) = meta["codecs"]
            conf = codec["configuration"]
            h, w, d = meta["shape"]
            plain = (codec["name"] == "sharding_indexed" and conf["chunk_shape"] == [_CHUNK, _CHUNK, d]
                     and [c["name"] for c in conf["codecs"]] == ["bytes"]
                     and [c["name"] for c in conf["index_codecs"]] == ["bytes", "crc32c"]
                     and conf.get("index_location", "end") == "end" and meta["data_type"] == "int8"
                     and meta["chunk_grid"]["configuration"]["chunk_shape"] == [_round_up(h, _CHUNK), _round_up(w, _CHUNK), d])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        path = gdir / "c" / "0" / "0" / "0"
        if not plain or not path.is_file():
            return None
        nr, nc = _round_up(h, _CHUNK) // _CHUNK, _round_up(w, _CHUNK) // _CHUNK
        n_index = nr * nc * 16
        with open(path, "rb") as f:
            f.seek(-(n_index + 4), os.SEEK_END)
            index = np.frombuffer(f.read(n_index), dtype="<u8").reshape(nr, nc, 2)
        offset, nbytes = index[..., 0], index[..., 1]
        empty = offset == np.iinfo(np.uint64).max
        chunk_bytes = _CHUNK * _CHUNK * d
        if np.any(~empty & ((nbytes != chunk_bytes) | (offset % d != 0))):
            return None
        return path, np.where(empty, -1, (offset // d).astype(np.int64))

    def clustered_file(self, tile: Tile, year: int) -> tuple[np.ndarray, np.ndarray, str] | None:
        """A clustered tile's ``(rows, order, key)``: (H*W, 128) int8 rows in list order and
        (H*W,) int32 row-major pixel numbers, both memory-mapped read-only, and the key of
        the quantizer that ordered them. None for a tile in the plain layout."""
        g = self._open(tile, year)
        key = (g.attrs.get("clustered") or {}).get("key")
        if not key:
            return None
        rows, order = self._clustered(tile, year, g)
        return rows, order, str(key)

    def _clustered(self, tile: Tile, year: int, g) -> tuple[np.ndarray, np.ndarray]:
        a = g.attrs
        n, d = int(a["height"]) * int(a["width"]), int(a["dims"])
        base = self._group_path(tile, year)
        try:
            rows = _raw_chunk(base / "clustered", (n, d), np.int8, g)
            order = _raw_chunk(base / "order", (n,), np.int32, g)
        except (OSError, ValueError) as exc:
            raise StoreError(f"tile {tile.name} ({year}) in {self.root} is unreadable: {exc}") from exc
        return rows, order

    def clustered_rowof(self, tile: Tile, year: int, compute: bool = False) -> np.ndarray | None:
        """A clustered tile's (H*W,) int32 row of each row-major pixel (the inverse of its
        order), memory-mapped read-only; None for a plain tile, and for one clustered before
        the store kept it unless ``compute`` (then worked out from the order)."""
        g = self._open(tile, year)
        if not (g.attrs.get("clustered") or {}).get("key"):
            return None
        if compute:
            return self._rowof_or_inverse(tile, year, g, self._clustered(tile, year, g)[1])
        return self._rowof(tile, year, g)

    def _rowof_or_inverse(self, tile: Tile, year: int, g, order: np.ndarray) -> np.ndarray:
        at = self._rowof(tile, year, g)
        if at is None:  # clustered before the store kept each pixel's row
            at = np.empty(len(order), np.int32)
            at[order] = np.arange(len(order), dtype=np.int32)
        return at

    def _rowof(self, tile: Tile, year: int, g) -> np.ndarray | None:
        a = g.attrs
        adir = self._group_path(tile, year) / "rowof"
        if not (adir / "zarr.json").is_file():
            return None
        try:
            return _raw_chunk(adir, (int(a["height"]) * int(a["width"]),), np.int32, g)
        except (OSError, ValueError) as exc:
            raise StoreError(f"tile {tile.name} ({year}) in {self.root} is unreadable: {exc}") from exc

    def cluster(self, tile: Tile, year: int, order: np.ndarray, key: str) -> dict:
        """Rewrite a stored tile-year with its vectors in ``order`` (the (H*W,) row-major
        pixel number of each row: a permutation), recording ``key`` (the quantizer that
        chose it); atomically, like :meth:`write`. Everything else is kept as it is.
        Returns the new attrs."""
        data = self.read(tile, year)
        h, w, _ = data.embeddings.shape
        order = np.asarray(order, dtype=np.int64).ravel()
        if len(order) != h * w or np.bincount(order, minlength=h * w).max(initial=0) != 1 or order.min() < 0:
            raise ValueError(f"the order for {tile.name} is not a permutation of its {h * w} pixels")
        old = self.attrs(tile, year)
        keep = {k: old[k] for k in ("source", "ingested_at") if k in old}
        return self.write(data, _order=order.astype(np.int32), _extra={**keep, "clustered": {"key": str(key)}})

    # -- writes ---------------------------------------------------------------------
    def write(self, data: TileData, _order: np.ndarray | None = None, _extra: dict | None = None) -> dict:
        """Store a tile-year atomically (replacing any earlier copy); returns its attrs."""
        import zarr
        from zarr.codecs import ZstdCodec

        self._ensure_root(data.year)
        h, w, d = data.embeddings.shape
        valid = valid_scales(data.scales)
        attrs = {
            "tile": data.tile.name,
            "year": int(data.year),
            "epsg": int(data.grid.epsg),
            "crs": data.grid.crs,
            "transform": [float(v) for v in data.grid.transform],
            "height": int(h),
            "width": int(w),
            "dims": int(d),
            "dataset_version": data.dataset_version,
            "source": data.source,
            "synthetic": bool(data.synthetic),
            "n_valid": int(valid.sum()),
            **({"observations": list(OBSERVATION_KINDS)} if data.observations is not None else {}),
            "ingested_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **(_extra or {}),
        }
        shard = (_round_up(h, _CHUNK), _round_up(w, _CHUNK))
        try:
            staging = _staging_folder(self._tmp)
            _sweep_staging(self._tmp, keep=staging)
            with atomic_dir(self._group_path(data.tile, data.year), staging=staging) as tmp:
                g = zarr.open_group(str(tmp), mode="w", zarr_format=3, attributes=attrs)
                if _order is None:
                    e = g.create_array(
                        "embeddings", shape=(h, w, d), dtype="int8", chunks=(_CHUNK, _CHUNK, d),
                        shards=(*shard, d), compressors=None, fill_value=0,
                    )
                    e[...] = data.embeddings
                else:
                    raw = {"compressors": None, "fill_value": 0, "config": {"write_empty_chunks": True}}
                    c = g.create_array("clustered", shape=(h * w, d), dtype="int8", chunks=(h * w, d), **raw)
                    c[...] = data.embeddings.reshape(h * w, d)[_order]
                    o = g.create_array("order", shape=(h * w,), dtype="int32", chunks=(h * w,), **raw)
                    o[...] = _order
                    rowof = np.empty(h * w, np.int32)  # the inverse: random reads by pixel need no pass
                    rowof[_order] = np.arange(h * w, dtype=np.int32)
                    a = g.create_array("rowof", shape=(h * w,), dtype="int32", chunks=(h * w,), **raw)
                    a[...] = rowof
                s = g.create_array(
                    "scales", shape=(h, w), dtype="float32", chunks=(_SMALL_CHUNK, _SMALL_CHUNK),
                    compressors=ZstdCodec(level=3), fill_value=float("nan"),
                )
                s[...] = data.scales
                v = g.create_array(
                    "valid", shape=(h, w), dtype="bool", chunks=(_SMALL_CHUNK, _SMALL_CHUNK),
                    compressors=ZstdCodec(level=3), fill_value=False,
                )
                v[...] = valid
                if data.observations is not None:
                    o = g.create_array(
                        "observations", shape=(h, w, len(OBSERVATION_KINDS)), dtype="uint16",
                        chunks=(_SMALL_CHUNK, _SMALL_CHUNK, len(OBSERVATION_KINDS)),
                        compressors=ZstdCodec(level=3), fill_value=0,
                    )
                    o[...] = data.observations
        except OSError as exc:
            raise StoreError(f"could not write {data.label} to {self.root}: {exc}") from exc
        return attrs

    def delete(self, tile: Tile, year: int) -> None:
        """Remove a tile-year from the store (no error if absent)."""
        shutil.rmtree(self._group_path(tile, year), ignore_errors=True)

    def clean_staging(self) -> list[Path]:
        """Remove staging folders left by processes that died mid-write; returns them.

        The folders of running processes (this one included) are kept.
        """
        with _staging_lock:
            own = _staging.get(self._tmp.absolute())
        keep = own[1] if own is not None and own[0] == os.getpid() else None
        return _sweep_staging(self._tmp, keep=keep)

    def __iter__(self) -> Iterator[tuple[Tile, int]]:
        return iter(self.list())
