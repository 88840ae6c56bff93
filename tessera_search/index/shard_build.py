"""Building one shard: the plain-data :class:`ShardJob` and :func:`build_shard`, the unit a
distributed engine runs; and reading a tile's indexable pixels from the store.

A shard is whole tiles: their valid pixels that the tile owns and the region holds (not
the zero vector), normalised, added to a copy of the trained index under their pixel
IDs. Its files: the faiss lists (the coarse quantizer left empty, since every shard of an
index shares the one in ``trained.faissindex``) and a bitmap of the pixels it holds. The
int8 vectors themselves stay in the store only (the re-rank reads them there).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .._io import atomic_path, writing
from ..grid import Tile, pack_ids
from .params import bytes_per_vector
from .rerank import tile_check
from .shards import ShardFiles, faiss_write, file_sizes, read_faiss_index

__all__ = ["ShardJob", "build_shard", "normalise", "run_shards", "shard_job", "strip_quantizer", "tile_pixels",
           "tile_vectors"]

BATCH = 65536  # vectors converted to float32 and added at a time (32 MiB)

# -- reading tiles -------------------------------------------------------------------


def tile_pixels(store, year: int, tile: Tile, region) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tile's indexable pixels: ((n,) int64 IDs ascending, (n, 128) int8 vectors,
    (H, W) bool mask of them).

    Valid, owned by the tile, inside the region, and not the zero vector (which has no
    direction).
    """
    data = store.read(tile, year)
    mask = data.valid & region.mask(data.grid)
    emb = data.embeddings
    rows, cols = np.nonzero(mask)
    vecs = emb[rows, cols]
    nonzero = np.any(vecs != 0, axis=1)
    if not nonzero.all():
        mask[rows[~nonzero], cols[~nonzero]] = False
        rows, cols, vecs = rows[nonzero], cols[nonzero], vecs[nonzero]
    ids = pack_ids(tile.ix, tile.iy, rows, cols)
    return ids, np.ascontiguousarray(vecs), mask


def tile_vectors(store, year: int, tile: Tile, region) -> tuple[np.ndarray, np.ndarray]:
    """The tile's indexable pixels: ((n,) int64 IDs ascending, (n, 128) int8 vectors)."""
    ids, vecs, _ = tile_pixels(store, year, tile, region)
    return ids, vecs


def normalise(vecs: np.ndarray) -> np.ndarray:
    """(n, 128) int8 -> (n, 128) float32 unit vectors (the per-pixel scale cancels in cosine)."""
    x = np.asarray(vecs, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms == 0] = 1.0
    x /= norms[:, None]
    return x



# -- shards --------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardJob:
    """One shard to build, as plain data (picklable, JSON-able: :meth:`to_json`).

    ``home``: the workspace (its store holds the tiles); ``tiles``: tile names, sorted;
    ``region_name`` / ``region_wkb`` (hex WKB of the lon/lat polygon, None for a region of
    explicit tiles): the region whose pixels are kept; ``trained``: the index's
    ``trained.faissindex``; ``gen_dir`` and ``number``: where the shard's files go.
    """

    home: str
    year: int
    tiles: tuple[str, ...]
    region_name: str
    region_wkb: str | None
    trained: str
    gen_dir: str
    number: int
    kind: str = "faiss"  # or "int8-lists" (:mod:`.lists`)

    def to_json(self) -> dict:
        return {**asdict(self), "tiles": list(self.tiles)}

    @classmethod
    def from_json(cls, doc: dict) -> ShardJob:
        return cls(**{**doc, "tiles": tuple(doc["tiles"])})

    def region(self):
        """The :class:`~tessera_search.regions.Region` the job describes."""
        from ..regions import Region

        geom = None
        if self.region_wkb is not None:
            import shapely

            geom = shapely.from_wkb(bytes.fromhex(self.region_wkb))
        return Region(self.region_name, geom, tuple(Tile.from_name(t) for t in self.tiles))

    @property
    def files(self) -> ShardFiles:
        return ShardFiles(Path(self.gen_dir), int(self.number))


def shard_job(home, year: int, tiles: list[str], region, trained: Path, gen: Path, number: int,
              kind: str = "faiss") -> ShardJob:
    """The :class:`ShardJob` for shard ``number`` of a build."""
    geom = getattr(region, "geometry", None)
    return ShardJob(str(home), int(year), tuple(tiles), region.name, None if geom is None else geom.wkb.hex(),
                    str(trained), str(gen), int(number), str(kind))


def strip_quantizer(index):
    """Context: ``index``'s coarse quantizer swapped for an empty one (to write a shard
    without its copy of the shared centroids), restored on exit."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)

    @contextlib.contextmanager
    def swapped():
        if ivf is None:
            yield
            return
        old, own = ivf.quantizer, ivf.own_fields
        # The class faiss itself uses (IP or L2): read back, with any flag, as a plain flat index.
        empty = faiss.IndexFlatIP(ivf.d) if ivf.metric_type == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(ivf.d)
        ivf.own_fields = False  # the index must not free the empty one (Python owns it)
        ivf.quantizer = empty
        try:
            yield
        finally:
            ivf.quantizer = old
            ivf.own_fields = own

    return swapped()


def build_shard(job: ShardJob, progress: Callable[[int], None] | None = None) -> dict:
    """Build one shard (whole tiles) from the trained index; write its files atomically.

    ``job``: a :class:`ShardJob` (plain data). Returns ``{"shard", "tiles", "n_vectors",
    "bytes", "bytes_resident", "seconds", "pixels", "checks"}`` (``bytes``: the size of
    each file, which a later build checks; ``pixels``: ``{tile: [byte offset, height,
    width, n]}`` of each tile's bitmap in the ``.pixels`` file; ``checks``: ``{tile:
    tile_check}``, what the re-rank verifies the store against). Independent of every other shard: a
    distributed engine can run this on any machine that sees ``job.home`` and
    ``job.trained``; its return value goes into the manifest under ``shards[number]``.
    Reads the next tile while faiss adds the current one. Memory: the shard's lists
    (codes + IDs) plus two tiles. ``progress(1)`` after each tile. A failed write (disk
    full, read-only folder) is a WriteError.
    """
    import faiss

    from ..store import TileStore
    from .gpu import to_gpu

    if job.kind == "int8-lists":
        from .lists import build_lists_shard

        return build_lists_shard(job, progress)
    t0 = time.monotonic()
    store, region, files = TileStore(job.home), job.region(), job.files
    tiles = [Tile.from_name(t) for t in job.tiles]
    year = int(job.year)
    index = read_faiss_index(Path(job.trained), mmap=False)
    gpu_index = to_gpu(index)
    target = gpu_index if gpu_index is not None else index
    n, offset, pixels, checks = 0, 0, {}, {}
    what = f"index shard {files.stem}"
    with writing(what, files.gen_dir), atomic_path(files.pixels, what) as tmp_pix, \
            atomic_path(files.index, what) as tmp_idx, open(tmp_pix, "wb") as f_pix, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(tile_pixels, store, year, tiles[0], region) if tiles else None
        for i in range(len(tiles)):
            ids, vecs, mask = pending.result()
            pending = pool.submit(tile_pixels, store, year, tiles[i + 1], region) if i + 1 < len(tiles) else None
            for s in range(0, len(ids), BATCH):
                target.add_with_ids(normalise(vecs[s:s + BATCH]), ids[s:s + BATCH])
            bits = np.packbits(mask.ravel()).tobytes()
            f_pix.write(bits)
            pixels[tiles[i].name] = [offset, int(mask.shape[0]), int(mask.shape[1]), int(len(ids))]
            checks[tiles[i].name] = tile_check(ids, vecs)
            offset += len(bits)
            n += len(ids)
            del ids, vecs, mask
            if progress:
                progress(1)
        f_pix.flush()
        os.fsync(f_pix.fileno())
        if gpu_index is not None:
            index = faiss.index_gpu_to_cpu(gpu_index)
        with strip_quantizer(index):
            faiss_write(index, tmp_idx, what, files.index)
    return {"shard": files.number, "tiles": list(job.tiles), "n_vectors": int(n),
            "bytes": file_sizes(files), "bytes_resident": int(n * bytes_per_vector(index)),
            "seconds": round(time.monotonic() - t0, 3), "pixels": pixels, "checks": checks}


def run_shards(jobs: list[ShardJob], progress: Callable[[int], None] | None,
                done: Callable[[ShardJob, dict], None], engine=None, memory: int | None = None) -> None:
    """Build every job, calling ``done(job, info)`` (which records it) as each finishes.

    The dispatch point: here, in this process, one after another (each shard already
    uses every core through faiss). An engine replaces this loop, running ``build_shard(job)``
    wherever it likes; ``done`` must then be called here, in the process holding the build lock.
    """
    if (getattr(engine, "name", engine) or "local") == "local":
        for job in jobs:
            done(job, build_shard(job, progress))
        return
    if not jobs:
        return
    from ..engine import using_engine

    # Elsewhere (engine="ray": one task per job, each reserving ``memory``); a job's tiles
    # count on the progress bar when it finishes.
    with using_engine(engine) as eng:
        for i, info in eng.map_jobs(build_shard, jobs, memory=memory, steps=[len(j.tiles) for j in jobs],
                                    advance=progress, label=lambda j: f"shard {j.number}"):
            done(jobs[i], info)
