"""One photo in a conversation: its current prediction and the planner state behind it.

The state lets the conversation call agent tools about the photo (``check_place``, ``zoom``...)
and verify again when a hint adds evidence. A conversation loaded from JSON has the predictions
only; the state is made again on first need by locating the photo again (the same file, checked
by its sha256) and re-applying the hints, which gives the same prediction."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from geosleuth.agents.context import RunContext, Usage
from geosleuth.agents.pipeline import ImageSource, Locator
from geosleuth.agents.state import RunState
from geosleuth.errors import ImageInputError
from geosleuth.schemas import Evidence, Prediction, StageReport, TraceStep

log = logging.getLogger(__name__)


@dataclass
class PhotoSession:
    number: int  # 1-based
    source: ImageSource | None  # None when the photo came as bytes and the conversation was reloaded
    prediction: Prediction
    state: RunState | None = None
    usage: Usage | None = None
    load: StageReport | None = None
    hints: list[str] = field(default_factory=list)  # ids of hints applied to this photo

    @classmethod
    def locate(
        cls, locator: Locator, number: int, source: ImageSource, name: str | None = None
    ) -> PhotoSession:
        prediction, state = locator.run(source, name=name)
        return cls(
            number=number,
            source=source,
            prediction=prediction,
            state=state,
            usage=Usage(locator.settings.budgets),
            load=prediction.stages[0],
        )

    @property
    def label(self) -> str:
        return Path(self.prediction.source).name or self.prediction.source

    def evidence(self, eid: str) -> Evidence | None:
        return next((e for e in self.prediction.evidence if e.id == eid), None)

    def ensure_state(self, locator: Locator, replay: list[Evidence]) -> RunState:
        """The planner state, made again (locate + the applied hints) when the conversation was
        loaded from JSON."""
        if self.state is not None:
            return self.state
        if self.source is None or (isinstance(self.source, str | Path) and not Path(self.source).exists()):
            raise ImageInputError(
                str(self.source or self.prediction.source),
                "the photo is needed again to answer this (the saved conversation holds its prediction, "
                "not its pixels); load the conversation where the photo is",
            )
        fresh = PhotoSession.locate(locator, self.number, self.source)
        sha = self.prediction.provenance.image_sha256
        if sha and fresh.prediction.provenance.image_sha256 != sha:
            raise ImageInputError(
                str(self.source), "the file changed since the conversation was saved (its sha256 differs)"
            )
        assert fresh.state is not None
        self.state, self.usage, self.load = fresh.state, fresh.usage, fresh.load
        if replay:
            from geosleuth.chat.hints import add_to_state

            for ev in replay:
                add_to_state(fresh.state, ev)
            self.prediction = self.reverify(locator, stage="verify (hints replayed)")
        return fresh.state

    def context(self, locator: Locator, step: TraceStep) -> RunContext:
        assert self.state is not None and self.usage is not None
        ctx = locator.planner.context(self.state, self.usage)
        ctx.step = step
        return ctx

    def reverify(self, locator: Locator, *, stage: str) -> Prediction:
        assert self.state is not None and self.usage is not None and self.load is not None
        self.prediction = locator.reverify(self.state, self.usage, self.load, stage=stage)
        return self.prediction


__all__ = ["PhotoSession"]
