"""tessera-search: search the Earth by example over TESSERA pixel embeddings.

The public API, curated (a test keeps ``__all__`` honest). Heavy modules load on first
use, so ``import tessera_search`` and ``tessera-search --help`` stay fast.

    >>> import tessera_search as ts
    >>> region = ts.resolve_region(bbox="36.7,-1.4,36.9,-1.2")
    >>> ts.synthesize_mirror(region.tiles, 2023, "mirror")          # doctest: +SKIP
    >>> ts.download(region, 2023, source="mirror")                   # doctest: +SKIP
    >>> ws = ts.Workspace("indexes")                                  # doctest: +SKIP
    >>> ws.pixel(36.8, -1.3, 2023).valid                              # doctest: +SKIP
"""

from __future__ import annotations

import importlib

from .errors import *  # noqa: F403 - the error tree is part of the public API
from .errors import __all__ as _error_names

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "Tile": "grid",
    "TileGrid": "grid",
    "expected_grid": "grid",
    "pack_ids": "grid",
    "unpack_ids": "grid",
    "tile_for_point": "grid",
    "Region": "regions",
    "resolve_region": "regions",
    "TileData": "sources.base",
    "TileFailure": "sources.base",
    "ReleaseSource": "sources.release",
    "synthesize_mirror": "sources.synthetic",
    "generate_tile": "sources.synthetic",
    "TileStore": "store",
    "Catalog": "catalog",
    "DownloadReport": "ingest",
    "download": "ingest",
    "open_source": "ingest",
    "Workspace": "workspace",
    "Pixel": "workspace",
    "workspace_info": "workspace",
    "Example": "examples",
    "ExampleSet": "examples",
    "read_examples": "examples",
    "sample_examples": "examples",
    "KNNClassifier": "label",
    "LabelResult": "label",
    "CVReport": "label",
    "label_region": "label",
    "cross_validate": "label",
    "label_candidates": "label",
    "suggest": "label",
    "write_quicklook": "export",
    "change_map": "change",
    "ChangeResult": "change",
    "build_index": "index",
    "open_index": "index",
    "list_indexes": "index",
    "choose_params": "index",
    "Index": "index",
    "IndexParams": "index",
    "BuildReport": "index",
    "SearchResult": "index",
    "run_query": "query",
    "search_index": "query",
    "example_query": "query",
    "point_query": "query",
    "query_vector": "query",
    "replay": "query",
    "history": "query",
    "write_result": "query",
    "QueryResult": "query",
    "QuerySpec": "query",
    "QueryPixel": "query",
    "Blob": "query",
    "quantize": "quant",
    "dequantize": "quant",
    "valid_scales": "quant",
}

__all__ = sorted([*_LAZY, *_error_names, "__version__"])


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tessera_search' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
