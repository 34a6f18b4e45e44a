import pytest

from geosleuth.agents.fusion import EvidenceFusion, confidence_level
from geosleuth.schemas import CandidateSource, ConfidenceLevel, Evidence, EvidenceKind, Granularity, LatLon
from geosleuth.tools.exif import ExifReport


@pytest.fixture(scope="module")
def fusion(gazetteer, settings):
    return EvidenceFusion(gazetteer, settings)


def ev(i, kind, weight, countries, **kw):
    return Evidence(id=i, tool="test", kind=kind, value=i, weight=weight, countries=countries, **kw)


def test_no_evidence_means_insufficient(fusion):
    result = fusion.fuse([], [], ExifReport())
    assert result.status == "insufficient_evidence" and result.best is None
    assert result.level == ConfidenceLevel.NONE and "Too little evidence" in result.explanation
    # one ranked guess for forced answers: the photo prior's best spot, labelled as a guess
    (guess,) = result.candidates
    assert guess.source == CandidateSource.PRIOR and "no evidence" in guess.label
    assert guess.place.country_code == "GB" and 0.01 < guess.probability < 0.25


def test_a_strong_country_clue_gives_a_country_level_answer(fusion):
    result = fusion.fuse([ev("phone", EvidenceKind.PHONE, 0.8, {"ES": 1.0})], [], ExifReport())
    assert result.status == "located" and result.best.granularity == Granularity.COUNTRY
    assert result.best.place.country_code == "ES" and result.best.source == CandidateSource.GAZETTEER
    assert result.best.radius_km > 100  # a whole country is not a point
    probs = result.country_probabilities
    assert max(probs, key=probs.get) == "ES" and probs["ES"] > 0.6  # one clue: medium, not certain


def test_correlated_language_clues_do_not_multiply(fusion):
    one = fusion.country_posterior([ev("lang", EvidenceKind.LANGUAGE, 0.5, {"FR": 1.0})])[0]["FR"]
    three = fusion.country_posterior(
        [
            ev(f"l{i}", k, 0.5, {"FR": 1.0})
            for i, k in enumerate([EvidenceKind.LANGUAGE, EvidenceKind.SCRIPT, EvidenceKind.STREET_TYPE])
        ]
    )[0]["FR"]
    independent = fusion.country_posterior(
        [
            ev(f"i{i}", k, 0.5, {"FR": 1.0})
            for i, k in enumerate([EvidenceKind.LANGUAGE, EvidenceKind.PHONE, EvidenceKind.DOMAIN])
        ]
    )[0]["FR"]
    assert one < three < independent


def test_exif_gps_wins_and_conflicts_are_reported(fusion):
    gps = LatLon(lat=48.85837, lon=2.29448)
    evidence = [
        Evidence(id="exif.gps", tool="exif", kind=EvidenceKind.GPS, value="gps", weight=0.95, point=gps),
        ev("script", EvidenceKind.SCRIPT, 0.7, {"JP": 1.0}),
        ev("phone", EvidenceKind.PHONE, 0.8, {"JP": 1.0}),
    ]
    result = fusion.fuse(evidence, [], ExifReport(gps=gps, gps_radius_km=0.05))
    assert result.basis == "exif-gps" and result.best.point == gps and result.best.probability == 0.95
    assert any("Japan" in w and "France" in w for w in result.warnings)
    assert all(c.probability <= 0.05 for c in result.candidates[1:])


def test_use_exif_gps_off_ignores_the_point(gazetteer, settings):
    fusion = EvidenceFusion(gazetteer, settings.with_overrides(use_exif_gps=False))
    gps = LatLon(lat=48.85837, lon=2.29448)
    evidence = [
        Evidence(id="exif.gps", tool="exif", kind=EvidenceKind.GPS, value="gps", weight=0.95, point=gps)
    ]
    result = fusion.fuse(evidence, [], ExifReport(gps=gps))
    assert result.status == "insufficient_evidence"
    assert any("use_exif_gps" in w for w in result.warnings)


def test_unusable_evidence_is_ignored(fusion):
    bad = ev("bad", EvidenceKind.PHONE, 0.8, {"ES": 1.0}, usable=False, reason="broken")
    assert fusion.fuse([bad], [], ExifReport()).status == "insufficient_evidence"


@pytest.mark.parametrize(
    "p,level",
    [
        (0.95, ConfidenceLevel.HIGH),
        (0.6, ConfidenceLevel.MEDIUM),
        (0.3, ConfidenceLevel.LOW),
        (0.1, ConfidenceLevel.NONE),
    ],
)
def test_confidence_levels(p, level):
    assert confidence_level(p, 0.25) == level


def test_a_chain_alone_ranks_its_countries_first(fusion, clues_for_fusion):
    from geosleuth.tools.ocr.base import TextLine

    report = clues_for_fusion.extract([TextLine(text="MERCADONA", confidence=0.9, box=(0, 0, 100, 30))])
    probs = fusion.country_posterior(report.evidence)[0]
    ranked = sorted(probs, key=probs.get, reverse=True)
    assert ranked[0] == "ES" and ranked[1] == "PT"
    assert probs["ES"] < 0.8  # one chain sign: a lead, not certainty


@pytest.fixture(scope="module")
def clues_for_fusion(gazetteer):
    from geosleuth.tools.clues import ClueExtractor

    return ClueExtractor(gazetteer)


def test_somewhere_in_a_country_is_where_its_photos_are(gazetteer, settings, fusion):
    from geosleuth.geo import haversine_km

    us = [ev("phone", EvidenceKind.PHONE, 0.8, {"US": 1.0})]
    best = fusion.fuse(us, [], ExifReport()).best
    assert best.label == "somewhere in United States" and best.place.country_code == "US"
    # the photo prior's spot (New York), not the population centre (Missouri)
    assert haversine_km(best.point.lat, best.point.lon, 40.71, -74.01) < 50
    assert "most often taken" in best.notes[0]
    population = EvidenceFusion(gazetteer, settings.with_overrides(fusion={"prior": "population"}))
    centre = population.fuse(us, [], ExifReport()).best
    assert haversine_km(centre.point.lat, centre.point.lon, 40.71, -74.01) > 1000
    assert "population centre" in centre.notes[0]
