"""The verifier on hand-built inputs: each signal moves the ranking the way it should, the null
option keeps weak evidence honest, regions nest, and fitting finds the informative signal."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from geosleuth.agents.verifier import (
    DEFAULT_WEIGHTS,
    SIGNALS,
    VerificationInputs,
    Verifier,
    cap_area_km2,
    cumulative_union_area_km2,
    union_area_km2,
)
from geosleuth.config import VerifierSettings
from geosleuth.errors import ConfigError
from geosleuth.geo import EARTH_RADIUS_KM
from geosleuth.schemas import (
    BoxRegion,
    Candidate,
    CandidateSource,
    CircleRegion,
    Granularity,
    LatLon,
    Neighbour,
    VLMGuess,
)

PARIS = LatLon(lat=48.8566, lon=2.3522)
BERLIN = LatLon(lat=52.52, lon=13.405)
MADRID = LatLon(lat=40.4168, lon=-3.7038)
CHICAGO = LatLon(lat=41.8781, lon=-87.6298)
MID_ATLANTIC = LatLon(lat=30.0, lon=-40.0)
SYDNEY_OPERA = LatLon(lat=-33.8568, lon=151.2153)  # on the edge of the 1 km land mask: "sea"
INLAND = [
    PARIS,
    BERLIN,
    MADRID,
    CHICAGO,
    LatLon(lat=-1.2921, lon=36.8219),
    LatLon(lat=39.7392, lon=-104.9903),
]


def cand(
    point: LatLon,
    source: CandidateSource = CandidateSource.VLM,
    *,
    label: str | None = None,
    granularity: Granularity = Granularity.CITY,
    radius_km: float = 10.0,
    evidence_ids: list[str] | None = None,
) -> Candidate:
    return Candidate(
        point=point,
        source=source,
        label=label or f"{source.value} at {point}",
        granularity=granularity,
        score=0.0,
        probability=0.0,
        radius_km=radius_km,
        evidence_ids=evidence_ids or [],
    )


def around(
    center: LatLon, n: int, *, spread_km: float = 15.0, sim: float = 0.8, seed: int = 0
) -> list[Neighbour]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        dlat, dlon = rng.normal(0, spread_km / 111.0, 2)
        out.append(
            Neighbour(
                point=LatLon(
                    lat=center.lat + dlat, lon=center.lon + dlon / math.cos(math.radians(center.lat))
                ),
                similarity=sim - 0.01 * i,
                key=f"n{seed}-{i}",
            )
        )
    return out


def guesses(*points: LatLon) -> list[VLMGuess]:
    return [VLMGuess(latitude=p.lat, longitude=p.lon) for p in points]


@pytest.fixture(scope="module")
def verifier(gazetteer):  # type: ignore[no-untyped-def]
    return Verifier(gazetteer, VerifierSettings())


def by_label(result, label: str) -> Candidate:  # type: ignore[no-untyped-def]
    return next(c for c in result.candidates if c.label == label)


def test_similar_neighbours_pull_to_their_cluster(verifier: Verifier) -> None:
    inputs = VerificationInputs(
        candidates=[cand(PARIS, label="Paris"), cand(BERLIN, label="Berlin")],
        similar=around(BERLIN, 12),
        dissimilar=around(PARIS, 12, sim=-0.5, seed=1),
    )
    res = verifier.verify(inputs)
    assert res.best is not None and res.best.label == "Berlin"
    assert by_label(res, "Berlin").signals["density"] > 2.0
    assert by_label(res, "Paris").signals["density"] < -2.0
    assert res.best.probability > 0.8


def test_valid_exif_point_overrides_everything(verifier: Verifier) -> None:
    inputs = VerificationInputs(
        candidates=[
            cand(PARIS, CandidateSource.TEXT_CLUE, label="Paris"),
            cand(
                MADRID,
                CandidateSource.EXIF,
                label="camera GPS",
                granularity=Granularity.EXACT,
                radius_km=0.05,
            ),
        ],
        hard_countries={"FR": 1.0, "ES": 0.01},
        hard_strength=1.0,
        similar=around(PARIS, 20),
        vlm_guesses=guesses(*[PARIS] * 10),
        geo_similarity=lambda pts: np.array([0.3 if p == PARIS else 0.2 for p in pts]),
        exif_point=MADRID,
        exif_radius_km=0.05,
    )
    res = verifier.verify(inputs)
    assert res.best is not None and res.best.label == "camera GPS"
    assert res.best.probability > 0.9
    paris = by_label(res, "Paris")
    assert any(n.startswith("conflicts with the EXIF GPS point") for n in paris.notes)
    assert "conflicts with the EXIF GPS point" in res.explanation


def test_vlm_guess_in_the_sea_is_demoted(verifier: Verifier) -> None:
    inputs = VerificationInputs(
        candidates=[cand(MID_ATLANTIC, label="ocean guess"), cand(PARIS, label="Paris")],
        vlm_guesses=guesses(MID_ATLANTIC, PARIS),
    )
    res = verifier.verify(inputs)
    sea = by_label(res, "ocean guess")
    assert sea.signals["land"] < 0
    assert any("in the sea" in n for n in sea.notes)
    assert res.best is not None and res.best.label == "Paris"
    assert by_label(res, "Paris").signals["land"] == 0.0
    assert "in the sea" in res.explanation


def test_coastal_city_on_the_mask_edge_is_not_at_sea(verifier: Verifier, gazetteer) -> None:  # type: ignore[no-untyped-def]
    assert not gazetteer.on_land([SYDNEY_OPERA.lat], [SYDNEY_OPERA.lon])[0]  # the premise
    res = verifier.verify(VerificationInputs(candidates=[cand(SYDNEY_OPERA, granularity=Granularity.EXACT)]))
    assert res.candidates[0].signals["land"] == 0.0
    assert not any("sea" in n for n in res.candidates[0].notes)


def test_candidate_outside_the_time_zone_band_is_demoted(verifier: Verifier) -> None:
    band = BoxRegion(south=-90, north=90, west=-10.0, east=25.0)  # CET-like longitudes
    inputs = VerificationInputs(
        candidates=[cand(CHICAGO, label="Chicago"), cand(PARIS, label="Paris")], utc_band=band
    )
    res = verifier.verify(inputs)
    chicago = by_label(res, "Chicago")
    assert chicago.signals["timezone"] <= -3.0
    assert any("outside the time zone's longitudes" in n for n in chicago.notes)
    assert by_label(res, "Paris").signals["timezone"] == 0.0
    assert res.best is not None and res.best.label == "Paris"


def test_time_zone_band_across_the_antimeridian(verifier: Verifier) -> None:
    band = BoxRegion(south=-90, north=90, west=170.0, east=-170.0)
    fiji, samoa_ish, tokyo = (
        LatLon(lat=-17.7, lon=178.0),
        LatLon(lat=-13.8, lon=-172.0),
        LatLon(lat=35.68, lon=139.69),
    )
    res = verifier.verify(
        VerificationInputs(candidates=[cand(p) for p in (fiji, samoa_ish, tokyo)], utc_band=band)
    )
    tz = {c.point: c.signals["timezone"] for c in res.candidates}
    assert tz[fiji] == 0.0 and tz[samoa_ish] == 0.0 and tz[tokyo] < -3.0


def test_hard_evidence_decides_between_equal_candidates(verifier: Verifier) -> None:
    inputs = VerificationInputs(
        candidates=[
            cand(PARIS, CandidateSource.TEXT_CLUE, label="Paris"),
            cand(BERLIN, CandidateSource.TEXT_CLUE, label="Berlin"),
        ],
        hard_countries={"DE": 0.9, "FR": 0.09},
        hard_strength=2.0,
    )
    res = verifier.verify(inputs)
    assert res.best is not None and res.best.label == "Berlin"
    assert res.best.signals["hard"] == 0.0
    assert by_label(res, "Paris").signals["hard"] == pytest.approx(math.log(0.1), abs=1e-3)
    assert "hard evidence for its country" in res.explanation


def test_hard_evidence_scales_with_its_strength(verifier: Verifier) -> None:
    def hard_of_paris(strength: float) -> float:
        inputs = VerificationInputs(
            candidates=[cand(PARIS, label="Paris"), cand(BERLIN, label="Berlin")],
            hard_countries={"DE": 1.0, "FR": 0.1},
            hard_strength=strength,
        )
        return by_label(verifier.verify(inputs), "Paris").signals["hard"]

    assert hard_of_paris(0.0) == 0.0
    assert hard_of_paris(0.5) == pytest.approx(0.5 * math.log(0.1), abs=1e-3)
    assert hard_of_paris(3.0) == pytest.approx(math.log(0.1), abs=1e-3)


def test_candidates_within_merge_km_merge_with_both_sources(verifier: Verifier) -> None:
    near_paris = LatLon(lat=PARIS.lat + 0.02, lon=PARIS.lon + 0.02)  # ~2.7 km
    inputs = VerificationInputs(
        candidates=[
            cand(
                near_paris,
                CandidateSource.VLM,
                label="VLM guess",
                radius_km=100.0,
                evidence_ids=["vlm.samples"],
            ),
            cand(
                PARIS, CandidateSource.TEXT_CLUE, label="Paris (named in the image)", evidence_ids=["clue.1"]
            ),
            cand(BERLIN, CandidateSource.GALLERY, label="gallery match", radius_km=25.0),
        ]
    )
    res = verifier.verify(inputs)
    assert len(res.candidates) == 2
    merged = by_label(res, "Paris (named in the image)")
    assert merged.point == PARIS  # the more precise one keeps its point and label
    assert merged.source == CandidateSource.TEXT_CLUE
    assert merged.sources == ["text-clue", "vlm"]
    assert merged.evidence_ids == ["clue.1", "vlm.samples"]
    # inputs are not mutated
    assert inputs.candidates[1].sources == [] and inputs.candidates[1].signals == {}


def test_probabilities_with_the_null_option_sum_to_one(verifier: Verifier) -> None:
    inputs = VerificationInputs(
        candidates=[cand(p) for p in INLAND], vlm_guesses=guesses(PARIS, PARIS, BERLIN)
    )
    res = verifier.verify(inputs)
    total = sum(c.probability for c in res.candidates)
    assert total < 1.0 and res.null_probability > 0.0
    assert total + res.null_probability == pytest.approx(1.0, abs=1e-9)
    probs = [c.probability for c in res.candidates]
    assert probs == sorted(probs, reverse=True)
    assert res.top_margin == pytest.approx(probs[0] - probs[1])


def test_weak_evidence_gives_a_low_top_probability(verifier: Verifier, gazetteer) -> None:  # type: ignore[no-untyped-def]
    centre = gazetteer.country_centre("FR")
    lone = cand(
        centre.point,
        CandidateSource.GAZETTEER,
        label="somewhere in France",
        granularity=Granularity.COUNTRY,
        radius_km=centre.r80_km,
    )
    res = verifier.verify(VerificationInputs(candidates=[lone]))
    assert res.candidates[0].probability < 0.4
    assert res.investigate
    assert "weak or split" in res.explanation
    # three VLM samples that disagree: no candidate is likely
    split = [PARIS, CHICAGO, LatLon(lat=35.68, lon=139.69)]
    res = verifier.verify(
        VerificationInputs(candidates=[cand(p) for p in split], vlm_guesses=guesses(*split))
    )
    assert res.candidates[0].probability < 0.4
    assert res.null_probability > 0.05


def test_strong_agreement_gives_a_high_top_probability(verifier: Verifier) -> None:
    inputs = VerificationInputs(
        candidates=[cand(PARIS, CandidateSource.TEXT_CLUE, label="Paris"), cand(BERLIN, label="Berlin")],
        vlm_guesses=guesses(*[PARIS] * 9, BERLIN),
        similar=around(PARIS, 20),
        hard_countries={"FR": 1.0, "DE": 0.05},
        hard_strength=1.5,
    )
    res = verifier.verify(inputs)
    assert res.best is not None and res.best.label == "Paris"
    assert res.best.probability > 0.9
    assert not res.investigate
    assert "It beat the runner-up, Berlin" in res.explanation


def test_regions_are_nested_and_hold_the_top_candidate(verifier: Verifier) -> None:
    inputs = VerificationInputs(
        candidates=[cand(p, radius_km=50.0 + 10 * i) for i, p in enumerate(INLAND)],
        vlm_guesses=guesses(PARIS, PARIS, PARIS, BERLIN, BERLIN, MADRID),
    )
    res = verifier.verify(inputs)
    assert [r.level for r in res.regions] == [0.5, 0.8, 0.95]
    areas = [r.area_km2 for r in res.regions]
    assert areas[0] <= areas[1] <= areas[2]
    assert all(len(a.circles) <= len(b.circles) for a, b in zip(res.regions, res.regions[1:], strict=False))
    assert res.best is not None
    for r in res.regions:
        assert r.circles[0].center == res.best.point
        # the prefix holds its level of the candidates' (not the null option's) probability
        held = sum(c.probability for c in res.candidates[: len(r.circles)])
        assert held / sum(c.probability for c in res.candidates) >= r.level - 1e-9


def test_region_circles_have_a_radius_floor(verifier: Verifier) -> None:
    res = verifier.verify(VerificationInputs(candidates=[cand(PARIS, radius_km=0.0)]))
    assert res.regions[0].circles[0].radius_km >= 1.0
    assert res.regions[0].area_km2 == pytest.approx(math.pi, rel=0.01)


def test_union_area_of_identical_and_far_circles() -> None:
    one = CircleRegion(center=PARIS, radius_km=100.0)
    far = CircleRegion(center=CHICAGO, radius_km=100.0)
    a = float(cap_area_km2(100.0))
    assert a == pytest.approx(math.pi * 100.0**2, rel=1e-3)
    assert union_area_km2([one]) == pytest.approx(a, rel=1e-9)
    assert union_area_km2([one, one]) == pytest.approx(a, rel=0.02)
    assert union_area_km2([one, far]) == pytest.approx(2 * a, rel=0.02)


def test_union_area_of_overlapping_circles_matches_the_lens_formula() -> None:
    r, d = 50.0, 50.0  # small enough for the planar lens formula
    lens = 2 * r**2 * math.acos(d / (2 * r)) - d / 2 * math.sqrt(4 * r**2 - d**2)
    expected = 2 * math.pi * r**2 - lens
    lat0 = 10.0
    dlon = math.degrees(d / (EARTH_RADIUS_KM * math.cos(math.radians(lat0))))
    circles = [
        CircleRegion(center=LatLon(lat=lat0, lon=20.0), radius_km=r),
        CircleRegion(center=LatLon(lat=lat0, lon=20.0 + dlon), radius_km=r),
    ]
    assert union_area_km2(circles) == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize(("n", "limit_s"), [(10, 0.02), (30, 0.02), (100, 0.05)])
def test_union_area_is_fast(n: int, limit_s: float) -> None:
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-60, 60, n), rng.uniform(-180, 180, n)
    radii = rng.uniform(1, 2000, n)  # large and overlapping: the worst case
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        areas = cumulative_union_area_km2(lat, lon, radii)
        best = min(best, time.perf_counter() - t)
    assert best < limit_s  # ~1.5 / 5 / 12 ms unloaded
    assert np.all(np.diff(areas) >= 0)
    assert areas[-1] <= float(cap_area_km2(radii).sum()) + 1e-6


def test_unknown_weight_names_raise_config_error(gazetteer) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(
        ConfigError, match=r"'desnity'.*did you mean 'density'.*valid names: evidence, geo, density"
    ):
        Verifier(gazetteer, VerifierSettings(weights={"desnity": 1.0}))
    v = Verifier(gazetteer, VerifierSettings(weights={"geo": 0.25, "null": -1.0}))
    assert v.weights["geo"] == 0.25 and v.weights["null"] == -1.0
    assert v.weights["density"] == DEFAULT_WEIGHTS["density"]
    with pytest.raises(ConfigError, match="finite number"):
        v.set_weights({"geo": float("nan")})
    with pytest.raises(ConfigError, match="region_levels"):
        Verifier(gazetteer, VerifierSettings(region_levels=[0.5, 1.5]))


def test_missing_inputs_leave_their_signals_at_zero(verifier: Verifier) -> None:
    res = verifier.verify(VerificationInputs(candidates=[cand(PARIS), cand(BERLIN)]))
    for c in res.candidates:
        assert set(c.signals) == set(SIGNALS)
        for name in ("geo", "density", "consistency", "hard", "exif", "timezone", "land"):
            assert c.signals[name] == 0.0, name
    # hard evidence with no strength behind it is neutral too
    res = verifier.verify(
        VerificationInputs(candidates=[cand(PARIS), cand(BERLIN)], hard_countries={"DE": 1.0, "FR": 0.01})
    )
    assert all(c.signals["hard"] == 0.0 for c in res.candidates)


def test_geo_similarity_is_centred_on_the_best(verifier: Verifier) -> None:
    sims = {PARIS: 0.40, BERLIN: 0.35}
    res = verifier.verify(
        VerificationInputs(
            candidates=[cand(PARIS, label="Paris"), cand(BERLIN, label="Berlin")],
            geo_similarity=lambda pts: np.array([sims[p] for p in pts]),
        )
    )
    assert res.best is not None and res.best.label == "Paris"
    assert res.best.signals["geo"] == 0.0
    assert by_label(res, "Berlin").signals["geo"] == pytest.approx(-0.05 * 39.69, abs=1e-3)
    with pytest.raises(ValueError, match="one finite cosine per point"):
        verifier.verify(VerificationInputs(candidates=[cand(PARIS)], geo_similarity=lambda pts: np.zeros(3)))


def test_empty_pool(verifier: Verifier) -> None:
    res = verifier.verify(VerificationInputs(candidates=[]))
    assert res.best is None and res.null_probability == 1.0 and res.regions == []


def _synthetic_examples(n: int, seed: int) -> list[tuple[VerificationInputs, LatLon]]:
    """Neighbours cluster at the truth 80% of the time (informative); the VLM picks a candidate
    at random (noise); one example in ten has the truth far from every candidate."""
    rng = np.random.default_rng(seed)
    out = []
    for e in range(n):
        i, j = rng.choice(len(INLAND), 2, replace=False)
        a, b = INLAND[i], INLAND[j]
        truth = a if rng.random() > 0.1 else LatLon(lat=-25.0, lon=135.0)
        cluster = a if rng.random() < 0.8 else b
        noise = a if rng.random() < 0.5 else b
        inputs = VerificationInputs(
            candidates=[cand(a), cand(b)],
            similar=around(cluster, 8, seed=e),
            vlm_guesses=guesses(*[noise] * 5),
        )
        out.append((inputs, truth))
    return out


def test_fit_finds_the_informative_signal(gazetteer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    v = Verifier(gazetteer, VerifierSettings())
    fitted = v.fit(_synthetic_examples(200, seed=0), l2=1e-3)
    assert fitted["density"] > 0.3
    assert abs(fitted["consistency"]) < 0.25
    assert fitted["density"] > 2 * abs(fitted["consistency"])
    m = v.fit_metrics
    assert m["n_examples"] == 200 and 0 < m["n_hits"] < 200
    assert m["log_loss_after"] < m["log_loss_before"] - 0.05
    # signals the examples never exercise keep their defaults
    assert fitted["exif"] == pytest.approx(DEFAULT_WEIGHTS["exif"], abs=1e-6)

    # held-out data: the fitted weights beat the defaults there too
    test = _synthetic_examples(100, seed=1)
    default = Verifier(gazetteer, VerifierSettings())

    def log_loss(ver: Verifier) -> float:
        total = 0.0
        for inputs, truth in test:
            res = ver.verify(inputs)
            hit = [c for c in res.candidates if c.point == truth]
            total -= math.log(hit[0].probability if hit else res.null_probability)
        return total / len(test)

    assert log_loss(v) < log_loss(default)

    path = v.save_weights(tmp_path / "verifier.json")
    payload = json.loads(path.read_text())
    assert payload["version"] == 1 and payload["signals"] == list(SIGNALS) and payload["n_examples"] == 200
    assert "log_loss_after" in payload["metrics"]
    fresh = Verifier(gazetteer, VerifierSettings())
    assert fresh.load_weights(path) == v.weights
    assert fresh.fit_metrics["n_examples"] == 200


def test_load_weights_rejects_bad_files(gazetteer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    v = Verifier(gazetteer, VerifierSettings())
    with pytest.raises(ConfigError, match="does not exist"):
        v.load_weights(tmp_path / "missing.json")
    bad = tmp_path / "v2.json"
    bad.write_text(json.dumps({"version": 2, "weights": {}}))
    with pytest.raises(ConfigError, match="version 2"):
        v.load_weights(bad)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"version": 1, "weights": {"vibes": 1.0}}))
    with pytest.raises(ConfigError, match="valid names"):
        v.load_weights(unknown)
