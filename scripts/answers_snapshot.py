"""Record what `locate` answers for a fixed set of photos and settings, or compare two records.

A refactor that must not change answers (issue 10) is checked with it: record before, record after,
compare. Beside the CLI's own `--json` runs, it drives the online paths deterministically: a fake
OpenStreetMap server (investigation) and a scripted VLM server (generation, tool choice).

    python scripts/answers_snapshot.py record OUT.jsonl
    python scripts/answers_snapshot.py compare BEFORE.jsonl AFTER.jsonl
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "exif-photos"


def _images() -> list[Path]:
    out = sorted((ROOT / "tests" / "fixtures").iterdir()) + sorted((ROOT / "examples").glob("*.jpg"))
    if PHOTOS.is_dir():
        out += sorted(p for p in PHOTOS.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".heic", ".tif"})[
            :20
        ]
    return out


def _answer(pred: object) -> dict:
    d = json.loads(pred.model_dump_json())  # type: ignore[attr-defined]
    return {
        "status": d["status"],
        "basis": d["basis"],
        "best": d["best"]["point"] if d["best"] else None,
        "confidence": d["confidence"],
        "candidates": [(c["point"], round(c["probability"], 6)) for c in d["candidates"]],
    }


def record(out: Path) -> None:
    from geosleuth.agents.pipeline import Locator, build_deps
    from geosleuth.config import load_settings
    from geosleuth.gazetteer import Gazetteer
    from geosleuth.schemas import VLMGuess
    from geosleuth.testing.openai_server import FakeOpenAIServer, Reply
    from geosleuth.testing.osm_server import CannedFeature, CannedPlace, FakeOSMServer

    places = [
        CannedPlace("Paris", 48.8566, 2.3522, "FR"),
        CannedPlace("Berlin", 52.52, 13.405, "DE"),
        CannedPlace("Berlin", 44.47, -71.18, "US"),
        CannedPlace("Madrid", 40.4168, -3.7038, "ES"),
        CannedPlace("Shinjuku", 35.6938, 139.7034, "JP"),
    ]
    features = [
        CannedFeature("Königstraße", {"highway": "residential"}, 52.5186, 13.4081),
        CannedFeature("Rue de Rivoli", {"highway": "primary"}, 48.8606, 2.3376),
    ]
    gaz = Gazetteer()
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeOSMServer(places=places, features=features) as osm,
        FakeOpenAIServer(model="tiny-vlm") as vlm,
    ):
        vlm.default = Reply.guess(VLMGuess(latitude=52.5, longitude=13.4, confidence=0.6, rationale="x"))
        tools = {
            "nominatim_url": osm.nominatim_url,
            "overpass_url": osm.overpass_url,
            "min_interval_s": 0.0,
            "timeout_s": 2.0,
            "retries": 0,
        }
        configs = {
            "online-noexif": {"offline": False, "use_exif_gps": False, "tools": tools},
            "online-vlm": {
                "offline": False,
                "use_exif_gps": False,
                "tools": tools,
                "vlm": {"base_url": vlm.base_url, "rag_k": [0], "samples": 3},
            },
            "online-strict": {"offline": False, "tools": tools, "verifier": {"investigate_below": 0.999}},
        }
        for name, over in configs.items():
            settings = load_settings(ROOT / "tests" / "no-config.toml", cache_dir=tmp, **over)
            settings = settings.with_overrides(cache_dir=str(gaz.cache_dir))
            loc = Locator(deps=build_deps(settings, gazetteer=gaz))
            for img in _images():
                try:
                    ans = _answer(loc.locate(str(img)))
                except Exception as exc:
                    ans = {"error": type(exc).__name__}
                rows.append({"config": name, "image": str(img.relative_to(ROOT.parent)), **ans})
                print(name, img.name, ans.get("status", ans.get("error")), file=sys.stderr)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))


def compare(a: Path, b: Path) -> int:
    def load(p: Path) -> dict:
        rows = {}
        for line in p.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                key = (r.pop("config", "cli"), r.pop("image", None) or r.get("source"))
                rows[key] = r
        return rows

    before, after = load(a), load(b)
    same = sum(before[k] == after.get(k) for k in before)
    for k in before:
        if before[k] != after.get(k):
            print("DIFFERENT", k, "\n  before", before[k], "\n  after ", after.get(k))
    print(f"{len(before)} answers compared, {same} identical, {len(set(after) - set(before))} new")
    return 0 if same == len(before) else 1


if __name__ == "__main__":
    if sys.argv[1] == "record":
        record(Path(sys.argv[2]))
    else:
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
