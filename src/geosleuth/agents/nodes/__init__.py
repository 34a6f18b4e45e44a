"""The planner's nodes, one module each. A node is a function ``run(ctx, step)``: it reads and adds
to ``ctx.state``, reports its stages, and fills in its trace ``step`` (inputs, outputs, calls) where
the work happens. :mod:`geosleuth.agents.planner` declares how they connect."""

from __future__ import annotations

from collections.abc import Callable

from geosleuth.agents.context import RunContext
from geosleuth.schemas import TraceStep

Node = Callable[[RunContext, TraceStep], None]

__all__ = ["Node"]
