"""The generate node: the VLM's diversified guesses (prompt variants x samples), screened for
answers that text trying to instruct AI systems points at, compared with a request made without
the image's text, and their votes added to the evidence."""

from __future__ import annotations

import time
from dataclasses import replace

from geosleuth.agents.context import RunContext
from geosleuth.agents.state import RunState
from geosleuth.agents.vlm.prompting import (
    PromptContext,
    evidence_lines,
    load_thumbnail,
    references_from_neighbours,
    untrusted_block,
)
from geosleuth.agents.vlm.reasoning import Taint, text_comparison, vlm_evidence
from geosleuth.gazetteer import city_radius_km
from geosleuth.schemas import EvidenceKind, StageStatus, TraceStep

MAX_VARIANTS = 64


def run(ctx: RunContext, step: TraceStep) -> None:
    """Ask the VLM (every prompt variant, every sample) and add its votes to the evidence."""
    state, deps = ctx.state, ctx.deps
    vlm, reasoner = deps.vlm, deps.reasoner
    if vlm is None or reasoner is None:
        state.stages.add("vlm", StageStatus.UNAVAILABLE, deps.vlm_unavailable or "not configured")
        return
    if state.image.rgb is None:
        state.stages.add("vlm", StageStatus.SKIPPED, "the pixels could not be decoded")
        return
    ctx.usage.check_time()
    found = state.found
    step.inputs = {
        "evidence_items": len(state.evidence),
        "references": len(found.similar) if found is not None else 0,
    }
    t0 = time.perf_counter()
    context = PromptContext(
        evidence_lines=evidence_lines(state.evidence),
        untrusted_text=untrusted_block(state.text),
        text_free_lines=evidence_lines(state.evidence, from_text=False),
        similar=references_from_neighbours(found.similar) if found is not None else [],
        dissimilar=references_from_neighbours(found.dissimilar) if found is not None else [],
    )
    if found is not None and ctx.settings.vlm.reference_images:
        _attach_thumbnails(context, ctx.settings.vlm.reference_images)
    wanted = len(reasoner.builder.variants(context, MAX_VARIANTS))
    granted = ctx.usage.take_vlm(wanted)
    injection = state.injected
    taint = _taint(state) if injection else None
    report = reasoner.run(state.image.rgb, context, key=state.image.source, taint=taint, max_requests=granted)
    new, points = vlm_evidence(report, deps.gazetteer, injection=injection)
    check = text_comparison(report, deps.gazetteer)
    if check is not None:
        new.append(check)
        if check.reason:
            state.warnings.append(check.value)
    state.evidence.extend(new)
    state.vlm = report
    state.vlm_points = points
    failed = [c for c in report.calls if c.error]
    for c in failed:
        state.warnings.append(f"VLM request {c.variant} failed: {c.error}")
    detail = (
        f"{report.usable_samples}/{report.total_samples} usable answers from "
        f"{len(report.calls) - len(failed)}/{len(report.calls)} requests "
        f"({', '.join(c.variant for c in report.calls)}); {report.usage.total} tokens"
    )
    if granted < wanted:
        detail += f"; budgets.max_vlm_calls allowed {granted} of {wanted} prompt variants"
    status = StageStatus.FAILED if failed and len(failed) == len(report.calls) else StageStatus.RAN
    state.stages.add("vlm", status, detail, engine=f"{vlm.name}:{vlm.model}", t0=t0)
    step.calls.extend(
        f"vlm {c.variant} n={c.n}: {'error ' + (c.error_type or '') if c.error else 'ok'}"
        for c in report.calls
    )
    if new:
        step.outputs["new_evidence"] = [e.id for e in new]
    step.outputs["usable_samples"] = report.usable_samples
    step.outputs["consensus"] = str(report.consensus) if report.consensus else None


def _taint(state: RunState) -> Taint:
    """Where text that tries to instruct AI systems points: its coordinates, the places it names
    (the likeliest three readings of each) and the countries it names."""
    places = []
    for m in state.matches:
        ranked = sorted(zip(m.places, m.weights, strict=True), key=lambda pw: -pw[1])[:3]
        for p, _ in ranked:
            places.append((p.point, max(25.0, float(city_radius_km(p.population))), p.name))
    countries = {
        c
        for e in state.evidence
        if e.kind == EvidenceKind.COUNTRY_NAME
        for c, like in e.countries.items()
        if like >= 0.5
    }
    return Taint(text=state.text, places=tuple(places), countries=frozenset(countries))


def _attach_thumbnails(context: PromptContext, count: int) -> None:
    """Thumbnails of the most similar neighbours whose files are still on disk."""
    for i, ref in enumerate(context.similar[:count]):
        thumb = load_thumbnail(ref.key) if ref.key else None
        if thumb is not None:
            context.similar[i] = replace(ref, image=thumb)
