"""A chat answering engine for tests: the rules' answer, written slowly, piece by piece.

It stands in for a VLM that streams its answer, so tests can stop an answer half-way (Ctrl-C in
the terminal, closing :meth:`Conversation.stream`) without a server."""

from __future__ import annotations

import re
import time
from collections.abc import Generator

from geosleuth.chat.conversation import Conversation, EngineAnswer, ToolRunnerT


class PacedRuleEngine:
    """Answers as the rules do, one word every ``delay_s`` seconds."""

    name = "paced-rules"

    def __init__(self, delay_s: float = 0.1) -> None:
        self.delay_s = delay_s

    def respond(
        self, question: str, conversation: Conversation, tools: ToolRunnerT
    ) -> Generator[str, None, EngineAnswer]:
        ruled = conversation.rules.answer(question, conversation.photos)
        for piece in re.findall(r"\S+\s*", ruled.text):
            time.sleep(self.delay_s)
            yield piece
        return EngineAnswer(text=ruled.text, intent=ruled.intent, cited=ruled.cited, error=ruled.error)


__all__ = ["PacedRuleEngine"]
