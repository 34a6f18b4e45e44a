"""Evidence fusion: weigh every clue, rank candidate places and say how sure we are.

This is the verifier of the evidence-only mode (no image encoder, no VLM). The model is small and
stated plainly so an analyst can check it:

* A prior over countries from where photos are taken (``fusion.prior = "photos"``, the default):
  proportional to each country's points in GeoCLIP's 100K GPS gallery, sampled from MP-16's
  Flickr photo locations (``data/photo_prior.json``, built by ``scripts/build_photo_prior.py``),
  plus half a point per country so none is impossible, to the power 0.4. The power is a compromise
  between "every country alike" and the gallery's shares: MP-16 is not the photo at hand, and with
  the raw shares (the United States 30%) the prior alone would make weak clues answer ("somewhere
  in the United States" for any English word). At 0.5 (a square root) a sign naming a city in a
  country with few gallery photos (Pyongyang: 11 of 100K) could not outweigh the prior even with
  the VLM agreeing; cross-validation on the dev photos chose 0.3 (``data/fusion_weights.json``).
  ``"population"`` gives the earlier prior, population to the same power, which ranks China
  and India first for any photo (a Dutch sign with a clock at UTC+02:00 ranked China, Sudan and
  South Africa above the Netherlands).
* Each clue i with weight w_i (how far to trust it) and relative likelihoods l_i(c) over countries
  adds ``w_i * log l_i(c)`` to country c's log-score (log-linear pooling). For countries a clue does
  not name, l_i(c) is a floor that says how often such a clue shows up elsewhere: 0.001 for phone
  codes, postcodes, languages and scripts (a clue of weight 0.5 then makes a named country ~30x
  likelier), but 0.02 for place names (brands, destinations and restaurants borrow city names) and
  0.05 for country names (product origins, destinations).
* The camera clock's UTC offset and the language of the text are mixtures instead
  (:data:`MIXTURE_ELSEWHERE`): w is the chance the reading is right (the clock is set right: its
  weight; the language is identified right: the clue's ``trust``, CLD2's confidence times
  (letters / 30)² up to 30 letters, since two words are often misidentified), and a country
  gets ``w * share + (1 - w) * elsewhere``. For the clock, share
  is the part of the country's people in a time zone that showed that offset, so a country outside
  the offset's longitudes keeps only the wrong-clock part (0.5% at w = 0.5, against ~50% inside),
  not the ``0.01 ** w`` = 10% a tempered floor gave (China for a clock at UTC+02:00); elsewhere
  is 0.01 (a wrong clock shows one of a few dozen offsets). For a language, share is how often a
  photo taken in the country shows text in it: the country's share of speakers, or how often the
  language is seen abroad (:data:`LANGUAGE_ABROAD`: 0.2 for English, the lingua franca of signs;
  0.001 for the others: Danish signs abroad are rare, not impossible); elsewhere is the language's
  marginal under the prior, since what a wrong identification says does not depend on the
  country. A Danish sign read with confidence names Denmark ~100 times likelier than elsewhere,
  where a tempered floor gave ~25 times and the answer stayed "too little evidence"; an English
  sign moves the odds between English- and other-speaking countries by at most 5x, so "Welcome to
  Pyongyang" keeps North Korea among the first three. The script stays a tempered floor: on the
  Im2GPS3k dev photos OCR reads a few Thai, Hebrew or Greek letters out of Latin text or texture
  often enough that a mixture made it answer wrongly (30 of 40 answers wrong with it; see
  ``scripts/fit_fusion.py``).
  Clues that all come from the language of the text
  (language, script, street words) are one family: the strongest counts fully, the next 30%, the
  next 9%, so one French sign is not counted three times. The GPS gallery and the neighbour index
  (one image encoder behind both) form a second family.
* Place names split their country's probability between the named places (by population, adjusted
  by an adjacent postcode) and "elsewhere in the country", by how likely the name is genuine.
  Matches within 25 km of each other corroborate one another ("Shinjuku" and "Tokyo").
* A valid EXIF GPS point is the answer (unless settings say to ignore metadata); the other clues are
  still checked against it. Evidence that contradicts it lowers the trust in it: prior odds of
  :data:`GPS_PRIOR_ODDS` that a photo's GPS is right, times a likelihood ratio per kind of
  contradiction (:data:`GPS_CONFLICT_LR`): the clock's UTC offset does not fit the time zone at the
  point; a place name read in the image lies in another country (weighed by how genuine the name
  looks); a postcode, phone number or web domain belongs to another country. One contradiction keeps
  the point at about 0.9-0.95, two at about 0.65, three let the evidence win. The verifier then
  mixes "the GPS is right" with "the GPS is wrong" (its ranking without the camera point) by that
  trust, so the alternatives stay in the answer. Nothing contradicting it, the GPS keeps its weight.

* The camera clock never decides alone (:func:`is_answer`): with no other clue, the countries in
  its band are ranked but the answer is "too little evidence", since which of them leads is the
  prior's choice, not the photo's.
* With no usable clue at all, the one candidate is the photo prior's best single guess (the point
  with most gallery mass within 25-2500 km: London), source ``prior``, with the gallery's share
  within 200 km of it as its probability (~0.06): never an answer, but a ranked guess for those
  who must always answer (forced accuracy).

The weights are set by hand (:data:`HAND_WEIGHTS`); ``scripts/fit_fusion.py`` fits a scale per
clue kind and the prior's power on labelled photos with k-fold cross-validation and writes
``data/fusion_weights.json`` (``fusion.weights = "fitted"``). Probabilities rank well and are
labelled coarsely (high / medium / low).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import Any, Literal

import numpy as np

from geosleuth.agents.verifier import and_list
from geosleuth.config import Settings
from geosleuth.errors import ConfigError
from geosleuth.gazetteer import Gazetteer, GazetteerPlace, city_radius_km
from geosleuth.geo import haversine_km
from geosleuth.schemas import (
    Candidate,
    CandidateSource,
    ConfidenceLevel,
    Evidence,
    EvidenceKind,
    Granularity,
    LatLon,
    Neighbour,
    Place,
)
from geosleuth.tools.clues import PlaceMatch
from geosleuth.tools.exif import ExifReport, format_offset

OFF_LIST_LIKELIHOOD = 0.001
OFF_LIST_BY_KIND = {
    EvidenceKind.PLACE_NAME: 0.02,
    EvidenceKind.COUNTRY_NAME: 0.05,
    EvidenceKind.BRAND: 0.02,
    EvidenceKind.CURRENCY: 0.01,
    EvidenceKind.DOMAIN: 0.005,
    EvidenceKind.UTC_OFFSET: 0.01,
}
# Clues read as mixtures of "the reading is right" and "it is wrong" (the clock set right, the
# language identified right); the value: the chance a wrong reading says this, alike everywhere.
MIXTURE_ELSEWHERE = {
    EvidenceKind.UTC_OFFSET: 0.01,
    # for a language: what a wrong identification says is independent of the country, so its
    # likelihood is the language's marginal under the prior (see country_posterior), not a constant
    EvidenceKind.LANGUAGE: None,
}
# How often a photo taken outside a language's countries shows text in it anyway (signs for
# tourists, brands, menus). English is the lingua franca of signage the world over; for any other
# language it is the language floor (0.001: Danish signs abroad are rare, not impossible).
LANGUAGE_ABROAD = {"en": 0.2}
# Clues that narrow but never decide alone: a UTC offset is a band of longitudes many countries
# share, so with nothing else the answer would be the prior's pick inside the band.
NARROWING_ONLY = {EvidenceKind.UTC_OFFSET}
CORRELATED_DISCOUNT = 0.3
CLUSTER_KM = 25.0
LANGUAGE_FAMILY = {EvidenceKind.LANGUAGE, EvidenceKind.SCRIPT, EvidenceKind.STREET_TYPE}
# Gallery and neighbours usually share one image encoder, so they are not independent either.
RETRIEVAL_FAMILY = {EvidenceKind.GALLERY, EvidenceKind.NEIGHBOURS}
NON_COUNTRY_KINDS = {EvidenceKind.GPS}
# Odds that a photo's GPS metadata is right (set by hand: edited, copied or stale positions are rare).
GPS_PRIOR_ODDS = 99.0
# How much likelier each contradiction is when the GPS is wrong than when it is right (its inverse):
# clocks often keep the home time zone (or UTC), and shops show foreign numbers and domains; a
# place name from another country is the strongest sign, scaled by how genuine the name is.
GPS_CONFLICT_LR = {"offset": 0.2, "place-name": 0.1, "codes": 0.2}
CODE_KINDS = {EvidenceKind.POSTCODE, EvidenceKind.PHONE, EvidenceKind.DOMAIN}
_CODE_WORDS = {
    EvidenceKind.POSTCODE: "postcode",
    EvidenceKind.PHONE: "phone number",
    EvidenceKind.DOMAIN: "web domain",
}
MIN_CONFLICT_GENUINENESS = 0.3
# Gallery points added to every country of the photo prior, so a country without any is unlikely,
# not impossible (0.5 of 100K: ~1/4000 of the United States' share).
PHOTO_PRIOR_PSEUDO_POINTS = 0.5
PRIOR_FILE = "photo_prior.json"
WEIGHTS_FILE = "fusion_weights.json"


@dataclass(frozen=True)
class FusionWeights:
    """What ``scripts/fit_fusion.py`` fits: a multiplier per evidence kind on the clue's own weight
    (missing kinds: 1) and the power of the prior (the prior is its counts to that power). The
    hand-set weights (:data:`HAND_WEIGHTS`): scales 1 and power 0.4."""

    kind_scale: dict[str, float] = field(default_factory=dict)
    prior_power: float = 0.5

    def scale(self, kind: EvidenceKind) -> float:
        return self.kind_scale.get(kind.value, 1.0)


HAND_WEIGHTS = FusionWeights(prior_power=0.4)


@cache
def photo_prior() -> dict[str, Any]:
    """The photo-location table (``data/photo_prior.json``): gallery points per country, each
    country's densest spot and the fallback guess, with how it was made."""
    data: dict[str, Any] = json.loads(files("geosleuth.data").joinpath(PRIOR_FILE).read_text())
    return data


@cache
def fitted_weights() -> FusionWeights:
    """The weights shipped in ``data/fusion_weights.json`` (written by ``scripts/fit_fusion.py``)."""
    res = files("geosleuth.data").joinpath(WEIGHTS_FILE)
    if not res.is_file():
        raise ConfigError(
            f"fusion.weights = 'fitted' but geosleuth/data/{WEIGHTS_FILE} is missing; write it with "
            "scripts/fit_fusion.py or set fusion.weights = 'hand'"
        )
    data = json.loads(res.read_text())
    return FusionWeights(
        kind_scale={str(k): float(v) for k, v in data["kind_scale"].items()},
        prior_power=float(data["prior_power"]),
    )


@dataclass(frozen=True)
class RetrievalPoint:
    """A point that retrieval proposes inside a country (a gallery match or a similar photo)."""

    point: LatLon
    country: str
    weight: float
    source: CandidateSource
    label: str
    radius_km: float
    evidence_id: str


def retrieval_evidence(
    gallery: list[Any], similar: list[Neighbour], gazetteer: Gazetteer, refined: list[Any] | None = None
) -> tuple[list[Evidence], list[RetrievalPoint]]:
    """Evidence and candidate points from retrieval.

    * Gallery: GeoCLIP's probability mass over its top matches, summed per country.
    * Neighbours: similar photos vote for their countries, weighted by softmax(similarity / 0.05).
    * ``refined``: the gallery's best points after refinement; the best one stands for its country.
    Their weights (0.5 and 0.4) are set by hand, as every weight here: GeoCLIP is right about the
    country roughly two times in three (DESIGN.md: 69.7% within 750 km on Im2GPS3k)."""
    evidence: list[Evidence] = []
    points: list[RetrievalPoint] = []
    if gallery:
        places = gazetteer.reverse([c.point for c in gallery])
        mass: dict[str, float] = defaultdict(float)
        for c, place in zip(gallery, places, strict=True):
            mass[place.country_code] += c.probability
        best = gallery[0]
        top = sorted(mass.items(), key=lambda kv: -kv[1])[:3]
        evidence.append(
            Evidence(
                id="retrieval.gallery",
                tool="retrieval",
                kind=EvidenceKind.GALLERY,
                value=f"GPS gallery: best match near {places[0].short()} (p={best.probability:.3f}); "
                + ", ".join(f"{gazetteer.country_name(cc)} {m / sum(mass.values()):.0%}" for cc, m in top)
                + " of the top matches' mass",
                weight=0.5,
                point=best.point,
                countries=_relative(mass),
                details={
                    "top": [
                        {"lat": c.point.lat, "lon": c.point.lon, "p": c.probability} for c in gallery[:10]
                    ]
                },
            )
        )
        for c, place in zip(gallery, places, strict=True):
            points.append(
                RetrievalPoint(
                    c.point,
                    place.country_code,
                    c.probability,
                    CandidateSource.GALLERY,
                    f"the GPS gallery matches best (near {place.name})",
                    25.0,
                    "retrieval.gallery",
                )
            )
        if refined:
            place = gazetteer.reverse_one(refined[0].point)
            # a hair above the best gallery point, so it stands for its country when it is in one
            points.append(
                RetrievalPoint(
                    refined[0].point,
                    place.country_code,
                    gallery[0].probability * 1.001,
                    CandidateSource.GALLERY,
                    f"the refined GPS gallery match lies (near {place.name})",
                    10.0,
                    "retrieval.gallery",
                )
            )
    if similar:
        sims = np.array([n.similarity for n in similar])
        w = np.exp((sims - sims.max()) / 0.05)
        w /= w.sum()
        votes: dict[str, float] = defaultdict(float)
        for n, wi in zip(similar, w, strict=True):
            cc = (n.place.country_code if n.place else None) or n.source_place.get("country_code", "").upper()
            if cc:
                votes[cc] += float(wi)
                points.append(
                    RetrievalPoint(
                        n.point,
                        cc,
                        float(wi) * 0.5,
                        CandidateSource.NEIGHBOUR,
                        f"a similar photo was taken (near {n.place.name if n.place else cc})",
                        10.0,
                        "retrieval.neighbours",
                    )
                )
        if votes:
            top = sorted(votes.items(), key=lambda kv: -kv[1])[:3]
            evidence.append(
                Evidence(
                    id="retrieval.neighbours",
                    tool="retrieval",
                    kind=EvidenceKind.NEIGHBOURS,
                    value=f"{len(similar)} most similar indexed photos: "
                    + ", ".join(f"{gazetteer.country_name(cc)} {v:.0%}" for cc, v in top),
                    weight=0.4,
                    point=similar[0].point,
                    countries=_relative(votes),
                    details={"similarities": [round(float(x), 4) for x in sims[:10]]},
                )
            )
    return evidence, points


def _language_code(e: Evidence) -> str:
    """The language a language clue names (its identifier's best guess)."""
    code = e.details.get("language")
    if code is None:
        guesses = e.details.get("guesses") or [{}]
        code = guesses[0].get("code", "")
    return str(code)


def _relative(mass: dict[str, float]) -> dict[str, float]:
    top = max(mass.values()) if mass else 0.0
    return {c: round(v / top, 4) for c, v in mass.items() if top > 0 and v / top >= 0.005}


@dataclass(frozen=True)
class GpsConflict:
    """One piece of evidence that contradicts the photo's GPS point, and how much it counts."""

    kind: Literal["offset", "place-name", "codes"]
    likelihood_ratio: float
    text: str
    evidence_ids: tuple[str, ...] = ()


@dataclass
class FusionResult:
    status: Literal["located", "insufficient_evidence"]
    basis: Literal["exif-gps", "evidence"] | None
    best: Candidate | None
    candidates: list[Candidate]
    confidence: float
    level: ConfidenceLevel
    explanation: str
    country_probabilities: dict[str, float] = field(default_factory=dict)
    extra_evidence: list[Evidence] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    gps_trust: float = 1.0
    """P(the GPS point is right) after the evidence that contradicts it (1: nothing does)."""
    gps_conflicts: list[GpsConflict] = field(default_factory=list)


def confidence_level(p: float, min_probability: float) -> ConfidenceLevel:
    if p >= 0.8:
        return ConfidenceLevel.HIGH
    if p >= 0.5:
        return ConfidenceLevel.MEDIUM
    if p >= min_probability and p > 0:
        return ConfidenceLevel.LOW
    return ConfidenceLevel.NONE


class EvidenceFusion:
    def __init__(
        self, gazetteer: Gazetteer, settings: Settings, weights: FusionWeights | None = None
    ) -> None:
        self.gaz = gazetteer
        self.settings = settings
        if weights is None:
            weights = fitted_weights() if settings.fusion.weights == "fitted" else HAND_WEIGHTS
        self.weights = weights

    def log_prior(self, codes: list[str]) -> np.ndarray:
        """Log prior over ``codes`` (unnormalised): the log of the gallery points or the population
        per ``fusion.prior``, times the prior's power (0.4 by hand)."""
        if self.settings.fusion.prior == "photos":
            table = photo_prior()["countries"]
            points = np.array([table[c]["points"] if c in table else 0 for c in codes], dtype=np.float64)
            logp = np.log(points + PHOTO_PRIOR_PSEUDO_POINTS)
        else:
            logp = np.log([max(self.gaz.countries[c].population, 1000) for c in codes])
        return self.weights.prior_power * logp

    # -- country posterior --

    def country_posterior(self, evidence: list[Evidence]) -> tuple[dict[str, float], float]:
        """P(country | clues) and the total weight of the clues that carried any location."""
        codes = sorted(self.gaz.countries)
        idx = {c: i for i, c in enumerate(codes)}
        logp = self.log_prior(codes)
        prior = np.exp(logp - logp.max())
        prior /= prior.sum()
        families: dict[str, list[Evidence]] = defaultdict(list)
        for e in evidence:
            if not country_clue(e):
                continue
            family = (
                "language"
                if e.kind in LANGUAGE_FAMILY
                else "retrieval"
                if e.kind in RETRIEVAL_FAMILY
                else e.id
            )
            families[family].append(e)
        strength = 0.0
        for members in families.values():
            weights = [e.weight * self.weights.scale(e.kind) for e in members]
            order = sorted(range(len(members)), key=lambda i: -weights[i])
            for rank, i in enumerate(order):
                e, w = members[i], weights[i]
                floor = OFF_LIST_BY_KIND.get(e.kind, OFF_LIST_LIKELIHOOD)
                if e.kind == EvidenceKind.USER_HINT and "off_list_likelihood" in e.details:
                    floor = float(e.details["off_list_likelihood"])  # a hint the user insisted on
                if e.kind in MIXTURE_ELSEWHERE:
                    # a mixture: the reading is right (w) and says where, or it is not and says nothing
                    share = np.zeros(len(codes))
                    for c, v in e.countries.items():
                        if c in idx:
                            share[idx[c]] = min(1.0, v)
                    elsewhere = MIXTURE_ELSEWHERE[e.kind] or 0.0
                    if e.kind == EvidenceKind.LANGUAGE:
                        # P(text in this language | country): its speakers' share, or how often
                        # the language is seen abroad
                        share = np.maximum(share, LANGUAGE_ABROAD.get(_language_code(e), floor))
                        elsewhere = float(prior @ share)
                    # a language clue carries its identification's own chance of being right
                    trust = min(0.99, float(e.details.get("trust", e.weight)) * self.weights.scale(e.kind))
                    like = trust * share + (1 - trust) * elsewhere
                    logp += (CORRELATED_DISCOUNT**rank) * np.log(like)
                    continue
                like = np.full(len(codes), floor)
                for c, v in e.countries.items():
                    if c in idx:
                        like[idx[c]] = max(v, floor)
                logp += (CORRELATED_DISCOUNT**rank) * w * np.log(like)
            strength += weights[order[0]]
        logp -= logp.max()
        p = np.exp(logp)
        p /= p.sum()
        return {c: float(p[i]) for i, c in enumerate(codes)}, strength

    # -- main --

    def fuse(
        self,
        evidence: list[Evidence],
        matches: list[PlaceMatch],
        exif: ExifReport,
        retrieval_points: list[RetrievalPoint] | None = None,
    ) -> FusionResult:
        """Rank candidates. ``retrieval_points`` (gallery matches, neighbours) give each country's
        remaining mass a place better than its population centre."""
        s = self.settings
        country_p, strength = self.country_posterior(evidence)
        candidates = (
            self._candidates(evidence, matches, country_p, retrieval_points or []) if strength > 0 else []
        )
        warnings: list[str] = []

        gps_ev = next((e for e in evidence if e.id == "exif.gps" and e.usable and e.point), None)
        if gps_ev is not None and gps_ev.point is not None and s.use_exif_gps:
            p_gps = gps_ev.weight
            gps_cand = Candidate(
                point=gps_ev.point,
                source=CandidateSource.EXIF,
                label="GPS position in the photo's metadata",
                granularity=Granularity.EXACT,
                score=0.0,
                probability=p_gps,
                radius_km=exif.gps_radius_km or 0.05,
                evidence_ids=["exif.gps"],
                notes=[gps_ev.reason] if gps_ev.reason else [],
            )
            extra, warnings, conflicts = self._check_gps(gps_cand, exif, evidence, matches, candidates)
            trust = gps_trust(conflicts)
            if conflicts:
                # the GPS may be wrong: it keeps `trust`, the evidence's own candidates the rest
                p_gps = round(min(p_gps, trust), 6)
                gps_cand.probability = p_gps
            for c in candidates:
                c.probability = round(c.probability * (1 - p_gps), 6)
            alts = [c for c in candidates if c.probability >= 0.001]
            ranked = sorted([gps_cand, *alts], key=lambda c: -c.probability)[: s.max_candidates]
            self._attach_places(ranked)
            return FusionResult(
                status="located",
                basis="exif-gps",
                best=ranked[0],
                candidates=ranked,
                confidence=ranked[0].probability,
                level=confidence_level(ranked[0].probability, s.min_probability),
                explanation=self._explain_exif(gps_cand, warnings, conflicts),
                country_probabilities=country_p,
                extra_evidence=extra,
                warnings=warnings,
                gps_trust=trust,
                gps_conflicts=conflicts,
            )

        ignored = gps_ev is not None and not s.use_exif_gps
        if ignored:
            warnings.append("a valid EXIF GPS position was ignored because use_exif_gps is off")
        ranked = candidates[: s.max_candidates]
        if not ranked and not retrieval_points:
            ranked = [self.prior_candidate()]  # a guess to rank, never an answer
        self._attach_places(ranked)
        top = ranked[0].probability if ranked else 0.0
        if not is_answer(ranked[0] if ranked else None, top, evidence, s.min_probability):
            return FusionResult(
                status="insufficient_evidence",
                basis=None,
                best=None,
                candidates=ranked,
                confidence=top,
                level=ConfidenceLevel.NONE,
                explanation=self._explain_insufficient(evidence, country_p, ignored, ranked),
                country_probabilities=country_p,
                warnings=warnings,
            )
        return FusionResult(
            status="located",
            basis="evidence",
            best=ranked[0],
            candidates=ranked,
            confidence=top,
            level=confidence_level(top, s.min_probability),
            explanation=self._explain_evidence(ranked[0], ranked, evidence, country_p),
            country_probabilities=country_p,
            warnings=warnings,
        )

    def prior_candidate(self) -> Candidate:
        """The photo prior's best single guess, for a photo with no usable clue: the point with the
        most gallery mass within 25-2500 km (``data/photo_prior.json``), with the gallery's share
        within its radius as its probability. Under the population prior: the population centre
        of the most populous country (the prior's mode), with the probability of that country."""
        if self.settings.fusion.prior == "photos":
            fb = photo_prior()["fallback"]
            return Candidate(
                point=LatLon(lat=fb["lat"], lon=fb["lon"]),
                source=CandidateSource.PRIOR,
                label=f"where photos are most often taken (near {fb['place']}): a guess, no evidence",
                granularity=Granularity.REGION,
                score=round(math.log(fb["within_200_km"]), 4),
                probability=round(float(fb[f"within_{int(fb['radius_km'])}_km"]), 6),
                radius_km=float(fb["radius_km"]),
                evidence_ids=[],
                notes=[
                    f"{fb['within_200_km']:.0%} of GeoCLIP's MP-16 photo gallery lies within 200 km of it, "
                    f"{fb['within_750_km']:.0%} within 750 km and {fb['within_2500_km']:.0%} within 2,500 km"
                ],
            )
        codes = sorted(self.gaz.countries)
        logp = self.log_prior(codes)
        p = np.exp(logp - logp.max())
        p /= p.sum()
        i = int(np.argmax(p))
        centre = self.gaz.country_centre(codes[i])
        point = centre.point if centre else LatLon(lat=0.0, lon=0.0)
        return Candidate(
            point=point,
            source=CandidateSource.PRIOR,
            label=f"the population centre of {self.gaz.country_name(codes[i])}: a guess, no evidence",
            granularity=Granularity.COUNTRY,
            score=round(math.log(float(p[i])), 4),
            probability=round(float(p[i]), 6),
            radius_km=centre.r80_km if centre else 2000.0,
            evidence_ids=[],
        )

    # -- candidates from text clues --

    def _candidates(
        self,
        evidence: list[Evidence],
        matches: list[PlaceMatch],
        country_p: dict[str, float],
        retrieval_points: list[RetrievalPoint],
    ) -> list[Candidate]:
        best_retrieved: dict[str, RetrievalPoint] = {}
        for rp in retrieval_points:
            if rp.country not in best_retrieved or rp.weight > best_retrieved[rp.country].weight:
                best_retrieved[rp.country] = rp
        # Per country: the place hypotheses (match, place, within-country share).
        per_country: dict[str, list[tuple[PlaceMatch, GazetteerPlace, float]]] = defaultdict(list)
        for m in matches:
            totals: dict[str, float] = defaultdict(float)
            for p, w in zip(m.places, m.weights, strict=True):
                totals[p.country_code] += w
            for p, w in zip(m.places, m.weights, strict=True):
                per_country[p.country_code].append((m, p, w / totals[p.country_code]))

        supporting = {
            c: [e.id for e in evidence if e.usable and e.weight > 0 and e.countries.get(c, 0) >= 0.5]
            for c in country_p
        }
        out: list[Candidate] = []
        for cc, pc in country_p.items():
            hyps = per_country.get(cc, [])
            clusters = _cluster(hyps)
            weights = []
            for members in clusters:
                g = 1 - math.prod(1 - m.genuineness for m in {id(m): m for m, _, _ in members}.values())
                share = max(sh for _, _, sh in members)
                weights.append(g * share)
            distinct = {id(m): m for m, _, _ in hyps}.values()
            w0 = math.prod(1 - m.genuineness for m in distinct)
            norm = sum(weights) + w0
            for members, w in zip(clusters, weights, strict=True):
                prob = pc * w / norm
                if prob < 0.002:
                    continue
                rep = _representative(members)
                ids = sorted({m.evidence_id for m, _, _ in members})
                out.append(
                    Candidate(
                        point=rep.point,
                        source=CandidateSource.TEXT_CLUE,
                        label=_match_label(rep.name, members),
                        granularity=Granularity.CITY,
                        score=round(math.log(max(prob, 1e-12)), 4),
                        probability=round(prob, 6),
                        radius_km=round(float(city_radius_km(rep.population)), 1),
                        evidence_ids=ids + [i for i in supporting[cc] if i not in ids],
                        notes=[f"{rep.name}, population {rep.population:,}"]
                        + (["corroborated by several names read in the image"] if len(ids) > 1 else []),
                    )
                )
            rest = pc * w0 / norm
            if rest < 0.005:
                continue
            name = self.gaz.country_name(cc)
            if cc in best_retrieved:
                rp = best_retrieved[cc]
                out.append(
                    Candidate(
                        point=rp.point,
                        source=rp.source,
                        label=f"in {name}, where {rp.label}",
                        granularity=Granularity.REGION,
                        score=round(math.log(max(rest, 1e-12)), 4),
                        probability=round(rest, 6),
                        radius_km=rp.radius_km,
                        evidence_ids=[rp.evidence_id, *(i for i in supporting[cc] if i != rp.evidence_id)],
                        notes=[f"placed at the best {rp.source.value} match in {name}"],
                    )
                )
                continue
            spot = self.country_spot(cc)
            if spot is None:
                continue
            point, radius, note = spot
            out.append(
                Candidate(
                    point=point,
                    source=CandidateSource.GAZETTEER,
                    label=f"somewhere in {name}",
                    granularity=Granularity.COUNTRY,
                    score=round(math.log(max(rest, 1e-12)), 4),
                    probability=round(rest, 6),
                    radius_km=radius,
                    evidence_ids=supporting[cc],
                    notes=[note],
                )
            )
        out.sort(key=lambda c: -c.probability)
        return out

    def country_spot(self, code: str) -> tuple[LatLon, float, str] | None:
        """Where to put "somewhere in <country>": under the photo prior, the country's best single
        guess for a photo (``spot_*`` of ``data/photo_prior.json``: most of its gallery photos within
        25-2500 km on average; New York for the United States, where the population centre is in
        Missouri); else, or for a country without gallery points, its population centre. Returns
        the point, the radius holding 80% of the photos (or people), and a note that says which."""
        name = self.gaz.country_name(code)
        if self.settings.fusion.prior == "photos":
            row = photo_prior()["countries"].get(code)
            if row and "spot_lat" in row:
                r80 = float(row["spot_r80_km"])
                return (
                    LatLon(lat=row["spot_lat"], lon=row["spot_lon"]),
                    r80,
                    f"the point is where photos in {name} are most often taken (near {row['spot_place']}); "
                    f"80% of GeoCLIP's gallery photos in {name} lie within {r80:.0f} km of it",
                )
        centre = self.gaz.country_centre(code)
        if centre is None:
            return None
        return (
            centre.point,
            centre.r80_km,
            f"the point is {name}'s population centre; 80% of its people live within {centre.r80_km:.0f} km of it",
        )

    def _attach_places(self, candidates: list[Candidate]) -> None:
        if not candidates:
            return
        places = self.gaz.reverse([c.point for c in candidates])
        for c, place in zip(candidates, places, strict=True):
            c.place = place

    # -- checks against a GPS answer --

    def _check_gps(
        self,
        gps: Candidate,
        exif: ExifReport,
        evidence: list[Evidence],
        matches: list[PlaceMatch],
        text_candidates: list[Candidate],
    ) -> tuple[list[Evidence], list[str], list[GpsConflict]]:
        """Check the GPS point against the clock, the place names read in the image and the
        postcodes, phone numbers and domains; returns the checks as evidence, the warnings and the
        contradictions."""
        extra: list[Evidence] = []
        warnings: list[str] = []
        conflicts: list[GpsConflict] = []
        here = self.gaz.reverse_one(gps.point)
        agree = self._gps_vs_named_places(gps, text_candidates, extra)
        if exif.utc_offset_minutes is not None and exif.local_time is not None:
            conflicts += self._gps_vs_offset(gps, exif, extra)
        if not agree:
            conflicts += self._gps_vs_place_names(gps, here, matches, extra)
        conflicts += self._gps_vs_codes(here, evidence, extra)
        for c in conflicts:
            gps.notes.append(c.text)
            warnings.append(c.text)
        if conflicts:
            gps.notes.append("the metadata may be wrong or edited (or copied from another photo)")
        return extra, warnings, conflicts

    def _gps_vs_named_places(
        self, gps: Candidate, text_candidates: list[Candidate], extra: list[Evidence]
    ) -> bool:
        """A place read in the image near the GPS point: picture and metadata agree."""
        named = [c for c in text_candidates if c.source == CandidateSource.TEXT_CLUE]
        if not named:
            return False
        dists = [float(haversine_km(gps.point.lat, gps.point.lon, c.point.lat, c.point.lon)) for c in named]
        i = int(np.argmin(dists))
        if dists[i] > max(25.0, 2 * named[i].radius_km):
            return False
        name = named[i].label.split(" (")[0]
        text = f"text in the image names {name}, {dists[i]:.1f} km from the GPS position: picture and metadata agree"
        gps.notes.append(text)
        extra.append(
            Evidence(
                id="check.gps-vs-text",
                tool="verifier",
                kind=EvidenceKind.CONSISTENCY,
                value=text,
                weight=0.0,
                details={"place": name, "distance_km": round(dists[i], 2)},
            )
        )
        return True

    def _gps_vs_offset(self, gps: Candidate, exif: ExifReport, extra: list[Evidence]) -> list[GpsConflict]:
        assert exif.utc_offset_minutes is not None and exif.local_time is not None
        tz = self.gaz.timezone_at(gps.point)
        expected = self.gaz.utc_offset_minutes(tz, exif.local_time) if tz else None
        if expected is None:
            return []
        ok = expected == exif.utc_offset_minutes
        text = (
            f"the clock's UTC offset {format_offset(exif.utc_offset_minutes)} "
            + ("matches" if ok else "does not match")
            + f" the time zone at the GPS point ({tz}, {format_offset(expected)} at that date)"
        )
        extra.append(
            Evidence(
                id="check.gps-vs-offset",
                tool="verifier",
                kind=EvidenceKind.CONSISTENCY,
                value=text,
                weight=0.0,
                reason=None
                if ok
                else "the camera clock or the position may be wrong (or the clock kept home time or UTC)",
                details={
                    "timezone": tz,
                    "expected_minutes": expected,
                    "exif_minutes": exif.utc_offset_minutes,
                },
            )
        )
        if ok:
            return []
        return [GpsConflict("offset", GPS_CONFLICT_LR["offset"], text, ("exif.utc-offset",))]

    def _gps_vs_place_names(
        self, gps: Candidate, here: Place, matches: list[PlaceMatch], extra: list[Evidence]
    ) -> list[GpsConflict]:
        """The most genuine place name read in the image, if it lies in another country."""
        credible = [m for m in matches if m.kind == "text" and m.genuineness >= MIN_CONFLICT_GENUINENESS]
        if not credible:
            return []
        m = max(credible, key=lambda m: m.genuineness)
        top = max(zip(m.weights, m.places, strict=True), key=lambda t: t[0])[1]
        if any(p.country_code == here.country_code for p in m.places):
            return []  # a place of the same name in the GPS point's country: no contradiction
        dist = float(haversine_km(gps.point.lat, gps.point.lon, top.lat, top.lon))
        text = (
            f"the text in the image names {top.name} ({self.gaz.country_name(top.country_code)}), "
            f"{dist:,.0f} km from the GPS position in {here.country}"
        )
        extra.append(
            Evidence(
                id="check.gps-vs-text",
                tool="verifier",
                kind=EvidenceKind.CONSISTENCY,
                value=text,
                weight=0.0,
                reason="the metadata may belong to another photo, or the text names somewhere else",
                details={"place": top.name, "country": top.country_code, "distance_km": round(dist, 1)},
            )
        )
        lr = GPS_CONFLICT_LR["place-name"] ** min(1.0, m.genuineness)
        return [GpsConflict("place-name", round(lr, 4), text, (m.evidence_id,))]

    def _gps_vs_codes(
        self, here: Place, evidence: list[Evidence], extra: list[Evidence]
    ) -> list[GpsConflict]:
        """Postcodes, phone numbers and web domains of another country, none of this country."""
        codes = [e for e in evidence if e.kind in CODE_KINDS and e.usable and e.weight >= 0.3 and e.countries]
        if not codes or any(e.countries.get(here.country_code, 0.0) >= 0.1 for e in codes):
            return []
        kinds = and_list(sorted({_CODE_WORDS[e.kind] for e in codes}))
        countries = and_list(
            sorted({self.gaz.country_name(c) for e in codes for c, v in e.countries.items() if v >= 0.5})
        )
        verb = "belongs" if len(codes) == 1 else "belong"
        text = f"the {kinds} read in the image {verb} to {countries}, not {here.country} where the GPS position is"
        extra.append(
            Evidence(
                id="check.gps-vs-codes",
                tool="verifier",
                kind=EvidenceKind.CONSISTENCY,
                value=text,
                weight=0.0,
                reason="the metadata may belong to another photo, or the business is foreign",
                details={"evidence": [e.id for e in codes]},
            )
        )
        return [GpsConflict("codes", GPS_CONFLICT_LR["codes"], text, tuple(e.id for e in codes))]

    # -- explanations --

    def explain(
        self,
        best: Candidate | None,
        ranked: list[Candidate],
        evidence: list[Evidence],
        country_p: dict[str, float],
        warnings: list[str],
        conflicts: list[GpsConflict] | None = None,
    ) -> str:
        """The account of the evidence behind ``best`` (a camera GPS point, or inferred evidence), or
        of why there is too little evidence when ``best`` is None, for a ranking made elsewhere.
        ``conflicts``: what contradicts the GPS point (fusion's ``gps_conflicts``)."""
        gps = next((e for e in evidence if e.id == "exif.gps" and e.usable and e.point), None)
        if best is None:
            ignored = gps is not None and not self.settings.use_exif_gps
            return self._explain_insufficient(evidence, country_p, ignored, ranked)
        if best.source == CandidateSource.EXIF:
            return self._explain_exif(best, warnings, conflicts)
        return self._explain_evidence(best, ranked, evidence, country_p)

    def _explain_exif(
        self, best: Candidate, warnings: list[str], conflicts: list[GpsConflict] | None = None
    ) -> str:
        where = best.place.short() if best.place else str(best.point)
        dist = f"{best.place.distance_km:.1f} km from {where}" if best.place else where
        text = f"Answer from the photo's GPS metadata: {best.point} ({best.point.dms()}), {dist}."
        if conflicts:
            return (
                text
                + " But other evidence disagrees: "
                + "; ".join(c.text for c in conflicts)
                + ". Either that has another explanation (a brand or a destination named on a sign, a clock "
                "left on another time zone) or the metadata is wrong or edited (or copied from another "
                f"photo), so the answer is less certain (probability {best.probability:.2f}) and the places "
                "the other evidence points to are kept as alternatives."
            )
        text += " Metadata can be edited or copied from another photo, so treat it as a claim to check against the image."
        if warnings:
            text += " Conflicts: " + "; ".join(warnings) + "."
        return text

    def _explain_evidence(
        self,
        best: Candidate,
        candidates: list[Candidate],
        evidence: list[Evidence],
        country_p: dict[str, float],
    ) -> str:
        by_id = {e.id: e for e in evidence}
        where = best.place.short() if best.place else str(best.point)
        if best.granularity == Granularity.COUNTRY:
            head = f"Best guess: {best.label}, near {where}"
        else:
            head = f"Best guess: {where}"
        parts = [f"{head} (probability {best.probability:.2f}, within about {best.radius_km:.0f} km)."]
        reasons = [by_id[i].value for i in best.evidence_ids if i in by_id][:5]
        if reasons:
            parts.append("It rests on: " + "; ".join(reasons) + ".")
        cc = best.place.country_code if best.place else None
        against = [
            e.value
            for e in evidence
            if e.usable and e.weight >= 0.2 and e.countries and cc and e.countries.get(cc, 0.0) < 0.1
        ][:3]
        if against:
            parts.append("Pointing elsewhere: " + "; ".join(against) + ".")
        alts = [
            f"{c.label if c.granularity == Granularity.COUNTRY or not c.place else c.place.short()} ({c.probability:.2f})"
            for c in candidates[1:4]
            if c.probability >= 0.01
        ]
        if alts:
            parts.append("Alternatives: " + ", ".join(alts) + ".")
        return " ".join(parts)

    def _explain_insufficient(
        self, evidence: list[Evidence], country_p: dict[str, float], ignored_gps: bool, weak: list[Candidate]
    ) -> str:
        parts = ["Too little evidence to say where this photo was taken."]
        if ignored_gps:
            parts.append("(The GPS position in the metadata was ignored, as configured.)")
        hints = [
            e.value
            for e in sorted(evidence, key=lambda e: -e.weight)
            if e.usable and e.weight > 0 and e.countries
        ]
        if weak and hints:
            tops = [c for c, _ in sorted(country_p.items(), key=lambda kv: -kv[1])[:3]]
            best = weak[0]
            where = (
                best.label
                if best.granularity == Granularity.COUNTRY or not best.place
                else best.place.short()
            )
            lead = (
                "Weak hints only: "
                + "; ".join(hints[:4])
                + f". They point most to {and_list([self.gaz.country_name(c) for c in tops])}, but "
            )
            if narrowing_only(evidence):
                parts.append(
                    lead + "a camera clock's offset narrows the longitudes, it does not decide among the "
                    f"countries that share them: the best, {where}, has probability {best.probability:.2f}, "
                    "and is a guess, not an answer."
                )
            else:
                parts.append(
                    lead + f"no place is likely enough: the best, {where}, has probability "
                    f"{best.probability:.2f}, below the {self.settings.min_probability:.2f} an answer needs."
                )
        else:
            parts.append("No clue in the metadata or the text implies any place.")
        injected = [e for e in evidence if e.kind == EvidenceKind.PROMPT_INJECTION]
        if injected:
            parts.append("The image's text tries to instruct an AI model, so none of it was trusted.")
        return " ".join(parts)


def is_answer(top: Candidate | None, p: float, evidence: list[Evidence], min_probability: float) -> bool:
    """Whether ``top`` at probability ``p`` is an answer, not only the best guess: likely enough,
    not the prior's guess (no evidence at all), and not the fusion's pick among the countries a
    camera clock's offset leaves (:func:`narrowing_only`)."""
    if top is None or p <= 0 or p < min_probability or top.source == CandidateSource.PRIOR:
        return False
    fusions_pick = top.source in (CandidateSource.TEXT_CLUE, CandidateSource.GAZETTEER)
    return not (fusions_pick and narrowing_only(evidence))


def country_clue(e: Evidence) -> bool:
    """Whether ``e`` weighs in the country posterior: usable, of some weight, naming countries."""
    return e.usable and e.weight > 0 and bool(e.countries) and e.kind not in NON_COUNTRY_KINDS


def narrowing_only(evidence: list[Evidence]) -> bool:
    """Whether every clue of the country posterior is one that narrows but never decides alone
    (:data:`NARROWING_ONLY`: the camera clock's offset)."""
    located = [e for e in evidence if country_clue(e)]
    return bool(located) and all(e.kind in NARROWING_ONLY for e in located)


def gps_trust(conflicts: list[GpsConflict]) -> float:
    """P(the GPS point is right) given the contradictions (1.0 when there are none)."""
    if not conflicts:
        return 1.0
    odds = GPS_PRIOR_ODDS * math.prod(c.likelihood_ratio for c in conflicts)
    return round(odds / (1 + odds), 4)


def _match_label(name: str, members: list[tuple[PlaceMatch, GazetteerPlace, float]]) -> str:
    """A text-clue candidate's label: the names read in the image, or the user's hint."""
    read = sorted({m.surface for m, _, _ in members if m.kind != "hint"})
    if not read:
        return f"{name} (the user's hint)"
    hinted = " and the user's hint" if any(m.kind == "hint" for m, _, _ in members) else ""
    return f"{name} (named in the image: {', '.join(repr(n) for n in read)}{hinted})"


def _cluster(
    hyps: list[tuple[PlaceMatch, GazetteerPlace, float]],
) -> list[list[tuple[PlaceMatch, GazetteerPlace, float]]]:
    """Greedy clustering of place hypotheses within CLUSTER_KM, strongest first."""
    order = sorted(hyps, key=lambda h: -(h[0].genuineness * h[2]))
    clusters: list[list[tuple[PlaceMatch, GazetteerPlace, float]]] = []
    for h in order:
        for cl in clusters:
            lead = cl[0][1]
            if float(haversine_km(lead.lat, lead.lon, h[1].lat, h[1].lon)) <= CLUSTER_KM:
                if all(m is not h[0] for m, _, _ in cl):
                    cl.append(h)
                break
        else:
            clusters.append([h])
    return clusters


def _representative(members: list[tuple[PlaceMatch, GazetteerPlace, float]]) -> GazetteerPlace:
    """The most specific credible place of a cluster: the smallest one among the names that are
    at least half as credible as the best (Shinjuku rather than Tokyo when both are read)."""
    best_g = max(m.genuineness for m, _, _ in members)
    credible = [p for m, p, _ in members if m.genuineness >= 0.5 * best_g]
    return min(credible, key=lambda p: p.population)
