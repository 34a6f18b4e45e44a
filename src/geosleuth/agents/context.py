"""The per-run context every node and every agent tool receives, and the usage it counts.

Like pydantic-ai's ``RunContext`` and ``UsageLimits``: one object carries the run's dependencies
and state, and one :class:`Usage` counts VLM requests, tool calls and seconds against the budgets.
Going over a budget raises :class:`~geosleuth.errors.BudgetExceededError`, and the planner's runner
is the one place that handles it (the answer is the best so far, and it says which budget)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from geosleuth.config import BudgetSettings, Settings
from geosleuth.errors import BudgetExceededError
from geosleuth.schemas import ToolCall, TraceStep, UsageReport

if TYPE_CHECKING:
    from geosleuth.agents.deps import Deps
    from geosleuth.agents.state import RunState
    from geosleuth.tools.image import LoadedImage


@dataclass
class Usage:
    """VLM requests, tool calls and wall time of one run, against ``budgets``."""

    budgets: BudgetSettings
    started: float = field(default_factory=time.perf_counter)
    vlm_requests: int = 0
    tool_calls: int = 0
    exceeded: BudgetExceededError | None = None
    """The first budget that stopped something, if any."""

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def vlm_left(self) -> int:
        return max(0, self.budgets.max_vlm_calls - self.vlm_requests)

    def tools_left(self) -> int:
        return max(0, self.budgets.max_tool_calls - self.tool_calls)

    def charge_vlm(self, n: int = 1) -> None:
        """Count ``n`` VLM requests; raises when that would go over ``budgets.max_vlm_calls``."""
        if self.vlm_requests + n > self.budgets.max_vlm_calls:
            self._exceeded("max_vlm_calls", self.budgets.max_vlm_calls, self.vlm_requests, "VLM requests")
        self.vlm_requests += n

    def take_vlm(self, wanted: int) -> int:
        """Count up to ``wanted`` VLM requests and return how many the budget grants (raises when
        it grants none of a positive ``wanted``)."""
        if wanted <= 0:
            return 0
        granted = min(wanted, self.vlm_left())
        self.charge_vlm(max(1, granted))
        return granted

    def charge_tool(self, name: str) -> None:
        """Count one tool call; raises when that would go over ``budgets.max_tool_calls``."""
        if self.tool_calls + 1 > self.budgets.max_tool_calls:
            self._exceeded(
                "max_tool_calls", self.budgets.max_tool_calls, self.tool_calls, "tool calls", what=name
            )
        self.tool_calls += 1

    def check_time(self) -> None:
        """Raises when the run has used up ``budgets.max_seconds``."""
        elapsed = self.elapsed()
        if elapsed > self.budgets.max_seconds:
            self._exceeded("max_seconds", self.budgets.max_seconds, elapsed, "seconds")

    def time_left(self) -> bool:
        return self.elapsed() <= self.budgets.max_seconds

    def _exceeded(
        self, budget: str, limit: float, used: float, unit: str, *, what: str | None = None
    ) -> None:
        exc = BudgetExceededError(budget, limit, used, unit, what=what)
        if self.exceeded is None:
            self.exceeded = exc
        raise exc

    def report(self) -> UsageReport:
        return UsageReport(
            vlm_requests=self.vlm_requests,
            tool_calls=self.tool_calls,
            seconds=round(self.elapsed(), 4),
            exceeded=self.exceeded.budget if self.exceeded is not None else None,
        )


@dataclass
class RunContext:
    """What a node or a tool gets: the run's dependencies, its state and its usage. ``step`` is
    the trace step being filled (tool calls record themselves into it)."""

    deps: Deps
    state: RunState
    usage: Usage
    step: TraceStep | None = None

    @property
    def settings(self) -> Settings:
        return self.deps.settings

    @property
    def image(self) -> LoadedImage:
        return self.state.image

    def record(self, call: ToolCall) -> None:
        if self.step is not None:
            self.step.tool_calls.append(call)


__all__ = ["RunContext", "Usage"]
