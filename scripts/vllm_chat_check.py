"""Hold a conversation about a photo with a running vLLM server (see vllm_cpu_check.sh).

Run with geosleuth's own environment:

    .venv/bin/python scripts/vllm_chat_check.py --base-url http://127.0.0.1:8765/v1 --model tiny-qwen2-vl \
        --expect tools examples/rue-de-rivoli.jpg

A tiny random model writes nonsense; what is checked is the protocol, and it is printed as one JSON
summary (exit status 1 when a check fails):

* the photo is located with the VLM, then several questions are asked in one ``Conversation``,
  each streamed: every turn completes, with a non-empty answer whose pieces join to it, and the
  conversation saves and loads back;
* ``--expect tools`` (vLLM started with ``--enable-auto-tool-choice --tool-call-parser hermes``):
  no turn degrades; tool calls the model made (if any) are registry tools or carry their error;
* ``--expect no-tools`` (started without): the first turn says tool calling is not available and
  still answers with the rules' facts, and the next turns do not offer tools again;
* the shapes a tool round sends are accepted: an assistant message with ``tool_calls``, a ``tool``
  message, a zoom crop as a second image, the tools offered, streamed and not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTIONS = [
    "Where was this photo taken?",
    "Could it be Lyon?",
    "What does the sign say?",
    "How sure are you, and what would help?",
]


def converse(args: argparse.Namespace) -> dict[str, Any]:
    from geosleuth.agents.pipeline import Locator, build_deps
    from geosleuth.agents.toolbox import TOOLS
    from geosleuth.chat import Conversation, Turn
    from geosleuth.config import load_settings

    settings = load_settings(
        offline=True,
        vlm={
            "base_url": args.base_url,
            "model": args.model,
            "samples": 2,
            "rag_k": [0],
            "max_tokens": 96,
            "max_retries": 1,
            "timeout_s": 120.0,
            "image_max_side": 448,
        },
        chat={"max_tokens": args.max_tokens, "max_tool_rounds": 2, "max_history_turns": 4},
    )
    locator = Locator(deps=build_deps(settings))
    t0 = time.perf_counter()
    conv = Conversation(locator, [args.photo])
    located = time.perf_counter() - t0
    turns: list[dict[str, Any]] = []
    problems: list[str] = []
    for q in QUESTIONS[: args.turns]:
        t1 = time.perf_counter()
        pieces: list[str] = []
        turn: Turn | None = None
        for item in conv.stream(q):
            if isinstance(item, Turn):
                turn = item
            else:
                pieces.append(item)
        if turn is None:
            problems.append(f"{q!r}: no turn")
            continue
        bad_calls = [c.name for c in turn.tool_calls if c.name not in TOOLS and not c.error]
        turns.append(
            {
                "question": q,
                "engine": turn.engine,
                "error": turn.error,
                "pieces": len(pieces),
                "answer_chars": len(turn.answer),
                "answer_head": turn.answer[:120],
                "tool_calls": [{"name": c.name, "error": c.error} for c in turn.tool_calls],
                "cited": turn.cited_evidence,
                "dropped": turn.dropped_citations,
                "unsupported": turn.unsupported_places,
                "seconds": round(time.perf_counter() - t1, 3),
            }
        )
        if not turn.answer.strip():
            problems.append(f"{q!r}: empty answer")
        if "".join(pieces) != turn.answer:
            problems.append(f"{q!r}: the streamed pieces do not join to the answer")
        if bad_calls:
            problems.append(f"{q!r}: tool calls to unknown tools recorded without an error: {bad_calls}")
    if args.expect == "tools":
        for t in turns:
            if t["engine"] != "vlm" or (t["error"] and "tool calling" in t["error"]):
                problems.append(f"{t['question']!r}: degraded although tool calling is on ({t['error']})")
    else:
        first = turns[0] if turns else None
        if (
            first is None
            or first["engine"] != "vlm"
            or not (first["error"] and "tool calling" in first["error"])
        ):
            problems.append(f"the first turn did not degrade to the rules' facts: {first}")
        if not locator.deps.health.tool_calling_down:
            problems.append("the process did not remember that the server has no tool calling")
    again = Conversation.from_json(json.loads(json.dumps(conv.to_json())), locator)
    if again.turns != conv.turns:
        problems.append("the saved conversation does not load back the same")
    return {
        "located_s": round(located, 2),
        "status": conv.photos[0].prediction.status,
        "vlm_stage": conv.photos[0].prediction.stage("vlm").detail,
        "turns": turns,
        "problems": problems,
    }


def tool_round_shapes(args: argparse.Namespace) -> dict[str, Any]:
    """The messages of a tool round, sent as the engine sends them (streamed and not)."""
    from PIL import Image

    from geosleuth.agents.toolbox import TOOLS
    from geosleuth.agents.vlm.openai_backend import OpenAICompatibleVLM
    from geosleuth.errors import VLMError

    out: dict[str, Any] = {}
    with Image.open(args.photo) as im:
        photo = im.convert("RGB")
    crop = photo.crop((0, 0, photo.width // 2, photo.height // 2))
    with OpenAICompatibleVLM(args.base_url, args.model, max_retries=0, image_max_side=448) as vlm:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": "Answer from the digest."},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": vlm.image_url(photo)}},
                    {"type": "text", "text": "Digest: {}\n\nQuestion: What does the sign say?"},
                ],
            },
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "zoom",
                            "arguments": json.dumps(
                                {
                                    "box": {
                                        "left": 0,
                                        "top": 0,
                                        "right": 0.5,
                                        "bottom": 0.5,
                                        "unit": "fraction",
                                    }
                                }
                            ),
                        },
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "content": json.dumps({"tool": "zoom", "ok": True, "result": {"lines": []}}),
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "The crops the zoom calls returned, in order:"},
                    {"type": "image_url", "image_url": {"url": vlm.image_url(crop)}},
                ],
            },
        ]
        specs = TOOLS.subset(["zoom", "check_place", "reverse_geocode"]).openai_specs()
        for stream in (True, False):
            key = "streamed" if stream else "not_streamed"
            gen = vlm.chat(
                messages, tools=specs if args.expect == "tools" else None, max_tokens=32, stream=stream
            )
            pieces = []
            try:
                while True:
                    pieces.append(next(gen))
            except StopIteration as stop:
                reply = stop.value
                out[key] = {
                    "ok": True,
                    "pieces": len(pieces),
                    "chars": len(reply.content),
                    "finish": reply.finish_reason,
                    "tool_calls": [c.name for c in reply.tool_calls],
                    "streamed": reply.streamed,
                    "usage": [reply.usage.prompt_tokens, reply.usage.completion_tokens],
                }
            except VLMError as exc:
                out[key] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--expect", choices=["tools", "no-tools"], required=True)
    ap.add_argument("--turns", type=int, default=len(QUESTIONS))
    ap.add_argument(
        "--max-tokens", type=int, default=64, help="Per answer (a random model writes to the limit)."
    )
    ap.add_argument("photo", type=Path)
    args = ap.parse_args()
    summary = {"conversation": converse(args), "tool_round": tool_round_shapes(args)}
    problems = list(summary["conversation"]["problems"])
    problems += [f"tool round ({k}): {v['error']}" for k, v in summary["tool_round"].items() if not v["ok"]]
    summary["ok"] = not problems
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
