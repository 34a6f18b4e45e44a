"""Chat threads held by a LangGraph checkpointer: resuming a thread gives the same conversation."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest

from conftest import fixture

pytest.importorskip("langgraph")

from geosleuth.chat.graph import ChatGraph, open_sqlite
from geosleuth.errors import ConfigError

PHOTO = str(fixture("sign_fr_paris.jpg"))


def saver_opener(kind: str, tmp_path: Path) -> Callable[[], AbstractContextManager[Any]]:
    """Opens the checkpointer of ``kind``: the same in-memory one each time, or a new SqliteSaver on
    the same file, as another process would."""
    if kind == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        saver = InMemorySaver()
        return lambda: nullcontext(saver)
    pytest.importorskip("langgraph.checkpoint.sqlite")
    return lambda: open_sqlite(tmp_path / "chats.sqlite")


def state(conv) -> dict:  # type: ignore[no-untyped-def]
    data = conv.to_json()
    return {k: data[k] for k in ("photos", "hints", "turns")}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_resumed_thread_is_the_same_conversation_and_goes_on(kind, locator, tmp_path):
    new_saver = saver_opener(kind, tmp_path)
    with new_saver() as saver:
        chats = ChatGraph(locator, saver)
        chats.start("case-1", [PHOTO])
        first = chats.ask("case-1", "Which country?")
        second = chats.ask("case-1", "it was taken in Paris")
        assert (first.index, second.index) == (1, 2)
        (hint,) = second.hints
        assert hint.status == "applied"
        before = state(chats.conversation("case-1"))

    with new_saver() as saver:  # a new graph, as after a restart: nothing live
        resumed = ChatGraph(locator, saver)
        conv = resumed.conversation("case-1")
        assert state(conv) == before
        assert [t.question for t in conv.turns] == ["Which country?", "it was taken in Paris"]
        assert [e.id for e in conv.photos[0].prediction.evidence if e.tool == "user"] == [hint.id]

        # check_place needs the planner state: the photo is located again, inside this graph's node (the
        # planner's own graph must not inherit the checkpointer: its state holds live objects)
        third = resumed.ask("case-1", "Could it be Belgium?")
        assert third.index == 3
        assert [c.name for c in third.tool_calls] == ["check_place"]
        assert third.prediction is not None and third.prediction.country_code == "FR"
        after = resumed.conversation("case-1")
        assert len(after.turns) == 3 and after.turns[:2] == conv.turns[:2]
        assert hint.id in {e.id for e in after.photos[0].prediction.evidence}  # replayed on re-locating

    with new_saver() as saver:
        assert len(ChatGraph(locator, saver).conversation("case-1").turns) == 3


def test_an_unknown_thread_is_a_clear_error(locator):
    from langgraph.checkpoint.memory import InMemorySaver

    chats = ChatGraph(locator, InMemorySaver())
    with pytest.raises(ConfigError, match="no chat thread 'nope'"):
        chats.ask("nope", "where?")
