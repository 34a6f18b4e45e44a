"""``geosleuth index``: build, inspect and search neighbour indexes of geotagged photos."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from geosleuth.cli.common import ConfigOpt, VerboseOpt, reports_errors, setup_logging

if TYPE_CHECKING:
    from geosleuth.config import Settings
    from geosleuth.retrieval.base import ImageEncoder

app = typer.Typer(
    help="Build, inspect and search neighbour indexes of geotagged photos.", no_args_is_help=True
)


class LayoutChoice(StrEnum):
    AUTO = "auto"
    FOLDER = "folder"
    TABLE = "table"
    MP16 = "mp16"


class KindChoice(StrEnum):
    AUTO = "auto"
    FLAT = "flat"
    IVFPQ = "ivfpq"


EncoderOpt = Annotated[
    str | None,
    typer.Option(
        "--encoder",
        help="Image encoder: a CLIP/SigLIP hub id or folder, 'geoclip', or 'geoclip:/path/to/clip' "
        "(default: retrieval.image_encoder from the settings).",
    ),
]


@app.command("build")
@reports_errors
def index_build(
    source: Annotated[
        str, typer.Argument(help="A folder of EXIF-GPS photos, a CSV/Parquet table, or MP16-Pro's CSV.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the index into.")],
    encoder: EncoderOpt = None,
    layout: Annotated[
        LayoutChoice, typer.Option("--layout", help="How SOURCE is laid out.")
    ] = LayoutChoice.AUTO,
    images: Annotated[
        Path | None,
        typer.Option("--images", help="Where table/MP16 image paths are relative to (folder or .tar)."),
    ] = None,
    kind: Annotated[
        KindChoice, typer.Option("--kind", help="flat (exact) or ivfpq (compressed); auto picks by size.")
    ] = KindChoice.AUTO,
    shard_size: Annotated[
        int, typer.Option("--shard-size", min=1, help="Photos per resumable shard.")
    ] = 2048,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Photos per encoder batch.")] = 32,
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard an earlier, different build in --out.")
    ] = False,
    config: ConfigOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Embed geotagged photos and build a searchable index. A killed build resumes where it stopped.

    \b
    Examples:
      geosleuth index build photos/ --out idx --encoder openai/clip-vit-large-patch14
      geosleuth index build MP16_Pro_places365.csv --images mp-16-images.tar --out mp16 --encoder geoclip
    """
    setup_logging(verbose, False)
    from geosleuth.config import load_settings
    from geosleuth.retrieval.index import build_index
    from geosleuth.retrieval.sources import open_source

    settings = load_settings(config)
    enc = image_encoder(encoder, settings)
    src = open_source(source, layout=layout.value, images=images)
    print(
        f"indexing {len(src.items)} photos from {source} ({src.layout}) with {enc.name} into {out}",
        file=sys.stderr,
    )
    report = build_index(
        src,
        enc,
        out,
        kind=kind.value,
        shard_size=shard_size,
        batch_size=batch_size,
        restart=restart,
    )
    skipped = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in sorted(report.skipped.items())) or "none"
    print(
        f"indexed {report.indexed} photos ({report.kind}) in {report.seconds:.1f} s; "
        f"skipped: {skipped} (details in {out / 'skipped.jsonl'}); "
        f"{report.shards_reused} of {report.shards_total} shards reused from an earlier run"
    )


@app.command("info")
@reports_errors
def index_info_cmd(
    folder: Annotated[Path, typer.Argument(help="An index folder.")],
    verify: Annotated[bool, typer.Option("--verify", help="Check every file against its checksum.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Show what built an index, its size, what was skipped, and whether it is intact.

    \b
    Examples:
      geosleuth index info idx --verify
    """
    from geosleuth.retrieval.index import NeighbourIndex, index_info

    info = index_info(folder)
    if info.get("status") == "complete":
        NeighbourIndex(folder, verify=verify).close()
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


@app.command("search")
@reports_errors
def index_search(
    folder: Annotated[Path, typer.Argument(help="An index folder.")],
    image: Annotated[str, typer.Argument(help="The query photo.")],
    k: Annotated[int, typer.Option("-k", min=1, help="Neighbours of each kind.")] = 10,
    encoder: EncoderOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print neighbours as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """The most similar and the most dissimilar indexed photos to IMAGE, with their places.

    The encoder defaults to the one that built the index.

    \b
    Examples:
      geosleuth index search idx street.jpg -k 5
    """
    setup_logging(0, False)
    from geosleuth.config import load_settings
    from geosleuth.errors import CorruptImageError
    from geosleuth.gazetteer import Gazetteer
    from geosleuth.retrieval.index import NeighbourIndex
    from geosleuth.tools.image import open_image

    settings = load_settings(config)
    idx = NeighbourIndex(folder, gazetteer=Gazetteer(settings.cache_dir))
    enc = image_encoder(encoder or idx.encoder_name, settings)
    idx.check_encoder(enc)
    loaded = open_image(
        image, max_pixels=settings.max_image_pixels, max_bytes=settings.max_file_bytes, draft_side=448
    )
    if loaded.rgb is None:
        raise CorruptImageError(image, loaded.pixel_error or "no pixels could be decoded")
    result = idx.search(enc.encode([loaded.rgb]), k)[0]
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


def image_encoder(spec: str | None, settings: Settings) -> ImageEncoder:
    """The encoder SPEC names, else the settings' one; a :class:`ConfigError` when neither does."""
    from geosleuth.errors import ConfigError
    from geosleuth.retrieval import make_image_encoder

    spec = spec or settings.retrieval.image_encoder or ("geoclip" if settings.retrieval.geoclip else None)
    if not spec:
        raise ConfigError(
            "no image encoder: pass --encoder (a CLIP/SigLIP hub id or folder, or 'geoclip') or set "
            "retrieval.image_encoder"
        )
    return make_image_encoder(spec, device=settings.retrieval.device, cache_dir=settings.cache_dir)
