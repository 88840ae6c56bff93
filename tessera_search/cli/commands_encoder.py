"""Encoder commands: encode (inputs -> release-layout int8 tiles) and train (Barlow Twins).

Thin layer: options in, one library call (:func:`tessera_search.encoder.infer.encode`,
:func:`tessera_search.encoder.train.train`), a summary out. torch is imported inside the
library calls only, so ``tessera-search --help`` works without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import app
from ._console import err_console, out_console, print_json, rich_progress
from .options import Json

Device = Annotated[
    str | None,
    typer.Option("--device", help="cpu, cuda or cuda:N. Default: cuda when available, else cpu.", show_default=False),
]


@app.command()
def encode(
    input: Annotated[Path, typer.Option("--input", help="Official tile directory (bands.npy ...), a netCDF datacube, or a directory of per-date GeoTIFFs.")],
    out: Annotated[Path, typer.Option("--out", help="Release mirror directory to write (ingest with `download --source DIR`).")],
    weights: Annotated[Path | None, typer.Option("--weights", help="Official or tessera-search checkpoint (.pt). Without it the encoder is randomly initialised.", show_default=False)] = None,
    config: Annotated[str, typer.Option("--config", help="Encoder configuration: v1.0 or v1.1.")] = "v1.0",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Pixels per forward pass.")] = 1024,
    device: Device = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the v1.0 timestep draws (same seed, same embeddings).")] = 0,
    official_sampling: Annotated[bool, typer.Option("--official-sampling", help="Draw v1.0 timesteps exactly as the official code does (legacy numpy RNG, seeded with --seed).")] = False,
    precision: Annotated[str, typer.Option("--precision", help="auto (fp32; v1.1 on CUDA: bf16 autocast as upstream), fp32 or bf16.")] = "auto",
    substitute_band: Annotated[list[str] | None, typer.Option("--substitute-band", help="Use one S2 band for a missing one, MISSING=USE, e.g. B8A=B08 (repeatable).", show_default=False)] = None,
    reference: Annotated[Path | None, typer.Option("--reference", help="GeoTIFF on the tile's pixel grid (georeferences an official tile).", show_default=False)] = None,
    tile: Annotated[str | None, typer.Option("--tile", help="Tile name whose expected grid georeferences an official tile, e.g. grid_0.15_52.05.", show_default=False)] = None,
    year: Annotated[int | None, typer.Option("--year", help="Embedding year. Default: from the input's dates.", show_default=False)] = None,
    dataset_version: Annotated[str | None, typer.Option("--dataset-version", help="Version directory to write (default v1 for v1.0, v1.1 for v1.1).", show_default=False)] = None,
    data_source: Annotated[str | None, typer.Option("--data-source", help="v1.1 normalisation statistics: mpc (default) or aws.", show_default=False)] = None,
    s1_encoding: Annotated[str, typer.Option("--s1-encoding", help="S1 values in a datacube: auto, worldcereal, db, linear or tessera.")] = "auto",
    json: Json = False,
) -> None:
    """Embed satellite time series with the bundled TESSERA encoder into release-layout int8 tiles."""
    from ..encoder.data import parse_substitutions
    from ..encoder.infer import encode as do_encode

    subs = parse_substitutions(substitute_band)
    with rich_progress("encoding", None) as advance:
        seen = [0]

        def progress(done: int, total: int) -> None:
            advance(done - seen[0])
            seen[0] = done

        res = do_encode(
            input, out, weights=weights, config=config, batch_size=batch_size, device=device, seed=seed,
            official_sampling=official_sampling, precision=precision, substitute=subs, reference=reference,
            tile=tile, year=year, version=dataset_version, data_source=data_source, s1_encoding=s1_encoding,
            progress=progress,
        )
    for note in res.notes:
        err_console.print(f"[yellow]{note}[/]", highlight=False, soft_wrap=True)
    if json:
        print_json(res.to_dict())
        return
    con = out_console()
    where = f"{res.tile} ({res.year}, {res.version})" if res.ingestible else "bare arrays"
    con.print(f"encoded {res.n_embedded}/{res.n_pixels} pixels of {res.shape[0]}x{res.shape[1]} -> {res.out}: {where}", highlight=False)
    if res.ingestible:
        con.print(f"ingest with: tessera-search download --source {res.out} --tile {res.tile} --year {res.year}", highlight=False)
    else:
        con.print("NOT ingestible: no georeferencing; pass --reference FILE.tif or --tile grid_X_Y", highlight=False)


@app.command()
def train(
    data: Annotated[Path, typer.Option("--data", help="Directory of tiles in the official layout (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", help="Directory for checkpoint_last.pt.")],
    config: Annotated[str, typer.Option("--config", help="Base encoder configuration: v1.0 or v1.1.")] = "v1.0",
    d_model: Annotated[int | None, typer.Option("--d-model", help="Backbone width D (default: the config's).", show_default=False)] = None,
    layers: Annotated[int | None, typer.Option("--layers", help="Transformer layers per backbone.", show_default=False)] = None,
    heads: Annotated[int | None, typer.Option("--heads", help="Attention heads.", show_default=False)] = None,
    ffn: Annotated[int | None, typer.Option("--ffn", help="Transformer feed-forward width.", show_default=False)] = None,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Total optimisation steps.")] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Pixels per batch (globally shuffled).")] = 512,
    lr: Annotated[float, typer.Option("--lr", help="Peak AdamW learning rate.")] = 1e-4,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Linear warm-up steps.")] = 100,
    projector_dim: Annotated[int, typer.Option("--projector-dim", min=1, help="Projector output (and hidden) width.")] = 2048,
    projector_layers: Annotated[int, typer.Option("--projector-layers", min=1, help="Projector hidden blocks (Linear-BN-ReLU).")] = 3,
    sample_size: Annotated[int, typer.Option("--sample-size", min=1, help="Observations drawn per sensor per view.")] = 40,
    mix_weight: Annotated[float, typer.Option("--mix-weight", min=0.0, help="Weight of the mix regulariser (0 turns it off).")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of shuffling, draws and initialisation.")] = 0,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", min=0, help="Write a checkpoint every N steps (0: only at the end).")] = 500,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue from a checkpoint written by train (up to --steps in total).", show_default=False)] = None,
    device: Device = None,
    json: Json = False,
) -> None:
    """Train a TESSERA encoder as in the paper (Barlow Twins, sparse temporal views, mix regulariser)."""
    from ..encoder.config import get_config
    from ..encoder.train import TrainConfig
    from ..encoder.train import train as do_train

    enc = get_config(config, d_model=d_model, n_layers=layers, n_heads=heads, dim_feedforward=ffn)
    cfg = TrainConfig(
        encoder=enc, steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup,
        projector_hidden=projector_dim, projector_out=projector_dim, projector_layers=projector_layers,
        sample_size_s2=sample_size, sample_size_s1=sample_size, mix_weight=mix_weight, seed=seed,
        checkpoint_every=checkpoint_every,
    )
    with rich_progress("training", steps) as advance:
        res = do_train(data, out, cfg, resume=resume, device=device, progress=lambda s, t, loss: advance(1))
    summary = {
        "checkpoint": str(res.checkpoint), "step": res.step, "pixels": res.n_pixels, "tiles": res.n_tiles,
        "first_loss": res.losses[0] if res.losses else None, "last_loss": res.losses[-1] if res.losses else None,
    }
    if json:
        print_json(summary)
        return
    loss = f"loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f}; " if res.losses else ""
    out_console().print(
        f"trained to step {res.step} on {res.n_pixels} pixels from {res.n_tiles} tiles; {loss}checkpoint {res.checkpoint}",
        highlight=False,
    )
