"""The decide node: done, or investigate when the best answer is weak or two countries compete,
if anything can be checked and the budgets allow. The reason is recorded either way."""

from __future__ import annotations

from geosleuth.agents.context import RunContext
from geosleuth.agents.nodes.investigate import can_zoom, osm_checks
from geosleuth.agents.state import Action, Decision, RunState
from geosleuth.errors import BudgetExceededError
from geosleuth.schemas import TraceStep

MAX_ROUNDS = 2
COMPETING_RATIO = 0.5  # a second country at half the best's probability competes


def run(ctx: RunContext, step: TraceStep) -> None:
    reason = why_investigate(ctx.state, ctx.settings.verifier.investigate_below)
    blocker = why_not(ctx) if reason else None
    if reason and blocker is None:
        decision = Decision(action=Action.INVESTIGATE, reason=reason)
    else:
        decision = Decision(action=Action.DONE, reason=reason, blocker=blocker)
    ctx.state.decision = decision
    step.summary = decision.sentence()


def route(ctx: RunContext) -> str:
    """The edge out of `decide`: the decision's action."""
    decision = ctx.state.decision
    return decision.action.value if decision is not None else Action.DONE.value


def why_investigate(state: RunState, threshold: float) -> str | None:
    if state.fusion is not None and state.fusion.basis == "exif-gps" and not state.fusion.gps_conflicts:
        return None  # a camera GPS point nothing contradicts
    top = state.ranked[0] if state.ranked else None
    if top is None or state.confidence < threshold:
        return f"the best answer is uncertain (probability {state.confidence:.2f}; checks start below {threshold:.2f})"
    if len(state.ranked) > 1 and top.place and state.ranked[1].place:
        second = state.ranked[1]
        if (
            second.place is not None
            and top.place.country_code != second.place.country_code
            and second.probability > COMPETING_RATIO * top.probability
        ):
            return f"{top.place.country} and {second.place.country} compete"
    return None


def why_not(ctx: RunContext) -> str | None:
    """What stops an investigation: rounds, budgets, nothing to check, or no tools."""
    state, usage = ctx.state, ctx.usage
    if state.rounds >= MAX_ROUNDS:
        return f"{MAX_ROUNDS} rounds of checks were made"
    if usage.tools_left() == 0:
        return BudgetExceededError.message("max_tool_calls", usage.budgets.max_tool_calls, usage.tool_calls)
    if not usage.time_left():
        return BudgetExceededError.message("max_seconds", usage.budgets.max_seconds, usage.elapsed())
    zoom = can_zoom(ctx)
    if not osm_checks(ctx) and not zoom:
        return "nothing read in the image can be checked"
    if zoom:
        return None
    return ctx.deps.osm_unavailable()
