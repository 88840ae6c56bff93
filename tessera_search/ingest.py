"""Filling the store: fetch the tiles a region lacks from a source, check them, store them.

``download(region, year, source)`` is what ``tessera-search download`` and every command
that needs tiles (``build-index``, ``query``, ``label``) call. Tiles already stored are
kept; each missing tile is fetched, checked and written atomically to the zarr store,
then recorded in the catalog. A tile that fails is reported by name with its reason
(``skipped grid_X_Y (2023): truncated .npy ...``) and skipped; it never aborts the region
and never enters the store. Rerunning after an interruption fetches only what is still
missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .catalog import Catalog
from .config import resolve_home
from .errors import SourceUnavailableError
from .grid import Tile
from .sources.base import TileData, TileFailure
from ._progress import progress_bar
from .store import TileStore

__all__ = ["DownloadReport", "SyntheticSource", "download", "open_source"]


class SyntheticSource:
    """Generated tiles (``--source synthetic``): every tile is available, labelled synthetic."""

    is_http = False
    synthetic = True

    def __init__(self, seed: int = 0, version: str = "v1") -> None:
        self.seed = int(seed)
        self.version = version
        self.label = f"synthetic (seed {self.seed})"

    def available(self, year: int, tiles: Iterable[Tile] | None = None) -> set[Tile]:
        return set(tiles or ())

    def fetch(self, tiles: Iterable[Tile], year: int, on_progress=None) -> Iterator[TileData | TileFailure]:
        from .sources.synthetic import generate_tile

        for i, tile in enumerate(tiles, 1):
            yield generate_tile(tile, year, seed=self.seed, version=self.version).data
            if on_progress:
                on_progress(i)


def _location(source) -> tuple[str | None, str | None]:
    """(location, dataset name) of a source argument (a SourceSpec, a path, a URL or None)."""
    from .sources.datasets import SourceSpec

    if isinstance(source, SourceSpec):
        return source.location, source.dataset
    return (None if source is None else os.fspath(source) if isinstance(source, os.PathLike) else str(source)), None


def open_source(
    source,
    home: str | os.PathLike[str] | None = None,
    version: str | None = None,
    workers: int = 4,
):
    """A source from its spec: a directory, a URL (``http(s)://``, ``s3://``), 'synthetic',
    a :class:`~tessera_search.sources.datasets.SourceSpec`, or None (the default dataset's
    published home, see :mod:`.sources.datasets`).

    The kind is recognised from the location: an Icechunk repository (a directory with
    ``refs/`` and ``snapshots/``, or an ``s3://`` prefix ending ``.icechunk``) opens as an
    :class:`~tessera_search.sources.icechunkstore.IcechunkSource`; a directory, http(s) or
    ``s3://`` URL that is a geoemb Zarr v3 store (a URL's root ``zarr.json`` is fetched to
    tell) as a :class:`~tessera_search.sources.zarrstore.ZarrSource`; any other directory
    or URL as an NPY release mirror (``version``: its ``npy/<version>`` folder).

    ``synthetic`` takes an optional seed, ``synthetic:7``.
    """
    from .sources.datasets import dataset
    from .sources.release import ReleaseSource

    home = resolve_home(home)
    location, name = _location(source)
    ds = dataset(name) if name is not None or location is None else None
    spec = ds.home if location is None else location
    if spec == "synthetic" or spec.startswith("synthetic:"):
        seed = int(spec.split(":", 1)[1]) if ":" in spec else 0
        return SyntheticSource(seed=seed, version=version or "v1")
    from .sources.icechunkstore import IcechunkSource, is_icechunk_repo
    from .sources.zarrstore import geoemb_source

    if is_icechunk_repo(spec):  # hemisphere groups NNN/NNS, local or s3://
        return IcechunkSource(spec, version=version, workers=workers)
    if spec.lower().startswith("s3://"):  # a geoemb Zarr store in a bucket
        from .sources.icechunkstore import s3_http_url, s3_zarr_store
        from .sources.zarrstore import ZarrSource

        if os.environ.get("AWS_ACCESS_KEY_ID"):  # signed requests with the environment's credentials
            return ZarrSource(spec, version=version, _store=s3_zarr_store(spec))
        zarr_src = geoemb_source(s3_http_url(spec), version=version, workers=workers)  # anonymous, over HTTPS
        if zarr_src is None:
            raise SourceUnavailableError(
                f"{spec} is neither an Icechunk repository nor a geoemb Zarr store (no utm_zones root zarr.json)"
            )
        return zarr_src
    if location is not None or ds.name != "v1":  # a geoemb Zarr v3 store (utmNN zone groups), local or http(s)
        zarr_src = geoemb_source(spec, version=version)
        if zarr_src is not None:
            return zarr_src
    # an NPY release mirror: its npy/<version> folder is the dataset's version unless given
    folder = version or (ds.version if ds is not None else None)
    return ReleaseSource(spec, version=folder, download_dir=home / "downloads", workers=workers)


@dataclass
class DownloadReport:
    """What a download did: tiles stored now, already present, unavailable, failed."""

    year: int
    source: str
    stored: list[Tile] = field(default_factory=list)
    present: list[Tile] = field(default_factory=list)
    unavailable: list[Tile] = field(default_factory=list)
    failed: list[TileFailure] = field(default_factory=list)

    @property
    def tiles(self) -> list[Tile]:
        """Tiles of the region now in the store."""
        return sorted(self.present + self.stored)

    def to_json(self) -> dict:
        return {
            "year": self.year,
            "source": self.source,
            "stored": [t.name for t in self.stored],
            "present": [t.name for t in self.present],
            "unavailable": [t.name for t in self.unavailable],
            "failed": [{"tile": f.tile.name, "year": f.year, "reason": f.reason} for f in self.failed],
        }


def download(
    region,
    year: int,
    source: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    progress=None,
    version: str | None = None,
    workers: int = 4,
) -> DownloadReport:
    """Fetch and store the tiles of ``region`` (a Region, or an iterable of Tiles) for ``year``."""
    home = resolve_home(home)
    store, catalog = TileStore(home), Catalog(home)
    from .regions import as_region

    tiles = list(as_region(region).tiles)
    known = {row["tile"] for row in catalog.tiles(year)}
    present, missing = [], []
    for t in tiles:
        if store.has(t, year):
            present.append(t)
            if t.name not in known:  # stored by a run that died before cataloguing it
                catalog.record_tile(store.attrs(t, year))
        else:
            missing.append(t)
    report = DownloadReport(year=int(year), source="" if source is None else str(source), present=present)
    if not missing:
        return report
    location, name = _location(source)
    ds = None
    if name is not None or location is None:
        from .sources.datasets import dataset

        ds = dataset(name)
    try:
        src = open_source(source, home, version=version, workers=workers)
        report.source = src.label
        avail = src.available(year, missing)
    except SourceUnavailableError as exc:
        if location is not None:
            raise
        raise SourceUnavailableError(
            f"cannot reach the published store of dataset {ds.name} ({ds.home}): {exc}. "
            "Work offline with source=DIR|URL|synthetic (a local mirror, Zarr store or Icechunk repository)"
        ) from exc
    report.unavailable = [t for t in missing if t not in avail]
    todo = [t for t in missing if t in avail]
    if not todo:
        return report
    datasets = _stored_datasets(catalog, year)
    fetched = 0  # bytes of embeddings, scales and counts read so far
    with progress_bar(progress, f"tiles {year}", len(todo)) as advance:
        for item in src.fetch(todo, year):
            if not isinstance(item, TileFailure):
                fetched += item.nbytes
            if ds is not None and not isinstance(item, TileFailure):
                item = _as_dataset(item, ds, src)
            if not isinstance(item, TileFailure) and datasets and item.dataset_version not in datasets:
                # one dataset per workspace year: v1 and v1.1 embeddings are not comparable
                item = TileFailure(item.tile, item.year, (
                    f"it is dataset {item.dataset_version}, but this workspace holds {', '.join(sorted(datasets))} "
                    f"tiles for {year}; datasets never mix (use another home for {item.dataset_version})"))
            if isinstance(item, TileFailure):
                report.failed.append(item)
            else:
                attrs = store.write(item)
                catalog.record_tile(attrs)
                datasets.add(item.dataset_version)
                report.stored.append(item.tile)
            advance(note=f"{fetched / 2**20:,.0f} MiB")
    report.stored.sort()
    _keep_zone_samples(home, src, report.stored, int(year))
    return report


def _keep_zone_samples(home, src, tiles: list[Tile], year: int) -> None:
    """Keep the published zone statistics of the zones just downloaded from (once each)."""
    if not hasattr(src, "zone_sample") or not tiles:
        return
    from . import zone_samples
    from .store import TileStore

    store = TileStore(home)
    by_zone: dict[str, Tile] = {}
    for t in tiles:
        by_zone.setdefault(zone_samples.zone_key(t), t)
    for group, tile in sorted(by_zone.items()):
        dataset = str(store.attrs(tile, year).get("dataset_version", ""))
        if not dataset or zone_samples.has(home, year, dataset, group):
            continue
        sample = src.zone_sample(tile, year, dataset)
        if sample is not None:
            zone_samples.save(home, sample)


def _as_dataset(item: TileData, ds, src) -> TileData | TileFailure:
    """The tile recorded as dataset ``ds``, or a failure when the source says another version."""
    if getattr(src, "synthetic", False) or ds.says(item.dataset_version):
        item.dataset_version = ds.name
        return item
    return TileFailure(item.tile, item.year, (
        f"it is dataset version {item.dataset_version} (as {src.label} says), not {ds.version} of dataset "
        f"{ds.name}; datasets never mix (pass the dataset the source holds, e.g. dataset={item.dataset_version})"))


def _stored_datasets(catalog, year: int) -> set[str]:
    """The dataset versions of the tiles recorded for ``year``."""
    return {str(r["dataset_version"]) for r in catalog.tiles(year) if r.get("dataset_version")}


def stored_tiles(home=None, year: int | None = None) -> list[tuple[Tile, int]]:
    """(tile, year) pairs in the store."""
    return TileStore(resolve_home(home)).list(year)
