"""The investigate node: targeted checks through the agent tools, within the budgets.

* ``geocode`` the place names read in the image (Nominatim), in the leading countries: each hit is
  a new candidate;
* ``find_osm_feature``: the image's other text (shop and street names) as OpenStreetMap features
  near the leading candidates (Overpass): a match confirms the candidate and pins its point;
* ``zoom``: when a VLM chooses it, a region of the photo read at full resolution; new text joins
  the evidence (and fusion is made again).

The VLM chooses the calls through tool calling when it can (its choices are checked: names must be
read in the image, points must be a leading candidate's, boxes must be inside the photo); otherwise
a rule chooses (names, then other text near the leaders; the rule never zooms). A tool that cannot
run is recorded, and not tried again in this process; the run goes on."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from geosleuth.agents.context import RunContext
from geosleuth.agents.state import RunState
from geosleuth.agents.toolbox import TOOLS, FeatureResult, GeocodeResult, ZoomResult
from geosleuth.agents.vlm.base import ToolChoosingVLM
from geosleuth.agents.vlm.prompting import untrusted_block
from geosleuth.errors import ToolQueryError, ToolUnavailableError, VLMError
from geosleuth.geo import haversine_km
from geosleuth.prompts import INVESTIGATE, INVESTIGATE_SYSTEM, load_template
from geosleuth.schemas import (
    Candidate,
    CandidateSource,
    Evidence,
    EvidenceKind,
    Granularity,
    LatLon,
    StageStatus,
    TraceStep,
)
from geosleuth.tools.osm import GeocodeHit, OSMFeature

log = logging.getLogger(__name__)

MAX_NAMES = 3  # checks per round
MAX_ZOOMS = 5  # per photo (GeoVista allows 5 crops)
NEAR_CANDIDATE_KM = 50.0
OSM_TOOLS = ("geocode", "find_osm_feature")
TOOL_CHOICE = "vlm tool choice"


@dataclass(frozen=True)
class Check:
    """One tool call the round will make, and the leading candidate it is about (Overpass)."""

    tool: str
    arguments: dict[str, Any]
    candidate: Candidate | None = None


def run(ctx: RunContext, step: TraceStep) -> None:
    state = ctx.state
    state.rounds += 1
    name = f"investigate#{state.rounds}"
    step.inputs = {"round": state.rounds, "decision": state.decision.sentence() if state.decision else ""}
    t0 = time.perf_counter()
    checks, chooser = _vlm_choices(ctx)
    if not checks:
        checks = rule_checks(ctx)
    ran: set[str] = set()  # the stage's engine names the tools that ran, not the ones that could have
    try:
        for check in checks:
            if _run_check(ctx, step, check, chooser):
                ran.add(_engine_of(check.tool))
    except ToolUnavailableError as exc:
        state.warnings.append(f"OpenStreetMap tools failed: {exc}")
        engine = _engine(ran | {_engine_of(check.tool)})
        state.stages.add(name, StageStatus.FAILED, "; ".join([*_made(step), str(exc)]), engine=engine, t0=t0)
        return
    state.stages.add(
        name, StageStatus.RAN, "; ".join(_made(step)) or "nothing left to check", engine=_engine(ran), t0=t0
    )


def _engine_of(tool: str) -> str:
    """What a tool runs on: OpenStreetMap (Nominatim, Overpass), or the photo itself (zoom)."""
    return "osm" if tool in OSM_TOOLS else tool


def _engine(ran: set[str]) -> str | None:
    """``osm``, ``zoom``, ``osm+zoom``; None when no tool ran."""
    return "+".join(sorted(ran)) or None


def _made(step: TraceStep) -> list[str]:
    """The checks this round made (the trace also lists the VLM's tool-choice request)."""
    return [c for c in step.calls if not c.startswith(TOOL_CHOICE)]


def stage_name(state: RunState) -> str:
    return f"investigate#{state.rounds}"


def _run_check(ctx: RunContext, step: TraceStep, check: Check, chooser: str) -> bool:
    """Make one check; whether its tool ran (a zoom box outside the photo is refused)."""
    state = ctx.state
    query = str(check.arguments.get("name", ""))
    if check.tool == "geocode":
        state.asked.add(query.lower())
        geo = TOOLS.call(ctx, "geocode", check.arguments)
        assert isinstance(geo, GeocodeResult)
        step.calls.append(f"geocode {query!r} ({chooser}): {len(geo.hits)} hits")
        for hit in geo.hits:
            _add_geocoded(state, query, hit)
    elif check.tool == "find_osm_feature":
        cand = check.candidate
        assert cand is not None
        state.asked.add(f"{query.lower()}@{cand.point}")
        feat = TOOLS.call(ctx, "find_osm_feature", {"name": query, "near": cand.point})
        assert isinstance(feat, FeatureResult)
        step.calls.append(f"overpass {query!r} near {cand.point} ({chooser}): {len(feat.features)} features")
        if feat.features:
            _add_feature(state, query, cand, feat.features[0])
    elif check.tool == "zoom":
        state.zooms += 1
        try:
            z = TOOLS.call(ctx, "zoom", check.arguments)
        except ToolQueryError as exc:  # a box outside the photo: the VLM's mistake, not the run's
            step.calls.append(f"zoom refused ({chooser}): {exc}")
            return False
        assert isinstance(z, ZoomResult)
        step.calls.append(f"zoom {z.box} ({chooser}): {len(z.lines)} lines, {z.new_lines} new")
    else:
        return False
    return True


# --- what can be checked ----------------------------------------------------------------------------


def things_to_check(state: RunState) -> list[str]:
    """Names read in the image not yet geocoded (none when the text tries to steer AI systems)."""
    if state.injected:
        return []
    names = [m.surface for m in state.matches]
    return [n for n in dict.fromkeys(names) if n.lower() not in state.asked][:MAX_NAMES]


def features_to_check(state: RunState) -> list[tuple[str, Candidate]]:
    """(text, candidate) pairs: the image's text lines that are not place names, near the two
    best candidates finer than a country."""
    if state.injected:
        return []
    names = {m.surface.lower() for m in state.matches}
    texts = []
    for line in state.lines:
        t = " ".join(line.text.split())
        if sum(ch.isalpha() for ch in t) >= 4 and t.lower() not in names and len(t) <= 60:
            texts.append(t)
    cands = [c for c in state.ranked if c.granularity in (Granularity.EXACT, Granularity.CITY)][:2]
    pairs = [(t, c) for c in cands for t in dict.fromkeys(texts)]
    return [(t, c) for t, c in pairs if f"{t.lower()}@{c.point}" not in state.asked][:MAX_NAMES]


def osm_checks(ctx: RunContext) -> bool:
    """Something read in the image can be checked against OpenStreetMap (tools permitting)."""
    return bool(things_to_check(ctx.state) or features_to_check(ctx.state))


def tool_chooser(ctx: RunContext) -> ToolChoosingVLM | None:
    """The VLM, when it may and can choose tools now."""
    vlm = ctx.deps.vlm
    if not (ctx.settings.vlm.tool_calling and isinstance(vlm, ToolChoosingVLM)):
        return None
    if ctx.deps.health.tool_calling_down or ctx.usage.vlm_left() == 0:
        return None
    return vlm


def can_zoom(ctx: RunContext) -> bool:
    """A VLM could ask to look closer at part of the photo."""
    state = ctx.state
    return (
        tool_chooser(ctx) is not None
        and not state.injected
        and not state.zoom_declined
        and state.zooms < MAX_ZOOMS
        and TOOLS["zoom"].unavailable(ctx) is None
    )


def rule_checks(ctx: RunContext) -> list[Check]:
    """The rule: the names read in the image, then its other text near the leaders."""
    if ctx.deps.osm_unavailable() is not None:
        return []
    checks = [Check("geocode", {"name": q}) for q in things_to_check(ctx.state)]
    osm = ctx.deps.osm
    if osm is not None and osm.overpass is not None:
        checks += [Check("find_osm_feature", {"name": q}, c) for q, c in features_to_check(ctx.state)]
    return checks


def _vlm_choices(ctx: RunContext) -> tuple[list[Check], str]:
    """The checks the VLM asks for through tool calling, validated; ([], "rule") when it cannot
    or will not."""
    state = ctx.state
    vlm = tool_chooser(ctx)
    if vlm is None:
        return [], "rule"
    offered = []
    if state.text.strip() and osm_checks(ctx) and ctx.deps.osm_unavailable() is None:
        offered += list(OSM_TOOLS)
    zooming = can_zoom(ctx)
    if zooming:
        offered.append("zoom")
    if not offered:
        return [], "rule"
    tools = TOOLS.subset(offered)
    cands = state.ranked[:3]
    image = state.image
    text = load_template(INVESTIGATE, ctx.settings.vlm.prompt_dir).render(
        candidates=[f"{c.label} at {c.point.lat:.5f}, {c.point.lon:.5f}" for c in cands],
        untrusted_text=untrusted_block(state.text),
        max_calls=MAX_NAMES,
        osm="geocode" in offered,
        zoom=zooming,
        image_size="{}x{}".format(*image.full_size),
    )
    system = load_template(INVESTIGATE_SYSTEM, ctx.settings.vlm.prompt_dir).render()
    ctx.usage.charge_vlm()
    try:
        calls = vlm.choose_tools(system, text, tools.openai_specs(), image=image.rgb if zooming else None)
    except VLMError as exc:
        ctx.deps.health.tool_calling_down = str(exc)
        log.info("the VLM cannot choose tools (%s); a rule chooses", exc)
        _note(ctx, f"{TOOL_CHOICE} ({', '.join(offered)} offered): error {type(exc).__name__}")
        return [], "rule"
    _note(
        ctx, f"{TOOL_CHOICE} ({', '.join(offered)} offered): {', '.join(n for n, _ in calls) or 'no calls'}"
    )
    if zooming and not any(n == "zoom" for n, _ in calls):
        state.zoom_declined = True
    return _validate(ctx, calls, cands, offered), "chosen by the VLM"


def _note(ctx: RunContext, line: str) -> None:
    if ctx.step is not None:
        ctx.step.calls.append(line)


def _validate(
    ctx: RunContext, calls: list[tuple[str, dict[str, Any]]], cands: list[Candidate], offered: list[str]
) -> list[Check]:
    """Only what the photo says, near the leaders, inside the photo."""
    lowered = ctx.state.text.lower()
    valid: list[Check] = []
    for name, args in calls[:MAX_NAMES]:
        if name not in offered:
            continue
        if name == "zoom":
            valid.append(Check("zoom", {"box": args.get("box")}))
            continue
        query = str(args.get("name", "")).strip()
        if not query or query.lower() not in lowered:
            continue
        if name == "geocode":
            if query.lower() in ctx.state.asked:
                continue
            cc = str(args.get("country_code") or "").upper() or None
            valid.append(
                Check("geocode", {"name": query, "country_code": cc if cc and len(cc) == 2 else None})
            )
        elif name == "find_osm_feature":
            point = _point(args)
            if point is None:
                continue
            near = [
                c
                for c in cands
                if float(haversine_km(c.point.lat, c.point.lon, point.lat, point.lon)) <= NEAR_CANDIDATE_KM
            ]
            if near and f"{query.lower()}@{near[0].point}" not in ctx.state.asked:
                valid.append(Check("find_osm_feature", {"name": query}, near[0]))
    return valid


def _point(args: dict[str, Any]) -> LatLon | None:
    """The point of a find_osm_feature call: ``near`` (the declared argument) or bare
    latitude/longitude (what some models send)."""
    raw = args.get("near")
    source = raw if isinstance(raw, dict) else args
    try:
        return LatLon(
            lat=float(source["lat" if "lat" in source else "latitude"]),
            lon=float(source["lon" if "lon" in source else "longitude"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


# --- what the checks add ------------------------------------------------------------------------------


def _add_geocoded(state: RunState, query: str, hit: GeocodeHit) -> None:
    eid = f"osm.geocode.{len(state.tool_candidates) + 1}"
    state.evidence.append(
        Evidence(
            id=eid,
            tool="nominatim",
            kind=EvidenceKind.TOOL,
            value=f"Nominatim finds {query!r} at {hit.display_name}",
            weight=0.0,  # the name was already counted as a clue; this places it
            point=hit.point,
            details={"osm_type": hit.osm_type, "osm_id": hit.osm_id, "class": hit.osm_class},
        )
    )
    exact = hit.osm_class not in ("place", "boundary")
    state.tool_candidates.append(
        Candidate(
            point=hit.point,
            source=CandidateSource.TOOL,
            label=f"{hit.name} (geocoded from {query!r} read in the image)",
            granularity=Granularity.EXACT if exact else Granularity.CITY,
            score=0.0,
            probability=0.0,
            radius_km=1.0 if exact else 10.0,
            evidence_ids=[eid],
        )
    )


def _add_feature(state: RunState, query: str, cand: Candidate, feature: OSMFeature) -> None:
    eid = f"osm.feature.{len(state.tool_candidates) + 1}"
    kind = next(
        (f"{k}={v}" for k, v in feature.tags.items() if k in ("shop", "amenity", "highway", "tourism")), ""
    )
    state.evidence.append(
        Evidence(
            id=eid,
            tool="overpass",
            kind=EvidenceKind.TOOL,
            value=f"OpenStreetMap has {feature.name!r} ({kind or feature.osm_type}) "
            f"{feature.distance_m:.0f} m from {cand.label}",
            weight=0.0,
            point=feature.point,
            details={"osm_type": feature.osm_type, "osm_id": feature.osm_id, "query": query},
        )
    )
    state.tool_candidates.append(
        Candidate(
            point=feature.point,
            source=CandidateSource.TOOL,
            label=f"{feature.name} (OpenStreetMap, matching {query!r} read in the image)",
            granularity=Granularity.EXACT,
            score=0.0,
            probability=0.0,
            radius_km=1.0,
            evidence_ids=[eid],
        )
    )
