"""The ``change`` command: cosine-distance change maps between two years, and the most changed places."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import app, state
from ._console import bar, out_console, print_json
from ..sources.datasets import source_spec
from .options import BBox, Json, Region, RegionFile, DatasetName, Source, Tiles, region_from_options


def _fmt(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


@app.command()
def change(
    years: Annotated[str, typer.Option(
        "--years", help="The two years to compare, A,B, e.g. 2020,2024 (distance from A to B).")],
    region: Region = None, bbox: BBox = None, region_file: RegionFile = None, tile: Tiles = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Distance map: float32 COG, nodata NaN (also writes OUT.png). Without it only "
        "statistics and --top are computed.", show_default=False)] = None,
    crs: Annotated[str | None, typer.Option(
        "--crs", help="Mosaic CRS, e.g. EPSG:4326 (needed when the tiles span UTM zones).", show_default=False)] = None,
    per_tile: Annotated[bool, typer.Option("--per-tile", help="One COG per tile, on the tile's own grid.")] = False,
    top: Annotated[int, typer.Option("--top", help="List the K most changed places.", min=0)] = 0,
    min_separation: Annotated[float, typer.Option(
        "--min-separation", help="Metres between listed places (greedy, most changed first).", min=0)] = 100.0,
    top_out: Annotated[Path | None, typer.Option(
        "--top-out", help="Write the --top places as points: .geojson, .parquet (GeoParquet) or .csv.",
        show_default=False)] = None,
    source: Source = None, dataset: DatasetName = None,
    json: Json = False,
) -> None:
    """Change between two years: per-pixel cosine distance of the embeddings.

    `change --bbox 36.7,-1.4,36.9,-1.2 --years 2020,2024 --out change.tif --top 20` writes
    change.tif (0 = same embedding, 1 = orthogonal, up to 2) and change.png, and lists the
    20 most changed places at least --min-separation metres apart.
    """
    from ..change import change_map, parse_years
    from ..errors import InvalidInputError
    from ..export import RASTER_SUFFIXES, VECTOR_SUFFIXES, check_output

    if out is not None:
        check_output(out, RASTER_SUFFIXES, directory=per_tile)
    if top_out is not None:
        check_output(top_out, VECTOR_SUFFIXES, option="--top-out")

    try:
        pair = parse_years(years)
    except InvalidInputError as exc:
        raise typer.BadParameter(str(exc), param_hint="--years") from None
    if top_out is not None and top == 0:
        raise typer.BadParameter("--top-out writes the --top places: give --top K as well", param_hint="--top-out")
    if per_tile and out is None:
        raise typer.BadParameter("--per-tile needs --out (the stem of the per-tile file names)", param_hint="--per-tile")
    reg = region_from_options(region, bbox, region_file, tile)
    res = change_map(reg, pair, out, home=state.home, source=source_spec(source, dataset), crs=crs, per_tile=per_tile, top=top,
                     min_separation=min_separation, progress=bar(json), top_out=top_out)
    if res.skipped:
        from ._console import warn

        names = ", ".join(t.name for t in res.skipped[:6]) + (" ..." if len(res.skipped) > 6 else "")
        warn(f"{len(res.skipped)} tile(s) are not offered by the source for both years and were skipped: {names}")
    if json:
        print_json(res.to_json())
        return
    con = out_console()
    s = res.stats
    dest = f" -> {res.path}" if res.path else ""
    con.print(
        f"{res.region} ({pair[0]} -> {pair[1]}): {s.valid_pixels:,} pixels valid in both years over "
        f"{len(res.tiles)} tile(s){dest}" + (" [bold magenta](SYNTHETIC)[/]" if res.synthetic else ""),
        highlight=False,
    )
    if res.crs:
        con.print(f"  {res.crs}, {res.width} x {res.height} px", highlight=False)
    con.print(
        f"  cosine distance: mean {_fmt(s.mean)}, p50 {_fmt(s.p50)}, p95 {_fmt(s.p95)}, p99 {_fmt(s.p99)}, "
        f"max {_fmt(s.max)}", highlight=False,
    )
    for p in res.files:
        if p != res.path:
            con.print(f"  wrote {p}", highlight=False)
    if top:
        from rich.table import Table

        table = Table(title=f"{len(res.top_distance)} most changed places, at least {res.min_separation:g} m apart")
        for col in ("rank", "lon", "lat", "tile", "row", "col", "distance"):
            table.add_column(col, justify="left" if col == "tile" else "right")
        for r in res.top():
            table.add_row(str(r["rank"]), f"{r['lon']:.6f}", f"{r['lat']:.6f}", r["tile"], str(r["row"]),
                          str(r["col"]), f"{r['distance']:.4f}")
        con.print(table)
