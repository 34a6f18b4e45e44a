"""The ``geosleuth`` command. Thin: parse options, call the library, render.

Exit codes: 0 every input was processed (a "too little evidence" answer counts as processed);
1 at least one input could not be used (its error is on stderr); 2 bad usage or settings;
3 an internal error (a bug: please report it with ``-v`` output).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from geosleuth.schemas import LocateError, Prediction

app = typer.Typer(
    name="geosleuth",
    help="Where was this photo taken? Evidence first: EXIF, text in the image, gazetteers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show the effective settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")
index_app = typer.Typer(
    help="Build, inspect and search neighbour indexes of geotagged photos.", no_args_is_help=True
)
app.add_typer(index_app, name="index")
vlm_app = typer.Typer(
    help="Serve a VLM with vLLM (from its own environment) and check OpenAI-compatible servers.",
    no_args_is_help=True,
)
app.add_typer(vlm_app, name="vlm")
eval_app = typer.Typer(
    help="Benchmark: run datasets (Im2GPS3k, YFCC4k, your own), report, compare with published numbers.",
    no_args_is_help=True,
)
app.add_typer(eval_app, name="eval")
verifier_app = typer.Typer(help="Fit the verifier's weights on labelled photos.", no_args_is_help=True)
app.add_typer(verifier_app, name="verifier")

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
log = logging.getLogger("geosleuth.cli")


def _version_callback(value: bool) -> None:
    if value:
        from geosleuth import __version__

        print(f"geosleuth {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """geosleuth: explainable photo geolocation."""


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    from rich.console import Console
    from rich.logging import RichHandler

    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_time=False, show_path=verbose > 1)],
        force=True,
    )


def _fail(message: str, code: int) -> typer.Exit:
    print(f"geosleuth: error: {message}", file=sys.stderr)
    return typer.Exit(code)


ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="TOML settings file (else $GEOSLEUTH_CONFIG, ./geosleuth.toml)."),
]
CacheOpt = Annotated[Path | None, typer.Option("--cache-dir", help="Where the gazetteer index is kept.")]


@app.command()
def locate(
    inputs: Annotated[
        list[str],
        typer.Argument(help="Image files, folders (every image inside, recursively), or - for stdin."),
    ],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the Prediction as JSON (JSON Lines for batches).")
    ] = False,
    ignore_exif_gps: Annotated[
        bool, typer.Option("--ignore-exif-gps", help="Do not take the EXIF GPS position as the answer.")
    ] = False,
    ocr: Annotated[
        str | None, typer.Option("--ocr", help="OCR engine: auto, hybrid, rapidocr, tesseract or none.")
    ] = None,
    image_encoder: Annotated[
        str | None,
        typer.Option(
            "--image-encoder", help="Turn on retrieval: 'geoclip', or a CLIP/SigLIP hub id or folder."
        ),
    ] = None,
    index: Annotated[
        Path | None, typer.Option("--index", help="A neighbour index built with `geosleuth index build`.")
    ] = None,
    vlm_url: Annotated[
        str | None,
        typer.Option("--vlm-url", help="OpenAI-compatible VLM endpoint, e.g. http://127.0.0.1:8000/v1."),
    ] = None,
    vlm_model: Annotated[
        str | None, typer.Option("--vlm-model", help="Model name on that server (default: its only one).")
    ] = None,
    vlm_samples: Annotated[
        int | None, typer.Option("--vlm-samples", min=1, help="Samples per prompt variant.")
    ] = None,
    min_probability: Annotated[
        float | None, typer.Option("--min-probability", help="Answer only above this probability.")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Images processed in parallel.")] = 1,
    trace: Annotated[
        bool, typer.Option("--trace", help="Show every planner step: inputs, outputs, calls, timings.")
    ] = False,
    offline: Annotated[
        bool | None, typer.Option("--offline/--online", help="Never touch the network (default: settings).")
    ] = None,
    config: ConfigOpt = None,
    cache_dir: CacheOpt = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More logging (-vv for debug).")
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")] = False,
) -> None:
    """Locate photos from the evidence inside them.

    \b
    Examples:
      geosleuth locate photo.jpg
      geosleuth locate photos/ --json > answers.jsonl
      cat photo.heic | geosleuth locate -
      geosleuth locate sign.png --ignore-exif-gps --ocr rapidocr
      geosleuth locate street.jpg --vlm-url http://127.0.0.1:8000/v1
    """
    _setup_logging(verbose, quiet)
    from geosleuth.errors import ConfigError, GeoSleuthError

    try:
        from geosleuth.agents.pipeline import Locator, build_deps
        from geosleuth.config import load_settings

        settings = load_settings(
            config,
            cache_dir=cache_dir,
            use_exif_gps=False if ignore_exif_gps else None,
            offline=offline,
            min_probability=min_probability,
            ocr={"engine": ocr} if ocr else None,
            retrieval={"image_encoder": image_encoder, "index_dir": index},
            vlm={"base_url": vlm_url, "model": vlm_model, "samples": vlm_samples},
        )
        sources, skipped = _expand(inputs)
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except GeoSleuthError as exc:
        raise _fail(str(exc), EXIT_INPUT) from None
    if not sources:
        raise _fail(f"no image files found in {', '.join(inputs)}", EXIT_INPUT)

    from rich.console import Console

    out = Console(soft_wrap=True, highlight=False)
    err = Console(stderr=True, highlight=False)
    try:
        locator = Locator(deps=build_deps(settings))
        gazetteer = locator.deps.gazetteer
        if not gazetteer.is_built:
            with err.status(f"Building the offline gazetteer in {gazetteer.cache_dir} (once, about 20 s)..."):
                gazetteer.ensure_built()
    except GeoSleuthError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None

    batch = len(sources) > 1
    failures = 0
    located = 0
    for result in _run(locator, sources, workers, err, show_progress=batch and not quiet):
        if _is_error(result):
            failures += 1
            print(f"geosleuth: error: {result.source}: {result.error}", file=sys.stderr)
            if json_out and batch:
                print(result.model_dump_json())
            continue
        pred: Prediction = result
        located += pred.status == "located"
        if json_out:
            print(pred.model_dump_json(indent=None if batch else 2, exclude=None if trace else {"trace"}))
        else:
            _render(out, pred, trace=trace)
    if batch and not quiet:
        note = f", {skipped} non-image files skipped" if skipped else ""
        err.print(
            f"[bold]{len(sources)} images:[/] {located} located, {len(sources) - located - failures} too little "
            f"evidence, {failures} failed{note}."
        )
    raise typer.Exit(EXIT_INPUT if failures else EXIT_OK)


def _is_error(result: Any) -> bool:
    return hasattr(result, "error_type")


def _expand(inputs: list[str]) -> tuple[list[str | bytes], int]:
    """Paths as given; folders become the image files inside them; '-' becomes stdin's bytes."""
    from geosleuth.tools.image import IMAGE_SUFFIXES

    sources: list[str | bytes] = []
    skipped = 0
    for item in inputs:
        if item == "-":
            sources.append(sys.stdin.buffer.read())
            continue
        path = Path(item)
        if path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    sources.append(str(f))
                else:
                    skipped += 1
        else:
            sources.append(item)
    return sources, skipped


def _run(locator: Any, sources: list[str | bytes], workers: int, err: Console, *, show_progress: bool) -> Any:
    """Yield Prediction or LocateError per source; unexpected failures become errors too."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from geosleuth.schemas import LocateError

    def guarded(src: str | bytes) -> Prediction | LocateError:
        name = "<stdin>" if isinstance(src, bytes) else src
        try:
            return locator.locate(src, name=name)
        except Exception as exc:
            from geosleuth.errors import ImageInputError

            if isinstance(exc, ImageInputError):
                return LocateError(source=exc.source, error=exc.reason, error_type=type(exc).__name__)
            log.debug("internal error on %s", name, exc_info=True)
            return LocateError(
                source=name,
                error=f"internal error ({type(exc).__name__}: {exc}); rerun with -vv and report it",
                error_type="InternalError",
            )

    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not show_progress,
    )
    with progress:
        task = progress.add_task("locating", total=len(sources))
        if workers <= 1:
            for src in sources:
                result = guarded(src)
                progress.advance(task)
                yield result
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=workers) as pool:
                for result in pool.map(guarded, sources):
                    progress.advance(task)
                    yield result


def _render(out: Console, p: Prediction, *, trace: bool = False) -> None:
    from rich.markup import escape

    from geosleuth.schemas import StageStatus

    out.print(f"[bold]{escape(p.source)}[/]")
    if p.best is not None:
        b = p.best
        where = escape(b.place.short()) if b.place else ""
        out.print(f"  Best guess : {b.point}  {where}")
        basis = "EXIF GPS metadata" if p.basis == "exif-gps" else "evidence in the image"
        radius = f"; within ~{b.radius_km:.0f} km" if b.radius_km >= 1 else ""
        out.print(f"  Confidence : {p.confidence_level.value} ({p.confidence:.2f}), from {basis}{radius}")
    else:
        out.print("  [yellow]Too little evidence for a location.[/]")
    out.print(f"  {escape(p.explanation)}")
    alts = [c for c in p.candidates if c is not p.best and c.probability >= 0.01][:4]
    if alts:
        out.print("  Alternatives:")
        for c in alts:
            where = escape(c.place.short()) if c.place else ""
            out.print(f"    {c.probability:5.2f}  {c.point}  {escape(c.label)}  [dim]{where}[/]")
    if p.evidence:
        out.print("  Evidence:")
        for e in p.evidence:
            # ✓ counted, · informational or too weak to matter, ✗ rejected (with the reason)
            mark = "[red]✗[/]" if not e.usable else ("[green]✓[/]" if e.weight >= 0.1 else "·")
            extra = f"  [dim]({escape(e.reason)})[/]" if e.reason else ""
            out.print(f"    {mark} {e.tool:<8} {escape(e.value)}{extra}")
    if p.vlm is not None:
        v = p.vlm
        out.print(
            f"  VLM        : {escape(v.model)}: {v.usable_samples}/{v.total_samples} usable answers, "
            f"{v.usage.total} tokens, {v.seconds:.1f} s"
        )
        if v.consensus is not None:
            out.print(f"    consensus {v.consensus} ({v.consensus_share:.0%} of answers within 100 km)")
        if v.rationale:
            out.print(f"    rationale: {escape(' '.join(v.rationale.split())[:600])}")
        for line in v.discarded[:5]:
            out.print(f"    [dim]set aside: {escape(line)}[/]")
        if len(v.discarded) > 5:
            out.print(f"    [dim]... and {len(v.discarded) - 5} more (see --json)[/]")
    if p.missing:
        out.print("  Missing: " + escape("; ".join(p.missing)))
    for w in p.warnings:
        out.print(f"  [yellow]Warning:[/] {escape(w)}")
    marks = {
        StageStatus.RAN: "✓",
        StageStatus.SKIPPED: "–",
        StageStatus.UNAVAILABLE: "✗",
        StageStatus.FAILED: "!",
    }
    if p.regions:
        out.print(
            "  Regions    : "
            + "; ".join(
                f"{r.level:.0%} within {len(r.circles)} circle{'s' if len(r.circles) > 1 else ''} "
                f"({r.area_km2:,.0f} km²)"
                for r in p.regions
            )
        )
    if trace and p.trace:
        out.print("  Trace:")
        for step in p.trace:
            out.print(
                f"    [bold]{escape(step.node)}[/] {step.seconds * 1000:.0f} ms: {escape(step.summary)}"
            )
            for label, data in (("in", step.inputs), ("out", step.outputs)):
                if data:
                    out.print(f"      {label}: {escape(json.dumps(data, ensure_ascii=False, default=str))}")
            for call in step.calls:
                out.print(f"      call: {escape(call)}")
    out.print("  Stages:")
    for s in p.stages:
        engine = f" [{s.engine}]" if s.engine else ""
        timing = f" {s.seconds * 1000:.0f} ms" if s.seconds else ""
        out.print(
            f"    {marks[s.status]} {s.name:<9} {s.status.value}{escape(engine)}{timing}: {escape(s.detail)}"
        )
    out.print()


@config_app.command("show")
def config_show(
    config: ConfigOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Print the effective settings and where the config file was found.

    Precedence, highest first: flags, GEOSLEUTH_* environment variables, the config file, defaults.
    """
    from geosleuth.config import find_config_file, load_settings, redact_url
    from geosleuth.errors import ConfigError

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    data = settings.model_dump(mode="json")
    if data["vlm"].get("api_key"):
        data["vlm"]["api_key"] = "**********"
    if data["tools"].get("searxng_url"):
        data["tools"]["searxng_url"] = redact_url(data["tools"]["searxng_url"])
    if json_out:
        print(json.dumps(data, indent=2))
        return
    path = find_config_file(config)
    print(f"# config file: {path if path else '(none)'}")
    print("# precedence: flags > GEOSLEUTH_* environment > config file > defaults")
    _print_toml(data)


def _print_toml(data: dict[str, Any], prefix: str = "") -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    if prefix:
        print(f"\n[{prefix}]")
    for k, v in scalars.items():
        print(f"{k} = {json.dumps(v)}" if v is not None else f"# {k} = (unset)")
    for k, v in tables.items():
        _print_toml(v, f"{prefix}.{k}" if prefix else k)


EncoderOpt = Annotated[
    str | None,
    typer.Option(
        "--encoder",
        help="Image encoder: a CLIP/SigLIP hub id or folder, 'geoclip', or 'geoclip:/path/to/clip' "
        "(default: retrieval.image_encoder from the settings).",
    ),
]


@index_app.command("build")
def index_build(
    source: Annotated[
        str, typer.Argument(help="A folder of EXIF-GPS photos, a CSV/Parquet table, or MP16-Pro's CSV.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the index into.")],
    encoder: EncoderOpt = None,
    layout: Annotated[str, typer.Option("--layout", help="auto, folder, table or mp16.")] = "auto",
    images: Annotated[
        Path | None,
        typer.Option("--images", help="Where table/MP16 image paths are relative to (folder or .tar)."),
    ] = None,
    kind: Annotated[str, typer.Option("--kind", help="auto, flat (exact) or ivfpq (compressed).")] = "auto",
    shard_size: Annotated[
        int, typer.Option("--shard-size", min=1, help="Photos per resumable shard.")
    ] = 2048,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Photos per encoder batch.")] = 32,
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard an earlier, different build in --out.")
    ] = False,
    config: ConfigOpt = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True)] = 0,
) -> None:
    """Embed geotagged photos and build a searchable index. A killed build resumes where it stopped.

    \b
    Examples:
      geosleuth index build photos/ --out idx --encoder openai/clip-vit-large-patch14
      geosleuth index build MP16_Pro_places365.csv --images mp-16-images.tar --out mp16 --encoder geoclip
    """
    _setup_logging(verbose, False)
    from geosleuth.errors import GeoSleuthError

    try:
        settings = _load(config)
        enc = _encoder(encoder, settings)
        from geosleuth.retrieval.index import IndexKind, build_index
        from geosleuth.retrieval.sources import Layout, open_source

        if layout not in ("auto", "folder", "table", "mp16"):
            raise ValueError(f"--layout must be auto, folder, table or mp16, not {layout!r}")
        if kind not in ("auto", "flat", "ivfpq"):
            raise ValueError(f"--kind must be auto, flat or ivfpq, not {kind!r}")
        src = open_source(source, layout=cast("Layout", layout), images=images)
        print(
            f"indexing {len(src.items)} photos from {source} ({src.layout}) with {enc.name} into {out}",
            file=sys.stderr,
        )
        report = build_index(
            src,
            enc,
            out,
            kind=cast("IndexKind", kind),
            shard_size=shard_size,
            batch_size=batch_size,
            restart=restart,
        )
    except (GeoSleuthError, FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc), EXIT_INPUT) from None
    skipped = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in sorted(report.skipped.items())) or "none"
    print(
        f"indexed {report.indexed} photos ({report.kind}) in {report.seconds:.1f} s; "
        f"skipped: {skipped} (details in {out / 'skipped.jsonl'}); "
        f"{report.shards_reused} of {report.shards_total} shards reused from an earlier run"
    )


@index_app.command("info")
def index_info_cmd(
    folder: Annotated[Path, typer.Argument(help="An index folder.")],
    verify: Annotated[bool, typer.Option("--verify", help="Check every file against its checksum.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Show what built an index, its size, what was skipped, and whether it is intact."""
    from geosleuth.errors import GeoSleuthError
    from geosleuth.retrieval.index import NeighbourIndex, index_info

    try:
        info = index_info(folder)
        if info.get("status") == "complete":
            NeighbourIndex(folder, verify=verify).close()
    except GeoSleuthError as exc:
        raise _fail(str(exc), EXIT_INPUT) from None
    if json_out:
        print(json.dumps(info, indent=2))
        return
    enc = info.get("encoder", {})
    print(f"index      : {folder} ({info.get('status')})")
    print(f"encoder    : {enc.get('name')} ({enc.get('dim')}-d, weights {str(enc.get('fingerprint'))[:12]})")
    src = info.get("source", {})
    print(f"source     : {src.get('path')} ({src.get('layout')}, {src.get('items')} items)")
    if info.get("status") == "complete":
        idx = info["index"]
        size = sum(f["bytes"] for f in idx["files"].values())
        params = ", ".join(f"{k}={v}" for k, v in idx.items() if k not in ("files", "kind", "dim"))
        print(
            f"contents   : {info['count']} photos, {idx['kind']}{' (' + params + ')' if params else ''}, {size / 1e6:.1f} MB"
        )
        skipped = (
            ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in sorted(info.get("skipped", {}).items()))
            or "none"
        )
        print(f"skipped    : {skipped}")
        print(
            f"integrity  : {'checksums verified' if verify else 'file sizes match (use --verify for checksums)'}"
        )


@index_app.command("search")
def index_search(
    folder: Annotated[Path, typer.Argument(help="An index folder.")],
    image: Annotated[str, typer.Argument(help="The query photo.")],
    k: Annotated[int, typer.Option("-k", min=1, help="Neighbours of each kind.")] = 10,
    encoder: EncoderOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print neighbours as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """The most similar and the most dissimilar indexed photos to IMAGE, with their places.

    The encoder defaults to the one that built the index."""
    _setup_logging(0, False)
    from geosleuth.errors import GeoSleuthError
    from geosleuth.gazetteer import Gazetteer
    from geosleuth.retrieval.index import NeighbourIndex
    from geosleuth.tools.image import open_image

    try:
        settings = _load(config)
        idx = NeighbourIndex(folder, gazetteer=Gazetteer(settings.cache_dir))
        enc = _encoder(encoder or idx.encoder_name, settings)
        idx.check_encoder(enc)
        loaded = open_image(
            image, max_pixels=settings.max_image_pixels, max_bytes=settings.max_file_bytes, draft_side=448
        )
        if loaded.rgb is None:
            raise _fail(f"{image}: {loaded.pixel_error}", EXIT_INPUT)
        result = idx.search(enc.encode([loaded.rgb]), k)[0]
    except GeoSleuthError as exc:
        raise _fail(str(exc), EXIT_INPUT) from None
    if json_out:
        print(
            json.dumps(
                {
                    "similar": [n.model_dump(mode="json") for n in result.similar],
                    "dissimilar": [n.model_dump(mode="json") for n in result.dissimilar],
                },
                indent=2,
            )
        )
        return
    for title, group in (("most similar", result.similar), ("most dissimilar", result.dissimilar)):
        print(f"{title}:")
        for n in group:
            where = n.place.short() if n.place else ""
            print(f"  {n.similarity:+.3f}  {n.point}  {where}  [{n.key}]")


@vlm_app.command("serve")
def vlm_serve(
    model: Annotated[str, typer.Argument(help="A hub id in the HF cache or a model folder.")],
    vllm_python: Annotated[
        str | None,
        typer.Option(
            "--vllm-python", help="Python of the environment vLLM is installed in (else `vllm` on PATH)."
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    max_model_len: Annotated[int, typer.Option("--max-model-len", min=256)] = 8192,
    images: Annotated[
        int, typer.Option("--images-per-prompt", min=1, help="The photo plus neighbour thumbnails.")
    ] = 4,
    served_name: Annotated[str | None, typer.Option("--served-model-name")] = None,
    gpu_memory: Annotated[float | None, typer.Option("--gpu-memory-utilization")] = None,
    tensor_parallel: Annotated[int | None, typer.Option("--tensor-parallel-size", min=1)] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for /health.")] = 900.0,
    detach: Annotated[
        bool, typer.Option("--detach", help="Return once healthy, leaving vLLM running (logs to --log).")
    ] = False,
    log_path: Annotated[Path | None, typer.Option("--log", help="vLLM's log file (with --detach).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the vLLM command and exit.")] = False,
    extra: Annotated[
        list[str] | None, typer.Argument(help="More vLLM flags, after --.", show_default=False)
    ] = None,
) -> None:
    """Start vLLM's OpenAI server for MODEL, wait until it is healthy, and print its base URL.

    \b
    Examples:
      geosleuth vlm serve Qwen/Qwen2.5-VL-7B-Instruct
      geosleuth vlm serve ./my-vlm --vllm-python ~/vllm-env/bin/python --port 8001 -- --dtype bfloat16
    """
    import shlex
    import subprocess

    from geosleuth.agents.vlm import serve as sv
    from geosleuth.errors import ConfigError, VLMError

    opts = sv.ServeOptions(
        model=model,
        host=host,
        port=port,
        max_model_len=max_model_len,
        images_per_prompt=images,
        served_model_name=served_name,
        gpu_memory_utilization=gpu_memory,
        tensor_parallel_size=tensor_parallel,
        extra=tuple(extra or ()),
    )
    try:
        cmd = sv.serve_command(opts, sv.launcher(vllm_python))
    except ConfigError as exc:
        if not dry_run:
            raise _fail(str(exc), EXIT_USAGE) from None
        cmd = sv.serve_command(opts, ["vllm", "serve"])
        print(f"# {exc}", file=sys.stderr)
    print(shlex.join(cmd), file=sys.stdout if dry_run else sys.stderr)
    if dry_run:
        return
    url = sv.base_url(host, port)
    log_file = None
    if detach:
        log_file = log_path or Path(f"vllm-{port}.log")
        stream = log_file.open("ab")
        proc = subprocess.Popen(cmd, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True)
    else:
        proc = subprocess.Popen(cmd)
    try:
        seconds = sv.wait_healthy(url, proc, timeout, log_file)
    except (VLMError, KeyboardInterrupt) as exc:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise _fail(str(exc), EXIT_INPUT) from None
    print(f"vLLM is ready after {seconds:.0f} s (pid {proc.pid})", file=sys.stderr)
    print(url)
    if detach:
        print(f"logs: {log_file}; stop it with: kill {proc.pid}", file=sys.stderr)
        return
    try:
        raise typer.Exit(proc.wait())
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=30)
        raise


@vlm_app.command("check")
def vlm_check(
    url: Annotated[str, typer.Argument(help="The server's OpenAI base URL, e.g. http://127.0.0.1:8000/v1.")],
    model: Annotated[
        str | None, typer.Option("--model", help="Model to ask (default: the only one).")
    ] = None,
    image: Annotated[
        Path | None, typer.Option("--image", help="Photo to send (default: a bundled street sign).")
    ] = None,
    samples: Annotated[int, typer.Option("--samples", min=1)] = 2,
    timeout: Annotated[float, typer.Option("--timeout")] = 120.0,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=16)] = 1024,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """List the server's models, send one real geolocation request, and report whether the
    structured output was honoured and how long it took. Exit 1 when no usable answer came back."""
    import dataclasses

    from geosleuth.agents.vlm.serve import check_server
    from geosleuth.errors import ConfigError, GeoSleuthError
    from geosleuth.tools.image import open_image

    try:
        img = None
        if image is not None:
            loaded = open_image(str(image))
            if loaded.rgb is None:
                raise _fail(f"{image}: {loaded.pixel_error}", EXIT_INPUT)
            img = loaded.rgb
        report = check_server(
            url, model, image=img, samples=samples, timeout_s=timeout, max_tokens=max_tokens
        )
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except GeoSleuthError as exc:
        raise _fail(str(exc), EXIT_INPUT) from None
    if json_out:
        print(json.dumps(dataclasses.asdict(report) | {"ok": report.ok}, indent=2))
    else:
        print(f"server     : {report.base_url} ({report.server_kind or 'unreachable'})")
        print(f"models     : {', '.join(report.models) or '(none)'}")
        if report.samples or report.model:
            print(f"asked      : {report.model}, {report.samples} samples, schema via {report.structured}")
            honoured = (
                "yes" if report.structured_honoured else "no (the tolerant parser had to read the answers)"
            )
            print(f"structured : {honoured}")
            print(f"usable     : {report.usable}/{report.samples}; first: {report.first_answer}")
            print(
                f"latency    : {report.latency_s:.2f} s; tokens: {report.prompt_tokens} prompt, "
                f"{report.completion_tokens} completion"
            )
        for e in report.errors:
            print(f"error      : {e}")
    raise typer.Exit(EXIT_OK if report.ok else EXIT_INPUT)


@eval_app.command("run")
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
    skip_missing: Annotated[
        bool, typer.Option("--skip-missing", help="Run without images that are missing (else: an error).")
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Run DATASET through the pipeline into --out. Rerunning the same command resumes: samples
    already recorded with the same configuration are skipped; a killed run loses nothing.

    \b
    Examples:
      geosleuth eval run im2gps3k:~/data/im2gps3k --meta im2gps3k_places365.csv --out runs/g3 --vlm-url http://gpu1:8000/v1
      geosleuth eval run ../shared/data/exif-photos --out runs/exif --offline
    """
    _setup_logging(0, quiet)
    import signal
    import threading

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from geosleuth.agents.pipeline import Locator, build_deps
    from geosleuth.config import load_settings
    from geosleuth.errors import ConfigError, GeoSleuthError
    from geosleuth.eval.datasets import open_dataset
    from geosleuth.eval.runner import error_km, run

    try:
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
            missing="skip" if skip_missing else "error",
        )
        locator = Locator(deps=build_deps(settings))
        locator.deps.gazetteer.ensure_built()
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except (GeoSleuthError, FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc), EXIT_INPUT) from None

    err = Console(stderr=True, highlight=False)
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        err.print("[yellow]stopping: the images in flight finish and are written; Ctrl-C again to abort[/]")

    signal.signal(signal.SIGINT, on_sigint)
    hits = {"n": 0, "25": 0, "750": 0}
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[acc]}"),
        console=err,
        transient=True,
        disable=quiet,
    )

    def on_record(rec: Any) -> None:
        d = error_km(rec)
        hits["n"] += 1
        hits["25"] += d is not None and d <= 25
        hits["750"] += d is not None and d <= 750
        acc = f"≤25 km {hits['25'] / hits['n']:.0%}, ≤750 km {hits['750'] / hits['n']:.0%}"
        progress.update(task, advance=1, acc=acc)

    try:
        with progress:
            task = progress.add_task(f"eval {ds.name}", total=len(ds), acc="")
            summary = run(
                ds,
                locator,
                out,
                concurrency=concurrency,
                on_record=on_record,
                on_start=lambda done, total: progress.update(task, completed=done),
                stop=stop,
            )
    except GeoSleuthError as exc:
        raise _fail(str(exc), EXIT_INPUT) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    for note in summary.notes:
        err.print(f"note: {note}")
    state = "interrupted" if summary.interrupted else "done"
    print(
        f"{state}: {summary.ran} samples run, {summary.skipped_done} already recorded, {summary.errors} errors, "
        f"of {summary.total}; {summary.seconds:.1f} s; records in {out / 'records.jsonl'}"
    )
    raise typer.Exit(130 if summary.interrupted else EXIT_OK)


@eval_app.command("report")
def eval_report(
    run_folder: Annotated[Path, typer.Argument(help="A folder made by `geosleuth eval run`.")],
    distance: Annotated[
        str, typer.Option("--distance", help="geodesic (WGS-84) or sphere (R = 6371 km).")
    ] = "geodesic",
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Only the tables.")] = False,
) -> None:
    """Write report.md, metrics.csv/json and the plots (error CDF, recall vs area, error map)."""
    from geosleuth.errors import GeoSleuthError
    from geosleuth.eval.report import write_report

    try:
        paths = write_report(run_folder, distance=_distance(distance), plots=not no_plots)
    except GeoSleuthError as exc:
        raise _fail(str(exc), EXIT_INPUT) from None
    print((run_folder / "report.md").read_text())
    print("written: " + ", ".join(p.name for p in paths), file=sys.stderr)


@eval_app.command("compare")
def eval_compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders.")],
    anchors: Annotated[
        bool, typer.Option("--anchors", help="Add the published numbers for the dataset.")
    ] = False,
    distance: Annotated[str, typer.Option("--distance")] = "geodesic",
) -> None:
    """Runs side by side (accuracy at 1/25/200/750/2500 km), with the published anchors."""
    from geosleuth.errors import GeoSleuthError
    from geosleuth.eval.report import compare

    try:
        print(compare(runs, anchors=anchors, distance=_distance(distance)), end="")
    except GeoSleuthError as exc:
        raise _fail(str(exc), EXIT_INPUT) from None


def _distance(value: str) -> Any:
    if value not in ("geodesic", "sphere"):
        raise _fail(f"--distance must be geodesic or sphere, not {value!r}", EXIT_USAGE)
    return value


@verifier_app.command("fit")
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
    candidate nearest the truth wins. Use them with verifier.weights_file = OUT."""
    from geosleuth.agents.pipeline import Locator
    from geosleuth.errors import GeoSleuthError
    from geosleuth.retrieval.tables import find_column, latlon_columns, read_table
    from geosleuth.schemas import LatLon

    settings = _load(config)
    try:
        columns = read_table(table)
        paths = columns[find_column(columns, ("image", "path", "file", "filename"), table, "image path")]
        coords = latlon_columns(columns, table)
    except (GeoSleuthError, FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc), EXIT_INPUT) from None
    locator = Locator(settings)
    examples = []
    failed = 0
    for path, (lat, lon) in zip(paths, coords, strict=True):
        src = (images or table.parent) / path
        try:
            _, state = locator.run(str(src))
        except GeoSleuthError as exc:
            failed += 1
            print(f"geosleuth: skipped {src}: {exc}", file=sys.stderr)
            continue
        if state.inputs is not None:
            examples.append((state.inputs, LatLon(lat=float(lat), lon=float(lon))))
    if not examples:
        raise _fail(f"no photo of {table} gave candidates to fit on ({failed} failed)", EXIT_INPUT)
    verifier = locator.planner.verifier
    verifier.fit(examples, hit_km=hit_km, l2=l2)
    verifier.save_weights(out)
    m = verifier.fit_metrics
    print(
        f"fitted on {m['n_examples']} photos ({m['n_hits']} with a candidate within {hit_km:g} km): "
        f"log-loss {m['log_loss_before']:.3f} -> {m['log_loss_after']:.3f}, top-1 "
        f"{m['top1_before']:.2f} -> {m['top1_after']:.2f}; weights in {out}"
    )


def _load(config: Path | None):  # type: ignore[no-untyped-def]
    from geosleuth.config import load_settings
    from geosleuth.errors import ConfigError

    try:
        return load_settings(config)
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None


def _encoder(spec: str | None, settings: Any):  # type: ignore[no-untyped-def]
    from geosleuth.retrieval import make_image_encoder

    spec = spec or settings.retrieval.image_encoder or ("geoclip" if settings.retrieval.geoclip else None)
    if not spec:
        raise _fail(
            "no image encoder: pass --encoder (a CLIP/SigLIP hub id or folder, or 'geoclip') or set "
            "retrieval.image_encoder",
            EXIT_USAGE,
        )
    return make_image_encoder(spec, device=settings.retrieval.device, cache_dir=settings.cache_dir)


def main() -> None:
    """Console-script entry point: never let a traceback reach the user without -vv."""
    try:
        app()
    except KeyboardInterrupt:
        print("geosleuth: interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # pragma: no cover - a bug
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        print(
            f"geosleuth: internal error: {type(exc).__name__}: {exc} (rerun with -vv and report it)",
            file=sys.stderr,
        )
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":  # pragma: no cover
    main()
