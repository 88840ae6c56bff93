"""The web layer: FastAPI routes over :class:`~._service.Service`, static files, errors as JSON.

Routes (JSON unless said; bodies are JSON objects):

==========================================  ==================================================
``GET  /``                                  the page (``static/index.html``)
``GET  /api/config``                        indexes with extents, the default index, limits
``GET  /api/indexes`` / ``/api/info``       ``indexes --json`` / ``info --json``
``POST /api/query``                         ``query --json`` (examples as GeoJSON features)
``POST /api/replay/{id}``                   ``query --replay ID --json``
``GET  /api/history?limit=N``               ``history --json``
``POST /api/label`` / ``/api/suggest``      start a job: ``label --json`` / ``suggest --json``
``POST /api/export``                        start a job: a recorded query's files
``GET  /api/jobs/{id}``, ``DELETE`` it      a job's progress and result; cancel it
``GET  /api/files``, ``/api/files/{name}``  exported files; download one by name
``GET  /api/tiles/embeddings/{index}/{z}/{x}/{y}.png``  false-colour embeddings (XYZ)
``GET  /api/tiles/files/{name}/{z}/{x}/{y}.png``        an exported GeoTIFF (XYZ)
``GET  /api/outlines?bbox=W,S,E,N``         Natural Earth country outlines (GeoJSON)
==========================================  ==================================================

Errors are ``{"error": Name, "message": ...}`` with the library's error names: 400 for
:class:`~tessera_search.errors.InvalidInputError`, 404 for what is not there, 409 for a
busy index, 422 for a pixel without data, 500 otherwise. Query and replay answers carry
the seconds they took in the ``X-Elapsed-Seconds`` header (the body is exactly the CLI's).
"""


import contextlib
import json
from importlib import resources

from ..errors import (
    IndexBusyError,
    IndexNotFoundError,
    InvalidInputError,
    NoCoverageError,
    NoDataError,
    TesseraSearchError,
    TileNotFoundError,
)
from ._params import LIMITS
from ._service import Service, error_doc

__all__ = ["create_app", "status_of"]

_STATUS = ((InvalidInputError, 400), (IndexNotFoundError, 404), (NoCoverageError, 404), (TileNotFoundError, 404),
           (NoDataError, 422), (IndexBusyError, 409))


def status_of(exc: BaseException) -> int:
    """The HTTP status of a library error."""
    for cls, code in _STATUS:
        if isinstance(exc, cls):
            return code
    return 500


def static_dir():
    """The packaged static files (page, script, style, vendored Leaflet with its licence)."""
    return resources.files("tessera_search.serve") / "static"


def create_app(home=None, index: str | None = None, year: int | None = None, basemap: str | None = None,
               exports=None, allowed_hosts: list[str] | None = None):
    """The ASGI app serving workspace ``home`` (see the module docstring for the routes).

    ``allowed_hosts``: Host header values accepted (default 127.0.0.1, localhost and
    ``testserver``), so a web page elsewhere cannot reach the app by DNS rebinding.
    """
    from ..errors import MissingDependencyError

    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import FileResponse, JSONResponse, Response
        from fastapi.staticfiles import StaticFiles
        from starlette.concurrency import run_in_threadpool
        from starlette.exceptions import HTTPException as StarletteHTTPException
        from starlette.middleware.trustedhost import TrustedHostMiddleware
    except ImportError as exc:
        raise MissingDependencyError(
            "serve needs FastAPI and uvicorn; run `pip install 'tessera-search[serve]'`") from exc

    service = Service(home, index=index, year=year, basemap=basemap, exports=exports)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        service.close()

    app = FastAPI(title="tessera-search", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.service = service
    app.add_middleware(TrustedHostMiddleware,
                       allowed_hosts=allowed_hosts or ["127.0.0.1", "localhost", "[::1]", "testserver"])

    @app.exception_handler(TesseraSearchError)
    async def _library_error(request: Request, exc: TesseraSearchError):
        return JSONResponse(error_doc(exc), status_code=status_of(exc))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):  # a bug: answered as JSON, and logged
        return JSONResponse(error_doc(exc), status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        where = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse({"error": "InvalidInputError", "message": where}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        name = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return JSONResponse({"error": name, "message": str(exc.detail)}, status_code=exc.status_code)

    async def body_of(request: Request) -> dict:
        raw = await request.body()
        if len(raw) > LIMITS["body_bytes"]:
            raise InvalidInputError(f"request body over {LIMITS['body_bytes']} bytes")
        try:
            doc = json.loads(raw or b"{}")
        except ValueError as exc:
            raise InvalidInputError(f"the request body is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise InvalidInputError("the request body must be a JSON object")
        return doc

    def timed(doc_seconds) -> JSONResponse:
        doc, seconds = doc_seconds
        return JSONResponse(doc, headers={"X-Elapsed-Seconds": f"{seconds:.4f}"})

    def png(data: bytes | None) -> Response:
        if data is None:
            return Response(status_code=204, headers={"Cache-Control": "max-age=60"})
        return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=600"})

    @app.get("/")
    async def page():
        return FileResponse(str(static_dir() / "index.html"), media_type="text/html")

    @app.get("/api/config")
    async def config():
        return await run_in_threadpool(service.config)

    @app.get("/api/indexes")
    async def indexes():
        return await run_in_threadpool(service.indexes)

    @app.get("/api/info")
    async def info():
        return await run_in_threadpool(service.info)

    @app.post("/api/query")
    async def query(request: Request):
        body = await body_of(request)
        return timed(await run_in_threadpool(service.query, body))

    @app.post("/api/replay/{query_id}")
    async def replay(query_id: int):
        return timed(await run_in_threadpool(service.replay, query_id))

    @app.get("/api/history")
    async def history(limit: int = 50):
        return await run_in_threadpool(service.history, limit)

    @app.post("/api/label", status_code=202)
    async def label(request: Request):
        body = await body_of(request)
        return (await run_in_threadpool(service.start_label, body)).to_json()

    @app.post("/api/suggest", status_code=202)
    async def suggest(request: Request):
        body = await body_of(request)
        return (await run_in_threadpool(service.start_suggest, body)).to_json()

    @app.post("/api/export", status_code=202)
    async def export(request: Request):
        body = await body_of(request)
        return (await run_in_threadpool(service.start_export, body)).to_json()

    def job_or_404(job, job_id):
        if job is None:
            raise IndexNotFoundError(f"no job {job_id}")
        return job.to_json()

    @app.get("/api/jobs")
    async def jobs():
        return {"jobs": [j.to_json() for j in service.jobs.list()]}

    @app.get("/api/jobs/{job_id}")
    async def job(job_id: int):
        return job_or_404(service.jobs.get(job_id), job_id)

    @app.delete("/api/jobs/{job_id}")
    async def cancel(job_id: int):
        return job_or_404(service.jobs.cancel(job_id), job_id)

    @app.get("/api/files")
    async def files():
        return await run_in_threadpool(service.files)

    @app.get("/api/files/{name}")
    async def download(name: str):
        path = await run_in_threadpool(service.file_path, name)
        return FileResponse(str(path), filename=path.name)

    @app.get("/api/tiles/embeddings/{name}/{z}/{x}/{y}.png")
    async def embedding_tile(name: str, z: int, x: int, y: int):
        return png(await run_in_threadpool(service.embedding_tile, name, z, x, y))

    @app.get("/api/tiles/files/{name}/{z}/{x}/{y}.png")
    async def file_tile(name: str, z: int, x: int, y: int):
        return png(await run_in_threadpool(service.file_tile, name, z, x, y))

    @app.get("/api/outlines")
    async def outlines(bbox: str):
        return await run_in_threadpool(service.outlines, bbox)

    app.mount("/static", StaticFiles(directory=str(static_dir())), name="static")
    return app
