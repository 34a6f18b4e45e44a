"""What a person reads: plain words in the default text (the scores stay in --json and --trace),
numbers that agree with each other, no language named on a guess too weak to mean anything, no ✓
on an ignored GPS point, each region said once, and the text OCR read shown everywhere."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from conftest import fixture
from geosleuth.agents.pipeline import Locator, build_deps
from geosleuth.cli.render import prediction_lines
from geosleuth.schemas import Prediction
from geosleuth.testing.ocr import ScriptedOCR
from geosleuth.tools.langid import LanguageGuess

SCORE_PAIR = re.compile(r"[+-]\d+\.\d+\s+vs\s+[+-]?\d")  # "-0.0 vs -3.8", "(+0.5 vs -1.0)"


def _text(pred: Prediction, *, trace: bool = False) -> str:
    return "\n".join(prediction_lines(pred, trace=trace))


@pytest.fixture(scope="module")
def predictions(locator) -> dict[str, Prediction]:
    names = ["sign_fr_paris.jpg", "sign_injection.jpg", "sign_de_berlin.jpg", "exif_gps_vs_text.jpg"]
    return {n: locator.locate(fixture(n)) for n in names}


def test_the_default_text_has_no_scores(predictions) -> None:
    for name, pred in predictions.items():
        text = _text(pred)
        assert not SCORE_PAIR.search(text), (name, SCORE_PAIR.search(text))
        assert "p=" not in pred.explanation, name
        # the scores are still there for whoever asks
        assert any(c.signals for c in pred.candidates), name


def test_the_trace_keeps_the_scores(locator) -> None:
    pred = locator.locate(fixture("sign_fr_paris.jpg"))
    verify = next(s for s in pred.trace if s.node == "verify")
    assert SCORE_PAIR.search(verify.outputs["scores"])
    assert SCORE_PAIR.search(_text(pred, trace=True))


def test_why_the_runner_up_lost_is_said_in_words(predictions) -> None:
    pred = predictions["sign_fr_paris.jpg"]
    runner_up = pred.candidates[1]
    assert runner_up.label in pred.explanation  # named, with the reasons after it
    assert "because" in pred.explanation.split(runner_up.label, 1)[1]


def test_too_little_evidence_quotes_the_probability_it_tested(predictions, settings) -> None:
    pred = predictions["sign_injection.jpg"]
    assert pred.status == "insufficient_evidence"
    tested = f"{pred.candidates[0].probability:.2f}"
    threshold = f"{settings.min_probability:.2f}"
    assert tested in pred.explanation and threshold in pred.explanation
    # countries are named without probabilities that could read as clearing the threshold
    # (the old text said "Brazil (0.26) ... too uncertain (threshold 0.25)" for a place at 0.13)
    assert not re.search(r"(India|China|United States) \(\d\.\d\d\)", pred.explanation)


class _WeakLanguage:
    """A language identifier that is never sure: Uzbek at 0.18 for anything."""

    name = "weak"

    def identify(self, texts):  # type: ignore[no-untyped-def]
        return [[LanguageGuess(code="uz", name="Uzbek", confidence=0.18)] for _ in texts]

    def version(self) -> str:
        return "weak"


def test_a_weak_language_guess_is_not_named(settings, gazetteer) -> None:
    deps = build_deps(settings, gazetteer=gazetteer)
    deps = dataclasses.replace(deps, ocr=ScriptedOCR("Boulangerie du Centre"), langid=_WeakLanguage())
    pred = Locator(deps=deps).locate(fixture("blank.jpg"))
    text = _text(pred)
    assert "Uzbek" not in text and "unclear" in pred.stage("langid").detail
    assert any("language is unclear" in m for m in pred.missing)
    assert not any(e.kind == "language" for e in pred.evidence)
    # the guess is kept for the trace and the JSON
    step = next(s for s in pred.trace if s.node == "evidence")
    assert step.outputs["language_guesses"][0]["language"] == "Uzbek"


def test_an_ignored_gps_point_has_no_tick(settings, gazetteer) -> None:
    deps = build_deps(
        settings.with_overrides(use_exif_gps=False, ocr={"engine": "none"}), gazetteer=gazetteer
    )
    pred = Locator(deps=deps).locate(fixture("exif_gps.jpg"))
    gps = next(e for e in pred.evidence if e.id == "exif.gps")
    assert gps.details["ignored"] is True and "ignore" in (gps.reason or "")
    line = next(ln for ln in prediction_lines(pred) if gps.value.split(" (")[0] in ln)
    assert "✓" not in line


def test_the_same_region_is_said_once(predictions) -> None:
    pred = predictions["sign_fr_paris.jpg"]
    assert len(pred.regions) == 3 and all(r.circles == pred.regions[0].circles for r in pred.regions)
    line = next(ln for ln in prediction_lines(pred) if "Regions" in ln)
    assert line.count("within") == 1 and "50%" in line and "95%" in line


def test_the_text_read_is_shown_with_its_confidence(predictions) -> None:
    pred = predictions["sign_de_berlin.jpg"]
    assert pred.text_lines
    text = _text(pred)
    for ln in pred.text_lines:
        assert ln.text in text and f"({ln.confidence:.2f})" in text
    data = json.loads(pred.model_dump_json())
    assert [ln["text"] for ln in data["text_lines"]] == [ln.text for ln in pred.text_lines]
    assert all("confidence" in ln for ln in data["text_lines"])
    step = next(s for s in pred.trace if s.node == "evidence")
    assert [ln["text"] for ln in step.outputs["text_lines"]] == [ln.text for ln in pred.text_lines]
