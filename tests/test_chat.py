"""Conversations without a VLM: the rules' intents, hints as evidence, several photos, saving."""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path

import pytest
from tests.conftest import fixture

from geosleuth.chat import Conversation, EngineAnswer, HintStatus
from geosleuth.chat.hints import parse_hint, resolve_place
from geosleuth.chat.rules import intent_of, mentioned_photos
from geosleuth.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "rue-de-rivoli.jpg"


@pytest.fixture(scope="module")
def paris(locator):  # type: ignore[no-untyped-def]
    """One located photo of a Paris street sign; each test gets a fresh conversation over it."""
    conv = Conversation(locator, [EXAMPLE])
    return conv


def fresh(conv: Conversation) -> Conversation:
    """A new conversation over the same located photo (the planner state is copied by relocating)."""
    return Conversation(conv.locator, [EXAMPLE])


def evidence_ids(conv: Conversation, photo: int = 1) -> set[str]:
    return {e.id for e in conv.photo(photo).prediction.evidence}


# --- intents ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "intent"),
    [
        ("Which country?", "where"),
        ("Where was this taken?", "where"),
        ("How sure are you?", "how_sure"),
        ("Why?", "why"),
        ("Why Portugal and not Spain?", "why_not"),
        ("Could it be Porto?", "could_be"),
        ("Is this in Belgium?", "could_be"),
        ("What is the probability of Spain?", "could_be"),
        ("What are the chances that it is in Italy?", "could_be"),
        ("What does the sign say?", "text"),
        ("What are the alternatives?", "alternatives"),
        ("What would help?", "missing"),
        ("Were these taken in the same place?", "compare"),
        ("Give me a joint answer", "joint"),
        ("Describe the weather", "visual"),
        ("asdf qwerty", None),
    ],
)
def test_intents(question: str, intent: str | None) -> None:
    assert intent_of(question) == intent


def test_which_country_cites_the_domain_and_postcode(paris: Conversation) -> None:
    turn = paris.ask("Which country?")
    assert turn.intent == "where" and turn.engine == "rules"
    assert turn.prediction is not None and turn.prediction.country_code == "FR"
    assert {"text.domain.1", "text.postcode.1"} <= set(turn.cited_evidence)
    assert set(turn.cited_evidence) <= evidence_ids(paris)
    assert turn.dropped_citations == []
    assert "France" in turn.answer


def test_could_it_be_belgium_is_no_and_says_why(paris: Conversation) -> None:
    turn = paris.ask("Could it be Belgium?")
    assert turn.intent == "could_be"
    assert [c.name for c in turn.tool_calls] == ["check_place"]
    assert turn.tool_calls[0].error is None
    assert turn.check is not None
    assert turn.check.country_code == "BE" and turn.check.verdict == "very_unlikely"
    assert turn.check.probability < 0.02
    assert "text.domain.1" in turn.cited_evidence  # .fr argues against Belgium
    assert turn.prediction is not None and turn.prediction.country_code == "FR"  # asking changes nothing


def test_could_it_be_the_answer_itself(paris: Conversation) -> None:
    turn = paris.ask("Could it be Paris?")
    assert turn.check is not None and turn.check.verdict == "best"


def test_why_not_names_the_place(paris: Conversation) -> None:
    turn = paris.ask("Why France and not Spain?")
    assert turn.intent == "why_not"
    assert turn.check is not None and turn.check.country_code == "ES"
    assert turn.check.verdict in ("unlikely", "very_unlikely")


def test_unknown_place_is_said_plainly(paris: Conversation) -> None:
    turn = paris.ask("Could it be Xyzzyqwertia?")
    assert turn.intent == "could_be" and turn.tool_calls == [] and turn.check is None
    assert "Xyzzyqwertia" in turn.answer


def test_how_sure_and_the_regions(paris: Conversation) -> None:
    turn = paris.ask("How sure are you?")
    assert turn.intent == "how_sure"
    assert turn.prediction is not None and turn.prediction.probability > 0.9
    assert turn.answer.count("within 22 km") == 1  # equal regions are said once
    assert set(turn.cited_evidence) <= evidence_ids(paris)


def test_text_quotes_what_ocr_read(paris: Conversation) -> None:
    turn = paris.ask("What does the sign say?")
    assert turn.intent == "text"
    lines = paris.photo(1).prediction.text_lines
    assert lines and all(repr(ln.text) in turn.answer for ln in lines)
    assert "text.place.2" in turn.cited_evidence


def test_why_goes_coarse_to_fine(paris: Conversation) -> None:
    turn = paris.ask("Why?")
    assert turn.intent == "why"
    assert turn.answer.index("continent") < turn.answer.index("country") < turn.answer.index("city")
    assert "text.place.1" in turn.cited_evidence  # 'Rivoli' points elsewhere and is said


def test_alternatives_and_missing(paris: Conversation) -> None:
    alt = paris.ask("What are the alternatives?")
    assert alt.intent == "alternatives" and "somewhere in France" in alt.answer
    missing = paris.ask("What would help?")
    assert missing.intent == "missing" and "GPS metadata" in missing.answer


def test_visual_questions_need_a_vlm(paris: Conversation) -> None:
    turn = paris.ask("What colour is the sky?")
    assert turn.intent == "visual" and "VLM" in turn.answer and turn.cited_evidence == []


def test_unknown_question_says_i_dont_know(paris: Conversation) -> None:
    turn = paris.ask("asdf qwerty")
    assert turn.intent == "unknown" and turn.answer.startswith("I don't know")


def test_no_evidence_photo_says_so(locator) -> None:  # type: ignore[no-untyped-def]
    conv = Conversation(locator, [fixture("blank.jpg")])
    turn = conv.ask("Where was this taken?")
    assert turn.prediction is not None and turn.prediction.status == "insufficient_evidence"
    assert turn.answer.startswith("I don't know")
    assert conv.ask("How sure are you?").answer.startswith("Not sure")


def test_bad_questions_are_refused(paris: Conversation) -> None:
    n = len(paris.turns)
    for bad in ["", "   ", "x" * 5000]:
        with pytest.raises(ConfigError):
            paris.ask(bad)
    assert len(paris.turns) == n


def test_turn_numbers_and_memory(locator) -> None:  # type: ignore[no-untyped-def]
    conv = Conversation(locator, [EXAMPLE])
    a, b = conv.ask("Which country?"), conv.ask("How sure are you?")
    assert (a.index, b.index) == (1, 2) and conv.turns == [a, b]


# --- citations ------------------------------------------------------------------------------------


class Scripted:
    """An answering engine that says what it is told (to test the conversation's checks)."""

    name = "vlm"

    def __init__(self, text: str, cited: list[str] | None = None) -> None:
        self.text, self.cited = text, cited or []

    def respond(self, question, conversation, tools) -> Generator[str, None, EngineAnswer]:  # type: ignore[no-untyped-def]
        for piece in self.text.split(" "):
            yield piece + " "
        return EngineAnswer(text=self.text, cited=self.cited)


def test_made_up_citations_are_dropped_and_said(paris: Conversation) -> None:
    conv = Conversation(
        paris.locator,
        photos=paris.photos,
        engine=Scripted("It is Paris [text.place.2] because of [text.place.99].", ["exif.nothing"]),
    )
    turn = conv.ask("Where?")
    assert turn.engine == "vlm"
    assert turn.cited_evidence == ["text.place.2"]
    assert set(turn.dropped_citations) == {"text.place.99", "exif.nothing"}
    assert "text.place.99" in turn.answer.split("Dropped")[1]


def test_stream_yields_pieces_then_the_turn(paris: Conversation) -> None:
    conv = Conversation(paris.locator, photos=paris.photos, engine=Scripted("one two three [text.place.2]"))
    items = list(conv.stream("Where?"))
    *pieces, turn = items
    assert len(pieces) >= 3 and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces).strip() == turn.answer.strip()  # type: ignore[union-attr]


def test_closing_the_stream_cancels_the_answer(paris: Conversation) -> None:
    conv = Conversation(paris.locator, photos=paris.photos, engine=Scripted("one two three"))
    stream = conv.stream("Where?")
    assert isinstance(next(stream), str)
    stream.close()
    assert conv.turns == []
    assert conv.ask("Where?").index == 1  # the conversation goes on


def test_engine_failure_falls_back_to_rules(paris: Conversation) -> None:
    from geosleuth.errors import VLMConnectionError

    class Down:
        name = "vlm"

        def respond(self, question, conversation, tools):  # type: ignore[no-untyped-def]
            raise VLMConnectionError("http://127.0.0.1:9 refused the connection")
            yield ""  # pragma: no cover

    conv = Conversation(paris.locator, photos=paris.photos, engine=Down())
    turn = conv.ask("Which country?")
    assert turn.engine == "rules" and turn.error is not None and "VLMConnectionError" in turn.error
    assert "text.domain.1" in turn.cited_evidence
    assert conv.ask("How sure?").index == 2


# --- hints ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("it was taken in Portugal", "country", "PT"),
        ("This is Porto", "place", "PT"),
        ("I know it was taken in Lisbon.", "place", "PT"),
        ("the photo is from the Netherlands", "country", "NL"),
        ("it was taken in summer 2019", "date", 2019),
        ("it was taken near the sea", "feature", "near the sea"),
    ],
)
def test_hints_are_understood(gazetteer, text: str, kind: str, value: object) -> None:  # type: ignore[no-untyped-def]
    h = parse_hint(gazetteer, text)
    assert h is not None and h.kind == kind
    got = h.resolved.country_code if h.resolved else h.year if kind == "date" else h.surface
    assert got == value


@pytest.mark.parametrize(
    "text", ["Could it be Porto?", "is this Porto", "Where was it taken?", "Which country?"]
)
def test_questions_are_not_hints(gazetteer, text: str) -> None:  # type: ignore[no-untyped-def]
    assert parse_hint(gazetteer, text) is None


def test_resolve_country_and_place(gazetteer) -> None:  # type: ignore[no-untyped-def]
    assert resolve_place(gazetteer, "Belgium").country_code == "BE"  # type: ignore[union-attr]
    porto = resolve_place(gazetteer, "Porto, Portugal")
    assert porto is not None and porto.place is not None and porto.country_code == "PT"
    assert resolve_place(gazetteer, "Xyzzyqwertia") is None


def test_conflicting_hint_is_named_then_insisted(locator) -> None:  # type: ignore[no-untyped-def]
    conv = Conversation(locator, [EXAMPLE])
    turn = conv.ask("it was taken in Lisbon")
    [hint] = turn.hints
    assert hint.status == HintStatus.CONFLICT and hint.id == "hint.1" and hint.country_code == "PT"
    assert {"text.domain.1", "text.postcode.1"} <= set(hint.conflicting_evidence)
    assert turn.ranking == []  # not applied
    assert turn.prediction is not None and turn.prediction.country_code == "FR"
    assert "hint.1" not in evidence_ids(conv)
    assert set(hint.conflicting_evidence) <= set(turn.cited_evidence)

    insisted = conv.ask("trust my hint")
    assert insisted.hints[0].status == HintStatus.INSISTED
    assert insisted.prediction is not None and insisted.prediction.country_code == "PT"
    [change] = insisted.ranking
    assert change.before[0].label.startswith("Paris") and change.after[0].label.startswith("Lisbon")
    ev = conv.photo(1).evidence("hint.1")
    assert ev is not None and ev.tool == "user" and ev.details["insisted"] is True
    assert ev.details["conflicting_evidence"] == hint.conflicting_evidence


def test_agreeing_hint_is_applied(locator) -> None:  # type: ignore[no-untyped-def]
    conv = Conversation(locator, [EXAMPLE])
    turn = conv.ask("it was taken in France")
    [hint] = turn.hints
    assert hint.status == HintStatus.APPLIED
    [change] = turn.ranking
    assert change.after[0].probability >= change.before[0].probability - 1e-6
    assert conv.photo(1).evidence("hint.1") is not None
    assert "hint.1" in turn.cited_evidence


def test_hint_locates_a_photo_without_evidence(locator) -> None:  # type: ignore[no-untyped-def]
    conv = Conversation(locator, [fixture("blank.jpg")])
    turn = conv.ask("this is Porto")
    assert turn.hints[0].status == HintStatus.APPLIED
    assert turn.prediction is not None and turn.prediction.status == "located"
    assert turn.prediction.country_code == "PT"
    best = conv.photo(1).prediction.best
    assert best is not None and best.evidence_ids[0] == "hint.1" and "hint" in best.label
    where = conv.ask("where?")
    assert where.cited_evidence == ["hint.1"]


def test_gps_conflict_needs_insisting(locator) -> None:  # type: ignore[no-untyped-def]
    conv = Conversation(locator, [fixture("exif_gps.jpg")])  # GPS at the Eiffel tower
    turn = conv.ask("it was taken in Tokyo")
    assert turn.hints[0].status == HintStatus.CONFLICT
    assert turn.hints[0].conflicting_evidence == ["exif.gps"]
    assert turn.prediction is not None and turn.prediction.country_code == "FR"
    after = conv.ask("I insist")
    assert after.prediction is not None and after.prediction.country_code == "JP"
    gps = conv.photo(1).evidence("exif.gps")
    assert gps is not None and not gps.usable and "hint.1" in (gps.reason or "")


def test_date_and_feature_hints_are_recorded(locator) -> None:  # type: ignore[no-untyped-def]
    conv = Conversation(locator, [EXAMPLE])  # the camera's clock says 2024
    date = conv.ask("it was taken in summer 2019")
    [hint] = date.hints
    assert hint.status == HintStatus.RECORDED and hint.year == 2019
    assert "exif.time" in date.cited_evidence and "2024" in date.answer
    assert date.prediction is not None and date.prediction.country_code == "FR"
    sea = conv.ask("it was taken near the sea")
    assert sea.hints[0].status == HintStatus.RECORDED and sea.hints[0].kind == "feature"
    ev = conv.photo(1).evidence("hint.2")
    assert ev is not None and ev.weight == 0


# --- several photos -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two(locator):  # type: ignore[no-untyped-def]
    return Conversation(locator, [EXAMPLE, fixture("sign_de_berlin.jpg")])


def test_mentioned_photos() -> None:
    assert mentioned_photos("what about photo 2?", 3) == [2]
    assert mentioned_photos("and the second photo?", 3) == [2]
    assert mentioned_photos("where?", 3) == []
    assert mentioned_photos("photo 9", 3) == []


def test_same_place_compares_the_photos(two: Conversation) -> None:
    turn = two.ask("Were these taken in the same place?")
    assert turn.intent == "compare"
    assert [p.country_code for p in turn.photos] == ["FR", "DE"]
    assert any(c.startswith("1:") for c in turn.cited_evidence)
    assert any(c.startswith("2:") for c in turn.cited_evidence)
    assert turn.dropped_citations == []
    assert "different places" in turn.answer


def test_question_about_one_photo(two: Conversation) -> None:
    turn = two.ask("Which country is photo 2?")
    assert turn.prediction is not None and turn.prediction.photo == 2 and turn.prediction.country_code == "DE"
    assert turn.cited_evidence and all(c.startswith("2:") for c in turn.cited_evidence)


def test_joint_answer(two: Conversation) -> None:
    turn = two.ask("Give me a joint answer")
    assert turn.intent == "joint" and turn.dropped_citations == []
    assert turn.cited_evidence


# --- saving ---------------------------------------------------------------------------------------


def test_save_and_load_give_the_same_conversation(locator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    conv = Conversation(locator, [EXAMPLE])
    conv.ask("Which country?")
    conv.ask("it was taken in Lisbon")
    conv.ask("trust my hint")
    path = conv.save(tmp_path / "chat.json")
    back = Conversation.load(path, locator)
    assert back.to_json() == json.loads(path.read_text())
    assert [t.model_dump() for t in back.turns] == [t.model_dump() for t in conv.turns]
    assert back.photo(1).prediction == conv.photo(1).prediction
    # a tool question after loading needs the planner state: it is made again, hints replayed
    turn = back.ask("Could it be Porto?")
    assert turn.index == 4 and [c.name for c in turn.tool_calls] == ["check_place"]
    assert turn.prediction is not None and turn.prediction.country_code == "PT"
    best = back.photo(1).prediction.best
    assert best is not None and best.label == conv.photo(1).prediction.best.label  # type: ignore[union-attr]


def test_damaged_saves_are_refused(locator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.json"
    for text in ["{", "[]", '{"format": "other"}', '{"format": "geosleuth-conversation", "version": 99}']:
        bad.write_text(text)
        with pytest.raises(ConfigError):
            Conversation.load(bad, locator)
    with pytest.raises(ConfigError):
        Conversation.load(tmp_path / "missing.json", locator)


def test_loaded_conversation_without_its_photo_says_so(locator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from geosleuth.errors import ImageInputError

    copy = tmp_path / "p.jpg"
    shutil.copy(EXAMPLE, copy)
    conv = Conversation(locator, [copy])
    data = conv.to_json()
    copy.unlink()
    back = Conversation.from_json(data, locator)
    assert back.ask("Which country?").prediction.country_code == "FR"  # type: ignore[union-attr]  # no state needed
    turn = back.ask("Could it be Porto?")  # needs the planner state, hence the photo
    assert turn.error is not None and "p.jpg" in turn.error and turn.check is None
    hint = back.ask("it was taken in Portugal")
    assert hint.error is not None and ImageInputError.__name__ in hint.error and hint.hints == []
    assert len(back.turns) == 3


def test_a_hint_is_recorded_even_if_its_stream_is_closed(locator) -> None:  # type: ignore[no-untyped-def]
    conv = Conversation(locator, [EXAMPLE])
    stream = conv.stream("it was taken in France")
    first = next(stream)
    stream.close()
    assert isinstance(first, str) and "hint.1" in first
    assert [t.hints[0].id for t in conv.turns] == ["hint.1"]  # the evidence changed: the turn says so


def test_either_or_checks_both(paris: Conversation) -> None:
    turn = paris.ask("Could it be Portugal or Spain?")
    assert [c.name for c in turn.tool_calls] == ["check_place", "check_place"]
    assert "Portugal" in turn.answer and "Spain" in turn.answer


def test_probability_of_a_place(paris: Conversation) -> None:
    turn = paris.ask("What is the probability of Spain?")
    assert turn.check is not None and turn.check.country_code == "ES"


def test_the_gps_argues_against_elsewhere(locator) -> None:  # type: ignore[no-untyped-def]
    conv = Conversation(locator, [fixture("exif_gps.jpg")])  # GPS at the Eiffel tower
    turn = conv.ask("Could it be Spain?")
    assert turn.check is not None and turn.check.verdict == "very_unlikely"
    assert turn.cited_evidence[0] == "exif.gps"
    assert "exif.gps" not in conv.ask("Could it be Paris?").cited_evidence
