"""Options shared by several commands (region selection, year, source, JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Region = Annotated[
    str | None,
    typer.Option("--region", help="Country name or ISO code (case-insensitive), e.g. kenya or KEN.", show_default=False),
]
BBox = Annotated[
    str | None,
    typer.Option("--bbox", help="Bounding box W,S,E,N in degrees, e.g. 36.7,-1.4,36.9,-1.2.", show_default=False),
]
RegionFile = Annotated[
    Path | None,
    typer.Option(
        "--region-file",
        help="GeoJSON Polygon, MultiPolygon, Feature or FeatureCollection (WGS84).",
        show_default=False,
    ),
]
Tiles = Annotated[
    list[str] | None,
    typer.Option("--tile", help="A tile by name, e.g. grid_36.85_-1.25 (repeatable).", show_default=False),
]
Year = Annotated[int, typer.Option("--year", help="Embedding year, e.g. 2023.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
Source = Annotated[
    str | None,
    typer.Option(
        "--source",
        help="Where tiles come from: a directory (NPY release mirror, geoemb Zarr store or Icechunk "
        "repository), an http(s):// URL, an s3://bucket/prefix URL, or 'synthetic'. "
        "Default: the --dataset's published store.",
        show_default=False,
    ),
]

DatasetName = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="Which TESSERA dataset: v1, v1.1 (the dClimate global run), v1.1-cambridge, v2-beta1. "
        "Default: v1.1, or what --source holds.",
        show_default=False,
    ),
]

EngineName = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Where the index's shards are built or searched: local (this process) or ray (a Ray cluster; "
        "needs the ray extra; see docs/scale.md).",
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="With --engine ray: the cluster to join, HOST:PORT of `ray start --head`, or auto. "
        "Default: RAY_ADDRESS, else a cluster started on this machine, else a new local one.",
        show_default=False,
    ),
]


def region_from_options(region=None, bbox=None, region_file=None, tiles=None):
    """Resolve the mutually exclusive region options into a :class:`~tessera_search.regions.Region`."""
    from ..regions import resolve_region

    return resolve_region(region=region, bbox=bbox, region_file=region_file, tiles=tiles)
