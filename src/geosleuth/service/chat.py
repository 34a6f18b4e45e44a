"""Chat sessions for the service: :class:`geosleuth.chat.Conversation` behind an id, kept in the
storage (``Conversation.to_json`` after every turn, and the photo when one was uploaded) and in a
small cache of live conversations. Answers stream as server-sent events. An adapter: the
conversation does the work."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from geosleuth.errors import GeoSleuthError, InternalError, UnknownIdError
from geosleuth.service.storage import new_id

if TYPE_CHECKING:
    from geosleuth.agents.pipeline import Locator
    from geosleuth.chat import Conversation
    from geosleuth.chat.photo import PhotoSession
    from geosleuth.schemas import Prediction
    from geosleuth.service.storage import Storage

LIVE_SESSIONS = 32  # conversations kept in memory (with their planner states); others reload


def sse(event: str, data: object) -> bytes:
    """One server-sent event (``data`` as JSON on one line)."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class ChatSessions:
    def __init__(self, locator: Locator, storage: Storage, *, live: int = LIVE_SESSIONS) -> None:
        self.locator = locator
        self.storage = storage
        self.live = live
        self._cache: OrderedDict[str, Conversation] = OrderedDict()
        self._lock = threading.Lock()
        self._turn_locks: dict[str, asyncio.Lock] = {}

    def from_photo(self, data: bytes, name: str) -> tuple[str, Prediction]:
        """Locate the photo and open a conversation about it (blocking: call it in a worker)."""
        from geosleuth.chat import Conversation

        conversation = Conversation(self.locator, [data], names=[name])
        return self._keep(conversation, image=data)

    def from_prediction(self, prediction: Prediction) -> tuple[str, Prediction]:
        """A conversation about a stored prediction. The service keeps no photo for it, so the
        questions that need the pixels (a zoom, a hint) are answered with why they cannot be."""
        from geosleuth.chat import Conversation
        from geosleuth.chat.photo import PhotoSession

        photo = PhotoSession(number=1, source=None, prediction=prediction)
        return self._keep(Conversation(self.locator, photos=[photo]), image=None)

    def from_located(self, photo: PhotoSession, image: bytes | None) -> tuple[str, Prediction]:
        """A conversation about a photo located already, its planner state kept (MCP's ``locate``
        then ``ask``): no second locate. ``image``: the photo's bytes, kept for a reload."""
        from geosleuth.chat import Conversation

        return self._keep(Conversation(self.locator, photos=[photo]), image=image)

    def _keep(self, conversation: Conversation, *, image: bytes | None) -> tuple[str, Prediction]:
        sid = new_id("chat")
        self.storage.put_chat(sid, json.dumps(conversation.to_json(), ensure_ascii=False), image)
        self._remember(sid, conversation)
        return sid, conversation.photos[0].prediction

    def _remember(self, sid: str, conversation: Conversation) -> None:
        with self._lock:
            self._cache[sid] = conversation
            self._cache.move_to_end(sid)
            while len(self._cache) > self.live:
                self._cache.popitem(last=False)

    def open(self, sid: str) -> Conversation:
        """The live conversation, or the stored one loaded again (:class:`UnknownIdError` if none)."""
        with self._lock:
            if sid in self._cache:
                self._cache.move_to_end(sid)
                return self._cache[sid]
        from geosleuth.chat import Conversation

        record = self.storage.get_chat(sid)
        if record is None:
            raise UnknownIdError(f"no chat session {sid!r}; start one with POST /v1/chat")
        conversation = Conversation.from_json(json.loads(record.body), self.locator)
        if record.image is not None:
            conversation.photos[0].source = record.image  # the pixels, for tools and hints
        self._remember(sid, conversation)
        return conversation

    async def events(self, sid: str, conversation: Conversation, question: str) -> AsyncIterator[bytes]:
        """The answer to ``question`` as server-sent events (``delta``..., then ``turn`` or
        ``error``); the turn is stored before its event is sent. One question at a time per session."""
        from geosleuth.chat import Turn

        lock = self._turn_locks.setdefault(sid, asyncio.Lock())
        async with lock:
            try:
                async for item in conversation.astream(question):
                    if isinstance(item, Turn):
                        body = json.dumps(conversation.to_json(), ensure_ascii=False)
                        await asyncio.to_thread(self.storage.update_chat, sid, body)
                        yield sse("turn", item.model_dump(mode="json"))
                    else:
                        yield sse("delta", {"text": item})
            except GeoSleuthError as exc:
                yield sse("error", {"error": {"type": type(exc).__name__, "message": str(exc)}})
            except Exception as exc:
                kind = InternalError.__name__
                yield sse(
                    "error", {"error": {"type": kind, "message": f"internal error ({type(exc).__name__})"}}
                )


__all__ = ["ChatSessions", "sse"]
