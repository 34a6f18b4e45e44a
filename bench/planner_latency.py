"""Per-image latency of each planner stage, and the calls made per image, with tiny models and fakes.

    .venv/bin/python bench/planner_latency.py [--repeats 3] [--ocr auto] [--vlm-latency 0]
        [--investigate-below 0.999] [--images tests/fixtures/sign_de_berlin.jpg ...]

Everything is local: a random tiny CLIP under GeoCLIP's head (image encoder and neighbour index of
the fixture photos), a FakeOpenAIServer answering one fixed guess, a FakeOSMServer with canned
places and streets. The tools' disk cache is off, so every run makes its OpenStreetMap requests.
One warm-up pass (GeoCLIP's 100K gallery is encoded there, once) precedes the timed passes.
Medians are over images x repeats, for the runs where the stage ran.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: never reach a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from geosleuth.agents.pipeline import Locator, build_deps
from geosleuth.config import Settings
from geosleuth.gazetteer import Gazetteer
from geosleuth.retrieval import make_image_encoder
from geosleuth.retrieval.index import build_index
from geosleuth.retrieval.sources import open_source
from geosleuth.testing import build_tiny_clip
from geosleuth.testing.openai_server import FakeOpenAIServer
from geosleuth.testing.osm_server import CannedFeature, CannedPlace, FakeOSMServer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES, EXAMPLES = ROOT / "tests" / "fixtures", ROOT / "examples"
# Where the index says each photo was taken (invented, plausible for what the photo shows).
PLACES = {
    "sign_fr_paris.jpg": (48.8606, 2.3376),
    "sign_de_berlin.jpg": (52.5186, 13.4081),
    "sign_ja_tokyo.jpg": (35.6896, 139.7006),
    "shop_es_phone.jpg": (40.4168, -3.7038),
    "sign_en_generic.jpg": (40.7128, -74.0060),
    "sign_injection.jpg": (51.5072, -0.1276),
    "blank.jpg": (47.3769, 8.5417),
    "exif_gps.jpg": (48.8584, 2.2945),
    "rue-de-rivoli.jpg": (48.8606, 2.3376),
    "eiffel-gps.jpg": (48.8584, 2.2945),
}
OSM_PLACES = [
    CannedPlace("Berlin", 52.52, 13.405, "DE"),
    CannedPlace("Paris", 48.8566, 2.3522, "FR"),
    CannedPlace("Tokyo", 35.6895, 139.6917, "JP"),
    CannedPlace("Madrid", 40.4168, -3.7038, "ES"),
]
OSM_FEATURES = [
    CannedFeature("Königstraße", {"highway": "residential"}, 52.5186, 13.4081),
    CannedFeature("Rue de Rivoli", {"highway": "primary"}, 48.8606, 2.3376),
    CannedFeature("Panadería La Espiga", {"shop": "bakery"}, 40.4170, -3.7040),
]


def default_images() -> list[Path]:
    more = [FIXTURES / n for n in ("shop_es_phone.jpg", "blank.jpg", "exif_gps.jpg")]
    return [*sorted(FIXTURES.glob("sign_*.jpg")), *more, *sorted(EXAMPLES.glob("*.jpg"))]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build_world(tmp: Path) -> tuple[Path, Path]:
    """The tiny CLIP folder and a neighbour index of the fixture photos, built with GeoCLIP on it."""
    clip = build_tiny_clip(tmp / "tiny-clip")
    photos = {p.name: p for p in [*FIXTURES.glob("*.jpg"), *EXAMPLES.glob("*.jpg")]}
    rows = ["image,lat,lon"] + [f"{photos[n]},{lat},{lon}" for n, (lat, lon) in PLACES.items() if n in photos]
    (tmp / "photos.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    encoder = make_image_encoder(f"geoclip:{clip}", cache_dir=tmp / "cache")
    build_index(open_source(tmp / "photos.csv"), encoder, tmp / "idx", progress=False)
    return clip, tmp / "idx"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over the images")
    ap.add_argument("--ocr", default="auto", help="OCR engine (auto, hybrid, rapidocr, tesseract, none)")
    ap.add_argument("--vlm-latency", type=float, default=0.0, help="seconds the fake VLM server waits")
    ap.add_argument("--investigate-below", type=float, default=0.999, help="verifier.investigate_below")
    ap.add_argument("--images", type=Path, nargs="+", help="photos to time (default: the fixtures)")
    args = ap.parse_args()
    images = [p.resolve() for p in (args.images or default_images())]
    for p in images:
        if not p.is_file():
            sys.exit(f"--images: {p} is not a file")

    with (
        tempfile.TemporaryDirectory(prefix="planner-latency-") as tmp_name,
        FakeOpenAIServer(model="tiny-vlm", latency_s=args.vlm_latency) as vlm,
        FakeOSMServer(places=OSM_PLACES, features=OSM_FEATURES) as osm,
    ):
        tmp = Path(tmp_name)
        clip, index_dir = build_world(tmp)
        settings = Settings(
            cache_dir=tmp / "cache",
            offline=False,
            ocr={"engine": args.ocr},
            retrieval={"image_encoder": f"geoclip:{clip}", "index_dir": index_dir},
            vlm={"base_url": vlm.base_url, "rag_k": [0, 5], "samples": 5},
            tools={
                "nominatim_url": osm.nominatim_url,
                "overpass_url": osm.overpass_url,
                "min_interval_s": 0.0,
                "retries": 0,
                "cache": False,
            },
            verifier={"investigate_below": args.investigate_below},
        )
        # The gazetteer from the usual cache: building it again here would only add ~15 s of setup.
        locator = Locator(deps=build_deps(settings, gazetteer=Gazetteer()))
        for p in images:  # warm-up: gallery embeddings, OCR models, index, HTTP clients
            locator.locate(p)

        stages: dict[str, list[float]] = defaultdict(list)
        calls: dict[str, dict[str, list[int]]] = {p.name: defaultdict(list) for p in images}
        for _ in range(args.repeats):
            for p in images:
                before = len(osm.requests)
                pred = locator.locate(p)
                for name, seconds in pred.timings.items():
                    stages[name].append(seconds * 1000)
                c = calls[p.name]
                c["VLM requests"].append(pred.usage.vlm_requests)  # prompt variants + tool choice
                c["VLM samples"].append(sum(call.n for call in pred.vlm.calls) if pred.vlm else 0)
                c["tool calls"].append(pred.usage.tool_calls)
                c["tool calls (HTTP)"].append(len(osm.requests) - before)
                c["investigate rounds"].append(sum(k.startswith("investigate#") for k in pred.timings))
                c["planner steps"].append(len(pred.trace))
        ocr = locator.deps.ocr.name if locator.deps.ocr else f"none ({locator.deps.ocr_unavailable})"

    runs = len(images) * args.repeats
    print(f"## Planner stage latency ({len(images)} images x {args.repeats} repeats = {runs} runs)\n")
    print(f"Machine: {os.cpu_count()} CPUs, {sys.platform}, Python {sys.version.split()[0]}; OCR: {ocr};")
    print(f"VLM latency {args.vlm_latency} s; investigate_below {args.investigate_below}.\n")
    exe = os.path.relpath(sys.executable)
    print(f"Command: `{shlex.join([sys.executable if exe.startswith('..') else exe, *sys.argv])}`")
    print("\n| stage | runs | median ms | p90 ms |\n|---|---:|---:|---:|")
    order = [k for k in stages if k != "total"] + ["total"]
    for name in order:
        v = stages[name]
        print(f"| {name} | {len(v)} | {statistics.median(v):.1f} | {pct(v, 0.9):.1f} |")

    metrics = list(next(iter(calls.values())))
    print("\n## Calls per image (median over repeats)\n")
    print("| image | " + " | ".join(metrics) + " |\n|---|" + "---:|" * len(metrics))
    for name, c in calls.items():
        print(f"| {name} | " + " | ".join(f"{statistics.median(c[m]):g}" for m in metrics) + " |")
    overall = [statistics.median(v for c in calls.values() for v in c[m]) for m in metrics]
    print("| **all images** | " + " | ".join(f"{v:g}" for v in overall) + " |")


if __name__ == "__main__":
    main()
