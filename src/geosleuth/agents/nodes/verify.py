"""The verify node: fusion of the hard evidence into candidates (once per photo, or again after new
text arrived), then the verifier over every candidate from every source (fusion, gallery,
neighbours, VLM, tools)."""

from __future__ import annotations

import time

from geosleuth.agents.context import RunContext
from geosleuth.agents.fusion import FusionResult
from geosleuth.agents.state import RunState
from geosleuth.agents.verifier import GEOCLIP_LOGIT_SCALE, VerificationInputs
from geosleuth.agents.vlm.reasoning import TEXT_MOVED, text_free_guesses
from geosleuth.schemas import (
    BoxRegion,
    Candidate,
    CandidateSource,
    EvidenceKind,
    Granularity,
    LatLon,
    StageStatus,
    TraceStep,
)

GALLERY_CANDIDATES = 5
NEIGHBOUR_CANDIDATES = 5
# Evidence kinds whose country votes come from the image's pixels through a model, not from hard
# facts; the verifier weighs them through their own signals (density, consistency, geo).
SOFT_KINDS = {EvidenceKind.GALLERY, EvidenceKind.NEIGHBOURS, EvidenceKind.VLM}
# Tools whose evidence comes from the text read in the photo (clues, its language, names looked up).
TEXT_TOOLS = {"clues", "langid", "nominatim", "overpass"}


def run(ctx: RunContext, step: TraceStep, *, stage: str | None = None) -> None:
    """Fuse (when needed) and verify; ``stage`` names the stage report (default: verify, verify#2...)."""
    state, deps = ctx.state, ctx.deps
    assert state.exif is not None, "verify runs after evidence"
    step.inputs = {
        "evidence_items": len(state.evidence),
        "retrieval_points": len(state.points),
        "vlm_points": len(state.vlm_points),
        "tool_candidates": len(state.tool_candidates),
    }
    n_before = len(state.evidence)
    t0 = time.perf_counter()
    fused = state.fusion
    if fused is None:  # checks add no hard evidence: later rounds re-verify the same fusion
        hard = [e for e in state.evidence if e.kind not in SOFT_KINDS]
        points = [*state.points, *state.vlm_points]
        fused = deps.fusion.fuse(hard, state.matches, state.exif, points)
        state.evidence.extend(fused.extra_evidence)
        state.warnings.extend(fused.warnings)
        state.fusion = fused
    name = stage or ("verify" if state.rounds == 0 else f"verify#{state.rounds + 1}")
    pool, evidence_p, remainder = _pool(state, fused)
    new = [e.id for e in state.evidence[n_before:]]
    if new:
        step.outputs["new_evidence"] = new
    if not pool:
        state.ranked, state.regions, state.confidence, state.verdict = [], [], 0.0, ""
        state.null_probability = 1.0
        state.stages.add(name, StageStatus.RAN, "no candidate place from any stage", t0=t0)
        step.outputs.update(top=[], confidence=0.0)
        return
    inputs = _verification_inputs(ctx, pool, evidence_p, remainder)
    state.inputs = inputs
    result = deps.verifier.verify(inputs)
    ranked = result.candidates[: ctx.settings.max_candidates]
    missing = [c for c in ranked if c.place is None]
    for c, place in zip(missing, deps.gazetteer.reverse([c.point for c in missing]), strict=True):
        c.place = place
    state.ranked = ranked
    state.regions = result.regions
    state.confidence = ranked[0].probability if ranked else 0.0
    state.null_probability = result.null_probability
    state.verdict = result.comparison
    sources = sorted({c.source.value for c in pool})
    state.stages.add(
        name,
        StageStatus.RAN,
        f"{len(pool)} candidates from {', '.join(sources)} merged into {len(result.candidates)} places; "
        f"best {state.confidence:.2f}, somewhere else {result.null_probability:.2f}",
        t0=t0,
    )
    step.outputs["top"] = [
        {"point": str(c.point), "label": c.label, "source": c.source.value, "p": round(c.probability, 4)}
        for c in ranked[:3]
    ]
    step.outputs["confidence"] = round(state.confidence, 4)
    step.outputs["scores"] = result.scores  # the verifier's account with its signals' scores


def _pool(state: RunState, fused: FusionResult) -> tuple[list[Candidate], list[float], dict[str, float]]:
    """Every candidate place: fusion's (with their probabilities given the hard evidence), the
    gallery's best points, the most similar photos, the VLM's answers per country, tool finds."""
    pool = [c.model_copy(deep=True) for c in fused.candidates]
    evidence_p = [c.probability for c in pool]
    remainder = {
        c.place.country_code: c.probability
        for c in fused.candidates
        if c.place is not None and c.granularity in (Granularity.COUNTRY, Granularity.REGION)
    }
    if fused.gps_conflicts and fused.gps_trust < 1:
        # Contradicted GPS: the verifier mixes "GPS right" with "GPS wrong" (see Verifier.verify), so
        # the evidence's own probabilities are given as they are without the GPS point's share.
        rest = max(1e-9, 1.0 - next((c.probability for c in pool if c.source == CandidateSource.EXIF), 0.0))
        evidence_p = [
            0.0 if c.source == CandidateSource.EXIF else min(1.0, c.probability / rest) for c in pool
        ]
        remainder = {cc: min(1.0, p / rest) for cc, p in remainder.items()}
    found = state.found
    extra: list[Candidate] = []
    if found is not None:
        for g in [*found.refined[:1], *found.gallery[:GALLERY_CANDIDATES]]:
            extra.append(
                _candidate(g.point, CandidateSource.GALLERY, "a GPS-gallery match", 25.0, "retrieval.gallery")
            )
        for n in found.similar[:NEIGHBOUR_CANDIDATES]:
            where = n.place.short() if n.place else n.key
            extra.append(
                _candidate(
                    n.point,
                    CandidateSource.NEIGHBOUR,
                    f"a similar photo ({where})",
                    10.0,
                    "retrieval.neighbours",
                )
            )
    for rp in state.vlm_points:
        extra.append(_candidate(rp.point, CandidateSource.VLM, rp.label, rp.radius_km, rp.evidence_id))
    extra.extend(c.model_copy(deep=True) for c in state.tool_candidates)
    return pool + extra, evidence_p + [0.0] * len(extra), remainder


def _verification_inputs(
    ctx: RunContext, pool: list[Candidate], evidence_p: list[float], remainder: dict[str, float]
) -> VerificationInputs:
    state = ctx.state
    exif = state.exif
    gps = next((e for e in state.evidence if e.id == "exif.gps" and e.usable and e.point), None)
    use_gps = gps is not None and ctx.settings.use_exif_gps
    band = next(
        (
            e.region
            for e in state.evidence
            if e.kind == EvidenceKind.UTC_OFFSET and e.usable and isinstance(e.region, BoxRegion)
        ),
        None,
    )
    found = state.found
    guesses = (
        [s.guess for c in state.vlm.calls for s in c.samples if s.guess is not None and not s.set_aside]
        if state.vlm is not None
        else []
    )
    picture = text_free_guesses(state.vlm) if state.vlm is not None else []
    return VerificationInputs(
        candidates=pool,
        hard_strength=0.0,  # the `evidence` signal carries fusion's posterior
        exif_point=gps.point if use_gps and gps is not None else None,
        exif_trust=state.fusion.gps_trust if state.fusion is not None else 1.0,
        exif_radius_km=(exif.gps_radius_km if exif is not None and exif.gps_radius_km else 0.1),
        utc_band=band,
        similar=list(found.similar) if found is not None else [],
        dissimilar=list(found.dissimilar) if found is not None else [],
        vlm_guesses=guesses,
        geo_similarity=found.geo_similarity if found is not None else None,
        geo_logit_scale=(found.logit_scale or GEOCLIP_LOGIT_SCALE)
        if found is not None
        else GEOCLIP_LOGIT_SCALE,
        evidence_probabilities=evidence_p,
        country_remainder=remainder,
        picture_guesses=picture,
        untrusted_evidence=frozenset([TEXT_MOVED, *(e.id for e in state.evidence if e.tool in TEXT_TOOLS)]),
    )


def _candidate(
    point: LatLon, source: CandidateSource, label: str, radius_km: float, evidence_id: str
) -> Candidate:
    return Candidate(
        point=point,
        source=source,
        label=label,
        granularity=Granularity.EXACT if radius_km <= 1 else Granularity.CITY,
        score=0.0,
        probability=0.0,
        radius_km=radius_km,
        evidence_ids=[evidence_id],
    )
