"""``geosleuth vlm``: serve a VLM with vLLM (from its own environment), check OpenAI-compatible servers.

The process control (the command line, starting, waiting for health, detaching, stopping) lives in
:mod:`geosleuth.agents.vlm.serve`; this module parses the flags and prints what happened.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from geosleuth.cli.common import reports_errors
from geosleuth.errors import EXIT_OK, VLMError, exit_code

app = typer.Typer(
    help="Serve a VLM with vLLM (from its own environment) and check OpenAI-compatible servers.",
    no_args_is_help=True,
)


@app.command("serve")
@reports_errors
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

    from geosleuth.agents.vlm import serve as sv
    from geosleuth.errors import ConfigError

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
            raise
        # a dry run shows the command anyway, with the launcher a machine with vLLM would use
        cmd = sv.serve_command(opts, ["vllm", "serve"])
        print(f"# {exc}", file=sys.stderr)
    print(shlex.join(cmd), file=sys.stdout if dry_run else sys.stderr)
    if dry_run:
        return
    log_file = (log_path or sv.default_log_path(port)) if detach else None
    server = sv.start_vllm(cmd, sv.base_url(host, port), timeout_s=timeout, log_file=log_file)
    print(f"vLLM is ready after {server.ready_after_s:.0f} s (pid {server.pid})", file=sys.stderr)
    print(server.url)
    if detach:
        print(f"logs: {log_file}; stop it with: kill {server.pid}", file=sys.stderr)
        return
    raise typer.Exit(server.wait())


@app.command("check")
@reports_errors
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
    structured output was honoured and how long it took. Exit 1 when no usable answer came back.

    \b
    Examples:
      geosleuth vlm check http://127.0.0.1:8000/v1
      geosleuth vlm check http://gpu1:8000/v1 --image street.jpg --samples 4 --json
    """
    import dataclasses

    from geosleuth.agents.vlm.serve import check_server
    from geosleuth.errors import CorruptImageError
    from geosleuth.tools.image import open_image

    img = None
    if image is not None:
        loaded = open_image(str(image))
        if loaded.rgb is None:
            raise CorruptImageError(str(image), loaded.pixel_error or "no pixels could be decoded")
        img = loaded.rgb
    report = check_server(url, model, image=img, samples=samples, timeout_s=timeout, max_tokens=max_tokens)
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
    raise typer.Exit(EXIT_OK if report.ok else exit_code(VLMError))
