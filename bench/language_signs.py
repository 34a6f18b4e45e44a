"""Signs whose only clue is their language or script: does the evidence-only pipeline name the country?

Renders generic signs (no place names: opening hours, parking, sales, exits) in Danish, Dutch,
Swedish, Catalan and Polish, and in Greek, Hebrew, Hangul, Thai, Georgian, Armenian, Devanagari
and Cyrillic, as 640x480 photos (Noto/DejaVu fonts from ``fonts-noto-core``), runs ``locate`` on
each (evidence-only, offline) and reports per sign what was read, the answer and its probability,
and whether the top candidate is in one of the countries that write that language; then the
accuracy per confidence bucket. Nothing is written to the repository.

    PYTHONPATH=src python bench/language_signs.py [--json OUT] [--prior photos|population] [--weights hand|fitted]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# language -> (countries that count as right, font, generic sign texts)
SIGNS: dict[str, tuple[set[str], str, list[str]]] = {
    "da": (
        {"DK"},
        "NotoSans-Regular.ttf",
        [
            "Åbningstider\nmandag til fredag",
            "Parkering forbudt\nhele døgnet",
            "Udsalg på alle varer",
            "Indgang\nkun for personale",
        ],
    ),
    "nl": (
        {"NL", "BE"},
        "NotoSans-Regular.ttf",
        [
            "Openingstijden\nmaandag tot vrijdag",
            "Verboden te parkeren",
            "Uitverkoop\nalle artikelen",
            "Ingang alleen\nvoor personeel",
        ],
    ),
    "sv": (
        {"SE", "FI", "AX"},
        "NotoSans-Regular.ttf",
        [
            "Öppettider\nmåndag till fredag",
            "Parkering förbjuden",
            "Rea på alla varor",
            "Ingång endast\nför personal",
        ],
    ),
    "ca": (
        {"ES", "AD"},
        "NotoSans-Regular.ttf",
        [
            "Horari d'obertura\nde dilluns a divendres",
            "Prohibit aparcar",
            "Rebaixes a totes\nles botigues",
            "Entrada només\nper al personal",
        ],
    ),
    "pl": (
        {"PL"},
        "NotoSans-Regular.ttf",
        [
            "Godziny otwarcia\nod poniedziałku do piątku",
            "Zakaz parkowania",
            "Wyprzedaż\nwszystkich towarów",
            "Wejście tylko\ndla personelu",
        ],
    ),
    "el": (
        {"GR", "CY"},
        "NotoSans-Regular.ttf",
        ["Ώρες λειτουργίας", "Απαγορεύεται η στάθμευση", "Έξοδος κινδύνου"],
    ),
    "he": ({"IL"}, "NotoSansHebrew-Regular.ttf", ["שעות פתיחה", "החניה אסורה", "יציאת חירום"]),
    "ko": ({"KR", "KP"}, "NotoSansCJK-Regular.ttc", ["영업 시간", "주차 금지", "비상구"]),
    "th": ({"TH"}, "NotoSansThai-Regular.ttf", ["เวลาทำการ", "ห้ามจอดรถ", "ทางออกฉุกเฉิน"]),
    "ka": ({"GE"}, "NotoSansGeorgian-Regular.ttf", ["სამუშაო საათები", "პარკირება აკრძალულია", "გასასვლელი"]),
    "hy": ({"AM"}, "NotoSansArmenian-Regular.ttf", ["Աշխատանքային ժամեր", "Կայանելն արգելվում է", "Ելք"]),
    "hi": ({"IN", "NP"}, "NotoSansDevanagari-Regular.ttf", ["खुलने का समय", "पार्किंग निषेध", "आपातकालीन निकास"]),
    "ru": (
        {"RU", "UA", "BY", "KZ", "KG", "BG", "RS", "MK", "BA", "MN", "TJ"},
        "NotoSans-Regular.ttf",
        ["Часы работы", "Стоянка запрещена", "Запасный выход"],
    ),
}
FONT_DIRS = (
    "/usr/share/fonts/truetype/noto",
    "/usr/share/fonts/opentype/noto",
    "/usr/share/fonts/truetype/dejavu",
)


def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    for d in FONT_DIRS:
        p = Path(d) / name
        if p.exists():
            return ImageFont.truetype(str(p), size)
    return ImageFont.truetype(str(Path(FONT_DIRS[-1]) / "DejaVuSans.ttf"), size)


def render(text: str, font: str) -> bytes:
    img = Image.new("RGB", (640, 480), (235, 235, 228))
    draw = ImageDraw.Draw(img)
    draw.rectangle((40, 120, 600, 360), fill=(20, 60, 140))
    f = _font(font, 44)
    draw.multiline_text(
        (320, 240), text, font=f, fill=(255, 255, 255), anchor="mm", align="center", spacing=12
    )
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--prior", choices=["photos", "population"])
    ap.add_argument("--weights", choices=["hand", "fitted"])
    args = ap.parse_args()
    from geosleuth.agents.pipeline import Locator
    from geosleuth.config import load_settings

    fusion = {k: v for k, v in (("prior", args.prior), ("weights", args.weights)) if v}
    locator = Locator(load_settings().with_overrides(offline=True, fusion=fusion or None))
    rows = []
    for lang, (right, font, texts) in SIGNS.items():
        for text in texts:
            t0 = time.perf_counter()
            pred = locator.locate(render(text, font), name=f"{lang}.jpg")
            top = pred.candidates[0] if pred.candidates else None
            cc = top.place.country_code if top is not None and top.place is not None else None
            rows.append(
                {
                    "lang": lang,
                    "text": text.replace("\n", " "),
                    "read": " | ".join(line.text for line in pred.text_lines)[:80],
                    "status": pred.status,
                    "top_country": cc,
                    "p": round(top.probability, 3) if top is not None else 0.0,
                    "right": cc in right,
                    "seconds": round(time.perf_counter() - t0, 2),
                    "evidence": [f"{e.kind.value}:{e.weight:.2f}" for e in pred.evidence if e.countries],
                }
            )
            r = rows[-1]
            print(
                f"{lang} {r['status'][:9]:9} {r['top_country']!s:4} p={r['p']:.2f} {'ok ' if r['right'] else 'BAD'} "
                f"read={r['read']!r} {r['evidence']}",
                flush=True,
            )
    answered = [r for r in rows if r["status"] == "located"]
    summary = {
        "signs": len(rows),
        "answered": len(answered),
        "right_top1": sum(r["right"] for r in rows),
        "right_answered": sum(r["right"] for r in answered),
        "mean_p_answered": round(statistics.mean(r["p"] for r in answered), 3) if answered else None,
        "median_s": round(statistics.median(r["seconds"] for r in rows), 2),
        "buckets": {},
    }
    for lo, hi in ((0.0, 0.25), (0.25, 0.5), (0.5, 0.8), (0.8, 1.01)):
        sel = [r for r in rows if lo <= r["p"] < hi]
        if sel:
            summary["buckets"][f"{lo:.2f}-{min(hi, 1):.2f}"] = {
                "n": len(sel),
                "mean_p": round(statistics.mean(r["p"] for r in sel), 3),
                "right": round(sum(r["right"] for r in sel) / len(sel), 3),
            }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
