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
    from ..query import history as do_history
    from ..query import recorded_spec

    rows = do_history(state.home, limit=limit)
    if json:
        print_json({"count": len(rows), "queries": rows})
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} recorded queries")
    for col in ("id", "index", "created", "mode", "k", "results", "examples"):
        table.add_column(col, no_wrap=col in ("id", "index"), overflow="fold")
    for r in rows:
        spec = recorded_spec({"params": r["params"], "vector": [0.0]})
        ex = f"{len(spec.positives)}+ / {len(spec.negatives)}-"
        if len(spec.positives) == 1 and not spec.negatives:
            ex = "point " + ",".join(f"{spec.positives[0][k]:.5f}" for k in ("lon", "lat"))
        table.add_row(str(r["id"]), str(r["index"]), str(r["created_at"]), str(r["mode"]), str(r["k"]),
                      str(r["n_results"]), ex)
    out_console().print(table)
