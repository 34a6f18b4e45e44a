"""What one turn of a conversation about photos says: the question, the answer, what the answer
rests on, the tools it called, the hints it took, and where the photos stand afterwards.

These are the conversation's boundary types: the CLI prints them (``--json``: one object per
turn), the library returns them, and a saved conversation holds them."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from geosleuth.schemas import ConfidenceLevel, LatLon, Prediction, ToolCall


class PlaceSummary(BaseModel):
    """Where one photo stands: its best place (or none), point, probability and status."""

    model_config = ConfigDict(extra="forbid")
    photo: int = Field(ge=1, description="The photo's number in the conversation (1 = first).")
    source: str
    status: Literal["located", "insufficient_evidence"]
    place: str | None = Field(
        default=None, description="The best place, e.g. 'Paris, Ile-de-France, France'."
    )
    country_code: str | None = None
    point: LatLon | None = Field(
        default=None, description="The best point (also the top candidate's when not located)."
    )
    probability: float = Field(ge=0.0, le=1.0)
    confidence_level: ConfidenceLevel
    radius_km: float | None = None

    @classmethod
    def of(cls, number: int, prediction: Prediction) -> PlaceSummary:
        top = prediction.best or (prediction.candidates[0] if prediction.candidates else None)
        place = top.place if top is not None else None
        return cls(
            photo=number,
            source=prediction.source,
            status=prediction.status,
            place=(place.short() if place is not None else prediction.best.label)
            if prediction.best
            else None,
            country_code=place.country_code if place is not None and prediction.best else None,
            point=top.point if top is not None else None,
            probability=prediction.confidence,
            confidence_level=prediction.confidence_level,
            radius_km=top.radius_km if top is not None and prediction.best else None,
        )


class RankedPlace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str
    probability: float


class RankChange(BaseModel):
    """How a hint moved the ranking of one photo's candidates."""

    model_config = ConfigDict(extra="forbid")
    photo: int = Field(ge=1)
    before: list[RankedPlace]
    after: list[RankedPlace]


class PlaceCheckVerdict(StrEnum):
    BEST = "best"  # it is the best answer
    LIKELY = "likely"  # p >= 0.5
    POSSIBLE = "possible"  # p >= 0.15
    UNLIKELY = "unlikely"  # p >= 0.02
    VERY_UNLIKELY = "very_unlikely"


class PlaceCheckSummary(BaseModel):
    """The answer to "could it be X?" / "why not X?" in fields."""

    model_config = ConfigDict(extra="forbid")
    photo: int = Field(ge=1)
    hypothesis: str = Field(description="The place as resolved, e.g. 'Porto, Portugal'.")
    level: Literal["country", "place"]
    country_code: str
    probability: float = Field(ge=0.0, le=1.0, description="Its probability (of the country, for a country).")
    rank: int | None = Field(default=None, description="Its rank among the candidate places (places only).")
    verdict: PlaceCheckVerdict


class HintKind(StrEnum):
    COUNTRY = "country"
    PLACE = "place"
    DATE = "date"
    FEATURE = "feature"


class HintStatus(StrEnum):
    APPLIED = "applied"  # it is evidence now, and verification ran again
    CONFLICT = "conflict"  # it contradicts hard evidence: not applied until the user insists
    INSISTED = "insisted"  # applied over the conflict because the user said so (recorded)
    RECORDED = "recorded"  # kept as evidence the ranking cannot use (a date, "near the sea")


class Hint(BaseModel):
    """Something the user told us about where or when a photo was taken. Applied, it is evidence
    with ``tool = "user"`` and id ``hint.N``."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="Its evidence id, e.g. 'hint.1'.")
    text: str = Field(description="The user's words.")
    kind: HintKind
    value: str = Field(description="What it was understood to mean, e.g. 'Lisbon, Portugal (PT)'.")
    photos: list[int] = Field(description="The photos it is about (1-based).")
    country_code: str | None = None
    point: LatLon | None = None
    radius_km: float | None = None
    year: int | None = None
    status: HintStatus
    conflict: str | None = Field(default=None, description="The hard evidence it contradicts, in words.")
    conflicting_evidence: list[str] = Field(default_factory=list)


class Turn(BaseModel):
    """One question and its answer."""

    model_config = ConfigDict(extra="forbid")
    index: int = Field(ge=1, description="1 = the first question.")
    question: str
    answer: str
    intent: str | None = Field(default=None, description="The question's intent, when rules answered it.")
    engine: Literal["rules", "vlm"] = Field(description="Who wrote the answer: the rules or the VLM.")
    cited_evidence: list[str] = Field(
        default_factory=list,
        description="Evidence ids the answer rests on; each exists in a photo's prediction "
        "('3:text.place.1' names photo 3's evidence when there are several photos).",
    )
    dropped_citations: list[str] = Field(
        default_factory=list, description="Ids the answer cited that no prediction holds (dropped)."
    )
    tool_calls: list[ToolCall] = Field(default_factory=list)
    check: PlaceCheckSummary | None = Field(default=None, description="A checked hypothesis, in fields.")
    hints: list[Hint] = Field(default_factory=list, description="Hints this turn made or applied.")
    ranking: list[RankChange] = Field(default_factory=list, description="How this turn moved the ranking.")
    prediction: PlaceSummary | None = Field(
        default=None, description="The current best place of the photo the turn was about, after the turn."
    )
    photos: list[PlaceSummary] = Field(default_factory=list, description="Every photo's, after the turn.")
    error: str | None = Field(default=None, description="What failed during the turn, if anything did.")
    seconds: float = Field(default=0.0, ge=0.0)
    unsupported_places: list[str] = Field(
        default_factory=list,
        description="Places the answer names that no candidate, evidence or hint supports (the answer "
        "says so).",
    )
    model: str | None = Field(default=None, description="The VLM that wrote the answer, if one did.")
    prompt_hash: str | None = Field(
        default=None, description="sha256 of the prompt templates it was asked with."
    )


__all__ = [
    "Hint",
    "HintKind",
    "HintStatus",
    "PlaceCheckSummary",
    "PlaceCheckVerdict",
    "PlaceSummary",
    "RankChange",
    "RankedPlace",
    "Turn",
]
