"""The history command: recorded queries, each with its exact vector and parameters."""

from __future__ import annotations

from typing import Annotated

import typer

from ._app import app, state
from ._console import out_console, print_json
from .options import Json


@app.command()
def history(
    limit: Annotated[int, typer.Option("--limit", help="How many recent queries.", min=1)] = 50,
    json: Json = False,
) -> None:
    """List recorded queries (newest first); rerun one with `query --replay ID`."""
    from ..retrieve import history as do_history

    rows = do_history(state.home, limit=limit)
    if json:
        print_json({"count": len(rows), "queries": rows})
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} recorded queries")
    for col in ("id", "index", "created", "mode", "k", "results", "examples"):
        table.add_column(col)
    for r in rows:
        p = r["params"]
        ex = f"{len(p.get('positives', []) or [])}+ / {len(p.get('negatives', []) or [])}-"
        if not p.get("positives") and p.get("point"):
            ex = "point " + ",".join(f"{v:.5f}" for v in p["point"])
        table.add_row(str(r["id"]), str(r["index"]), str(r["created_at"]), str(r["mode"]), str(r["k"]),
                      str(r["n_results"]), ex)
    out_console().print(table)
