"""Query by example: examples in, ranked places out, in one pipeline.

:func:`run_query` is the one call (the CLI's ``query``): it opens the index, turns the
examples into a query vector (:func:`point_query` for one pixel of the index,
:func:`example_query` for points, polygons, files, negatives or another year), searches
(:func:`search_index`) and records the query; :func:`replay` reruns a recorded one
exactly, :func:`history` lists them; :func:`write_result` writes files. Every mode returns
one :class:`QueryResult` with one JSON schema.

The query vector
----------------
Examples are points (one pixel each) and polygons (their valid pixels, capped per
polygon), each positive or negative, taken from the index's year or from another year
(``example_year``). With ``u`` the unit-norm int8 vector of a pixel:

- each example's direction is ``e_i = normalise(mean_j u_ij)`` over its pixels, so a
  large polygon counts as one example, not as hundreds;
- ``p = mean_i e_i`` over positives, ``n = mean_i e_i`` over negatives;
- the query is ``q = normalise(p - push * n)`` (``push`` defaults to 0.5; 0 ignores the
  negatives). Subtracting the negatives' mean moves ``q`` away from what they share with
  the positives, so pixels like the negatives fall down the ranking while pixels like
  the positives keep most of their similarity.

Result modes (exact cosine similarity in every mode, re-ranked from the int8 vectors)
-------------------------------------------------------------------------------------
- **top k** (default);
- **threshold** ``S``: every pixel with similarity >= S, found by searching with a
  growing k (x4 each round) until the k-th similarity falls below S, up to
  ``max_results`` (the result says when that bound cut it short);
- **min_separation** ``M`` metres: greedy suppression in similarity order (a candidate is
  kept when it is at least M metres from every pixel kept so far, measured as the chord
  between points on the WGS84 mean sphere, which is zone-independent and equals the
  ground distance to < 1 mm at these scales). Candidates are fetched in growing batches
  (x4) until k places are kept or every pixel of the index has been considered, so
  exactly k results come back whenever the greedy pass over the whole index can find
  them;
- **group**: matching pixels connected through their 8 neighbours, within a tile, merge
  into blobs, ranked by size (pixels) then mean similarity; each blob has a polygon and
  its area in m2. (Blobs do not merge across tile edges: neighbouring tiles have
  different grids.)

Exports: ``.tif`` (a COG match mask, or similarity), ``.geojson`` / ``.parquet`` / ``.csv``
(points, or blob polygons), ``.png`` (a quicklook). Every query is recorded in the
catalog with its exact vector, examples and parameters; :func:`replay` reruns one.
"""

from ._export import write_quicklook, write_raster, write_result
from ._result import QueryResult
from ._run import history, recorded_spec, replay, run_query, search_index
from ._search import DEFAULT_MAX_RESULTS, Blob, find_blobs, locate_ids, search_modes
from ._vectors import (
    DEFAULT_PUSH,
    QueryPixel,
    QuerySpec,
    as_point,
    combine,
    example_query,
    index_pixel,
    point_query,
    query_vector,
    unit_rows,
)

__all__ = [
    "DEFAULT_MAX_RESULTS",
    "DEFAULT_PUSH",
    "Blob",
    "QueryPixel",
    "QueryResult",
    "QuerySpec",
    "as_point",
    "combine",
    "example_query",
    "find_blobs",
    "history",
    "index_pixel",
    "locate_ids",
    "point_query",
    "query_vector",
    "recorded_spec",
    "replay",
    "run_query",
    "search_index",
    "search_modes",
    "unit_rows",
    "write_quicklook",
    "write_raster",
    "write_result",
]
