"""The OpenAI-compatible backend against a real local HTTP server (geosleuth.testing.openai_server)
that answers in vLLM's format and fails on cue."""

from __future__ import annotations

import asyncio
import base64
import io
import socket
import time

import pytest
from PIL import Image

from geosleuth.agents.vlm.openai_backend import (
    SERVER_PROFILES,
    OpenAICompatibleVLM,
    detect_server,
    image_data_url,
)
from geosleuth.agents.vlm.prompting import PromptBuilder, PromptContext
from geosleuth.config import VLMSettings
from geosleuth.errors import ConfigError, VLMTruncatedError
from geosleuth.schemas import VLMGuess
from geosleuth.testing.openai_server import FakeOpenAIServer, Reply

BERLIN = VLMGuess(latitude=52.52, longitude=13.405, country="Germany", city="Berlin", confidence=0.7)


@pytest.fixture
def server():
    with FakeOpenAIServer(model="tiny-vlm") as srv:
        yield srv


def request(n: int = 2, key: str = "photo.jpg", size: tuple[int, int] = (64, 48)):
    builder = PromptBuilder(VLMSettings(samples=n, rag_k=[0], max_tokens=256))
    return builder.requests(Image.new("RGB", size, "teal"), PromptContext(), key=key)[0]


def backend(srv: FakeOpenAIServer, **kw) -> OpenAICompatibleVLM:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("max_retries", 2)
    return OpenAICompatibleVLM(srv.base_url, **kw)


def chat_bodies(srv: FakeOpenAIServer) -> list[dict]:
    return [r.body for r in srv.requests if r.path.endswith("/chat/completions")]


def test_good_answers_with_vllm_structured_outputs_and_the_image_first(server) -> None:
    server.script(Reply.guess(BERLIN))
    with backend(server) as vlm:
        (call,) = vlm.generate([request(n=2)])
        assert vlm.profile is SERVER_PROFILES["vllm"]  # detected from /v1/models
    assert call.error is None and call.model == "tiny-vlm" and call.structured == "structured_outputs"
    assert len(call.samples) == 2 and all(s.parse == "json" for s in call.samples)
    assert call.usable[0].guess == BERLIN
    assert call.usage.prompt_tokens > 0 and call.usage.completion_tokens > 0
    (body,) = chat_bodies(server)
    assert body["n"] == 2 and body["model"] == "tiny-vlm"
    assert body["structured_outputs"]["json"]["required"][-4:] == [
        "latitude",
        "longitude",
        "radius_km",
        "confidence",
    ]
    assert "response_format" not in body and "guided_json" not in body
    system, user = body["messages"]
    assert system["role"] == "system"
    assert user["content"][0]["type"] == "image_url" and user["content"][-1]["type"] == "text"


def test_images_are_resized_jpeg_data_urls() -> None:
    url = image_data_url(Image.new("RGBA", (3000, 1500)), max_side=512)
    assert url.startswith("data:image/jpeg;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert img.size == (512, 256)
    small = Image.open(
        io.BytesIO(base64.b64decode(image_data_url(Image.new("L", (40, 30))).split(",", 1)[1]))
    )
    assert small.size == (40, 30) and small.mode == "RGB"  # never upscaled


def test_server_kinds_and_their_quirks(server) -> None:
    assert detect_server("https://api.openai.com/v1", []) == "openai"
    assert detect_server("http://x/v1", [{"owned_by": "llamacpp"}]) == "llamacpp"
    assert detect_server("http://x/v1", [{"owned_by": "library"}]) == "ollama"
    assert detect_server("http://x/v1", [{"owned_by": "someone"}]) == "generic"
    with backend(server, model="tiny-vlm", server="ollama") as vlm:
        (call,) = vlm.generate([request(n=3)])
    bodies = chat_bodies(server)
    # Ollama ignores n: three requests of one sample each, schema as response_format
    assert len(bodies) == 3 and all("n" not in b for b in bodies)
    assert all(b["response_format"]["json_schema"]["strict"] is True for b in bodies)
    assert len(call.samples) == 3 and [s.index for s in call.samples] == [0, 1, 2]
    server.reset()
    with backend(server, model="tiny-vlm", server="openai") as vlm:
        vlm.generate([request(n=1)])
    (body,) = chat_bodies(server)
    assert body["max_completion_tokens"] == 256 and "max_tokens" not in body


@pytest.mark.parametrize(
    ("reply", "parse", "error_type"),
    [
        (Reply.text("Looks like Berlin. Final answer: 52.5200, 13.4050"), "free-text", None),
        (Reply.malformed(), "failed", "VLMUnusableOutputError"),
        (Reply.out_of_range(), "failed", "VLMUnusableOutputError"),
        (
            Reply.length('{"clues_used": ["German street signs"], "rationale": "The'),
            "failed",
            "VLMTruncatedError",
        ),
    ],
)
def test_unusable_answers_keep_their_raw_text(server, reply, parse, error_type) -> None:
    server.script(reply)
    with backend(server) as vlm:
        (call,) = vlm.generate([request(n=1)])
    (sample,) = call.samples
    assert sample.raw_text and sample.parse == parse and sample.error_type == error_type
    if error_type:
        assert sample.guess is None and sample.error
    else:
        assert sample.guess is not None and round(sample.guess.latitude, 2) == 52.52
    if error_type == "VLMTruncatedError":
        assert sample.finish_reason == "length"
        with pytest.raises(VLMTruncatedError, match=r"photo\.jpg"):
            call.raise_for_error()


def test_5xx_and_dropped_connections_are_retried(server) -> None:
    server.script(Reply.error(500), Reply.drop(), Reply.error(503), Reply.guess(BERLIN))
    with backend(server, max_retries=3) as vlm:
        (call,) = vlm.generate([request(n=1)])
    assert call.error is None and call.attempts == 4 and call.usable


def test_429_honours_retry_after(server) -> None:
    server.script(Reply.error(429, retry_after=0.4), Reply.guess(BERLIN))
    with backend(server, model="tiny-vlm", server="vllm") as vlm:
        t0 = time.perf_counter()
        (call,) = vlm.generate([request(n=1)])
        waited = time.perf_counter() - t0
    assert call.error is None and call.attempts == 2
    assert waited >= 0.4


def test_giving_up_records_a_typed_error(server) -> None:
    server.default = Reply.error(500)
    with backend(server, model="tiny-vlm", server="vllm", max_retries=2) as vlm:
        (call,) = vlm.generate([request(n=2)])
    assert call.error_type == "VLMServerError" and "500" in (call.error or "")
    assert call.attempts == 3 and call.samples == []
    assert len(chat_bodies(server)) == 3


def test_bad_requests_are_not_retried(server) -> None:
    server.default = Reply.error(400, "At most 1 image(s) may be provided in one prompt.")
    with backend(server, model="tiny-vlm", server="vllm") as vlm:
        (call,) = vlm.generate([request(n=1)])
    assert call.error_type == "VLMRequestRejectedError" and "At most 1 image" in (call.error or "")
    assert call.attempts == 1 and len(chat_bodies(server)) == 1


def test_a_rejected_schema_falls_back_to_plain_text_once(server) -> None:
    server.script(
        Reply.error(400, "structured_outputs: unsupported JSON schema feature"),
        Reply.text('{"latitude": 52.52, "longitude": 13.405}'),
        Reply.text('{"latitude": 52.52, "longitude": 13.405}'),
    )
    with backend(server, model="tiny-vlm", server="vllm") as vlm:
        (first,) = vlm.generate([request(n=1)])
        (second,) = vlm.generate([request(n=1)])
    assert first.structured == "none" and first.usable
    assert second.structured == "none"
    bodies = chat_bodies(server)
    assert "structured_outputs" in bodies[0] and all("structured_outputs" not in b for b in bodies[1:])


def test_timeouts_are_connection_errors(server) -> None:
    server.script(Reply.guess(BERLIN, delay_s=2.0))
    with backend(server, model="tiny-vlm", server="vllm", timeout_s=0.3, max_retries=0) as vlm:
        t0 = time.perf_counter()
        (call,) = vlm.generate([request(n=1)])
    assert time.perf_counter() - t0 < 1.5
    assert call.error_type == "VLMConnectionError" and "timed out" in (call.error or "")


def test_concurrency_is_limited_and_overlapping(server) -> None:
    server.latency_s = 0.25
    with backend(server, model="tiny-vlm", server="vllm", max_concurrency=4) as vlm:
        t0 = time.perf_counter()
        calls = vlm.generate([request(n=1, key=f"p{i}") for i in range(12)])
        elapsed = time.perf_counter() - t0
    assert [c.key for c in calls] == [f"p{i}#zero-shot" for i in range(12)]
    assert all(c.usable for c in calls)
    assert server.max_in_flight == 4
    assert 0.7 <= elapsed < 2.0  # 3 waves of 0.25 s, not 12 in a row (3 s)


def test_a_mixed_batch_loses_no_record(server) -> None:
    server.script(Reply.guess(BERLIN), Reply.error(400, "bad image"), Reply.malformed(), Reply.length("{"))
    with backend(server, model="tiny-vlm", server="vllm", max_concurrency=1) as vlm:
        calls = vlm.generate([request(n=1, key=f"p{i}") for i in range(4)])
    assert [c.key for c in calls] == [f"p{i}#zero-shot" for i in range(4)]
    # which request met which scripted reply depends on arrival order: every outcome, once each
    outcomes = sorted(
        "usable" if c.usable else (c.error_type or (c.samples[0].error_type if c.samples else "")) or "?"
        for c in calls
    )
    assert outcomes == sorted(
        ["usable", "VLMRequestRejectedError", "VLMUnusableOutputError", "VLMTruncatedError"]
    )


def test_model_discovery_and_unknown_models(server) -> None:
    with backend(server) as vlm:
        vlm.generate([request(n=1)])
        assert vlm.model == "tiny-vlm"
    with backend(server, model="no-such-model") as vlm:
        (call,) = vlm.generate([request(n=1)])
    assert call.error_type == "VLMRequestRejectedError" and "no-such-model" in (call.error or "")


def test_an_unreachable_server_fails_every_call_fast() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with OpenAICompatibleVLM(f"http://127.0.0.1:{port}/v1", max_retries=1, backoff_s=0.01) as vlm:
        t0 = time.perf_counter()
        calls = vlm.generate([request(n=1, key="a"), request(n=1, key="b")])
    assert time.perf_counter() - t0 < 5
    assert [c.error_type for c in calls] == ["VLMConnectionError"] * 2
    assert "Is the server running?" in (calls[0].error or "")


def test_async_callers_share_the_backend(server) -> None:
    async def main(vlm: OpenAICompatibleVLM):
        return await asyncio.gather(
            vlm.agenerate([request(n=1, key="a")]), vlm.agenerate([request(n=1, key="b")])
        )

    with backend(server) as vlm:
        first, second = asyncio.run(main(vlm))
    assert first[0].usable and second[0].usable


def test_bad_configuration_is_refused_up_front() -> None:
    with pytest.raises(ConfigError, match="not an http"):
        OpenAICompatibleVLM("127.0.0.1:8000")
    with pytest.raises(ConfigError, match="unknown VLM server kind"):
        OpenAICompatibleVLM("http://127.0.0.1:8000/v1", server="tgi")
