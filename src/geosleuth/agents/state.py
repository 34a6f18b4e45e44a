"""What the planner knows about one photo while it works: the typed run state, the stage reports,
and the decision after each verification.

Nodes read the state and add to it; nothing here does any work."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypedDict

from pydantic import BaseModel, ConfigDict, Field

from geosleuth.agents.fusion import FusionResult, RetrievalPoint
from geosleuth.agents.verifier import VerificationInputs
from geosleuth.retrieval.service import RetrievalResult
from geosleuth.schemas import (
    Candidate,
    ConfidenceRegion,
    Evidence,
    EvidenceKind,
    StageReport,
    StageStatus,
    TraceStep,
    VLMReport,
)
from geosleuth.tools.clues import ClueReport, PlaceMatch
from geosleuth.tools.exif import ExifReport
from geosleuth.tools.image import LoadedImage
from geosleuth.tools.langid import LanguageGuess
from geosleuth.tools.ocr.base import TextLine


class Stages:
    """Stage reports and timings of one run."""

    def __init__(self) -> None:
        self.reports: list[StageReport] = []
        self.timings: dict[str, float] = {}

    def add(
        self,
        name: str,
        status: StageStatus,
        detail: str = "",
        engine: str | None = None,
        t0: float | None = None,
    ) -> None:
        seconds = round(time.perf_counter() - t0, 4) if t0 is not None else 0.0
        self.reports.append(
            StageReport(name=name, status=status, detail=detail, engine=engine, seconds=seconds)
        )
        if t0 is not None:
            self.timings[name] = round(self.timings.get(name, 0.0) + seconds, 4)


class Action(StrEnum):
    DONE = "done"
    INVESTIGATE = "investigate"


class Decision(BaseModel):
    """What `decide` chose after a verification, and why.

    ``reason`` is why looking further would help (a weak or contested answer); ``blocker`` is what
    stopped it (out of budget, nothing to check, tools down). Done without a reason: the answer is
    good enough."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    action: Action
    reason: str | None = Field(default=None, description="Why investigating would help.")
    blocker: str | None = Field(default=None, description="Why the planner did not investigate.")

    def sentence(self) -> str:
        if self.action == Action.INVESTIGATE:
            return f"investigate: {self.reason}"
        return "done" + (f" ({self.reason}, but {self.blocker})" if self.reason else "")


@dataclass
class RunState:
    """Everything the nodes know about one photo. Nodes read it and add to it."""

    image: LoadedImage
    stages: Stages = field(default_factory=Stages)
    evidence: list[Evidence] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    exif: ExifReport | None = None
    lines: list[TextLine] = field(default_factory=list)
    text: str = ""
    languages: list[LanguageGuess] = field(default_factory=list)
    matches: list[PlaceMatch] = field(default_factory=list)
    clues: ClueReport | None = None  # the last reading of the text (replaced when zoom adds lines)
    found: RetrievalResult | None = None
    points: list[RetrievalPoint] = field(default_factory=list)
    vlm: VLMReport | None = None
    vlm_points: list[RetrievalPoint] = field(default_factory=list)
    tool_candidates: list[Candidate] = field(default_factory=list)
    asked: set[str] = field(default_factory=set)  # tool queries already made
    rounds: int = 0
    zooms: int = 0
    zoom_declined: bool = False  # the VLM was offered `zoom` and did not use it
    fusion: FusionResult | None = None
    ranked: list[Candidate] = field(default_factory=list)
    regions: list[ConfidenceRegion] = field(default_factory=list)
    null_probability: float = 1.0
    verdict: str = ""  # the verifier's explanation
    inputs: VerificationInputs | None = None  # the last one (for fitting the verifier, check_place)
    confidence: float = 0.0
    decision: Decision | None = None
    trace: list[TraceStep] = field(default_factory=list)

    @property
    def injected(self) -> bool:
        """The image's text tries to instruct AI systems."""
        return any(e.kind == EvidenceKind.PROMPT_INJECTION for e in self.evidence)


class GraphState(TypedDict):
    """LangGraph's view of a run: the run's context (which holds the typed state)."""

    ctx: object  # RunContext; LangGraph only passes it along


__all__ = ["Action", "Decision", "GraphState", "RunState", "Stages"]
