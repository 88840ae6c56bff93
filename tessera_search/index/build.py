"""Building an index: choose parameters, train once on a spread sample, build shards, tune.

One index per (name, year, dataset version). The pipeline, shard-shaped so that a
distributed engine can run :func:`build_shard` on many machines against the same
trained file:

1. :func:`choose_params` picks the faiss factory string and search defaults from the
   number of vectors (see ``docs/index.md``);
2. :func:`train` fits the coarse quantizer and PQ codebooks on :func:`training_sample`
   (evenly spaced tiles, a seeded random draw of pixels in each), once per index;
3. :func:`build_shard` runs one :class:`ShardJob` (plain data: where the workspace is,
   the year, the shard's tiles, the region, the trained file, the output folder and shard
   number). It reads whole tiles from the store, keeps the pixels that are valid, owned
   by the tile and inside the region, normalises them (cosine = inner product on unit
   vectors; the per-pixel scale cancels), adds them under their pixel IDs, and writes the
   shard's files atomically: the faiss lists (its coarse quantizer left empty: the index's
   one trained quantizer is shared) and a bitmap of the pixels it holds. The int8
   vectors are not copied: searches re-rank from the store (:mod:`.rerank`);
4. :func:`build_index` strings these together with a lock, a progress bar, resumption
   (finished shards of an interrupted build are kept), the search parameters tuned to a
   recall target on held-out sample queries (:mod:`.tune`), and the catalog. Every
   shard goes through the one call ``build_shard(job)`` in :func:`_run_shards`: the
   dispatch point where an engine (Ray, Dask) can run the jobs elsewhere.

The files on disk are the truth: a rerun checks the current generation (every shard file
present, with the size its manifest records) and rebuilds only what is missing, in a new
generation that takes the intact shards over by hard link; it records the catalog
whatever state a killed run left it in, and removes the temporary files a killed run
left behind. Every write goes through :func:`tessera_search._io.writing`, so a full disk
or a read-only workspace is a :class:`~tessera_search.errors.WriteError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .._io import atomic_path, writing
from ..errors import IndexBusyError, IndexCorruptError, InvalidInputError, NoCoverageError
from ..grid import Tile
from .lists import KIND, LISTS_SHARD_VECTORS, is_lists_factory
from .params import SEED, DEFAULT_MAX_MEMORY, IndexParams, bytes_per_vector, choose_params, new_index, parse_size
from .shard_build import BATCH, ShardJob, build_shard, normalise, run_shards, shard_job, tile_vectors
from .shards import (
    DIMS,
    LOCK,
    TRAINED,
    ShardFiles,
    catalog_entry,
    current_generation,
    generation_problems,
    generations,
    index_dir,
    index_state,
    plan_shards,
    read_manifest,
    remove_debris,
    set_current,
    shard_problems,
    write_faiss_index,
    write_manifest,
)

__all__ = [
    "DEFAULT_MAX_MEMORY",
    "BuildReport",
    "IndexParams",
    "build_index",
    "ShardJob",
    "build_shard",
    "choose_params",
    "default_index_name",
    "parse_size",
    "train",
    "training_sample",
]

_FORMAT = "tessera-search-index/2"
DEFAULT_TARGET_RECALL = 0.95
_FULL_TILE_BYTES = 1200 * 1200 * (DIMS + 4 + 1)  # a whole tile read: int8 + scales + mask


# -- parameters ----------------------------------------------------------------------


def default_index_name(region, year: int) -> str:
    """``kenya-2023``, ``bbox-36.7_-1.4_36.9_-1.2-2023``, ``tiles-grid_36.85_-1.25-2023``..."""
    label = region.name
    m = re.match(r"^(.*?)\s*\(([A-Z]{3})\)$", label)  # "Kenya (KEN)" -> "kenya"
    if m:
        label = m.group(1)
    elif label.startswith("bbox "):
        label = "bbox-" + label[5:].replace(",", "_")
    elif label.startswith("region file "):
        label = Path(label[len("region file "):]).stem
    elif label.startswith("tiles "):
        names = label[len("tiles "):].split(",")
        label = "tiles-" + (names[0] if len(names) == 1 else f"{names[0]}-and-{len(names) - 1}-more")
    slug = re.sub(r"[^a-z0-9_.-]+", "-", label.lower()).strip("-.") or "region"
    return f"{slug}-{int(year)}"


# -- training ------------------------------------------------------------------------


def _sample_tiles(names: list[str], counts: list[int], train_size: int) -> list[int]:
    """Evenly spaced positions in the sorted tile list: the sample spreads over the region."""
    n_pick = min(len(names), max(1, math.ceil(train_size / 2048)))
    picks = np.unique(np.round(np.linspace(0, len(names) - 1, n_pick)).astype(int))
    return [int(i) for i in picks if counts[i] > 0]


def training_sample(store, year: int, tiles: list[Tile], counts: list[int], region, n: int,
                    seed: int = SEED, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(m, 128) float32 unit vectors, m <= ``n``: the training sample, spread over ``tiles``.

    Evenly spaced tiles of the sorted list (about one per 2048 vectors wanted), a seeded
    random draw of pixels in each, in proportion to ``counts`` (indexable pixels per
    tile). The one place the sample is gathered: the build trains on exactly this.
    Deterministic: the same tiles, counts, ``n`` and ``seed`` give the same sample.
    ``progress(1)`` after each tile read.
    """
    picks = _sample_tiles([t.name for t in tiles], counts, n)
    total = sum(counts[i] for i in picks)
    parts = []
    for i in picks:
        tile = tiles[i]
        ids, vecs = tile_vectors(store, year, tile, region)
        quota = min(len(ids), math.ceil(n * counts[i] / max(total, 1)))
        if quota < len(ids):
            rng = np.random.default_rng([seed, tile.ix + 1800, tile.iy + 900])
            vecs = vecs[np.sort(rng.choice(len(ids), quota, replace=False))]
        parts.append(normalise(vecs))
        del ids, vecs
        if progress:
            progress(1)
    if not parts or sum(len(p) for p in parts) == 0:
        raise NoCoverageError("no valid pixels to train on in the region's stored tiles")
    return np.concatenate(parts)[:n]


def train(store, year: int, tiles: list[Tile], counts: list[int], region, params: IndexParams,
          progress: Callable[[int], None] | None = None, zone_sample: np.ndarray | None = None):
    """Train a fresh index on :func:`training_sample` (or on ``zone_sample``: the published
    zone statistics' vectors, :func:`tessera_search.zone_samples.index_training`); returns
    the empty trained index.

    Deterministic: the same tiles, counts and params give the same sample, and faiss'
    k-means runs with a fixed seed.
    """
    import faiss

    from .gpu import train_index

    x = zone_sample if zone_sample is not None else training_sample(
        store, year, tiles, counts, region, params.train_size, params.seed, progress)
    index = new_index(params.factory)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.cp.seed = params.seed
        if ivf.nlist > len(x):
            raise InvalidInputError(
                f"factory {params.factory!r} asks for {ivf.nlist} lists but the region has only {len(x)} "
                "training vectors; use fewer lists (IVFn with n <= vectors / 39)"
            )
    train_index(index, x)
    return index


# -- the whole build -----------------------------------------------------------------


@dataclass
class BuildReport:
    """What a build did. ``up_to_date`` when the complete index already matched (and its
    files are intact); ``repaired`` lists what a damaged generation lacked (rebuilt)."""

    name: str
    year: int
    dataset_version: str
    region: str
    path: Path
    generation: str
    tiles: list[str]
    skipped_tiles: list[str]
    n_vectors: int
    n_shards: int
    shards_built: int
    shards_reused: int
    params: IndexParams
    seconds: float
    up_to_date: bool = False
    synthetic: bool = False
    shards: list[dict] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # what the check of the last generation found missing

    def to_json(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["params"] = self.params.to_json()
        return d


@contextlib.contextmanager
def build_lock(idir: Path, name: str) -> Iterator[None]:
    """Hold ``<index dir>/.build.lock`` exclusively; IndexBusyError when another build holds it."""
    import fcntl

    with writing("the index folder", idir):
        idir.mkdir(parents=True, exist_ok=True)
        f = open(idir / LOCK, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise IndexBusyError(
            f"index {name} is being built by pid {holder}; wait for it to finish, or stop it and rerun "
            "`tessera-search build-index` (finished shards are kept)"
        ) from None
    try:
        with writing("the build lock", idir / LOCK):
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            f.seek(0)
            f.truncate()
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()


def _resolve(region, bbox, region_file, tiles):
    if region is not None and not isinstance(region, str):
        if any(v is not None for v in (bbox, region_file, tiles)):
            raise InvalidInputError("give a Region or region options, not both")
        return region
    from ..regions import resolve_region

    return resolve_region(region=region, bbox=bbox, region_file=region_file, tiles=tiles)


def _estimate_counts(region, tiles: list[Tile], attrs: list[dict]) -> list[int]:
    """Indexable pixels per tile, estimated without reading pixels: valid pixels times the
    share of the tile's cell inside the region (exact for tiles wholly inside)."""
    counts = [int(a.get("n_valid", 0)) for a in attrs]
    geom = getattr(region, "geometry", None)
    if geom is None or not tiles:
        return counts
    import shapely

    boxes = shapely.box(*np.array([t.bounds for t in tiles]).T)
    share = shapely.area(shapely.intersection(geom, boxes)) / shapely.area(boxes)
    return [int(math.ceil(round(c * min(max(float(f), 0.0), 1.0), 6))) for c, f in zip(counts, share)]


def _build_key(year, version, region, tile_attrs, params, capacity, target_recall) -> str:
    geom = getattr(region, "geometry", None)
    doc = {
        "format": _FORMAT,
        "year": int(year),
        "dataset_version": version,
        "region": region.name,
        "geometry": None if geom is None else hashlib.sha256(geom.wkb).hexdigest(),
        "tiles": [[a["tile"], int(a.get("n_valid", 0)), a.get("ingested_at")] for a in tile_attrs],
        "params": params.to_json(),
        "capacity": int(capacity),
        "target_recall": float(target_recall),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _next_generation(idir: Path) -> Path:
    gens = generations(idir)
    last = max((int(p.name.split("-")[1]) for p in gens if p.name.split("-")[1].isdigit()), default=0)
    return idir / f"gen-{last + 1:05d}"


def build_index(
    region=None,
    year: int | None = None,
    *,
    bbox: str | None = None,
    region_file: str | os.PathLike[str] | None = None,
    tiles: list[str] | str | None = None,
    source: str | os.PathLike[str] | None = None,
    name: str | None = None,
    factory: str | None = None,
    max_memory: int | str = DEFAULT_MAX_MEMORY,
    home: str | os.PathLike[str] | None = None,
    progress=None,
    rebuild: bool = False,
    shard_size: int | None = None,
    on_shard: Callable[[int, int], None] | None = None,
    target_recall: float = DEFAULT_TARGET_RECALL,
    engine=None,
    train_from: str = "tiles",
) -> BuildReport:
    """Build (or resume, or confirm up to date) the index of a region for ``year``.

    ``region`` is a :class:`~tessera_search.regions.Region` or a country name; or give
    ``bbox``, ``region_file`` or ``tiles`` instead. Tiles the store lacks are fetched
    from ``source`` first (tiles no source offers are skipped and listed). ``name``
    defaults to :func:`default_index_name`. ``max_memory`` bounds the build's memory
    (shard size and training sample follow from it). An interrupted build, rerun with the
    same arguments, keeps its finished shards; ``rebuild`` starts afresh even when the
    complete index is up to date. ``shard_size`` caps the vectors per shard below what
    ``max_memory`` allows (more, smaller shards for a distributed engine).
    ``on_shard(done, total)`` is called after each shard. ``target_recall``: the search
    parameters (lists probed, candidates re-ranked) are tuned after the shards are built,
    on held-out sample queries against exact answers, to the cheapest that reach this
    recall@1000 (and recall@10 >= 0.99); they are recorded in the manifest (``search``)
    and are what :meth:`Index.search` uses by default. ``engine``: where the shards are
    built, ``"local"`` (default: here, one after another) or ``"ray"`` (one Ray task per
    shard, each reserving ``max_memory``), or a :class:`~tessera_search.engine.Engine`;
    see ``docs/scale.md``. ``train_from``: ``"tiles"`` (default) trains on a spread sample
    of the region's own tiles; ``"zone-stats"`` on the per-zone sample vectors a geoemb
    Zarr store publishes (kept at download), reading no tile: for indexes spanning a large
    part of their zones, since those samples come from the whole zone, not the region.

    Raises IndexBusyError when another process builds the same index,
    NoCoverageError when no tile of the region can be had, InvalidInputError when the
    tiles mix dataset versions.
    """
    from ..config import resolve_home

    if year is None:
        raise InvalidInputError("a year is required, e.g. year=2023")
    t0 = time.monotonic()
    home = resolve_home(home)
    reg = _resolve(region, bbox, region_file, tiles)
    budget = parse_size(max_memory)
    target_recall = float(target_recall)
    if not 0.0 < target_recall < 1.0:
        raise InvalidInputError(f"target_recall must be between 0 and 1 (exclusive), got {target_recall}")
    name = name or default_index_name(reg, year)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
        raise InvalidInputError(f"index name {name!r} may hold only letters, digits, '.', '_' and '-'")
    idir = index_dir(home, name)
    with build_lock(idir, name):
        remove_debris(idir)  # under the lock: no other build of this index is writing them
        try:
            return _build_locked(reg, int(year), name, idir, home, source, factory, budget, progress, rebuild,
                                 shard_size, on_shard, t0, target_recall, engine, train_from)
        except BaseException:
            _settle(home, idir)
            raise


def _settle(home, idir: Path) -> None:
    """After a failed build: the catalog says what the files hold (never a stale 'building')."""
    from ..catalog import Catalog
    from .search import reconcile_index

    try:
        catalog = Catalog(home)
        state = index_state(idir, idle=True)
        if state is not None:
            reconcile_index(catalog, state, catalog.index(idir.name), idle=True)
    except Exception:  # noqa: BLE001 - best effort: the build's own error is the one to report
        pass


def _build_locked(reg, year, name, idir, home, source, factory, budget, progress, rebuild, shard_size, on_shard, t0,
                  target_recall, engine=None, train_from="tiles"):
    from .._progress import progress_bar
    from ..catalog import Catalog
    from ..ingest import download
    from ..store import TileStore

    store, catalog = TileStore(home), Catalog(home)
    missing = [t for t in reg.tiles if not store.has(t, year)]
    if missing:
        download(missing, year, source=source, home=home, progress=progress)
    present = [t for t in reg.tiles if store.has(t, year)]
    skipped = [t.name for t in reg.tiles if not store.has(t, year)]
    if not present:
        raise NoCoverageError(
            f"none of the {len(reg.tiles)} tiles of {reg.name} for {year} could be stored; "
            "check the source (source=DIR|URL|synthetic) and download them first"
        )
    attrs = [store.attrs(t, year) for t in present]
    versions: dict[str, list[str]] = {}
    for a in attrs:
        versions.setdefault(str(a.get("dataset_version", "")), []).append(a["tile"])
    if len(versions) > 1:
        detail = "; ".join(f"{v or '(none)'}: {', '.join(ts[:3])}{' ...' if len(ts) > 3 else ''}" for v, ts in sorted(versions.items()))
        raise InvalidInputError(
            f"the tiles of {reg.name} for {year} mix dataset versions ({detail}); an index holds one "
            "dataset: re-download the odd tiles with `tessera-search download --dataset ...`"
        )
    version = next(iter(versions))
    synthetic = any(bool(a.get("synthetic", False)) for a in attrs)
    counts = _estimate_counts(reg, present, attrs)
    params = choose_params(sum(counts), factory, budget)
    probe = new_index(params.factory)
    per_vector = bytes_per_vector(probe, params.factory)
    fixed = 2 * _FULL_TILE_BYTES + BATCH * DIMS * 8 + (params.nlist or 1) * DIMS * 4 * 2
    capacity = (budget - fixed) // (2 * per_vector)  # faiss' list vectors may double when growing
    if capacity < max(counts, default=1):
        need = fixed + 2 * per_vector * max(counts, default=1)
        raise InvalidInputError(f"max_memory {budget:,} bytes is too small for one tile; allow at least {need:,}")
    if is_lists_factory(params.factory):  # memory does not grow with a lists shard: size it for parallelism
        capacity = min(capacity, LISTS_SHARD_VECTORS)
    if shard_size is not None:
        capacity = min(capacity, max(1, int(shard_size)))
    plan = plan_shards([(t.name, c) for t, c in zip(present, counts)], capacity)
    key = _build_key(year, version, reg, attrs, params, capacity, target_recall)

    current = current_generation(idir)
    repair_from, repaired = None, []
    if current is not None and not rebuild:
        try:
            man = read_manifest(current)
        except IndexCorruptError:
            man = {}
        if man.get("key") == key and man.get("status") == "complete":
            repaired = generation_problems(current, man)
            if not repaired:
                _record_if_stale(catalog, idir, current, man)  # a run killed before recording it
                return _report(man, current, skipped, params, t0, up_to_date=True)
            repair_from = (current, man)  # same index, files lost since: rebuild only those
    gen = None
    for g in generations(idir):
        if g == current:
            continue
        try:
            man = read_manifest(g)
        except IndexCorruptError:  # a generation that died before its first manifest
            man = {}
        if gen is None and not rebuild and man.get("key") == key and man.get("status") == "building":
            gen = g
        else:
            shutil.rmtree(g, ignore_errors=True)  # stale: another key or an abandoned build
    if gen is None:
        gen = _next_generation(idir)
        with writing("the index generation folder", gen):
            gen.mkdir(parents=True)
        manifest = {
            "format": _FORMAT, "key": key, "name": name, "year": int(year), "dataset_version": version,
            "region": reg.name, "synthetic": synthetic, "params": params.to_json(), "plan": plan.to_json(),
            "tiles": [t.name for t in present], "skipped_tiles": skipped,
            "grids": {a["tile"]: {"epsg": int(a["epsg"]), "transform": list(a["transform"]),
                                  "height": int(a["height"]), "width": int(a["width"])} for a in attrs},
            "kind": KIND if is_lists_factory(params.factory) else "faiss",
            "shards": {}, "status": "building", "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_manifest(gen, manifest)
    else:
        manifest = read_manifest(gen)
    if repair_from is not None:
        _take_over(*repair_from, gen, manifest)
    row = catalog.index(name)
    if row is None or row.get("status") != "complete":  # a complete row stays complete while a rebuild runs
        catalog.upsert_index({"name": name, "year": int(year), "dataset_version": version, "region": reg.name,
                              "factory": params.factory, "params": params.to_json(), "dims": DIMS,
                              "n_vectors": 0, "n_shards": len(plan.shards), "status": "building"})

    trained_path = gen / TRAINED
    todo = [i for i in range(len(plan.shards))
            if str(i) not in manifest["shards"] or shard_problems(ShardFiles(gen, i), manifest["shards"][str(i)])]
    reused = len(plan.shards) - len(todo)
    if train_from not in ("tiles", "zone-stats"):
        raise InvalidInputError(f"train_from must be 'tiles' or 'zone-stats', not {train_from!r}")
    zone_x = None
    if train_from == "zone-stats" and not trained_path.exists():
        import faiss

        from .. import zone_samples

        ivf = faiss.try_extract_index_ivf(new_index(params.factory))
        zone_x = zone_samples.index_training(home, year, version, present, params.train_size, params.seed,
                                             ivf.nlist if ivf is not None else 0)
    n_train_tiles = 0 if zone_x is not None else len(_sample_tiles([t.name for t in present], counts, params.train_size))
    total_steps = (0 if trained_path.exists() else n_train_tiles) + sum(len(plan.shards[i]) for i in todo)
    with progress_bar(progress, f"index {name}", total_steps) as advance:
        if not trained_path.exists():
            t_train = time.monotonic()
            write_faiss_index(train(store, year, present, counts, reg, params, advance, zone_sample=zone_x),
                              trained_path, "the trained index")
            manifest["train_seconds"] = round(time.monotonic() - t_train, 3)
            manifest["train_from"] = {"from": train_from, "tiles_read": n_train_tiles,
                                      "vectors": int(len(zone_x)) if zone_x is not None else None}
            manifest["trained_bytes"] = trained_path.stat().st_size
            write_manifest(gen, manifest)
        jobs = [shard_job(home, year, list(plan.shards[i]), reg, trained_path, gen, i, manifest.get("kind", "faiss"))
                for i in todo]
        finished = [0]

        def record(job: ShardJob, info: dict) -> None:
            manifest["shards"][str(job.number)] = info
            write_manifest(gen, manifest)
            finished[0] += 1
            if on_shard:
                on_shard(reused + finished[0], len(plan.shards))

        run_shards(jobs, advance, record, engine, budget)
    manifest["n_vectors"] = sum(int(s["n_vectors"]) for s in manifest["shards"].values())
    if manifest.get("search", {}).get("target_recall") != target_recall:
        from .tune import tune_search

        t_tune = time.monotonic()
        manifest["search"] = tune_search(home, name, gen, manifest, target_recall)
        manifest["search"]["seconds"] = round(time.monotonic() - t_tune, 3)
    manifest["status"] = "complete"
    manifest["completed_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_manifest(gen, manifest)
    set_current(idir, gen)
    _record(catalog, manifest, gen)
    # Keep the previous generation for readers that opened it just before the switch.
    for g in generations(idir):
        if g not in (gen, current):
            shutil.rmtree(g, ignore_errors=True)
    rep = _report(manifest, gen, skipped, params, t0)
    rep.shards_built, rep.shards_reused, rep.repaired = len(todo), reused, repaired
    return rep


def _link(src: Path, dst: Path) -> None:
    """Put ``src``'s bytes at ``dst`` atomically: a hard link (no copy), else a copy."""
    with atomic_path(dst, "the index shard") as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def _take_over(src_gen: Path, src_man: dict, gen: Path, manifest: dict) -> None:
    """Seed generation ``gen`` with the intact shards (and trained file) of damaged
    generation ``src_gen`` of the same build key: only what is missing gets rebuilt."""
    trained_ok = (src_gen / TRAINED).exists() and (
        "trained_bytes" not in src_man or (src_gen / TRAINED).stat().st_size == int(src_man["trained_bytes"]))
    if trained_ok and not (gen / TRAINED).exists():
        _link(src_gen / TRAINED, gen / TRAINED)
        for k in ("train_seconds", "trained_bytes"):
            if k in src_man:
                manifest[k] = src_man[k]
    for key, info in sorted(src_man.get("shards", {}).items(), key=lambda kv: int(kv[0])):
        dst = ShardFiles(gen, int(key))
        if key in manifest["shards"] and not shard_problems(dst, manifest["shards"][key]):
            continue
        src = ShardFiles(src_gen, int(key))
        if shard_problems(src, info):
            continue
        for kind, path in src.paths.items():
            _link(path, dst.path(kind))
        manifest["shards"][key] = info
    write_manifest(gen, manifest)


def _record(catalog, manifest: dict, gen: Path) -> None:
    """The index's catalog entry (row, shards, tiles), replaced in one transaction."""
    catalog.record_index(*catalog_entry(manifest, gen))


def _record_if_stale(catalog, idir: Path, gen: Path, manifest: dict) -> None:
    from .search import reconcile_index
    from .shards import IndexState

    state = IndexState(manifest["name"], idir, "complete", gen, manifest)
    reconcile_index(catalog, state, catalog.index(manifest["name"]), idle=True)


def _report(manifest: dict, gen: Path, skipped: list[str], params: IndexParams, t0: float, up_to_date: bool = False) -> BuildReport:
    shards = [manifest["shards"][k] for k in sorted(manifest["shards"], key=int)]
    return BuildReport(
        name=manifest["name"], year=int(manifest["year"]), dataset_version=manifest["dataset_version"],
        region=manifest["region"], path=gen, generation=gen.name, tiles=list(manifest["tiles"]),
        skipped_tiles=skipped, n_vectors=int(sum(s["n_vectors"] for s in shards)), n_shards=len(shards),
        shards_built=0, shards_reused=len(shards), params=params, seconds=time.monotonic() - t0,
        up_to_date=up_to_date, synthetic=bool(manifest.get("synthetic", False)), shards=shards,
    )
