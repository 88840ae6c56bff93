"""``tessera-search serve``: search, label and export on a map in the browser.

A local web app over the same library calls as the CLI (:mod:`._service`), with a JSON
API under ``/api`` whose answers are the CLI's ``--json`` documents (:mod:`._app`), map
tiles drawn on the fly (:mod:`._tiles`), long work as cancellable background jobs
(:mod:`._jobs`) and every client value checked and bounded (:mod:`._params`). The page
(``static/``) uses Leaflet, vendored from its npm release with its licence: it works
offline. It binds 127.0.0.1 unless told otherwise. Needs the ``serve`` extra
(``pip install 'tessera-search[serve]'``).

    from tessera_search.serve import create_app, run_server
    run_server(create_app("indexes"), port=8000)
"""

from __future__ import annotations

from ._app import create_app

__all__ = ["create_app", "run_server"]


def run_server(app, host: str = "127.0.0.1", port: int = 8000, on_ready=None) -> None:
    """Serve ``app`` with uvicorn until interrupted; ``on_ready(url)`` runs once it listens."""
    from ..errors import MissingDependencyError

    try:
        import uvicorn
    except ImportError as exc:
        raise MissingDependencyError("serve needs uvicorn; run `pip install 'tessera-search[serve]'`") from exc
    config = uvicorn.Config(app, host=host, port=int(port), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    if on_ready is not None:
        import threading
        import time

        def wait() -> None:
            while not server.started and not server.should_exit:
                time.sleep(0.05)
            if server.started:
                shown = f"[{host}]" if ":" in host else host
                on_ready(f"http://{shown}:{port}/")

        threading.Thread(target=wait, daemon=True).start()
    server.run()
