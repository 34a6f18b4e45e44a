"""``geosleuth config``: the effective settings and where each came from."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Annotated, Any

import typer

from geosleuth.cli.common import CacheOpt, ConfigOpt, reports_errors, setup_logging

app = typer.Typer(help="Show the effective settings.", no_args_is_help=True)


@app.command("show")
@reports_errors
def config_show(
    config: ConfigOpt = None,
    cache_dir: CacheOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the settings as JSON.")] = False,
    sources: Annotated[
        bool,
        typer.Option(
            "--sources", help='With --json: {"settings": ..., "sources": {"ocr.engine": "env", ...}}.'
        ),
    ] = False,
) -> None:
    """Print the effective settings, each with where its value came from: a flag, an environment
    variable (named), the config file (named at the top), or the default.

    Precedence, highest first: flags, GEOSLEUTH_* environment variables, the config file, defaults.
    A GEOSLEUTH_* variable that names no setting is reported (with the closest one) and ignored.

    \b
    Examples:
      geosleuth config show
      GEOSLEUTH_OCR__ENGINE=rapidocr geosleuth config show --json --sources
    """
    setup_logging(0, False)
    from geosleuth.config import env_name, find_config_file, load_settings, redact_url, setting_sources

    settings = load_settings(config, cache_dir=cache_dir)
    data = settings.model_dump(mode="json")
    if data["vlm"].get("api_key"):
        data["vlm"]["api_key"] = "**********"
    if data["tools"].get("searxng_url"):
        data["tools"]["searxng_url"] = redact_url(data["tools"]["searxng_url"])
    origin = setting_sources(config, cache_dir=cache_dir)
    if json_out:
        print(json.dumps({"settings": data, "sources": origin} if sources else data, indent=2))
        return
    path = find_config_file(config)
    print(f"# config file: {path if path else '(none)'}")
    print("# precedence: flags > GEOSLEUTH_* environment > config file > defaults")
    print("# each value's source follows it: default, file, env ($VARIABLE) or flag")

    def note(dotted: str) -> str:
        source = origin.get(dotted, "default")
        if source != "env":
            return source
        var = env_name(dotted)
        return f"env (${var if var in os.environ else env_name(dotted.split('.')[0])})"

    _print_toml(data, note)


def _print_toml(data: dict[str, Any], note: Callable[[str], str], prefix: str = "") -> None:
    # Sections are the top level's tables; a mapping inside one (verifier.weights) is one value.
    scalars = {k: v for k, v in data.items() if prefix or not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if not prefix and isinstance(v, dict)}
    if prefix:
        print(f"\n[{prefix}]")
    for k, v in scalars.items():
        dotted = f"{prefix}.{k}" if prefix else k
        line = f"{k} = {json.dumps(v)}" if v is not None else f"# {k} = (unset)"
        print(f"{line}  # {note(dotted)}")
    for k, v in tables.items():
        _print_toml(v, note, f"{prefix}.{k}" if prefix else k)
