"""Language and script identification of recognised text, offline.

Scripts come from the Unicode character database (stdlib) and are always available. Languages come
from an engine behind :class:`LanguageIdentifier`:

* ``cld2`` (``pip install 'geosleuth[langid]'``): tiny and fast, weak on a few words of text.
* ``lingua`` (``pip install 'geosleuth[lingua]'``): better on short text, ~1 GB RAM for 50 languages.

Sign text is short and full of names, so every guess carries a confidence that later stages use as
a weight, never as a fact.
"""

from __future__ import annotations

import logging
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import cached_property
from importlib.metadata import version
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from geosleuth.config import LangIDSettings
from geosleuth.errors import EngineUnavailableError, MissingDependencyError

log = logging.getLogger(__name__)


class LanguageGuess(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str = Field(description="ISO 639-1 code where one exists, else ISO 639-3.")
    name: str
    confidence: float = Field(ge=0.0, le=1.0)


class ScriptShare(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str = Field(description="ISO 15924 code, e.g. Latn, Cyrl, Hani, Hira, Kana, Hang.")
    name: str
    chars: int = Field(ge=0)
    share: float = Field(ge=0.0, le=1.0)


# First word of a Unicode character name -> ISO 15924 code.
_SCRIPT_WORDS: dict[str, tuple[str, str]] = {
    "LATIN": ("Latn", "Latin"),
    "FULLWIDTH": ("Latn", "Latin"),
    "CYRILLIC": ("Cyrl", "Cyrillic"),
    "GREEK": ("Grek", "Greek"),
    "ARABIC": ("Arab", "Arabic"),
    "HEBREW": ("Hebr", "Hebrew"),
    "CJK": ("Hani", "Han"),
    "HIRAGANA": ("Hira", "Hiragana"),
    "KATAKANA": ("Kana", "Katakana"),
    "HALFWIDTH": ("Kana", "Katakana"),
    "HANGUL": ("Hang", "Hangul"),
    "THAI": ("Thai", "Thai"),
    "LAO": ("Laoo", "Lao"),
    "KHMER": ("Khmr", "Khmer"),
    "MYANMAR": ("Mymr", "Myanmar"),
    "DEVANAGARI": ("Deva", "Devanagari"),
    "BENGALI": ("Beng", "Bengali"),
    "GURMUKHI": ("Guru", "Gurmukhi"),
    "GUJARATI": ("Gujr", "Gujarati"),
    "ORIYA": ("Orya", "Odia"),
    "TAMIL": ("Taml", "Tamil"),
    "TELUGU": ("Telu", "Telugu"),
    "KANNADA": ("Knda", "Kannada"),
    "MALAYALAM": ("Mlym", "Malayalam"),
    "SINHALA": ("Sinh", "Sinhala"),
    "GEORGIAN": ("Geor", "Georgian"),
    "ARMENIAN": ("Armn", "Armenian"),
    "ETHIOPIC": ("Ethi", "Ethiopic"),
    "TIBETAN": ("Tibt", "Tibetan"),
    "MONGOLIAN": ("Mong", "Mongolian"),
    "THAANA": ("Thaa", "Thaana"),
}


def detect_scripts(text: str) -> list[ScriptShare]:
    """Writing systems of the letters in ``text``, most frequent first."""
    counts: Counter[tuple[str, str]] = Counter()
    for ch in text:
        if not ch.isalpha():
            continue
        if ch == "ー" or ch == "々":  # prolonged sound mark / iteration mark: Japanese
            counts[("Kana", "Katakana")] += 1
            continue
        try:
            word = unicodedata.name(ch).split()[0]
        except ValueError:
            continue
        if word in _SCRIPT_WORDS:
            counts[_SCRIPT_WORDS[word]] += 1
    total = sum(counts.values())
    return [
        ScriptShare(code=code, name=name, chars=n, share=round(n / total, 4))
        for (code, name), n in counts.most_common()
    ]


@runtime_checkable
class LanguageIdentifier(Protocol):
    name: str

    def identify(self, texts: Sequence[str]) -> list[list[LanguageGuess]]:
        """Ranked language guesses for each text (empty when the engine will not guess)."""
        ...

    def version(self) -> str: ...


class CLD2Identifier:
    """Compact Language Detector 2 (pycld2)."""

    name = "cld2"

    def __init__(self) -> None:
        try:
            import pycld2
        except ImportError as exc:
            raise MissingDependencyError("pycld2", "langid", "Language identification with CLD2") from exc
        self._cld2: Any = pycld2

    def version(self) -> str:
        return f"pycld2 {version('pycld2')}"

    def identify(self, texts: Sequence[str]) -> list[list[LanguageGuess]]:
        return [self._one(t) for t in texts]

    def _one(self, text: str) -> list[LanguageGuess]:
        clean = "".join(ch for ch in text if ch.isprintable() or ch.isspace())
        if not clean.strip():
            return []
        try:
            reliable, _, details = self._cld2.detect(clean, bestEffort=True)
        except self._cld2.error as exc:
            log.debug("cld2 could not read the text: %s", exc)
            return []
        out = []
        for name, code, percent, score in details:
            if code in ("un", "xxx") or percent <= 0:
                continue
            # CLD2's normalised score is ~1000+ when it is sure and a few hundred on a guess.
            conf = (percent / 100.0) * min(1.0, float(score) / 1200.0) * (1.0 if reliable else 0.5)
            out.append(LanguageGuess(code=code.split("-")[0], name=name.title(), confidence=round(conf, 3)))
        return out


class LinguaIdentifier:
    """Lingua, restricted to a configured language set to bound memory."""

    name = "lingua"

    def __init__(self, languages: Sequence[str]) -> None:
        try:
            import lingua  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError(
                "lingua-language-detector", "lingua", "Language identification with lingua"
            ) from exc
        self.codes = list(languages)

    @cached_property
    def _detector(self) -> Any:
        from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

        langs = []
        for code in self.codes:
            try:
                langs.append(Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper())))
            except (AttributeError, ValueError):
                log.warning("lingua does not know language %r; skipping it", code)
        if len(langs) < 2:
            raise EngineUnavailableError(
                "lingua needs at least two known languages in langid.lingua_languages"
            )
        return LanguageDetectorBuilder.from_languages(*langs).build()

    def version(self) -> str:
        return f"lingua-language-detector {version('lingua-language-detector')} ({len(self.codes)} languages)"

    def identify(self, texts: Sequence[str]) -> list[list[LanguageGuess]]:
        out: list[list[LanguageGuess]] = []
        for text in texts:
            if not text.strip():
                out.append([])
                continue
            values = self._detector.compute_language_confidence_values(text)[:3]
            out.append(
                [
                    LanguageGuess(
                        code=v.language.iso_code_639_1.name.lower(),
                        name=v.language.name.title(),
                        confidence=round(float(v.value), 3),
                    )
                    for v in values
                    if v.value > 0.01
                ]
            )
        return out


def make_language_identifier(settings: LangIDSettings) -> LanguageIdentifier | None:
    """The configured engine; None for ``none``. ``auto`` takes CLD2, then lingua, if installed."""
    if settings.engine == "none":
        return None
    if settings.engine == "cld2":
        return CLD2Identifier()
    if settings.engine == "lingua":
        return LinguaIdentifier(settings.lingua_languages)
    for factory in (CLD2Identifier, lambda: LinguaIdentifier(settings.lingua_languages)):
        try:
            return factory()
        except MissingDependencyError:
            continue
    raise EngineUnavailableError(
        "no language identifier is installed; pip install 'geosleuth[langid]' (scripts are still detected)"
    )
