"""Evidence-only accuracy on the reference photos with their EXIF GPS removed (issue 5).

    .venv/bin/python bench/exif_strip_eval.py [--limit N] [--ocr auto] [--json out.json]

Each photo in ../shared/data/exif-photos/*/gps_index.csv is handed to the locator as bytes whose
EXIF keeps everything but the GPS IFD (and whose XMP is dropped), so the capture time and UTC
offset still count. Settings: offline (no network, no VLM, no image encoder). Accuracy counts an
"insufficient evidence" answer as a miss; distances are WGS-84 geodesic, `d <= threshold`.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import statistics
import sys
from pathlib import Path

from geosleuth.agents.pipeline import Locator, build_deps
from geosleuth.config import load_settings
from geosleuth.errors import ImageInputError
from geosleuth.eval.strip import strip_gps_image
from geosleuth.gazetteer import Gazetteer
from geosleuth.geo import geodesic_km
from geosleuth.schemas import Candidate, EvidenceKind
from geosleuth.tools.exif import read_exif
from geosleuth.tools.image import LoadedImage, open_image

ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS = (1, 25, 200, 750, 2500)
TIME_KINDS = (EvidenceKind.TIMESTAMP, EvidenceKind.UTC_OFFSET)


def load_truth(shared: Path) -> list[tuple[Path, float, float]]:
    """(image path, lat, lon) for every row of each folder's gps_index.csv with a usable position."""
    rows = []
    for index in sorted(shared.glob("*/gps_index.csv")):
        for r in csv.DictReader(index.open(newline="")):
            lat, lon = float(r["lat"] or "nan"), float(r["lon"] or "nan")
            if -90 <= lat <= 90 and -180 <= lon <= 180:  # also drops NaN
                rows.append((index.parent / "images" / r["path"], lat, lon))
    return rows


def time_lost(before: LoadedImage, after: LoadedImage, gazetteer: Gazetteer) -> tuple[bool, str]:
    """Whether GPS evidence survived, and which usable time/offset evidence was lost."""
    old, new = read_exif(before, gazetteer), read_exif(after, gazetteer)
    leak = any(e.kind == EvidenceKind.GPS and e.usable for e in new.evidence) or new.gps is not None
    kept = {e.id for e in new.evidence if e.kind in TIME_KINDS and e.usable}
    lost = []
    for e in old.evidence:
        if e.kind in TIME_KINDS and e.usable and e.id not in kept:
            from_gps = old.offset_source and "GPS" in old.offset_source and e.kind == EvidenceKind.UTC_OFFSET
            lost.append(f"{e.id} (was from GPS time: expected)" if from_gps else e.id)
    return leak, ", ".join(lost)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, help="only the first N photos")
    ap.add_argument("--ocr", default="auto", help="OCR engine (auto, hybrid, rapidocr, tesseract, none)")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data" / "exif-photos")
    ap.add_argument("--json", type=Path, help="write per-image rows here")
    args = ap.parse_args()
    print(f"$ .venv/bin/python bench/exif_strip_eval.py {shlex.join(sys.argv[1:])}\n")

    locator = Locator(deps=build_deps(load_settings(offline=True, ocr={"engine": args.ocr})))
    gaz = locator.deps.gazetteer
    truth = load_truth(args.shared)[: args.limit]
    rows, preds = [], []
    for n, (path, lat, lon) in enumerate(truth, 1):
        name = str(path.relative_to(args.shared))
        print(f"[{n}/{len(truth)}] {name}", file=sys.stderr)
        row: dict = {"file": name, "truth": [lat, lon], "error_km": None, "level": "none"}
        try:
            raw = path.read_bytes()
            original = open_image(raw, name=name)
            stripped = strip_gps_image(raw, original)  # geosleuth.eval.strip: GPS IFD and XMP removed
            data, row["stripped"] = stripped.data, stripped.method
            row["gps_leak"], row["time_lost"] = time_lost(original, open_image(data, name=name), gaz)
            p = locator.locate(data, name=str(path))
        except (ImageInputError, ValueError) as exc:
            rows.append(row | {"status": "error", "error": str(exc), "gps_leak": False, "time_lost": ""})
            continue
        best, top = p.best, (p.candidates[0] if p.candidates else None)
        row |= {
            "prediction": [best.point.lat, best.point.lon] if best else None,
            "status": p.status,
            "confidence": p.confidence,
            "level": str(p.confidence_level),
            "error_km": km(lat, lon, best),
            "basis": p.basis,
            # the ranked first place even when the answer abstains: is the abstention justified?
            "top": f"{top.label} [{', '.join(top.evidence_ids)}] p={top.probability:.2f}" if top else None,
            "top_error_km": km(lat, lon, top),
            "explanation": p.explanation,
        }
        rows.append(row)
        preds.append(p)
    report(rows, preds)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))


def km(lat: float, lon: float, c: Candidate | None) -> float | None:
    return None if c is None else float(geodesic_km(lat, lon, c.point.lat, c.point.lon))


def acc(rows: list[dict], limit: float, key: str = "error_km") -> str:
    hits = sum(r.get(key) is not None and r[key] <= limit for r in rows)
    return f"{hits}/{len(rows)} ({100 * hits / len(rows):.0f}%)" if rows else "-"


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def report(rows: list[dict], preds: list) -> None:
    print(
        "| file | truth | status | level (p) | error km | first-ranked place | its error km | EXIF after strip |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        kept = ("GPS LEAK; " * r["gps_leak"]) + (f"lost {r['time_lost']}" if r["time_lost"] else "ok")
        print(
            f"| {r['file']} | {r['truth'][0]:.3f},{r['truth'][1]:.3f} | {r['status']} | "
            f"{r['level']} ({fmt(r.get('confidence'), '.2f')}) | {fmt(r['error_km'])} | "
            f"{r.get('top') or r.get('error') or '-'} | {fmt(r.get('top_error_km'))} | {kept} |"
        )
    located = [r for r in rows if r["error_km"] is not None]
    errs = [r["error_km"] for r in located]
    print(
        f"\n**{len(rows)} photos**: {len(located)} located, "
        f"{sum(r['status'] == 'insufficient_evidence' for r in rows)} insufficient evidence, "
        f"{sum(r['status'] == 'error' for r in rows)} errors, "
        f"{sum(r['gps_leak'] for r in rows)} GPS leaks, "
        f"{sum(r.get('basis') == 'exif-gps' for r in rows)} answers based on EXIF GPS; "
        f"median error over located: {fmt(statistics.median(errs) if errs else None)} km\n"
    )
    print("| set | n | " + " | ".join(f"≤{t} km" for t in THRESHOLDS) + " |")
    print("|---|---|" + "---|" * len(THRESHOLDS))
    for label, subset, key in (
        ("all (abstain = miss)", rows, "error_km"),
        ("located only", located, "error_km"),
        ("first-ranked place, forced", rows, "top_error_km"),
    ):
        print(f"| {label} | {len(subset)} | " + " | ".join(acc(subset, t, key) for t in THRESHOLDS) + " |")
    print("\n| confidence level | n | ≤25 km | ≤750 km |\n|---|---|---|---|")
    for level in ("high", "medium", "low", "none"):
        subset, key = (
            [r for r in rows if r["level"] == level],
            "error_km" if level != "none" else "top_error_km",
        )
        label = "none (abstained: first-ranked place)" if level == "none" else level
        print(f"| {label} | {len(subset)} | {acc(subset, 25, key)} | {acc(subset, 750, key)} |")
    stages = sorted({k for p in preds for k in p.timings}, key=lambda k: (k == "total", k))
    print("\n| stage | n | median s |\n|---|---|---|")
    for k in stages:
        vals = [p.timings[k] for p in preds if k in p.timings]
        print(f"| {k} | {len(vals)} | {statistics.median(vals):.3f} |")
    vlm = [len(p.vlm.calls) if p.vlm else 0 for p in preds] or [0]
    tools = [sum(s.name.startswith("investigate#") for s in p.stages) for p in preds] or [0]
    print(f"\nCalls per image: VLM mean {statistics.mean(vlm):.2f} (max {max(vlm)}), ", end="")
    print(f"tool rounds mean {statistics.mean(tools):.2f} (max {max(tools)})")


if __name__ == "__main__":
    main()
