"""``geosleuth verifier``: fit the verifier's weights on labelled photos
(:func:`geosleuth.agents.fitting.fit_verifier` does the work)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from geosleuth.cli.common import ConfigOpt, reports_errors

if TYPE_CHECKING:
    from geosleuth.errors import GeoSleuthError

app = typer.Typer(help="Fit the verifier's weights on labelled photos.", no_args_is_help=True)


@app.command("fit")
@reports_errors
def verifier_fit(
    table: Annotated[Path, typer.Argument(help="CSV/Parquet of image,lat,lon (the truth).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the fitted weights (JSON).")],
    images: Annotated[
        Path | None, typer.Option("--images", help="Folder the image paths are relative to.")
    ] = None,
    hit_km: Annotated[float, typer.Option("--hit-km", help="A candidate within this is 'right'.")] = 25.0,
    l2: Annotated[float, typer.Option("--l2", help="Pull toward the current weights.")] = 0.01,
    config: ConfigOpt = None,
) -> None:
    """Run every photo through the configured pipeline, then fit the verifier's weights so the
    candidate nearest the truth wins. Use them with verifier.weights_file = OUT.

    \b
    Examples:
      geosleuth verifier fit truth.csv --out weights.json
      geosleuth verifier fit labels.parquet --images photos/ --out weights.json --hit-km 50
    """
    from geosleuth.agents.fitting import fit_verifier
    from geosleuth.config import load_settings

    def on_skip(src: str, exc: GeoSleuthError) -> None:
        print(f"geosleuth: skipped {src}: {exc}", file=sys.stderr)

    settings = load_settings(config)
    result = fit_verifier(
        table, out=out, images=images, hit_km=hit_km, l2=l2, settings=settings, on_skip=on_skip
    )
    m = result.metrics
    print(
        f"fitted on {m['n_examples']} photos ({m['n_hits']} with a candidate within {hit_km:g} km): "
        f"log-loss {m['log_loss_before']:.3f} -> {m['log_loss_after']:.3f}, top-1 "
        f"{m['top1_before']:.2f} -> {m['top1_after']:.2f}; weights in {out}"
    )
