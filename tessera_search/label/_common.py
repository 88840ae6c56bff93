"""Plumbing shared by the labelling workflows: samples, the fitted classifier, region scans.

Every workflow (:mod:`._maps`, :mod:`._validate`, :mod:`._candidates`,
:mod:`._suggestions`) samples its examples with :func:`samples_for`, fits with :func:`fit_examples`
and, when it scans a region, reads it tile by tile through :func:`scan_tiles` or
:func:`classified_blocks`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..examples import ExampleSamples, sample_examples
from ..grid import Tile, TileGrid, pack_ids, unpack_ids
from ._knn import BLOCK_ROWS, KNNClassifier

ProgressFn = Callable[[int, int], None]
"""``on_progress(done, total)``: called after each tile of a scan."""


def samples_for(examples, year, home, class_field, max_per_polygon, seed, source, progress) -> ExampleSamples:
    if isinstance(examples, ExampleSamples):
        if examples.year != int(year):
            raise InvalidInputError(f"the samples are from {examples.year}, not {year}")
        return examples
    return sample_examples(examples, year, home, class_field=class_field, max_per_polygon=max_per_polygon,
                           seed=seed, source=source, progress=progress)


def fit_examples(samples: ExampleSamples, class_field: str | None, k: int, weights: str,
         backend: str = "auto") -> KNNClassifier:
    labels = samples.labels(class_field)
    return KNNClassifier(k, weights, backend=backend).fit(samples.vectors, labels)


def warn_one_class(clf: KNNClassifier, what: str) -> None:
    """Warn (TesseraSearchWarning) when the examples hold one class: ``what`` is then trivial."""
    if clf.n_classes == 1:
        import warnings

        from ..errors import TesseraSearchWarning

        name = clf.classes_[0]
        warnings.warn(TesseraSearchWarning(
            f"the examples hold one class only ({name!r}): {what} is trivial (every pixel is {name!r}); "
            "add examples of the other classes"), stacklevel=3)


def region_tiles(region) -> tuple[list[Tile], Callable[[TileGrid], np.ndarray]]:
    """Tiles of a Region (or an iterable of Tiles) and its pixel-mask function."""
    from ..regions import as_region

    reg = as_region(region)
    return list(reg.tiles), reg.mask


def scan_tiles(store, tiles: Sequence[Tile], year: int, mask_of, exclude_ids: np.ndarray | None = None,
          ) -> Iterator[tuple[Tile, TileGrid, np.ndarray, np.ndarray, dict]]:
    """Per tile: (tile, grid, (H*W, 128) int8 view, flat indices of pixels to use, attrs).

    Pixels to use: valid, in the region mask, and not one of ``exclude_ids``.
    """
    for t in tiles:
        data = store.read(t, year)
        mask = data.valid & mask_of(data.grid)
        if exclude_ids is not None and exclude_ids.size:
            prefix = pack_ids(t.ix, t.iy, 0, 0)
            mine = exclude_ids[(exclude_ids >> 32) == (int(prefix) >> 32)]
            if mine.size:
                _, _, r, c = unpack_ids(mine)
                ok = (r < data.grid.height) & (c < data.grid.width)
                mask[r[ok], c[ok]] = False
        flat = np.flatnonzero(mask)
        attrs = {"dataset_version": data.dataset_version, "synthetic": data.synthetic}
        yield t, data.grid, data.embeddings.reshape(-1, data.embeddings.shape[-1]), flat, attrs
        del data


def classified_blocks(clf: KNNClassifier, store, tiles: Sequence[Tile], year: int, mask_of, exclude_ids,
                       progress: bool, label: str, seen: dict, on_progress: ProgressFn | None = None,
                       ) -> Iterator[tuple[np.ndarray, ...]]:
    """Per block of a region's pixels: (ids, (n, C) class similarity, class, confidence).

    ``seen`` counts the pixels scanned (``"scanned"``) and ORs in whether any tile is
    synthetic (``"synthetic"``); the progress bar advances a tile at a time.
    """
    with tile_progress(progress, f"{label} {year}", len(tiles), on_progress) as advance:
        for t, grid, emb, flat, attrs in scan_tiles(store, tiles, year, mask_of, exclude_ids):
            seen["synthetic"] = seen["synthetic"] or bool(attrs["synthetic"])
            seen["scanned"] += flat.size
            for s in range(0, flat.size, BLOCK_ROWS):
                idx = flat[s:s + BLOCK_ROWS]
                x = emb[idx]
                pred, conf = clf.predict(x)
                rows, cols = np.divmod(idx, grid.width)
                yield pack_ids(t.ix, t.iy, rows, cols), clf.class_similarity(x), pred, conf
            advance()


def locate(store, year: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lon, lat, tile names (object array), rows, cols) of stored pixels' centres."""
    from types import SimpleNamespace

    from ..query import locate_ids

    lon, lat, names, rows, cols = locate_ids(SimpleNamespace(grid=lambda tile: store.grid(tile, year)), ids)
    return lon, lat, np.array(names, dtype=object), rows, cols


@contextlib.contextmanager
def tile_progress(enabled: bool, label: str, total: int, on_progress: ProgressFn | None = None,
              ) -> Iterator[Callable[[], None]]:
    """Yields ``advance()``: one tile done, for the progress bar and ``on_progress(done, total)``."""
    from .._progress import progress_bar

    done = 0
    with progress_bar(enabled, label, total) as bar:
        def advance() -> None:
            nonlocal done
            done += 1
            bar()
            if on_progress is not None:
                on_progress(done, total)

        yield advance


def keep_top(score: np.ndarray, ids: np.ndarray, n: int, **extra: np.ndarray) -> dict:
    """The ``n`` best by score (ties: smaller pixel ID first), sorted best first."""
    if score.size > n:
        # Everything strictly better than the n-th score, plus ties resolved by ID.
        cut = np.partition(-score, n - 1)[n - 1]
        cand = np.flatnonzero(-score <= cut)
    else:
        cand = np.arange(score.size)
    order = cand[np.lexsort((ids[cand], -score[cand]))][:n]
    return {"score": score[order], "ids": ids[order], **{k: v[order] for k, v in extra.items()}}
