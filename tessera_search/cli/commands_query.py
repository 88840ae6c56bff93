"""The query command: pixels most similar to the pixel at a point."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import app, state
from ._console import out_console, print_json
from .options import Json, Source


@app.command()
def query(
    point: Annotated[str, typer.Option("--point", help="LON,LAT in degrees of the example pixel, e.g. 36.8,-1.3.")],
    k: Annotated[int, typer.Option("--k", help="Number of matches.", min=1)] = 10,
    index: Annotated[str | None, typer.Option("--index", help="Index name (see `tessera-search indexes`).", show_default=False)] = None,
    year: Annotated[int | None, typer.Option("--year", help="Use the one index built for this year.", show_default=False)] = None,
    nprobe: Annotated[int | None, typer.Option("--nprobe", help="IVF lists probed per shard (default: from the index, raised for large k).", min=1, show_default=False)] = None,
    source: Source = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the matches to FILE (.csv, .parquet or .geojson).", show_default=False)] = None,
    json: Json = False,
) -> None:
    """Find the K pixels most similar (exact cosine) to the pixel at a point."""
    from ..grid import parse_point
    from ..query import query as do_query

    lon, lat = parse_point(point)
    res = do_query((lon, lat), k=k, index=index, year=year, nprobe=nprobe, home=state.home, source=source)
    if out is not None:
        res.write(out)
    if json:
        print_json(res.to_json())
        return
    from rich.table import Table

    con = out_console()
    label = " (SYNTHETIC)" if res.synthetic else ""
    q = res.query
    table = Table(title=f"{len(res)} pixels most like {q['tile']} row {q['row']} col {q['col']} "
                        f"({q['centre_lon']:.5f}, {q['centre_lat']:.5f}) in {res.index}{label}")
    for col in ("rank", "lon", "lat", "tile", "row", "col", "similarity"):
        table.add_column(col, justify="right" if col not in ("tile",) else "left")
    for m in res.matches():
        table.add_row(str(m["rank"]), f"{m['lon']:.5f}", f"{m['lat']:.5f}", m["tile"], str(m["row"]), str(m["col"]),
                      f"{m['similarity']:.4f}")
    con.print(table)
    if out is not None:
        con.print(f"wrote {out}", highlight=False)
