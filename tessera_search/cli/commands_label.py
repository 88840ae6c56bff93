"""Few-shot labelling commands: label (class maps, cross-validation, candidates) and suggest."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ._app import app, state
from ._console import bar, out_console, print_json
from ..sources.datasets import source_spec
from .options import BBox, Json, RayAddress, Region, RegionFile, DatasetName, Source, Tiles, region_from_options


class Weights(str, Enum):
    uniform = "uniform"
    distance = "distance"


Examples = Annotated[
    Path,
    typer.Option("--examples", help="Labelled examples: GeoJSON points/polygons, GeoParquet, or Parquet/CSV "
                 "with lon/lat (longitude/latitude, x/y) columns; WGS84."),
]
ClassField = Annotated[
    str, typer.Option("--class-field", help="Property / column holding each example's class, e.g. crop.")
]
K = Annotated[int, typer.Option("--k", help="Neighbours that vote.", min=1)]
WeightsOpt = Annotated[
    Weights, typer.Option("--weights", help="uniform: one vote each; distance: 1 / cosine distance.")
]
MaxPerPolygon = Annotated[
    int, typer.Option("--max-per-polygon", help="Pixels sampled at most from one polygon.", min=1)
]
Seed = Annotated[int, typer.Option("--seed", help="Seed for polygon sampling and fold assignment.")]
OptYear = Annotated[int | None, typer.Option("--year", help="Embedding year, e.g. 2023.", show_default=False)]


def _warn_dropped(dropped) -> None:
    if not dropped:
        return
    from ._console import warn

    shown = "; ".join(f"example {i}: {why}" for i, why in dropped[:5])
    more = f" (and {len(dropped) - 5} more)" if len(dropped) > 5 else ""
    warn(f"{len(dropped)} example(s) gave no pixel and were left out: {shown}{more}")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _print_cv(rep) -> None:
    from rich.table import Table

    con = out_console()
    con.print(
        f"{rep.n_folds}-fold spatially blocked cross-validation ({rep.n_blocks} blocks of "
        f"{rep.block_size:g} m, k={rep.k}, {rep.weights}): accuracy [bold]{_pct(rep.accuracy)}[/], "
        f"macro-F1 [bold]{rep.macro_f1:.3f}[/] over {int(rep.confusion.sum())} samples", highlight=False,
    )
    table = Table(title="per class")
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c in rep.classes:
        table.add_row(c, f"{rep.precision[c]:.3f}", f"{rep.recall[c]:.3f}", f"{rep.f1[c]:.3f}", str(rep.support[c]))
    con.print(table)
    cm = Table(title="confusion matrix (rows: true, columns: predicted)")
    cm.add_column("")
    for c in rep.classes:
        cm.add_column(c, justify="right")
    for i, c in enumerate(rep.classes):
        cm.add_row(c, *(str(int(v)) for v in rep.confusion[i]))
    con.print(cm)


@app.command()
def label(
    examples: Examples,
    class_field: ClassField = "class",
    region: Region = None, bbox: BBox = None, region_file: RegionFile = None, tile: Tiles = None,
    year: OptYear = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Class map (COG; also writes OUT.json legend and OUT.png), or with --index a GeoJSON "
        "of candidates.", show_default=False)] = None,
    k: K = 5,
    weights: WeightsOpt = Weights.uniform,
    cv: Annotated[int | None, typer.Option(
        "--cv", help="Spatially blocked N-fold cross-validation of the examples.", min=2, show_default=False)] = None,
    block_size: Annotated[float, typer.Option("--block-size", help="Cross-validation block size, metres.")] = 1000.0,
    index: Annotated[str | None, typer.Option(
        "--index", help="Find candidates of every class across this index instead of mapping a region.",
        show_default=False)] = None,
    per_class: Annotated[int, typer.Option("--per-class", help="Candidates per class (with --index).", min=1)] = 100,
    crs: Annotated[str | None, typer.Option(
        "--crs", help="Mosaic CRS, e.g. EPSG:4326 (needed when the tiles span UTM zones).", show_default=False)] = None,
    per_tile: Annotated[bool, typer.Option("--per-tile", help="One COG per tile, on the tile's own grid.")] = False,
    max_per_polygon: MaxPerPolygon = 200,
    seed: Seed = 0,
    source: Source = None, dataset: DatasetName = None,
    truth: Annotated[Path | None, typer.Option(
        "--truth", help="A synthetic mirror: report the map's accuracy against its ground truth.",
        show_default=False)] = None,
    engine: Annotated[str, typer.Option(
        "--engine", help="With --index: where the index's tiles are scanned, local or ray (the nodes holding its "
        "shards; see docs/scale.md).")] = "local",
    ray_address: RayAddress = None,
    json: Json = False,
) -> None:
    """Few-shot labelling by k nearest neighbours (cosine) of labelled examples.

    Class map: `label --examples fields.geojson --class-field crop --bbox W,S,E,N --year 2023
    --out classes.tif`. Validation: add `--cv 5`. Candidates of every class across an
    index: `label --index NAME --examples ... --per-class 100 --out candidates.geojson`.
    """
    from .. import label as lab
    from ..export import POINT_SUFFIXES, RASTER_SUFFIXES, check_output

    if out is not None:
        check_output(out, POINT_SUFFIXES if index is not None else RASTER_SUFFIXES,
                     directory=per_tile and index is None)
    given_region = any(v for v in (region, bbox, region_file, tile))
    if index is None and (engine != "local" or ray_address is not None):
        raise typer.BadParameter("--engine and --ray-address apply to candidates across an index: add --index NAME")
    common = dict(class_field=class_field, k=k, weights=weights.value, home=state.home,
                  max_per_polygon=max_per_polygon, seed=seed, source=source_spec(source, dataset))
    if index is not None:
        if given_region or cv is not None:
            raise typer.BadParameter("--index searches the whole index: drop the region options and --cv")
        from ..engine import using_engine

        with using_engine(engine, ray_address) as eng:
            res = lab.label_candidates(examples, index=index, year=year, per_class=per_class, out=out,
                                       progress=bar(json), engine=eng, **common)
        if json:
            print_json(res.to_json())
            return
        con = out_console()
        where = f" -> {res.path}" if res.path else ""
        con.print(f"index {index} ({res.year}): {len(res)} candidates over {res.n_scanned:,} pixels{where}"
                  + (" [bold magenta](SYNTHETIC)[/]" if res.synthetic else ""), highlight=False)
        best = res.to_json()["best"]
        for c, n in res.counts().items():
            con.print(f"  {c}: {n} (best score {best[c]:.4f})" if n else f"  {c}: 0", highlight=False)
        return
    if year is None:
        raise typer.BadParameter("--year is required (the embeddings' year)", param_hint="--year")
    report = {}
    if cv is not None:
        rep = lab.cross_validate(examples, year, folds=cv, block_size=block_size, **common)
        report["cv"] = rep.to_json()
        if not json:
            _print_cv(rep)
        if out is None:
            if json:
                print_json(report)
            return
    if out is None:
        raise typer.BadParameter("--out is required for a class map (or give --cv N)", param_hint="--out")
    reg = region_from_options(region, bbox, region_file, tile)
    res = lab.label_region(examples, reg, year, out, crs=crs, per_tile=per_tile, truth=truth,
                           progress=bar(json), **common)
    _warn_dropped(res.dropped)
    report["map"] = res.to_json()
    if json:
        print_json(report if cv is not None else report["map"])
        return
    con = out_console()
    con.print(
        f"{reg.name} ({year}): {res.n_pixels:,} pixels in {len(res.classes)} classes from "
        f"{sum(res.examples_per_class.values())} example pixels, k={res.k} {res.weights} -> {res.path}"
        + (" [bold magenta](SYNTHETIC)[/]" if res.synthetic else ""), highlight=False,
    )
    if res.crs:
        con.print(f"  {res.crs}, {res.width} x {res.height} px", highlight=False)
    for c in res.classes:
        con.print(f"  {c}: {res.pixels[c]:,} px ({res.examples_per_class[c]} examples)", highlight=False)
    if res.truth_accuracy is not None:
        con.print(f"accuracy against the ground truth: [bold]{_pct(res.truth_accuracy)}[/] "
                  f"over {res.truth_pixels:,} pixels", highlight=False)


@app.command()
def suggest(
    examples: Examples,
    out: Annotated[Path, typer.Option("--out", help="GeoJSON of points to label next.")],
    class_field: ClassField = "class",
    region: Region = None, bbox: BBox = None, region_file: RegionFile = None, tile: Tiles = None,
    year: Annotated[int, typer.Option("--year", help="Embedding year, e.g. 2023.")] = ...,
    n: Annotated[int, typer.Option("--n", help="How many pixels to suggest.", min=1)] = 20,
    min_distance: Annotated[float, typer.Option(
        "--min-distance", help="Metres between suggestions (and from existing examples).", min=0)] = 200.0,
    k: K = 5,
    weights: WeightsOpt = Weights.uniform,
    max_per_polygon: MaxPerPolygon = 200,
    seed: Seed = 0,
    source: Source = None, dataset: DatasetName = None,
    json: Json = False,
) -> None:
    """Suggest what to label next: the most uncertain pixels of a region, spread apart.

    The GeoJSON's points carry the class field set to null; fill in the ones you label
    and pass the file back with --examples (unlabelled points are skipped).
    """
    from ..export import POINT_SUFFIXES, check_output
    from ..label import suggest as do_suggest

    check_output(out, POINT_SUFFIXES)
    reg = region_from_options(region, bbox, region_file, tile)
    res = do_suggest(examples, reg, year, n=n, min_distance=min_distance, out=out, class_field=class_field,
                     k=k, weights=weights.value, home=state.home, max_per_polygon=max_per_polygon, seed=seed,
                     source=source_spec(source, dataset), progress=bar(json))
    if json:
        print_json(res.to_json())
        return
    from rich.table import Table

    con = out_console()
    con.print(f"{reg.name} ({year}): {len(res)} pixels to label next, at least {res.min_distance:g} m apart "
              f"-> {res.path}" + (" [bold magenta](SYNTHETIC)[/]" if res.synthetic else ""), highlight=False)
    table = Table()
    for col in ("#", "lon", "lat", "predicted", "second", "margin", "confidence"):
        table.add_column(col, justify="right")
    for i in range(len(res)):
        table.add_row(str(i + 1), f"{res.lon[i]:.6f}", f"{res.lat[i]:.6f}", str(res.predicted[i]),
                      str(res.second[i]), f"{res.margin[i]:.4f}", f"{res.confidence[i]:.2f}")
    con.print(table)
