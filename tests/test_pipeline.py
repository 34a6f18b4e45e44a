import io

import pytest
from PIL import Image

from conftest import fixture
from geosleuth.agents.pipeline import Locator, build_deps, locate
from geosleuth.errors import CorruptImageError, NotAnImageError
from geosleuth.geo import geodesic_km
from geosleuth.schemas import LocateError, Prediction, StageStatus

EIFFEL = (48.858370, 2.294481)


def km_to(pred, lat, lon):
    return float(geodesic_km(pred.best.point.lat, pred.best.point.lon, lat, lon))


@pytest.mark.parametrize(
    "name,lat,lon,within_km,country",
    [
        (
            "sign_fr_paris.jpg",
            48.8534,
            2.3488,
            25,
            "FR",
        ),  # place name + adjacent postcode + French street word
        ("sign_de_berlin.jpg", 52.5244, 13.4105, 30, "DE"),  # postcode next to Berlin, German street word
        ("sign_ja_tokyo.jpg", 35.6895, 139.6917, 30, "JP"),  # Han place names + kana script
        ("shop_es_phone.jpg", 40.4165, -3.7026, 30, "ES"),  # +34 phone, Madrid landline area
    ],
)
def test_signs_locate_from_text(locator, name, lat, lon, within_km, country):
    pred = locator.locate(fixture(name))
    assert pred.status == "located" and pred.basis == "evidence"
    assert pred.best.place.country_code == country
    assert km_to(pred, lat, lon) < within_km
    assert pred.confidence >= 0.5
    assert pred.stage("ocr").status == StageStatus.RAN and pred.stage("clues").status == StageStatus.RAN
    # the explanation names what it rests on
    assert "rests on" in pred.explanation


@pytest.mark.parametrize("name", ["sign_en_generic.jpg", "blank.jpg"])
def test_no_usable_clue_means_too_little_evidence(locator, name):
    pred = locator.locate(fixture(name))
    assert pred.status == "insufficient_evidence" and pred.best is None
    assert pred.confidence_level.value == "none"
    assert "Too little evidence" in pred.explanation


def test_rendered_instructions_do_not_steer_the_answer(locator):
    pred = locator.locate(fixture("sign_injection.jpg"))
    assert pred.status == "insufficient_evidence"
    assert any(e.kind == "prompt-injection" for e in pred.evidence)
    assert "instruct an AI model" in pred.explanation


def test_exif_gps_is_the_answer_and_says_so(exif_locator):
    pred = exif_locator.locate(fixture("exif_gps.jpg"))
    assert pred.basis == "exif-gps" and pred.best.source == "exif"
    assert km_to(pred, *EIFFEL) < 0.001
    assert "GPS metadata" in pred.explanation and pred.best.place.name == "Paris"
    assert pred.confidence_level.value == "high"


def test_exif_gps_beats_text_but_the_conflict_is_reported(locator):
    pred = locator.locate(fixture("exif_gps_vs_text.jpg"))
    assert pred.basis == "exif-gps" and km_to(pred, *EIFFEL) < 0.001
    assert any("Japan" in w for w in pred.warnings)


def test_clock_offset_that_contradicts_gps_is_reported(exif_locator):
    pred = exif_locator.locate(fixture("exif_offset_conflict.jpg"))
    assert any("does not match the time zone" in w for w in pred.warnings)
    check = next(e for e in pred.evidence if e.id == "check.gps-vs-offset")
    assert check.details["timezone"] == "Europe/Paris"


def test_utc_offset_alone_is_a_weak_hint(exif_locator):
    pred = exif_locator.locate(fixture("exif_no_gps.jpg"))
    assert pred.status == "insufficient_evidence" and pred.best is None
    assert "UTC+09:00" in pred.explanation  # named as a weak hint
    # the band's countries are still ranked, for those who must always answer
    assert pred.candidates and pred.candidates[0].place.country_code == "JP"


def test_every_stage_is_reported(exif_locator):
    pred = exif_locator.locate(fixture("exif_gps.jpg"))
    stages = {s.name: s for s in pred.stages}
    assert list(stages) == ["load", "exif", "ocr", "langid", "clues", "retrieval", "vlm", "verify"]
    assert stages["ocr"].status == StageStatus.UNAVAILABLE and "turned off" in stages["ocr"].detail
    assert (
        stages["retrieval"].status == StageStatus.UNAVAILABLE
        and "image encoder" in stages["retrieval"].detail
    )
    assert stages["vlm"].status == StageStatus.UNAVAILABLE and "VLM endpoint" in stages["vlm"].detail
    assert "total" in pred.timings and pred.provenance.config_hash
    assert pred.provenance.packages["pillow"]


def test_prediction_round_trips_through_json(locator):
    pred = locator.locate(fixture("sign_fr_paris.jpg"))
    again = Prediction.model_validate_json(pred.model_dump_json())
    assert again == pred


def test_bytes_pil_and_api_entry_point(exif_locator, settings):
    data = fixture("exif_gps.jpg").read_bytes()
    a = exif_locator.locate(data)
    b = exif_locator.locate(Image.open(io.BytesIO(data)), name="photo")
    assert a.source == "<bytes>" and b.source == "photo"
    assert a.best.point == b.best.point
    c = locate(fixture("exif_gps.jpg"), settings=settings, ocr={"engine": "none"})
    assert c.best.point == a.best.point and c.stage("ocr").status == StageStatus.UNAVAILABLE


def test_damaged_pixels_keep_the_metadata(exif_locator):
    pred = exif_locator.locate(fixture("truncated_with_gps.jpg"))
    assert pred.basis == "exif-gps" and any("truncated" in w for w in pred.warnings)
    with pytest.raises(CorruptImageError, match="no metadata to fall back on"):
        exif_locator.locate(fixture("truncated.jpg"))


def test_batch_goes_on_after_a_bad_file(exif_locator):
    sources = [fixture("exif_gps.jpg"), fixture("not_an_image.jpg"), fixture("exif_gps_south_west.jpg")]
    results = list(exif_locator.locate_many(sources, workers=2))
    assert isinstance(results[0], Prediction) and isinstance(results[2], Prediction)
    assert isinstance(results[1], LocateError) and results[1].error_type == NotAnImageError.__name__
    assert results[2].best.point.lat < 0


def test_missing_ocr_engine_is_reported_not_raised(settings, gazetteer, monkeypatch):
    deps = build_deps(
        settings.with_overrides(ocr={"engine": "tesseract", "tesseract_cmd": "no-such-program"}),
        gazetteer=gazetteer,
    )
    pred = Locator(deps=deps).locate(fixture("sign_fr_paris.jpg"))
    ocr = pred.stage("ocr")
    assert ocr.status == StageStatus.UNAVAILABLE and "apt-get install tesseract-ocr" in ocr.detail
    assert pred.status == "insufficient_evidence"


def test_text_that_agrees_with_gps_is_noted(locator, tmp_path):
    # GPS at the Eiffel Tower and a sign naming Paris: the agreement is recorded for the analyst.
    import piexif

    img = Image.open(fixture("sign_fr_paris.jpg"))
    exif = piexif.dump(
        {
            "GPS": {
                piexif.GPSIFD.GPSLatitudeRef: b"N",
                piexif.GPSIFD.GPSLatitude: ((48, 1), (51, 1), (3013, 100)),
                piexif.GPSIFD.GPSLongitudeRef: b"E",
                piexif.GPSIFD.GPSLongitude: ((2, 1), (17, 1), (4012, 100)),
            }
        }
    )
    path = tmp_path / "agree.jpg"
    img.save(path, exif=exif)
    pred = locator.locate(path)
    check = next(e for e in pred.evidence if e.id == "check.gps-vs-text")
    assert "agree" in check.value and check.details["distance_km"] < 10
    assert not pred.warnings


def test_batch_names_sources_and_turns_a_bug_into_an_internal_error(exif_locator, monkeypatch):
    real = Locator.locate

    def buggy(self, source, *, name=None):
        if name == "bug":
            raise ZeroDivisionError("a bug")
        return real(self, source, name=name)

    monkeypatch.setattr(Locator, "locate", buggy)
    data = fixture("exif_gps.jpg").read_bytes()
    results = list(exif_locator.locate_many([data, data], names=["<stdin>", "bug"], on_done=lambda r: None))
    assert isinstance(results[0], Prediction) and results[0].source == "<stdin>"
    assert isinstance(results[1], LocateError) and results[1].error_type == "InternalError"
    assert results[1].source == "bug"
