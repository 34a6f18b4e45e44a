"""A real, local, OpenAI-compatible HTTP server that answers like vLLM, for tests and benches.

It listens on 127.0.0.1 (a free port), so the real ``openai`` client, with its real HTTP stack,
timeouts and retries, talks to it exactly as it would to ``vllm serve``::

    with FakeOpenAIServer(model="tiny-vlm", latency_s=0.05) as srv:
        srv.script(Reply.error(503), Reply.guess({"latitude": 48.85, "longitude": 2.35}))
        client = openai.OpenAI(base_url=srv.base_url, api_key="test", max_retries=0)
        ...
        assert srv.requests[-1].body["n"] == 1

Chat requests take scripted replies in order (:meth:`FakeOpenAIServer.script`), then
:attr:`FakeOpenAIServer.default` (a :class:`Reply`, or a function of the request body). Bodies and
JSON shapes follow vLLM's ``vllm/entrypoints/openai/protocol.py`` (``ChatCompletionResponse``,
``ChatCompletionStreamResponse``, ``ModelList``, ``ErrorResponse``).

``stream: true`` is refused with a 400 unless the server is made with ``streaming=True`` (or the
attribute is set): then the answer comes as server-sent events the way vLLM sends them: a first
chunk with the role, the content split into several chunks (:attr:`FakeOpenAIServer.chunk_chars`),
tool calls as deltas (name first, then the arguments in pieces), a chunk with the finish reason,
the usage when ``stream_options.include_usage`` asks for it, and ``data: [DONE]``.
"""

from __future__ import annotations

import base64
import binascii
import io
import itertools
import json
import logging
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from geosleuth.schemas import VLMGuess
from geosleuth.testing.http import LocalServer, QuietHandler

logger = logging.getLogger(__name__)

VLLM_VERSION = "0.10.1"
IMAGE_TOKENS = 256  # prompt tokens counted per image part, roughly a small vision encoder's output

# vLLM's `ErrorInfo.type` for the statuses it sends (429 comes from proxies in front of it).
_ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    404: "NotFoundError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}

PARIS = VLMGuess(
    clues_used=["French street sign", "Haussmann facades"],
    rationale="Europe; French text and Haussmann buildings; Paris.",
    continent="Europe",
    country="France",
    region="Île-de-France",
    city="Paris",
    latitude=48.8566,
    longitude=2.3522,
    radius_km=25.0,
    confidence=0.6,
)


@dataclass(frozen=True)
class Reply:
    """What the server does with one chat request. Build one with the class methods.

    ``contents`` and ``finish_reasons`` are cycled to fill the ``n`` choices a request asks for."""

    contents: tuple[str, ...] = ()
    finish_reasons: tuple[str, ...] = ("stop",)
    status: int = 200
    message: str | None = None
    retry_after: float | None = None
    dropped: bool = False
    delay_s: float = 0.0
    tool_calls: tuple[tuple[str, str], ...] = ()  # (function name, JSON arguments)
    cut_after_chunks: int | None = None
    """Streaming only: close the connection after this many content chunks, mid-answer."""

    @classmethod
    def calls(
        cls, *calls: tuple[str, dict[str, Any] | str], delay_s: float = 0.0, content: str | None = None
    ) -> Reply:
        """A tool-calling answer, as vLLM gives with ``--enable-auto-tool-choice``: ``tool_calls``
        with JSON-encoded arguments (a string is sent as it is, e.g. broken JSON), ``finish_reason``
        "tool_calls", and no content unless ``content`` is given."""
        encoded = tuple(
            (name, args if isinstance(args, str) else json.dumps(args, ensure_ascii=False))
            for name, args in calls
        )
        return cls(
            contents=(content or "",),
            finish_reasons=("tool_calls",),
            tool_calls=encoded,
            delay_s=delay_s,
        )

    @classmethod
    def guess(
        cls,
        guess: VLMGuess | dict[str, Any],
        *more: VLMGuess | dict[str, Any],
        delay_s: float = 0.0,
        **extra: Any,
    ) -> Reply:
        """JSON answers (one per choice, cycled); ``extra`` keys are added to (or override) each."""

        def dump(g: VLMGuess | dict[str, Any]) -> str:
            data = g.model_dump(mode="json") if isinstance(g, VLMGuess) else dict(g)
            return json.dumps({**data, **extra}, ensure_ascii=False)

        return cls(contents=tuple(dump(g) for g in (guess, *more)), delay_s=delay_s)

    @classmethod
    def text(
        cls,
        content: str,
        *more: str,
        finish_reason: str = "stop",
        delay_s: float = 0.0,
        cut_after_chunks: int | None = None,
    ) -> Reply:
        """Free-text answers, as a model that ignores the schema writes them. Streamed,
        ``cut_after_chunks`` drops the connection after that many content chunks."""
        return cls(
            contents=(content, *more),
            finish_reasons=(finish_reason,),
            delay_s=delay_s,
            cut_after_chunks=cut_after_chunks,
        )

    @classmethod
    def malformed(cls, delay_s: float = 0.0) -> Reply:
        """Broken JSON that no repair can save: the longitude never comes."""
        return cls.text('{"latitude": 48.85, "longitude": ]] <|im_end|> garbage', delay_s=delay_s)

    @classmethod
    def out_of_range(cls, delay_s: float = 0.0) -> Reply:
        """Well-formed JSON whose latitude (123.4) is not on Earth."""
        return cls.guess({**PARIS.model_dump(mode="json"), "latitude": 123.4}, delay_s=delay_s)

    @classmethod
    def length(
        cls,
        partial_text: str = '{"clues_used": ["French street sign"], "rationale": "The sign is in',
        delay_s: float = 0.0,
    ) -> Reply:
        """An answer cut off at ``max_tokens`` (``finish_reason == "length"``)."""
        return cls(contents=(partial_text,), finish_reasons=("length",), delay_s=delay_s)

    @classmethod
    def error(
        cls, status: int, message: str | None = None, retry_after: float | None = None, delay_s: float = 0.0
    ) -> Reply:
        """An HTTP error in vLLM's format; ``retry_after`` (seconds) adds a ``Retry-After`` header."""
        if not 400 <= status <= 599:
            raise ValueError(f"Reply.error status must be an HTTP error status (400-599), got {status!r}")
        return cls(status=status, message=message, retry_after=retry_after, delay_s=delay_s)

    @classmethod
    def drop(cls, delay_s: float = 0.0) -> Reply:
        """Close the connection without any response: the client sees a connection error."""
        return cls(dropped=True, delay_s=delay_s)


ReplySource = Reply | Callable[[dict[str, Any]], Reply]


def user_text(body: dict[str, Any]) -> str:
    """The text a chat request gives in its user messages (every text part, joined by newlines)."""
    out: list[str] = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return "\n".join(out)


def obeying(places: dict[str, VLMGuess], otherwise: VLMGuess) -> Callable[[dict[str, Any]], Reply]:
    """A reply function for a model that does what text in its prompt tells it: the answer is the
    place of ``places`` (keyed by the name as written) whose name comes first in the request's user
    text, case-insensitively; a request that names none of them (one made without the photo's
    text, say) gets ``otherwise``, standing for what the model sees in the picture."""

    # whole words only ("Lima" is not in "climate"), except in scripts written without spaces
    def pattern(name: str) -> re.Pattern[str]:
        key = re.escape(name.casefold())
        before = "(?<!\\w)" if ord(name[0]) < 0x2E80 else ""
        after = "(?!\\w)" if ord(name[-1]) < 0x2E80 else ""
        return re.compile(before + key + after)

    keys = {name.casefold(): (pattern(name), guess) for name, guess in places.items()}

    def reply(body: dict[str, Any]) -> Reply:
        text = user_text(body).casefold()
        found = [(m.start(), -len(k), k) for k, (rx, _) in keys.items() if (m := rx.search(text))]
        return Reply.guess(keys[min(found)[2]][1] if found else otherwise)

    return reply


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the server saw it. ``body`` is the parsed JSON (``None`` if none/invalid)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any = None
    raw: bytes = field(default=b"", repr=False)


class FakeOpenAIServer(LocalServer):
    """A vLLM-like OpenAI-compatible server on 127.0.0.1. Use it as a context manager."""

    def __init__(
        self,
        *,
        model: str = "tiny-vlm",
        latency_s: float = 0.0,
        default: ReplySource | None = None,
        check_images: bool = True,
        max_model_len: int = 8192,
        api_key: str | None = None,
        port: int = 0,
        streaming: bool = False,
        chunk_chars: int = 8,
    ) -> None:
        super().__init__(port)
        if latency_s < 0:
            raise ValueError(f"latency_s must be >= 0 seconds, got {latency_s!r}")
        self.model = model
        self.latency_s = latency_s
        self.default: ReplySource = default if default is not None else Reply.guess(PARIS)
        self.check_images = check_images
        self.max_model_len = max_model_len
        self.api_key = api_key
        self.streaming = streaming
        """Answer ``stream: true`` with server-sent events (else: 400, as before streaming existed)."""
        if chunk_chars < 1:
            raise ValueError(f"chunk_chars must be >= 1, got {chunk_chars!r}")
        self.chunk_chars = chunk_chars
        """Streamed content comes in pieces of about this many characters (split after spaces)."""
        self._lock = threading.Lock()
        self._script: deque[ReplySource] = deque()
        self._requests: list[RecordedRequest] = []
        self._in_flight = 0
        self._max_in_flight = 0

    @property
    def base_url(self) -> str:
        """The URL to give an OpenAI client: ``http://127.0.0.1:PORT/v1``."""
        return self.url + "/v1"

    # --- scripting and inspection -------------------------------------------------------------

    def script(self, *replies: ReplySource) -> None:
        """Queue replies, consumed one per chat request in order; then :attr:`default` answers."""
        with self._lock:
            self._script.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not yet used."""
        with self._lock:
            return len(self._script)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (a copy), in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def max_in_flight(self) -> int:
        """The most chat requests the server was handling at once."""
        with self._lock:
            return self._max_in_flight

    def reset(self) -> None:
        """Forget recorded requests, queued replies and the in-flight peak (settings are kept)."""
        with self._lock:
            self._requests.clear()
            self._script.clear()
            self._max_in_flight = self._in_flight

    # --- used by the handler ------------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            source = self._script.popleft() if self._script else self.default
        return source(body) if callable(source) else source

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(QuietHandler):
    # --- plumbing -----------------------------------------------------------------------------

    def _send(self, status: int, payload: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if payload is None else json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(
        self, status: int, message: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        error_type = _ERROR_TYPES.get(status, phrase.replace(" ", "") + "Error")
        info = {"message": message or phrase, "type": error_type, "param": None, "code": status}
        self._send(status, {"error": info}, headers)

    def _read(self) -> tuple[bytes, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        owner = self.server.owner
        headers = {k.lower(): v for k, v in self.headers.items()}
        owner._record(RecordedRequest(self.command, self.path, headers, body, raw))
        return raw, body

    def _authorised(self) -> bool:
        key = self.server.owner.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._send(401, {"error": "Unauthorized"})  # vLLM's --api-key middleware says exactly this
        return False

    # --- endpoints ----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._read()
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/health":
            self._send(200)
        elif path == "/version":
            self._send(200, {"version": VLLM_VERSION})
        elif path == "/v1/models":
            if self._authorised():
                self._send(200, self._models())
        elif path == "/v1/chat/completions":
            self._send(405, {"detail": "Method Not Allowed"})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        raw, body = self._read()
        path = self.path.split("?", 1)[0].rstrip("/")
        if path != "/v1/chat/completions":
            known = path in ("/health", "/v1/models", "/version")
            self._send(405 if known else 404, {"detail": "Method Not Allowed" if known else "Not Found"})
            return
        if not self._authorised():
            return
        owner = self.server.owner
        owner._enter()
        try:
            self._chat(raw, body)
        finally:
            owner._leave()

    def _chat(self, raw: bytes, body: Any) -> None:
        owner = self.server.owner
        try:
            _check_body(raw, body, owner)
            reply = owner._next_reply(body)
        except _HTTPError as exc:
            time.sleep(owner.latency_s)
            self._send_error(exc.status, str(exc))
            return
        except Exception as exc:  # a broken default function must fail the request, not the thread
            logger.exception("fake OpenAI server: the reply function failed")
            self._send_error(500, f"the fake server's reply function raised {exc!r}")
            return
        time.sleep(owner.latency_s + reply.delay_s)
        if reply.dropped:
            self.close_connection = True
            return
        if reply.status != 200:
            headers = {} if reply.retry_after is None else {"Retry-After": f"{reply.retry_after:g}"}
            self._send_error(reply.status, reply.message, headers)
            return
        if body.get("stream"):
            self._stream(body, reply, owner)
            return
        self._send(200, _completion(body, reply, owner.model))

    def _stream(self, body: dict[str, Any], reply: Reply, owner: FakeOpenAIServer) -> None:
        """Server-sent events over chunked transfer encoding (the connection stays open after)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def event(data: str) -> None:
            payload = f"data: {data}\n\n".encode()
            self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            self.wfile.flush()

        sent = 0
        for chunk in _stream_chunks(body, reply, owner.model, owner.chunk_chars):
            if (
                chunk.get("_content")
                and reply.cut_after_chunks is not None
                and sent >= reply.cut_after_chunks
            ):
                self.close_connection = True  # mid-answer: no terminating chunk, the client sees a break
                return
            sent += 1 if chunk.pop("_content", False) else 0
            event(json.dumps(chunk, ensure_ascii=False))
        event("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _models(self) -> dict[str, Any]:
        owner, now = self.server.owner, int(time.time())
        permission = {
            "id": f"modelperm-{uuid.uuid4().hex}",
            "object": "model_permission",
            "created": now,
            "allow_create_engine": False,
            "allow_sampling": True,
            "allow_logprobs": True,
            "allow_search_indices": False,
            "allow_view": True,
            "allow_fine_tuning": False,
            "organization": "*",
            "group": None,
            "is_blocking": False,
        }
        card = {
            "id": owner.model,
            "object": "model",
            "created": now,
            "owned_by": "vllm",
            "root": owner.model,
            "parent": None,
            "max_model_len": owner.max_model_len,
            "permission": [permission],
        }
        return {"object": "list", "data": [card]}


def _check_body(raw: bytes, body: Any, owner: FakeOpenAIServer) -> None:
    """Raise :class:`_HTTPError` (400/404) for what vLLM would refuse."""
    if not isinstance(body, dict):
        what = "is empty" if not raw else "is not a JSON object"
        raise _HTTPError(400, f"The request body {what}; expected a JSON chat completion request.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _HTTPError(400, "Field required: 'messages' must be a non-empty list of chat messages.")
    if body.get("model") is not None and body["model"] != owner.model:
        raise _HTTPError(404, f"The model `{body['model']}` does not exist. Valid aliases: {owner.model}.")
    if body.get("stream") and not owner.streaming:
        raise _HTTPError(400, "FakeOpenAIServer does not stream; send stream=false.")
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise _HTTPError(400, f"n must be a positive integer, got {n!r}.")
    if owner.check_images:
        for i, message in enumerate(messages):
            parts = message.get("content") if isinstance(message, dict) else None
            for j, part in enumerate(parts if isinstance(parts, list) else []):
                if isinstance(part, dict) and part.get("type") == "image_url":
                    url = (part.get("image_url") or {}).get("url", "")
                    problem = _image_problem(url if isinstance(url, str) else "")
                    if problem:
                        raise _HTTPError(400, f"messages[{i}].content[{j}].image_url: {problem}")


def _image_problem(url: str) -> str | None:
    """Why ``url`` is not a base64 data URL of an image PIL can open, or ``None``."""
    from PIL import Image, UnidentifiedImageError

    head, sep, data = url.partition(",")
    if not (head.startswith("data:image/") and head.endswith(";base64") and sep):
        return f"expected a 'data:image/...;base64,' URL, got {url[:40]!r}"
    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as image:
            image.load()
    except (binascii.Error, ValueError) as exc:
        return f"the base64 data does not decode ({exc})"
    except (UnidentifiedImageError, OSError) as exc:
        return f"the data is not an image PIL can open ({exc})"
    return None


def _prompt_tokens(body: dict[str, Any]) -> int:
    chars, images = 0, 0
    for message in body["messages"]:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") == "image_url":
                images += 1
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                chars += len(part["text"])
    return max(1, chars // 4 + IMAGE_TOKENS * images)


def _completion(body: dict[str, Any], reply: Reply, model: str) -> dict[str, Any]:
    """vLLM's ``ChatCompletionResponse``, field for field and in its order."""
    n = int(body.get("n", 1))
    contents = itertools.islice(itertools.cycle(reply.contents or ("",)), n)
    reasons = itertools.cycle(reply.finish_reasons)
    choices, completion_tokens = [], 0
    for index, (content, reason) in enumerate(zip(contents, reasons, strict=False)):
        completion_tokens += max(1, len(content) // 4)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": (content or None) if reply.tool_calls else content,
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
            "reasoning": None,
        }
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"chatcmpl-tool-{uuid.uuid4().hex[:16]}",
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
                for name, arguments in reply.tool_calls
            ]
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": None,
                "finish_reason": reason,
                "stop_reason": None,
                "token_ids": None,
                "routed_experts": None,
            }
        )
    prompt_tokens = _prompt_tokens(body)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "service_tier": None,
        "system_fingerprint": None,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        },
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "prompt_text": None,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


def _pieces(text: str, size: int) -> list[str]:
    """``text`` in pieces of about ``size`` characters, cut after a space where there is one."""
    out: list[str] = []
    rest = text
    while rest:
        if len(rest) <= size:
            out.append(rest)
            break
        cut = rest.rfind(" ", 1, size)
        cut = cut + 1 if cut > 0 else size
        out.append(rest[:cut])
        rest = rest[cut:]
    return out


def _stream_chunks(body: dict[str, Any], reply: Reply, model: str, size: int) -> list[dict[str, Any]]:
    """vLLM's ``ChatCompletionStreamResponse`` chunks for ``reply``, in the order vLLM sends them.
    Content chunks carry ``_content: True`` (taken out before sending) so a cut can be counted."""
    whole = _completion(body, reply, model)
    cid, created = whole["id"], whole["created"]

    def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": usage,
        }

    def choice(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "index": index,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish,
            "stop_reason": None,
        }

    out: list[dict[str, Any]] = []
    for c in whole["choices"]:
        i, message = c["index"], c["message"]
        out.append(chunk([choice(i, {"role": "assistant", "content": ""})]))
        for piece in _pieces(message.get("content") or "", size):
            out.append({**chunk([choice(i, {"content": piece})]), "_content": True})
        for k, call in enumerate(message.get("tool_calls") or []):
            fn = call["function"]
            head = {"index": k, "id": call["id"], "type": "function", "function": {"name": fn["name"]}}
            out.append(chunk([choice(i, {"tool_calls": [head]})]))
            for piece in _pieces(fn["arguments"], size):
                out.append(
                    chunk([choice(i, {"tool_calls": [{"index": k, "function": {"arguments": piece}}]})])
                )
        out.append(chunk([choice(i, {}, c["finish_reason"])]))
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        out.append(chunk([], whole["usage"]))
    return out


FakeOpenAIServer.handler = _Handler


def main(argv: list[str] | None = None) -> None:
    """Run the server in the foreground: ``python -m geosleuth.testing.openai_server --port 8000``.
    Handy for trying ``geosleuth locate --vlm-url`` or ``geosleuth vlm check`` without a GPU."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--model", default="tiny-vlm")
    ap.add_argument("--latency", type=float, default=0.0, help="Simulated seconds per chat request.")
    args, _ = ap.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    server = FakeOpenAIServer(model=args.model, latency_s=args.latency, port=args.port).start()
    logger.info("fake OpenAI-compatible server for %r at %s (Ctrl-C stops it)", args.model, server.base_url)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()


__all__ = [
    "IMAGE_TOKENS",
    "PARIS",
    "VLLM_VERSION",
    "FakeOpenAIServer",
    "RecordedRequest",
    "Reply",
    "ReplySource",
    "obeying",
    "user_text",
]
