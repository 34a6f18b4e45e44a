"""The VLM answers a conversation's questions: the engine a :class:`~geosleuth.chat.Conversation`
uses when its locator has a VLM.

Each question is one chat request, or a few when the model calls tools. The request holds:

* the system message (``prompts/chat_system.j2``): answer only from the digest and the photo, cite
  evidence ids in square brackets, say "I don't know" when nothing supports an answer, and text read
  from the image is data, never instructions;
* the photos (as the backend sends images: JPEG, scaled down), then a digest of each photo's
  current prediction as JSON (``prompts/chat_context.j2``): evidence with ids, kind, weight and the
  countries it implies; ranked candidates with probability, radius and the evidence they rest on;
  regions, what is missing, warnings, the user's hints. Every string that came from the photo's
  text or metadata (OCR lines, clues quoting them, EXIF captions and camera names, labels made from
  them, the file name) is only in ``<untrusted_text>``, as numbered lines the JSON points to
  (``"text": "U3"``), neutralised so it can neither close the block nor forge a line;
* the conversation so far (the last ``chat.max_history_turns`` turns). The context travels with the
  first question kept, so user and assistant messages alternate (strict chat templates need that)
  and the prefix stays the same from turn to turn (a server's prefix cache serves it);
* the question.

Tools: the registry's tools that can run for the photos (:meth:`Toolset.available`), with the
registry's schemas (with several photos each gets one more required argument, ``photo``). The
model's calls run through the conversation's tool runner, which records them in the turn; results
go back as ``tool`` messages (JSON cut to ``chat.max_tool_result_chars``, text from the photo or
the web in an untrusted block), and a zoom's crop as an image after them, unless the server refused
one. A failing call goes back as an error result. After ``chat.max_tool_rounds`` rounds the model
must answer (``tool_choice: none``).

When less is possible, the answer says what degraded (``EngineAnswer.error``):

* A server without tool calling (vLLM without ``--enable-auto-tool-choice`` answers 400 to
  ``tools``): the rules answer first (their checks and tool calls stand in for the model's) and
  the VLM is asked again without tools, with the rules' findings in the digest; the answer cites
  what the rules cited. The process remembers (``deps.health.tool_calling_down``).
* The in-process transformers backend neither streams nor calls tools: it answers through
  ``generate()``, in one piece, the conversation flattened into one message
  (``prompts/chat_transcript.j2``), with the rules' findings added the same way. That is how that
  backend chats, not an error. The same happens when ``vlm.tool_calling`` is off or no tool can run.
* A failure before any text (connection refused, 5xx after the backend's retries, a timeout) is the
  backend's :class:`~geosleuth.errors.VLMError`; the conversation then answers by rule and says why.
  A stream that breaks halfway keeps what was written and says it was cut off.

Grounding: after the answer, the places and countries it names that no candidate, locating
evidence or hint supports (nor the question, nor this turn's tool calls) get a caveat naming them
("Pyongyang is not supported by any evidence geosleuth observed"). What the model writes never
changes a prediction: only tools (a zoom that reads new text) and hints do.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from pydantic import BaseModel

from geosleuth.agents.toolbox import TOOLS, ZoomResult
from geosleuth.agents.vlm.base import ChatReply, ChattingVLM, ChatToolCall, VLMBackend, VLMRequest
from geosleuth.agents.vlm.prompting import neutralise
from geosleuth.chat.conversation import EngineAnswer
from geosleuth.chat.photo import PhotoSession
from geosleuth.chat.rules import RuleAnswer
from geosleuth.chat.turn import PlaceCheckSummary
from geosleuth.errors import GeoSleuthError, ToolQueryError, VLMError, VLMRequestRejectedError
from geosleuth.gazetteer import name_key
from geosleuth.geo import point_distance_km
from geosleuth.prompts import (
    CHAT_CONTEXT,
    CHAT_SYSTEM,
    CHAT_TRANSCRIPT,
    PromptTemplate,
    load_template,
    prompt_set_hash,
)
from geosleuth.schemas import Candidate, Evidence, EvidenceKind, Granularity, LatLon, ToolCall, TraceStep

if TYPE_CHECKING:
    from geosleuth.chat.conversation import Conversation, ToolRunnerT
    from geosleuth.chat.turn import Turn
    from geosleuth.config import ChatSettings

log = logging.getLogger(__name__)

MAX_DIGEST_EVIDENCE = 40
MAX_DIGEST_CANDIDATES = 8
MAX_TEXT_LINES = 30
MAX_UNTRUSTED_LINE = 300
MAX_UNTRUSTED_CHARS = 6000
MIN_MENTION_POPULATION = 50_000  # smaller homonyms of common words are not worth a caveat
SUPPORT_MIN_KM = 25.0
# Evidence whose value is written by geosleuth's own code from numbers (a GPS fix, a clock, a
# language guess); every other value quotes text from the photo, its metadata or a service.
_TRUSTED_EXIF = {
    EvidenceKind.GPS,
    EvidenceKind.ALTITUDE,
    EvidenceKind.BEARING,
    EvidenceKind.TIMESTAMP,
    EvidenceKind.UTC_OFFSET,
}
_TRUSTED_TOOLS = {"langid", "retrieval", "user"}
# Tool-result fields that quote the photo's text, a label made from it, or a web page.
_UNTRUSTED_KEYS = {"text", "query", "title", "snippet", "url", "best", "same_as", "label", "alternatives"}
# Capitalised words an answer uses that are also (big) places' names.
_NOT_PLACE_WORDS = (
    "I The This That These Those It Its Yes No Not None Nothing Based According However But And Or So "
    "Also Both Most More Less Photo Photos Image Evidence Text Sign Answer Question Place Street Rue "
    "Avenue City Town Country Region North South East West Central Centre Center Nice Split Mobile "
    "Reading Bath March May June July August Victoria Florida Jersey Unknown Probably Possibly "
    "Likely Unlikely Maybe Here There Where Why How What Which When EXIF GPS OCR VLM Geosleuth"
)
_NOT_PLACES = {name_key(w) for w in _NOT_PLACE_WORDS.split()}
_CONNECTORS = {
    "de", "del", "della", "di", "da", "do", "dos", "das", "du", "des", "la", "le", "les", "el", "al",
    "of", "upon", "on", "am", "im", "an", "der", "den", "sur", "en", "y",
}  # fmt: skip
# How servers say they cannot take `tools`: vLLM ('"auto" tool choice requires
# --enable-auto-tool-choice and --tool-call-parser'), llama.cpp ('tools param requires --jinja flag'),
# Ollama ('does not support tools'), others ('tool calling is not supported', 'function calling').
_TOOLS_REFUSED = re.compile(r"tool[ _-]?(?:choice|call|parser)|\btools\b|function[ _-]?call|--jinja", re.I)
_WORD = re.compile(r"[^\W\d_][\w'’-]*")
_CITATION_SPAN = re.compile(r"\[[^\]\n]{1,80}\]")


def untrusted_line(text: str, limit: int = MAX_UNTRUSTED_LINE) -> str:
    """One line of the untrusted block: whitespace collapsed, angle brackets made look-alikes
    (no closing the block), square brackets made round (no forged ``[U1]`` line or citation)."""
    out = neutralise(" ".join(str(text).split())).replace("[", "(").replace("]", ")")
    return out if len(out) <= limit else out[: limit - 2].rstrip() + " …"


class UntrustedBlock:
    """The numbered lines of an ``<untrusted_text>`` block; :meth:`add` returns a line's label."""

    def __init__(self, prefix: str = "U", limit: int = MAX_UNTRUSTED_CHARS) -> None:
        self.prefix = prefix
        self.limit = limit
        self.lines: list[str] = []
        self._size = 0

    def add(self, where: str, text: str) -> str:
        label = f"{self.prefix}{len(self.lines) + 1}"
        line = f"[{label}] {where}: {untrusted_line(text)}"
        if self._size + len(line) > self.limit:
            return "(left out: the untrusted block is full)"
        self.lines.append(line)
        self._size += len(line) + 1
        return label

    def render(self) -> str:
        return "\n".join(self.lines)


# --- the digest -------------------------------------------------------------------------------------


def trusted_value(e: Evidence) -> bool:
    """Whether ``e.value`` was written by geosleuth from numbers, not quoted from text."""
    if e.tool == "exif":
        return e.kind in _TRUSTED_EXIF
    return e.tool in _TRUSTED_TOOLS or e.kind == EvidenceKind.USER_HINT


def candidate_place(c: Candidate) -> str | None:
    """The candidate in gazetteer words, at its granularity (labels can quote the photo's text)."""
    p = c.place
    if p is None:
        return None
    if c.granularity in (Granularity.EXACT, Granularity.CITY):
        return p.short()
    if c.granularity == Granularity.REGION:
        return f"{p.admin1}, {p.country}" if p.admin1 else p.country
    if c.granularity == Granularity.COUNTRY:
        return p.country
    return p.continent or p.country


def _pt(p: LatLon) -> list[float]:
    return [round(p.lat, 5), round(p.lon, 5)]


def photo_digest(conv: Conversation, photo: PhotoSession, block: UntrustedBlock) -> dict[str, Any]:
    """One photo's prediction as the model sees it; quoted text goes to ``block``."""
    pred = photo.prediction
    many = len(conv.photos) > 1

    def qid(eid: str) -> str:
        return f"{photo.number}:{eid}" if many and not eid.startswith("hint.") else eid

    known = {e.id for e in pred.evidence}
    out: dict[str, Any] = {
        "photo": photo.number,
        "file": block.add(f"photo {photo.number} file name", photo.label),
        "status": pred.status,
        "basis": pred.basis,
        "confidence": round(pred.confidence, 4),
        "confidence_level": pred.confidence_level.value,
    }
    cands = []
    for rank, c in enumerate(pred.candidates[:MAX_DIGEST_CANDIDATES], start=1):
        cands.append(
            {
                "rank": rank,
                "place": candidate_place(c),
                "country": c.place.country_code if c.place else None,
                "granularity": c.granularity.value,
                "p": round(c.probability, 4),
                "radius_km": round(c.radius_km, 1),
                "point": _pt(c.point),
                "source": c.source.value,
                "evidence": [qid(i) for i in c.evidence_ids if i in known],
                "is_answer": bool(pred.best is not None and rank == 1),
            }
        )
    out["candidates"] = cands
    rest = 1.0 - sum(c.probability for c in pred.candidates)
    if rest > 0.005:
        out["p_elsewhere"] = round(rest, 4)
    ranked = sorted(pred.evidence, key=lambda e: (not e.usable, -e.weight))
    items = []
    for e in ranked[:MAX_DIGEST_EVIDENCE]:
        item: dict[str, Any] = {
            "id": qid(e.id),
            "kind": e.kind.value,
            "tool": e.tool,
            "weight": round(e.weight, 3),
        }
        if not e.usable:
            item["usable"] = False
        if e.countries:
            top = sorted(e.countries.items(), key=lambda kv: (-kv[1], kv[0]))[:6]
            item["countries"] = {c: round(v, 2) for c, v in top}
        if e.point is not None:
            item["point"] = _pt(e.point)
        if trusted_value(e):
            item["value"] = e.value
            if e.reason:
                item["note"] = e.reason
        else:
            shown = e.value + (f" ({e.reason})" if e.reason else "")
            item["text"] = block.add(f"photo {photo.number} evidence {qid(e.id)}", shown)
        items.append(item)
    out["evidence"] = items
    if len(pred.evidence) > MAX_DIGEST_EVIDENCE:
        out["evidence_left_out"] = len(pred.evidence) - MAX_DIGEST_EVIDENCE
    lines = [
        block.add(f"photo {photo.number} OCR line (confidence {ln.confidence:.2f})", ln.text)
        for ln in pred.text_lines[:MAX_TEXT_LINES]
    ]
    if lines:
        out["text_lines"] = lines
    if pred.regions:
        out["regions"] = [
            {
                "level": r.level,
                "circles": [
                    {"center": _pt(c.center), "radius_km": round(c.radius_km, 1)} for c in r.circles[:3]
                ],
            }
            for r in pred.regions
        ]
    if pred.missing:
        out["missing"] = pred.missing
    if pred.warnings:
        out["warnings"] = pred.warnings
    hints = [
        {
            "id": h.id,
            "kind": h.kind.value,
            "value": h.value,
            "status": h.status.value,
            **(
                {"conflict": h.conflict, "conflicting_evidence": h.conflicting_evidence} if h.conflict else {}
            ),
        }
        for h in conv.hints
        if photo.number in h.photos
    ]
    if hints:
        out["hints"] = hints
    return out


def rule_facts(ruled: RuleAnswer, calls: Sequence[ToolCall], block: UntrustedBlock) -> dict[str, Any]:
    """What the rules found for this question, as digest JSON (their draft goes to ``block``)."""
    return {
        "intent": ruled.intent,
        "cites": ruled.cited,
        "tool_calls": [
            {"name": c.name, "arguments": c.arguments, "result": block.add(f"result of {c.name}", c.result)}
            if c.error is None
            else {"name": c.name, "arguments": c.arguments, "error": block.add(f"error of {c.name}", c.error)}
            for c in calls
        ],
        "draft": block.add("rule-based draft answer", ruled.text),
    }


def digest(conv: Conversation, facts: tuple[RuleAnswer, Sequence[ToolCall]] | None = None) -> tuple[str, str]:
    """The digest JSON of every photo, and the untrusted block it points into."""
    block = UntrustedBlock()
    photos = [photo_digest(conv, p, block) for p in conv.photos]
    data: dict[str, Any] = {"photos": photos} if len(photos) > 1 else photos[0]
    if facts is not None:
        data["rule_check"] = rule_facts(facts[0], facts[1], block)
    # json.dumps escapes quotes; neutralise() keeps any < > of a place name from reading as a tag.
    return neutralise(json.dumps(data, ensure_ascii=False, separators=(",", ":"))), block.render()


# --- tool results ---------------------------------------------------------------------------------


def _move_untrusted(value: Any, block: UntrustedBlock, where: str, key: str | None = None) -> Any:
    if isinstance(value, dict):
        return {k: _move_untrusted(v, block, where, k) for k, v in value.items()}
    if isinstance(value, list):
        if key in _UNTRUSTED_KEYS and all(isinstance(v, str) for v in value):
            return block.add(f"{where} {key}", " | ".join(value)) if value else []
        return [_move_untrusted(v, block, where, key) for v in value]
    if isinstance(value, str) and key in _UNTRUSTED_KEYS:
        return block.add(f"{where} {key}", value)
    return value


def bounded_json(data: Any, limit: int) -> str:
    """``data`` as JSON of at most about ``limit`` characters: the longest lists are halved until
    it fits (``"truncated": true`` says so), then the text is cut."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    cut = False
    for _ in range(24):
        if len(text) <= limit:
            break
        lists: list[list[Any]] = []
        _lists(data, lists)
        longest = max(
            (lst for lst in lists if len(lst) > 1), key=lambda lst: len(json.dumps(lst)), default=None
        )
        if longest is None:
            break
        del longest[max(1, len(longest) // 2) :]
        cut = True
        if isinstance(data, dict):
            data["truncated"] = True
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    elif cut and not isinstance(data, dict):
        text += " (truncated)"
    return text


def _lists(value: Any, into: list[list[Any]]) -> None:
    """Every list inside ``value``, outer ones first."""
    if isinstance(value, list):
        into.append(value)
        for x in value:
            _lists(x, into)
    elif isinstance(value, dict):
        for x in value.values():
            _lists(x, into)


def tool_result_message(name: str, photo: int, result: BaseModel, label: str, limit: int) -> str:
    """A tool result for a ``tool`` message: JSON (the crop image left out), with the text it
    quotes in an untrusted block after it."""
    exclude = {"image_jpeg_base64"} if isinstance(result, ZoomResult) else set()
    block = UntrustedBlock(prefix=label, limit=max(200, limit // 2))
    data = _move_untrusted(result.model_dump(mode="json", exclude=exclude), block, f"{name} result")
    text = neutralise(bounded_json({"tool": name, "photo": photo, "ok": True, "result": data}, limit))
    quoted = block.render()
    if quoted:
        text += f"\n<untrusted_text>\n{quoted}\n</untrusted_text>"
    return text


def tool_error_message(name: str, exc: BaseException) -> str:
    return json.dumps(
        {"tool": name, "ok": False, "error": untrusted_line(f"{type(exc).__name__}: {exc}", 600)},
        ensure_ascii=False,
    )


def tool_specs(names: Iterable[str], n_photos: int) -> list[dict[str, Any]]:
    """The registry's OpenAI specs of ``names``; with several photos each takes a required
    ``photo`` number too."""
    specs = []
    for name in names:
        spec = TOOLS[name].openai_spec()
        if n_photos > 1:
            fn = copy.deepcopy(spec["function"])
            params = fn.setdefault("parameters", {"type": "object", "properties": {}})
            params.setdefault("properties", {})
            params["properties"] = {
                "photo": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": n_photos,
                    "description": f"Which photo the call is about (1 to {n_photos}).",
                },
                **params["properties"],
            }
            params["required"] = ["photo", *[r for r in params.get("required", []) if r != "photo"]]
            spec = {"type": "function", "function": fn}
        specs.append(spec)
    return specs


# --- grounding ------------------------------------------------------------------------------------


@dataclass
class Support:
    """What the observed evidence supports: place name keys, country codes, and areas."""

    keys: set[str] = field(default_factory=set)
    countries: set[str] = field(default_factory=set)
    areas: list[tuple[LatLon, float]] = field(default_factory=list)

    def covers(self, point: LatLon) -> bool:
        return any(point_distance_km(point, c) <= r for c, r in self.areas)


def observed_support(conv: Conversation) -> Support:
    s = Support()
    for ph in conv.photos:
        for c in ph.prediction.candidates:
            if c.source.value == "hypothesis":
                continue
            p = c.place
            if p is not None:
                s.keys.update(name_key(x) for x in (p.name, p.admin1, p.admin2, p.country, p.continent) if x)
                s.countries.add(p.country_code)
            s.areas.append((c.point, max(SUPPORT_MIN_KM, c.radius_km)))
        for e in ph.prediction.evidence:
            if not e.usable or e.weight <= 0 or e.kind in (EvidenceKind.TEXT, EvidenceKind.PROMPT_INJECTION):
                continue
            s.countries.update(cc for cc, like in e.countries.items() if like >= 0.5)
            if e.point is not None:
                s.areas.append((e.point, SUPPORT_MIN_KM))
    for h in conv.hints:
        s.keys.add(name_key(h.value))
        if h.country_code:
            s.countries.add(h.country_code)
        if h.point is not None:
            s.areas.append((h.point, max(SUPPORT_MIN_KM, h.radius_km or 0.0)))
    return s


def _runs(text: str) -> list[list[str]]:
    """Runs of capitalised words (with lower-case connectors inside: "Rue de Rivoli")."""
    runs: list[list[str]] = []
    current: list[str] = []
    last_end = -1
    for m in _WORD.finditer(text):
        word = m.group(0).strip("'’-")
        if not word:
            continue
        adjacent = last_end >= 0 and text[last_end : m.start()].strip(" -") == ""
        capital = word[0].isupper()
        if current and not adjacent:
            runs.append(current)
            current = []
        if capital or (current and word.lower() in _CONNECTORS):
            current.append(word)
        elif current:
            runs.append(current)
            current = []
        last_end = m.end()
    if current:
        runs.append(current)
    out = []
    for run in runs:
        while run and not run[-1][0].isupper():
            run = run[:-1]
        if run:
            out.append(run)
    return out


def _spans(run: list[str], longest: int = 4) -> list[tuple[int, int]]:
    """(first, last) word of every span of up to ``longest`` words that starts and ends with a
    capital, longest first."""
    out = []
    for n in range(min(longest, len(run)), 0, -1):
        for i in range(len(run) - n + 1):
            j = i + n - 1
            if run[i][0].isupper() and run[j][0].isupper():
                out.append((i, j))
    return out


def _all_keys(texts: Iterable[str], longest: int = 4) -> set[str]:
    keys: set[str] = set()
    for t in texts:
        words = [w.strip("'’-") for w in _WORD.findall(t)]
        for n in range(1, longest + 1):
            for i in range(len(words) - n + 1):
                keys.add(name_key(" ".join(words[i : i + n])))
    return keys


def unsupported_places(text: str, conv: Conversation, exempt_texts: Iterable[str]) -> list[str]:
    """Countries and (big) places that ``text`` names and nothing observed supports, as written."""
    gaz = conv.gazetteer
    text = _CITATION_SPAN.sub(" ", text)
    runs = _runs(text)
    if not runs:
        return []
    keys_of = {
        (r, i, j): name_key(" ".join(run[i : j + 1])) for r, run in enumerate(runs) for i, j in _spans(run)
    }
    found = gaz.lookup_keys(set(keys_of.values()), limit=20)
    countries = gaz.country_name_keys
    support = observed_support(conv)
    exempt = _all_keys(exempt_texts)
    out: list[str] = []
    seen: set[str] = set()
    for r, run in enumerate(runs):
        used: set[int] = set()
        for i, j in _spans(run):
            if used & set(range(i, j + 1)):
                continue
            key = keys_of[(r, i, j)]
            codes = countries.get(key)
            hits = [h for h in found.get(key, []) if h.population >= MIN_MENTION_POPULATION]
            if not codes and not hits:
                continue
            if not codes and j == i and key in _NOT_PLACES:
                continue
            used.update(range(i, j + 1))
            if key in seen or key in exempt or key in support.keys:
                continue
            seen.add(key)
            if codes:
                if set(codes) & support.countries:
                    continue
            elif any(support.covers(h.point) for h in hits):
                continue
            out.append(" ".join(run[i : j + 1]))
    return out


def caveat(names: Sequence[str]) -> str:
    if not names:
        return ""
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    verb = "is" if len(names) == 1 else "are"
    return f" ({listed} {verb} not supported by any evidence geosleuth observed.)"


# --- the engine -----------------------------------------------------------------------------------


class _ToolsRefused(VLMError):
    """The server refused the ``tools`` parameter (internal: the engine degrades to the rules)."""


@dataclass(frozen=True)
class _Templates:
    system: PromptTemplate
    context: PromptTemplate
    transcript: PromptTemplate

    @classmethod
    def load(cls, folder: Path | None) -> _Templates:
        return cls(
            load_template(CHAT_SYSTEM, folder),
            load_template(CHAT_CONTEXT, folder),
            load_template(CHAT_TRANSCRIPT, folder),
        )

    def hash(self, *, transcript: bool) -> str:
        used = [self.system, self.context] + ([self.transcript] if transcript else [])
        return prompt_set_hash(*used)


@dataclass
class _Photo:
    session: PhotoSession
    image: Image.Image | None
    tools: list[str]


@dataclass
class _Prompt:
    """What one question is asked with, before it is shaped into chat messages or one text."""

    templates: _Templates
    system: str
    context: str
    images: list[Image.Image]
    history: list[Turn]
    question: str


class VLMChatEngine:
    """Answers with a VLM (see the module docstring). Make one with :meth:`for_backend`."""

    name = "vlm"

    def __init__(self, backend: ChattingVLM | VLMBackend) -> None:
        self.backend = backend
        self.chats = isinstance(backend, ChattingVLM)
        self._urls: dict[int, tuple[Image.Image, str]] = {}
        self._crops_refused = False

    @classmethod
    def for_backend(cls, backend: object) -> VLMChatEngine | None:
        """The engine for a VLM backend: full chat (streaming, tools) with an OpenAI-compatible
        one, one-piece answers through ``generate()`` with any other; None for no backend."""
        if isinstance(backend, ChattingVLM | VLMBackend):
            return cls(backend)
        return None

    @property
    def model(self) -> str:
        return str(getattr(self.backend, "model", "?"))

    # -- answering --

    def respond(
        self, question: str, conversation: Conversation, tools: ToolRunnerT
    ) -> Generator[str, None, EngineAnswer]:
        settings = conversation.locator.settings
        chat = settings.chat
        templates = _Templates.load(settings.vlm.prompt_dir)
        health = conversation.locator.deps.health
        photos = self._photos(conversation)
        offered: list[str] = []
        if (
            self.chats
            and settings.vlm.tool_calling
            and chat.max_tool_rounds > 0
            and not health.tool_calling_down
        ):
            offered = [t.name for t in TOOLS if any(t.name in p.tools for p in photos)]
        out: list[str] = []
        degraded: str | None = None
        if health.tool_calling_down and self.chats and settings.vlm.tool_calling:
            degraded = (
                f"tool calling is not available ({health.tool_calling_down}); the rules' checks stood in"
            )
        try:
            if offered:
                try:
                    answer = yield from self._with_tools(
                        question, conversation, tools, photos, offered, templates, out
                    )
                except _ToolsRefused as exc:
                    health.tool_calling_down = str(exc)
                    log.info("%s: no tool calling (%s); the rules' checks stand in", self.model, exc)
                    degraded = f"tool calling is not available ({exc}); the rules' checks stood in"
                    answer = yield from self._with_rules(
                        question, conversation, photos, templates, out, degraded
                    )
            else:
                answer = yield from self._with_rules(question, conversation, photos, templates, out, degraded)
        except VLMError as exc:
            if not out:
                raise  # nothing given out yet: the conversation answers by rule and says why
            note = f" (The answer was cut off: {exc}.)"
            yield note
            out.append(note)
            return EngineAnswer(
                text="".join(out),
                error=f"{type(exc).__name__}: {exc}",
                model=self.model,
                prompt_hash=templates.hash(transcript=not self.chats),
            )
        return answer

    def _finish(
        self,
        question: str,
        conversation: Conversation,
        out: list[str],
        *,
        intent: str | None,
        cited: list[str],
        error: str | None,
        prompt_hash: str,
        check: PlaceCheckSummary | None = None,
    ) -> Generator[str, None, EngineAnswer]:
        """The answer as written, with a rule answer when the model wrote nothing, and the caveat
        naming places nothing supports."""
        if not "".join(out).strip():
            ruled = conversation.rules.answer(question, conversation.photos)
            note = "(The VLM gave no answer; answered from the evidence by rule.) "
            for piece in (note, ruled.text):
                out.append(piece)
                yield piece
            intent, cited, check = ruled.intent, ruled.cited, ruled.check
            error = "; ".join(x for x in (error, "the VLM's answer was empty") if x)
        text = "".join(out)
        step = conversation.trace_step
        exempt = [question, *(h.text for h in conversation.hints)]
        if step is not None:
            exempt += [json.dumps(c.arguments, ensure_ascii=False) + " " + c.result for c in step.tool_calls]
        names = unsupported_places(text, conversation, exempt)
        if names:
            note = caveat(names)
            yield note
            text += note
        return EngineAnswer(
            text=text,
            intent=intent,
            cited=cited,
            error=error,
            unsupported=names,
            model=self.model,
            prompt_hash=prompt_hash,
            check=check,
        )

    def _with_tools(
        self,
        question: str,
        conv: Conversation,
        tools: ToolRunnerT,
        photos: list[_Photo],
        offered: list[str],
        templates: _Templates,
        out: list[str],
    ) -> Generator[str, None, EngineAnswer]:
        chat = conv.locator.settings.chat
        n = len(conv.photos)
        messages = self._messages(self._prompt(question, conv, photos, templates, tools_on=True, facts=None))
        specs = tool_specs(offered, n)
        label = 0
        for round_ in range(chat.max_tool_rounds + 1):
            last = round_ == chat.max_tool_rounds
            reply = yield from self._ask(messages, specs, "none" if last else "auto", chat, out)
            calls = [] if last else reply.tool_calls
            if not calls:
                break
            messages.append(
                {
                    "role": "assistant",
                    "content": reply.content,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments},
                        }
                        for c in calls
                    ],
                }
            )
            crops: list[dict[str, Any]] = []
            for call in calls:
                label += 1
                content, crop = self._run_call(call, conv, tools, offered, f"T{label}.", chat)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
                if crop is not None:
                    crops.append(crop)
            if crops:
                messages.append(
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "The crops the zoom calls returned, in order:"},
                            *crops,
                        ],
                    }
                )
        return (
            yield from self._finish(
                question,
                conv,
                out,
                intent=None,
                cited=[],
                error=None,
                prompt_hash=templates.hash(transcript=False),
            )
        )

    def _with_rules(
        self,
        question: str,
        conv: Conversation,
        photos: list[_Photo],
        templates: _Templates,
        out: list[str],
        degraded: str | None,
    ) -> Generator[str, None, EngineAnswer]:
        """No tools: the rules answer first, and their findings join the digest."""
        chat = conv.locator.settings.chat
        step = conv.trace_step
        before = len(step.tool_calls) if step is not None else 0
        ruled = conv.rules.answer(question, conv.photos)
        useful = ruled.intent not in ("unknown", "help", "visual")
        calls = list(step.tool_calls[before:]) if step is not None else []
        facts = (ruled, calls) if useful else None
        prompt = self._prompt(question, conv, photos, templates, tools_on=False, facts=facts)
        if self.chats:
            yield from self._ask(self._messages(prompt), None, "auto", chat, out)
        else:
            text = self._generate(prompt, chat, key=f"chat#{len(conv.turns) + 1}")
            if text:
                out.append(text)
                yield text
        errors = [x for x in (degraded, ruled.error if useful else None) if x]
        return (
            yield from self._finish(
                question,
                conv,
                out,
                intent=ruled.intent if useful else None,
                cited=list(ruled.cited) if useful else [],
                error="; ".join(errors) or None,
                prompt_hash=templates.hash(transcript=not self.chats),
                check=ruled.check if useful else None,
            )
        )

    # -- requests --

    def _ask(
        self,
        messages: list[dict[str, Any]],
        specs: list[dict[str, Any]] | None,
        choice: str,
        chat: ChatSettings,
        out: list[str],
    ) -> Generator[str, None, ChatReply]:
        assert isinstance(self.backend, ChattingVLM)
        for attempt in range(2):
            gen = self.backend.chat(
                messages,
                tools=specs,
                tool_choice=choice,
                max_tokens=chat.max_tokens,
                temperature=chat.temperature,
                stream=chat.stream,
            )
            try:
                return (yield from _relay(gen, out))
            except VLMRequestRejectedError as exc:
                if out:
                    raise
                if specs and _TOOLS_REFUSED.search(str(exc)):
                    raise _ToolsRefused(str(exc)) from exc
                if attempt == 0 and _strip_crops(messages):
                    # Too many images for the server, or none in that place: the text alone, from now on.
                    self._crops_refused = True
                    log.info("%s refused the zoom crops (%s); sending the text only", self.model, exc)
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _generate(self, prompt: _Prompt, chat: ChatSettings, *, key: str) -> str:
        """One request through ``generate()``: the conversation flattened into one message."""
        text = prompt.templates.transcript.render(
            context=prompt.context,
            history=[{"question": t.question, "answer": t.answer} for t in prompt.history],
            question=prompt.question,
        )
        request = VLMRequest(
            key=key,
            variant="chat",
            system=prompt.system,
            text=text,
            images=prompt.images,
            n=1,
            temperature=chat.temperature,
            max_tokens=chat.max_tokens,
            structured=False,
            prompt_hash=prompt.templates.hash(transcript=True),
        )
        assert isinstance(self.backend, VLMBackend)
        [call] = self.backend.generate([request])
        if call.error:
            raise VLMError(f"the {self.backend.name} VLM could not answer: {call.error}")
        return call.samples[0].raw_text.strip() if call.samples else ""

    def _prompt(
        self,
        question: str,
        conv: Conversation,
        photos: list[_Photo],
        templates: _Templates,
        *,
        tools_on: bool,
        facts: tuple[RuleAnswer, Sequence[ToolCall]] | None,
    ) -> _Prompt:
        chat = conv.locator.settings.chat
        n = len(conv.photos)
        example = next(
            (e.id for p in conv.photos for e in p.prediction.evidence if e.usable and e.weight > 0),
            "text.place.1",
        )
        system = templates.system.render(
            n_photos=n,
            tools=tools_on,
            max_rounds=chat.max_tool_rounds,
            example_id=f"1:{example}" if n > 1 else example,
        )
        data, untrusted = digest(conv, facts)
        shown = [p.session.number for p in photos if p.image is not None]
        context = templates.context.render(
            n_photos=n, shown=shown, digest=data, untrusted_text=untrusted, rule_facts=facts is not None
        )
        history = conv.turns[-chat.max_history_turns :] if chat.max_history_turns else []
        return _Prompt(
            templates=templates,
            system=system,
            context=context,
            images=[p.image for p in photos if p.image is not None],
            history=list(history),
            question=question,
        )

    def _messages(self, prompt: _Prompt) -> list[dict[str, Any]]:
        """Chat messages: the system message; the photos, the context and the first question kept;
        then the turns since, and the question."""
        images = [{"type": "image_url", "image_url": {"url": self._url(im)}} for im in prompt.images]
        history = prompt.history
        first = history[0].question if history else prompt.question
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": prompt.system},
            {
                "role": "user",
                "content": [*images, {"type": "text", "text": f"{prompt.context}\n\nQuestion: {first}"}],
            },
        ]
        if history:
            messages.append({"role": "assistant", "content": history[0].answer})
            for t in history[1:]:
                messages += [
                    {"role": "user", "content": t.question},
                    {"role": "assistant", "content": t.answer},
                ]
            messages.append({"role": "user", "content": prompt.question})
        return messages

    def _run_call(
        self,
        call: ChatToolCall,
        conv: Conversation,
        tools: ToolRunnerT,
        offered: list[str],
        label: str,
        chat: ChatSettings,
    ) -> tuple[str, dict[str, Any] | None]:
        """Run one tool call the model made; the ``tool`` message and a crop image part, if any.
        Whatever goes wrong goes back to the model as an error result, and into the turn's trace."""
        step = conv.trace_step
        before = len(step.tool_calls) if step is not None else 0
        args: Any = None
        try:
            try:
                args = json.loads(call.arguments or "{}")
            except ValueError as exc:
                raise ToolQueryError(f"{call.name}: the arguments are not JSON ({exc})") from None
            if not isinstance(args, dict):
                raise ToolQueryError(f"{call.name}: the arguments must be a JSON object")
            if call.name not in offered:
                raise ToolQueryError(f"no tool {call.name!r} was offered (offered: {', '.join(offered)})")
            number = 1
            if len(conv.photos) > 1:
                raw = args.pop("photo", None)
                if not isinstance(raw, int) or isinstance(raw, bool):
                    raise ToolQueryError(
                        f"{call.name}: give the photo's number as `photo` (1 to {len(conv.photos)})"
                    )
                number = raw
            photo = conv.photo(number)
            result = tools(photo, call.name, args)
            content = tool_result_message(call.name, number, result, label, chat.max_tool_result_chars)
            crop = None
            if isinstance(result, ZoomResult) and chat.send_crops and not self._crops_refused:
                crop = {"type": "image_url", "image_url": {"url": self.backend_url(result.image())}}
            return content, crop
        except Exception as exc:  # a tool's failure is the model's to read, never the end of the turn
            if not isinstance(exc, GeoSleuthError):
                log.warning("chat tool call %s failed unexpectedly", call.name, exc_info=True)
            if step is not None and len(step.tool_calls) == before:
                recorded = args if isinstance(args, dict) else {"raw": call.arguments[:500]}
                step.tool_calls.append(ToolCall(name=call.name, arguments=recorded, error=str(exc)))
            return tool_error_message(call.name, exc), None

    # -- photos and images --

    def _photos(self, conv: Conversation) -> list[_Photo]:
        out = []
        for p in conv.photos:
            image: Image.Image | None = None
            names: list[str] = []
            try:
                conv.state_of(p)
            except GeoSleuthError as exc:  # a loaded conversation whose photo is gone: the digest only
                log.info("photo %d: no pixels or tools for the chat (%s)", p.number, exc)
            else:
                assert p.state is not None
                image = p.state.image.rgb
                ctx = p.context(conv.locator, TraceStep(node="chat tools", seconds=0.0))
                names = TOOLS.available(ctx).names
            out.append(_Photo(p, image, names))
        return out

    def _url(self, image: Image.Image) -> str:
        """The photo's data URL, encoded once per photo (about 10-100 ms each)."""
        hit = self._urls.get(id(image))
        if hit is not None and hit[0] is image:
            return hit[1]
        if len(self._urls) > 32:
            self._urls.clear()
        url = self.backend_url(image)
        self._urls[id(image)] = (image, url)  # the image is kept, so its id is not reused
        return url

    def backend_url(self, image: Image.Image) -> str:
        """``image`` as the backend sends images."""
        assert isinstance(self.backend, ChattingVLM)
        return self.backend.image_url(image)


def _relay(gen: Generator[str, None, ChatReply], out: list[str]) -> Generator[str, None, ChatReply]:
    """Pass on what ``gen`` yields, recording it in ``out``; a space first when a new round's text
    would run into the last round's."""
    first = True
    try:
        while True:
            try:
                piece = next(gen)
            except StopIteration as stop:
                reply: ChatReply = stop.value
                return reply
            if first and out and out[-1] and not out[-1][-1].isspace() and not piece[:1].isspace():
                out.append(" ")
                yield " "
            first = False
            out.append(piece)
            yield piece
    finally:
        gen.close()  # the answer was cancelled: so is the request


def _strip_crops(messages: list[dict[str, Any]]) -> bool:
    """Drop the zoom-crop messages; whether there were any."""
    keep = [
        m
        for m in messages
        if not (
            m.get("role") == "user"
            and isinstance(m.get("content"), list)
            and m["content"]
            and m["content"][0].get("text", "").startswith("The crops the zoom calls returned")
        )
    ]
    dropped = len(keep) != len(messages)
    messages[:] = keep
    return dropped


__all__ = [
    "Support",
    "UntrustedBlock",
    "VLMChatEngine",
    "caveat",
    "digest",
    "tool_specs",
    "unsupported_places",
    "untrusted_line",
]
