"""``geosleuth mcp``: the MCP server (:mod:`geosleuth.integrations.mcp`), with ``locate``'s options.

A desktop assistant spawns it on demand, so it answers ``tools/list`` before anything heavy is
built: the locator, its gazetteer and the database are made on the first tool call. Over stdio
(the default) the caller is this machine's user, so ``image`` may be a local file; over ``--http``
local paths are refused unless ``--allow-local-files``.
"""

from __future__ import annotations

import sys
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

DEFAULT_MCP_PORT = 8765


@reports_errors
def mcp(
    http: Annotated[
        bool, typer.Option("--http", help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio.")
    ] = False,
    host: Annotated[
        str | None, typer.Option("--host", help="Address to listen on with --http (serve.host).")
    ] = None,
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port to listen on with --http.")
    ] = DEFAULT_MCP_PORT,
    allow_local_files: Annotated[
        bool,
        typer.Option(
            "--allow-local-files",
            help="With --http, let callers name files on this machine (stdio always may).",
        ),
    ] = False,
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            help="Where predictions and chats are kept: a SQLite file or postgresql://... URL "
            "(default: the HTTP service's, service.sqlite3 in the cache dir).",
        ),
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
    """Serve geosleuth's tools (locate, explain, ask) over MCP, for assistants and agents.

    \b
    Examples:
      geosleuth mcp --offline
      geosleuth mcp --vlm-url http://127.0.0.1:8000/v1
      geosleuth mcp --http --port 8765
    """
    setup_logging(verbose, quiet)
    from geosleuth.cli.locate import locate_settings
    from geosleuth.integrations.mcp import create_server, run_http, run_stdio
    from geosleuth.integrations.tools import IntegrationContext

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
    ).with_overrides(serve={"host": host})
    ctx = IntegrationContext(settings, allow_local_files=allow_local_files or not http, database=database)
    try:
        server = create_server(ctx)
        if http:
            where = settings.serve.host
            if not quiet:
                print(f"geosleuth: MCP over HTTP at http://{where}:{port}/mcp", file=sys.stderr, flush=True)
            run_http(server, host=where, port=port, log_level="info" if verbose else "warning")
        else:
            run_stdio(server)
    finally:
        ctx.close()
