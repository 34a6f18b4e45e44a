"""Chat threads whose state a LangGraph checkpointer holds, so a conversation survives the process.

The graph is one node: ``answer`` takes the pending question, answers it with
:meth:`Conversation.ask`, and writes the conversation back as its JSON (:meth:`Conversation.to_json`).
That JSON *is* the thread's state, so any checkpointer keeps it: ``InMemorySaver`` for one process,
``SqliteSaver`` (:func:`open_sqlite`) across processes. A :class:`ChatGraph` keeps the live
conversation of each thread it has seen (with its photos' planner states, so tools and hints need
no second locate); a thread it has not seen, or whose checkpoint moved on without it, is rebuilt
from the checkpoint with :meth:`Conversation.from_json`, which gives the same turns, hints and
predictions.

    with open_sqlite("chats.sqlite") as saver:
        chats = ChatGraph(locator, saver)
        chats.start("case-17", ["photo.jpg"])
        chats.ask("case-17", "Which country?")
    # later, in another process:
    with open_sqlite("chats.sqlite") as saver:
        ChatGraph(locator, saver).ask("case-17", "Could it be Belgium?")   # turn 2
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from geosleuth.agents.pipeline import ImageSource, Locator
from geosleuth.chat.conversation import AnswerEngine, Conversation
from geosleuth.chat.turn import Turn
from geosleuth.errors import ConfigError, MissingDependencyError

try:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.graph.state import CompiledStateGraph
    from langgraph.runtime import Runtime
except ImportError as exc:  # pragma: no cover - the agents extra is part of the dev install
    raise MissingDependencyError("langgraph", "agents", "Chat threads with a checkpointer") from exc


class ChatState(TypedDict, total=False):
    """A thread's state: the conversation as saved, and the question waiting for an answer."""

    conversation: dict[str, Any]  # Conversation.to_json()
    question: str | None
    turn: dict[str, Any] | None  # the last answer (Turn's JSON), for readers of the checkpoint


@dataclass
class ChatContext:
    """What a run needs besides the state (LangGraph's runtime context): never checkpointed."""

    locator: Locator
    thread_id: str
    live: dict[str, Conversation] = field(default_factory=dict)
    engine: AnswerEngine | None = None


def answer(state: ChatState, runtime: Runtime[ChatContext]) -> ChatState:
    """The node: answer the pending question and write the conversation back."""
    ctx = runtime.context
    conv = live_conversation(state["conversation"], ctx)
    question = state.get("question")
    assert question is not None, "routed here only with a question"
    turn = conv.ask(question)
    return {"conversation": conv.to_json(), "question": None, "turn": turn.model_dump(mode="json")}


def route(state: ChatState) -> str:
    return "answer" if state.get("question") else END


def live_conversation(saved: dict[str, Any], ctx: ChatContext) -> Conversation:
    """The thread's live conversation when it is the checkpoint's, else one rebuilt from it."""
    conv = ctx.live.get(ctx.thread_id)
    if conv is None or not _same_point(conv, saved):
        conv = Conversation.from_json(saved, ctx.locator, engine=ctx.engine)
        ctx.live[ctx.thread_id] = conv
    return conv


def _same_point(conv: Conversation, saved: dict[str, Any]) -> bool:
    # Turns and hints only grow, so their counts tell whether this checkpoint is the live one's.
    return len(conv.turns) == len(saved.get("turns") or []) and len(conv.hints) == len(
        saved.get("hints") or []
    )


def build_graph(checkpointer: BaseCheckpointSaver[Any]) -> CompiledStateGraph[Any, ChatContext, Any, Any]:
    graph = StateGraph(ChatState, context_schema=ChatContext)
    graph.add_node("answer", answer)
    graph.add_conditional_edges(START, route, {"answer": "answer", END: END})
    graph.add_edge("answer", END)
    return graph.compile(checkpointer=checkpointer)


class ChatGraph:
    """Conversations by thread id, held by ``checkpointer`` (any LangGraph checkpoint saver)."""

    def __init__(
        self, locator: Locator, checkpointer: BaseCheckpointSaver[Any], *, engine: AnswerEngine | None = None
    ) -> None:
        self.locator = locator
        self.engine = engine
        self.graph = build_graph(checkpointer)
        self._live: dict[str, Conversation] = {}

    def start(
        self, thread_id: str, images: Sequence[ImageSource], *, names: Sequence[str | None] | None = None
    ) -> Conversation:
        """Locate ``images`` and begin thread ``thread_id`` (an existing thread is replaced)."""
        conv = Conversation(self.locator, images, names=names, engine=self.engine)
        self._live[thread_id] = conv
        self._invoke(thread_id, {"conversation": conv.to_json(), "question": None, "turn": None})
        return conv

    def ask(self, thread_id: str, question: str) -> Turn:
        """Answer ``question`` in thread ``thread_id``, resuming it from the checkpoint if need be."""
        self._saved(thread_id)  # a clear error for a thread that was never started
        self._invoke(thread_id, {"question": question})
        return self._live[thread_id].turns[-1]

    def conversation(self, thread_id: str) -> Conversation:
        """The thread's conversation as its latest checkpoint holds it."""
        return live_conversation(self._saved(thread_id), self._context(thread_id))

    def _saved(self, thread_id: str) -> dict[str, Any]:
        values = self.graph.get_state(_config(thread_id)).values
        saved = values.get("conversation") if isinstance(values, dict) else None
        if not saved:
            raise ConfigError(f"no chat thread {thread_id!r} in this checkpointer; start it first")
        return dict(saved)

    def _invoke(self, thread_id: str, update: ChatState) -> None:
        self.graph.invoke(update, _config(thread_id), context=self._context(thread_id))

    def _context(self, thread_id: str) -> ChatContext:
        return ChatContext(locator=self.locator, thread_id=thread_id, live=self._live, engine=self.engine)


def _config(thread_id: str) -> Any:
    return {"configurable": {"thread_id": thread_id}}


@contextmanager
def open_sqlite(path: str | Path) -> Iterator[BaseCheckpointSaver[Any]]:
    """A SQLite checkpointer on ``path`` (created if absent), closed on exit."""
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError as exc:
        raise MissingDependencyError(
            "langgraph-checkpoint-sqlite", "agents", "Keeping chat threads in SQLite"
        ) from exc
    with SqliteSaver.from_conn_string(str(path)) as saver:
        yield saver


__all__ = ["ChatContext", "ChatGraph", "ChatState", "answer", "build_graph", "open_sqlite", "route"]
