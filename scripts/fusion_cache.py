"""Run the evidence pipeline once over labelled photos and keep what the fusion saw, for refitting.

Per photo it stores the hard evidence (before fusion's own checks), the place-name matches, the EXIF
report and the true position, pickled in one file, so ``scripts/fit_fusion.py`` can re-run the
fusion and the verifier under other priors and weights in seconds instead of re-reading every photo.

    PYTHONPATH=src python scripts/fusion_cache.py OUT.pkl [--dev DIR] [--exif DIR ...] [--limit N]

``--dev``: a folder with ``labels.csv`` (file,lat,lon) such as ``../shared/data/im2gps3k-dev``;
``--exif``: folders with ``gps_index.csv`` (path,lat,lon) whose photos are run with their GPS
removed (:func:`geosleuth.eval.strip.strip_gps`), keeping the clock and the rest of the metadata.
``--reuse RUN``: an earlier ``geosleuth eval run`` folder of the same photos; those its
predictions.jsonl shows with no evidence and no text at all are stored empty without running them
again (most Im2GPS3k photos: a 4x shorter cache on 2 cores). Run it again without ``--reuse`` after
OCR changes.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import pickle
import sys
import time
from pathlib import Path
from typing import Any


def _rows(args: argparse.Namespace) -> list[tuple[str, Path, float, float, bool]]:
    rows: list[tuple[str, Path, float, float, bool]] = []
    if args.dev:
        with open(Path(args.dev) / "labels.csv", newline="") as f:
            for r in csv.DictReader(f):
                rows.append(("dev", Path(args.dev) / r["file"], float(r["lat"]), float(r["lon"]), False))
    for folder in args.exif or []:
        with open(Path(folder) / "gps_index.csv", newline="") as f:
            for r in csv.DictReader(f):
                rows.append(
                    ("exif", Path(folder) / "images" / r["path"], float(r["lat"]), float(r["lon"]), True)
                )
    return rows[: args.limit] if args.limit else rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--dev")
    ap.add_argument("--exif", action="append")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--reuse", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from geosleuth.agents.nodes.verify import SOFT_KINDS
    from geosleuth.agents.pipeline import Locator
    from geosleuth.config import load_settings
    from geosleuth.errors import GeoSleuthError
    from geosleuth.eval.strip import strip_gps

    settings = load_settings().with_overrides(offline=True)
    locator = Locator(settings)
    out: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    rows = _rows(args)
    empty: set[str] = set()
    if args.reuse:
        with open(args.reuse / "predictions.jsonl") as f:
            for line in f:
                p = json.loads(line).get("prediction")
                if p and not p["evidence"] and not p["text_lines"]:
                    empty.add(Path(p["source"]).name)
    for i, (group, path, lat, lon, strip) in enumerate(rows):
        if group == "dev" and path.name in empty:
            out.append(
                {
                    "group": group,
                    "name": path.name,
                    "truth": (lat, lon),
                    "evidence": [],
                    "matches": [],
                    "exif": None,
                    "lines": 0,
                    "texts": [],
                }
            )
            continue
        try:
            source: Any = strip_gps(path.read_bytes(), path.name) if strip else str(path)
            _, state = locator.run(source, name=path.name)
        except (GeoSleuthError, OSError) as exc:
            print(f"skip {path.name}: {exc}", file=sys.stderr)
            continue
        evidence = [e for e in state.evidence if e.kind not in SOFT_KINDS and e.tool != "verifier"]
        out.append(
            {
                "group": group,
                "name": path.name,
                "truth": (lat, lon),
                "evidence": evidence,
                "matches": state.matches,
                "exif": state.exif,
                "lines": len(state.lines),
                "texts": list(state.lines),
            }
        )
        if (i + 1) % 25 == 0:
            print(f"{i + 1}/{len(rows)} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    args.out.write_bytes(pickle.dumps(out))
    print(f"{args.out}: {len(out)} photos", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
