"""The local OpenAI-compatible server, driven by the real ``openai`` clients over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from geosleuth.agents.vlm.parse import parse_guess
from geosleuth.testing.openai_server import IMAGE_TOKENS, PARIS, FakeOpenAIServer, Reply

openai = pytest.importorskip("openai")

MODEL = "tiny-vlm"


def _data_url(fmt: str = "JPEG") -> str:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 40, 40)).save(buf, format=fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode()}"


def _messages(url: str | None = None, text: str = "Where was this photo taken?") -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": url or _data_url()}}]
    return [
        {"role": "system", "content": "You are a geolocation expert."},
        {"role": "user", "content": [*parts, {"type": "text", "text": text}]},
    ]


@pytest.fixture
def srv() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(model=MODEL) as server:
        yield server


@pytest.fixture
def client(srv: FakeOpenAIServer) -> Iterator[Any]:
    c = openai.OpenAI(base_url=srv.base_url, api_key="test-key", max_retries=0, timeout=5.0)
    yield c
    c.close()


def _http(srv: FakeOpenAIServer, path: str, data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(srv.url + path, data=data, method="POST" if data is not None else "GET")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# --- good answers ---------------------------------------------------------------------------------


def test_default_reply_is_a_valid_guess(srv: FakeOpenAIServer, client: Any) -> None:
    resp = client.chat.completions.create(model=MODEL, messages=_messages(), max_tokens=256, temperature=0.7)
    assert resp.model == MODEL and resp.id.startswith("chatcmpl-") and resp.object == "chat.completion"
    (choice,) = resp.choices
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    sample = parse_guess(choice.message.content, choice.finish_reason)
    assert sample.parse == "json" and sample.guess == PARIS
    assert resp.usage.prompt_tokens >= IMAGE_TOKENS
    assert resp.usage.completion_tokens == len(choice.message.content) // 4
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_n_choices_cycle_the_reply_contents(srv: FakeOpenAIServer, client: Any) -> None:
    tokyo = {"latitude": 35.68, "longitude": 139.69}
    srv.script(Reply.guess(PARIS, tokyo, confidence=0.9))
    resp = client.chat.completions.create(model=MODEL, messages=_messages(), n=3)
    assert [c.index for c in resp.choices] == [0, 1, 2]
    lats = [json.loads(c.message.content)["latitude"] for c in resp.choices]
    assert lats == [PARIS.latitude, 35.68, PARIS.latitude]
    assert all(json.loads(c.message.content)["confidence"] == 0.9 for c in resp.choices)


def test_raw_response_is_vllm_shaped(srv: FakeOpenAIServer) -> None:
    body = {"model": MODEL, "messages": _messages(), "n": 2}
    status, headers, raw = _http(srv, "/v1/chat/completions", json.dumps(body).encode())
    data = json.loads(raw)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert [c["index"] for c in data["choices"]] == [0, 1]
    # field by field against bodies a real vLLM returned: tests/test_vllm_parity.py


# --- streaming -----------------------------------------------------------------------------------


def test_streaming_is_refused_unless_turned_on(srv: FakeOpenAIServer, client: Any) -> None:
    with pytest.raises(openai.BadRequestError, match="does not stream"):
        client.chat.completions.create(model=MODEL, messages=_messages(), stream=True)
    srv.streaming = True
    assert list(client.chat.completions.create(model=MODEL, messages=_messages(), stream=True))


def test_streamed_content_comes_in_several_chunks_then_done(srv: FakeOpenAIServer, client: Any) -> None:
    srv.streaming = True
    text = "The sign is in French and names Paris; the postcode 75001 agrees."
    srv.script(Reply.text(text))
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=_messages(), stream=True, stream_options={"include_usage": True}
        )
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant" and deltas[0].content == ""
    pieces = [d.content for d in deltas[1:] if d.content]
    assert len(pieces) > 3 and "".join(pieces) == text
    assert all(len(p) <= srv.chunk_chars for p in pieces)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(text) // 4
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].object == "chat.completion.chunk"


def test_streamed_tool_calls_come_as_deltas(srv: FakeOpenAIServer, client: Any) -> None:
    srv.streaming = True
    srv.script(Reply.calls(("geocode", {"name": "Rue de Rivoli"}), ("check_place", {"place": "Porto"})))
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in client.chat.completions.create(model=MODEL, messages=_messages(), stream=True):
        for tc in chunk.choices[0].delta.tool_calls or []:
            slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            slot["id"] = slot["id"] or (tc.id or "")
            slot["name"] = slot["name"] or (tc.function.name or "")
            slot["arguments"] += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("geocode", {"name": "Rue de Rivoli"}),
        ("check_place", {"place": "Porto"}),
    ]
    assert all(c["id"].startswith("chatcmpl-tool-") for c in calls.values())


def test_a_stream_cut_halfway_is_a_connection_error(srv: FakeOpenAIServer, client: Any) -> None:
    srv.streaming = True
    srv.script(Reply.text("one two three four five six seven", cut_after_chunks=2))
    got = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(model=MODEL, messages=_messages(), stream=True):
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "one two three "  # the role chunk, then two content chunks
    assert client.chat.completions.create(model=MODEL, messages=_messages()).choices  # the server is fine


@pytest.mark.parametrize(
    ("reply", "finish", "parse", "error_type"),
    [
        (Reply.text("I think it's Paris. Final answer: 48.8566, 2.3522"), "stop", "free-text", None),
        (Reply.malformed(), "stop", "failed", "VLMUnusableOutputError"),
        (Reply.out_of_range(), "stop", "failed", "VLMUnusableOutputError"),
        (Reply.length(), "length", "failed", "VLMTruncatedError"),
        (Reply.length('{"latitude": 48.85, "longitude": 2.35}'), "length", "failed", "VLMTruncatedError"),
    ],
    ids=["text", "malformed", "out-of-range", "length", "length-with-coordinates"],
)
def test_answer_kinds_reach_the_parser(
    srv: FakeOpenAIServer, client: Any, reply: Reply, finish: str, parse: str, error_type: str | None
) -> None:
    srv.script(reply)
    (choice,) = client.chat.completions.create(model=MODEL, messages=_messages()).choices
    assert choice.finish_reason == finish
    sample = parse_guess(choice.message.content, choice.finish_reason)
    assert (sample.parse, sample.error_type) == (parse, error_type)


# --- failures -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "exc_type", "status", "error_type"),
    [
        (Reply.error(500), "InternalServerError", 500, "InternalServerError"),
        (Reply.error(503, "engine overloaded"), "InternalServerError", 503, "ServiceUnavailableError"),
        (Reply.error(429, retry_after=7), "RateLimitError", 429, "RateLimitError"),
        (Reply.error(400, "too many images"), "BadRequestError", 400, "BadRequestError"),
        (Reply.error(404), "NotFoundError", 404, "NotFoundError"),
    ],
)
def test_error_replies_raise_the_matching_openai_error(
    srv: FakeOpenAIServer, client: Any, reply: Reply, exc_type: str, status: int, error_type: str
) -> None:
    srv.script(reply)
    with pytest.raises(getattr(openai, exc_type)) as info:
        client.chat.completions.create(model=MODEL, messages=_messages())
    exc = info.value
    assert exc.status_code == status and exc.type == error_type and exc.code == str(status)
    assert exc.body == {
        "message": reply.message or exc.body["message"],
        "type": error_type,
        "param": None,
        "code": status,
    }
    if reply.retry_after is not None:
        assert exc.response.headers["retry-after"] == "7"
    # The next request gets the default answer again.
    assert (
        client.chat.completions.create(model=MODEL, messages=_messages()).choices[0].finish_reason == "stop"
    )


def test_drop_is_a_connection_error_without_a_traceback(
    srv: FakeOpenAIServer, client: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    srv.script(Reply.drop(), Reply.drop())
    for _ in range(2):
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model=MODEL, messages=_messages())
    assert client.chat.completions.create(model=MODEL, messages=_messages()).choices
    assert len(srv.chat_requests) == 3  # the dropped requests were read and recorded
    assert capfd.readouterr().err == ""


def test_delay_beyond_the_client_timeout_is_a_timeout(srv: FakeOpenAIServer, client: Any) -> None:
    srv.script(Reply.guess(PARIS, delay_s=0.5))
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.1).chat.completions.create(model=MODEL, messages=_messages())


def test_unknown_model_is_404_in_vllm_format(client: Any) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9", messages=_messages())
    assert info.value.body == {
        "message": "The model `gpt-9` does not exist. Valid aliases: tiny-vlm.",
        "type": "NotFoundError",
        "param": None,
        "code": 404,
    }


@pytest.mark.parametrize(
    ("data", "expect"),
    [
        (b"{not json", "not a JSON object"),
        (b"", "is empty"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"model": MODEL}).encode(), "messages"),
        (json.dumps({"model": MODEL, "messages": []}).encode(), "messages"),
        (json.dumps({"model": MODEL, "messages": _messages(), "n": 0}).encode(), "n must be"),
        (json.dumps({"model": MODEL, "messages": _messages(), "stream": True}).encode(), "stream"),
    ],
)
def test_bad_bodies_are_400(srv: FakeOpenAIServer, data: bytes, expect: str) -> None:
    status, _, raw = _http(srv, "/v1/chat/completions", data)
    error = json.loads(raw)["error"]
    assert status == 400 and error["type"] == "BadRequestError" and error["code"] == 400
    assert expect in error["message"]


@pytest.mark.parametrize(
    ("url", "expect"),
    [
        ("https://example.com/photo.jpg", "expected a 'data:image/...;base64,' URL"),
        ("data:text/plain;base64,aGVsbG8=", "expected a 'data:image/...;base64,' URL"),
        ("data:image/jpeg;base64,@@not-base64@@", "does not decode"),
        ("data:image/jpeg;base64," + base64.b64encode(b"hello, not an image").decode(), "not an image"),
    ],
)
def test_images_are_checked(srv: FakeOpenAIServer, client: Any, url: str, expect: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=_messages(url))
    assert "messages[1].content[0].image_url" in info.value.message and expect in info.value.message
    srv.check_images = False
    assert client.chat.completions.create(model=MODEL, messages=_messages(url)).choices


def test_png_and_text_only_requests_are_fine(client: Any) -> None:
    assert client.chat.completions.create(model=MODEL, messages=_messages(_data_url("PNG"))).choices
    resp = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x" * 400}])
    assert resp.usage.prompt_tokens == 100


def test_api_key_is_enforced_when_set() -> None:
    with FakeOpenAIServer(model=MODEL, api_key="secret") as server:
        with openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0) as bad:
            with pytest.raises(openai.AuthenticationError):
                bad.chat.completions.create(model=MODEL, messages=_messages())
            with pytest.raises(openai.AuthenticationError):
                bad.models.list()
        with openai.OpenAI(base_url=server.base_url, api_key="secret", max_retries=0) as good:
            assert good.chat.completions.create(model=MODEL, messages=_messages()).choices
        assert _http(server, "/health")[0] == 200  # health needs no key, as in vLLM


# --- scripting, recording, concurrency ------------------------------------------------------------


def test_script_then_default_function(srv: FakeOpenAIServer, client: Any) -> None:
    srv.script(Reply.text("first 1.5, 2.5"), lambda body: Reply.text(f"second n={body['n']}"))
    srv.default = lambda body: Reply.text(f"default for {body['messages'][-1]['content']}")
    assert srv.pending == 2

    def ask(content: str = "q", n: int = 1) -> list[str]:
        resp = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": content}], n=n
        )
        return [c.message.content for c in resp.choices]

    assert ask() == ["first 1.5, 2.5"]
    assert ask(n=2) == ["second n=2", "second n=2"]
    assert ask("hello") == ["default for hello"]
    assert srv.pending == 0


def test_failing_default_function_is_a_500(srv: FakeOpenAIServer, client: Any) -> None:
    srv.default = lambda body: 1 / 0  # type: ignore[assignment,return-value]
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=MODEL, messages=_messages())
    assert "ZeroDivisionError" in info.value.message


def test_requests_are_recorded_with_their_bodies(srv: FakeOpenAIServer, client: Any) -> None:
    client.chat.completions.create(
        model=MODEL, messages=_messages(), n=2, temperature=0.3, max_tokens=64, seed=7
    )
    client.models.list()
    chat, models = srv.requests
    assert (chat.method, chat.path, models.method, models.path) == (
        "POST",
        "/v1/chat/completions",
        "GET",
        "/v1/models",
    )
    assert chat.headers["authorization"] == "Bearer test-key"
    assert chat.body["n"] == 2 and chat.body["temperature"] == 0.3 and chat.body["seed"] == 7
    assert chat.body["messages"][1]["content"][0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert srv.chat_requests == [chat]
    srv.script(Reply.drop())
    srv.reset()
    assert srv.requests == [] and srv.pending == 0 and srv.max_in_flight == 0


def test_latency_overlaps_under_concurrency() -> None:
    async def main(server: FakeOpenAIServer) -> float:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as aclient:
            start = time.perf_counter()
            results = await asyncio.gather(
                *(aclient.chat.completions.create(model=MODEL, messages=_messages()) for _ in range(8))
            )
            elapsed = time.perf_counter() - start
        assert all(r.choices[0].finish_reason == "stop" for r in results)
        return elapsed

    with FakeOpenAIServer(model=MODEL, latency_s=0.3) as server:
        elapsed = asyncio.run(main(server))
        assert 0.3 <= elapsed < 1.2, elapsed  # serial would take 2.4 s
        assert server.max_in_flight == 8


def test_models_health_version(srv: FakeOpenAIServer, client: Any) -> None:
    (card,) = client.models.list().data
    assert (card.id, card.owned_by) == (MODEL, "vllm")
    status, _, raw = _http(srv, "/v1/models")
    data = json.loads(raw)
    assert status == 200 and data["object"] == "list"
    (raw_card,) = data["data"]
    assert list(raw_card) == [
        "id",
        "object",
        "created",
        "owned_by",
        "root",
        "parent",
        "max_model_len",
        "permission",
    ]
    assert (raw_card["root"], raw_card["parent"], raw_card["max_model_len"]) == (MODEL, None, 8192)
    assert raw_card["permission"][0]["object"] == "model_permission"
    assert _http(srv, "/health")[::2] == (200, b"")
    status, _, raw = _http(srv, "/version")
    assert status == 200 and "version" in json.loads(raw)
    assert _http(srv, "/v1/nothing")[0] == 404
    assert _http(srv, "/v1/models", b"{}")[0] == 405


def test_lifecycle_and_argument_errors() -> None:
    server = FakeOpenAIServer()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.base_url
    server.start()
    try:
        assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
    finally:
        server.stop()
    server.stop()  # idempotent
    with pytest.raises(ValueError, match="latency_s"):
        FakeOpenAIServer(latency_s=-1)
    with pytest.raises(ValueError, match="400-599"):
        Reply.error(200)
