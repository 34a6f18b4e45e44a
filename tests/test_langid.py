import pytest

from geosleuth.config import LangIDSettings
from geosleuth.tools.langid import CLD2Identifier, detect_scripts, make_language_identifier


def codes(text):
    return [s.code for s in detect_scripts(text)]


def test_scripts():
    assert codes("東京都 しんじゅく") == ["Hira", "Hani"]  # most frequent first: 5 kana, 3 kanji
    assert codes("서울특별시") == ["Hang"]
    assert codes("улица Тверская") == ["Cyrl"]
    assert codes("Αθήνα") == ["Grek"]
    assert codes("ถนนสุขุมวิท") == ["Thai"]
    assert codes("12345 !!") == []
    shares = detect_scripts("Paris パリ")
    assert {s.code: s.chars for s in shares} == {"Latn": 5, "Kana": 2}
    assert sum(s.share for s in shares) == pytest.approx(1.0)


def test_cld2_guesses_with_confidence():
    cld2 = CLD2Identifier()
    [de], [ja], [empty] = (
        cld2.identify([t]) for t in ["Ausfahrt freihalten, Parken verboten", "東京都新宿区の駅です", ""]
    )
    assert de[0].code == "de" and de[0].confidence > 0.5
    assert ja[0].code == "ja"
    assert empty == []


def test_engine_choice():
    assert make_language_identifier(LangIDSettings(engine="none")) is None
    assert make_language_identifier(LangIDSettings(engine="auto")).name == "cld2"
