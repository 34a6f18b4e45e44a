"""The planner: a state graph over one photo, declared once.

    evidence -> retrieval -> generate -> verify -> decide --done--------> end
                                           ^          |
                                           +-- investigate <-(weak or contested)

Each node is a function in :mod:`geosleuth.agents.nodes` (``run(ctx, step)``). :data:`GRAPH` is
the one declaration of how they connect; both runners are built from it: LangGraph's
``StateGraph`` when it is installed (``geosleuth[agents]``), else a plain loop with the same
edges. Every node reports :class:`~geosleuth.schemas.StageReport`\\ s and fills in its
:class:`~geosleuth.schemas.TraceStep`, so a reader knows what ran, what it saw, what it called,
and what it cost.

Budgets are counted by the run's :class:`~geosleuth.agents.context.Usage`. When a node goes over
one, :func:`run_node` is the one place that handles it: the node's stage says which budget, and
the run goes on along the graph to the best answer so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from geosleuth.agents.context import RunContext, Usage
from geosleuth.agents.deps import Deps
from geosleuth.agents.nodes import Node, decide, evidence, generate, investigate, retrieval, verify
from geosleuth.agents.state import GraphState, RunState
from geosleuth.errors import BudgetExceededError
from geosleuth.schemas import StageStatus, TraceStep
from geosleuth.tools.image import LoadedImage

START = "__start__"
END = "__end__"
RECURSION_LIMIT = 50


@dataclass(frozen=True)
class NodeSpec:
    """A node: its function, and the stage it reports when a budget stops it."""

    run: Node
    stage: Callable[[RunState], str]


@dataclass(frozen=True)
class Graph:
    """Nodes, plain edges, and routed edges (a function of the context picks the next node)."""

    nodes: Mapping[str, NodeSpec]
    edges: Mapping[str, str]
    routes: Mapping[str, tuple[Callable[[RunContext], str], Mapping[str, str]]] = field(default_factory=dict)

    def next(self, name: str, ctx: RunContext) -> str:
        if name in self.routes:
            choose, targets = self.routes[name]
            return targets[choose(ctx)]
        return self.edges[name]


def _verify_stage(state: RunState) -> str:
    return "verify" if state.rounds == 0 else f"verify#{state.rounds + 1}"


GRAPH = Graph(
    nodes={
        "evidence": NodeSpec(evidence.run, lambda s: "evidence"),
        "retrieval": NodeSpec(retrieval.run, lambda s: "retrieval"),
        "generate": NodeSpec(generate.run, lambda s: "vlm"),
        "verify": NodeSpec(verify.run, _verify_stage),
        "decide": NodeSpec(decide.run, lambda s: "decide"),
        "investigate": NodeSpec(investigate.run, investigate.stage_name),
    },
    edges={
        START: "evidence",
        "evidence": "retrieval",
        "retrieval": "generate",
        "generate": "verify",
        "verify": "decide",
        "investigate": "verify",
    },
    routes={"decide": (decide.route, {"done": END, "investigate": "investigate"})},
)
"""The planner's graph: the only place its order is written."""


def run_node(graph: Graph, name: str, ctx: RunContext) -> None:
    """Run one node with its trace step; a budget it goes over ends the node, not the run."""
    spec = graph.nodes[name]
    step = TraceStep(node=name, seconds=0.0)
    ctx.step = step
    state = ctx.state
    t0 = time.perf_counter()
    n_reports = len(state.stages.reports)
    try:
        spec.run(ctx, step)
    except BudgetExceededError as exc:
        status = StageStatus.RAN if step.calls else StageStatus.SKIPPED
        state.stages.add(spec.stage(state), status, "; ".join([*step.calls, f"stopped: {exc}"]))
        state.warnings.append(f"{exc}")
    finally:
        ctx.step = None
    step.seconds = round(time.perf_counter() - t0, 4)
    if not step.summary:
        reports = state.stages.reports[n_reports:]
        step.summary = "; ".join(f"{r.name} {r.status.value}: {r.detail}" for r in reports)
    state.trace.append(step)


class Planner:
    """Runs :data:`GRAPH` for one photo at a time with injected dependencies.

    ``runner``: ``"langgraph"``, ``"sequential"`` (the plain loop), or ``"auto"`` (LangGraph when
    installed)."""

    def __init__(
        self, deps: Deps, *, graph: Graph = GRAPH, runner: Literal["auto", "langgraph", "sequential"] = "auto"
    ) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.graph = graph
        self._compiled: Any = None
        if runner != "sequential":
            self._compiled = _compile(graph)
            if self._compiled is None and runner == "langgraph":
                from geosleuth.errors import MissingDependencyError

                raise MissingDependencyError("langgraph", "agents", "The LangGraph runner")

    @property
    def engine(self) -> str:
        return "langgraph" if self._compiled is not None else "sequential"

    def run(self, image: LoadedImage, started: float | None = None) -> tuple[RunState, Usage]:
        """The finished state of one photo and what it used."""
        usage = Usage(self.settings.budgets, started=started if started is not None else time.perf_counter())
        ctx = RunContext(deps=self.deps, state=RunState(image=image), usage=usage)
        if self._compiled is not None:
            self._compiled.invoke({"ctx": ctx}, {"recursion_limit": RECURSION_LIMIT})
        else:
            name = self.graph.next(START, ctx)
            for _ in range(RECURSION_LIMIT):
                if name == END:
                    break
                run_node(self.graph, name, ctx)
                name = self.graph.next(name, ctx)
        return ctx.state, usage

    def context(self, state: RunState, usage: Usage | None = None) -> RunContext:
        """A context over a finished state, for calling agent tools about that photo afterwards."""
        return RunContext(deps=self.deps, state=state, usage=usage or Usage(self.settings.budgets))


def _compile(graph: Graph) -> Any:
    """``graph`` as a compiled LangGraph ``StateGraph``; None when LangGraph is not installed."""
    try:
        from langgraph.graph import END as LG_END
        from langgraph.graph import START as LG_START
        from langgraph.graph import StateGraph
    except ImportError:
        return None
    names = {START: LG_START, END: LG_END}
    g: Any = StateGraph(GraphState)
    for name in graph.nodes:
        g.add_node(name, _graph_node(graph, name))
    for source, target in graph.edges.items():
        g.add_edge(names.get(source, source), names.get(target, target))
    for source, (choose, targets) in graph.routes.items():
        g.add_conditional_edges(
            source,
            lambda s, choose=choose: choose(s["ctx"]),
            {key: names.get(t, t) for key, t in targets.items()},
        )
    # Never checkpointed, even as a subgraph of a host graph that has a checkpointer (a chat thread,
    # a user's agent calling locate from a node): the state holds live objects (the RunContext).
    return g.compile(checkpointer=False)


def _graph_node(graph: Graph, name: str) -> Callable[[GraphState], dict[str, Any]]:
    def node(s: GraphState) -> dict[str, Any]:
        ctx = s["ctx"]
        assert isinstance(ctx, RunContext)
        run_node(graph, name, ctx)
        return {"ctx": ctx}

    return node


__all__ = ["END", "GRAPH", "START", "Graph", "NodeSpec", "Planner", "run_node"]
