"""Answers without a VLM: the common location questions, recognised by their wording and answered
from the prediction and the agent tools.

Intents: where (at the asked level: continent, country, region, city, point), how sure, why, why
not X, could it be X, what the text says, the alternatives, what is missing or would help, whether
several photos were taken in the same place, and a joint answer for them. Every answer cites the
evidence ids it rests on. A question none of these fits gets "I don't know" and what can be asked;
one that needs to look at the scene says it needs a VLM.

The words of the question are matched, never executed; text read from the photo is quoted as
evidence, never obeyed."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel

from geosleuth.agents.toolbox import PlaceCheck
from geosleuth.chat.hints import Resolved, resolve_place
from geosleuth.chat.photo import PhotoSession
from geosleuth.chat.turn import PlaceCheckSummary, PlaceCheckVerdict
from geosleuth.errors import GeoSleuthError
from geosleuth.gazetteer import Gazetteer
from geosleuth.geo import point_distance_km
from geosleuth.report.content import build_content
from geosleuth.schemas import Candidate, CandidateSource, Evidence, EvidenceKind, Prediction

_VERDICT_WORDS = {
    PlaceCheckVerdict.BEST: "Yes",
    PlaceCheckVerdict.LIKELY: "Likely",
    PlaceCheckVerdict.POSSIBLE: "Possibly",
    PlaceCheckVerdict.UNLIKELY: "Unlikely",
    PlaceCheckVerdict.VERY_UNLIKELY: "No, very unlikely",
}

ToolRunner = Callable[[PhotoSession, str, dict[str, object]], BaseModel]

LEVELS = (
    "continent",
    "country",
    "region",
    "state",
    "province",
    "city",
    "town",
    "place",
    "coordinates",
    "point",
)

INTENTS: list[tuple[str, re.Pattern[str]]] = [
    ("help", re.compile(r"^/?help\b|\bwhat can (?:you|i) (?:ask|do)\b", re.I)),
    (
        "joint",
        re.compile(r"\bjoint(?:ly)?\b|\bcombin(?:e|ed)\b|\btogether\b.*\banswer\b|\bone answer\b", re.I),
    ),
    (
        "compare",
        re.compile(
            r"\bsame (?:place|city|town|country|location|area|spot)\b|\bcompare\b|\btaken together\b|"
            r"\bboth\b.*\b(?:place|city|country)\b",
            re.I,
        ),
    ),
    (
        "why_not",
        re.compile(r"\bwhy not\b|\band not\b|\brather than\b|\binstead of\b|\bnot (?:in )?\w+\s*\?$", re.I),
    ),
    (
        "could_be",
        re.compile(
            r"^(?:could|can|might|may|is|was|would)\s+(?:it|this|that|the (?:photo|picture|image))"
            r"(?:\s+(?:photo|picture|image))?\s+(?:also\s+)?(?:be|in|from|have been)\b|"
            r"^(?:is|was) (?:it|this) (?:in|from)\b|\bpossibly\b.*\?$|"
            r"\b(?:probability|chance|chances|likelihood|odds)\s+(?:of|for|that it(?:'s| is| was)(?: in)?)\s",
            re.I,
        ),
    ),
    (
        "alternatives",
        re.compile(
            r"\balternatives?\b|\bother (?:places|candidates|options|guesses)\b|\bwhat else\b|"
            r"\brunner[- ]up\b|\bsecond (?:best|guess|choice)\b|\branking\b",
            re.I,
        ),
    ),
    (
        "missing",
        re.compile(
            r"\bmissing\b|\bwhat would (?:help|change)\b|\bwhat (?:could|can|might) help\b|\bmore evidence\b|"
            r"\bwhat (?:else )?(?:do|would) you need\b|\bimprove\b|\bnot found\b|\blooked for\b",
            re.I,
        ),
    ),
    (
        "text",
        re.compile(
            r"\b(?:text|sign|signs|signboard|written|writing|inscription|ocr|letters|words|plate)\b|"
            r"\bwhat does (?:it|that|this) say\b|\bread\b",
            re.I,
        ),
    ),
    (
        "how_sure",
        re.compile(
            r"\bhow (?:sure|confident|certain|likely|accurate|precise)\b|\bconfidence\b|\bprobab|"
            r"\bcertain(?:ty)?\b|\buncertain",
            re.I,
        ),
    ),
    (
        "why",
        re.compile(
            r"^why\b|\bhow do you know\b|\bwhat makes you\b|\bevidence\b|\bbased on\b|\bexplain\b|\breason",
            re.I,
        ),
    ),
    (
        "visual",
        re.compile(
            r"\bdescribe\b|\bcolou?rs?\b|\bweather\b|\bwhat do you see\b|\bwhat(?:'s| is) in (?:the|this) "
            r"(?:photo|picture|image)\b|\bhow many\b|\bpeople\b|\barchitecture\b|\bvegetation\b|\bplants?\b|"
            r"\btrees?\b|\bcars?\b|\bbuilding style\b|\bwho is\b|\bwhen was\b",
            re.I,
        ),
    ),
    (
        "where",
        re.compile(
            r"\bwhere\b|\b(?:which|what) (?:country|city|town|region|state|province|continent|place|part)\b|"
            r"\blocation\b|\bcoordinates\b|\blat(?:itude)?\b|\bwhereabouts\b|^(?:country|city|region|continent)\??$",
            re.I,
        ),
    ),
]

HELP = (
    "Without a VLM I can answer: where? (or which country/city/region/continent?), how sure?, why?, "
    "why not X?, could it be X?, what does the text say?, what are the alternatives?, what is missing "
    "or would help?, and with several photos: were they taken in the same place? and a joint answer. "
    "Tell me what you know ('it was taken in Portugal', 'this is Porto', 'summer 2019') and I will "
    "take it as evidence and check it against what the photo shows."
)


@dataclass
class RuleAnswer:
    text: str
    intent: str
    cited: list[str] = field(default_factory=list)  # qualified ids when several photos
    error: str | None = None
    check: PlaceCheckSummary | None = None


def intent_of(question: str) -> str | None:
    q = " ".join(question.strip().split())
    for name, pattern in INTENTS:
        if pattern.search(q):
            return name
    return None


def mentioned_photos(question: str, count: int) -> list[int]:
    """Photo numbers the question names ("photo 2", "the second photo", "#3"); empty = all."""
    ordinals = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "last": count}
    out: set[int] = set()
    for m in re.finditer(r"(?:photo|picture|image|#)\s*(\d+)", question, re.I):
        out.add(int(m.group(1)))
    for word, n in ordinals.items():
        if re.search(rf"\b(?:the )?{word} (?:photo|picture|image|one)\b", question, re.I):
            out.add(n)
    return sorted(n for n in out if 1 <= n <= count)


def _subject(question: str, after: re.Pattern[str]) -> str | None:
    m = after.search(question)
    if not m:
        return None
    words = m.group("x").strip(" ?!.,;:\"'")
    words = re.sub(r"\s+(?:instead|then|either|too|as well|at all|really)$", "", words, flags=re.I)
    words = re.sub(r"^(?:in|from|at|the city of|the country of)\s+", "", words, flags=re.I)
    return words or None


_WHY_NOT_X = re.compile(r"(?:why not|and not|rather than|instead of|not)\s+(?:in\s+)?(?P<x>[^?!.;]+)", re.I)
_COULD_BE_X = re.compile(
    r"(?:\bbe|\bin|\bfrom|\bof|\bfor|\bhave been(?: taken)?(?: in)?|that it(?:'s| is| was))\s+(?:in\s+|from\s+)?(?P<x>[^?!.;]+?)(?:\s+(?:instead|too|as well))?\s*[?!.]*$",
    re.I,
)


class RuleEngine:
    """The no-VLM answers. ``tools`` runs an agent tool about one photo and records the call."""

    def __init__(self, gazetteer: Gazetteer, tools: ToolRunner) -> None:
        self.gaz = gazetteer
        self.tools = tools

    def answer(
        self, question: str, photos: Sequence[PhotoSession], *, intent: str | None = None
    ) -> RuleAnswer:
        intent = intent or intent_of(question)
        many = len(photos) > 1
        focus = [photos[n - 1] for n in mentioned_photos(question, len(photos))] or list(photos)
        if intent is None:
            return RuleAnswer(
                "I don't know how to answer that from the evidence without a VLM. " + HELP, "unknown"
            )
        if intent == "help":
            return RuleAnswer(HELP, "help")
        if intent == "visual":
            return RuleAnswer(
                "That needs someone to look at the scene: a VLM (start the chat with --vlm-url). Without one "
                "I can only say what the tools observed: the text, the metadata and, when on, the look-alike "
                "places. " + HELP,
                "visual",
            )
        if intent in ("compare", "joint") and not many:
            return RuleAnswer(
                "There is only one photo in this conversation; start it with several to compare.", intent
            )
        if intent == "compare":
            return self._compare(focus if len(focus) > 1 else list(photos))
        if intent == "joint":
            return self._joint(focus if len(focus) > 1 else list(photos))
        parts: list[RuleAnswer] = []
        for photo in focus:
            one = self._one(intent, question, photo)
            parts.append(one)
        if not many:
            return parts[0]
        text = " ".join(
            f"Photo {p.number} ({p.label}): {_qualified(a.text, p.number)}"
            for p, a in zip(focus, parts, strict=True)
        )
        cited = [f"{p.number}:{i}" for p, a in zip(focus, parts, strict=True) for i in a.cited]
        errors = [a.error for a in parts if a.error]
        checks = [a.check for a in parts if a.check is not None]
        return RuleAnswer(
            text, intent, cited, "; ".join(errors) if errors else None, checks[0] if checks else None
        )

    # -- one photo --

    def _one(self, intent: str, question: str, photo: PhotoSession) -> RuleAnswer:
        pred = photo.prediction
        if intent == "where":
            return self._where(question, pred)
        if intent == "how_sure":
            return self._how_sure(pred)
        if intent == "why":
            return self._why(pred)
        if intent == "text":
            return self._text(pred)
        if intent == "alternatives":
            return self._alternatives(pred)
        if intent == "missing":
            return self._missing(pred)
        x = _subject(question, _WHY_NOT_X if intent == "why_not" else _COULD_BE_X)
        if intent == "why_not" and re.match(r"^why\b", question.strip(), re.I) and x is None:
            return self._why(pred)
        if x is None:
            return RuleAnswer("Which place do you mean? Ask e.g. 'could it be Porto?'", intent)
        options = [o for o in re.split(r"\s+or\s+|\s*,\s*or\s+", x) if o] if " or " in x else [x]
        if len(options) > 1:  # "could it be Portugal or Spain?"
            answers = [self._one(intent, f"could it be {o}?", photo) for o in options]
            return RuleAnswer(
                " ".join(a.text for a in answers),
                intent,
                [i for a in answers for i in a.cited],
                "; ".join(a.error for a in answers if a.error) or None,
                next((a.check for a in answers if a.check is not None), None),
            )
        resolved = resolve_place(self.gaz, x)
        if resolved is None:
            return RuleAnswer(
                f"I don't know a country or populated place called {x!r} in the offline gazetteer, so I cannot "
                "check it. Try its English name, or add the country ('Porto, Portugal').",
                intent,
            )
        return self._hypothesis(intent, pred, photo, resolved)

    def _where(self, question: str, pred: Prediction) -> RuleAnswer:
        best = pred.best
        asked = next((lv for lv in LEVELS if re.search(rf"\b{lv}\b", question, re.I)), None)
        if best is None:
            top = pred.candidates[0] if pred.candidates else None
            lead = "I don't know: there is too little evidence for a location"
            if top is not None:
                return RuleAnswer(
                    f"{lead}. The strongest candidate, {top.label}, has only p={top.probability:.2f}, below the "
                    f"threshold for an answer. {self._why_little(pred)}",
                    "where",
                    _ids(top.evidence_ids, pred),
                )
            return RuleAnswer(
                f"{lead}: nothing in the photo pointed anywhere. {self._why_little(pred)}", "where"
            )
        place = best.place
        cc = place.country_code if place is not None else None
        if asked == "country" and place is not None and cc is not None:
            mass = country_mass(pred)
            ev = supporting(pred, cc)
            return RuleAnswer(
                f"{place.country} (p={mass.get(cc, 0.0):.2f} for the country; the best place is "
                f"{place.short()}, p={best.probability:.2f}). It rests on: {_listing(ev)}.",
                "where",
                [e.id for e in ev],
            )
        if asked == "continent" and place is not None and place.continent:
            return RuleAnswer(
                f"{place.continent}: the best answer is {place.short()} (p={best.probability:.2f}).",
                "where",
                _ids(best.evidence_ids, pred),
            )
        if asked in ("region", "state", "province") and place is not None:
            region = place.admin1 or place.country
            return RuleAnswer(
                f"{region}, {place.country}: the best answer is {place.short()} (p={best.probability:.2f}).",
                "where",
                _ids(best.evidence_ids, pred),
            )
        ev = [e for e in (_evidence(pred, i) for i in best.evidence_ids) if e is not None and e.weight > 0]
        where = place.short() if place is not None else best.label
        against = opposing(pred, cc) if cc is not None else []
        text = (
            f"{where}, at {best.point} (p={best.probability:.2f}, {pred.confidence_level.value} confidence, "
            f"within about {best.radius_km:,.0f} km). It rests on: {_listing(ev)}."
        )
        if against:
            text += f" Pointing elsewhere: {_listing(against)}."
        return RuleAnswer(text, "where", [e.id for e in ev + against])

    def _how_sure(self, pred: Prediction) -> RuleAnswer:
        best = pred.best
        if best is None:
            top = pred.candidates[0].probability if pred.candidates else 0.0
            return RuleAnswer(
                f"Not sure at all: no place reaches the threshold for an answer (the best has p={top:.2f}). "
                f"{self._why_little(pred)}",
                "how_sure",
            )
        content = build_content(pred)
        regions = _regions(content.answer.regions)
        basis = (
            "the photo's EXIF GPS position" if pred.basis == "exif-gps" else "the evidence read in the photo"
        )
        elsewhere = 1.0 - sum(c.probability for c in pred.candidates)
        text = (
            f"{pred.confidence_level.value.capitalize()} confidence: p={best.probability:.2f} that it is "
            f"{best.place.short() if best.place else best.label}, within about {best.radius_km:,.0f} km. "
            f"Basis: {basis}."
        )
        if regions:
            text += f" Confidence regions: {regions}."
        if elsewhere > 0.005:
            text += f" Everything else together: p={elsewhere:.2f}."
        warnings = [w for w in pred.warnings if w]
        if warnings:
            text += " Caveats: " + "; ".join(warnings) + "."
        return RuleAnswer(text, "how_sure", _ids(best.evidence_ids, pred))

    def _why(self, pred: Prediction) -> RuleAnswer:
        best = pred.best
        if best is None:
            return RuleAnswer(f"There is no answer to explain. {self._why_little(pred)}", "why")
        content = build_content(pred)
        steps = []
        cited: list[str] = []
        for s in content.steps:
            ids = [e.id for e in s.evidence]
            cited += [i for i in ids if i not in cited]
            p = f" (p={s.probability:.2f})" if s.probability is not None else ""
            steps.append(f"{s.level}: {s.claim}{p}" + (f" [{', '.join(ids)}]" if ids else ""))
        text = "Coarse to fine: " + "; ".join(steps) + "."
        cc = best.place.country_code if best.place else None
        against = opposing(pred, cc) if cc else []
        if against:
            text += f" Against it: {_listing(against)}."
            cited += [e.id for e in against if e.id not in cited]
        if best.notes:
            text += " Notes: " + "; ".join(best.notes) + "."
        return RuleAnswer(text, "why", cited)

    def _text(self, pred: Prediction) -> RuleAnswer:
        lines = pred.text_lines
        textual = [e for e in pred.evidence if e.tool in ("ocr", "clues") and e.kind != EvidenceKind.LANGUAGE]
        if not lines:
            ocr = next((s for s in pred.stages if s.name == "ocr"), None)
            why = f" (OCR {ocr.status.value}: {ocr.detail})" if ocr is not None and ocr.detail else ""
            return RuleAnswer(f"No text was read in the photo{why}.", "text")
        shown = "; ".join(f"{ln.text!r} (confidence {ln.confidence:.2f})" for ln in lines[:12])
        more = f" and {len(lines) - 12} more lines" if len(lines) > 12 else ""
        text = f"The photo's text, as OCR read it (untrusted, quoted): {shown}{more}."
        useful = [e for e in textual if e.weight > 0 and e.usable]
        if useful:
            text += f" What it told me: {_listing(useful)}."
        injected = [e for e in pred.evidence if e.kind == EvidenceKind.PROMPT_INJECTION]
        if injected:
            text += f" Some of it reads as instructions to AI systems; it was treated as data only [{injected[0].id}]."
        return RuleAnswer(text, "text", [e.id for e in useful + injected[:1]])

    def _alternatives(self, pred: Prediction) -> RuleAnswer:
        others = pred.candidates[1:6] if pred.best is not None else pred.candidates[:5]
        if not others:
            return RuleAnswer("There is no alternative: no other place had any support.", "alternatives")
        rows = []
        cited: list[str] = []
        for i, c in enumerate(others, start=2 if pred.best is not None else 1):
            ids = _ids(c.evidence_ids, pred)
            cited += [x for x in ids if x not in cited]
            rows.append(f"{i}. {c.label} (p={c.probability:.2f}, within {c.radius_km:,.0f} km)")
        return RuleAnswer(
            "The alternatives, most likely first: " + "; ".join(rows) + ".", "alternatives", cited
        )

    def _missing(self, pred: Prediction) -> RuleAnswer:
        content = build_content(pred)
        text = ""
        if pred.missing:
            text += "Looked for and not found: " + "; ".join(pred.missing) + ". "
        if content.stages_not_run:
            text += (
                "Did not run: "
                + "; ".join(f"{n} ({why or status})" for n, status, why in content.stages_not_run)
                + ". "
            )
        if content.gaps:
            text += "What would most change the answer: " + "; ".join(content.gaps) + "."
        return RuleAnswer(text.strip() or "Nothing is missing that I know of.", "missing")

    def _why_little(self, pred: Prediction) -> str:
        gaps = build_content(pred).gaps
        return ("What would help most: " + "; ".join(gaps[:3]) + ".") if gaps else ""

    # -- hypotheses --

    def _hypothesis(self, intent: str, pred: Prediction, photo: PhotoSession, r: Resolved) -> RuleAnswer:
        best = pred.best
        mass = country_mass(pred)
        args: dict[str, object] = (
            {"point": r.point.model_dump()}
            if r.place is None
            else {"place": r.name, "country_code": r.country_code}
        )
        error = None
        check: PlaceCheck | None = None
        try:
            result = self.tools(photo, "check_place", args)
            assert isinstance(result, PlaceCheck)
            check = result
        except GeoSleuthError as exc:
            error = f"check_place failed: {exc}"
        p = mass.get(r.country_code, 0.0) if r.place is None else (check.probability if check else None)
        if r.place is None:
            subject, level = r.name, "country"
        else:
            subject, level = r.value, "place"
        best_name = (best.place.short() if best.place else best.label) if best is not None else None
        is_best = best is not None and (
            (r.place is None and best.place is not None and best.place.country_code == r.country_code)
            or (r.place is not None and point_distance_km(best.point, r.point) <= max(25.0, best.radius_km))
        )
        kind = PlaceCheckVerdict.BEST
        if not is_best and p is not None:
            kind = (
                PlaceCheckVerdict.LIKELY
                if p >= 0.5
                else PlaceCheckVerdict.POSSIBLE
                if p >= 0.15
                else PlaceCheckVerdict.UNLIKELY
                if p >= 0.02
                else PlaceCheckVerdict.VERY_UNLIKELY
            )
        summary = (
            PlaceCheckSummary(
                photo=photo.number,
                hypothesis=subject,
                level="country" if r.place is None else "place",
                country_code=r.country_code,
                probability=round(min(1.0, max(0.0, p)), 6),
                rank=check.rank if check is not None and r.place is not None else None,
                verdict=kind,
            )
            if p is not None
            else None
        )
        if is_best and best is not None:
            verdict = f"Yes: {subject} is the best answer ({best_name}, p={best.probability:.2f})."
        elif p is None:
            verdict = f"I could not check {subject}."
        else:
            word = _VERDICT_WORDS[kind]
            verdict = f"{word}: {subject} has p={p:.2f} as a {level}"
            if check is not None and r.place is not None:
                verdict += f" (rank {check.rank} of {check.candidates} places)"
            verdict += f"; the best answer is {best_name} (p={best.probability:.2f})." if best else "."
        if intent == "why_not" and best is not None and p is not None and not is_best:
            verdict = (
                f"Not {subject}: it has p={p:.2f} as a {level}, against the best answer, {best_name} "
                f"(p={best.probability:.2f})."
            )
        against = opposing(pred, r.country_code)
        pro = supporting(pred, r.country_code)
        gps = _gps_against(pred, r)
        if gps is not None:
            against = [gps, *against]
        text = verdict
        if against and not is_best:
            text += f" Against {subject}: {_listing(against)}."
        if pro:
            text += f" For {r.country if r.place is not None else subject}: {_listing(pro)}."
        if check is not None:
            con = [s.meaning for s in check.opposing[:3]]
            sup = [s.meaning for s in check.supporting[:3]]
            if con and not is_best:
                text += " The verifier counts against it: " + ", ".join(con) + "."
            if sup:
                text += " And for it: " + ", ".join(sup) + "."
            if check.notes:
                text += " " + "; ".join(check.notes) + "."
        if not pro and not against:
            text += f" Nothing read in the photo speaks for or against {subject}."
        if error:
            text += f" ({error})"
        return RuleAnswer(text, intent, [e.id for e in against + pro], error, summary)

    # -- several photos --

    def _compare(self, photos: Sequence[PhotoSession]) -> RuleAnswer:
        rows = []
        cited: list[str] = []
        for ph in photos:
            b = ph.prediction.best
            rows.append(
                f"photo {ph.number} ({ph.label}): "
                + (
                    f"{b.place.short() if b.place else b.label} (p={b.probability:.2f})"
                    if b
                    else "too little evidence"
                )
            )
            if b is not None:
                cited += [f"{ph.number}:{i}" for i in _ids(b.evidence_ids, ph.prediction)]
        located = [ph for ph in photos if ph.prediction.best is not None]
        text = _sentence("; ".join(rows))
        if len(located) < 2:
            return RuleAnswer(
                text + " Too few of them are located to say whether they were taken in the same place.",
                "compare",
                cited,
            )
        pairs = []
        for i, one in enumerate(located):
            for other in located[i + 1 :]:
                pa, pb = one.prediction.best, other.prediction.best
                assert pa is not None and pb is not None
                km = point_distance_km(pa.point, pb.point)
                ca = pa.place.country_code if pa.place else None
                cb = pb.place.country_code if pb.place else None
                if km <= pa.radius_km + pb.radius_km:
                    verdict = f"probably the same place ({km:,.0f} km apart, within their uncertainty)"
                elif ca == cb and ca is not None:
                    verdict = f"the same country, {km:,.0f} km apart"
                else:
                    verdict = f"different places, {km:,.0f} km apart"
                pairs.append(f"photos {one.number} and {other.number}: {verdict}")
        return RuleAnswer(text + " " + _sentence("; ".join(pairs)), "compare", cited)

    def _joint(self, photos: Sequence[PhotoSession]) -> RuleAnswer:
        """Photos said to be from one place: their countries' probabilities multiplied (independent
        evidence), and the best place within the joint country."""
        masses = [country_mass(ph.prediction) for ph in photos]
        codes = set().union(*masses)
        if not codes:
            return RuleAnswer("None of the photos points anywhere, so there is no joint answer.", "joint")
        floor = 0.01
        joint = {c: math.prod(max(m.get(c, 0.0), floor) for m in masses) for c in codes}
        total = sum(joint.values())
        cc = max(joint, key=lambda c: joint[c])
        p = joint[cc] / total
        best: tuple[Candidate, PhotoSession] | None = None
        for ph in photos:
            for c in ph.prediction.candidates:
                if (
                    c.place is not None
                    and c.place.country_code == cc
                    and (best is None or c.probability > best[0].probability)
                ):
                    best = (c, ph)
        cited = [f"{ph.number}:{e.id}" for ph in photos for e in supporting(ph.prediction, cc)]
        name = self.gaz.country_name(cc)
        text = f"Taken together (if they were taken in one place): {name}, p={p:.2f} among the countries the photos point to"
        if best is not None:
            c, ph = best
            text += f"; the most likely place there is {c.label} (from photo {ph.number}, p={c.probability:.2f} on its own)"
        text += "."
        alone = [
            ph.number for ph, m in zip(photos, masses, strict=True) if m and max(m, key=lambda k: m[k]) != cc
        ]
        if alone:
            text += f" Photo(s) {', '.join(map(str, alone))} on their own point elsewhere."
        return RuleAnswer(text, "joint", cited)


# --- what the evidence says about a country ---------------------------------------------------------


def country_mass(pred: Prediction) -> dict[str, float]:
    """P(country): the candidates' probabilities summed by the country of their place."""
    out: dict[str, float] = defaultdict(float)
    for c in pred.candidates:
        if c.place is not None:
            out[c.place.country_code] += c.probability
    return dict(out)


def _locating(e: Evidence) -> bool:
    return e.usable and e.weight > 0 and bool(e.countries) and e.kind != EvidenceKind.GPS


def supporting(pred: Prediction, cc: str) -> list[Evidence]:
    """Evidence that points to country ``cc``, strongest first."""
    ev = [e for e in pred.evidence if _locating(e) and e.countries.get(cc, 0.0) >= 0.5]
    return sorted(ev, key=lambda e: -e.weight)


def opposing(pred: Prediction, cc: str) -> list[Evidence]:
    """Evidence that points away from country ``cc``, strongest first."""
    ev = [e for e in pred.evidence if _locating(e) and e.countries.get(cc, 0.0) < 0.1]
    return sorted(ev, key=lambda e: -e.weight)


def _gps_against(pred: Prediction, r: Resolved) -> Evidence | None:
    """The EXIF GPS position, when it was used and lies outside the hypothesis."""
    gps = next((c for c in pred.candidates if c.source == CandidateSource.EXIF and c.place is not None), None)
    ev = _evidence(pred, "exif.gps")
    if gps is None or gps.place is None or ev is None or not ev.usable:
        return None
    if r.place is None:
        outside = gps.place.country_code != r.country_code
    else:
        outside = point_distance_km(gps.point, r.point) > max(50.0, 2 * r.radius_km)
    return ev if outside else None


def _evidence(pred: Prediction, eid: str) -> Evidence | None:
    return next((e for e in pred.evidence if e.id == eid), None)


def _ids(ids: Sequence[str], pred: Prediction) -> list[str]:
    known = {e.id for e in pred.evidence}
    return [i for i in ids if i in known]


def _listing(evidence: Sequence[Evidence], limit: int = 5) -> str:
    if not evidence:
        return "nothing read in the photo"
    shown = "; ".join(f"{e.value} [{e.id}]" for e in evidence[:limit])
    return shown + (f"; and {len(evidence) - limit} more" if len(evidence) > limit else "")


def _qualified(text: str, number: int) -> str:
    """``text`` with its evidence citations naming photo ``number`` ("[2:text.place.1]")."""
    return re.sub(r"\[([a-z][a-z0-9_]*(?:\.[A-Za-z0-9_-]+)+)\]", rf"[{number}:\1]", text)


def _sentence(text: str) -> str:
    return (text[:1].upper() + text[1:] + ".") if text else ""


def _regions(regions: Sequence[tuple[float, float]]) -> str:
    """The 50/80/95% regions in words, equal ones said once."""
    groups: list[tuple[list[int], str]] = []
    for lv, a in regions:
        words = _area(a)
        if groups and groups[-1][1] == words:
            groups[-1][0].append(round(lv * 100))
        else:
            groups.append(([round(lv * 100)], words))
    return ", ".join(f"{'/'.join(map(str, lvs))}%: {w}" for lvs, w in groups)


def _area(km2: float) -> str:
    r = math.sqrt(km2 / math.pi)
    return f"within {r:,.0f} km" if r >= 1 else f"within {r * 1000:,.0f} m"


__all__ = ["HELP", "INTENTS", "RuleAnswer", "RuleEngine", "country_mass", "intent_of", "mentioned_photos"]
