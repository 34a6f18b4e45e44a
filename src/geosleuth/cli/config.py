"""``geosleuth config``: the effective settings and where they came from."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from geosleuth.cli.common import ConfigOpt, reports_errors

app = typer.Typer(help="Show the effective settings.", no_args_is_help=True)


@app.command("show")
@reports_errors
def config_show(
    config: ConfigOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Print the effective settings and where the config file was found.

    Precedence, highest first: flags, GEOSLEUTH_* environment variables, the config file, defaults.

    \b
    Examples:
      geosleuth config show
      GEOSLEUTH_OCR__ENGINE=rapidocr geosleuth config show --json
    """
    from geosleuth.config import find_config_file, load_settings, redact_url

    settings = load_settings(config)
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
