"""The query command: query by example, in every mode, with every export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import app, state
from . import cli_message
from ._console import bar, out_console, print_json, warn
from ..sources.datasets import source_spec
from .options import DatasetName, EngineName, Json, RayAddress, Source

_TABLE_ROWS = 20  # table rows printed unless --all


@app.command()
def query(
    point: Annotated[list[str] | None, typer.Option("--point", help="LON,LAT of a positive example pixel (repeatable), e.g. 36.8,-1.3.", show_default=False)] = None,
    negative: Annotated[list[str] | None, typer.Option("--negative", help="LON,LAT of a negative example pixel (repeatable).", show_default=False)] = None,
    examples: Annotated[Path | None, typer.Option("--examples", help="GeoJSON, GeoParquet or CSV of example points/polygons; a 'positive' property says positive (default) or negative.", show_default=False)] = None,
    example_year: Annotated[int | None, typer.Option("--example-year", help="Take the examples' embeddings from this year (default: the index's).", show_default=False)] = None,
    push: Annotated[float, typer.Option("--push", help="How far the query moves away from the negatives' mean: q = normalise(mean(pos) - push * mean(neg)).")] = 0.5,
    k: Annotated[int, typer.Option("--k", help="Number of matches (top-k and --min-separation modes).", min=1)] = 10,
    index: Annotated[str | None, typer.Option("--index", help="Index name (see `tessera-search indexes`).", show_default=False)] = None,
    year: Annotated[int | None, typer.Option("--year", help="Use the one index built for this year.", show_default=False)] = None,
    threshold: Annotated[float | None, typer.Option("--threshold", help="Every pixel with cosine similarity >= S (up to --max-results).", show_default=False)] = None,
    max_results: Annotated[int, typer.Option("--max-results", help="Bound on --threshold results.", min=1)] = 100_000,
    min_separation: Annotated[float | None, typer.Option("--min-separation", help="Metres between results: k different places, not k pixels of one field.", min=0, show_default=False)] = None,
    group: Annotated[bool, typer.Option("--group", help="Merge connected matching pixels into blobs, ranked by size and similarity.")] = False,
    nprobe: Annotated[int | None, typer.Option("--nprobe", help="IVF lists probed per shard (default: from the index, raised for large k).", min=1, show_default=False)] = None,
    source: Source = None, dataset: DatasetName = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write results: .tif (COG mask + PNG), .png, .geojson, .parquet or .csv; a directory with --per-tile.", show_default=False)] = None,
    values: Annotated[str, typer.Option("--values", help="What a .tif holds: mask (uint8 1/0, 255 nodata) or similarity (float32).")] = "mask",
    crs: Annotated[str | None, typer.Option("--crs", help="Mosaic CRS for .tif, e.g. EPSG:4326 (needed when the tiles span UTM zones).", show_default=False)] = None,
    per_tile: Annotated[bool, typer.Option("--per-tile", help="With --out DIR: one COG per tile on the tile's own grid.")] = False,
    replay: Annotated[int | None, typer.Option("--replay", help="Rerun recorded query ID (see `tessera-search history`).", show_default=False)] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Print every match in the table (default: the top 20).")] = False,
    engine: EngineName = "local", ray_address: RayAddress = None,
    json: Json = False,
) -> None:
    """Find the pixels most like one or more example pixels (exact cosine similarity)."""
    from ..engine import using_engine
    from ..errors import InvalidInputError
    from ..export import QUERY_SUFFIXES, check_output
    from ..grid import parse_point
    from ..query import replay as do_replay
    from ..query import run_query, write_result

    positives = [parse_point(p) for p in point or []]
    negatives = [parse_point(p) for p in negative or []]
    if out is not None:
        check_output(out, QUERY_SUFFIXES, directory=per_tile)

    def files_of(res, idx):
        if out is None:
            return []
        return write_result(res, idx, out, values=values, crs=crs, per_tile=per_tile, progress=bar(json))

    if replay is not None and (positives or negatives or examples is not None):
        raise InvalidInputError("--replay reruns a recorded query as it was; drop the examples")
    with using_engine(engine, ray_address) as eng:
        if replay is not None:
            res, files = do_replay(replay, home=state.home, then=files_of, engine=eng)
        else:
            res, files = run_query(positives, negatives=negatives, examples=examples, example_year=example_year,
                                   push=push, index=index, year=year, k=k, threshold=threshold,
                                   min_separation=min_separation, group=group, max_results=max_results,
                                   nprobe=nprobe, home=state.home, source=source_spec(source, dataset), then=files_of,
                                   progress=bar(json), engine=eng)
    for message in res.warnings:
        warn(cli_message(Exception(message)))
    if json:
        doc = res.to_json()
        if files:
            doc["files"] = [str(f) for f in files]
        print_json(doc)
        return
    _print_table(res, files, show_all)


def _print_table(res, files, show_all: bool = False) -> None:
    from rich.table import Table

    con = out_console()
    label = " (SYNTHETIC)" if res.synthetic else ""
    pos, neg = res.query.get("positives", []), res.query.get("negatives", [])
    if len(pos) == 1 and not neg and "row" in pos[0]:
        p = pos[0]
        what = f"{p['tile']} row {p['row']} col {p['col']} ({p['lon']:.5f}, {p['lat']:.5f})"
    else:
        what = f"{len(pos)} positive / {len(neg)} negative example(s)"
    shown = len(res) if show_all else min(len(res), _TABLE_ROWS)
    if res.blobs is not None:
        shown = len(res.blobs) if show_all else min(len(res.blobs), _TABLE_ROWS)
        table = Table(title=f"{len(res.blobs)} blobs of {len(res)} pixels like {what} in {res.index}{label}")
        for col in ("rank", "tile", "pixels", "area m2", "mean sim", "max sim", "lon", "lat"):
            table.add_column(col, justify="left" if col == "tile" else "right")
        for b in res.blobs[:shown]:
            table.add_row(str(b.rank), b.tile, str(b.n_pixels), f"{b.area_m2:,.0f}", f"{b.mean_similarity:.4f}",
                          f"{b.max_similarity:.4f}", f"{b.lon:.5f}", f"{b.lat:.5f}")
        total, unit = len(res.blobs), "blobs"
    else:
        table = Table(title=f"{len(res)} pixels most like {what} in {res.index}{label}")
        for col in ("rank", "lon", "lat", "tile", "row", "col", "similarity"):
            table.add_column(col, justify="left" if col == "tile" else "right")
        for m in res.matches()[:shown]:
            table.add_row(str(m["rank"]), f"{m['lon']:.5f}", f"{m['lat']:.5f}", m["tile"], str(m["row"]),
                          str(m["col"]), f"{m['similarity']:.4f}")
        total, unit = len(res), "matches"
    con.print(table)
    if shown < total:
        where = f"; all of them are in {files[0]}" if files else "; --all prints them, --out FILE writes them"
        con.print(f"{total - shown} more {unit} not shown{where}", highlight=False)
    if res.query_id is not None:
        con.print(f"recorded as query {res.query_id} (rerun: tessera-search query --replay {res.query_id})", highlight=False)
    for f in files:
        con.print(f"wrote {f}", highlight=False)
