"""The typed vocabulary every layer speaks: coordinates, evidence, candidates and predictions.

All models round-trip through JSON (``Model.model_validate_json(m.model_dump_json()) == m``).
Models that a program produces are strict (validated ranges, no extra fields); field descriptions
double as the JSON schema that later layers send to a VLM.
"""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_STRICT = ConfigDict(extra="forbid", frozen=False, ser_json_inf_nan="strings")


class LatLon(BaseModel):
    """A WGS-84 point in decimal degrees. Latitude first, always named, never a bare tuple."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lat: float = Field(ge=-90.0, le=90.0, description="Latitude in decimal degrees, north positive.")
    lon: float = Field(ge=-180.0, le=180.0, description="Longitude in decimal degrees, east positive.")

    @field_validator("lat", "lon")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"coordinate must be a finite number, got {v!r}")
        return float(v)

    def __str__(self) -> str:
        return f"{self.lat:.5f}, {self.lon:.5f}"

    def dms(self) -> str:
        """Degrees, minutes, seconds, as people write them: 48°51'28.2"N 2°17'49.2"E."""

        def part(value: float, pos: str, neg: str) -> str:
            hemi = pos if value >= 0 else neg
            value = abs(value)
            d = int(value)
            m_float = (value - d) * 60
            m = int(m_float)
            s = (m_float - m) * 60
            if round(s, 1) >= 60.0:
                s, m = 0.0, m + 1
            if m >= 60:
                m, d = m - 60, d + 1
            return f"{d}°{m:02d}'{s:04.1f}\"{hemi}"

        return f"{part(self.lat, 'N', 'S')} {part(self.lon, 'E', 'W')}"


# --- regions an evidence item can imply ---------------------------------------------------------


class CircleRegion(BaseModel):
    """Everything within ``radius_km`` of ``center``."""

    model_config = _STRICT
    kind: Literal["circle"] = "circle"
    center: LatLon
    radius_km: float = Field(gt=0)


class BoxRegion(BaseModel):
    """A latitude/longitude box. ``west > east`` means the box crosses the antimeridian.
    A band of longitudes (implied by a UTC offset) is a box from the south to the north pole."""

    model_config = _STRICT
    kind: Literal["box"] = "box"
    south: float = Field(ge=-90, le=90)
    north: float = Field(ge=-90, le=90)
    west: float = Field(ge=-180, le=180)
    east: float = Field(ge=-180, le=180)

    def contains(self, point: LatLon) -> bool:
        if not (self.south <= point.lat <= self.north):
            return False
        if self.west <= self.east:
            return self.west <= point.lon <= self.east
        return point.lon >= self.west or point.lon <= self.east


Region = Annotated[CircleRegion | BoxRegion, Field(discriminator="kind")]


# --- places -------------------------------------------------------------------------------------


class Place(BaseModel):
    """A reverse-geocoded place: the nearest populated place of the offline gazetteer."""

    model_config = _STRICT
    name: str = Field(description="Nearest populated place.")
    admin1: str | None = Field(default=None, description="First-level subdivision (state, region).")
    admin2: str | None = Field(default=None, description="Second-level subdivision (county, district).")
    country_code: str = Field(description="ISO 3166-1 alpha-2 code.")
    country: str = Field(description="Country name in English.")
    continent_code: str | None = None
    continent: str | None = None
    distance_km: float = Field(ge=0, description="Distance from the point to the named place.")
    on_land: bool | None = Field(default=None, description="Whether the point is on land (1 km grid).")

    def short(self) -> str:
        parts = [self.name]
        if self.admin1 and self.admin1 != self.name:
            parts.append(self.admin1)
        parts.append(self.country)
        return ", ".join(parts)


# --- evidence -----------------------------------------------------------------------------------


class EvidenceKind(StrEnum):
    GPS = "gps"
    ALTITUDE = "altitude"
    BEARING = "bearing"
    TIMESTAMP = "timestamp"
    UTC_OFFSET = "utc-offset"
    CAMERA = "camera"
    TEXT = "text"
    LANGUAGE = "language"
    SCRIPT = "script"
    PLACE_NAME = "place-name"
    COUNTRY_NAME = "country-name"
    BRAND = "brand"
    POSTCODE = "postcode"
    PHONE = "phone"
    DOMAIN = "domain"
    CURRENCY = "currency"
    STREET_TYPE = "street-type"
    CONSISTENCY = "consistency"
    PROMPT_INJECTION = "prompt-injection"
    GALLERY = "gallery"
    NEIGHBOURS = "neighbours"
    VLM = "vlm"
    TOOL = "tool"
    USER_HINT = "user-hint"


class Evidence(BaseModel):
    """One observation a tool made, and what it implies about the location."""

    model_config = _STRICT
    id: str = Field(description="Stable id within one prediction, e.g. 'exif.gps' or 'clue.3'.")
    tool: str = Field(description="The tool that observed it: exif, ocr, langid, clues, ...")
    kind: EvidenceKind
    value: str = Field(description="What was observed, as a person would read it.")
    weight: float = Field(
        ge=0.0,
        le=1.0,
        description="How much it should count: the chance the clue is genuine and informative.",
    )
    point: LatLon | None = Field(default=None, description="A point it implies, if any.")
    region: Region | None = Field(default=None, description="A region it implies, if any.")
    countries: dict[str, float] = Field(
        default_factory=dict,
        description="Countries it implies: ISO 3166-1 alpha-2 code -> relative likelihood in (0, 1], 1 = best.",
    )
    usable: bool = Field(default=True, description="False when the value is broken and must not be used.")
    reason: str | None = Field(default=None, description="Why it is not usable, or a caveat.")
    details: dict[str, Any] = Field(default_factory=dict, description="Raw values behind the observation.")

    @field_validator("countries")
    @classmethod
    def _check_countries(cls, v: dict[str, float]) -> dict[str, float]:
        for code, like in v.items():
            if len(code) != 2 or not code.isalpha() or not code.isupper():
                raise ValueError(f"country codes must be ISO alpha-2 in capitals, got {code!r}")
            if not (0.0 < like <= 1.0):
                raise ValueError(f"likelihood for {code} must be in (0, 1], got {like!r}")
        return v

    def top_countries(self, n: int = 5) -> list[str]:
        return [c for c, _ in sorted(self.countries.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


# --- candidates and predictions -----------------------------------------------------------------


class Neighbour(BaseModel):
    """A geotagged photo of a neighbour index, as retrieved for a query image."""

    model_config = _STRICT
    point: LatLon
    similarity: float = Field(description="Cosine similarity of the embeddings (1 = same, -1 = opposite).")
    key: str = Field(description="The photo's id in the index (its path or image id).")
    place: Place | None = Field(default=None, description="Reverse-geocoded place of the point.")
    source_place: dict[str, str] = Field(
        default_factory=dict, description="Place fields given by the index's source (city, country...)."
    )


class CandidateSource(StrEnum):
    EXIF = "exif"
    TEXT_CLUE = "text-clue"
    GAZETTEER = "gazetteer"
    GALLERY = "gallery"
    NEIGHBOUR = "neighbour"
    VLM = "vlm"
    TOOL = "tool"
    HYPOTHESIS = "hypothesis"  # a place someone asked about (check_place), not evidence
    PRIOR = "prior"  # where photos are most often taken: the guess when nothing else points anywhere


class Granularity(StrEnum):
    EXACT = "exact"
    CITY = "city"
    REGION = "region"
    COUNTRY = "country"
    CONTINENT = "continent"


class Candidate(BaseModel):
    """A possible location, from any source, with its score and calibrated-as-we-can probability."""

    model_config = _STRICT
    point: LatLon
    source: CandidateSource
    label: str = Field(description="What the candidate stands for, e.g. 'Paris (place named in the image)'.")
    granularity: Granularity
    score: float = Field(description="Unnormalised log-score used for ranking.")
    probability: float = Field(ge=0.0, le=1.0, description="Probability that this is the right answer.")
    radius_km: float = Field(ge=0.0, description="Radius holding about 80% of the candidate's uncertainty.")
    place: Place | None = None
    evidence_ids: list[str] = Field(default_factory=list, description="Evidence that supports it.")
    notes: list[str] = Field(default_factory=list, description="Why it was promoted or demoted.")
    signals: dict[str, float] = Field(
        default_factory=dict,
        description="The verifier's signals for it (image-GPS similarity, neighbour density, VLM "
        "consistency, hard-evidence agreement...), each a log-score contribution.",
    )
    sources: list[str] = Field(
        default_factory=list, description="Every source that proposed this place (merged duplicates)."
    )


class ConfidenceRegion(BaseModel):
    """The smallest set of ranked candidate circles that together hold ``level`` of the probability:
    nested regions at 50/80/95% say how far to trust the point, and feed Recall-vs-Area."""

    model_config = _STRICT
    level: float = Field(gt=0.0, le=1.0)
    circles: list[CircleRegion]
    area_km2: float = Field(ge=0.0, description="Area of the union of the circles (overlaps counted once).")


class TextLine(BaseModel):
    """One line (or word group) of recognised text."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    text: str
    confidence: float = Field(ge=0.0, le=1.0)
    box: tuple[float, float, float, float] = Field(
        description="x0, y0, x1, y1 in pixels of the upright image that was read."
    )
    alternatives: tuple[str, ...] = Field(
        default=(), description="Other readings of the same line (another engine, or the line read whole)."
    )
    script: str | None = Field(
        default=None,
        description="ISO 15924 code of the script most of its letters are in (Latn, Cyrl, Hang, Jpan, ...); "
        "filled from the text when not given, None when it has no letters.",
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_script(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("script") is None and isinstance(data.get("text"), str):
            from geosleuth.tools.ocr.scripts import text_script

            data = {**data, "script": text_script(data["text"])}
        return data


class ToolCall(BaseModel):
    """One agent-tool call: its arguments, what it returned (in short), and what it cost."""

    model_config = _STRICT
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    result: str = Field(default="", description="A short account of the result.")
    error: str | None = Field(default=None, description="Why the call failed, if it did.")
    seconds: float = Field(default=0.0, ge=0.0)
    cost: dict[str, int] = Field(default_factory=dict, description="Budget units used, e.g. tool_calls: 1.")


class UsageReport(BaseModel):
    """What one image used, against the budgets."""

    model_config = _STRICT
    vlm_requests: int = Field(default=0, ge=0, description="VLM requests (prompt variants, tool choice).")
    tool_calls: int = Field(default=0, ge=0, description="Budgeted agent-tool calls (network, OCR zoom).")
    seconds: float = Field(default=0.0, ge=0.0)
    exceeded: str | None = Field(default=None, description="The budget that stopped the run, if any.")


class TraceStep(BaseModel):
    """One step of the planner, for `--trace`: what went in, what came out, what it called."""

    model_config = _STRICT
    node: str
    seconds: float = Field(ge=0.0)
    summary: str = ""
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    calls: list[str] = Field(default_factory=list, description="External calls made (tools, VLM requests).")
    tool_calls: list[ToolCall] = Field(default_factory=list, description="Agent-tool calls, in order.")


class StageStatus(StrEnum):
    RAN = "ran"
    SKIPPED = "skipped"
    UNAVAILABLE = "unavailable"
    FAILED = "failed"


class StageReport(BaseModel):
    """What one pipeline stage did. Every stage, run or not, gets one, so a reader knows what is missing."""

    model_config = _STRICT
    name: str
    status: StageStatus
    detail: str = ""
    engine: str | None = None
    seconds: float = Field(default=0.0, ge=0.0)


class ConfidenceLevel(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    NONE = "none"


class Provenance(BaseModel):
    model_config = _STRICT
    geosleuth_version: str
    python: str
    created_at: datetime
    packages: dict[str, str] = Field(default_factory=dict)
    models: dict[str, str] = Field(default_factory=dict)
    config_hash: str
    prompt_hash: str | None = Field(
        default=None, description="sha256 of the VLM prompt templates, if a VLM ran."
    )
    image_sha256: str | None = Field(default=None, description="sha256 of the photo's bytes.")
    image_size: tuple[int, int] | None = Field(
        default=None, description="Width, height of the upright photo."
    )


class Redaction(BaseModel):
    """What was taken out of a prediction before it was shared (``geosleuth report --redact-exif``)."""

    model_config = _STRICT
    kind: Literal["exif"] = "exif"
    evidence_ids: list[str] = Field(
        default_factory=list, description="Evidence whose values were replaced by a marker."
    )
    coarsened_deg: float | None = Field(
        default=None,
        description="Grid (degrees) the answer's coordinates were rounded to, when they came from the GPS.",
    )
    note: str = Field(description="What was done, in plain words.")


class Prediction(BaseModel):
    """The answer for one image: the best candidate (or none), the alternatives, and why."""

    model_config = _STRICT
    source: str = Field(description="The path, '<stdin>' or '<bytes>' the image came from.")
    status: Literal["located", "insufficient_evidence"]
    basis: Literal["exif-gps", "evidence"] | None = Field(
        default=None, description="What the best answer rests on: camera GPS metadata or inferred evidence."
    )
    best: Candidate | None
    candidates: list[Candidate]
    confidence: float = Field(ge=0.0, le=1.0)
    confidence_level: ConfidenceLevel
    evidence: list[Evidence]
    explanation: str
    missing: list[str] = Field(
        default_factory=list, description="Evidence that was looked for and not found."
    )
    warnings: list[str] = Field(default_factory=list)
    stages: list[StageReport]
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per stage and in total.")
    vlm: VLMReport | None = Field(
        default=None, description="The VLM's calls, samples and rationale, if it ran."
    )
    regions: list[ConfidenceRegion] = Field(
        default_factory=list, description="Nested confidence regions (e.g. 50/80/95%), ranked circles."
    )
    trace: list[TraceStep] = Field(default_factory=list, description="The planner's steps (with --trace).")
    usage: UsageReport = Field(default_factory=UsageReport, description="VLM requests, tool calls, seconds.")
    text_lines: list[TextLine] = Field(
        default_factory=list, description="The text read in the photo, with boxes in its pixels (OCR, zoom)."
    )
    provenance: Provenance
    redaction: Redaction | None = Field(
        default=None, description="What was removed before sharing (None: nothing was)."
    )

    def stage(self, name: str) -> StageReport | None:
        return next((s for s in self.stages if s.name == name), None)


class VLMGuess(BaseModel):
    """A VLM's structured answer. The field order is the order of reasoning (clues, then continent
    down to city, then coordinates), because servers that follow the schema generate fields in order.
    Its JSON schema is what geosleuth sends as the structured-output constraint."""

    model_config = ConfigDict(extra="ignore")
    clues_used: list[str] = Field(
        default_factory=list,
        description="Visual and textual clues seen: script, language, signs, road markings, driving side, "
        "vegetation, architecture, climate, sun.",
    )
    rationale: str = Field(default="", description="How the clues lead from continent to city, briefly.")
    continent: str | None = Field(default=None, description="Continent.")
    country: str | None = Field(default=None, description="Country, in English.")
    region: str | None = Field(default=None, description="State, province or region.")
    city: str | None = Field(default=None, description="City or nearest town.")
    latitude: float = Field(ge=-90.0, le=90.0, description="Latitude in decimal degrees, north positive.")
    longitude: float = Field(ge=-180.0, le=180.0, description="Longitude in decimal degrees, east positive.")
    radius_km: float | None = Field(
        default=None, gt=0.0, le=20038.0, description="Radius in km that likely holds the true location."
    )
    confidence: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Chance the location is within radius_km."
    )

    @field_validator("latitude", "longitude", "radius_km", "confidence")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError(f"must be a finite number, got {v!r}")
        return None if v is None else float(v)

    @property
    def point(self) -> LatLon:
        return LatLon(lat=self.latitude, lon=self.longitude)


class TokenUsage(BaseModel):
    model_config = _STRICT
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


ParseMethod = Literal["json", "repaired-json", "free-text", "failed"]


class VLMSample(BaseModel):
    """One sampled answer: the parsed guess, or why there is none, and always the raw text."""

    model_config = _STRICT
    index: int = Field(ge=0, description="Position among the call's samples.")
    raw_text: str
    guess: VLMGuess | None = None
    parse: ParseMethod = "failed"
    finish_reason: str | None = None
    error: str | None = Field(default=None, description="Why the sample is unusable (guess is None).")
    error_type: str | None = Field(default=None, description="Name of the geosleuth error class.")
    notes: list[str] = Field(default_factory=list, description="Repairs the parser made, caveats.")
    set_aside: str | None = Field(
        default=None, description="Why a parsed guess was not used (a placeholder, an echo of injected text)."
    )

    @property
    def usable(self) -> bool:
        return self.guess is not None


class VLMCall(BaseModel):
    """What came back for one :class:`VLMRequest`."""

    model_config = _STRICT
    key: str
    variant: str
    model: str
    backend: str
    prompt_hash: str = ""
    n: int = Field(ge=1)
    temperature: float
    structured: Literal["structured_outputs", "response_format", "none"] = Field(
        description="How the JSON schema was sent (none: the parser had to read free text)."
    )
    samples: list[VLMSample] = Field(default_factory=list)
    usage: TokenUsage = Field(default_factory=TokenUsage)
    latency_s: float = Field(default=0.0, ge=0.0, description="Wall time including retries.")
    attempts: int = Field(default=1, ge=0, description="HTTP attempts made (retries + 1).")
    error: str | None = Field(default=None, description="Why the whole request failed.")
    error_type: str | None = None

    @property
    def usable(self) -> list[VLMSample]:
        return [s for s in self.samples if s.guess is not None]

    def raise_for_error(self) -> None:
        """Raise the typed error this call recorded (the call's own, else the first sample's)."""
        from geosleuth import errors

        for name, message in [(self.error_type, self.error)] + [
            (s.error_type, s.error) for s in self.samples
        ]:
            if message:
                cls = getattr(errors, name or "", None)
                if not (isinstance(cls, type) and issubclass(cls, errors.VLMError)):
                    cls = errors.VLMError
                raise cls(f"{self.key}: {message}")


class VLMReport(BaseModel):
    """Everything the VLM stage did for one image: every call with every raw answer, the totals, and
    what the samples agree on."""

    model_config = _STRICT
    model: str
    backend: str
    prompt_hash: str = Field(description="sha256 of the prompt templates used.")
    calls: list[VLMCall] = Field(default_factory=list)
    usage: TokenUsage = Field(default_factory=TokenUsage)
    seconds: float = Field(default=0.0, ge=0.0)
    usable_samples: int = Field(default=0, ge=0)
    total_samples: int = Field(default=0, ge=0)
    consensus: LatLon | None = Field(default=None, description="Where most usable samples agree.")
    consensus_share: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of usable samples near it."
    )
    rationale: str = Field(default="", description="The rationale of the sample closest to the consensus.")
    discarded: list[str] = Field(default_factory=list, description="Samples set aside, and why.")


class LocateError(BaseModel):
    """A failed input in batch mode: the source and one readable line."""

    model_config = _STRICT
    source: str
    error: str
    error_type: str


Prediction.model_rebuild()
