"""LangChain tools (geosleuth.integrations.langchain): made from the registry, content_and_artifact
(the Prediction as locate's artifact), typed errors as error ToolMessages; and the README's agent
loop, run as written with a scripted chat model that calls locate."""

from __future__ import annotations

import re
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage

from conftest import ROOT, fixture
from geosleuth.integrations.langchain import langchain_tools
from geosleuth.integrations.tools import INTEGRATION_TOOLS, Explanation, IntegrationContext
from geosleuth.schemas import Prediction

ANSWER = "It was taken in Paris, by the photo's GPS metadata."


class ScriptedToolModel(GenericFakeChatModel):
    """A chat model that answers from a script and accepts tools (the script makes the calls)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedToolModel:
        return self


def scripted(image: str) -> ScriptedToolModel:
    call = {"name": "locate", "args": {"image": image}, "id": "call_1", "type": "tool_call"}
    return ScriptedToolModel(
        messages=iter([AIMessage(content="", tool_calls=[call]), AIMessage(content=ANSWER)])
    )


def readme_example() -> str:
    """The README's LangChain example: the python block after its marker."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- langchain-example -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert match, "README.md lost its LangChain example (the <!-- langchain-example --> block)"
    return match.group(1)


@pytest.fixture
def ctx(settings, exif_locator, tmp_path):  # type: ignore[no-untyped-def]
    context = IntegrationContext(settings, locator=exif_locator, database=str(tmp_path / "lc.sqlite3"))
    yield context
    context.close()


@pytest.mark.slow  # the example builds its own locator, OCR included
def test_the_readme_agent_loop_calls_locate_and_gets_the_prediction_as_artifact(monkeypatch):
    monkeypatch.chdir(ROOT)  # the example names tests/fixtures/exif_gps.jpg
    namespace: dict[str, Any] = {"model": scripted("tests/fixtures/exif_gps.jpg")}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    messages = namespace["messages"]
    assert [m.type for m in messages] == ["human", "ai", "tool"]
    tool_message = messages[2]
    assert isinstance(tool_message, ToolMessage) and tool_message.status == "success"
    assert tool_message.tool_call_id == "call_1" and tool_message.name == "locate"
    prediction = tool_message.artifact
    assert isinstance(prediction, Prediction) and prediction.best is not None
    assert prediction.best.place is not None and prediction.best.place.country_code == "FR"
    assert "Paris" in tool_message.content and "pred_" in tool_message.content
    assert namespace["reply"].content == ANSWER


def test_tools_are_derived_from_the_registry(ctx):
    tools = langchain_tools(ctx)
    assert [t.name for t in tools] == INTEGRATION_TOOLS.names
    for tool in tools:
        declared = INTEGRATION_TOOLS[tool.name]
        assert tool.description == declared.description
        assert tool.args_schema is declared.arguments
        assert tool.response_format == "content_and_artifact"


def test_explain_after_locate_and_errors_as_error_tool_messages(ctx):
    by_name = {t.name: t for t in langchain_tools(ctx)}

    def invoke(name: str, args: dict[str, Any]) -> ToolMessage:
        message = by_name[name].invoke(
            {"name": name, "args": args, "id": f"call_{name}", "type": "tool_call"}
        )
        assert isinstance(message, ToolMessage)
        return message

    located = invoke("locate", {"image": str(fixture("exif_gps.jpg"))})
    pid = re.search(r"pred_[A-Za-z0-9_-]+", located.content)
    assert pid is not None
    explained = invoke("explain", {"prediction_id": pid.group(0)})
    assert isinstance(explained.artifact, Explanation) and explained.artifact.id == pid.group(0)
    missing = invoke("locate", {"image": "/no/such/photo.jpg"})
    assert missing.status == "error" and missing.content.startswith("ImageNotFoundError:")
    unknown = invoke("ask", {"prediction_id": "pred_unknown", "question": "Why?"})
    assert unknown.status == "error" and unknown.content.startswith("UnknownIdError:")
