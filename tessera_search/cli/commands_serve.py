"""The serve command: the map-first web app (search, label, export) on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import app, state


@app.command()
def serve(
    index: Annotated[str | None, typer.Option("--index", help="Index the page opens on (see `tessera-search indexes`).", show_default=False)] = None,
    year: Annotated[int | None, typer.Option("--year", help="Open on the one index built for this year.", show_default=False)] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on; anything but 127.0.0.1 / localhost exposes the workspace to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.", min=1, max=65535)] = 8000,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the page in the default browser.")] = False,
    basemap: Annotated[str | None, typer.Option("--basemap", help="An XYZ tile URL template offered as a layer (off by default; needs a network), e.g. https://tile.example.org/{z}/{x}/{y}.png.", show_default=False)] = None,
    exports: Annotated[Path | None, typer.Option("--exports", help="Folder for exports and drawn examples. Default: WORKSPACE/exports.", show_default=False)] = None,
) -> None:
    """Search, label and export on a map in the browser (a local web app; Ctrl-C stops it).

    `tessera-search serve --index nairobi-2023 --open`. The page works offline; its JSON
    API under /api answers with the CLI's --json documents (docs/serve.md).
    """
    from ..errors import InvalidInputError
    from ..serve import create_app, run_server
    from ._console import err_console, warn

    if basemap is not None and not (basemap.startswith(("http://", "https://"))
                                    and all(k in basemap for k in ("{z}", "{x}", "{y}"))):
        raise InvalidInputError(f"basemap {basemap!r} is not an http(s) XYZ template with {{z}}, {{x}} and {{y}}")
    local = host in ("127.0.0.1", "localhost", "::1")
    if not local:
        warn(f"listening on {host}: anyone who can reach it can search this workspace and read its exports")
    hosts = None if local and host != "::1" else ["*"]  # (an IPv6 Host header does not parse as a name)
    web = create_app(state.workspace, index=index, year=year, basemap=basemap, exports=exports, allowed_hosts=hosts)

    def ready(url: str) -> None:
        err_console.print(f"serving {state.workspace.home} at [bold]{url}[/] (Ctrl-C stops)", highlight=False)
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    run_server(web, host=host, port=port, on_ready=ready)
