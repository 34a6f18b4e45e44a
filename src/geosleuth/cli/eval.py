"""``geosleuth eval``: run datasets through the pipeline, report, compare with published numbers.

The runs themselves (resumable, keyed records, provenance) are :func:`geosleuth.eval.runner.run`;
this module adds the progress (a bar on a terminal, a line every few seconds without one) and a
Ctrl-C that stops cleanly.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from geosleuth.cli.common import ConfigOpt, QuietOpt, reports_errors, setup_logging
from geosleuth.errors import EXIT_INTERRUPTED, EXIT_OK

if TYPE_CHECKING:
    from geosleuth.eval.datasets import Missing
    from geosleuth.eval.records import EvalRecord

app = typer.Typer(
    help="Benchmark: run datasets (Im2GPS3k, YFCC4k, your own), report, compare with published numbers.",
    no_args_is_help=True,
)


class DistanceChoice(StrEnum):
    GEODESIC = "geodesic"
    SPHERE = "sphere"


DistanceOpt = Annotated[
    DistanceChoice, typer.Option("--distance", help="geodesic (WGS-84) or sphere (R = 6371 km).")
]


@app.command("run")
@reports_errors
def eval_run(
    dataset: Annotated[
        str,
        typer.Argument(
            help="im2gps3k:IMAGES, im2gps:IMAGES, yfcc4k:IMAGES, a CSV/Parquet of image,lat,lon, a folder "
            "of EXIF-GPS photos (GPS removed from what the pipeline sees), or a saved HF dataset folder."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Run folder (records, provenance, reports).")],
    meta: Annotated[Path | None, typer.Option("--meta", help="The benchmark's metadata CSV.")] = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="Where table image paths are relative to.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="The first N samples (stable order).")
    ] = None,
    sample: Annotated[
        int | None, typer.Option("--sample", min=1, help="N samples drawn with --seed.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    require_all: Annotated[
        bool,
        typer.Option(
            "--require-all",
            help="Fail when any listed image is missing. By default a benchmark folder holding part of "
            "the benchmark is evaluated on the images present (the count is logged and reported); "
            "your own tables and folders always require all.",
        ),
    ] = False,
    skip_missing: Annotated[
        bool,
        typer.Option(
            "--skip-missing",
            help="Evaluate the images present, also for your own tables and folders (the benchmarks' default).",
        ),
    ] = False,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Images in flight.")] = 4,
    vlm_url: Annotated[
        list[str] | None, typer.Option("--vlm-url", help="VLM endpoint; repeat for replicas of one model.")
    ] = None,
    vlm_model: Annotated[str | None, typer.Option("--vlm-model")] = None,
    image_encoder: Annotated[str | None, typer.Option("--image-encoder")] = None,
    index: Annotated[Path | None, typer.Option("--index")] = None,
    ocr: Annotated[str | None, typer.Option("--ocr")] = None,
    offline: Annotated[bool | None, typer.Option("--offline/--online")] = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run DATASET through the pipeline into --out. Rerunning the same command resumes: samples
    already recorded with the same configuration are skipped; a killed run loses nothing.

    \b
    Examples:
      geosleuth eval run im2gps3k:~/data/im2gps3k --meta im2gps3k_places365.csv --out runs/g3 --vlm-url http://gpu1:8000/v1
      geosleuth eval run ../shared/data/exif-photos --out runs/exif --offline
    """
    setup_logging(0, quiet)
    import signal
    import threading

    from rich.console import Console

    from geosleuth.agents.pipeline import Locator, build_deps
    from geosleuth.config import load_settings
    from geosleuth.eval.datasets import open_dataset
    from geosleuth.eval.runner import error_km, run
    from geosleuth.progress import Progress

    settings = load_settings(
        config,
        offline=offline,
        ocr={"engine": ocr} if ocr else None,
        retrieval={"image_encoder": image_encoder, "index_dir": index},
        vlm={"base_url": ",".join(vlm_url) if vlm_url else None, "model": vlm_model},
    )
    ds = open_dataset(
        dataset,
        images=images,
        meta=meta,
        limit=limit,
        sample=sample,
        seed=seed,
        missing=_missing(require_all=require_all, skip_missing=skip_missing),
    )
    locator = Locator(deps=build_deps(settings))
    locator.deps.gazetteer.ensure_built()

    err = Console(stderr=True, highlight=False)
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        err.print("[yellow]stopping: the images in flight finish and are written; Ctrl-C again to abort[/]")

    signal.signal(signal.SIGINT, on_sigint)
    hits = {"n": 0, "25": 0, "750": 0}
    progress = Progress(f"eval {ds.name}", len(ds), unit="samples")

    def on_record(rec: EvalRecord) -> None:
        d = error_km(rec)
        hits["n"] += 1
        hits["25"] += d is not None and d <= 25
        hits["750"] += d is not None and d <= 750
        progress.advance()
        progress.update(note=f"≤25 km {hits['25'] / hits['n']:.0%}, ≤750 km {hits['750'] / hits['n']:.0%}")

    try:
        with progress:
            summary = run(
                ds,
                locator,
                out,
                concurrency=concurrency,
                on_record=on_record,
                on_start=lambda done, total: progress.update(completed=done),
                stop=stop,
            )
    finally:
        signal.signal(signal.SIGINT, previous)
    for note in summary.notes:
        err.print(f"note: {note}")
    state = "interrupted" if summary.interrupted else "done"
    if ds.info.get("subset"):
        err.print(f"note: {ds.info['subset']}")
    print(
        f"{state}: {summary.ran} samples run, {summary.skipped_done} already recorded, {summary.errors} errors, "
        f"of {summary.total}; {summary.seconds:.1f} s; records in {out / 'records.jsonl'}"
    )
    raise typer.Exit(EXIT_INTERRUPTED if summary.interrupted else EXIT_OK)


def _missing(*, require_all: bool, skip_missing: bool) -> Missing | None:
    if require_all and skip_missing:
        raise typer.BadParameter("--require-all and --skip-missing contradict each other; pass one")
    return "error" if require_all else "skip" if skip_missing else None


@app.command("report")
@reports_errors
def eval_report(
    run_folder: Annotated[Path, typer.Argument(help="A folder made by `geosleuth eval run`.")],
    distance: DistanceOpt = DistanceChoice.GEODESIC,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Only the tables.")] = False,
    per_image: Annotated[
        bool,
        typer.Option(
            "--per-image", help="Also one explainable HTML report per image, linked from report.md."
        ),
    ] = False,
) -> None:
    """Write report.md, metrics.csv/json and the plots (error CDF, recall vs area, error map).

    \b
    Examples:
      geosleuth eval report runs/g3
      geosleuth eval report runs/g3 --per-image
    """
    from geosleuth.eval.report import write_report

    paths = write_report(run_folder, distance=distance.value, plots=not no_plots, per_image=per_image)
    print((run_folder / "report.md").read_text())
    print(f"written: {len(paths)} files (" + ", ".join(p.name for p in paths[:6]) + ")", file=sys.stderr)


@app.command("compare")
@reports_errors
def eval_compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders.")],
    anchors: Annotated[
        bool, typer.Option("--anchors", help="Add the published numbers for the dataset.")
    ] = False,
    distance: DistanceOpt = DistanceChoice.GEODESIC,
) -> None:
    """Runs side by side (accuracy at 1/25/200/750/2500 km), with the published anchors.

    \b
    Examples:
      geosleuth eval compare runs/g3 runs/exif --anchors
    """
    from geosleuth.eval.report import compare

    print(compare(runs, anchors=anchors, distance=distance.value), end="")
