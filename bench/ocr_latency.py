"""OCR latency of evidence-only `locate`, warm, one process: median and p90 of the whole `locate` and
of its OCR stage, on (a) a sample of the Im2GPS3k dev photos and (b) text-rich photos: the sign
fixtures and a sign in each of the world's major scripts, rendered here with Noto fonts.

    PYTHONPATH=src .venv/bin/python bench/ocr_latency.py [--dev-sample 60] [--repeats 1] \\
        [--set ocr.languages='["deu","eng","fra","jpn","spa"]'] [--json out.json]

``--set`` takes dotted settings (as ``geosleuth config``), e.g. ``ocr.tesseract_api=false`` for
the program-per-call path, ``ocr.tiles=auto`` with the tiled second look. Prints one line per
set, and the text lines read per script sign with whether the expected word was read.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from geosleuth.agents.pipeline import Locator, build_deps
from geosleuth.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT.parent / "shared" / "data" / "im2gps3k-dev" / "images"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def nested(pairs: list[str]) -> dict[str, Any]:
    """``["ocr.languages=[\"eng\"]", "ocr.zoom=false"]`` -> ``{"ocr": {"languages": ["eng"], ...}}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def time_set(locator: Locator, paths: list[Path], repeats: int) -> dict[str, Any]:
    total, ocr, n_lines = [], [], []
    for path in paths:
        runs, ocr_runs = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            pred = locator.locate(path)
            runs.append(time.perf_counter() - t0)
            ocr_runs.append(pred.timings.get("ocr", 0.0))
        total.append(statistics.median(runs))
        ocr.append(statistics.median(ocr_runs))
        n_lines.append(len(pred.text_lines))
    return {
        "n": len(paths),
        "median_s": round(statistics.median(total), 4),
        "p90_s": round(percentile(total, 0.9), 4),
        "ocr_median_s": round(statistics.median(ocr), 4),
        "ocr_p90_s": round(percentile(ocr, 0.9), 4),
        "text_lines": sum(n_lines),
        "photos_with_text": sum(1 for n in n_lines if n),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dev", type=Path, default=DEV)
    ap.add_argument("--dev-sample", type=int, default=60, help="dev photos to time (seeded sample)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], help="dotted setting=value (JSON or text)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT / "tests"))
    from data import SCRIPT_SIGNS, script_sign

    overrides = nested(args.set)
    settings = load_settings(offline=True, **overrides)
    locator = Locator(deps=build_deps(settings))
    locator.deps.gazetteer.ensure_built()
    fixtures = ROOT / "tests" / "fixtures"
    signs = [*sorted(fixtures.glob("sign_*.jpg")), fixtures / "shop_es_phone.jpg"]
    signs = [p for p in signs if "injection" not in p.name]
    tmp = Path(tempfile.mkdtemp(prefix="ocr-bench-"))
    rendered: dict[str, Path] = {}
    for script in SCRIPT_SIGNS:
        try:
            img = script_sign(script)
        except FileNotFoundError as exc:
            print(f"skip {script}: {exc}", file=sys.stderr)
            continue
        rendered[script] = tmp / f"sign_{script}.png"
        img.save(rendered[script])
    locator.locate(signs[0])  # warm up: load OCR models, open the index
    for p in rendered.values():  # and each script's packs, so the timing is warm as promised
        locator.locate(p)

    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()} python {platform.python_version()}",
        "ocr": locator.deps.ocr.version() if locator.deps.ocr else "none",
        "settings": overrides,
        "repeats": args.repeats,
    }
    results["signs"] = time_set(locator, [*signs, *rendered.values()], args.repeats)
    reads = {}
    for script, p in rendered.items():
        pred = locator.locate(p)
        stage = pred.stage("ocr")
        text = "\n".join(ln.text for ln in pred.text_lines)
        want = SCRIPT_SIGNS[script][2]
        reads[script] = {
            "read": all(w in text for w in want),
            "text": text,
            "ocr": stage.detail if stage else "",
        }
    results["script_signs"] = reads
    if args.dev.is_dir():
        photos = sorted(args.dev.glob("*.jpg"))
        photos = random.Random(0).sample(photos, min(args.dev_sample, len(photos)))
        locator.locate(photos[0])
        results["dev"] = time_set(locator, photos, args.repeats)

    for key in ("signs", "dev"):
        if key in results:
            r = results[key]
            print(
                f"{key:6s} n={r['n']:3d}  locate median {r['median_s'] * 1000:7.1f} ms  p90 {r['p90_s'] * 1000:7.1f} ms"
                f"  | ocr median {r['ocr_median_s'] * 1000:7.1f} ms  p90 {r['ocr_p90_s'] * 1000:7.1f} ms"
                f"  | {r['text_lines']} lines in {r['photos_with_text']} photos"
            )
    for script, r in reads.items():
        print(f"  {script}: {'read' if r['read'] else 'NOT read'}  {r['text']!r}  [{r['ocr']}]")
    print(f"(ocr: {results['ocr']}; settings {overrides or 'default'}; {results['machine']})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
