"""The planner: a state graph over one photo.

    evidence -> retrieval -> generate -> verify -> decide --done--------> finish
                                           ^          |
                                           +-- investigate <-(weak or contradictory)

* **evidence**: EXIF, OCR, language and script, text clues;
* **retrieval**: GPS-gallery candidates and similar/dissimilar neighbours (when an encoder is set);
* **generate**: the VLM's diversified guesses (prompt variants x samples);
* **verify**: fusion of the evidence, then the verifier re-ranks every candidate from every source;
* **decide**: done, or investigate when the best answer is weak or two countries compete, while
  the budgets (tool calls, wall time) and the available tools allow;
* **investigate**: targeted checks with the network tools (geocoding of the names read in the
  image, OpenStreetMap features of that name near the leading candidates), then verify again.

The graph runs on LangGraph when it is installed (``geosleuth[agents]``), else on a plain loop over
the same nodes and the same decision. Every node reports a :class:`~geosleuth.schemas.StageReport`
and a :class:`~geosleuth.schemas.TraceStep`, so a reader knows what ran, what it saw, what it
called, and what it cost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from geosleuth.agents.fusion import EvidenceFusion, FusionResult, RetrievalPoint, retrieval_evidence
from geosleuth.errors import CorruptImageError, EngineUnavailableError, GeoSleuthError
from geosleuth.geo import haversine_km
from geosleuth.schemas import (
    BoxRegion,
    Candidate,
    CandidateSource,
    ConfidenceRegion,
    Evidence,
    EvidenceKind,
    Granularity,
    LatLon,
    StageReport,
    StageStatus,
    TraceStep,
    VLMReport,
)
from geosleuth.tools.clues import ClueExtractor, PlaceMatch
from geosleuth.tools.exif import ExifReport, read_exif
from geosleuth.tools.image import LoadedImage
from geosleuth.tools.langid import detect_scripts

if TYPE_CHECKING:
    from geosleuth.agents.pipeline import Deps

log = logging.getLogger(__name__)

MAX_ROUNDS = 2
MAX_NAMES = 3
GALLERY_CANDIDATES = 5
NEIGHBOUR_CANDIDATES = 5
# Evidence kinds whose country votes come from the image's pixels through a model, not from hard
# facts; the verifier weighs them through their own signals (density, consistency, geo).
SOFT_KINDS = {EvidenceKind.GALLERY, EvidenceKind.NEIGHBOURS, EvidenceKind.VLM}


class Stages:
    """Stage reports and timings of one run."""

    def __init__(self) -> None:
        self.reports: list[StageReport] = []
        self.timings: dict[str, float] = {}

    def add(
        self,
        name: str,
        status: StageStatus,
        detail: str = "",
        engine: str | None = None,
        t0: float | None = None,
    ) -> None:
        seconds = round(time.perf_counter() - t0, 4) if t0 is not None else 0.0
        self.reports.append(
            StageReport(name=name, status=status, detail=detail, engine=engine, seconds=seconds)
        )
        if t0 is not None:
            self.timings[name] = round(self.timings.get(name, 0.0) + seconds, 4)


@dataclass
class RunState:
    """Everything the nodes know about one photo. Nodes read it and add to it."""

    image: LoadedImage
    started: float
    stages: Stages = field(default_factory=Stages)
    evidence: list[Evidence] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    exif: ExifReport | None = None
    lines: list[Any] = field(default_factory=list)
    text: str = ""
    languages: list[Any] = field(default_factory=list)
    matches: list[PlaceMatch] = field(default_factory=list)
    found: Any = None  # retrieval result: gallery, similar, dissimilar, refined
    points: list[RetrievalPoint] = field(default_factory=list)
    vlm: VLMReport | None = None
    vlm_points: list[RetrievalPoint] = field(default_factory=list)
    tool_candidates: list[Candidate] = field(default_factory=list)
    tool_calls: int = 0
    asked: set[str] = field(default_factory=set)  # tool queries already made
    rounds: int = 0
    fusion: FusionResult | None = None
    ranked: list[Candidate] = field(default_factory=list)
    regions: list[ConfidenceRegion] = field(default_factory=list)
    verdict: str = ""  # the verifier's explanation
    inputs: Any = None  # the last VerificationInputs (for fitting the verifier on labelled photos)
    confidence: float = 0.0
    decision: str = ""
    trace: list[TraceStep] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


class GraphState(TypedDict):
    """LangGraph's view of a run: the typed run state and the decision of the last `decide`."""

    run: RunState
    next: str


Node = Callable[[RunState], None]


class Planner:
    """Runs the graph for one photo at a time with injected dependencies (see the module docstring)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.fusion = EvidenceFusion(deps.gazetteer, deps.settings)
        self.clues = ClueExtractor(deps.gazetteer)
        self._reasoner: Any = None
        self._verifier: Any = None
        self._graph: Any = None
        self._tools: Any = None
        self._tools_down: str | None = None
        self._tool_calling_down: str | None = None
        self.nodes: dict[str, Node] = {
            "evidence": self.evidence,
            "retrieval": self.retrieval,
            "generate": self.generate,
            "verify": self.verify,
            "investigate": self.investigate,
        }

    # -- running --

    def run(self, image: LoadedImage, started: float) -> RunState:
        state = RunState(image=image, started=started)
        graph = self._compiled()
        if graph is not None:
            out = graph.invoke({"run": state, "next": ""}, {"recursion_limit": 50})
            return out["run"]
        for name in ("evidence", "retrieval", "generate"):
            self._step(name, state)
        while True:
            self._step("verify", state)
            if self.decide(state) == "done":
                return state
            self._step("investigate", state)

    @property
    def engine(self) -> str:
        return "langgraph" if self._compiled() is not None else "sequential"

    def _compiled(self) -> Any:
        """The LangGraph graph, compiled once; None when LangGraph is not installed."""
        if self._graph is None:
            try:
                from langgraph.graph import END, START, StateGraph
            except ImportError:
                self._graph = False
                return None
            g: Any = StateGraph(GraphState)
            for name in self.nodes:
                g.add_node(name, self._graph_node(name))
            g.add_node("decide", lambda s: {"next": self.decide(s["run"])})
            g.add_edge(START, "evidence")
            g.add_edge("evidence", "retrieval")
            g.add_edge("retrieval", "generate")
            g.add_edge("generate", "verify")
            g.add_edge("verify", "decide")
            g.add_conditional_edges(
                "decide", lambda s: s["next"], {"done": END, "investigate": "investigate"}
            )
            g.add_edge("investigate", "verify")
            self._graph = g.compile()
        return self._graph or None

    def _graph_node(self, name: str) -> Callable[[GraphState], dict[str, Any]]:
        def node(s: GraphState) -> dict[str, Any]:
            self._step(name, s["run"])
            return {"run": s["run"]}

        return node

    def _step(self, name: str, state: RunState) -> None:
        t0 = time.perf_counter()
        before = (len(state.evidence), state.tool_calls, len(state.stages.reports))
        self.nodes[name](state)
        reports = state.stages.reports[before[2] :]
        state.trace.append(
            TraceStep(
                node=name,
                seconds=round(time.perf_counter() - t0, 4),
                summary="; ".join(f"{r.name} {r.status.value}: {r.detail}" for r in reports),
                inputs=_inputs(name, state),
                outputs=_outputs(name, state, before[0]),
                calls=_calls(name, state, before[1]),
            )
        )

    # -- nodes --

    def evidence(self, state: RunState) -> None:
        image = state.image
        t0 = time.perf_counter()
        exif = read_exif(image, self.deps.gazetteer)
        if image.pixel_error and not exif.present:
            raise CorruptImageError(
                image.source, image.pixel_error + " and there is no metadata to fall back on"
            )
        n_used = sum(1 for e in exif.evidence if e.usable and e.weight > 0)
        state.stages.add(
            "exif",
            StageStatus.RAN,
            f"{len(exif.evidence)} observations, {n_used} locating" if exif.present else "no EXIF metadata",
            t0=t0,
        )
        state.exif = exif
        state.evidence.extend(exif.evidence)
        state.missing.extend(exif.missing)
        if image.pixel_error:
            state.warnings.append(f"{image.pixel_error}; only the metadata was used")

        state.lines = self._ocr(state)
        state.text = "\n".join(ln.text for ln in state.lines)
        state.languages = self._langid(state)
        scripts = detect_scripts(state.text)
        t0 = time.perf_counter()
        if state.lines:
            hints = self._hint_countries(state.languages)
            clues = self.clues.extract(state.lines, state.languages, scripts, hint_countries=hints)
            state.evidence.extend(clues.evidence)
            state.missing.extend(clues.missing)
            state.matches = list(clues.matches)
            n_loc = sum(1 for e in clues.evidence if e.weight > 0 and (e.countries or e.point))
            state.stages.add(
                "clues", StageStatus.RAN, f"{n_loc} location clues from {len(state.lines)} text lines", t0=t0
            )
        else:
            state.stages.add("clues", StageStatus.SKIPPED, "no text to read clues from")

    def retrieval(self, state: RunState) -> None:
        d = self.deps
        if d.retriever is None:
            state.stages.add(
                "retrieval", StageStatus.UNAVAILABLE, d.retriever_unavailable or "not configured"
            )
            return
        if state.image.rgb is None:
            state.stages.add("retrieval", StageStatus.SKIPPED, "the pixels could not be decoded")
            return
        t0 = time.perf_counter()
        try:
            found = d.retriever.run(state.image.rgb)
        except (GeoSleuthError, RuntimeError, ValueError, OSError) as exc:
            state.stages.add(
                "retrieval", StageStatus.FAILED, str(exc), engine=d.retriever.encoder.name, t0=t0
            )
            state.warnings.append(f"retrieval failed: {exc}")
            return
        new, points = retrieval_evidence(found.gallery, found.similar, d.gazetteer, found.refined)
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
            f"{detail} ({d.retriever.description})",
            engine=d.retriever.encoder.name,
            t0=t0,
        )

    def generate(self, state: RunState) -> None:
        """Ask the VLM (every prompt variant, every sample) and add its votes to the evidence."""
        d = self.deps
        if d.vlm is None:
            state.stages.add("vlm", StageStatus.UNAVAILABLE, d.vlm_unavailable or "not configured")
            return
        if state.image.rgb is None:
            state.stages.add("vlm", StageStatus.SKIPPED, "the pixels could not be decoded")
            return
        if self.settings.budgets.max_vlm_calls == 0:
            state.stages.add("vlm", StageStatus.SKIPPED, "budgets.max_vlm_calls is 0")
            return
        if state.elapsed() > self.settings.budgets.max_seconds:
            state.stages.add("vlm", StageStatus.SKIPPED, self._out_of_time(state))
            return
        from geosleuth.agents.vlm.prompting import (
            PromptContext,
            evidence_lines,
            references_from_neighbours,
            untrusted_block,
        )
        from geosleuth.agents.vlm.reasoning import VLMReasoner, vlm_evidence

        t0 = time.perf_counter()
        if self._reasoner is None:
            self._reasoner = VLMReasoner(d.vlm, self.settings, d.gazetteer)
        found = state.found
        context = PromptContext(
            evidence_lines=evidence_lines(state.evidence),
            untrusted_text=untrusted_block(state.text),
            similar=references_from_neighbours(found.similar) if found is not None else [],
            dissimilar=references_from_neighbours(found.dissimilar) if found is not None else [],
        )
        if found is not None and self.settings.vlm.reference_images:
            _attach_thumbnails(context, self.settings.vlm.reference_images)
        injection = any(e.kind == EvidenceKind.PROMPT_INJECTION for e in state.evidence)
        taint = _taint(state.text, state.matches, state.evidence) if injection else None
        report = self._reasoner.run(state.image.rgb, context, key=state.image.source, taint=taint)
        new, points = vlm_evidence(report, d.gazetteer, injection=injection)
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
        status = StageStatus.FAILED if failed and len(failed) == len(report.calls) else StageStatus.RAN
        state.stages.add("vlm", status, detail, engine=f"{d.vlm.name}:{d.vlm.model}", t0=t0)

    def verify(self, state: RunState) -> None:
        """Fusion of the hard evidence into candidates, then the verifier over every candidate from
        every source (fusion, gallery, neighbours, VLM, tools)."""
        assert state.exif is not None
        t0 = time.perf_counter()
        fused = state.fusion
        if fused is None:  # checks add no hard evidence: later rounds re-verify the same fusion
            hard = [e for e in state.evidence if e.kind not in SOFT_KINDS]
            points = [*state.points, *state.vlm_points]
            fused = self.fusion.fuse(hard, state.matches, state.exif, points)
            state.evidence.extend(fused.extra_evidence)
            state.warnings.extend(fused.warnings)
            state.fusion = fused
        name = "verify" if state.rounds == 0 else f"verify#{state.rounds + 1}"
        pool, evidence_p, remainder = self._pool(state, fused)
        if not pool:
            state.ranked, state.regions, state.confidence, state.verdict = [], [], 0.0, ""
            state.stages.add(name, StageStatus.RAN, "no candidate place from any stage", t0=t0)
            return
        inputs = self._verification_inputs(state, pool, evidence_p, remainder)
        state.inputs = inputs
        result = self.verifier.verify(inputs)
        ranked = result.candidates[: self.settings.max_candidates]
        missing = [c for c in ranked if c.place is None]
        for c, place in zip(missing, self.deps.gazetteer.reverse([c.point for c in missing]), strict=True):
            c.place = place
        state.ranked = ranked
        state.regions = result.regions
        state.confidence = ranked[0].probability if ranked else 0.0
        state.verdict = result.comparison
        srcs = sorted({s for c in pool for s in [c.source.value]})
        state.stages.add(
            name,
            StageStatus.RAN,
            f"{len(pool)} candidates from {', '.join(srcs)} merged into {len(result.candidates)} places; "
            f"best p={state.confidence:.2f}, somewhere else p={result.null_probability:.2f}",
            t0=t0,
        )

    @property
    def verifier(self) -> Any:
        """The verifier, made on first use (with fitted weights when verifier.weights_file is set)."""
        if self._verifier is None:
            from geosleuth.agents.verifier import Verifier

            self._verifier = Verifier(self.deps.gazetteer, self.settings.verifier)
            if self.settings.verifier.weights_file is not None:
                self._verifier.load_weights(self.settings.verifier.weights_file)
        return self._verifier

    def _pool(
        self, state: RunState, fused: FusionResult
    ) -> tuple[list[Candidate], list[float], dict[str, float]]:
        """Every candidate place: fusion's (with their probabilities given the hard evidence), the
        gallery's best points, the most similar photos, the VLM's answers per country, tool finds."""
        pool = [c.model_copy(deep=True) for c in fused.candidates]
        evidence_p = [c.probability for c in pool]
        remainder = {
            c.place.country_code: c.probability
            for c in fused.candidates
            if c.place is not None and c.granularity in (Granularity.COUNTRY, Granularity.REGION)
        }
        found = state.found
        extra: list[Candidate] = []
        if found is not None:
            for g in [*found.refined[:1], *found.gallery[:GALLERY_CANDIDATES]]:
                extra.append(
                    _candidate(
                        g.point, CandidateSource.GALLERY, "a GPS-gallery match", 25.0, "retrieval.gallery"
                    )
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
        self, state: RunState, pool: list[Candidate], evidence_p: list[float], remainder: dict[str, float]
    ) -> Any:
        from geosleuth.agents.verifier import VerificationInputs

        exif = state.exif
        gps = next((e for e in state.evidence if e.id == "exif.gps" and e.usable and e.point), None)
        use_gps = gps is not None and self.settings.use_exif_gps
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
        return VerificationInputs(
            candidates=pool,
            hard_strength=0.0,  # the `evidence` signal carries fusion's posterior
            exif_point=gps.point if use_gps and gps is not None else None,
            exif_radius_km=(exif.gps_radius_km if exif is not None and exif.gps_radius_km else 0.1),
            utc_band=band,
            similar=list(found.similar) if found is not None else [],
            dissimilar=list(found.dissimilar) if found is not None else [],
            vlm_guesses=guesses,
            geo_similarity=found.geo_similarity if found is not None else None,
            geo_logit_scale=(found.logit_scale or 39.69) if found is not None else 39.69,
            evidence_probabilities=evidence_p,
            country_remainder=remainder,
        )

    def decide(self, state: RunState) -> Literal["done", "investigate"]:
        """Investigate when the answer is weak or two countries compete, if anything can be checked
        and the budgets allow; otherwise done. The reason is recorded either way."""
        reason = self._why_investigate(state)
        blocker = self._why_not(state) if reason else None
        if reason and blocker is None:
            state.decision = f"investigate: {reason}"
        else:
            state.decision = "done" + (f" ({reason}, but {blocker})" if reason else "")
        state.trace.append(TraceStep(node="decide", seconds=0.0, summary=state.decision))
        return "investigate" if state.decision.startswith("investigate") else "done"

    def investigate(self, state: RunState) -> None:
        """Targeted checks with the OpenStreetMap tools, within the tool-call budget:

        * geocode the place names read in the image (Nominatim), in the leading countries: each hit
          is a new candidate;
        * look for the image's other text (shop and street names) as OpenStreetMap features near
          the leading candidates (Overpass): a match confirms the candidate and pins its point.

        A tool that cannot run is recorded (and not tried again in this process); the run goes on."""
        from geosleuth.tools.osm import ToolUnavailableError

        state.rounds += 1
        name = f"investigate#{state.rounds}"
        t0 = time.perf_counter()
        tools = self._get_tools()
        assert tools is not None  # decide() only investigates when tools exist
        done: list[str] = []
        budget = self.settings.budgets.max_tool_calls
        countries = [c.place.country_code for c in state.ranked[:3] if c.place is not None]
        chosen, chooser = self._vlm_choices(state)
        if not chosen:  # the rule: names read in the image, then its other text near the leaders
            chosen = [("geocode", {"name": q, "country_code": None}) for q in self._things_to_check(state)]
            if tools.overpass is not None:
                chosen += [
                    ("find_osm_feature", {"name": q, "candidate": c})
                    for q, c in self._features_to_check(state)
                ]
        try:
            for tool, args in chosen:
                if state.tool_calls >= budget:
                    break
                query = args["name"]
                if tool == "geocode":
                    state.asked.add(query.lower())
                    state.tool_calls += 1
                    codes = [args["country_code"]] if args["country_code"] else sorted(set(countries)) or None
                    hits = tools.geocoder.geocode(query, country_codes=codes, limit=3)
                    done.append(f"geocode {query!r} ({chooser}): {len(hits)} hits")
                    for hit in hits:
                        self._add_geocoded(state, query, hit)
                elif tools.overpass is not None:
                    cand = args["candidate"]
                    state.asked.add(f"{query.lower()}@{cand.point}")
                    state.tool_calls += 1
                    found = tools.overpass.find_named(
                        query, cand.point, self.settings.tools.overpass_radius_m
                    )
                    done.append(f"overpass {query!r} near {cand.point} ({chooser}): {len(found)} features")
                    if found:
                        self._add_feature(state, query, cand, found[0])
        except ToolUnavailableError as exc:
            self._tools_down = str(exc)
            state.warnings.append(f"OpenStreetMap tools failed: {exc}")
            state.stages.add(name, StageStatus.FAILED, "; ".join([*done, str(exc)]), engine="osm", t0=t0)
            return
        state.stages.add(
            name, StageStatus.RAN, "; ".join(done) or "nothing left to check", engine="osm", t0=t0
        )

    def _vlm_choices(self, state: RunState) -> tuple[list[tuple[str, dict[str, Any]]], str]:
        """The checks the VLM asks for through tool calling, validated (names must be read in the
        image, points must be a leading candidate's); ([], "rule") when it cannot or will not."""
        vlm = self.deps.vlm
        if not (self.settings.vlm.tool_calling and vlm is not None and hasattr(vlm, "choose_tools")):
            return [], "rule"
        if self._tool_calling_down or not state.text.strip() or not self._things_or_features(state):
            return [], "rule"
        from geosleuth.agents.vlm.prompting import untrusted_block
        from geosleuth.errors import VLMError
        from geosleuth.prompts import INVESTIGATE, INVESTIGATE_SYSTEM, load_template

        cands = [c for c in state.ranked[:3]]
        text = load_template(INVESTIGATE, self.settings.vlm.prompt_dir).render(
            candidates=[f"{c.label} at {c.point.lat:.5f}, {c.point.lon:.5f}" for c in cands],
            untrusted_text=untrusted_block(state.text),
            max_calls=MAX_NAMES,
        )
        system = load_template(INVESTIGATE_SYSTEM, self.settings.vlm.prompt_dir).render()
        try:
            calls = vlm.choose_tools(system, text, _TOOL_SPECS)
        except VLMError as exc:
            self._tool_calling_down = str(exc)
            log.info("the VLM cannot choose tools (%s); a rule chooses", exc)
            return [], "rule"
        lowered = state.text.lower()
        valid: list[tuple[str, dict[str, Any]]] = []
        for name, args in calls[:MAX_NAMES]:
            query = str(args.get("name", "")).strip()
            if not query or query.lower() not in lowered:
                continue  # only what the photo says
            if name == "geocode":
                cc = str(args.get("country_code") or "").upper() or None
                valid.append(
                    ("geocode", {"name": query, "country_code": cc if cc and len(cc) == 2 else None})
                )
            elif name == "find_osm_feature":
                try:
                    point = LatLon(lat=float(args["latitude"]), lon=float(args["longitude"]))
                except (KeyError, TypeError, ValueError):
                    continue
                near = [
                    c
                    for c in cands
                    if float(haversine_km(c.point.lat, c.point.lon, point.lat, point.lon)) <= 50
                ]
                if near:
                    valid.append(("find_osm_feature", {"name": query, "candidate": near[0]}))
        return valid, "chosen by the VLM"

    def _things_or_features(self, state: RunState) -> bool:
        return bool(self._things_to_check(state) or self._features_to_check(state))

    def _get_tools(self) -> Any:
        if self._tools is None:
            from geosleuth.tools.osm import make_tools

            self._tools = make_tools(self.settings) or False
        return self._tools or None

    def _add_geocoded(self, state: RunState, query: str, hit: Any) -> None:
        i = len(state.tool_candidates) + 1
        eid = f"osm.geocode.{i}"
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

    def _add_feature(self, state: RunState, query: str, cand: Candidate, feature: Any) -> None:
        eid = f"osm.feature.{len(state.tool_candidates) + 1}"
        kind = next(
            (f"{k}={v}" for k, v in feature.tags.items() if k in ("shop", "amenity", "highway", "tourism")),
            "",
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

    def _features_to_check(self, state: RunState) -> list[tuple[str, Candidate]]:
        """(text, candidate) pairs: the image's text lines that are not place names, near the two
        best candidates finer than a country."""
        if any(e.kind == EvidenceKind.PROMPT_INJECTION for e in state.evidence):
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

    # -- decision helpers --

    def _why_investigate(self, state: RunState) -> str | None:
        if state.fusion is not None and state.fusion.basis == "exif-gps":
            return None
        top = state.ranked[0] if state.ranked else None
        threshold = self.settings.verifier.investigate_below
        if top is None or state.confidence < threshold:
            return f"the best answer has probability {state.confidence:.2f} < {threshold:.2f}"
        if len(state.ranked) > 1 and top.place and state.ranked[1].place:
            second = state.ranked[1]
            if (
                second.place is not None
                and top.place.country_code != second.place.country_code
                and second.probability > 0.5 * top.probability
            ):
                return f"{top.place.country} and {second.place.country} compete"
        return None

    def _why_not(self, state: RunState) -> str | None:
        b = self.settings.budgets
        if state.rounds >= MAX_ROUNDS:
            return f"{MAX_ROUNDS} rounds of checks were made"
        if state.tool_calls >= b.max_tool_calls:
            return f"the tool-call budget ({b.max_tool_calls}) is spent"
        if state.elapsed() > b.max_seconds:
            return self._out_of_time(state)
        if not self._things_to_check(state) and not self._features_to_check(state):
            return "nothing read in the image can be checked"
        return self._tools_unavailable()

    def _tools_unavailable(self) -> str | None:
        if self._tools_down is not None:
            return f"the OpenStreetMap tools failed earlier ({self._tools_down})"
        if self._get_tools() is None:
            from geosleuth.tools.osm import unavailable_reason

            return unavailable_reason(self.settings) or "no OpenStreetMap tools"
        return None

    def _things_to_check(self, state: RunState) -> list[str]:
        """Names read in the image not yet geocoded (none when the text tries to steer AI systems)."""
        if any(e.kind == EvidenceKind.PROMPT_INJECTION for e in state.evidence):
            return []
        names = [m.surface for m in state.matches]
        return [n for n in dict.fromkeys(names) if n.lower() not in state.asked][:MAX_NAMES]

    def _out_of_time(self, state: RunState) -> str:
        return (
            f"the time budget ({self.settings.budgets.max_seconds:.0f} s) is spent after "
            f"{state.elapsed():.1f} s: the answer is the best so far"
        )

    # -- evidence helpers --

    def _ocr(self, state: RunState) -> list[Any]:
        d, image, stages = self.deps, state.image, state.stages
        if image.rgb is None:
            stages.add("ocr", StageStatus.SKIPPED, "the pixels could not be decoded")
            return []
        if d.ocr is None:
            stages.add("ocr", StageStatus.UNAVAILABLE, d.ocr_unavailable or "no OCR engine")
            state.missing.append("text in the image was not read (no OCR engine)")
            return []
        t0 = time.perf_counter()
        try:
            result = d.ocr.read([image.rgb])[0]
        except (EngineUnavailableError, OSError, RuntimeError, ValueError) as exc:
            stages.add("ocr", StageStatus.FAILED, str(exc), engine=d.ocr.name, t0=t0)
            state.warnings.append(f"OCR failed: {exc}")
            return []
        stages.add("ocr", StageStatus.RAN, f"{len(result.lines)} text lines", engine=d.ocr.name, t0=t0)
        if not result.lines:
            state.missing.append("no readable text in the image")
        return list(result.lines)

    def _langid(self, state: RunState) -> list[Any]:
        d, text, stages = self.deps, state.text, state.stages
        if not text.strip():
            stages.add("langid", StageStatus.SKIPPED, "no text")
            return []
        if d.langid is None:
            stages.add("langid", StageStatus.UNAVAILABLE, d.langid_unavailable or "no language identifier")
            return []
        t0 = time.perf_counter()
        guesses = d.langid.identify([text])[0]
        top = f"{guesses[0].name} ({guesses[0].confidence:.2f})" if guesses else "no confident guess"
        stages.add("langid", StageStatus.RAN, top, engine=d.langid.name, t0=t0)
        return list(guesses)

    def _hint_countries(self, languages: list[Any]) -> list[str]:
        """Countries where the text's language is most at home: lets the phone matcher read numbers
        written in national format ("01 42 60 30 30" is only a number once France is suspected)."""
        if not languages or languages[0].confidence < 0.3:
            return []
        gaz = self.deps.gazetteer
        likes = gaz.language_countries(languages[0].code)
        pops = {c: gaz.countries[c].population for c in likes if c in gaz.countries}
        return sorted(pops, key=lambda c: -(likes[c] * pops[c]))[:3]


_TOOL_SPECS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "geocode",
            "description": "Find where a place name read in the photo is (OpenStreetMap Nominatim).",
            "parameters": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "The name, as read in the photo."},
                    "country_code": {"type": "string", "description": "ISO 3166-1 alpha-2, optional."},
                },
                "required": ["name"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "find_osm_feature",
            "description": "Is there a shop, business or street of this name near a candidate place?",
            "parameters": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "The name, as read in the photo."},
                    "latitude": {"type": "number"},
                    "longitude": {"type": "number"},
                },
                "required": ["name", "latitude", "longitude"],
            },
        },
    },
]


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


# -- trace summaries -------------------------------------------------------------------------------


def _top(cands: list[Candidate], n: int = 3) -> list[dict[str, Any]]:
    return [
        {
            "point": str(c.point),
            "label": c.label,
            "source": c.source.value,
            "p": round(c.probability, 4),
        }
        for c in cands[:n]
    ]


def _inputs(name: str, state: RunState) -> dict[str, Any]:
    if name == "evidence":
        return {"image": f"{state.image.format} {state.image.width}x{state.image.height}"}
    if name == "generate":
        return {
            "evidence_items": len(state.evidence),
            "references": len(state.found.similar) if state.found else 0,
        }
    if name == "verify":
        return {
            "evidence_items": len(state.evidence),
            "retrieval_points": len(state.points),
            "vlm_points": len(state.vlm_points),
            "tool_candidates": len(state.tool_candidates),
        }
    if name == "investigate":
        return {"round": state.rounds, "decision": state.decision}
    return {}


def _outputs(name: str, state: RunState, evidence_before: int) -> dict[str, Any]:
    new = [e.id for e in state.evidence[evidence_before:]]
    out: dict[str, Any] = {"new_evidence": new} if new else {}
    if name == "verify":
        out["top"] = _top(state.ranked)
        out["confidence"] = round(state.confidence, 4)
    if name == "generate" and state.vlm is not None:
        out["usable_samples"] = state.vlm.usable_samples
        out["consensus"] = str(state.vlm.consensus) if state.vlm.consensus else None
    if name == "retrieval" and state.found is not None:
        out["gallery"] = len(state.found.gallery)
        out["similar"] = len(state.found.similar)
    return out


def _calls(name: str, state: RunState, tool_calls_before: int) -> list[str]:
    if name == "generate" and state.vlm is not None:
        return [
            f"vlm {c.variant} n={c.n}: {'error ' + (c.error_type or '') if c.error else 'ok'}"
            for c in state.vlm.calls
        ]
    if name == "investigate":
        return (
            sorted(state.asked)[-(state.tool_calls - tool_calls_before) :]
            if state.tool_calls > tool_calls_before
            else []
        )
    return []


# -- VLM helpers -----------------------------------------------------------------------------------


def _taint(text: str, matches: list[Any], evidence: list[Evidence]) -> Any:
    """Where text that tries to instruct AI systems points: its coordinates, the places it names
    (the likeliest three readings of each) and the countries it names."""
    from geosleuth.agents.vlm.reasoning import Taint
    from geosleuth.gazetteer import city_radius_km

    places = []
    for m in matches:
        ranked = sorted(zip(m.places, m.weights, strict=True), key=lambda pw: -pw[1])[:3]
        for p, _ in ranked:
            places.append((p.point, max(25.0, float(city_radius_km(p.population))), p.name))
    countries = {
        c
        for e in evidence
        if e.kind == EvidenceKind.COUNTRY_NAME
        for c, like in e.countries.items()
        if like >= 0.5
    }
    return Taint(text=text, places=tuple(places), countries=frozenset(countries))


def _attach_thumbnails(context: Any, count: int) -> None:
    """Thumbnails of the most similar neighbours whose files are still on disk."""
    from dataclasses import replace

    from geosleuth.agents.vlm.prompting import load_thumbnail

    for i, ref in enumerate(context.similar[:count]):
        thumb = load_thumbnail(ref.key) if ref.key else None
        if thumb is not None:
            context.similar[i] = replace(ref, image=thumb)


__all__ = ["SOFT_KINDS", "GraphState", "Planner", "RunState", "Stages"]
