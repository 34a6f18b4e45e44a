"""The tolerant VLM answer parser: JSON, repaired JSON, free text, and every way an answer is unusable."""

from __future__ import annotations

import json

import pytest

from geosleuth.agents.vlm.parse import RATIONALE_CHARS, parse_guess

PARIS = (48.8566, 2.3522)


def _coords(text: str, finish_reason: str | None = None) -> tuple[float, float]:
    sample = parse_guess(text, finish_reason)
    assert sample.guess is not None, sample.error
    return sample.guess.latitude, sample.guess.longitude


# --- strict JSON ------------------------------------------------------------------------------

FULL = {
    "clues_used": ["French street sign", "Haussmann facades"],
    "rationale": "Europe, France, Paris.",
    "continent": "Europe",
    "country": "France",
    "region": "Île-de-France",
    "city": "Paris",
    "latitude": 48.8566,
    "longitude": 2.3522,
    "radius_km": 25,
    "confidence": 0.7,
}


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(FULL),
        "  \n" + json.dumps(FULL, indent=2) + "\n",
        "Here is my answer:\n```json\n" + json.dumps(FULL) + "\n```\nHope that helps.",
        "```\n" + json.dumps(FULL) + "\n```",
        "My guess is {} no wait: " + json.dumps(FULL) + " -- done",
        'Notes {"seen": "a brace } in a string", "n": 1} then ' + json.dumps(FULL),
        '<think>{"latitude": 10.0, "longitude": 10.0}</think>\n' + json.dumps(FULL),
    ],
    ids=["whole", "whitespace", "fenced-json", "fenced-bare", "embedded", "string-brace", "after-think"],
)
def test_strict_json(text: str) -> None:
    sample = parse_guess(text, "stop", index=3)
    assert sample.parse == "json"
    assert sample.guess is not None and sample.notes == []
    assert sample.guess.model_dump() == {**FULL, "radius_km": 25.0}
    assert (sample.raw_text, sample.finish_reason, sample.index) == (text, "stop", 3)


def test_first_balanced_object_with_coordinates_wins() -> None:
    text = '{"country": "France"} and later {"latitude": 1.5, "longitude": 2.5} {"latitude": 3.5, "longitude": 4.5}'
    assert _coords(text) == (1.5, 2.5)


def test_json_missing_optional_fields_and_unknown_keys() -> None:
    sample = parse_guess('{"latitude": -33.8688, "longitude": 151.2093, "mood": "sure", "extra": [1, 2]}')
    assert sample.parse == "json" and sample.guess is not None
    assert sample.guess.clues_used == [] and sample.guess.rationale == ""
    assert (sample.guess.radius_km, sample.guess.confidence) == (None, None)  # not made up


# --- repaired JSON ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "note"),
    [
        ("{'latitude': 48.8566, 'longitude': 2.3522}", "converted single quotes to double quotes"),
        ('{"latitude": 48.8566, "longitude": 2.3522,}', "removed trailing commas"),
        ('{"latitude": 48.8566, // north\n "longitude": 2.3522}', "removed comments"),
        ('{"latitude": 48.8566, # north\n "longitude": 2.3522}', "removed comments"),
        ('{"latitude": 48.8566, /* c */ "longitude": 2.3522}', "removed comments"),
        ('{"latitude": 48.8566, "longitude": 2.3522, "city": None}', "read None as JSON null"),
        ('{"latitude": 48.8566, "longitude": 2.3522, "ok": True}', "read True as JSON true"),
        ("{latitude: 48.8566, longitude: 2.3522}", "quoted bare keys"),
        ("{“latitude”: 48.8566, “longitude”: 2.3522}", "replaced smart quotes"),
        ("{‘latitude’: 48.8566, ‘longitude’: 2.3522}", "replaced smart quotes"),
        ('{"lat": 48.8566, "lon": 2.3522}', "read latitude from key 'lat'"),
        ('{"Latitude": 48.8566, "LNG": 2.3522}', "read longitude from key 'lng'"),
        ('{"lat_deg": 48.8566, "long": 2.3522}', "read longitude from key 'long'"),
        (
            '{"coordinates": [48.8566, 2.3522]}',
            "read 'coordinates' [48.8566, 2.3522] as [latitude, longitude]",
        ),
        ('{"coords": "48.8566, 2.3522"}', "read 'coords' '48.8566, 2.3522' as [latitude, longitude]"),
        ('{"location": {"lat": 48.8566, "lon": 2.3522}}', "found coordinates nested under 'location'"),
        ('{"answer": {"latitude": 48.8566, "longitude": 2.3522}}', "found coordinates nested under 'answer'"),
        ('{"latitude": "48.8566", "longitude": "2.3522"}', "read latitude from the string '48.8566'"),
        ('{"latitude": "48.8566° N", "longitude": "2.3522 E"}', "read latitude from the string '48.8566° N'"),
    ],
)
def test_repaired_json(text: str, note: str) -> None:
    sample = parse_guess(text)
    assert sample.parse == "repaired-json", sample.error
    assert sample.guess is not None and (sample.guess.latitude, sample.guess.longitude) == PARIS
    assert note in sample.notes


def test_repairs_combined_with_fields() -> None:
    text = (
        "Sure! {'answer': {lat: '33.87 S', lng: '151.21° E', 'country': 'Australia',},"
        " confidence: '85%', radius: '50 km', clues: 'left-hand traffic', reasoning: None, # done\n}"
    )
    sample = parse_guess(text)
    assert sample.parse == "repaired-json" and sample.guess is not None
    g = sample.guess
    assert (g.latitude, g.longitude, g.country) == (-33.87, 151.21, "Australia")
    assert (g.confidence, g.radius_km, g.clues_used) == (0.85, 50.0, ["left-hand traffic"])


@pytest.mark.parametrize(
    ("extra", "confidence", "radius"),
    [
        ({"confidence": 85}, 0.85, None),
        ({"confidence": "85%"}, 0.85, None),
        ({"confidence": "0.3"}, 0.3, None),
        ({"confidence": "high"}, 0.8, None),
        ({"confidence": 150}, None, None),  # nonsense is ignored (with a note), not clamped
        ({"probability": 1}, 1.0, None),
        ({"radius": "50 km"}, None, 50.0),
        ({"radius_km": "10 miles"}, None, 16.09344),
        ({"radius_km": -5}, None, None),
        ({"uncertainty_km": 7}, None, 7.0),
    ],
)
def test_confidence_and_radius(
    extra: dict[str, object], confidence: float | None, radius: float | None
) -> None:
    sample = parse_guess(json.dumps({"lat": 10.5, "lon": 20.5, **extra}))
    assert sample.guess is not None, sample.error
    assert sample.guess.confidence == (None if confidence is None else pytest.approx(confidence))
    assert sample.guess.radius_km == (None if radius is None else pytest.approx(radius))


def test_ignored_values_are_noted() -> None:
    sample = parse_guess('{"latitude": 1.5, "longitude": 2.5, "confidence": 150, "radius_km": "far"}')
    assert sample.guess is not None
    assert "ignored confidence 150: not a usable number" in sample.notes
    assert "ignored radius_km 'far': not a usable number" in sample.notes


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ('{"latitude": "48.85° N", "longitude": "2.35 W"}', (48.85, -2.35)),
        ('{"latitude": "33.9 S", "longitude": "18.4 E"}', (-33.9, 18.4)),
        ('{"latitude": "34.6 South", "longitude": "58.4 West"}', (-34.6, -58.4)),
        ('{"latitude": "48°51\'24\\"N", "longitude": "2°21\'08\\"E"}', (48.856667, 2.352222)),
        ('{"latitude": -22.9, "longitude": -43.2}', (-22.9, -43.2)),
    ],
)
def test_numbers_written_as_strings(text: str, want: tuple[float, float]) -> None:
    assert _coords(text) == pytest.approx(want, abs=1e-5)


# --- free text --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Latitude: 48.8566\nLongitude: 2.3522", PARIS),
        ("lat 48.8566, lng 2.3522", PARIS),
        ("**Latitude:** 48.8566\n**Longitude:** 2.3522", PARIS),
        ("latitude = 48.8566; longitude = 2.3522", PARIS),
        ("The latitude is approximately 48.8566 and the longitude is about 2.3522.", PARIS),
        ("lat: 48, lon: 2", (48.0, 2.0)),  # labelled integers are fine
        ("48.8566, 2.3522", PARIS),
        ("It is at (48.8566, 2.3522).", PARIS),
        ("It is at 48.8566, 2.3522.", PARIS),
        ("48.8566° N, 2.3522° E", PARIS),
        ("48.8566N 2.3522E", PARIS),
        ("48.8566°N, 2.3522°W", (48.8566, -2.3522)),
        ("34.6037 S 58.3816 W", (-34.6037, -58.3816)),
        ("-34.6037, -58.3816", (-34.6037, -58.3816)),
        ("−34.6037, −58.3816", (-34.6037, -58.3816)),
        ("48°51'24\"N 2°21'08\"E", (48.856667, 2.352222)),
        ("48° 51' 24\" N, 2° 21' 08\" E", (48.856667, 2.352222)),
        ("48°51′24″N 2°21′08″E", (48.856667, 2.352222)),
        ("22°54′S 43°12′W", (-22.9, -43.2)),
    ],
)
def test_free_text_coordinates(text: str, want: tuple[float, float]) -> None:
    sample = parse_guess(text)
    assert sample.parse == "free-text", sample.error
    assert sample.guess is not None
    assert (sample.guess.latitude, sample.guess.longitude) == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("First 40.7128, -74.0060 (New York?). No: the signs are French. 48.8566, 2.3522", PARIS),
        ("Final answer: 48.8566, 2.3522. For comparison Lyon is 45.76, 4.84.", PARIS),
        ("Answer: 48.8566, 2.3522 (Lyon would be 45.76, 4.84)", PARIS),
        ("Coordinates: 48.8566, 2.3522\nNearby: 45.76, 4.84", PARIS),
        ("Lyon 45.76, 4.84 is too far south; therefore 48.8566, 2.3522 and not 50.1, 3.1", PARIS),
        (
            "Latitude: 45.76, longitude: 4.84 was my first thought.\nLatitude: 48.8566\nLongitude: 2.3522",
            PARIS,
        ),
    ],
)
def test_several_pairs_prefer_final_answer_else_last(text: str, want: tuple[float, float]) -> None:
    assert _coords(text) == pytest.approx(want)


def test_lon_first_only_when_hemisphere_letters_say_so() -> None:
    sample = parse_guess("2.3522° E, 48.8566° N")
    assert sample.guess is not None and (sample.guess.latitude, sample.guess.longitude) == PARIS
    assert any("longitude first" in n for n in sample.notes)
    # Without letters the order is taken as written: never swapped.
    assert _coords("2.3522, 48.8566") == (2.3522, 48.8566)


def test_free_text_fields_and_rationale() -> None:
    text = "Reasoning about the signs.\n**Country:** France\n- City: Paris\nRegion - Île-de-France\n48.8566, 2.3522"
    sample = parse_guess(text)
    assert sample.guess is not None
    assert (sample.guess.country, sample.guess.city, sample.guess.region) == (
        "France",
        "Paris",
        "Île-de-France",
    )
    assert sample.guess.rationale == text
    assert parse_guess("country-level clues only. 48.8566, 2.3522").guess.country is None  # type: ignore[union-attr]
    long = "x" * 5000 + " 48.8566, 2.3522"
    assert len(parse_guess(long).guess.rationale) == RATIONALE_CHARS  # type: ignore[union-attr]


# --- unusable answers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I cannot tell where this is.",
        "In 1998, 3 people moved here.",
        "Call +33 1 42 68 53 00 or 555-123-4567.",
        "The shop opens at 12:30, closes at 18:45.",
        "Built with version 2.5 of the tool.",
        "On 12.05.2023 it was 3.5 km away.",
        "Route 66, 12 km north.",
        '{"latitude": 48.85, "longitude": ',  # cut off JSON: no longitude anywhere
        '{"latitude": 48.85, "longitude": }}} garbage [[',
        '{"country": "France", "city": "Paris"}',  # JSON without coordinates
        '{"lat": "somewhere", "lon": 2.35}',
        '{"latitude": null, "longitude": null}',
        '{"latitude": true, "longitude": false}',
        "latitude: north-ish, longitude: unknown",
    ],
)
def test_no_coordinates(text: str) -> None:
    sample = parse_guess(text)
    assert sample.guess is None and sample.parse == "failed"
    assert sample.error_type == "VLMUnusableOutputError"
    assert sample.raw_text == text and sample.error


def test_no_coordinates_message() -> None:
    sample = parse_guess("A European city, I think.")
    assert sample.error is not None and "no coordinates were found" in sample.error


def test_non_numeric_value_is_named() -> None:
    sample = parse_guess('{"lat": "somewhere", "lon": 2.35}')
    assert sample.error is not None and "'somewhere'" in sample.error and "not a number" in sample.error


@pytest.mark.parametrize(
    ("text", "value", "valid"),
    [
        ('{"latitude": 123.4, "longitude": 2.35}', "latitude 123.4", "-90 to 90"),
        ('{"latitude": 48.85, "longitude": -200.5}', "longitude -200.5", "-180 to 180"),
        ('{"coordinates": [2.35, 190.0]}', "longitude 190", "-180 to 180"),
        ("Latitude: 123.4\nLongitude: 2.35", "latitude 123.4", "-90 to 90"),
        ("95.5° N, 2.35° E", "latitude 95.5", "-90 to 90"),
    ],
)
def test_out_of_range_is_unusable_not_clamped(text: str, value: str, valid: str) -> None:
    sample = parse_guess(text)
    assert sample.guess is None and sample.parse == "failed"
    assert sample.error_type == "VLMUnusableOutputError"
    assert sample.error is not None and value in sample.error and valid in sample.error


@pytest.mark.parametrize(
    "text", ['{"latitude": NaN, "longitude": 2.35}', '{"latitude": 48.85, "longitude": Infinity}']
)
def test_non_finite_is_unusable(text: str) -> None:
    sample = parse_guess(text)
    assert sample.guess is None and sample.error_type == "VLMUnusableOutputError"
    assert sample.error is not None and "finite" in sample.error


@pytest.mark.parametrize(
    "text",
    [
        '{"latitude": 48.8566, "longitude": 2.3522}',  # the whole answer is there, still cut off
        '{"clues_used": ["French signs"], "rationale": "Paris because',
        "Latitude: 48.85, longitude: 2.35, so it might be",
    ],
)
def test_length_is_truncated_even_with_visible_coordinates(text: str) -> None:
    sample = parse_guess(text, finish_reason="length", index=2)
    assert sample.guess is None and sample.parse == "failed"
    assert sample.error_type == "VLMTruncatedError"
    assert sample.error is not None and "token limit" in sample.error and "max_tokens" in sample.error
    assert (sample.raw_text, sample.finish_reason, sample.index) == (text, "length", 2)


@pytest.mark.parametrize("text", ['{"latitude": 0, "longitude": 0}', "Latitude: 0.0, longitude: 0.0"])
def test_null_island_parses_with_a_note(text: str) -> None:
    sample = parse_guess(text)
    assert sample.guess is not None and (sample.guess.latitude, sample.guess.longitude) == (0.0, 0.0)
    assert "answer is (0, 0), 'Null Island' in the Gulf of Guinea; often a placeholder" in sample.notes


def test_failure_never_becomes_null_island() -> None:
    for text in ["", "nothing", '{"latitude": "?", "longitude": "?"}', "{{{{"]:
        assert parse_guess(text).guess is None


def test_huge_and_hostile_input_does_not_raise() -> None:
    for text in ["{" * 5000, '"' * 3000, "}" * 100 + "{'a': '" * 200, "°" * 1000 + "N" * 10]:
        assert parse_guess(text).guess is None


@pytest.mark.parametrize("text", ["[" * 5000, '{"a":' * 3000 + "1" + "}" * 3000])
def test_json_nested_past_the_recursion_limit_is_unusable_not_a_parser_error(text):
    sample = parse_guess(text)
    assert sample.guess is None and sample.error_type == "VLMUnusableOutputError"
    assert not sample.error.startswith("parser error")  # found by the fuzzer (RecursionError)
