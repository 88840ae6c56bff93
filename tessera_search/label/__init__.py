"""Few-shot labelling by nearest neighbours: class maps, validation, candidates, suggestions.

An analyst labels a handful of pixels (points or polygons, :mod:`tessera_search.examples`);
every pixel is then classified by its ``k`` nearest labelled examples (cosine), with the
exact kNN engine :class:`KNNClassifier` (the rule, the exact int8 top-k and the
``backend="auto"|"numpy"|"torch"|"cuda"`` choice are described in :mod:`._knn`).

Workflows
---------
- :func:`label_region`: a class map (COG: band 1 class code, band 2 confidence in
  percent), a legend (GeoTIFF tags and ``<out>.json``) and a PNG quicklook, streamed tile
  by tile (:mod:`._maps`).
- :func:`cross_validate`: spatially blocked k-fold cross-validation of the examples
  (:mod:`._validate`).
- :func:`label_candidates`: for each class, the pixels of an index (or tiles) nearest
  its examples (:mod:`._candidates`).
- :func:`suggest`: the most uncertain pixels of a region, spread apart, to label next
  (:mod:`._suggestions`).

The library never prints: a trivial map (one class) warns with
:class:`~tessera_search.errors.TesseraSearchWarning`; long scans take ``progress`` (a
bar on stderr) or ``on_progress(done, total)``.
"""

from __future__ import annotations

# Importable from here as before, though not in the curated __all__ below.
from ..sources.truth import TruthFn, synthetic_truth  # noqa: F401
from ._candidates import CandidateResult, label_candidates
from ._knn import BACKENDS, WEIGHTS, KNNClassifier, sort_classes  # noqa: F401
from ._maps import LabelResult, label_region
from ._suggestions import SuggestResult, suggest
from ._validate import CVReport, assign_folds, cross_validate, spatial_blocks  # noqa: F401

__all__ = [
    "CVReport",
    "CandidateResult",
    "KNNClassifier",
    "LabelResult",
    "SuggestResult",
    "cross_validate",
    "label_candidates",
    "label_region",
    "sort_classes",
    "suggest",
]
