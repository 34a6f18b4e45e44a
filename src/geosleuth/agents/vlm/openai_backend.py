"""The OpenAI-compatible HTTP backend: vLLM first, and Ollama, llama.cpp's server and OpenAI itself.

The ``openai`` package does the HTTP; this module adds what a geolocation batch needs:

* images as JPEG data URLs, resized to a longest side, first in the message (prefix caching);
* the guess JSON schema sent the way each server understands it (:data:`SERVER_PROFILES`: every
  server quirk lives there and nowhere else), with one automatic fallback to plain text when a
  server rejects the schema (the tolerant parser then reads the answer);
* ``n`` samples per request, or ``n`` parallel requests where a server ignores ``n``;
* timeouts, retries with exponential backoff and jitter on connection errors, 429 (honouring
  ``Retry-After``) and 5xx, and a concurrency limit shared by every caller of the backend;
* one :class:`~geosleuth.schemas.VLMCall` per request, whatever happens, with token usage;
* conversations (:meth:`OpenAICompatibleVLM.chat`): messages and tools in OpenAI's shape, the
  answer streamed as it comes (server-sent events, tool-call deltas put together), or asked again
  without streaming, and remembered, when a server refuses ``stream``.

It runs its own event loop on a daemon thread, so synchronous callers (the locate pipeline, worker
threads of a batch) and asynchronous callers share one client, one connection pool and one limit.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlparse

from PIL import Image

from geosleuth.agents.vlm.base import (
    ChatReply,
    ChatToolCall,
    VLMRequest,
    call_record,
    guess_json_schema,
    resize_longest,
)
from geosleuth.agents.vlm.parse import parse_guess
from geosleuth.errors import (
    ConfigError,
    MissingDependencyError,
    VLMConnectionError,
    VLMError,
    VLMRequestRejectedError,
    VLMServerError,
)
from geosleuth.schemas import TokenUsage, VLMCall, VLMSample

log = logging.getLogger(__name__)
T = TypeVar("T")

StructuredMode = Literal["structured_outputs", "response_format", "none"]


@dataclass(frozen=True)
class ServerProfile:
    """How one kind of server wants to be asked."""

    name: str
    structured: StructuredMode
    supports_n: bool = True
    max_tokens_field: str = "max_tokens"
    stream_usage: bool = False
    """Ask for token usage at the end of a stream (``stream_options.include_usage``)."""


SERVER_PROFILES: dict[str, ServerProfile] = {
    # vLLM >= 0.12: `structured_outputs` in the body (guided_json was removed); n is honoured;
    # streams end with the usage when stream_options asks.
    "vllm": ServerProfile("vllm", "structured_outputs", stream_usage=True),
    # OpenAI: strict json_schema; new models only accept max_completion_tokens.
    "openai": ServerProfile(
        "openai", "response_format", max_tokens_field="max_completion_tokens", stream_usage=True
    ),
    # Ollama's OpenAI endpoint takes response_format json_schema but ignores n.
    "ollama": ServerProfile("ollama", "response_format", supports_n=False),
    # llama.cpp's server turns response_format json_schema into a grammar; n is not supported.
    "llamacpp": ServerProfile("llamacpp", "response_format", supports_n=False),
    # Anything else that speaks the protocol: the standard parameter, n as asked.
    "generic": ServerProfile("generic", "response_format"),
}


def detect_server(base_url: str, models: list[dict[str, Any]]) -> str:
    """The profile name for a server, from its host and how its /models entries are owned."""
    host = urlparse(base_url).hostname or ""
    if host.endswith("openai.com"):
        return "openai"
    owners = {str(m.get("owned_by", "")).lower() for m in models}
    if "vllm" in owners or any("max_model_len" in m for m in models):
        return "vllm"
    if "llamacpp" in owners:
        return "llamacpp"
    if owners & {"library", "ollama"}:
        return "ollama"
    return "generic"


def image_data_url(image: Image.Image, max_side: int = 1024, quality: int = 90) -> str:
    """A JPEG data URL of ``image`` scaled down (never up) to ``max_side`` on its longest side."""
    buf = io.BytesIO()
    resize_longest(image, max_side).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class _LoopThread:
    """An asyncio loop on a daemon thread, for running coroutines from synchronous code."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        if asyncio.get_running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)


class OpenAICompatibleVLM:
    """A VLM behind an OpenAI-compatible chat-completions endpoint (see the module docstring).

    ``server`` picks a profile from :data:`SERVER_PROFILES`; ``"auto"`` asks the server's /models.
    ``model=None`` uses the server's only model (an error names them when there are several).
    """

    name = "openai-compatible"

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        server: str = "auto",
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_concurrency: int = 8,
        image_max_side: int = 1024,
        jpeg_quality: int = 90,
    ) -> None:
        try:
            import openai  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise MissingDependencyError("openai", "vlm", "the OpenAI-compatible VLM backend") from exc
        parsed = urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(
                f"VLM base URL {base_url!r} is not an http(s) URL; give the server's OpenAI endpoint, "
                "e.g. http://127.0.0.1:8000/v1"
            )
        if server != "auto" and server not in SERVER_PROFILES:
            raise ConfigError(
                f"unknown VLM server kind {server!r}; choose auto or one of {sorted(SERVER_PROFILES)}"
            )
        self.base_url = base_url.rstrip("/")
        self._model = model
        self._api_key = api_key or "EMPTY"
        self._server = server
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_concurrency = max_concurrency
        self.image_max_side = image_max_side
        self.jpeg_quality = jpeg_quality
        self._runner: _LoopThread | None = None
        self._runner_lock = threading.Lock()
        self._client: Any = None
        self._sem: asyncio.Semaphore | None = None
        self._profile: ServerProfile | None = None
        self._models: list[dict[str, Any]] | None = None
        self._setup_lock: asyncio.Lock | None = None
        self._schema_rejected = False
        self._stream_rejected = False
        self._schema = guess_json_schema()

    # -- protocol --

    @property
    def model(self) -> str:
        return self._model or "(server default)"

    @property
    def profile(self) -> ServerProfile | None:
        return self._profile

    def generate(self, requests: Sequence[VLMRequest]) -> list[VLMCall]:
        return self._loop().run(self._generate(list(requests)))

    async def agenerate(self, requests: Sequence[VLMRequest]) -> list[VLMCall]:
        return await self._loop().run_async(self._generate(list(requests)))

    def choose_tools(
        self,
        system: str,
        text: str,
        tools: list[dict[str, Any]],
        *,
        image: Image.Image | None = None,
        max_tokens: int = 512,
    ) -> list[tuple[str, dict[str, Any]]]:
        """Offer ``tools`` (OpenAI function specs) and return the calls the model makes, as (name,
        arguments); ``image``, when given, goes before the text (so the model can choose a region
        to zoom into). Raises :class:`VLMError` subclasses when the server cannot (vLLM needs
        ``--enable-auto-tool-choice --tool-call-parser ...``); the caller then picks by rule."""
        return self._loop().run(self._choose_tools(system, text, tools, image, max_tokens))

    async def _choose_tools(
        self,
        system: str,
        text: str,
        tools: list[dict[str, Any]],
        image: Image.Image | None,
        max_tokens: int,
    ) -> list[tuple[str, dict[str, Any]]]:
        await self._setup()
        client = self._ensure_client()
        assert self._profile is not None
        content: str | list[dict[str, Any]] = text
        if image is not None:
            url = await asyncio.to_thread(self._encode, image)
            content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]
        body = {
            "model": self._model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": content}],
            "tools": tools,
            "tool_choice": "auto",
            "temperature": 0.0,
            self._profile.max_tokens_field: max_tokens,
        }
        data = await self._with_retries(
            lambda: client.post("/chat/completions", body=body, cast_to=object), what="choosing tools"
        )
        try:
            calls = (data["choices"][0]["message"].get("tool_calls") or []) if isinstance(data, dict) else []
            out = []
            for call in calls:
                fn = call["function"]
                args = json.loads(fn.get("arguments") or "{}")
                if isinstance(args, dict):
                    out.append((str(fn["name"]), args))
            return out
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise VLMServerError(
                f"{self.base_url} answered the tool request with {str(data)[:200]!r}"
            ) from exc

    def image_url(self, image: Image.Image) -> str:
        """``image`` as this backend sends it: a JPEG data URL scaled down to ``image_max_side``."""
        return self._encode(image)

    def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str = "auto",
        max_tokens: int = 1024,
        temperature: float = 0.0,
        stream: bool = True,
    ) -> Generator[str, None, ChatReply]:
        """One chat request: yields the answer's text as it streams in and returns the whole
        :class:`ChatReply` (with the tool calls it makes). A server that refuses ``stream`` is
        asked again without it, and from then on never streamed to. Connection errors, 429 and
        5xx are retried before anything arrives; a stream that breaks halfway is a
        :class:`VLMConnectionError` (nothing is retried once text has been given out). Closing
        the generator cancels the request."""
        pieces: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        future = asyncio.run_coroutine_threadsafe(
            self._chat(messages, tools, tool_choice, max_tokens, temperature, stream, pieces.put),
            self._loop().loop,
        )
        try:
            while (piece := pieces.get()) is not None:
                yield piece
            return future.result()
        finally:
            if not future.done():
                future.cancel()

    async def _chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        tool_choice: str,
        max_tokens: int,
        temperature: float,
        stream: bool,
        emit: Callable[[str | None], None],
    ) -> ChatReply:
        try:
            await self._setup()
            client = self._ensure_client()
            assert self._profile is not None
            body: dict[str, Any] = {
                "model": self._model,
                "messages": messages,
                "temperature": temperature,
                self._profile.max_tokens_field: max_tokens,
            }
            if tools:
                body["tools"] = tools
                body["tool_choice"] = tool_choice
            t0 = time.perf_counter()
            if stream and not self._stream_rejected:
                try:
                    return await self._chat_streamed(body, emit, t0)
                except VLMRequestRejectedError as exc:
                    if "stream" not in str(exc).lower():
                        raise
                    self._stream_rejected = True
                    log.warning("%s refused to stream (%s); asking without streaming", self.base_url, exc)
            data = await self._with_retries(
                lambda: client.post("/chat/completions", body=body, cast_to=object),
                what="answering a chat message",
            )
            reply = _read_chat(data, self.base_url)
            reply.latency_s = round(time.perf_counter() - t0, 4)
            if reply.content:
                emit(reply.content)
            return reply
        finally:
            emit(None)

    async def _chat_streamed(
        self, body: dict[str, Any], emit: Callable[[str | None], None], t0: float
    ) -> ChatReply:
        import openai

        client = self._ensure_client()
        assert self._profile is not None
        body = {**body, "stream": True}
        if self._profile.stream_usage:
            body["stream_options"] = {"include_usage": True}
        stream = await self._with_retries(
            lambda: client.post(
                "/chat/completions",
                body=body,
                cast_to=object,
                stream=True,
                stream_cls=openai.AsyncStream[object],
            ),
            what="answering a chat message",
        )
        acc = _ChatAccumulator(self.base_url)
        try:
            async for chunk in stream:
                piece = acc.add(chunk)
                if piece:
                    emit(piece)
        except openai.APIConnectionError as exc:
            kind = "timed out" if isinstance(exc, openai.APITimeoutError) else "dropped the connection"
            raise VLMConnectionError(
                f"{self.base_url} {kind} in the middle of a streamed answer (after {acc.chunks} chunks): "
                f"{str(exc).rstrip('.')}"
            ) from exc
        except openai.APIError as exc:  # an error event inside the stream
            raise VLMServerError(
                f"{self.base_url} sent an error in the middle of a streamed answer: {_message(exc)}"
            ) from exc
        finally:
            await stream.close()
        return acc.reply(round(time.perf_counter() - t0, 4))

    def list_models(self) -> list[dict[str, Any]]:
        """The server's /models entries (raises :class:`VLMError` subclasses when unreachable)."""
        return self._loop().run(self._list_models())

    def close(self) -> None:
        with self._runner_lock:
            runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._client is not None:
            try:
                runner.run(self._client.close())
            except Exception as exc:  # closing is best effort
                log.debug("closing the OpenAI client: %s", exc)
        runner.stop()
        self._client = None
        self._sem = None
        self._setup_lock = None

    def __enter__(self) -> OpenAICompatibleVLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --

    def _loop(self) -> _LoopThread:
        with self._runner_lock:
            if self._runner is None:
                self._runner = _LoopThread(f"geosleuth-vlm-{self.base_url}")
            return self._runner

    def _ensure_client(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.AsyncOpenAI(
                base_url=self.base_url, api_key=self._api_key, timeout=self.timeout_s, max_retries=0
            )
            self._sem = asyncio.Semaphore(self.max_concurrency)
            self._setup_lock = asyncio.Lock()
        return self._client

    async def _list_models(self) -> list[dict[str, Any]]:
        client = self._ensure_client()
        page = await self._with_retries(lambda: client.models.list(), what="listing models")
        return [m.model_dump() for m in page.data]

    async def _setup(self) -> None:
        """Find the model and the server kind, once."""
        self._ensure_client()
        assert self._setup_lock is not None
        async with self._setup_lock:
            if self._profile is not None and self._model is not None:
                return
            models: list[dict[str, Any]] = []
            if self._server == "auto" or self._model is None:
                models = await self._list_models()
                self._models = models
            if self._model is None:
                ids = [str(m.get("id")) for m in models]
                if len(ids) != 1:
                    raise ConfigError(
                        f"the server at {self.base_url} serves {len(ids)} models ({', '.join(ids) or 'none'}); "
                        "name one with --vlm-model / vlm.model"
                    )
                self._model = ids[0]
            kind = detect_server(self.base_url, models) if self._server == "auto" else self._server
            self._profile = SERVER_PROFILES[kind]
            log.info("VLM server %s: %s profile, model %s", self.base_url, kind, self._model)

    async def _generate(self, requests: list[VLMRequest]) -> list[VLMCall]:
        try:
            await self._setup()
        except (VLMError, ConfigError) as exc:
            return [self._failed(r, exc, 0.0, 0, "none") for r in requests]
        # Each distinct image is encoded once (the prompt variants of a photo share it), in a worker
        # thread (PIL releases the GIL while it resizes and compresses), when a request first needs it.
        urls: dict[int, asyncio.Future[str]] = {}
        return list(await asyncio.gather(*(self._call(r, urls) for r in requests)))

    def _encode(self, image: Image.Image) -> str:
        return image_data_url(image, self.image_max_side, self.jpeg_quality)

    def _failed(
        self, r: VLMRequest, exc: BaseException, latency: float, attempts: int, mode: StructuredMode
    ) -> VLMCall:
        return call_record(
            r,
            model=self.model,
            backend=self.name,
            structured=mode,
            latency_s=round(latency, 4),
            attempts=attempts,
            error=str(exc),
            error_type=type(exc).__name__,
        )

    async def _messages(self, r: VLMRequest, urls: dict[int, asyncio.Future[str]]) -> list[dict[str, Any]]:
        for img in r.images:
            if id(img) not in urls:
                urls[id(img)] = asyncio.ensure_future(asyncio.to_thread(self._encode, img))
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": await urls[id(img)]}} for img in r.images
        ]
        content.append({"type": "text", "text": r.text})
        return [{"role": "system", "content": r.system}, {"role": "user", "content": content}]

    def _params(self, r: VLMRequest, n: int, mode: StructuredMode) -> dict[str, Any]:
        assert self._profile is not None
        params: dict[str, Any] = {
            "model": self._model,
            "temperature": r.temperature,
            "top_p": r.top_p,
            self._profile.max_tokens_field: r.max_tokens,
        }
        if n > 1:
            params["n"] = n
        if r.seed is not None:
            params["seed"] = r.seed
        schema = self._schema
        if mode == "structured_outputs":
            params["structured_outputs"] = {"json": schema}
        elif mode == "response_format":
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "geolocation_guess", "schema": schema, "strict": True},
            }
        return params

    async def _call(self, r: VLMRequest, urls: dict[int, asyncio.Future[str]]) -> VLMCall:
        assert self._profile is not None
        t0 = time.perf_counter()
        mode: StructuredMode = "none"
        if r.structured and not self._schema_rejected:
            mode = self._profile.structured
        try:
            messages = await self._messages(r, urls)
        except (OSError, ValueError) as exc:
            return self._failed(
                r, VLMRequestRejectedError(f"could not encode the image: {exc}"), 0.0, 0, mode
            )
        attempts = 0
        # Servers that ignore n get n requests of one sample each.
        sizes = [r.n] if self._profile.supports_n or r.n == 1 else [1] * r.n
        try:
            results = await asyncio.gather(*(self._request(r, messages, n, mode) for n in sizes))
        except _SchemaRejected:
            # The server does not take the schema: ask again in plain text, and remember.
            self._schema_rejected = True
            log.warning("%s rejected the JSON schema; asking for plain JSON text instead", self.base_url)
            mode = "none"
            try:
                results = await asyncio.gather(*(self._request(r, messages, n, mode) for n in sizes))
            except VLMError as exc:
                return self._failed(r, exc, time.perf_counter() - t0, 1, mode)
        except VLMError as exc:
            return self._failed(r, exc, time.perf_counter() - t0, getattr(exc, "attempts", 1), mode)
        samples: list[VLMSample] = []
        usage = TokenUsage()
        for response, tries in results:
            attempts += tries
            choices, used = response
            usage = usage + used
            for text, finish_reason in choices:
                samples.append(parse_guess(text, finish_reason, index=len(samples)))
        return call_record(
            r,
            model=self.model,
            backend=self.name,
            structured=mode,
            samples=samples,
            usage=usage,
            latency_s=round(time.perf_counter() - t0, 4),
            attempts=attempts,
        )

    async def _request(
        self, r: VLMRequest, messages: list[dict[str, Any]], n: int, mode: StructuredMode
    ) -> tuple[tuple[list[tuple[str, str | None]], TokenUsage], int]:
        client = self._ensure_client()
        params = self._params(r, n, mode)
        tries = 0

        async def once() -> Any:
            nonlocal tries
            tries += 1
            # The raw POST skips the typed wrapper's recursive parameter transform and response
            # model construction (~7 ms of CPU per request, measured): with dozens of requests in
            # flight on a small machine that, not the server, was the limit. Errors, timeouts and
            # auth are still the client's.
            return await client.post(
                "/chat/completions", body={"messages": messages, **params}, cast_to=object
            )

        try:
            response = await self._with_retries(once, what=f"{r.key}")
        except VLMRequestRejectedError as exc:
            if mode != "none" and _mentions_schema(str(exc)):
                raise _SchemaRejected(str(exc)) from exc
            raise
        return _read_completion(response, self.base_url), tries

    async def _with_retries(self, make: Any, *, what: str) -> Any:
        """Call ``make()`` (a coroutine factory) under the concurrency limit, retrying what can be
        retried. Raises a typed :class:`VLMError` with ``attempts`` set."""
        import openai

        assert self._sem is not None
        attempt = 0
        while True:
            attempt += 1
            delay: float | None = None
            try:
                async with self._sem:
                    return await make()
            except openai.APIConnectionError as exc:  # includes timeouts and dropped connections
                kind = "timed out" if isinstance(exc, openai.APITimeoutError) else "could not connect"
                error: VLMError = VLMConnectionError(
                    f"{kind} to {self.base_url} while {what}: {str(exc).rstrip('.')}. Is the server running? "
                    f"(`geosleuth vlm check {self.base_url}`)"
                )
            except openai.RateLimitError as exc:
                error = VLMServerError(
                    f"{self.base_url} is rate limiting (429) while {what}: {_message(exc)}"
                )
                delay = _retry_after(exc)
            except openai.APIStatusError as exc:
                if exc.status_code >= 500:
                    error = VLMServerError(
                        f"{self.base_url} failed with HTTP {exc.status_code} while {what}: {_message(exc)}"
                    )
                    delay = _retry_after(exc)
                else:
                    rejected = VLMRequestRejectedError(
                        f"{self.base_url} rejected the request with HTTP {exc.status_code} while {what}: "
                        f"{_message(exc)}"
                    )
                    rejected.attempts = attempt  # type: ignore[attr-defined]
                    raise rejected from exc
            if attempt > self.max_retries:
                error.attempts = attempt  # type: ignore[attr-defined]
                raise error
            if delay is None:
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                delay *= 0.5 + random.random()  # jitter, so a crowd of clients does not retry in step
            delay = min(delay, self.max_backoff_s)
            log.info("%s; retry %d/%d in %.2f s", error, attempt, self.max_retries, delay)
            await asyncio.sleep(delay)


def _read_completion(data: Any, where: str) -> tuple[list[tuple[str, str | None]], TokenUsage]:
    """(text, finish_reason) per choice in index order, and the token usage, from a chat-completion
    body; a body of another shape is a :class:`VLMServerError`."""
    try:
        choices = sorted(data["choices"], key=lambda c: int(c.get("index", 0)))
        out = [(str((c.get("message") or {}).get("content") or ""), c.get("finish_reason")) for c in choices]
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise VLMServerError(
            f"{where} answered with something that is not a chat completion: {str(data)[:200]!r}"
        ) from exc
    used = data.get("usage") or {}
    usage = TokenUsage(
        prompt_tokens=int(used.get("prompt_tokens") or 0),
        completion_tokens=int(used.get("completion_tokens") or 0),
    )
    return out, usage


class _ChatAccumulator:
    """Puts a streamed chat answer together: content deltas in order, tool calls by their index
    (the id and name come first, the arguments in pieces), the finish reason and the usage."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.content: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.finish: str | None = None
        self.usage = TokenUsage()
        self.chunks = 0

    def add(self, chunk: Any) -> str:
        """Take one chunk; return its new text ("" when it has none)."""
        self.chunks += 1
        if not isinstance(chunk, dict):
            raise VLMServerError(f"{self.where} streamed something that is not a chunk: {str(chunk)[:200]!r}")
        used = chunk.get("usage")
        if isinstance(used, dict):
            self.usage = TokenUsage(
                prompt_tokens=int(used.get("prompt_tokens") or 0),
                completion_tokens=int(used.get("completion_tokens") or 0),
            )
        text = ""
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or int(choice.get("index") or 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                text += delta["content"]
            for tc in delta.get("tool_calls") or []:
                slot = self.calls.setdefault(
                    int(tc.get("index", len(self.calls))), {"id": "", "name": "", "arguments": ""}
                )
                fn = tc.get("function") or {}
                if tc.get("id") and not slot["id"]:
                    slot["id"] = str(tc["id"])
                if fn.get("name") and not slot["name"]:  # sent once; some servers repeat it
                    slot["name"] = str(fn["name"])
                args = fn.get("arguments")
                if args:
                    slot["arguments"] += args if isinstance(args, str) else json.dumps(args)
            if choice.get("finish_reason"):
                self.finish = str(choice["finish_reason"])
        if text:
            self.content.append(text)
        return text

    def reply(self, latency_s: float) -> ChatReply:
        calls = [
            ChatToolCall(id=c["id"] or f"call_{i}", name=c["name"], arguments=c["arguments"])
            for i, c in sorted(self.calls.items())
            if c["name"]
        ]
        return ChatReply(
            content="".join(self.content),
            tool_calls=calls,
            finish_reason=self.finish,
            usage=self.usage,
            streamed=True,
            latency_s=latency_s,
        )


def _read_chat(data: Any, where: str) -> ChatReply:
    """The first choice of a (not streamed) chat completion, with its tool calls."""
    try:
        choice = min(data["choices"], key=lambda c: int(c.get("index") or 0))
        message = choice.get("message") or {}
        calls = []
        for i, call in enumerate(message.get("tool_calls") or []):
            fn = call["function"]
            args = fn.get("arguments")
            # Arguments are JSON text in OpenAI's protocol; Ollama sends an object.
            text = args if isinstance(args, str) else json.dumps(args if args is not None else {})
            calls.append(
                ChatToolCall(id=str(call.get("id") or f"call_{i}"), name=str(fn["name"]), arguments=text)
            )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise VLMServerError(
            f"{where} answered with something that is not a chat completion: {str(data)[:200]!r}"
        ) from exc
    used = data.get("usage") or {}
    return ChatReply(
        content=str(message.get("content") or ""),
        tool_calls=calls,
        finish_reason=choice.get("finish_reason"),
        usage=TokenUsage(
            prompt_tokens=int(used.get("prompt_tokens") or 0),
            completion_tokens=int(used.get("completion_tokens") or 0),
        ),
    )


class ReplicatedVLM:
    """Several servers of the same model (vLLM replicas) behind one backend: each request goes to
    the replica with the fewest requests in flight; each replica keeps its own concurrency limit,
    retries and quirks. Records say which model answered, as with one server."""

    name = "openai-compatible"

    def __init__(self, base_urls: Sequence[str], model: str | None = None, **kwargs: Any) -> None:
        if len(base_urls) < 1:
            raise ConfigError("ReplicatedVLM needs at least one base URL")
        self.replicas = [OpenAICompatibleVLM(url, model, **kwargs) for url in base_urls]
        self._in_flight = [0] * len(self.replicas)
        self._lock = threading.Lock()
        self._runner = _LoopThread("geosleuth-vlm-replicas")
        self.served = [0] * len(self.replicas)

    @property
    def model(self) -> str:
        return self.replicas[0].model

    def generate(self, requests: Sequence[VLMRequest]) -> list[VLMCall]:
        return self._runner.run(self._generate(list(requests)))

    async def agenerate(self, requests: Sequence[VLMRequest]) -> list[VLMCall]:
        return await self._runner.run_async(self._generate(list(requests)))

    async def _generate(self, requests: list[VLMRequest]) -> list[VLMCall]:
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def _one(self, r: VLMRequest) -> VLMCall:
        with self._lock:
            i = min(range(len(self.replicas)), key=lambda j: (self._in_flight[j], self.served[j]))
            self._in_flight[i] += 1
            self.served[i] += 1
        try:
            return (await self.replicas[i].agenerate([r]))[0]
        finally:
            with self._lock:
                self._in_flight[i] -= 1

    def choose_tools(
        self,
        system: str,
        text: str,
        tools: list[dict[str, Any]],
        *,
        image: Image.Image | None = None,
        max_tokens: int = 512,
    ) -> list[tuple[str, dict[str, Any]]]:
        return self.replicas[0].choose_tools(system, text, tools, image=image, max_tokens=max_tokens)

    def image_url(self, image: Image.Image) -> str:
        return self.replicas[0].image_url(image)

    def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str = "auto",
        max_tokens: int = 1024,
        temperature: float = 0.0,
        stream: bool = True,
    ) -> Generator[str, None, ChatReply]:
        """A conversation stays on one replica (the first), so its prefix cache serves every turn."""
        return self.replicas[0].chat(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            max_tokens=max_tokens,
            temperature=temperature,
            stream=stream,
        )

    def close(self) -> None:
        for replica in self.replicas:
            replica.close()
        self._runner.stop()


def split_urls(value: str) -> list[str]:
    """``vlm.base_url`` may list several replicas, separated by commas or spaces."""
    return [u for u in value.replace(",", " ").split() if u]


class _SchemaRejected(VLMError):
    """The server refused the structured-output parameters (internal: triggers the fallback)."""


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if body.get("message"):
            return str(body["message"])
    return str(getattr(exc, "message", exc))


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


_SCHEMA_WORDS = ("response_format", "json_schema", "structured", "guided", "grammar", "schema")


def _mentions_schema(message: str) -> bool:
    low = message.lower()
    return any(w in low for w in _SCHEMA_WORDS)
