"""``geosleuth serve``: the HTTP API (:mod:`geosleuth.service`) on uvicorn, with ``locate``'s options.

The locator is built as ``locate`` builds it (gazetteer included) before the server listens, so
the first request does not pay for it. SIGTERM or Ctrl-C stops the server gracefully: no job image
is started after the signal, those in flight finish and are recorded, open requests are answered
(result streams end once the images in flight are in), and what is left is resumed at the next start.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from geosleuth.cli.common import (
    CacheOpt,
    ConfigOpt,
    IgnoreExifGpsOpt,
    ImageEncoderOpt,
    IndexOpt,
    MinProbabilityOpt,
    OcrOpt,
    OfflineOpt,
    QuietOpt,
    VerboseOpt,
    VlmModelOpt,
    VlmSamplesOpt,
    VlmUrlOpt,
    reports_errors,
    setup_logging,
)
from geosleuth.errors import MissingDependencyError


@reports_errors
def serve(
    host: Annotated[str | None, typer.Option("--host", help="Address to listen on (serve.host).")] = None,
    port: Annotated[int | None, typer.Option("--port", min=0, max=65535, help="Port (serve.port).")] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Photos located at the same time (serve.workers).")
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            help="A SQLite file or postgresql://... URL (default: service.sqlite3 in the cache dir).",
        ),
    ] = None,
    api_key_file: Annotated[
        Path | None, typer.Option("--api-key-file", help="API keys, one a line (a key or sha256:<hex>).")
    ] = None,
    allow_private_urls: Annotated[
        bool | None,
        typer.Option(
            "--allow-private-urls/--public-urls-only",
            help="Fetch photo URLs on private and loopback addresses (closed deployments only).",
        ),
    ] = None,
    max_upload_mb: Annotated[
        float | None, typer.Option("--max-upload-mb", help="Largest upload or fetched photo (MB).")
    ] = None,
    ignore_exif_gps: IgnoreExifGpsOpt = False,
    ocr: OcrOpt = None,
    image_encoder: ImageEncoderOpt = None,
    index: IndexOpt = None,
    vlm_url: VlmUrlOpt = None,
    vlm_model: VlmModelOpt = None,
    vlm_samples: VlmSamplesOpt = None,
    min_probability: MinProbabilityOpt = None,
    offline: OfflineOpt = None,
    config: ConfigOpt = None,
    cache_dir: CacheOpt = None,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Serve the HTTP API: locate, jobs, predictions and reports, chat.

    \b
    Examples:
      geosleuth serve --offline
      geosleuth serve --host 0.0.0.0 --port 8080 --api-key-file keys.txt
      geosleuth serve --database postgresql://geosleuth@db/geosleuth --vlm-url http://127.0.0.1:8000/v1
    """
    setup_logging(verbose, quiet)
    try:
        import uvicorn

        from geosleuth.service.app import create_app
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "fastapi", "serve", "geosleuth serve") from exc
    from geosleuth.cli.locate import _locator, locate_settings
    from geosleuth.service.storage import open_storage

    settings = locate_settings(
        config,
        cache_dir=cache_dir,
        ignore_exif_gps=ignore_exif_gps,
        offline=offline,
        min_probability=min_probability,
        ocr=ocr,
        image_encoder=image_encoder,
        index=index,
        vlm_url=vlm_url,
        vlm_model=vlm_model,
        vlm_samples=vlm_samples,
    ).with_overrides(
        serve={
            "host": host,
            "port": port,
            "workers": workers,
            "database": database,
            "api_key_file": api_key_file,
            "allow_private_urls": allow_private_urls,
            "max_upload_mb": max_upload_mb,
        }
    )
    s = settings.serve
    storage = open_storage(s.database, settings.cache_dir)
    try:
        app = create_app(_locator(settings), storage, settings=settings)
        if not quiet:
            where = "PostgreSQL" if storage.kind == "postgresql" else "SQLite"
            print(
                f"geosleuth: serving on http://{s.host}:{s.port} ({where} storage)",
                file=sys.stderr,
                flush=True,
            )
        service = app.state.service

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                # At the signal, not after the open connections have drained: a client following a
                # job's results would otherwise keep the stopping server at work on the whole job.
                service.drain()
                super().handle_exit(sig, frame)

        server = Server(
            uvicorn.Config(
                app,
                host=s.host,
                port=s.port,
                log_level="warning" if not verbose else "info",
                access_log=verbose > 0,
                timeout_graceful_shutdown=30,
            )
        )
        # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the handler it found:
        # this one, so SIGTERM (a service manager's stop) ends with exit code 0, not a kill.
        previous = signal.signal(signal.SIGTERM, lambda _sig, _frame: None)
        try:
            server.run()
        finally:
            signal.signal(signal.SIGTERM, previous)
        if not quiet:
            print("geosleuth: stopped", file=sys.stderr, flush=True)
    finally:
        storage.close()
