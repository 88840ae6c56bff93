"""Running a query: the one call the CLI makes, search on an open index, history, replay."""

from __future__ import annotations

import numpy as np

from ..errors import IndexNotFoundError, InvalidInputError
from ._result import QueryResult
from ._search import DEFAULT_MAX_RESULTS, find_blobs, locate_ids, search_modes
from ._vectors import DEFAULT_PUSH, QuerySpec, example_query, point_query


def search_index(
    index,
    spec: QuerySpec,
    k: int = 10,
    threshold: float | None = None,
    min_separation: float | None = None,
    group: bool = False,
    max_results: int = DEFAULT_MAX_RESULTS,
    nprobe: int | None = None,
    refine_factor: int | None = None,
    record: bool = True,
    progress=None,
) -> QueryResult:
    """Search an opened index with ``spec``'s vector in one of the result modes.

    ``threshold`` (every pixel with similarity >= it, up to ``max_results``) and
    ``min_separation`` (k places at least that many metres apart) exclude each other;
    ``group`` merges the matches into blobs. The query is recorded in the catalog with its
    exact vector, examples and parameters unless ``record`` is False.
    """
    from ..catalog import Catalog

    if threshold is not None and min_separation:
        raise InvalidInputError("threshold and min_separation do not combine; pick one")
    ids, sims, truncated = search_modes(index, spec.vector, k=k, threshold=threshold, min_separation=min_separation,
                                        max_results=max_results, nprobe=nprobe, refine_factor=refine_factor,
                                        progress=progress if (threshold is not None or min_separation) else None)
    lon, lat, names, rows, cols = locate_ids(index, ids)
    params = {"mode": "threshold" if threshold is not None else ("min_separation" if min_separation else "top_k"),
              "k": int(k), "threshold": threshold, "min_separation": min_separation, "group": bool(group),
              "max_results": int(max_results), "nprobe": nprobe, "refine_factor": refine_factor,
              "year": index.year}
    out = QueryResult(index.name, index.year, index.dataset_version, index.synthetic,
                      np.asarray(spec.vector, np.float32), spec.to_json(), params, ids, sims.astype(np.float32),
                      lon, lat, names, rows, cols, truncated)
    out.warnings.extend(f"dropped {d}" for d in spec.dropped)
    if truncated:
        out.warnings.append(f"threshold {threshold}: stopped at max_results={max_results}; "
                            "more pixels pass the threshold")
    if group:
        out.blobs = find_blobs(index, ids, sims, names, rows, cols)
    if record:  # a read-only workspace still answers; the result says it was not recorded
        out.query_id, why = Catalog(index.home).record_query_or_warning(
            index.name, out.vector, {**params, "query": out.query}, len(ids))
        if why:
            out.warnings.append(why)
    return out


def run_query(
    points=(),
    *,
    negatives=(),
    examples=None,
    example_year: int | None = None,
    push: float = DEFAULT_PUSH,
    index: str | None = None,
    year: int | None = None,
    k: int = 10,
    threshold: float | None = None,
    min_separation: float | None = None,
    group: bool = False,
    max_results: int = DEFAULT_MAX_RESULTS,
    nprobe: int | None = None,
    refine_factor: int | None = None,
    home=None,
    source=None,
    record: bool = True,
    then=None,
    progress=None,
    engine=None,
):
    """Query by example, start to end: open the index, build the query vector, search.

    ``points`` / ``negatives``: (lon, lat) pairs or "LON,LAT" strings; ``examples``: a
    file of points / polygons (see :func:`example_query`). One positive point and nothing
    else is a plain query: its pixel must lie in the index. ``index`` names the index, or
    ``year`` picks the one built for that year (or the workspace's only index).
    ``then(result, index)``, when given, runs while the index is open (for exports) and
    its return value comes back as the second item: ``(result, then(...))``. ``progress``:
    see :mod:`tessera_search._progress`. ``engine``: where the index's shards are searched
    (``"local"``, ``"ray"`` or an :class:`~tessera_search.engine.Engine`; see
    :func:`~tessera_search.index.open_index`); the results are the same.

    Errors: IndexNotFoundError, KTooLargeError, NoCoverageError, NoDataError,
    InvalidInputError.
    """
    from ..index import open_index

    points, negatives = _point_list(points), _point_list(negatives)
    with open_index(index, year=year, home=home, engine=engine) as idx:
        if len(points) == 1 and not negatives and examples is None and example_year is None:
            spec = point_query(idx, points[0], source=source)
        else:
            spec = example_query(idx.year, points=points, negatives=negatives, examples=examples,
                                 example_year=example_year, push=push, home=idx.home, source=source)
        res = search_index(idx, spec, k=k, threshold=threshold, min_separation=min_separation, group=group,
                           max_results=max_results, nprobe=nprobe, refine_factor=refine_factor, record=record,
                           progress=progress)
        if then is None:
            return res
        return res, then(res, idx)


def _point_list(points) -> list:
    """A list of points from one point ("LON,LAT" or a (lon, lat) pair) or several."""
    if isinstance(points, str):
        return [points]
    points = list(points)
    if len(points) == 2 and all(isinstance(v, (int, float, np.integer, np.floating)) for v in points):
        return [tuple(points)]
    return points


def history(home=None, limit: int = 50) -> list[dict]:
    """Recorded queries, newest first: id, index, created_at, n_results, mode, k, params."""
    from ..catalog import Catalog
    from ..config import resolve_home

    cat = Catalog(resolve_home(home))
    if not cat.path.exists():
        return []
    return [{"id": q["id"], "index": q["index_name"], "created_at": q["created_at"], "n_results": q["n_results"],
             "mode": q["params"].get("mode", "top_k"), "k": q["params"].get("k"), "params": q["params"]}
            for q in cat.queries(limit)]


def recorded_spec(row: dict) -> QuerySpec:
    """The :class:`QuerySpec` of a catalog query row (current and older record formats)."""
    p = row["params"]
    doc = p.get("query")
    if doc is None:  # records before the one format: the spec's keys at the top level
        doc = {"example_year": p.get("example_year") or p.get("year") or 0, "push": p.get("push", DEFAULT_PUSH),
               "positives": p.get("positives", []), "negatives": p.get("negatives", []),
               "dropped": p.get("dropped", [])}
        if not doc["positives"] and p.get("point"):
            doc["positives"] = [{"kind": "point", "pixels": 1, "lon": p["point"][0], "lat": p["point"][1]}]
    return QuerySpec.from_json(doc, row["vector"])


def replay(query_id: int, home=None, record: bool = False, then=None, engine=None):
    """Rerun recorded query ``query_id`` with its exact vector, examples and parameters.

    ``then`` and ``engine`` as in :func:`run_query`.
    """
    from ..catalog import Catalog
    from ..config import resolve_home
    from ..index import open_index

    row = Catalog(resolve_home(home)).query(int(query_id))
    if row is None:
        raise IndexNotFoundError(f"no recorded query {query_id}; history() (`tessera-search history`) lists them")
    p = row["params"]
    spec = recorded_spec(row)
    with open_index(row["index_name"], home=home, engine=engine) as idx:
        res = search_index(idx, spec, k=int(p.get("k") or 10), threshold=p.get("threshold"),
                           min_separation=p.get("min_separation"), group=bool(p.get("group")),
                           max_results=int(p.get("max_results") or DEFAULT_MAX_RESULTS), nprobe=p.get("nprobe"),
                           refine_factor=p.get("refine_factor"), record=record)
        if then is None:
            return res
        return res, then(res, idx)
