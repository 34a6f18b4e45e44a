"""What a report adds to `locate`: seconds to locate each photo vs seconds to render its HTML
report (photo embedded), after one warm-up (the basemap is read once per process), and sizes.

    python bench/report_overhead.py [--photos ../shared/data/exif-photos] [--limit 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from geosleuth.agents.pipeline import Locator
from geosleuth.config import load_settings
from geosleuth.report import render_report
from geosleuth.report.basemap import load_basemap
from geosleuth.tools.image import IMAGE_SUFFIXES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--photos", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/exif-photos"
    )
    ap.add_argument("--limit", type=int, default=20)
    args = ap.parse_args()
    photos = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[: args.limit]
    locator = Locator(settings=load_settings(offline=True, use_exif_gps=False))
    t0 = time.perf_counter()
    load_basemap()
    first = time.perf_counter() - t0
    locate_s, report_s, sizes = [], [], []
    for path in photos:
        try:
            t0 = time.perf_counter()
            pred, state = locator.run(str(path))
            t1 = time.perf_counter()
            page = render_report(pred, "html", image=state.image.rgb)
            t2 = time.perf_counter()
        except Exception as exc:  # a photo the pipeline refuses is not this benchmark's subject
            print(f"skipped {path.name}: {exc}")
            continue
        locate_s.append(t1 - t0)
        report_s.append(t2 - t1)
        sizes.append(len(page.encode()))
    ratios = [r / loc for r, loc in zip(report_s, locate_s, strict=True)]
    print(f"{len(locate_s)} photos; basemap first load {first:.2f} s (once per process)")
    print(
        f"locate median {statistics.median(locate_s):.3f} s; report median {statistics.median(report_s):.3f} s"
    )
    print(f"report / locate: median {statistics.median(ratios):.1%}, max {max(ratios):.1%}")
    print(f"report size: median {statistics.median(sizes) / 1e6:.2f} MB, max {max(sizes) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
