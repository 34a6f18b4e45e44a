"""A camera GPS point that other evidence contradicts: the confidence drops, the disagreeing
evidence is named, the metadata is called possibly wrong or edited, and the alternatives stay.
A point nothing contradicts keeps its confidence."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from PIL import Image

from conftest import fixture
from data import EIFFEL, exif_bytes, sign
from geosleuth.agents.fusion import GPS_CONFLICT_LR, GPS_PRIOR_ODDS, EvidenceFusion, gps_trust
from geosleuth.agents.pipeline import Locator, build_deps
from geosleuth.schemas import CandidateSource, Evidence, EvidenceKind, LatLon, Prediction
from geosleuth.testing.ocr import ScriptedOCR
from geosleuth.tools.exif import ExifReport

TOKYO_SIGN = "東京都新宿区\n新宿駅"
JAPANESE_CODES = "Tel. +81 3-3211-4111\nwww.tokyo-shop.jp"


def _photo(tmp_path: Path, offset: str) -> Path:
    """A plain photo with GPS at the Eiffel Tower and the clock at ``offset``."""
    path = tmp_path / f"gps{offset.replace(':', '')}.jpg"
    sign(["Cafe"], seed=7, width=300).save(
        path, quality=85, exif=exif_bytes(lat=EIFFEL[0], lon=EIFFEL[1], offset=offset)
    )
    return path


def _locate(settings, gazetteer, photo: Path, text: str | None) -> Prediction:
    deps = build_deps(settings.with_overrides(ocr={"engine": "none"}), gazetteer=gazetteer)
    if text is not None:
        deps = dataclasses.replace(deps, ocr=ScriptedOCR(text))
    return Locator(deps=deps).locate(photo)


def _gps(pred: Prediction):
    return next(c for c in pred.candidates if c.source == CandidateSource.EXIF)


def _japan(pred: Prediction) -> float:
    return sum(c.probability for c in pred.candidates if c.place is not None and c.place.country_code == "JP")


def _assert_contradicted(pred: Prediction, kind_ids: set[str]) -> None:
    assert pred.status == "located" and pred.basis == "exif-gps"  # the camera point is still the answer
    assert pred.confidence < 0.99
    checks = {e.id: e for e in pred.evidence if e.id.startswith("check.") and e.reason}
    assert kind_ids <= set(checks)
    for eid in kind_ids:  # each disagreeing piece of evidence is named, as a warning and in the text
        assert checks[eid].value in pred.warnings and checks[eid].value in pred.explanation
    assert any("may be wrong or edited" in n for n in _gps(pred).notes)


@pytest.fixture(scope="module")
def uncontradicted(settings, gazetteer, tmp_path_factory):
    return _locate(
        settings, gazetteer, _photo(tmp_path_factory.mktemp("gps"), "+02:00"), "Rue de Rivoli\n75001 Paris"
    )


def test_a_gps_point_nothing_contradicts_keeps_its_confidence(uncontradicted) -> None:
    pred = uncontradicted
    assert pred.basis == "exif-gps" and pred.confidence >= 0.999
    assert not pred.warnings and "may be wrong" not in pred.explanation
    assert {e.id for e in pred.evidence if e.id.startswith("check.")} == {
        "check.gps-vs-offset",
        "check.gps-vs-text",
    }
    assert not any(e.reason for e in pred.evidence if e.id.startswith("check."))


def test_a_clock_offset_that_does_not_fit_lowers_the_confidence(settings, gazetteer) -> None:
    pred = _locate(settings, gazetteer, fixture("exif_offset_conflict.jpg"), None)
    _assert_contradicted(pred, {"check.gps-vs-offset"})
    assert 0.8 <= pred.confidence < 0.99  # one contradiction, and clocks often keep home time


def test_a_place_name_of_another_country_lowers_the_confidence_and_keeps_it_as_an_alternative(
    settings, gazetteer, tmp_path
) -> None:
    pred = _locate(settings, gazetteer, _photo(tmp_path, "+02:00"), TOKYO_SIGN)
    _assert_contradicted(pred, {"check.gps-vs-text"})
    check = next(e for e in pred.evidence if e.id == "check.gps-vs-text")
    assert check.details["country"] == "JP" and check.details["distance_km"] > 9000
    assert _japan(pred) > 0.0  # Tokyo stays among the candidates


def test_postcodes_phones_and_domains_of_another_country_lower_the_confidence(
    settings, gazetteer, tmp_path
) -> None:
    pred = _locate(settings, gazetteer, _photo(tmp_path, "+02:00"), JAPANESE_CODES)
    _assert_contradicted(pred, {"check.gps-vs-codes"})
    check = next(e for e in pred.evidence if e.id == "check.gps-vs-codes")
    assert "Japan" in check.value and "France" in check.value
    assert _japan(pred) > 0.0


def test_the_clock_and_the_text_together_lower_it_more_than_either(settings, gazetteer, tmp_path) -> None:
    """The issue's case: GPS in Paris, text naming Tokyo, the clock at +09:00."""
    offset_only = _locate(settings, gazetteer, _photo(tmp_path, "+09:00"), None)
    text_only = _locate(settings, gazetteer, _photo(tmp_path, "+02:00"), TOKYO_SIGN)
    both = _locate(settings, gazetteer, _photo(tmp_path, "+09:00"), TOKYO_SIGN)
    _assert_contradicted(both, {"check.gps-vs-offset", "check.gps-vs-text"})
    assert both.confidence < min(offset_only.confidence, text_only.confidence)
    assert both.confidence < 0.8 and both.confidence_level.value != "high"
    assert _japan(both) > _japan(text_only)
    assert len(both.regions[-1].circles) > 1  # the alternatives are in the regions too


def test_overwhelming_contradiction_lets_the_evidence_win_but_keeps_the_gps(
    settings, gazetteer, tmp_path
) -> None:
    pred = _locate(settings, gazetteer, _photo(tmp_path, "+09:00"), TOKYO_SIGN + "\n" + JAPANESE_CODES)
    assert pred.best is not None and pred.best.place is not None and pred.best.place.country_code == "JP"
    gps = _gps(pred)
    assert 0.0 < gps.probability < pred.confidence
    assert any("may be wrong or edited" in n for n in gps.notes)


def test_ignored_gps_is_not_contradicted_or_used(settings, gazetteer, tmp_path) -> None:
    deps = build_deps(
        settings.with_overrides(ocr={"engine": "none"}, use_exif_gps=False), gazetteer=gazetteer
    )
    pred = Locator(deps=dataclasses.replace(deps, ocr=ScriptedOCR(TOKYO_SIGN))).locate(
        _photo(tmp_path, "+09:00")
    )
    assert not any(c.source == CandidateSource.EXIF for c in pred.candidates)
    assert not any(e.id.startswith("check.gps") for e in pred.evidence)


# --- the trust model, at the fusion level ---------------------------------------------------------


def test_the_trust_model_is_odds_times_likelihood_ratios() -> None:
    assert gps_trust([]) == 1.0
    from geosleuth.agents.fusion import GpsConflict

    one = gps_trust([GpsConflict("offset", GPS_CONFLICT_LR["offset"], "x")])
    odds = GPS_PRIOR_ODDS * GPS_CONFLICT_LR["offset"]
    assert one == pytest.approx(odds / (1 + odds), abs=1e-4)
    two = gps_trust(
        [GpsConflict("offset", GPS_CONFLICT_LR["offset"], "x"), GpsConflict("place-name", 0.1, "y")]
    )
    assert two < one


def test_fusion_reports_each_contradiction_with_its_evidence(gazetteer, settings) -> None:
    fusion = EvidenceFusion(gazetteer, settings)
    gps = LatLon(lat=EIFFEL[0], lon=EIFFEL[1])
    evidence = [
        Evidence(id="exif.gps", tool="exif", kind=EvidenceKind.GPS, value="gps", weight=0.95, point=gps),
        Evidence(
            id="text.phone.1",
            tool="clues",
            kind=EvidenceKind.PHONE,
            value="+81",
            weight=0.8,
            countries={"JP": 1.0},
        ),
    ]
    result = fusion.fuse(evidence, [], ExifReport(gps=gps, gps_radius_km=0.05))
    (conflict,) = result.gps_conflicts
    assert conflict.kind == "codes" and conflict.evidence_ids == ("text.phone.1",)
    assert result.gps_trust < 1.0 and result.best is not None and result.best.source == CandidateSource.EXIF
    # a phone number of the GPS point's own country as well: no contradiction
    evidence.append(
        Evidence(
            id="text.phone.2",
            tool="clues",
            kind=EvidenceKind.PHONE,
            value="+33",
            weight=0.8,
            countries={"FR": 1.0},
        )
    )
    assert fusion.fuse(evidence, [], ExifReport(gps=gps, gps_radius_km=0.05)).gps_conflicts == []


def test_an_image_with_gps_and_no_other_evidence_is_unchanged(settings, gazetteer) -> None:
    pred = _locate(settings, gazetteer, fixture("exif_gps.jpg"), None)
    assert pred.confidence >= 0.999 and not pred.warnings
    assert Image.open(fixture("exif_gps.jpg")).size  # the fixture is a real photo
