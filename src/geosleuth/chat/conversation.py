"""A conversation about one or more photos, grounded in the evidence geosleuth observed.

``Conversation(locator, ["a.jpg"])`` locates the photos, then :meth:`Conversation.ask` answers
questions one turn at a time. Each turn's answer cites the evidence ids it rests on (ids that no
prediction holds are dropped and the answer says so), lists the agent-tool calls it made, and says
where each photo stands afterwards. Hints ("it was taken in Portugal") become evidence with
``tool = "user"`` and verification runs again (:mod:`geosleuth.chat.hints`).

Who answers: the VLM when the locator has one (it sees the photo, a digest of the prediction, the
conversation and the agent tools); otherwise, or when the VLM fails, the rules
(:mod:`geosleuth.chat.rules`). Conversations serialise to JSON (:meth:`to_json`) and load back
(:meth:`from_json`)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from geosleuth.agents.pipeline import ImageSource, Locator
from geosleuth.chat import hints as H
from geosleuth.chat.photo import PhotoSession
from geosleuth.chat.rules import RuleAnswer, RuleEngine, ToolRunner, mentioned_photos
from geosleuth.chat.turn import (
    Hint,
    HintKind,
    HintStatus,
    PlaceCheckSummary,
    PlaceSummary,
    RankChange,
    RankedPlace,
    Turn,
)
from geosleuth.errors import ConfigError, GeoSleuthError
from geosleuth.schemas import Granularity, Prediction, TraceStep

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_PLACE_LEVELS = (Granularity.EXACT, Granularity.CITY)
MAX_QUESTION_CHARS = 4000
_CITATION = re.compile(r"\[((?:\d+:)?[a-z][a-z0-9_]*(?:\.[A-Za-z0-9_-]+)+)\]")


class EngineAnswer(BaseModel):
    """What an answering engine (the rules, a VLM) gives back for one question."""

    model_config = ConfigDict(extra="forbid")
    text: str
    intent: str | None = None
    cited: list[str] = Field(default_factory=list)
    error: str | None = None
    check: PlaceCheckSummary | None = None
    unsupported: list[str] = Field(default_factory=list, description="Places named without support.")
    model: str | None = None
    prompt_hash: str | None = None


class AnswerEngine(Protocol):
    """Answers one question. A generator: it yields the answer's text as it comes, and returns
    the whole :class:`EngineAnswer`. ``tools`` runs an agent tool about one photo and records it."""

    name: str

    def respond(
        self, question: str, conversation: Conversation, tools: ToolRunnerT
    ) -> Generator[str, None, EngineAnswer]: ...


ToolRunnerT = ToolRunner  # runs an agent tool about one photo and records the call (declared in rules)


class Conversation:
    """Questions and answers about ``images``, each located first with ``locator``."""

    def __init__(
        self,
        locator: Locator,
        images: Sequence[ImageSource] = (),
        *,
        names: Sequence[str | None] | None = None,
        engine: AnswerEngine | None = None,
        photos: Sequence[PhotoSession] | None = None,
    ) -> None:
        self.locator = locator
        self.gazetteer = locator.deps.gazetteer
        if photos is not None:
            self.photos = list(photos)
        else:
            if not images:
                raise ConfigError("a conversation needs at least one photo")
            labels = list(names) if names is not None else [None] * len(images)
            self.photos = [
                PhotoSession.locate(locator, i, src, name)
                for i, (src, name) in enumerate(zip(images, labels, strict=True), start=1)
            ]
        self.turns: list[Turn] = []
        self.hints: list[Hint] = []
        self.rules = RuleEngine(self.gazetteer, self._call_tool)
        self.engine = engine if engine is not None else _default_engine(locator)
        self._step: TraceStep | None = None
        self._lock = threading.Lock()

    # -- asking --

    def ask(self, question: str) -> Turn:
        """Answer ``question`` and record the turn."""
        turn: Turn | None = None
        for item in self.stream(question):
            if isinstance(item, Turn):
                turn = item
        assert turn is not None
        return turn

    async def aask(self, question: str) -> Turn:
        """:meth:`ask` without blocking the event loop."""
        return await asyncio.to_thread(self.ask, question)

    def stream(self, question: str) -> Iterator[str | Turn]:
        """Answer ``question`` as it is written: text pieces, then the :class:`Turn`. Closing the
        iterator early cancels the answer; the conversation then holds no turn for it. (A hint is
        not streamed: it changes the evidence, so its turn is recorded before its text comes.)"""
        question = _checked(question)
        with self._lock:
            t0 = time.perf_counter()
            self._step = TraceStep(node=f"chat#{len(self.turns) + 1}", seconds=0.0)
            new_hints: list[Hint] = []
            changes: list[RankChange] = []
            engine_name = "rules"
            held = False  # the answer's text comes after the turn is recorded
            if H.is_insist(question) and any(h.status == HintStatus.CONFLICT for h in self.hints):
                answer = self._safely(lambda: self._insist(new_hints, changes))
                held = True
            elif (parsed := H.parse_hint(self.gazetteer, question)) is not None:
                hint = parsed
                answer = self._safely(lambda: self._hint(question, hint, new_hints, changes))
                held = True
            elif self.engine is not None:
                engine_name = self.engine.name
                answer = yield from self._with_fallback(question)
                if answer.error and answer.intent == "fallback":
                    engine_name = "rules"
            else:
                answer = yield from _as_stream(self.rules.answer(question, self.photos))
            text, cited, dropped = self._grounded(answer)
            if dropped:
                note = (
                    f" (Dropped citation{'s' if len(dropped) > 1 else ''} {', '.join(dropped)}: "
                    "no such evidence in the prediction.)"
                )
                text += note
                if not held:
                    yield note
            focus = mentioned_photos(question, len(self.photos)) or [1]
            turn = Turn(
                index=len(self.turns) + 1,
                question=question,
                answer=text,
                intent=answer.intent,
                check=answer.check,
                engine="vlm" if engine_name == "vlm" else "rules",
                cited_evidence=cited,
                dropped_citations=dropped,
                tool_calls=list(self._step.tool_calls),
                hints=new_hints,
                ranking=changes,
                prediction=PlaceSummary.of(focus[0], self.photos[focus[0] - 1].prediction),
                photos=[PlaceSummary.of(p.number, p.prediction) for p in self.photos]
                if len(self.photos) > 1
                else [],
                error=answer.error,
                seconds=round(time.perf_counter() - t0, 4),
                unsupported_places=answer.unsupported,
                model=answer.model,
                prompt_hash=answer.prompt_hash,
            )
            self._step = None
            self.turns.append(turn)
            if held:
                yield turn.answer
            yield turn

    async def astream(self, question: str) -> AsyncIterator[str | Turn]:
        """:meth:`stream` for asyncio code (the work runs in a worker thread)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        done = object()

        def work() -> None:
            try:
                for item in self.stream(question):
                    loop.call_soon_threadsafe(queue.put_nowait, item)
            except BaseException as exc:  # handed to the caller
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        thread = threading.Thread(target=work, name="geosleuth-chat", daemon=True)
        thread.start()
        while (item := await queue.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item

    # -- the photos --

    def photo(self, number: int) -> PhotoSession:
        if not 1 <= number <= len(self.photos):
            raise ConfigError(f"no photo {number} in this conversation (it has {len(self.photos)})")
        return self.photos[number - 1]

    @property
    def trace_step(self) -> TraceStep | None:
        """The trace step of the turn being answered (its tool calls so far); None between turns."""
        return self._step

    @property
    def predictions(self) -> list[Prediction]:
        return [p.prediction for p in self.photos]

    def state_of(self, photo: PhotoSession) -> None:
        """Make sure ``photo`` has its planner state (a loaded conversation makes it again)."""
        replay = [e for e in (photo.evidence(hid) for hid in photo.hints) if e is not None]
        photo.ensure_state(self.locator, replay)

    # -- engines' tools --

    def _call_tool(self, photo: PhotoSession, name: str, args: dict[str, object]) -> BaseModel:
        from geosleuth.agents.toolbox import TOOLS

        self.state_of(photo)
        step = self._step if self._step is not None else TraceStep(node="chat", seconds=0.0)
        ctx = photo.context(self.locator, step)
        result = TOOLS.call(ctx, name, args)
        if getattr(result, "new_evidence", None):  # zoom read new text: the answer may move
            photo.prediction = photo.reverify(self.locator, stage=f"verify ({name})")
        return result

    def _with_fallback(self, question: str) -> Generator[str, None, EngineAnswer]:
        assert self.engine is not None
        try:
            return (yield from self.engine.respond(question, self, self._call_tool))
        except GeoSleuthError as exc:
            log.info("the %s engine failed (%s); answering by rule", self.engine.name, exc)
            ruled = self.rules.answer(question, self.photos)
            note = f"(The VLM could not answer: {exc}. Answered from the evidence by rule instead.) "
            yield note
            yield ruled.text
            return EngineAnswer(
                text=note + ruled.text,
                intent="fallback",
                cited=ruled.cited,
                error=f"{type(exc).__name__}: {exc}",
            )

    # -- hints --

    @staticmethod
    def _safely(work: Callable[[], EngineAnswer]) -> EngineAnswer:
        """A hint's answer, or what stopped it (the photo is gone, a tool failed): said, not raised."""
        try:
            return work()
        except GeoSleuthError as exc:
            return EngineAnswer(
                text=f"I could not take the hint: {exc}", intent="hint", error=f"{type(exc).__name__}: {exc}"
            )

    def _hint(
        self, question: str, parsed: H.ParsedHint, new: list[Hint], changes: list[RankChange]
    ) -> EngineAnswer:
        focus = [self.photos[n - 1] for n in mentioned_photos(question, len(self.photos))] or list(
            self.photos
        )
        hint_id = f"hint.{len(self.hints) + 1}"
        r = parsed.resolved
        value = (
            f"{r.value} ({r.country_code})"
            if r is not None
            else (f"{parsed.season} {parsed.year}" if parsed.season else str(parsed.year))
            if parsed.kind == "date"
            else parsed.surface
        )
        conflicts: list[tuple[PhotoSession, H.Conflict]] = []
        for ph in focus:
            self.state_of(ph)
            assert ph.state is not None
            c = H.conflict_with(
                ph.state, self.gazetteer, parsed, use_exif_gps=self.locator.settings.use_exif_gps
            )
            if c is not None:
                conflicts.append((ph, c))
        locating = parsed.kind in ("country", "place")
        blocked = locating and bool(conflicts)
        status = HintStatus.CONFLICT if blocked else HintStatus.APPLIED if locating else HintStatus.RECORDED
        hint = Hint(
            id=hint_id,
            text=question,
            kind=HintKind(parsed.kind),
            value=value,
            photos=[p.number for p in focus],
            country_code=r.country_code if r else None,
            point=r.point if r else None,
            radius_km=r.radius_km if r else None,
            year=parsed.year,
            status=status,
            conflict="; ".join(c.text for _, c in conflicts) or None,
            conflicting_evidence=sorted({i for _, c in conflicts for i in c.evidence_ids}),
        )
        self.hints.append(hint)
        new.append(hint)
        if blocked:
            sides = "; ".join(
                f"photo {ph.number}: {c.text} [{', '.join(c.evidence_ids)}]"
                if len(self.photos) > 1
                else f"{c.text} [{', '.join(c.evidence_ids)}]"
                for ph, c in conflicts
            )
            cited = [self._qualify(ph.number, i) for ph, c in conflicts for i in c.evidence_ids]
            return EngineAnswer(
                text=(
                    f"Your hint says {value}, but it conflicts with hard evidence: {sides}. I have not applied it, "
                    "so the answer still rests on the photo's evidence. Either side could be wrong: metadata can "
                    "be edited and text can be misread, and you may know better. Say 'trust my hint' to apply it "
                    f"anyway; that will be recorded as your decision [{hint_id}]."
                ),
                intent="hint",
                cited=cited,
            )
        text = self._apply(hint, focus, parsed, insisted=False, changes=changes)
        if hint.kind == HintKind.DATE and conflicts:
            ph, c = conflicts[0]
            text += f" Note: {c.text} [{self._qualify(ph.number, 'exif.time')}]; the metadata or the hint may be wrong."
            return EngineAnswer(
                text=text,
                intent="hint",
                cited=[self._qualify(ph.number, i) for i in c.evidence_ids] + [hint_id],
            )
        return EngineAnswer(text=text, intent="hint", cited=[hint_id])

    def _insist(self, new: list[Hint], changes: list[RankChange]) -> EngineAnswer:
        pending = next(h for h in reversed(self.hints) if h.status == HintStatus.CONFLICT)
        parsed = H.parse_hint(self.gazetteer, pending.text)
        assert parsed is not None, "a pending hint was parsed when it was made"
        focus = [self.photo(n) for n in pending.photos]
        pending.status = HintStatus.INSISTED
        new.append(pending)
        text = self._apply(pending, focus, parsed, insisted=True, changes=changes)
        return EngineAnswer(
            text=f"As you insist, applied over the conflict ({pending.conflict}); recorded as your decision. "
            + text,
            intent="hint",
            cited=[
                pending.id,
                *(self._qualify(n, i) for n in pending.photos for i in pending.conflicting_evidence),
            ],
        )

    def _apply(
        self,
        hint: Hint,
        focus: list[PhotoSession],
        parsed: H.ParsedHint,
        *,
        insisted: bool,
        changes: list[RankChange],
    ) -> str:
        conflict = (
            H.Conflict(hint.conflict, hint.conflicting_evidence) if insisted and hint.conflict else None
        )
        evidence = H.hint_evidence(hint.id, hint.text, parsed, insisted=insisted, conflict=conflict)
        parts = []
        for ph in focus:
            assert ph.state is not None
            before = ph.prediction
            H.add_to_state(ph.state, evidence)
            ph.hints.append(hint.id)
            after = ph.reverify(self.locator, stage=f"verify ({hint.id})")
            change = RankChange(photo=ph.number, before=_top(before), after=_top(after))
            changes.append(change)
            parts.append(_moved(ph, change, many=len(self.photos) > 1))
        if evidence.weight <= 0:
            lead = f"Recorded [{hint.id}]: {evidence.value}. {evidence.reason}."
        else:
            lead = f"Taken as evidence [{hint.id}]: {evidence.value}; verification ran again."
        return lead + " " + " ".join(parts)

    # -- grounding --

    def _qualify(self, number: int, eid: str) -> str:
        return f"{number}:{eid}" if len(self.photos) > 1 and not eid.startswith("hint.") else eid

    def _known(self, cid: str) -> bool:
        if cid.startswith("hint.") and any(h.id == cid for h in self.hints):
            return True
        if ":" in cid:
            n, _, eid = cid.partition(":")
            if not n.isdigit() or not 1 <= int(n) <= len(self.photos):
                return False
            return self.photos[int(n) - 1].evidence(eid) is not None
        return any(p.evidence(cid) is not None for p in self.photos)

    def _grounded(self, answer: EngineAnswer) -> tuple[str, list[str], list[str]]:
        """The answer's text, its citations that exist, and the ones dropped."""
        cited: list[str] = []
        for cid in [*answer.cited, *_CITATION.findall(answer.text)]:
            if cid not in cited:
                cited.append(cid)
        kept = [c for c in cited if self._known(c)]
        dropped = [c for c in cited if c not in kept]
        return answer.text, kept, dropped

    # -- saving --

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "geosleuth-conversation",
            "version": FORMAT_VERSION,
            "config_hash": self.locator.settings.fingerprint(),
            "photos": [
                {
                    "number": p.number,
                    "source": str(p.source) if isinstance(p.source, str | Path) else None,
                    "prediction": p.prediction.model_dump(mode="json"),
                    "hints": p.hints,
                }
                for p in self.photos
            ],
            "hints": [h.model_dump(mode="json") for h in self.hints],
            "turns": [t.model_dump(mode="json") for t in self.turns],
        }

    def save(self, path: str | Path) -> Path:
        from geosleuth.report import write_text_atomic

        path = Path(path)
        write_text_atomic(path, json.dumps(self.to_json(), ensure_ascii=False, indent=1) + "\n")
        return path

    @classmethod
    def from_json(cls, data: Any, locator: Locator, *, engine: AnswerEngine | None = None) -> Conversation:
        """A conversation saved by :meth:`to_json`. The photos' planner states are made again only
        when a question needs them (a tool, a hint), from the same files."""
        if not isinstance(data, dict) or data.get("format") != "geosleuth-conversation":
            raise ConfigError("not a saved geosleuth conversation (no 'format': 'geosleuth-conversation')")
        if data.get("version") != FORMAT_VERSION:
            raise ConfigError(
                f"saved conversation has version {data.get('version')!r}; this geosleuth reads version {FORMAT_VERSION}"
            )
        try:
            photos = [
                PhotoSession(
                    number=int(p["number"]),
                    source=p.get("source"),
                    prediction=Prediction.model_validate(p["prediction"]),
                    hints=list(p.get("hints") or []),
                )
                for p in data["photos"]
            ]
            hints = [Hint.model_validate(h) for h in data.get("hints") or []]
            turns = [Turn.model_validate(t) for t in data.get("turns") or []]
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            raise ConfigError(f"saved conversation is damaged: {exc}") from exc
        if not photos:
            raise ConfigError("saved conversation has no photos")
        conv = cls(locator, photos=photos, engine=engine)
        conv.hints, conv.turns = hints, turns
        return conv

    @classmethod
    def load(cls, path: str | Path, locator: Locator, *, engine: AnswerEngine | None = None) -> Conversation:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"no saved conversation at {path}") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read the saved conversation {path}: {exc}") from exc
        return cls.from_json(data, locator, engine=engine)

    def report(self, path: str | Path, *, photo: int = 1, fmt: str = "html") -> Path:
        """Write the explainable report of one photo as it stands now."""
        from geosleuth.report import render_report, write_text_atomic

        ph = self.photo(photo)
        image = ph.state.image.rgb if ph.state is not None else None
        path = Path(path)
        write_text_atomic(path, render_report(ph.prediction, fmt, image=image))  # type: ignore[arg-type]
        return path


def _checked(question: str) -> str:
    if not isinstance(question, str):
        raise ConfigError(f"a question must be text, got {type(question).__name__}")
    q = question.strip()
    if not q:
        raise ConfigError("the question is empty")
    if len(q) > MAX_QUESTION_CHARS:
        raise ConfigError(f"the question is {len(q)} characters long; the limit is {MAX_QUESTION_CHARS}")
    return q


def _as_stream(answer: RuleAnswer) -> Generator[str, None, EngineAnswer]:
    yield answer.text
    return EngineAnswer(
        text=answer.text, intent=answer.intent, cited=answer.cited, error=answer.error, check=answer.check
    )


def _top(pred: Prediction, n: int = 3) -> list[RankedPlace]:
    return [
        RankedPlace(
            label=c.place.short() if c.place and c.granularity in _PLACE_LEVELS else c.label,
            probability=round(c.probability, 4),
        )
        for c in pred.candidates[:n]
    ]


def _moved(ph: PhotoSession, change: RankChange, *, many: bool) -> str:
    def row(items: list[RankedPlace]) -> str:
        return ", ".join(f"{r.label} {r.probability:.2f}" for r in items) or "no candidate"

    who = f"Photo {ph.number}: " if many else ""
    b, a = change.before, change.after
    if [r.label for r in b[:1]] != [r.label for r in a[:1]]:
        lead = f"the best answer is now {a[0].label}" if a else "no answer now"
    elif a and b:
        lead = f"the best answer is still {a[0].label} (p {b[0].probability:.2f} -> {a[0].probability:.2f})"
    else:
        lead = "no change"
    status = ph.prediction.status.replace("_", " ")
    return f"{who}{lead[0].upper() + lead[1:]} ({status}). Ranking before: {row(b)}; after: {row(a)}."


def _default_engine(locator: Locator) -> AnswerEngine | None:
    """The VLM answers when the locator has one; the rules otherwise."""
    if locator.deps.vlm is None:
        return None
    from geosleuth.chat.vlm import VLMChatEngine

    return VLMChatEngine.for_backend(locator.deps.vlm)


__all__ = ["AnswerEngine", "Conversation", "EngineAnswer"]
