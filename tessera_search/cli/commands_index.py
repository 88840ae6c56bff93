"""Index commands: build-index, indexes."""

from __future__ import annotations

from typing import Annotated

import typer

from ._app import app, state
from ._console import bar, out_console, print_json
from ..sources.datasets import source_spec
from .options import BBox, DatasetName, EngineName, Json, RayAddress, Region, RegionFile, Source, Tiles, Year, region_from_options


@app.command("build-index")
def build_index(
    year: Year,
    region: Region = None, bbox: BBox = None, region_file: RegionFile = None, tile: Tiles = None,
    source: Source = None, dataset: DatasetName = None,
    name: Annotated[str | None, typer.Option("--name", help="Index name. Default: from region and year, e.g. kenya-2023.", show_default=False)] = None,
    factory: Annotated[str | None, typer.Option("--factory", help="faiss factory string overriding the chosen index type, e.g. IVF4096,PQ32x4.", show_default=False)] = None,
    max_memory: Annotated[str, typer.Option("--max-memory", help="Memory bound for the build (shard size and training sample follow), e.g. 2GiB.")] = "2GiB",
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build afresh even when the index is up to date.")] = False,
    target_recall: Annotated[float, typer.Option("--target-recall", help="Recall@1000 the search parameters are tuned to at build time, on held-out sample queries against exact answers.", min=0.01, max=0.999)] = 0.95,
    train_from: Annotated[str, typer.Option("--train-from", help="tiles: train on a spread sample of the region's tiles; zone-stats: on the per-zone sample a geoemb Zarr store publishes (kept at download; reads no tile; for indexes spanning most of their zones).")] = "tiles",
    engine: EngineName = "local", ray_address: RayAddress = None,
    json: Json = False,
) -> None:
    """Build (or resume) a sharded IVF-PQ index of a region's pixels for one year."""
    from ..engine import using_engine
    from ..index import build_index as do_build

    reg = region_from_options(region, bbox, region_file, tile)
    with using_engine(engine, ray_address) as eng:
        rep = do_build(reg, year, source=source_spec(source, dataset), name=name, factory=factory,
                       max_memory=max_memory, home=state.home, progress=bar(json), rebuild=rebuild, engine=eng,
                       target_recall=target_recall, train_from=train_from)
    if json:
        print_json(rep.to_json())
        return
    con = out_console()
    label = " [bold magenta](SYNTHETIC)[/]" if rep.synthetic else ""
    if rep.up_to_date:
        con.print(f"index [bold]{rep.name}[/]{label} is up to date: {rep.n_vectors:,} pixels in {rep.n_shards} shard(s)", highlight=False)
        return
    con.print(
        f"index [bold]{rep.name}[/]{label}: {rep.n_vectors:,} pixels of {len(rep.tiles)} tiles ({rep.region}, {rep.year}, "
        f"{rep.dataset_version}) in {rep.n_shards} shard(s) ({rep.shards_built} built, {rep.shards_reused} kept), "
        f"{rep.params.factory}, {rep.seconds:.1f} s", highlight=False,
    )
    if getattr(rep, "repaired", None):
        con.print(f"repaired: {', '.join(map(str, rep.repaired))}", highlight=False)
    if rep.skipped_tiles:
        con.print(f"{len(rep.skipped_tiles)} tile(s) not available, left out: {', '.join(rep.skipped_tiles)}", highlight=False)


@app.command()
def indexes(json: Json = False) -> None:
    """List the indexes in the workspace."""
    from ..index import list_indexes

    rows = list_indexes(state.home)
    if json:
        print_json({"indexes": [
            {k: r[k] for k in ("name", "year", "dataset_version", "region", "factory", "params", "n_vectors",
                               "n_shards", "status", "created_at", "updated_at")}
            | {"problems": list(r.get("problems") or []), "building": bool(r.get("building"))} for r in rows]})
        return
    con = out_console()
    if not rows:
        con.print("no indexes (build one with `tessera-search build-index`)")
        return
    from rich.table import Table

    table = Table(title="indexes")
    for col in ("name", "year", "version", "region", "factory", "pixels", "shards", "status"):
        table.add_column(col, no_wrap=col == "name", overflow="fold")
    for r in rows:
        synth = " [bold magenta](SYNTHETIC)[/]" if (r.get("params") or {}).get("synthetic") else ""
        table.add_row(r["name"] + synth, str(r["year"]), str(r["dataset_version"]), str(r["region"]), str(r["factory"]),
                      f"{int(r['n_vectors'] or 0):,}", str(r["n_shards"]), str(r["status"]))
    con.print(table)
    for r in rows:
        for problem in r.get("problems") or []:
            con.print(f"[yellow]{r['name']}[/]: {problem}", highlight=False)
