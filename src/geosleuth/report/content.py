"""What a report says, derived from a :class:`~geosleuth.schemas.Prediction` alone.

Every renderer (HTML, Markdown) reads a :class:`ReportContent`, so the two say the same things in
the same order: the answer, the map's layers, the photo's text, the reasoning coarse to fine, the
ranked hypotheses, the VLM's answers, the gaps, and the provenance. Nothing here escapes text:
that is each renderer's job, and every string that came from the photo, a VLM or a file name is
untrusted."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from geosleuth.agents.verifier import SIGNAL_TEXT
from geosleuth.schemas import (
    Candidate,
    CandidateSource,
    Evidence,
    EvidenceKind,
    LatLon,
    Prediction,
    StageStatus,
    TextLine,
)

IGNORED_GPS = "ignored, as configured (--ignore-exif-gps)"
SIGNAL_SHOWN = 0.05  # |signal| below this says nothing either way
MAX_HYPOTHESES = 10
_QUOTED = re.compile(r"^'([^']{1,80})'")


@dataclass(frozen=True)
class Answer:
    located: bool
    label: str
    point: LatLon | None
    confidence: float
    level: str
    basis: str
    radius_km: float | None
    regions: list[tuple[float, float]]  # (level, area km²)
    sentence: str  # the one-paragraph account
    coords: str = ""  # the point as written: 5 decimals, or 1 when coarsened
    coarsened: bool = False  # the point is the photo's GPS, rounded (--redact-exif)


@dataclass(frozen=True)
class Step:
    """One step of the coarse-to-fine reasoning: its level, its claim, and the evidence it rests on."""

    level: str
    claim: str
    probability: float | None
    evidence: list[Evidence]


@dataclass(frozen=True)
class Hypothesis:
    rank: int
    candidate: Candidate
    supporting: list[str]
    opposing: list[str]
    where: str  # its coordinates as written (coarsened with the GPS they came from)


@dataclass(frozen=True)
class Sample:
    variant: str
    index: int
    point: LatLon | None
    where: str
    rationale: str
    raw: str
    set_aside: str | None
    error: str | None


@dataclass(frozen=True)
class Box:
    """A line of text read in the photo and the evidence it produced."""

    line: TextLine
    evidence: list[Evidence]


@dataclass
class ReportContent:
    title: str
    prediction: Prediction
    answer: Answer
    steps: list[Step]
    against: list[str]
    demoted: list[str]
    hypotheses: list[Hypothesis]
    samples: list[Sample]
    boxes: list[Box]
    gaps: list[str]  # what would most change the answer
    missing: list[str]
    stages_not_run: list[tuple[str, str, str]]  # name, status, why
    neighbours: list[tuple[LatLon, str]] = field(default_factory=list)
    command: str | None = None
    exif_gps: str | None = None  # the photo's GPS metadata, as written (or the redaction marker)
    unused: dict[str, str] = field(default_factory=dict)  # usable evidence that was not used, and why
    redaction: str | None = None  # what was removed before sharing, in plain words


def build_content(pred: Prediction, *, command: str | None = None) -> ReportContent:
    """Everything a report shows about ``pred``, in reading order."""
    evidence = {e.id: e for e in pred.evidence}
    answer = _answer(pred)
    unused = _unused(pred)
    gps = next(
        (e for e in pred.evidence if e.kind == EvidenceKind.GPS and e.usable and e.tool == "exif"), None
    )
    if gps is None:
        exif_gps = None
    elif gps.point is not None:
        exif_gps = str(gps.point)
    else:  # redacted: the field existed, its value is gone
        exif_gps = gps.details.get("lat") if isinstance(gps.details.get("lat"), str) else "withheld"
    return ReportContent(
        title=pred.source,
        prediction=pred,
        answer=answer,
        steps=_steps(pred, evidence, unused),
        against=[
            s.removeprefix("Against it: ")  # the page says "Against the answer:" already
            for s in _sentences(pred.explanation, ("Against it:", "The runner-up had the edge"))
        ],
        demoted=_sentences(pred.explanation, ("Demoted:",)),
        hypotheses=[_hypothesis(pred, i + 1, c) for i, c in enumerate(pred.candidates[:MAX_HYPOTHESES])],
        samples=_samples(pred),
        boxes=_boxes(pred),
        gaps=_gaps(pred),
        missing=list(pred.missing),
        stages_not_run=[
            (s.name, s.status.value, s.detail) for s in pred.stages if s.status != StageStatus.RAN
        ],
        neighbours=[
            (c.point, c.label)
            for c in pred.candidates
            if CandidateSource.NEIGHBOUR.value in (c.sources or [c.source.value])
        ],
        command=command,
        exif_gps=exif_gps,
        unused=unused,
        redaction=pred.redaction.note if pred.redaction is not None else None,
    )


def _answer(pred: Prediction) -> Answer:
    best = pred.best
    located = pred.status == "located" and best is not None
    basis = {
        "exif-gps": "the camera's GPS metadata",
        "evidence": "evidence read from the photo" + (" and a VLM's answers" if pred.vlm else ""),
    }.get(pred.basis or "", "too little evidence")
    if located and best is not None:
        label = best.place.short() if best.place else best.label
    else:
        label = "Too little evidence for a location"
    coarsened = (
        located and pred.basis == "exif-gps" and pred.redaction is not None and pred.redaction.coarsened_deg
    )
    return Answer(
        located=located,
        label=label,
        point=best.point if located and best is not None else None,
        confidence=pred.confidence,
        level=pred.confidence_level.value,
        basis=basis,
        radius_km=best.radius_km if located and best is not None else None,
        regions=[(r.level, r.area_km2) for r in pred.regions],
        sentence=pred.explanation,
        coords=point_text(best.point, coarse=bool(coarsened)) if located and best is not None else "",
        coarsened=bool(coarsened),
    )


def _coarsened(pred: Prediction, c: Candidate) -> bool:
    return (
        pred.redaction is not None
        and pred.redaction.coarsened_deg is not None
        and CandidateSource.EXIF.value in (c.sources or [c.source.value])
    )


def point_text(p: LatLon, *, coarse: bool = False) -> str:
    """Coordinates as a report writes them: five decimals (about a metre), or one when they were
    coarsened, so the page does not claim a precision the numbers no longer have."""
    return f"{p.lat:.1f}, {p.lon:.1f}" if coarse else f"{p.lat:.5f}, {p.lon:.5f}"


def _unused(pred: Prediction) -> dict[str, str]:
    """Evidence that could have counted and did not: a valid EXIF GPS position that no candidate
    came from was ignored (``use_exif_gps`` off, ``--ignore-exif-gps``)."""
    sources = {s for c in pred.candidates for s in (c.sources or [c.source.value])}
    gps = next((e for e in pred.evidence if e.id == "exif.gps" and e.usable and e.weight > 0), None)
    if gps is not None and CandidateSource.EXIF.value not in sources:
        return {gps.id: IGNORED_GPS}
    return {}


def _steps(pred: Prediction, evidence: dict[str, Evidence], unused: dict[str, str]) -> list[Step]:
    """Clues -> continent -> country -> region -> city -> point (the GeoCoT order)."""
    cands = pred.candidates
    located = [
        e
        for e in pred.evidence
        if e.usable and e.weight > 0 and (e.countries or e.point or e.region) and e.id not in unused
    ]
    said = (
        "no observation says anything about where"
        if not located
        else "1 observation says something about where"
        if len(located) == 1
        else f"{len(located)} observations say something about where"
    )
    steps = [Step("clues", said, None, located)]
    best = pred.best or (cands[0] if cands else None)
    if best is None or best.place is None:
        return steps
    place = best.place
    by_continent: dict[str, float] = defaultdict(float)
    by_country: dict[str, float] = defaultdict(float)
    by_region: dict[str, float] = defaultdict(float)
    for c in cands:
        if c.place is not None:
            by_continent[c.place.continent or "?"] += c.probability
            by_country[c.place.country_code] += c.probability
            by_region[f"{c.place.country_code}/{c.place.admin1}"] += c.probability
    country_ev = [e for e in located if place.country_code in e.countries]
    if place.continent:
        steps.append(Step("continent", place.continent, by_continent.get(place.continent), country_ev))
    steps.append(Step("country", place.country, by_country.get(place.country_code), country_ev))
    own = [evidence[i] for i in best.evidence_ids if i in evidence]
    if place.admin1:
        steps.append(Step("region", place.admin1, by_region.get(f"{place.country_code}/{place.admin1}"), own))
    steps.append(Step("city", f"near {place.name}", best.probability, own))
    steps.append(
        Step(
            "point",
            f"{point_text(best.point, coarse=_coarsened(pred, best))} (within about {max(best.radius_km, 1):.0f} km)",
            best.probability,
            own,
        )
    )
    return steps


def _hypothesis(pred: Prediction, rank: int, c: Candidate) -> Hypothesis:
    pro = [
        f"{SIGNAL_TEXT.get(k, k)} ({v:+.1f})"
        for k, v in sorted(c.signals.items(), key=lambda kv: -kv[1])
        if v > SIGNAL_SHOWN
    ]
    con = [
        f"{SIGNAL_TEXT.get(k, k)} ({v:+.1f})"
        for k, v in sorted(c.signals.items(), key=lambda kv: kv[1])
        if v < -SIGNAL_SHOWN
    ]
    where = point_text(c.point, coarse=_coarsened(pred, c))
    return Hypothesis(rank=rank, candidate=c, supporting=pro, opposing=con, where=where)


def _samples(pred: Prediction) -> list[Sample]:
    if pred.vlm is None:
        return []
    out = []
    for call in pred.vlm.calls:
        if call.error:
            out.append(Sample(call.variant, -1, None, "", "", "", None, f"request failed: {call.error}"))
            continue
        for s in call.samples:
            g = s.guess
            where = ", ".join(x for x in (g.city, g.region, g.country) if x) if g is not None else ""
            out.append(
                Sample(
                    variant=call.variant,
                    index=s.index,
                    point=g.point if g is not None else None,
                    where=where,
                    rationale=(g.rationale or "") if g is not None else "",
                    raw=s.raw_text,
                    set_aside=s.set_aside,
                    error=s.error,
                )
            )
    return out


def _boxes(pred: Prediction) -> list[Box]:
    """Each line of text with the evidence that quotes it (clues quote what they read first)."""
    textual = [e for e in pred.evidence if e.tool in ("clues", "langid", "zoom")]
    out = []
    for line in pred.text_lines:
        low = line.text.casefold()
        mine = []
        for e in textual:
            surface = e.details.get("surface") if isinstance(e.details.get("surface"), str) else None
            m = _QUOTED.match(e.value)
            quoted = surface or (m.group(1) if m else None)
            if quoted and quoted.casefold() in low:
                mine.append(e)
        out.append(Box(line=line, evidence=mine))
    return out


def _gaps(pred: Prediction) -> list[str]:
    """What would most change the answer, most useful first."""
    gaps = []
    stage = {s.name: s for s in pred.stages}
    if not any(e.kind == EvidenceKind.GPS and e.usable for e in pred.evidence):
        gaps.append(
            "GPS metadata (the original file from the camera or phone, before a platform stripped it)"
        )
    if not pred.text_lines:
        gaps.append("a readable sign, shop front, plate or other text (a closer or sharper photo)")
    elif not any(
        e.kind in (EvidenceKind.PLACE_NAME, EvidenceKind.POSTCODE, EvidenceKind.PHONE) for e in pred.evidence
    ):
        gaps.append("text that names a place: a town, a postcode, a phone number")
    if "vlm" in stage and stage["vlm"].status != StageStatus.RAN:
        gaps.append("a VLM's reading of the scene (--vlm-url)")
    if "retrieval" in stage and stage["retrieval"].status != StageStatus.RAN:
        gaps.append("retrieval of look-alike places (--image-encoder geoclip)")
    if not any(s.name.startswith("investigate") for s in pred.stages) and "offline" in pred.explanation:
        gaps.append("network checks against OpenStreetMap (--online)")
    return gaps


def _sentences(text: str, starts: tuple[str, ...]) -> list[str]:
    parts = re.split(r"(?<=\.)\s+(?=[A-Z'])", text)
    return [p for p in parts if p.startswith(starts)]
