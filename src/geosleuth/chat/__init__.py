"""Conversational location questions about photos, grounded in the evidence geosleuth observed.

``Conversation(locator, ["photo.jpg"]).ask("why France and not Belgium?")`` returns a
:class:`Turn`: the answer, the evidence ids it rests on, the tool calls it made, and where the
photo stands afterwards. See :mod:`geosleuth.chat.conversation`."""

from geosleuth.chat.conversation import AnswerEngine, Conversation, EngineAnswer
from geosleuth.chat.turn import Hint, HintKind, HintStatus, PlaceSummary, RankChange, Turn

__all__ = [
    "AnswerEngine",
    "Conversation",
    "EngineAnswer",
    "Hint",
    "HintKind",
    "HintStatus",
    "PlaceSummary",
    "RankChange",
    "Turn",
]
