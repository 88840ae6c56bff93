"""Tile commands: tiles, synthesize, download, info, pixel."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import app, state
from ._console import bar, err_console, out_console, print_json
from ..sources.datasets import source_spec
from .options import BBox, Json, Region, RegionFile, DatasetName, Source, Tiles, Year, region_from_options

DatasetVersion = Annotated[
    str | None,
    typer.Option("--dataset-version", help="Release dataset version directory (npy/<version>), e.g. v1 or v1.1.", show_default=False),
]


@app.command()
def tiles(region: Region = None, bbox: BBox = None, region_file: RegionFile = None, tile: Tiles = None,
          year: Annotated[int | None, typer.Option("--year", help="Year (tile selection is the same for every year).")] = None,
          json: Json = False) -> None:
    """List the tiles a region selects (pure geometry: no source, works offline)."""
    reg = region_from_options(region, bbox, region_file, tile)
    names = [t.name for t in reg.tiles]
    if json:
        print_json({"count": len(names), "tiles": names, "region": reg.name, "year": year})
        return
    con = out_console()
    con.print(f"{reg.name}: [bold]{len(names)}[/] tiles" + (f" ({year})" if year else ""))
    for n in names:
        con.print(n, highlight=False)


@app.command()
def synthesize(
    out: Annotated[Path, typer.Option("--out", help="Directory for the synthetic release mirror.")],
    year: Year,
    region: Region = None, bbox: BBox = None, region_file: RegionFile = None, tile: Tiles = None,
    seed: Annotated[int, typer.Option("--seed", help="Landscape seed.")] = 0,
    dataset_version: Annotated[str, typer.Option("--dataset-version", help="Version directory to write.")] = "v1",
    json: Json = False,
) -> None:
    """Write a SYNTHETIC release mirror (npy, scales, landmasks, manifest, ground truth)."""
    from ..sources.synthetic import synthesize_mirror

    reg = region_from_options(region, bbox, region_file, tile)
    rep = synthesize_mirror(reg.tiles, year, out, seed=seed, version=dataset_version, progress=bar(False))
    if json:
        print_json({"out": str(rep.out), "year": rep.year, "seed": rep.seed, "synthetic": True,
                    "tiles": [t.name for t in rep.tiles], "written": rep.written, "skipped": rep.skipped})
        return
    out_console().print(
        f"SYNTHETIC mirror at {rep.out}: {len(rep.tiles)} tiles for {rep.year} "
        f"({rep.written} written, {rep.skipped} already there), seed {rep.seed}", highlight=False,
    )


@app.command()
def download(
    year: Year,
    region: Region = None, bbox: BBox = None, region_file: RegionFile = None, tile: Tiles = None,
    source: Source = None, dataset: DatasetName = None, dataset_version: DatasetVersion = None,
    workers: Annotated[int, typer.Option("--workers", help="Parallel HTTP downloads.")] = 4,
    json: Json = False,
) -> None:
    """Fetch a region's tiles into the local store (skipping what is already there)."""
    from ..ingest import download as do_download

    from ..errors import NothingStoredError

    reg = region_from_options(region, bbox, region_file, tile)
    rep = do_download(reg, year, source=source_spec(source, dataset), home=state.home, version=dataset_version, workers=workers)
    summary = (f"{reg.name} ({year}): {len(rep.stored)} stored, {len(rep.present)} already in the store, "
               f"{len(rep.unavailable)} not offered by the source, {len(rep.failed)} skipped")
    if not rep.tiles and reg.tiles:  # nothing asked for is in the store: a failure, not a report
        raise NothingStoredError(
            f"none of the {len(reg.tiles)} tile(s) of {reg.name} ({year}) could be stored: "
            f"{len(rep.failed)} skipped, {len(rep.unavailable)} not offered by {rep.source or 'the source'}"
            + "".join(f"\n  {f}" for f in rep.failed),
            details=rep.to_json(),
        )
    for f in rep.failed:
        err_console.print(str(f), highlight=False, soft_wrap=True)
    if json:
        print_json(rep.to_json())
        return
    out_console().print(summary, highlight=False)


@app.command()
def info(json: Json = False) -> None:
    """Summarise the workspace: store, catalog, indexes."""
    from ..workspace import workspace_info

    summary = workspace_info(state.workspace)
    if json:
        print_json(summary)
        return
    from rich.table import Table

    con = out_console()
    con.print(f"workspace [bold]{summary['home']}[/] ({summary['store_bytes'] / 1e6:.1f} MB in the store)", highlight=False)
    table = Table(title="tiles")
    for col in ("year", "dataset version", "source", "tiles", "valid pixels"):
        table.add_column(col)
    for row in summary["tiles"]:
        src = row["source"] + (" [bold magenta](SYNTHETIC)[/]" if row["synthetic"] else "")
        table.add_row(str(row["year"]), str(row["dataset_version"]), src, str(row["tiles"]), f"{row['valid_pixels']:,}")
    con.print(table)
    if summary["indexes"]:
        con.print(f"{len(summary['indexes'])} index(es): " + ", ".join(i["name"] for i in summary["indexes"]), highlight=False)
    else:
        con.print("no indexes (build one with `tessera-search build-index`)")


@app.command()
def pixel(
    point: Annotated[str, typer.Option("--point", help="LON,LAT in degrees, e.g. 36.8,-1.3.")],
    year: Year,
    source: Source = None, dataset: DatasetName = None,
    json: Json = False,
) -> None:
    """Show one stored pixel: tile, row, col, validity, scale, int8 vector, embedding.

    With --source or --dataset, the pixel's tile is fetched first when the store lacks it."""
    from ..grid import parse_point, tile_for_point

    lon, lat = parse_point(point)
    if source is not None or dataset is not None:
        state.workspace.ensure_tiles([tile_for_point(lon, lat)], year, source=source_spec(source, dataset),
                                     what=f"the point ({lon}, {lat})", progress=bar(json))
    px = state.workspace.pixel(lon, lat, year).to_json()
    if json:
        print_json(px)
        return
    con = out_console()
    for key in ("tile", "row", "col", "id", "lon", "lat", "valid", "scale", "dataset_version", "synthetic"):
        con.print(f"{key.replace('_version', ''):>10}: {px[key]}", highlight=False)
    if px["observations"] is not None:
        obs = ", ".join(f"{k} {v}" for k, v in px["observations"].items())
        con.print(f"{'observed':>10}: {obs} (valid observations)", highlight=False)
    if px["valid"]:
        con.print(f"{'int8':>10}: {px['int8']}", highlight=False)
        con.print(f"{'embedding':>10}: [{', '.join(f'{v:.4f}' for v in px['embedding'])}]", highlight=False)
