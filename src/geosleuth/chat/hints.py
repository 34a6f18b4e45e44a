"""Hints from the user ("it was taken in Portugal", "this is Porto", "summer 2019", "near the sea")
as evidence.

A hint is understood (:func:`parse_hint`), resolved against the offline gazetteer, checked
against the photo's hard evidence (:func:`conflict_with`), and, unless it conflicts, added to the
planner state as evidence with ``tool = "user"`` (:func:`add_to_state`); verification then runs
again. A hint that contradicts the EXIF GPS or a readable postcode and city is not applied until
the user insists ("trust my hint"); then it is applied with more weight, the conflict is recorded
in the evidence, and a contradicted GPS position is set aside.

The hint's words are the user's: they are matched against patterns and place names, never
followed as instructions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from geosleuth.agents.state import RunState
from geosleuth.gazetteer import Gazetteer, GazetteerPlace, city_radius_km, name_key
from geosleuth.geo import point_distance_km
from geosleuth.schemas import CandidateSource, CircleRegion, Evidence, EvidenceKind, LatLon
from geosleuth.tools.clues import PlaceMatch

HINT_WEIGHT = 0.8
# An insisted hint is a constraint: other countries get this likelihood (fusion reads it from the
# evidence's details), low enough to outweigh the hard evidence the user overrode.
INSISTED_OFF_LIST = 1e-9
HINT_GENUINENESS = 0.9
CONFLICT_MAX_P = 0.02  # the hinted country had at most this probability ...
CONFLICT_MIN_TOP = 0.8  # ... while another had at least this, from hard evidence
HARD_KINDS = {
    EvidenceKind.PLACE_NAME,
    EvidenceKind.POSTCODE,
    EvidenceKind.PHONE,
    EvidenceKind.DOMAIN,
    EvidenceKind.COUNTRY_NAME,
    EvidenceKind.BRAND,
    EvidenceKind.CURRENCY,
}
TOOL = "user"
MATCH_KIND = "hint"

# "it was taken in X", "this is X", "the photo is from X", "I know it's in X" ... (not questions)
_PLACE_HINT = re.compile(
    r"^(?:i\s+(?:know|think|am\s+sure|'m\s+sure)\s+(?:that\s+)?)?"
    r"(?:(?:it|this|the\s+(?:photo|picture|image|shot))\s+"
    r"(?:was\s+(?:taken|shot|made)|is|was|'s|were)\s+(?:taken\s+)?(?:in|at|from|near)?\s*"
    r"|(?:taken|shot)\s+(?:in|at|near)\s+|it'?s\s+(?:in\s+)?|i\s+was\s+in\s+)"
    r"(?P<place>.+?)\s*[.!]*$",
    re.IGNORECASE,
)
_YEAR = re.compile(r"\b(?P<year>1[89]\d\d|20\d\d)\b")
_SEASON = re.compile(r"\b(spring|summer|autumn|fall|winter)\b", re.IGNORECASE)
_FEATURE = re.compile(
    r"\b(?P<feature>(?:near|by|on|at)\s+(?:the\s+)?(?:sea|seaside|coast|beach|ocean|lake|river|mountains?|"
    r"desert|border|equator)|in\s+(?:the\s+)?(?:mountains|desert|countryside|tropics|arctic|alps))\b",
    re.IGNORECASE,
)
_INSIST = re.compile(
    r"\b(trust\s+(?:my|the)\s+hint|i\s+insist|i(?:'m|\s+am)\s+(?:sure|certain|positive)|use\s+my\s+hint)\b",
    re.IGNORECASE,
)
_QUESTION_START = re.compile(
    r"^(?:is|was|could|can|might|may|would|does|did|are|were|where|why|what|which|how|who)\b", re.IGNORECASE
)


@dataclass(frozen=True)
class Resolved:
    """A place name resolved offline: a country, or a populated place."""

    name: str
    country_code: str
    country: str
    point: LatLon
    radius_km: float
    place: GazetteerPlace | None  # None for a country

    @property
    def value(self) -> str:
        return self.name if self.place is None else f"{self.name}, {self.country}"


@dataclass(frozen=True)
class ParsedHint:
    kind: str  # country | place | date | feature
    surface: str
    resolved: Resolved | None = None
    year: int | None = None
    season: str | None = None


def is_insist(text: str) -> bool:
    return _INSIST.search(text) is not None


def is_question(text: str) -> bool:
    t = text.strip()
    return t.endswith("?") or _QUESTION_START.match(t) is not None


def resolve_place(gaz: Gazetteer, text: str) -> Resolved | None:
    """A country or a populated place by its name ("Portugal", "Porto", "Porto, Portugal",
    "the Netherlands"); ``None`` when the gazetteer knows neither."""
    words = text.strip().strip("\"'“”‘’.?!").strip()
    words = re.sub(r"^(?:the|a|an)\s+", "", words, flags=re.IGNORECASE)
    if not words or len(words) > 80:
        return None
    codes = gaz.country_name_keys.get(name_key(words)) or gaz.country_name_keys.get(
        name_key(re.sub(r"^the\s+", "", words, flags=re.IGNORECASE))
    )
    if codes:
        cc = codes[0]
        centre = gaz.country_centre(cc)
        if centre is not None:
            return Resolved(gaz.country_name(cc), cc, gaz.country_name(cc), centre.point, centre.r80_km, None)
    country: str | None = None
    name = words
    if "," in words:  # "Porto, Portugal"
        head, _, tail = words.rpartition(",")
        tail_codes = gaz.country_name_keys.get(name_key(tail.strip()))
        if tail_codes:
            name, country = head.strip(), tail_codes[0]
    hits = gaz.lookup(name, country=country, limit=1)
    if not hits:
        return None
    p = hits[0]
    return Resolved(
        p.name,
        p.country_code,
        gaz.country_name(p.country_code),
        p.point,
        float(city_radius_km(p.population)),
        p,
    )


def parse_hint(gaz: Gazetteer, text: str) -> ParsedHint | None:
    """The hint in ``text``, if it states one (a question is not a hint)."""
    t = " ".join(text.strip().split())
    if not t or is_question(t):
        return None
    m = _PLACE_HINT.match(t)
    if m:
        surface = m.group("place")
        # "it was taken in summer 2019" / "it was taken near the sea" are not places
        if not _YEAR.search(surface) and not _FEATURE.search(f"near {surface}" if surface else ""):
            resolved = resolve_place(gaz, surface)
            if resolved is not None:
                return ParsedHint("country" if resolved.place is None else "place", surface, resolved)
    year = _YEAR.search(t)
    if year and (m or _SEASON.search(t) or re.search(r"\b(taken|shot|in|during)\b", t, re.IGNORECASE)):
        season = _SEASON.search(t)
        return ParsedHint(
            "date", t, year=int(year.group("year")), season=season.group(1).lower() if season else None
        )
    feature = _FEATURE.search(t)
    if feature and (m or re.search(r"\b(taken|shot|it|this)\b", t, re.IGNORECASE)):
        return ParsedHint("feature", feature.group("feature").lower())
    return None


@dataclass(frozen=True)
class Conflict:
    text: str
    evidence_ids: list[str]


def conflict_with(
    state: RunState, gaz: Gazetteer, hint: ParsedHint, *, use_exif_gps: bool
) -> Conflict | None:
    """The hard evidence of one photo that contradicts ``hint``, or ``None``."""
    if hint.kind == "date":
        return _date_conflict(state, hint)
    r = hint.resolved
    if r is None:
        return None
    gps = next((e for e in state.evidence if e.id == "exif.gps" and e.usable and e.point is not None), None)
    if gps is not None and gps.point is not None and use_exif_gps:
        at = gaz.reverse_one(gps.point)
        far = point_distance_km(gps.point, r.point) > max(50.0, 2 * r.radius_km)
        if (r.place is None and at.country_code != r.country_code) or (r.place is not None and far):
            return Conflict(
                f"the photo's EXIF GPS position ({gps.point}, in {at.short()}) is not in {r.value}",
                ["exif.gps"],
            )
    fused = state.fusion
    if fused is None:
        return None
    cp = fused.country_probabilities
    top_cc = max(cp, key=lambda c: cp[c]) if cp else None
    if (
        top_cc is not None
        and top_cc != r.country_code
        and cp.get(r.country_code, 0.0) <= CONFLICT_MAX_P
        and cp[top_cc] >= CONFLICT_MIN_TOP
    ):
        ids = [
            e.id
            for e in state.evidence
            if e.usable
            and e.weight > 0
            and e.kind in HARD_KINDS
            and e.countries.get(top_cc, 0.0) >= 0.5
            and e.countries.get(r.country_code, 0.0) < 0.1
        ]
        if ids:
            return Conflict(
                f"the text read in the photo points to {gaz.country_name(top_cc)} "
                f"(p={cp[top_cc]:.2f}), not {r.country} (p={cp.get(r.country_code, 0.0):.3f})",
                ids,
            )
    if r.place is not None and state.ranked:
        best = state.ranked[0]
        if (
            best.source == CandidateSource.TEXT_CLUE
            and best.probability >= CONFLICT_MIN_TOP
            and point_distance_km(best.point, r.point) > max(50.0, best.radius_km + r.radius_km)
        ):
            ids = [
                i
                for i in best.evidence_ids
                if (e := next((x for x in state.evidence if x.id == i), None)) is not None
                and e.kind in HARD_KINDS
            ]
            if ids:
                name = best.place.short() if best.place is not None else best.label
                km = point_distance_km(best.point, r.point)
                return Conflict(f"the text read in the photo names {name}, {km:,.0f} km from {r.value}", ids)
    return None


def _date_conflict(state: RunState, hint: ParsedHint) -> Conflict | None:
    taken = next((e for e in state.evidence if e.id == "exif.time" and e.usable), None)
    if taken is None or hint.year is None:
        return None
    local = taken.details.get("local_time")
    try:
        year = datetime.fromisoformat(str(local)).year if local else None
    except ValueError:
        year = None
    if year is not None and year != hint.year:
        return Conflict(
            f"the camera's clock says the photo was taken in {year}, not {hint.year}", ["exif.time"]
        )
    return None


def hint_evidence(
    hint_id: str, text: str, hint: ParsedHint, *, insisted: bool, conflict: Conflict | None
) -> Evidence:
    """The evidence a hint becomes (``tool = "user"``)."""
    details: dict[str, object] = {"said": text, "insisted": insisted}
    if insisted:
        details["off_list_likelihood"] = INSISTED_OFF_LIST
    if conflict is not None:
        details["conflict"] = conflict.text
        details["conflicting_evidence"] = conflict.evidence_ids
    r = hint.resolved
    if hint.kind in ("country", "place") and r is not None:
        if r.place is not None:
            p = r.place
            details["place"] = {
                "geonameid": p.geonameid,
                "name": p.name,
                "lat": p.lat,
                "lon": p.lon,
                "country_code": p.country_code,
                "admin1_code": p.admin1_code,
                "population": p.population,
                "timezone": p.timezone,
            }
        return Evidence(
            id=hint_id,
            tool=TOOL,
            kind=EvidenceKind.USER_HINT,
            value=f"the user says it was taken in {r.value}" + (" (and insisted)" if insisted else ""),
            weight=1.0 if insisted else HINT_WEIGHT,
            point=r.point if r.place is not None else None,
            region=CircleRegion(center=r.point, radius_km=max(r.radius_km, 1.0)),
            countries={r.country_code: 1.0},
            details=details,
        )
    if hint.kind == "date":
        details["year"] = hint.year
        if hint.season:
            details["season"] = hint.season
        when = f"{hint.season} {hint.year}" if hint.season else str(hint.year)
        return Evidence(
            id=hint_id,
            tool=TOOL,
            kind=EvidenceKind.USER_HINT,
            value=f"the user says it was taken in {when}",
            weight=0.0,
            reason="a date does not say where; recorded, not used to rank places",
            details=details,
        )
    return Evidence(
        id=hint_id,
        tool=TOOL,
        kind=EvidenceKind.USER_HINT,
        value=f"the user says it was taken {hint.surface}",
        weight=0.0,
        reason="geosleuth cannot rank places by this yet; recorded, not used",
        details=details,
    )


def add_to_state(state: RunState, evidence: Evidence) -> None:
    """Add a hint's evidence (and its place, for fusion) to the planner state; a contradicted GPS
    position the user overrode is set aside. The caller verifies again."""
    state.evidence = [e for e in state.evidence if e.id != evidence.id] + [evidence]
    place = evidence.details.get("place")
    if isinstance(place, dict):
        gp = GazetteerPlace(**place)
        state.matches = [m for m in state.matches if m.evidence_id != evidence.id] + [
            PlaceMatch(
                evidence_id=evidence.id,
                surface=gp.name,
                kind=MATCH_KIND,
                genuineness=HINT_GENUINENESS,
                places=[gp],
                weights=[1.0],
            )
        ]
    overridden = evidence.details.get("conflicting_evidence") or []
    if evidence.details.get("insisted") and "exif.gps" in overridden:
        state.evidence = [
            e.model_copy(update={"usable": False, "reason": f"set aside: the user insisted on {evidence.id}"})
            if e.id == "exif.gps"
            else e
            for e in state.evidence
        ]


__all__ = [
    "Conflict",
    "ParsedHint",
    "Resolved",
    "add_to_state",
    "conflict_with",
    "hint_evidence",
    "is_insist",
    "is_question",
    "parse_hint",
    "resolve_place",
]
