"""A longer fuzzing run than the tests' (tests/test_fuzz.py): N random examples per target, with
the outcomes counted and every crash kept.

    .venv/bin/python scripts/fuzz.py [--examples 2000] [--targets loader exif-mutated ...] [--out DIR]

Targets (see geosleuth.testing.fuzz): ``loader`` (fixture photos, mutated), ``exif-mutated`` (the
EXIF blocks of the fixtures and of ../shared/data/exif-photos when present, mutated, in a small
JPEG), ``exif-generated`` (piexif blocks with values of every wrong shape), ``exif-files`` (whole
fixture photos with metadata, mutated), ``parser`` (VLM answers). Unlike the tests it is not
derandomised: each run explores new inputs. A crash (anything but the project's typed errors, or a
broken invariant) is grouped by exception and place; one input per group is written to --out to
replay, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from geosleuth.testing import fuzz

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SHARED = ROOT.parent / "shared" / "data" / "exif-photos"
IMAGES = [
    *sorted(p.name for p in FIXTURES.glob("exif_*")),
    *sorted(p.name for p in FIXTURES.glob("mode_*")),
    "sign_fr_paris.jpg",
    "truncated_with_gps.jpg",
    "blank.jpg",
]


def exif_blocks_of(paths: list[Path]) -> list[bytes]:
    """The raw EXIF blocks of photos (headers only are read)."""
    from PIL import Image

    from geosleuth.tools.image import _register_heif

    _register_heif()
    blocks = []
    for path in paths:
        try:
            with Image.open(path) as img:
                raw = img.info.get("exif")
        except Exception:  # a seed that cannot be read is not a seed
            continue
        if isinstance(raw, bytes) and raw:
            blocks.append(raw)
    return blocks


def targets() -> dict[str, tuple[st.SearchStrategy[Any], Callable[..., str], bool]]:
    """name -> (inputs, target, whether it needs the gazetteer)."""
    photos = [(FIXTURES / n).read_bytes() for n in IMAGES if (FIXTURES / n).exists()]
    with_metadata = [(FIXTURES / n).read_bytes() for n in IMAGES if n.startswith("exif_")]
    real = sorted(
        p for p in SHARED.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".heic", ".tif", ".tiff")
    )
    blocks = exif_blocks_of([*(FIXTURES / n for n in IMAGES), *real])
    return {
        "loader": (fuzz.mutated(photos), fuzz.load_image, False),
        "exif-mutated": (fuzz.mutated(blocks, max_ops=3).map(fuzz.jpeg_with_exif), fuzz.read_metadata, True),
        "exif-generated": (fuzz.exif_blocks().map(fuzz.jpeg_with_exif), fuzz.read_metadata, True),
        "exif-files": (fuzz.mutated(with_metadata, max_ops=3), fuzz.read_metadata, True),
        "parser": (fuzz.vlm_answers(), fuzz.parse_answer, False),
    }


def run(
    name: str,
    inputs: st.SearchStrategy[Any],
    target: Callable[..., str],
    extra: tuple[Any, ...],
    n: int,
    out: Path,
) -> int:
    outcomes: Counter[str] = Counter()
    crashes: dict[str, int] = {}
    t0 = time.perf_counter()

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(value=inputs)
    def one(value: Any) -> None:
        try:
            outcomes[target(value, *extra)] += 1
        except Exception as exc:  # the point of the run: catch everything, group it, go on
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            key = f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno}"
            outcomes["CRASH"] += 1
            if key not in crashes:
                crashes[key] = 0
                suffix = ".txt" if isinstance(value, str) else ".bin"
                path = out / f"{name}-{len(crashes)}{suffix}"
                path.write_bytes(value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value)
                print(f"  crash: {key}: {str(exc)[:300]} (input: {path})", flush=True)
            crashes[key] += 1

    one()
    total = sum(outcomes.values())
    seconds = time.perf_counter() - t0
    summary = ", ".join(f"{k} {v}" for k, v in outcomes.most_common())
    print(
        f"{name}: {total} examples in {seconds:.0f} s, {outcomes['CRASH']} crashes ({len(crashes)} distinct); {summary}",
        flush=True,
    )
    return outcomes["CRASH"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=2000, help="examples per target")
    ap.add_argument("--targets", nargs="+", help="default: all")
    ap.add_argument("--out", type=Path, default=ROOT / ".cache" / "fuzz", help="where crashing inputs go")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    # Pillow logs at error level what it then raises (the targets count that as a typed refusal).
    logging.getLogger("PIL").setLevel(logging.CRITICAL)
    all_targets = targets()
    chosen = args.targets or list(all_targets)
    unknown = set(chosen) - set(all_targets)
    if unknown:
        raise SystemExit(f"unknown targets {sorted(unknown)}; known: {', '.join(all_targets)}")
    gazetteer = None
    crashes = 0
    for name in chosen:
        inputs, target, needs_gazetteer = all_targets[name]
        if needs_gazetteer and gazetteer is None:
            from geosleuth.config import load_settings
            from geosleuth.gazetteer import Gazetteer

            gazetteer = Gazetteer(load_settings().cache_dir)
        crashes += run(name, inputs, target, (gazetteer,) if needs_gazetteer else (), args.examples, args.out)
    print(f"total: {crashes} crashes")
    sys.exit(1 if crashes else 0)


if __name__ == "__main__":
    main()
