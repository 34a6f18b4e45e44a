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
from geosleuth.agents.vlm.prompting import PromptBuilder, PromptContext
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


@dataclass(frozen=True)
class Taint:
    """Where text that tries to instruct AI systems points: guesses landing there are set aside."""

    text: str = ""
    places: tuple[tuple[LatLon, float, str], ...] = ()  # point, radius km, name
    countries: frozenset[str] = frozenset()

    def reason(self, guess: VLMGuess, country: str | None) -> str | None:
        echo = parse_guess(self.text).guess if self.text.strip() else None
        if echo is not None and _km(guess.point, echo.point) <= ECHO_KM:
            return f"repeats the coordinates {echo.point} written in text that tries to instruct AI systems"
        for point, radius, name in self.places:
            if _km(guess.point, point) <= radius:
                return f"lands on {name}, a place named by text that tries to instruct AI systems"
        if country and country in self.countries:
            return f"lands in {country}, a country named by text that tries to instruct AI systems"
        return None


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
    image's text tries to instruct AI systems, so even the answers kept count half."""
    guesses = [s.guess for c in report.calls for s in c.samples if s.guess is not None and not s.set_aside]
    if not guesses:
        return [], []
    places = gazetteer.reverse([g.point for g in guesses])
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
        points.append(
            RetrievalPoint(
                g.point,
                cc,
                len(ix) / n,
                CandidateSource.VLM,
                f"{len(ix)} of {n} VLM answers point (near {where})",
                round(radius, 1),
                "vlm.samples",
            )
        )
    return [evidence], points


def _km(a: LatLon, b: LatLon) -> float:
    return float(haversine_km(a.lat, a.lon, b.lat, b.lon))


def _clip(text: str, n: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


__all__ = ["AGREE_KM", "Taint", "VLMReasoner", "consensus", "vlm_evidence"]
