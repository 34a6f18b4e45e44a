"""Agent tools, declared once.

A tool is one typed function: its first parameter is the :class:`~geosleuth.agents.context.RunContext`,
the others are its arguments (pydantic types, with ``Annotated[..., Field(description=...)]``), it
returns a pydantic model, and its docstring's first paragraph is its description::

    tools = Toolset()

    @tools.tool(budgeted=True)
    def geocode(ctx: RunContext, name: Annotated[str, Field(description="...")]) -> GeocodeResult:
        \"\"\"Find where a place name is.\"\"\"

A tool set made for another context (``Toolset(context=...)``, e.g. the integrations' one context
per MCP server, :mod:`geosleuth.integrations.tools`) takes that type as the first parameter
instead; such a context has a ``usage`` (None: no budgets) and a ``record`` for the trace
(:class:`ToolContext`).

From that declaration come the arguments' pydantic model (:attr:`AgentTool.arguments`), the JSON
schema a VLM is offered (:meth:`AgentTool.openai_spec`), validation of what a caller sends, the
budget charge, and a :class:`~geosleuth.schemas.ToolCall` in the trace. The planner, the
conversation, the HTTP service, MCP and LangChain all call tools through :meth:`Toolset.call`.
"""

from __future__ import annotations

import difflib
import inspect
import time
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from geosleuth.agents.context import RunContext
from geosleuth.errors import GeoSleuthError, ToolQueryError, UnknownToolError
from geosleuth.schemas import ToolCall

if TYPE_CHECKING:
    from geosleuth.agents.context import Usage

R = TypeVar("R", bound=BaseModel)
Availability = Callable[[Any], str | None]
"""Why a tool cannot run in this context (None: it can)."""


class ToolContext(Protocol):
    """What :meth:`AgentTool.call` needs of a context: its usage against the budgets (None: the
    context has none) and where a call is recorded. :class:`RunContext` is one."""

    @property
    def usage(self) -> Usage | None: ...

    def record(self, call: ToolCall) -> None: ...


MAX_RESULT_CHARS = 4000  # a ToolCall's result summary in the trace


class ToolResult(BaseModel):
    """Base of tool results: ``summary()`` is the short account the trace shows."""

    model_config = ConfigDict(extra="forbid")

    def summary(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class AgentTool(Generic[R]):
    """One tool: its name, description, argument model and result type, derived from ``function``."""

    name: str
    description: str
    function: Callable[..., R]
    arguments: type[BaseModel]
    result: type[R]
    budgeted: bool
    """Counts against ``budgets.max_tool_calls`` (network requests, OCR)."""
    availability: Availability | None = None
    context: type[Any] = RunContext
    """The type of the first parameter (the context the tool runs in)."""

    @classmethod
    def from_function(
        cls,
        function: Callable[..., R],
        *,
        name: str | None = None,
        budgeted: bool = True,
        available: Availability | None = None,
        context: type[Any] = RunContext,
    ) -> AgentTool[R]:
        name = name or function.__name__
        hints = typing.get_type_hints(function, include_extras=True)
        params = list(inspect.signature(function).parameters.values())
        if not params or hints.get(params[0].name) is not context:
            raise TypeError(f"agent tool {name!r}: the first parameter must be `ctx: {context.__name__}`")
        fields: dict[str, Any] = {}
        for p in params[1:]:
            if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) or p.name not in hints:
                raise TypeError(f"agent tool {name!r}: parameter {p.name!r} needs a type and a name")
            fields[p.name] = (hints[p.name], ... if p.default is p.empty else p.default)
        result = hints.get("return")
        if not (isinstance(result, type) and issubclass(result, BaseModel)):
            raise TypeError(f"agent tool {name!r} must return a pydantic model, not {result!r}")
        doc = inspect.getdoc(function) or ""
        description = " ".join(doc.split("\n\n", 1)[0].split())
        if not description:
            raise TypeError(f"agent tool {name!r} needs a docstring: it is the tool's description")
        model = create_model(
            "".join(part.title() for part in name.split("_")) + "Arguments",
            __config__=ConfigDict(extra="forbid"),
            __doc__=description,
            **fields,
        )
        return cls(
            name=name,
            description=description,
            function=function,
            arguments=model,
            result=typing.cast("type[R]", result),
            budgeted=budgeted,
            availability=available,
            context=context,
        )

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of the arguments (what a VLM, MCP or LangChain is told)."""
        return self.arguments.model_json_schema()

    def openai_spec(self) -> dict[str, Any]:
        """The tool as an OpenAI ``tools`` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.json_schema(),
            },
        }

    def unavailable(self, ctx: ToolContext) -> str | None:
        return self.availability(ctx) if self.availability is not None else None

    def validate(self, arguments: Mapping[str, Any] | BaseModel) -> BaseModel:
        """The arguments as the tool's model; :class:`ToolQueryError` naming the field otherwise."""
        if isinstance(arguments, self.arguments):
            return arguments
        raw = arguments.model_dump() if isinstance(arguments, BaseModel) else arguments
        try:
            return self.arguments.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
            )
            raise ToolQueryError(f"{self.name}: bad arguments ({problems})") from None

    def call(self, ctx: ToolContext, arguments: Mapping[str, Any] | BaseModel) -> R:
        """Validate, check availability, charge the budget, run, and record the call in the trace.
        Raises :class:`ToolQueryError` (bad arguments), :class:`~geosleuth.errors.ToolUnavailableError`
        and :class:`~geosleuth.errors.BudgetExceededError`; other typed errors pass through."""
        args = self.validate(arguments)
        dumped = args.model_dump(mode="json")
        reason = self.unavailable(ctx)
        if reason is not None:
            from geosleuth.errors import ToolUnavailableError

            raise ToolUnavailableError(self.name, "", reason)
        usage = ctx.usage
        before = (usage.tool_calls, usage.vlm_requests) if usage is not None else (0, 0)
        if self.budgeted and usage is not None:
            usage.charge_tool(self.name)
        t0 = time.perf_counter()
        record = ToolCall(name=self.name, arguments=dumped)
        try:
            result = self.function(ctx, **{k: getattr(args, k) for k in type(args).model_fields})
        except GeoSleuthError as exc:
            record.error = str(exc)
            raise
        finally:
            record.seconds = round(time.perf_counter() - t0, 4)
            if usage is not None:
                record.cost = {
                    "tool_calls": usage.tool_calls - before[0],
                    "vlm_requests": usage.vlm_requests - before[1],
                }
            ctx.record(record)
        summary = result.summary() if isinstance(result, ToolResult) else type(result).__name__
        record.result = summary[:MAX_RESULT_CHARS]
        return result


class Toolset:
    """Named agent tools. ``@toolset.tool(...)`` declares one; :meth:`call` runs one by name.
    ``context``: the type every tool's first parameter has."""

    def __init__(self, tools: Iterable[AgentTool[Any]] = (), *, context: type[Any] = RunContext) -> None:
        self.context = context
        self._tools: dict[str, AgentTool[Any]] = {}
        for t in tools:
            self.add(t)

    def add(self, tool: AgentTool[Any]) -> AgentTool[Any]:
        if tool.name in self._tools:
            raise ValueError(f"agent tool {tool.name!r} is declared twice")
        if tool.context is not self.context:
            raise TypeError(
                f"agent tool {tool.name!r} runs in a {tool.context.__name__}, this set's tools in a "
                f"{self.context.__name__}"
            )
        self._tools[tool.name] = tool
        return tool

    def tool(
        self, *, name: str | None = None, budgeted: bool = True, available: Availability | None = None
    ) -> Callable[[Callable[..., R]], Callable[..., R]]:
        """Decorator: declare ``function`` as a tool of this set (the function itself is unchanged)."""

        def register(function: Callable[..., R]) -> Callable[..., R]:
            self.add(
                AgentTool.from_function(
                    function, name=name, budgeted=budgeted, available=available, context=self.context
                )
            )
            return function

        return register

    def __getitem__(self, name: str) -> AgentTool[Any]:
        try:
            return self._tools[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._tools, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownToolError(
                f"no agent tool named {name!r} (known: {', '.join(self._tools)}){hint}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[AgentTool[Any]]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def subset(self, names: Iterable[str]) -> Toolset:
        return Toolset((self[n] for n in names), context=self.context)

    def openai_specs(self) -> list[dict[str, Any]]:
        return [t.openai_spec() for t in self]

    def available(self, ctx: ToolContext) -> Toolset:
        """The tools that can run in ``ctx`` (configured, online when they need the network...)."""
        return Toolset((t for t in self if t.unavailable(ctx) is None), context=self.context)

    def call(self, ctx: ToolContext, name: str, arguments: Mapping[str, Any] | BaseModel) -> BaseModel:
        return self[name].call(ctx, arguments)


__all__ = ["AgentTool", "Availability", "ToolContext", "ToolResult", "Toolset"]
