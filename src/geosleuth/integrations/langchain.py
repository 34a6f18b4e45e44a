"""geosleuth's tools as LangChain ``StructuredTool``s, made from the same declarations as the MCP
server (:data:`~geosleuth.integrations.tools.INTEGRATION_TOOLS`): name, description and argument
model come from the registry, and a call goes through :meth:`Toolset.call`.

Each tool answers ``content_and_artifact``: the content is ``text()``, short text for the model;
the artifact is for the program around it (``locate``'s is the whole
:class:`~geosleuth.schemas.Prediction`, the others' their result model). A typed error becomes a
``ToolException`` whose text (the error's type and message) the model reads as the tool's answer.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from geosleuth.agents.registry import AgentTool, Toolset
from geosleuth.errors import GeoSleuthError, MissingDependencyError
from geosleuth.integrations.tools import INTEGRATION_TOOLS, IntegrationContext, IntegrationResult

if TYPE_CHECKING:
    from langchain_core.tools import StructuredTool


def langchain_tools(ctx: IntegrationContext, tools: Toolset = INTEGRATION_TOOLS) -> list[StructuredTool]:
    """The ``tools`` as LangChain tools running in ``ctx`` (one context for all of them, so
    ``explain`` and ``ask`` find what ``locate`` stored)."""
    try:
        from langchain_core.tools import StructuredTool
    except ImportError as exc:
        raise MissingDependencyError("langchain-core", "langchain", "geosleuth's LangChain tools") from exc
    return [_structured(StructuredTool, ctx, tool) for tool in tools]


def _structured(cls: type[StructuredTool], ctx: IntegrationContext, tool: AgentTool[Any]) -> StructuredTool:
    from langchain_core.tools import ToolException

    def run(**arguments: Any) -> tuple[str, Any]:
        try:
            result = tool.call(ctx, arguments)
        except GeoSleuthError as exc:
            raise ToolException(f"{type(exc).__name__}: {exc}") from exc
        assert isinstance(result, IntegrationResult)
        return result.text(), result.artifact()

    async def arun(**arguments: Any) -> tuple[str, Any]:
        return await asyncio.to_thread(run, **arguments)

    return cls.from_function(
        func=run,
        coroutine=arun,
        name=tool.name,
        description=tool.description,
        args_schema=tool.arguments,
        response_format="content_and_artifact",
        handle_tool_error=True,
    )


__all__ = ["langchain_tools"]
