"""The retrieval node: GPS-gallery candidates and similar/dissimilar neighbours (when an image
encoder is configured). Their votes join the evidence; their points become candidates in verify."""

from __future__ import annotations

import time

from geosleuth.agents.context import RunContext
from geosleuth.agents.fusion import retrieval_evidence
from geosleuth.errors import GeoSleuthError
from geosleuth.schemas import StageStatus, TraceStep


def run(ctx: RunContext, step: TraceStep) -> None:
    state, deps = ctx.state, ctx.deps
    retriever = deps.retriever
    if retriever is None:
        state.stages.add("retrieval", StageStatus.UNAVAILABLE, deps.retriever_unavailable or "not configured")
        return
    if state.image.rgb is None:
        state.stages.add("retrieval", StageStatus.SKIPPED, "the pixels could not be decoded")
        return
    t0 = time.perf_counter()
    try:
        found = retriever.run(state.image.rgb)
    except (GeoSleuthError, RuntimeError, ValueError, OSError) as exc:
        state.stages.add("retrieval", StageStatus.FAILED, str(exc), engine=retriever.encoder.name, t0=t0)
        state.warnings.append(f"retrieval failed: {exc}")
        return
    new, points = retrieval_evidence(found.gallery, found.similar, deps.gazetteer, found.refined)
    state.evidence.extend(new)
    state.points.extend(points)
    state.found = found
    parts = []
    if found.gallery:
        parts.append(f"{len(found.gallery)} gallery candidates")
    if found.similar:
        parts.append(f"{len(found.similar)} similar and {len(found.dissimilar)} dissimilar neighbours")
    detail = ", ".join(parts) or "no candidates"
    if found.notes:
        detail += "; " + "; ".join(found.notes)
    state.stages.add(
        "retrieval",
        StageStatus.RAN,
        f"{detail} ({retriever.description})",
        engine=retriever.encoder.name,
        t0=t0,
    )
    if new:
        step.outputs["new_evidence"] = [e.id for e in new]
    step.outputs["gallery"] = len(found.gallery)
    step.outputs["similar"] = len(found.similar)
