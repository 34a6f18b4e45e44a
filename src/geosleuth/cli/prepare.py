"""``geosleuth prepare``: build the offline data now, as an install step, not on the first locate."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from geosleuth.cli.common import CacheOpt, ConfigOpt, QuietOpt, reports_errors, setup_logging


@reports_errors
def prepare(
    config: ConfigOpt = None,
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    check: Annotated[
        bool, typer.Option("--check", help="Only say whether it is built (exit 1 when not); build nothing.")
    ] = False,
) -> None:
    """Build the offline gazetteer index and the land/ocean grid in the cache directory now, so the
    first `locate` after an install does not pay for them (about 20 s, once per install and per
    upgrade of the packages they come from). Run it after `pip install`, in a container's build,
    or before a shell loop or an MCP client starts one process per photo.

    \b
    Examples:
      pip install 'geosleuth[all]' && geosleuth prepare
      GEOSLEUTH_CACHE_DIR=/srv/geosleuth geosleuth prepare --check
    """
    setup_logging(0, quiet)
    from geosleuth.config import load_settings
    from geosleuth.gazetteer import Gazetteer

    settings = load_settings(config, cache_dir=cache_dir)
    gazetteer = Gazetteer(settings.cache_dir)
    files = (gazetteer.index_path, gazetteer.arrays_path, gazetteer.land_mask_path)
    if check:
        if not gazetteer.is_built:
            missing = ", ".join(p.name for p in files if not p.exists())
            typer.echo(f"not built in {settings.cache_dir}: {missing} (run `geosleuth prepare`)", err=True)
            raise typer.Exit(1)
        typer.echo(f"built in {settings.cache_dir}")
        return
    already = gazetteer.is_built
    t0 = time.perf_counter()
    gazetteer.ensure_built()
    seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in files) / 1e6
    if already:
        typer.echo(f"already built in {settings.cache_dir} ({size:.0f} MB)")
    else:
        typer.echo(f"built in {settings.cache_dir} in {seconds:.1f} s ({size:.0f} MB)")
