"""The VLM stage: ask the model in several ways, keep every answer, and turn the usable ones into
evidence the verifier can weigh.

* :class:`VLMReasoner` renders the prompt variants (:mod:`.prompting`), sends them through any
  backend, and returns a :class:`~geosleuth.schemas.VLMReport` holding every call and raw answer.
* Self-consistency: each usable guess counts the others within :data:`AGREE_KM`; the guess with the
  most company (ties: the more confident) anchors the consensus, whose point is the medoid of the
  guesses around it.
* Guesses are set aside, with the reason recorded, when they are (0, 0) or, in an image whose text
  tries to instruct AI systems, when they land where that text points: coordinates written in it,
  places or countries named in it (:class:`Taint`). An answer the attacker wrote is not evidence.
* Detection misses phrasings, so the text is also judged by what it does to the answers: a photo
  with text gets a ``no-text`` request (:data:`~.prompting.NO_TEXT`) that never shows the model the
  text. A country that only answers made with the text point to, while the no-text answers point
  elsewhere, was put there by the text, not by the picture: its candidate carries the evidence id
  :data:`TEXT_MOVED`, and the verifier caps what rests on the text alone
  (:data:`~geosleuth.agents.verifier.TEXT_ONLY_CAP`). :func:`text_comparison` records the check.
* :func:`vlm_evidence` gives fusion one evidence item (the samples' votes per country, a correlated
  family of their own) and one candidate point per country.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from geosleuth.agents.fusion import RetrievalPoint
from geosleuth.agents.vlm.base import VLMBackend
from geosleuth.agents.vlm.parse import parse_guess
from geosleuth.agents.vlm.prompting import NO_TEXT, PromptBuilder, PromptContext
from geosleuth.config import Settings
from geosleuth.gazetteer import Gazetteer
from geosleuth.geo import haversine_km
from geosleuth.schemas import (
    CandidateSource,
    Evidence,
    EvidenceKind,
    LatLon,
    TokenUsage,
    VLMCall,
    VLMGuess,
    VLMReport,
)

log = logging.getLogger(__name__)

AGREE_KM = 100.0
ECHO_KM = 1.0
# How far to trust the VLM's votes, set by hand like every fusion weight: open VLMs place the
# country right roughly two times in three on Im2GPS3k-like photos (DESIGN.md §3).
VLM_WEIGHT = 0.6
# An image whose text tries to instruct AI systems may have steered the answers: count them half.
VLM_WEIGHT_UNDER_INJECTION = 0.3
# The evidence id of a VLM candidate that only answers made with the photo's text point to.
TEXT_MOVED = "vlm.text-moved"


@dataclass(frozen=True)
class Taint:
    """Where text that tries to instruct AI systems points: guesses landing there are set aside."""

    text: str = ""
    places: tuple[tuple[LatLon, float, str], ...] = ()  # point, radius km, name
    countries: frozenset[str] = frozenset()

    def target(self, guess: VLMGuess, country: str | None) -> str | None:
        """What in the text the guess lands on ("the coordinates ...", "Paris", "DE"), if anything."""
        echo = parse_guess(self.text).guess if self.text.strip() else None
        if echo is not None and _km(guess.point, echo.point) <= ECHO_KM:
            return f"the coordinates {echo.point}"
        for point, radius, name in self.places:
            if _km(guess.point, point) <= radius:
                return name
        if country and country in self.countries:
            return country
        return None

    def reason(self, guess: VLMGuess, country: str | None) -> str | None:
        """Why the guess is set aside (None: it lands nowhere the text points)."""
        where = self.target(guess, country)
        if where is None:
            return None
        who = "text that tries to instruct AI systems"
        if where.startswith("the coordinates"):
            return f"repeats {where} written in {who}"
        if where == country:
            return f"lands in {where}, a country named by {who}"
        return f"lands on {where}, a place named by {who}"


class VLMReasoner:
    """Runs the VLM stage for one image at a time with an injected backend."""

    def __init__(self, backend: VLMBackend, settings: Settings, gazetteer: Gazetteer | None = None) -> None:
        self.backend = backend
        self.settings = settings
        self.gazetteer = gazetteer
        self.builder = PromptBuilder(settings.vlm)

    def run(
        self,
        image: Image.Image,
        context: PromptContext,
        *,
        key: str,
        taint: Taint | None = None,
        max_requests: int | None = None,
    ) -> VLMReport:
        """Ask every prompt variant (at most ``max_requests``, default ``budgets.max_vlm_calls``)."""
        t0 = time.perf_counter()
        limit = self.settings.budgets.max_vlm_calls if max_requests is None else max_requests
        requests = self.builder.requests(image, context, key, max_requests=limit)
        calls = self.backend.generate(requests)
        usage = TokenUsage()
        for call in calls:
            usage = usage + call.usage
        kept, discarded = self._screen(calls, taint)
        total = sum(len(c.samples) for c in calls)
        report = VLMReport(
            model=self.backend.model,
            backend=self.backend.name,
            prompt_hash=self.builder.prompt_hash,
            calls=calls,
            usage=usage,
            seconds=round(time.perf_counter() - t0, 4),
            usable_samples=len(kept),
            total_samples=total,
            discarded=discarded,
        )
        if kept:
            anchor, share = consensus(kept)
            best = kept[anchor]
            report.consensus = best.point
            report.consensus_share = round(share, 4)
            report.rationale = best.rationale
        return report

    def _screen(self, calls: Sequence[VLMCall], taint: Taint | None) -> tuple[list[VLMGuess], list[str]]:
        """The usable guesses, and a line for each sample without one or set aside (marked on the
        sample too, with the reason)."""
        kept: list[VLMGuess] = []
        discarded: list[str] = []
        for call in calls:
            if call.error:
                discarded.append(f"{call.key}: request failed: {call.error}")
                continue
            for s in call.samples:
                where = f"{call.key} sample {s.index}"
                if s.guess is None:
                    discarded.append(f"{where}: {s.error} (raw: {_clip(s.raw_text)!r})")
                    continue
                g = s.guess
                if g.latitude == 0.0 and g.longitude == 0.0:
                    s.set_aside = "answered (0, 0), a placeholder, not a place"
                elif taint is not None:
                    country = None
                    if taint.countries and self.gazetteer is not None:
                        country = self.gazetteer.reverse_one(g.point).country_code
                    s.set_aside = taint.reason(g, country)
                if s.set_aside:
                    discarded.append(f"{where}: {s.set_aside}")
                    continue
                kept.append(g)
        return kept, discarded


def text_free_guesses(report: VLMReport) -> list[VLMGuess]:
    """The usable guesses of the no-text request: what the model makes of the picture alone."""
    return [
        s.guess
        for c in report.calls
        if c.variant == NO_TEXT
        for s in c.samples
        if s.guess is not None and not s.set_aside
    ]


def text_comparison(report: VLMReport, gazetteer: Gazetteer) -> Evidence | None:
    """What the no-text request shows about the image's text: whether the answers made without it
    point to the countries the others do, or the text moved some answers to a country the picture
    alone never suggested (None without usable no-text answers)."""
    kept = [
        (c.variant, s.guess)
        for c in report.calls
        for s in c.samples
        if s.guess is not None and not s.set_aside
    ]
    if not any(v == NO_TEXT for v, _ in kept):
        return None
    countries = [p.country_code for p in gazetteer.reverse([g.point for _, g in kept])]
    blind: dict[str, int] = defaultdict(int)
    moved: dict[str, int] = defaultdict(int)
    for (variant, _), cc in zip(kept, countries, strict=True):
        if variant == NO_TEXT:
            blind[cc] += 1
    for (variant, _), cc in zip(kept, countries, strict=True):
        if variant != NO_TEXT and cc not in blind:
            moved[cc] += 1
    n_blind = sum(blind.values())
    seen = ", ".join(
        f"{gazetteer.country_name(cc)} ({k} of {n_blind})"
        for cc, k in sorted(blind.items(), key=lambda kv: -kv[1])
    )
    reason: str | None = None
    if moved:
        where = ", ".join(gazetteer.country_name(cc) for cc in sorted(moved, key=lambda c: -moved[c]))
        value = (
            f"{sum(moved.values())} answers made with the photo's text point to {where}, where no answer made "
            f"without the text points (those point to {seen}): the text, not the picture, moved them"
        )
        reason = "the text in the photo steered the model; what rests on it alone is capped"
    else:
        value = f"the answers made without the photo's text point to {seen}, as the others do"
    return Evidence(
        id="check.vlm-text",
        tool="vlm",
        kind=EvidenceKind.CONSISTENCY,
        value=value,
        weight=0.0,
        reason=reason,
        details={"no_text_countries": dict(blind), "moved_countries": dict(moved)},
    )


def consensus(guesses: Sequence[VLMGuess]) -> tuple[int, float]:
    """Index of the guess at the heart of the largest agreeing group, and the group's share."""
    lat = np.array([g.latitude for g in guesses])
    lon = np.array([g.longitude for g in guesses])
    d = haversine_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    near = d <= AGREE_KM
    counts = near.sum(axis=1)
    conf = np.array([g.confidence if g.confidence is not None else 0.5 for g in guesses])
    top = counts.max()
    group = np.flatnonzero(counts == top)
    seed = int(group[np.argmax(conf[group])])
    members = np.flatnonzero(near[seed])
    medoid = int(members[np.argmin(d[np.ix_(members, members)].sum(axis=1))])
    return medoid, float(near[seed].sum() / len(guesses))


def vlm_evidence(
    report: VLMReport, gazetteer: Gazetteer, *, injection: bool = False
) -> tuple[list[Evidence], list[RetrievalPoint]]:
    """Fusion's view of the VLM: its samples' votes per country, and a point per country (the
    medoid of that country's guesses, weighted by its share of the samples). ``injection``: the
    image's text tries to instruct AI systems, so even the answers kept count half.

    A country that only answers made with the photo's text point to, while the no-text answers
    point elsewhere, gets its point under :data:`TEXT_MOVED`: the text, not the picture, put it
    there, so the verifier treats it as resting on the text alone."""
    kept = [
        (c.variant, s.guess)
        for c in report.calls
        for s in c.samples
        if s.guess is not None and not s.set_aside
    ]
    guesses = [g for _, g in kept]
    if not guesses:
        return [], []
    places = gazetteer.reverse([g.point for g in guesses])
    blind_countries = {p.country_code for (v, _), p in zip(kept, places, strict=True) if v == NO_TEXT}
    by_country: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(places):
        by_country[p.country_code].append(i)
    n = len(guesses)
    votes = {cc: len(ix) / n for cc, ix in by_country.items()}
    top = max(votes.values())
    ranked = sorted(votes.items(), key=lambda kv: -kv[1])
    value = (
        f"{report.model}: {report.usable_samples} of {report.total_samples} sampled answers usable; "
        + ", ".join(f"{gazetteer.country_name(cc)} {v:.0%}" for cc, v in ranked[:3])
    )
    if report.consensus is not None:
        value += f"; {report.consensus_share:.0%} agree within {AGREE_KM:.0f} km of {report.consensus}"
    evidence = Evidence(
        id="vlm.samples",
        tool="vlm",
        kind=EvidenceKind.VLM,
        value=value,
        weight=VLM_WEIGHT_UNDER_INJECTION if injection else VLM_WEIGHT,
        reason="the image's text tries to instruct AI systems; these answers may be steered"
        if injection
        else None,
        point=report.consensus,
        countries={cc: round(v / top, 4) for cc, v in votes.items()},
        details={
            "model": report.model,
            "prompt_hash": report.prompt_hash,
            "variants": sorted({c.variant for c in report.calls}),
        },
    )
    points = []
    for cc, ix in by_country.items():
        sub = [guesses[i] for i in ix]
        anchor, _ = consensus(sub)
        g = sub[anchor]
        spread = [_km(g.point, o.point) for o in sub]
        radius = max(10.0, float(np.percentile(spread, 80)), min(g.radius_km or 100.0, 500.0))
        where = places[ix[anchor]].name
        moved = bool(blind_countries) and cc not in blind_countries
        label = (
            f"{len(ix)} of {n} VLM answers, all made with the photo's text, point (near {where})"
            if moved
            else f"{len(ix)} of {n} VLM answers point (near {where})"
        )
        points.append(
            RetrievalPoint(
                g.point,
                cc,
                len(ix) / n,
                CandidateSource.VLM,
                label,
                round(radius, 1),
                TEXT_MOVED if moved else "vlm.samples",
            )
        )
    return [evidence], points


def _km(a: LatLon, b: LatLon) -> float:
    return float(haversine_km(a.lat, a.lon, b.lat, b.lon))


def _clip(text: str, n: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


__all__ = [
    "AGREE_KM",
    "TEXT_MOVED",
    "Taint",
    "VLMReasoner",
    "consensus",
    "text_comparison",
    "text_free_guesses",
    "vlm_evidence",
]
