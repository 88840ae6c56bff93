"""Which TESSERA dataset is read: named runs, their default homes, and a source with its dataset.

A dataset is a model version and a run of it (``v1.1`` is the dClimate global run, the
default, as in geotessera 0.11; ``v1.1-cambridge`` the Cambridge run of the same model).
Datasets are never mixed: v1 and v1.1 embeddings are not comparable, and the dataset name
is what each stored tile records (its ``dataset_version``) and what each index records.

``SourceSpec(location, dataset)`` is what the fetching commands pass as ``source``: where
to read (None: the dataset's own published home) and what the tiles are to be recorded
as. A source that says another version than the dataset's is refused, naming both.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass

from ..errors import InvalidInputError

__all__ = ["DATASETS", "DEFAULT_DATASET", "Dataset", "SourceSpec", "dataset", "source_spec"]


@dataclass(frozen=True)
class Dataset:
    """A named TESSERA run: model ``version`` (as stores and release folders say it), the
    run's ``variant``, and where it is published."""

    name: str
    version: str
    variant: str
    home: str
    description: str

    def says(self, version: str) -> bool:
        """Whether a source's own version label (``v1.1``, ``v2``, ...) is this dataset's."""
        return version in (self.name, self.version) or self.version.split("-", 1)[0] == version


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("v1", "v1", "", "https://dl2.geotessera.org/",
            "the legacy v1 model, NPY tiles of the geotessera registry"),
    Dataset("v1.1", "v1.1", "dclimate", "s3://tessera-embeddings/v1.1/dclimate.icechunk",
            "the v1.1 global run by dClimate, an Icechunk repository (geotessera 0.11's default)"),
    Dataset("v1.1-cambridge", "v1.1", "cambridge", "https://data.source.coop/tessera/tessera/zarr/v1.1/",
            "the v1.1 Cambridge run, a geoemb Zarr v3 store on Source Cooperative"),
    Dataset("v2-beta1", "v2-2B-L~beta1", "beta1", "https://data.source.coop/tessera/tessera/zarr/v2-2B-L~beta1/",
            "the v2 beta (2B-L, beta 1), a geoemb Zarr v3 store on Source Cooperative"),
)}
DEFAULT_DATASET = "v1.1"


def dataset(name: str | None) -> Dataset:
    """The dataset called ``name`` (None: the default); InvalidInputError with close names otherwise."""
    name = DEFAULT_DATASET if name is None else str(name).strip()
    if name in DATASETS:
        return DATASETS[name]
    close = difflib.get_close_matches(name, list(DATASETS), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise InvalidInputError(f"unknown dataset {name!r}{hint} (known: {', '.join(DATASETS)})")


@dataclass(frozen=True)
class SourceSpec:
    """A location (None: the dataset's home) and the dataset its tiles are (None: what the
    source says)."""

    location: str | None = None
    dataset: str | None = None

    def __str__(self) -> str:
        return self.location or dataset(self.dataset).home


def source_spec(location: str | os.PathLike[str] | None, dataset_name: str | None = None):
    """What commands pass on as ``source``: the plain location when no dataset is named
    (an existing source spec, a path, a URL or 'synthetic'), else a :class:`SourceSpec`."""
    if dataset_name is None:
        return location
    dataset(dataset_name)  # unknown names fail here, before anything is fetched
    return SourceSpec(None if location is None else str(location), dataset_name)
