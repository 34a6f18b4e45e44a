"""The chat's own overhead per turn with a VLM: wall time of ``Conversation.ask`` minus the time the
(fake, zero-latency) VLM server spent handling that turn's requests. Issue 12 asks for <= 50 ms.

    python bench/chat_overhead.py [--photo examples/rue-de-rivoli.jpg] [--turns 50] [--no-stream]

Two kinds of turn, each ``--turns`` times in one conversation (so the history is full, 8 turns):
a text answer (one request), and a tool round (the model calls ``check_place``, then answers: two
requests and a verifier run). The photo is located once, before timing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from geosleuth.agents.pipeline import Locator, build_deps
from geosleuth.chat import Conversation
from geosleuth.config import load_settings
from geosleuth.testing import openai_server as fake
from geosleuth.testing.openai_server import FakeOpenAIServer, Reply

QUESTIONS = [
    "Where was this photo taken?",
    "How sure are you?",
    "Why France?",
    "What does the sign say?",
    "What are the alternatives?",
]
ANSWER = "Paris, France: the sign names Paris [text.place.2] with the postcode 75001 [text.postcode.1]."

server_seconds: list[float] = []
_post = fake._Handler.do_POST


def _timed_post(self: Any) -> None:
    t0 = time.perf_counter()
    try:
        _post(self)
    finally:
        server_seconds.append(time.perf_counter() - t0)


def run(conv: Conversation, srv: FakeOpenAIServer, turns: int, tools: bool) -> list[float]:
    overheads = []
    for i in range(turns):
        if tools:
            srv.script(Reply.calls(("check_place", {"place": "Lyon"})), Reply.text(ANSWER))
        else:
            srv.script(Reply.text(ANSWER))
        server_seconds.clear()
        t0 = time.perf_counter()
        turn = conv.ask(QUESTIONS[i % len(QUESTIONS)] if not tools else "Could it be Lyon?")
        wall = time.perf_counter() - t0
        if turn.engine != "vlm" or turn.error:
            raise SystemExit(f"turn {turn.index} did not go through the VLM: {turn.error}")
        overheads.append(wall - sum(server_seconds))
    return overheads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--photo", type=Path, default=Path(__file__).resolve().parents[1] / "examples/rue-de-rivoli.jpg"
    )
    ap.add_argument("--turns", type=int, default=50)
    ap.add_argument("--no-stream", action="store_true", help="Ask without streaming.")
    args = ap.parse_args()
    fake._Handler.do_POST = _timed_post  # type: ignore[method-assign]
    with FakeOpenAIServer(model="tiny-vlm", streaming=True) as srv:
        settings = load_settings(
            offline=True,
            vlm={"base_url": srv.base_url, "samples": 1, "rag_k": [0], "max_retries": 0},
            chat={"stream": not args.no_stream},
        )
        locator = Locator(deps=build_deps(settings))
        t0 = time.perf_counter()
        conv = Conversation(locator, [args.photo])
        print(f"located {args.photo.name} in {time.perf_counter() - t0:.2f} s (with the fake VLM)")
        run(conv, srv, 3, tools=False)  # warm-up: first encodings, first connections
        for tools in (False, True):
            o = sorted(run(conv, srv, args.turns, tools))
            kind = "tool round (check_place, 2 requests)" if tools else "text answer (1 request)"
            print(
                f"{kind}: chat overhead per turn median {statistics.median(o) * 1000:.1f} ms, "
                f"p90 {o[int(0.9 * (len(o) - 1))] * 1000:.1f} ms, max {o[-1] * 1000:.1f} ms "
                f"over {len(o)} turns ({'not ' if args.no_stream else ''}streamed)"
            )


if __name__ == "__main__":
    main()
