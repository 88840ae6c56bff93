"""Sharded IVF-PQ indexes of pixel embeddings: build, open, search.

- :mod:`.build` chooses parameters, trains once per index on a spread sample and builds
  shards of whole tiles (:func:`build_index`, :func:`build_shard`);
- :mod:`.shards` is the on-disk layout: shard files, manifests, generations, planning;
- :mod:`.search` opens the last complete generation and searches every shard, merges
  and re-ranks exactly from the stored int8 vectors (:func:`open_index`, :class:`Index`);
- :mod:`.gpu` puts faiss on a GPU when it sees one.

Heavy imports (faiss) happen inside functions.
"""

from __future__ import annotations

from .build import BuildReport, IndexParams, build_index, build_shard, choose_params, default_index_name
from .search import Index, SearchResult, list_indexes, open_index

__all__ = [
    "BuildReport",
    "Index",
    "IndexParams",
    "SearchResult",
    "build_index",
    "build_shard",
    "choose_params",
    "default_index_name",
    "list_indexes",
    "open_index",
]
