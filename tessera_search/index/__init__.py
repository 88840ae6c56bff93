"""Sharded IVF-PQ indexes of pixel embeddings: build, open, search.

- :mod:`.build` chooses parameters, trains once per index on a spread sample, builds
  shards of whole tiles and tunes the search to a recall target (:func:`build_index`);
- :mod:`.shard_build` builds one shard from a plain-data :class:`ShardJob`
  (:func:`build_shard`, the unit an engine distributes);
- :mod:`.shards` is the on-disk layout: shard files, manifests, generations, planning;
- :mod:`.search` opens the last complete generation and searches every shard
  (:func:`search_shard`), merges and re-ranks exactly (:func:`open_index`, :class:`Index`);
- :mod:`.rerank` reads the exact int8 vectors from the store's own files (one copy);
- :mod:`.tune` picks the search parameters reaching the recall target at build time;
- :mod:`.gpu` puts faiss on a GPU when it sees one.

Heavy imports (faiss) happen inside functions.
"""

from __future__ import annotations

from .build import BuildReport, IndexParams, build_index, build_shard, choose_params, default_index_name
from .search import Index, SearchResult, list_indexes, open_index, search_shard
from .shard_build import ShardJob

__all__ = [
    "BuildReport",
    "Index",
    "IndexParams",
    "SearchResult",
    "ShardJob",
    "build_index",
    "build_shard",
    "choose_params",
    "default_index_name",
    "list_indexes",
    "open_index",
    "search_shard",
]
