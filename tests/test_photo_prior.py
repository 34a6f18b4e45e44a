"""The photo prior (data/photo_prior.json), the clock's likelihood, and language and script clues
alone: what each does to the fusion's country posterior."""

import json
from datetime import datetime

import pytest

from conftest import fixture
from geosleuth.agents.fusion import HAND_WEIGHTS, EvidenceFusion, FusionWeights, photo_prior
from geosleuth.schemas import CandidateSource, Evidence, EvidenceKind
from geosleuth.tools.exif import ExifReport


def ev(i, kind, weight, countries, **kw):
    return Evidence(id=i, tool="test", kind=kind, value=i, weight=weight, countries=countries, **kw)


@pytest.fixture(scope="module")
def photos(gazetteer, settings):
    return EvidenceFusion(gazetteer, settings.with_overrides(fusion={"prior": "photos", "weights": "hand"}))


@pytest.fixture(scope="module")
def population(gazetteer, settings):
    return EvidenceFusion(
        gazetteer, settings.with_overrides(fusion={"prior": "population", "weights": "hand"})
    )


def top(probs, n=3):
    return [c for c, _ in sorted(probs.items(), key=lambda kv: -kv[1])[:n]]


def test_the_table_is_the_whole_gallery_with_its_provenance():
    table = photo_prior()
    counts = {c: v["points"] for c, v in table["countries"].items()}
    assert sum(counts.values()) == table["total_points"] == 100_000
    assert top(counts, 4) == ["US", "GB", "ES", "FR"]  # Flickr's MP-16: the US, then western Europe
    assert (
        "GeoCLIP" in table["source"] and "MP-16" in table["source"] and "build_photo_prior" in table["method"]
    )
    fb = table["fallback"]
    assert fb["within_25_km"] < fb["within_200_km"] < fb["within_750_km"] < fb["within_2500_km"] < 1


def test_each_country_has_its_best_spot_inside_it(gazetteer):
    from geosleuth.schemas import LatLon

    rows = photo_prior()["countries"]
    big = [c for c, v in rows.items() if v["points"] >= 200]
    places = gazetteer.reverse([LatLon(lat=rows[c]["spot_lat"], lon=rows[c]["spot_lon"]) for c in big])
    inside = sum(p.country_code == c for p, c in zip(places, big, strict=True))
    assert inside >= 0.95 * len(big)  # a few spots of countries shaped like Chile or Croatia may miss
    assert all(25 <= rows[c]["spot_r80_km"] < 5000 for c in big)


def test_the_photo_prior_puts_photos_where_they_are_taken(photos, population):
    p = photos.country_posterior([])[0]
    q = population.country_posterior([])[0]
    assert top(p, 1) == ["US"] and top(q, 2) == ["CN", "IN"]
    assert p["NL"] > p["CN"] and q["CN"] > q["NL"]
    assert min(p.values()) > 0  # half a gallery point each: unlikely, never impossible


def test_a_clock_outside_the_offsets_longitudes_leaves_almost_nothing(gazetteer, photos, population):
    # a Dutch sign (weak: a few words) and a camera clock at UTC+02:00 in May (CEST)
    match = gazetteer.where_offset(datetime(2024, 5, 14, 12, 0), 120)
    offset = ev(
        "exif.offset",
        EvidenceKind.UTC_OFFSET,
        0.5,
        {c: round(min(1, s), 4) for c, s in match.countries.items()},
    )
    lang = ev("langid.language", EvidenceKind.LANGUAGE, 0.15, gazetteer.language_countries("nl"))
    for fusion in (photos, population):
        p = fusion.country_posterior([offset, lang])[0]
        assert top(p, 1) == ["NL"]
        # China is far outside UTC+2's longitudes: the wrong-clock share only
        assert p["CN"] < 0.01 * p["NL"] and p["CN"] < 0.005
    p = population.country_posterior([offset])[0]
    assert p["CN"] < 0.05 * max(p["DE"], p["EG"], p["ZA"])


@pytest.mark.parametrize(
    ("lang", "country"), [("da", "DK"), ("nl", "NL"), ("sv", "SE"), ("ca", "ES"), ("pl", "PL")]
)
def test_a_language_alone_names_its_country(gazetteer, photos, lang, country):
    # what clues.py makes of a CLD2 guess at confidence 0.8 on 30 letters: weight 0.48
    e = ev("langid.language", EvidenceKind.LANGUAGE, 0.48, gazetteer.language_countries(lang))
    result = photos.fuse([e], [], ExifReport())
    assert result.candidates[0].place.country_code == country
    assert top(result.country_probabilities, 1) == [country]


@pytest.mark.parametrize(
    ("scripts", "country"),
    [
        ({"Hang", "Kore"}, "KR"),
        ({"Thai"}, "TH"),
        ({"Hebr"}, "IL"),
        ({"Grek"}, "GR"),
        ({"Geor"}, "GE"),
        ({"Armn"}, "AM"),
    ],
)
def test_a_script_alone_narrows_the_countries(gazetteer, photos, scripts, country):
    prior = photos.country_posterior([])[0]
    e = ev("langid.script", EvidenceKind.SCRIPT, 0.7, gazetteer.script_countries(scripts))
    p = photos.country_posterior([e])[0]
    # a tempered floor: 0.001 ** 0.7, the script's country ~125x likelier against the rest
    odds = (p[country] / p["US"]) / (prior[country] / prior["US"])
    assert 100 < odds < 150 and country in top(p, 3)


def test_weights_scale_clue_kinds_and_the_prior(gazetteer, settings):
    e = ev("langid.language", EvidenceKind.LANGUAGE, 0.3, gazetteer.language_countries("da"))
    s = settings.with_overrides(fusion={"prior": "photos"})
    hand = EvidenceFusion(gazetteer, s, HAND_WEIGHTS).country_posterior([e])[0]["DK"]
    louder = EvidenceFusion(gazetteer, s, FusionWeights(kind_scale={"language": 2.0})).country_posterior([e])[
        0
    ]["DK"]
    flat = EvidenceFusion(gazetteer, s, FusionWeights(prior_power=0.0)).country_posterior([])[0]
    assert hand < louder
    assert max(flat.values()) == pytest.approx(min(flat.values()))  # power 0: every country alike


def test_the_fitted_weights_file_is_what_fusion_loads(gazetteer, settings):
    from importlib.resources import files

    res = files("geosleuth.data").joinpath("fusion_weights.json")
    if not res.is_file():
        pytest.skip("no fitted fusion weights shipped (scripts/fit_fusion.py --write makes them)")
    data = json.loads(res.read_text())
    fusion = EvidenceFusion(gazetteer, settings.with_overrides(fusion={"weights": "fitted"}))
    assert fusion.weights.prior_power == data["prior_power"]
    assert fusion.weights.kind_scale == data["kind_scale"]


def test_a_photo_without_evidence_ranks_the_prior_guess_but_does_not_answer(settings):
    from geosleuth.agents.pipeline import Locator

    pred = Locator(settings.with_overrides(ocr={"engine": "none"})).locate(fixture("blank.jpg"))
    assert pred.status == "insufficient_evidence" and pred.best is None
    assert pred.candidates[0].source == CandidateSource.PRIOR and pred.candidates[0].probability < 0.25
    # even a user who accepts any probability gets no answer from the prior alone
    loose = Locator(settings.with_overrides(ocr={"engine": "none"}, min_probability=0.001))
    assert loose.locate(fixture("blank.jpg")).status == "insufficient_evidence"


def test_english_text_is_a_lingua_franca_and_danish_text_names_denmark(gazetteer, photos):
    prior = photos.country_posterior([])[0]

    def odds(lang, a, b, weight=0.5):
        e = ev("langid.language", EvidenceKind.LANGUAGE, weight, gazetteer.language_countries(lang))
        e.details["language"] = lang
        p = photos.country_posterior([e])[0]
        return (p[a] / p[b]) / (prior[a] / prior[b])

    # English signs are everywhere: at most 5x between the US and North Korea, however sure
    assert 1 < odds("en", "US", "KP") < 5 and odds("en", "US", "KP", 0.99) < 5.01
    # a language seldom written abroad is strong evidence for where it is spoken
    assert odds("da", "DK", "DE") > 50
    # an unsure identification says little
    assert odds("da", "DK", "DE", 0.05) < odds("da", "DK", "DE") / 5


def test_a_place_name_with_english_around_it_points_to_its_country(gazetteer, photos):
    place = ev("text.place.1", EvidenceKind.PLACE_NAME, 0.88, {"KP": 1.0})
    lang = ev("langid.language", EvidenceKind.LANGUAGE, 0.24, gazetteer.language_countries("en"))
    prior = photos.country_posterior([])[0]
    p = photos.country_posterior([place, lang])[0]
    # from rank 160 of the prior (11 gallery photos of 100K) to the top three: the
    # English around the name counts little against it
    assert prior["KP"] < 0.002 and "KP" in top(p, 3)
    assert p["KP"] > 0.7 * photos.country_posterior([place])[0]["KP"]


@pytest.mark.parametrize(
    ("text", "country"),
    [("Openingstijden maandag tot vrijdag", "NL"), ("Godziny otwarcia od poniedziałku do piątku", "PL")],
)
def test_a_sign_whose_only_clue_is_its_language_names_its_country(settings, gazetteer, text, country):
    import dataclasses

    from PIL import Image

    from geosleuth.agents.pipeline import Locator, build_deps
    from geosleuth.testing.ocr import ScriptedOCR

    deps = dataclasses.replace(build_deps(settings, gazetteer=gazetteer), ocr=ScriptedOCR(text))
    pred = Locator(deps=deps).locate(Image.new("RGB", (640, 360), (120, 120, 115)), name="sign")
    lang = next(e for e in pred.evidence if e.kind == EvidenceKind.LANGUAGE)
    # 30+ letters identified surely: the mixture trusts the identification, not the tempered weight
    assert lang.details["trust"] > 0.8 > lang.weight
    assert pred.status == "located" and pred.best.place.country_code == country


def test_a_short_text_identification_is_trusted_little(settings, gazetteer):
    import dataclasses

    from PIL import Image

    from geosleuth.agents.pipeline import Locator, build_deps
    from geosleuth.testing.ocr import ScriptedOCR

    deps = dataclasses.replace(build_deps(settings, gazetteer=gazetteer), ocr=ScriptedOCR("Tokyo Station"))
    pred = Locator(deps=deps).locate(Image.new("RGB", (640, 360), (120, 120, 115)), name="sign")
    lang = [e for e in pred.evidence if e.kind == EvidenceKind.LANGUAGE]
    assert all(e.details["trust"] < 0.25 for e in lang)  # 12 letters: CLD2's guess is often wrong
    assert pred.best is not None and pred.best.place.country_code == "JP"
