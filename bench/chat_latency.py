"""How fast the chat answers without a VLM (the rules engine), on examples/rue-de-rivoli.jpg and a
few photos of ../shared/data/exif-photos (skipped, with a message, when absent):

(a) from `locate` finishing to the first piece of the first answer (target: within 1 s), for several
    kinds of first question, each in a fresh conversation over the located photo; the very first
    one in the process is shown too;
(b) the chat's own time per turn: the wall time of `Conversation.ask` over a conversation of mixed
    questions (median and p90), and of a hint (it verifies again).

    python bench/chat_latency.py [--photos ../shared/data/exif-photos] [--n-photos 3] [--turns 50]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

from geosleuth.agents.pipeline import Locator
from geosleuth.chat import Conversation
from geosleuth.chat.photo import PhotoSession
from geosleuth.config import load_settings
from geosleuth.errors import GeoSleuthError
from geosleuth.tools.image import IMAGE_SUFFIXES

ROOT = Path(__file__).resolve().parents[1]
FIRST = ["Where was this taken?", "Which country?", "Could it be Belgium?", "why?", "what does the text say?"]
MIXED = [
    "where?",
    "which country?",
    "how sure?",
    "why?",
    "why not Spain?",
    "could it be Belgium?",
    "what does the text say?",
    "what are the alternatives?",
    "what is missing?",
    "what would help?",
    "what colour is the car?",
]
HINT = "it was taken in summer 2019"  # recorded as evidence; verification runs again


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[8] if len(values) > 1 else values[0]


def ms(s: float) -> str:
    return f"{s * 1000:.1f} ms"


def first_piece_s(locator: Locator, photo: PhotoSession, question: str) -> float:
    t0 = time.perf_counter()
    conv = Conversation(locator, photos=[photo])  # locate has finished: this is where the chat begins
    stream = conv.stream(question)
    next(stream)
    elapsed = time.perf_counter() - t0
    for _ in stream:  # finish the turn, so the next measurement starts clean
        pass
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--photos", type=Path, default=ROOT.parent / "shared/data/exif-photos")
    ap.add_argument("--n-photos", type=int, default=3)
    ap.add_argument("--turns", type=int, default=50)
    args = ap.parse_args()
    paths = [ROOT / "examples/rue-de-rivoli.jpg"]
    if args.photos.is_dir():
        found = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        step = max(1, len(found) // max(1, args.n_photos))
        paths += found[::step][: args.n_photos]  # spread over the folders: HEIC, JPEG, TIFF...
    else:
        print(f"{args.photos} is absent: only the example photo is measured")

    locator = Locator(settings=load_settings(offline=True))
    locator.deps.gazetteer.ensure_built()
    first_all, turns_all, hints_all = [], [], []
    cold: float | None = None
    for path in paths:
        t0 = time.perf_counter()
        try:
            photo = PhotoSession.locate(locator, 1, str(path))
        except GeoSleuthError as exc:
            print(f"skipped {path.name}: {exc}")
            continue
        located = time.perf_counter() - t0
        firsts = [first_piece_s(locator, photo, q) for q in FIRST]
        if cold is None:
            cold = firsts[0]
        first_all += firsts

        conv = Conversation(locator, photos=[photo])
        per_turn = []
        for question in itertools.islice(itertools.cycle(MIXED), args.turns):
            t0 = time.perf_counter()
            conv.ask(question)
            per_turn.append(time.perf_counter() - t0)
        turns_all += per_turn
        t0 = time.perf_counter()
        conv.ask(HINT)
        hint_s = time.perf_counter() - t0
        hints_all.append(hint_s)
        where = photo.prediction.best.label if photo.prediction.best else "too little evidence"
        print(
            f"{path.name}: locate {located:.2f} s ({where}); first piece max {ms(max(firsts))}; "
            f"turn median {ms(statistics.median(per_turn))}, p90 {ms(p90(per_turn))}, max {ms(max(per_turn))}; "
            f"hint {ms(hint_s)}"
        )
    if not first_all:
        raise SystemExit("no photo could be located")
    print(
        f"\n(a) locate done -> first piece of the first answer, {len(first_all)} first questions on "
        f"{len(hints_all)} photos: median {ms(statistics.median(first_all))}, p90 {ms(p90(first_all))}, "
        f"max {ms(max(first_all))}; the very first in the process {ms(cold or 0.0)}  [target <= 1 s]"
    )
    print(
        f"(b) chat time per turn (rules engine), {len(turns_all)} turns of mixed questions: median "
        f"{ms(statistics.median(turns_all))}, p90 {ms(p90(turns_all))}, max {ms(max(turns_all))}; "
        f"a hint (verifies again): median {ms(statistics.median(hints_all))}, max {ms(max(hints_all))}"
    )


if __name__ == "__main__":
    main()
