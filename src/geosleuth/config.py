"""Settings, with one explicit precedence (highest first):

1. flags / keyword arguments (``load_settings(ocr={"engine": "tesseract"})``, CLI options);
2. environment variables: ``GEOSLEUTH_<FIELD>``, nested with ``__`` (``GEOSLEUTH_OCR__ENGINE=rapidocr``);
3. a TOML config file: ``--config FILE``, else ``$GEOSLEUTH_CONFIG``, else ``./geosleuth.toml``, else
   ``~/.config/geosleuth/config.toml`` (the first that exists);
4. the defaults below.

Nothing here opens a network connection or loads a model.
"""

from __future__ import annotations

import contextvars
import difflib
import hashlib
import json
import logging
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from geosleuth.errors import ConfigError
from geosleuth.gazetteer import default_cache_dir

ENV_PREFIX = "GEOSLEUTH_"
CONFIG_ENV = "GEOSLEUTH_CONFIG"
# GEOSLEUTH_* variables that are not settings: the config file's path, the browser the report tests
# drive (geosleuth.testing.browser) and the local copy of Leaflet they serve (tests/conftest.py).
OTHER_ENV = frozenset({CONFIG_ENV, "GEOSLEUTH_CHROMIUM", "GEOSLEUTH_LEAFLET_DIR"})

log = logging.getLogger(__name__)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OCRSettings(_Section):
    engine: Literal["auto", "hybrid", "rapidocr", "tesseract", "none"] = Field(
        default="auto",
        description="auto: RapidOCR detection + Tesseract reading when both are installed, else either one.",
    )
    languages: list[str] = Field(
        default_factory=list,
        description="Tesseract language packs to use (e.g. ['eng', 'fra']); empty means all installed.",
    )
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0, description="Drop words read below this.")
    max_side: int = Field(default=2000, ge=64, description="Downscale images to this longest side first.")
    tesseract_cmd: str = Field(default="tesseract", description="Tesseract executable (name or path).")
    tesseract_api: bool = Field(
        default=True,
        description="Run Tesseract in-process through libtesseract (models loaded once); false: run the program.",
    )
    timeout_s: float = Field(default=60.0, gt=0)
    narrow_latin_packs: bool = Field(
        default=True,
        description="Hybrid engine: read Latin-script lines with English and the (at most 2) languages "
        "CLD2 finds in RapidOCR's reading of them, not with every installed Latin pack (several times "
        "faster on text-rich photos; unclear text still gets every pack).",
    )
    tiles: Literal["off", "auto", "always"] = Field(
        default="off",
        description="Look again for small text in 2x2 overlapping tiles read at twice the size (hybrid "
        "engine): auto when the first pass finds under two confident lines, always, or off. "
        "Measured on the Im2GPS3k dev photos by bench/ocr_tiles.py: see the README.",
    )


class LangIDSettings(_Section):
    engine: Literal["auto", "cld2", "lingua", "none"] = Field(
        default="auto", description="auto: pycld2 if installed; lingua is more accurate but needs ~1 GB."
    )
    lingua_languages: list[str] = Field(
        default_factory=lambda: [
            "en",
            "fr",
            "de",
            "es",
            "it",
            "pt",
            "nl",
            "pl",
            "cs",
            "sk",
            "hu",
            "ro",
            "sv",
            "da",
            "nb",
            "fi",
            "et",
            "lv",
            "lt",
            "hr",
            "sl",
            "sr",
            "bg",
            "ru",
            "uk",
            "el",
            "tr",
            "ar",
            "he",
            "fa",
            "hi",
            "bn",
            "th",
            "vi",
            "id",
            "ms",
            "ja",
            "ko",
            "zh",
            "ka",
            "hy",
            "ca",
            "eu",
            "ga",
            "cy",
            "is",
            "sq",
            "mk",
            "tl",
            "sw",
            "af",
        ],
        description="ISO 639-1 codes lingua is restricted to (memory grows with each).",
    )


class RetrievalSettings(_Section):
    image_encoder: str | None = Field(
        default=None, description="CLIP/SigLIP hub id or local path, e.g. openai/clip-vit-large-patch14."
    )
    geoclip: bool = Field(default=False, description="Use GeoCLIP's heads (needs CLIP ViT-L/14 weights).")
    index_dir: Path | None = Field(default=None, description="Neighbour index built by `geosleuth index`.")
    gallery: Path | None = Field(
        default=None, description="GPS gallery CSV/Parquet (lat, lon[, weight]); default GeoCLIP's 100K."
    )
    gallery_top_k: int = Field(default=20, ge=1, le=1000)
    neighbours_k: int = Field(default=20, ge=1, le=1000)
    refine: bool = Field(default=True, description="Re-score points around the best gallery matches.")
    device: str = Field(default="cpu", description="torch device for the encoders (cpu, cuda, cuda:1...).")


class VLMSettings(_Section):
    backend: Literal["openai", "transformers"] = Field(
        default="openai",
        description="openai: any OpenAI-compatible server (vLLM, Ollama, llama.cpp, OpenAI); "
        "transformers: a small VLM in this process (vlm.model is then a folder or hub id in the HF cache).",
    )
    base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1; several replicas of one "
        "model separated by commas (each request goes to the least busy).",
    )
    model: str | None = Field(
        default=None,
        description="Model name the server knows (default: its only model), or for the transformers "
        "backend a folder or hub id, e.g. Qwen/Qwen2.5-VL-3B-Instruct",
    )
    server: Literal["auto", "vllm", "openai", "ollama", "llamacpp", "generic"] = Field(
        default="auto", description="Server kind, for its quirks; auto asks the server's /models."
    )
    api_key: SecretStr | None = Field(default=None, description="Bearer token, if the server needs one.")
    timeout_s: float = Field(default=120.0, gt=0, description="Per HTTP request.")
    max_retries: int = Field(default=4, ge=0, description="Retries on connection errors, 429 and 5xx.")
    max_concurrency: int = Field(default=8, ge=1, description="Requests in flight at once.")
    samples: int = Field(default=5, ge=1, le=64, description="Samples per prompt variant (n).")
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, description="G3 samples at 1.2.")
    top_p: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="Sent with every request, so a checkpoint's own near-greedy defaults cannot make "
        "the samples identical.",
    )
    max_tokens: int = Field(default=1024, ge=16, description="Per sample; answers cut off here are unusable.")
    rag_k: list[int] = Field(
        default_factory=lambda: [0, 5, 10, 15],
        description="Prompt variants: 0 is zero-shot; k > 0 adds k similar and k dissimilar neighbours.",
    )
    structured_output: bool = Field(default=True, description="Send the guess JSON schema to the server.")
    evidence_in_prompt: bool = Field(
        default=True, description="Give the model the tool evidence and the text read from the image."
    )
    reference_images: int = Field(
        default=0, ge=0, le=16, description="Attach thumbnails of this many similar neighbours (if on disk)."
    )
    image_max_side: int = Field(default=1024, ge=64, description="Resize the photo to this longest side.")
    prompt_dir: Path | None = Field(
        default=None, description="Folder overriding the packaged prompt templates."
    )
    seed: int | None = Field(default=None, description="Sampling seed, for servers that honour it.")
    device: str = Field(default="auto", description="transformers backend: cpu, cuda, or auto.")
    tool_calling: bool = Field(
        default=True,
        description="Let the VLM choose the planner's checks through tool calling (vLLM: serve with "
        "--enable-auto-tool-choice --tool-call-parser ...); a rule chooses when it cannot.",
    )


class ToolSettings(_Section):
    """Network tools of the planner's investigation step. ``offline = true`` turns them all off."""

    nominatim_url: str = Field(
        default="https://nominatim.openstreetmap.org", description="Nominatim server (geocoding)."
    )
    overpass_url: str = Field(
        default="https://overpass-api.de/api/interpreter", description="OpenStreetMap Overpass API endpoint."
    )
    user_agent: str = Field(
        default="geosleuth/0.1 (+https://github.com/geosleuth/geosleuth)",
        description="Sent with every request; Nominatim's usage policy requires an identifying one.",
    )
    timeout_s: float = Field(default=20.0, gt=0, description="Per request.")
    retries: int = Field(default=2, ge=0, description="Retries on connection errors, 429 and 5xx.")
    min_interval_s: float = Field(
        default=1.0,
        ge=0.0,
        description="At least this long between requests to one service (Nominatim: 1 s).",
    )
    cache: bool = Field(default=True, description="Keep answers on disk (cache_dir/tools) and reuse them.")
    overpass_radius_m: int = Field(
        default=3000, ge=10, le=50_000, description="Search radius around a candidate."
    )
    searxng_url: str | None = Field(
        default=None,
        description="A self-hosted SearXNG instance for web search, e.g. http://127.0.0.1:8888 (its "
        "settings.yml must list json in search.formats); unset: no web search.",
    )
    web_search_results: int = Field(
        default=5, ge=1, le=20, description="Results per web search (at most 20: one SearXNG page)."
    )

    @field_validator("searxng_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # GEOSLEUTH_TOOLS__SEARXNG_URL= (empty) turns web search off, as leaving it unset does.
        return None if isinstance(value, str) and not value.strip() else value


class VerifierSettings(_Section):
    """How the verifier weighs its signals into one probability (log-linear; fit with `geosleuth
    verifier fit`)."""

    weights: dict[str, float] = Field(
        default_factory=dict,
        description="Weight per signal name; missing names use the built-in defaults (see agents/verifier.py).",
    )
    weights_file: Path | None = Field(
        default=None, description="Weights fitted by `geosleuth verifier fit` (JSON); overrides the defaults."
    )
    merge_km: float = Field(default=10.0, ge=0.0, description="Candidates closer than this are one place.")
    region_levels: list[float] = Field(
        default_factory=lambda: [0.5, 0.8, 0.95], description="Probability levels of the nested regions."
    )
    investigate_below: float = Field(
        default=0.6, ge=0.0, le=1.0, description="The planner investigates when the best is less likely."
    )


class FusionSettings(_Section):
    """How the evidence-only fusion (agents/fusion.py) weighs the clues."""

    prior: Literal["photos", "population"] = Field(
        default="photos",
        description="Prior over countries: where photos are taken (GeoCLIP's MP-16 gallery, "
        "data/photo_prior.json) or population (the model before), each to the power fusion.weights sets (0.4 by hand).",
    )
    weights: Literal["hand", "fitted"] = Field(
        default="hand",
        description="Clue weights: as set by hand, or fitted on labelled photos (data/fusion_weights.json, "
        "scripts/fit_fusion.py).",
    )


class BudgetSettings(_Section):
    max_vlm_calls: int = Field(
        default=40, ge=0, description="VLM requests per image (prompt variants, and the tool choice)."
    )
    max_tool_calls: int = Field(
        default=20, ge=0, description="Agent-tool calls per image (network requests, zoom OCR)."
    )
    max_seconds: float = Field(default=300.0, gt=0, description="Wall time per image; then the best so far.")


class ChatSettings(_Section):
    """Conversations about photos (``geosleuth chat``, :class:`geosleuth.chat.Conversation`) when a
    VLM answers. They change no prediction, so they are not part of the settings' fingerprint."""

    max_tool_rounds: int = Field(
        default=4,
        ge=0,
        le=16,
        description="Rounds of tool calls the VLM may make for one question before it must answer "
        "(0: no tools offered).",
    )
    max_history_turns: int = Field(
        default=8, ge=0, le=100, description="Earlier questions and answers sent with each question."
    )
    max_tokens: int = Field(default=1024, ge=16, description="Per answer (and per tool-calling round).")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0: the same answer every time.")
    stream: bool = Field(
        default=True, description="Stream answers as they are written (a server that refuses gets one piece)."
    )
    max_tool_result_chars: int = Field(
        default=4000, ge=200, description="A tool result sent back to the VLM is cut to about this size."
    )
    send_crops: bool = Field(
        default=True,
        description="Show the VLM the crop a zoom made (as an image; dropped if the server refuses it).",
    )


class ServeSettings(_Section):
    """The HTTP service (``geosleuth serve``, :mod:`geosleuth.service`). It changes no prediction, so
    it is not part of the settings' fingerprint."""

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8080, ge=0, le=65535, description="Port to listen on (0: any free one).")
    workers: int = Field(default=2, ge=1, le=64, description="Photos located at the same time.")
    queue_size: int = Field(
        default=16, ge=1, description="Locate requests waiting or running at once; beyond, 503 busy."
    )
    database: str | None = Field(
        default=None,
        description="Where predictions, jobs and chats are kept: a SQLite file path or a "
        "postgresql://... URL (default: service.sqlite3 in the cache dir).",
    )
    max_upload_mb: float = Field(default=20.0, gt=0, description="Largest upload or fetched photo (MB).")
    max_job_images: int = Field(default=100, ge=1, description="Images one job may hold.")

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes (MiB)."""
        return int(self.max_upload_mb * 1024 * 1024)

    job_lease_s: float = Field(
        default=30.0,
        ge=0.1,
        description="A job image an instance is working on stays its own for this long, renewed every "
        "third of it; unrenewed (the instance died), another instance on the database takes it over.",
    )
    allow_private_urls: bool = Field(
        default=False,
        description="Fetch photo URLs on loopback, private and link-local addresses (closed deployments only).",
    )
    url_timeout_s: float = Field(default=10.0, gt=0, description="Total time to fetch one photo URL.")
    api_key_file: Path | None = Field(
        default=None,
        description="API keys, one a line (a key, or sha256:<hex> of one); then every /v1 request "
        "needs Authorization: Bearer <key>.",
    )
    rate_limit_per_minute: float = Field(
        default=0.0, ge=0, description="Requests per API key (or client address) a minute; 0: no limit."
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS (off when empty)."
    )


_config_file_var: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "geosleuth_config_file", default=None
)


class _TomlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.path = path
        self.data: dict[str, Any] = {}
        if path is not None:
            try:
                self.data = tomllib.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError as exc:
                raise ConfigError(
                    f"config file {str(path)!r} does not exist; check --config / ${CONFIG_ENV}"
                ) from exc
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc
            if "geosleuth" in self.data and isinstance(self.data["geosleuth"], dict):
                self.data = self.data["geosleuth"]

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


class Settings(BaseSettings):
    """Everything a run can be configured with. See the module docstring for precedence."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    cache_dir: Path = Field(
        default_factory=default_cache_dir, description="Gazetteer index, embeddings, caches."
    )

    @field_validator("cache_dir", mode="before")
    @classmethod
    def _cache_dir_not_blank(cls, value: Any) -> Any:
        # GEOSLEUTH_CACHE_DIR= (empty) would be Path("."): the gazetteer built in whatever folder
        # the command runs in. Refuse it and say how to get the default.
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty; give a folder, or unset GEOSLEUTH_CACHE_DIR for the default")
        return value

    offline: bool = Field(
        default=False, description="Never touch the network (geocoders, Overpass, web search, model hubs)."
    )
    use_exif_gps: bool = Field(default=True, description="Trust a valid EXIF GPS point as the answer.")
    max_image_pixels: int = Field(
        default=100_000_000,
        ge=1,
        description="Refuse images above this many pixels: decoding one costs about 4 bytes a pixel "
        "(WebP 4 times that, HEIF/AVIF 2, TIFF 1.5, so their limit is divided by as much).",
    )
    max_file_bytes: int = Field(default=512 * 1024 * 1024, ge=1, description="Refuse files above this size.")
    min_probability: float = Field(
        default=0.25,
        ge=0.0,
        le=1.0,
        description="Below this, say 'insufficient evidence' instead of guessing.",
    )
    max_candidates: int = Field(default=10, ge=1)
    distance: Literal["geodesic", "sphere"] = "geodesic"
    planner: Literal["auto", "langgraph", "sequential"] = Field(
        default="auto",
        description="What runs the planner's graph: LangGraph (auto: when installed) or the plain loop "
        "made from the same edges (the same answers; saves LangGraph's ~1 s import in a process "
        "that locates one photo).",
    )
    ocr: OCRSettings = Field(default_factory=OCRSettings)
    langid: LangIDSettings = Field(default_factory=LangIDSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    vlm: VLMSettings = Field(default_factory=VLMSettings)
    tools: ToolSettings = Field(default_factory=ToolSettings)
    verifier: VerifierSettings = Field(default_factory=VerifierSettings)
    fusion: FusionSettings = Field(default_factory=FusionSettings)
    budgets: BudgetSettings = Field(default_factory=BudgetSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls, _config_file_var.get()))

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with ``overrides`` applied on top (nested sections merge key by key), validated."""
        clean = _drop_none(overrides)
        if not clean:
            return self
        try:
            return type(self).model_validate(_deep_merge(self.model_dump(), clean))
        except ValidationError as exc:
            raise ConfigError(_describe_validation(exc, None)) from exc

    def fingerprint(self) -> str:
        """A short hash of the settings that change answers (paths and secrets excluded)."""
        # chat and serve settings shape conversations and the service, never a prediction: hashes stay
        # those from before them.
        data = self.model_dump(mode="json", exclude={"cache_dir", "chat", "serve"})
        data["vlm"].pop("api_key", None)
        tools = data["tools"]
        if tools["searxng_url"] is None:
            # Web search off changes no answer: hashes stay those of settings from before it existed.
            del tools["searxng_url"], tools["web_search_results"]
        else:
            tools["searxng_url"] = redact_url(tools["searxng_url"], mark="")
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# A URL's userinfo: the authority up to its last "@" (a password may hold a raw "@").
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://|//)?[^/?#]*@")


def redact_url(url: str, *, mark: str = "***") -> str:
    """``url`` with any ``user:password@`` replaced by ``mark@`` (dropped when ``mark`` is empty), for
    messages, logs and printed settings. Works on text no URL parser accepts, too."""
    return _USERINFO.sub(lambda m: (m.group(1) or "") + (f"{mark}@" if mark else ""), url, count=1)


def find_config_file(explicit: str | Path | None = None) -> Path | None:
    """The config file to read, by the precedence in the module docstring (None if there is none)."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    for candidate in (Path.cwd() / "geosleuth.toml", Path.home() / ".config" / "geosleuth" / "config.toml"):
        if candidate.is_file():
            return candidate
    return None


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from flags (``overrides``), environment, config file and defaults, in that order.

    ``None`` values in ``overrides`` mean "not given" and are dropped, so CLI options can be passed
    straight through. Nested sections are given as dicts and merge with lower layers key by key.
    """
    path = find_config_file(config_file)
    warn_unknown_env()
    token = _config_file_var.set(path)
    try:
        clean = _drop_none(overrides)
        lower = Settings()  # env + file + defaults: needed so a partial nested flag does not erase them
        merged = _deep_merge(lower.model_dump(exclude_unset=True), clean) if clean else {}
        return Settings(**merged) if clean else lower
    except ValidationError as exc:
        raise ConfigError(_describe_validation(exc, path)) from exc
    finally:
        _config_file_var.reset(token)


# --- where each value comes from ----------------------------------------------------------------

Source = Literal["default", "file", "env", "flag"]


def setting_names() -> list[str]:
    """Every setting's dotted name (``offline``, ``ocr.engine``), in the order they are declared."""
    names: list[str] = []
    for name, f in Settings.model_fields.items():
        section = f.annotation
        if isinstance(section, type) and issubclass(section, _Section):
            names += [f"{name}.{sub}" for sub in section.model_fields]
        else:
            names.append(name)
    return names


def env_name(dotted: str) -> str:
    """The environment variable of a setting: ``ocr.engine`` -> ``GEOSLEUTH_OCR__ENGINE``."""
    return ENV_PREFIX + "__".join(part.upper() for part in dotted.split("."))


def unknown_env(environ: dict[str, str] | None = None) -> list[tuple[str, str | None]]:
    """The ``GEOSLEUTH_*`` variables that set nothing (pydantic ignores them without a word), each
    with the setting's variable it most likely meant (None if none is close)."""
    env = os.environ if environ is None else environ
    names = setting_names()
    valid = {env_name(n) for n in names}
    # A section's own variable (its value as JSON) and anything below it count as known: a wrong
    # key inside a section is an error already (the sections forbid extra keys).
    sections = {env_name(n.split(".")[0]) for n in names if "." in n}
    out = []
    for var in sorted(env):
        upper = var.upper()
        if not upper.startswith(ENV_PREFIX) or upper in OTHER_ENV or upper in valid:
            continue
        if upper.split("__")[0] in sections:
            continue
        # Compare what follows the prefix: every name shares GEOSLEUTH_, which would make any two close.
        known = {v[len(ENV_PREFIX) :]: v for v in valid | OTHER_ENV}
        close = difflib.get_close_matches(upper[len(ENV_PREFIX) :], sorted(known), n=1, cutoff=0.7)
        out.append((var, known[close[0]] if close else None))
    return out


_warned: set[str] = set()


def warn_unknown_env(environ: dict[str, str] | None = None) -> list[str]:
    """Log a warning, once per process, for each ``GEOSLEUTH_*`` variable that sets nothing (a
    misspelt key in the config file is an error; in the environment it would be ignored in
    silence). Returns the messages."""
    messages = []
    for var, close in unknown_env(environ):
        hint = f"; did you mean ${close}?" if close else "; `geosleuth config show` lists the settings"
        message = f"${var} is not a geosleuth setting and is ignored{hint}"
        messages.append(message)
        if var not in _warned:
            _warned.add(var)
            log.warning("%s", message)
    return messages


def setting_sources(config_file: str | Path | None = None, **overrides: Any) -> dict[str, Source]:
    """Where each setting's value in ``load_settings(config_file, **overrides)`` comes from: a
    flag (``overrides``), the environment, the config file, or the default."""
    from pydantic_settings import EnvSettingsSource

    path = find_config_file(config_file)
    layers: list[tuple[Source, dict[str, Any]]] = [
        ("flag", _drop_none(overrides)),
        ("env", EnvSettingsSource(Settings)()),
        ("file", _TomlSource(Settings, path).data if path is not None else {}),
    ]
    out: dict[str, Source] = {}
    for dotted in setting_names():
        out[dotted] = "default"
        for source, data in layers:
            if _has(data, dotted):
                out[dotted] = source
                break
    return out


def _has(data: dict[str, Any], dotted: str) -> bool:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return False
        match = next((k for k in node if str(k).lower() == part), None)  # env keys keep their case
        if match is None:
            return False
        node = node[match]
    return True


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            sub = _drop_none(v)
            if sub:
                out[k] = sub
        elif v is not None:
            out[k] = v
    return out


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _describe_validation(exc: ValidationError, path: Path | None) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        env = ENV_PREFIX + "__".join(str(p).upper() for p in err["loc"])
        value = err.get("input")
        parts.append(f"setting {loc!r} = {value!r}: {err['msg']} (set by a flag, ${env}, or the config file)")
    where = f" (config file: {path})" if path else ""
    return "invalid settings" + where + ": " + "; ".join(parts)
