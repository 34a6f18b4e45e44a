"""Read a VLM's answer into a :class:`~geosleuth.schemas.VLMGuess`, however it was written.

Order of trust: strict JSON (whole text, a fenced block, or the first balanced object that holds
coordinates), then JSON after small repairs, then coordinates written in free text. The parser never
raises, never swaps latitude and longitude on a guess, never clamps, and never turns a failure into
(0, 0): an unusable answer is a sample with ``guess=None`` that says why.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from geosleuth.errors import VLMTruncatedError, VLMUnusableOutputError
from geosleuth.schemas import ParseMethod, VLMGuess, VLMSample

logger = logging.getLogger(__name__)

RATIONALE_CHARS = 2000
_NULL_ISLAND = "answer is (0, 0), 'Null Island' in the Gulf of Guinea; often a placeholder"


def _coord(s: str) -> str:
    """One coordinate: decimal degrees or DMS, with optional degree sign and hemisphere letter."""
    return (
        rf"(?P<sign{s}>[-+−])?(?P<deg{s}>\d{{1,3}}(?:\.\d+)?)(?:\s*(?P<ds{s}>[°º˚]|deg(?:rees)?\b))?"
        rf"(?:\s*(?P<min{s}>\d{{1,2}}(?:\.\d+)?)\s*['′’])?(?:\s*(?P<sec{s}>\d{{1,2}}(?:\.\d+)?)\s*(?:\"|″|''|”|′′))?"
        rf"(?:\s*(?P<hemi{s}>[NSEW](?![A-Za-z])|North|South|East|West))?"
    )


_ONE = re.compile(_coord(""))
_PAIR = re.compile(
    r"(?<![\w.])" + _coord("1") + r"(?:\s*[,;/]\s*|\s+|(?<=[NS]))" + _coord("2") + r"(?!\.?\d)"
)
_VALUE = r"[\"'*]*\s*(?:[:=]|\bis\b)?[\s*]*(?:(?:~|≈|approx(?:imately|\.)?|about|around)\s*)?"
_LAT_LABEL = re.compile(r"\b(?i:lat(?:itude)?)\b" + _VALUE + _coord(""))
_LON_LABEL = re.compile(r"\b(?i:lon(?:gitude)?|lng|long)\b" + _VALUE + _coord(""))
_FINAL = re.compile(
    r"(?i)\bfinal (?:answer|guess|coordinates|location)\b|\banswer\s*:|\bcoordinates?\s*:|\btherefore\b"
)
_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)
_FIELD_LINE = {
    name: re.compile(rf"(?im)^[\s>*#-]*\**{name}\**\s*(?::|\s[-–]\s)\s*\**\s*([^\n*]{{1,80}})")
    for name in ("country", "city", "region", "continent")
}
_TOKEN = re.compile(
    r"""(?P<space>\s+)|(?P<comment>//[^\n]*|#[^\n]*|/\*.*?\*/)|(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"""
    r"""|(?P<punct>[{}\[\]:,])|(?P<word>[^\s{}\[\]:,"']+)""",
    re.DOTALL,
)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_UNIT = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*(%|km|kilometers|kilometres|mi|miles)?\s*$")
_SMART_QUOTES = str.maketrans("“”„‘’", '"""\'\'')
_WORDS = {w.lower(): w for w in ("null", "true", "false", "NaN", "Infinity")} | {"none": "null"}
_WORD_CONFIDENCE = {"very high": 0.9, "high": 0.8, "medium": 0.5, "low": 0.2, "very low": 0.1}
_LAT_KEYS = ("latitude", "lat", "lat_deg")
_LON_KEYS = ("longitude", "lon", "lng", "long", "lon_deg", "lng_deg")
_PAIR_KEYS = ("coordinates", "coords", "location", "latlon", "lat_lon", "latlng", "point", "position")
_ALIASES: dict[str, tuple[str, ...]] = {
    "clues_used": ("clues_used", "clues", "evidence", "observations"),
    "rationale": ("rationale", "reasoning", "explanation", "reason"),
    "continent": ("continent",),
    "country": ("country", "country_name"),
    "region": ("region", "state", "province"),
    "city": ("city", "town", "nearest_city"),
    "radius_km": ("radius_km", "radius", "uncertainty_km", "error_km"),
    "confidence": ("confidence", "probability", "certainty"),
}


class _Unusable(Exception):
    """Coordinates were found but cannot be used; the message says why."""


@dataclass
class _Found:
    data: dict[str, Any]
    method: ParseMethod
    notes: list[str] = field(default_factory=list)


def parse_guess(text: str, finish_reason: str | None = None, index: int = 0) -> VLMSample:
    """Parse one sampled answer. Never raises: an unusable answer is a sample with ``guess=None``."""
    base: dict[str, Any] = {"raw_text": text, "finish_reason": finish_reason, "index": index}
    if finish_reason == "length":
        return VLMSample(
            **base,
            error=f"the answer stopped at the token limit (finish_reason='length') after {len(text)} "
            "characters, so its conclusion is missing; raise max_tokens",
            error_type=VLMTruncatedError.__name__,
        )
    try:
        found = _parse(text)
        guess = VLMGuess.model_validate(found.data)
    except (_Unusable, ValidationError) as exc:
        return VLMSample(**base, error=str(exc), error_type=VLMUnusableOutputError.__name__)
    except Exception as exc:  # a parser bug must not lose the sample
        logger.exception("parse_guess failed on %r", text[:200])
        return VLMSample(**base, error=f"parser error: {exc}", error_type=VLMUnusableOutputError.__name__)
    if guess.latitude == 0.0 and guess.longitude == 0.0:
        found.notes.append(_NULL_ISLAND)
    return VLMSample(**base, guess=guess, parse=found.method, notes=found.notes)


def _parse(text: str) -> _Found:
    first_error: _Unusable | None = None
    for candidate in _json_candidates(text):
        loaded, repairs = _load(candidate)
        if not isinstance(loaded, dict):
            continue
        try:
            found = _from_mapping(loaded, repairs)
        except _Unusable as exc:
            first_error = first_error or exc
            continue
        if found is not None:
            return found
    if first_error is not None:
        raise first_error
    return _from_free_text(text)


# --- JSON -------------------------------------------------------------------------------------


def _json_candidates(text: str) -> Iterator[str]:
    # A reasoning model's answer follows its thinking; JSON-ish drafts inside the thinking come last.
    parts = [text.rsplit("</think>", 1)[1], text] if "</think>" in text else [text]
    seen: set[str] = set()
    for part in parts:
        for chunk in [part.strip(), *(m.group(1).strip() for m in _FENCE.finditer(part)), *_objects(part)]:
            if chunk and chunk not in seen:
                seen.add(chunk)
                yield chunk


def _objects(text: str, limit: int = 50) -> Iterator[str]:
    """Every balanced ``{...}`` span, outermost first; quotes and escapes are respected."""
    starts = [i for i, c in enumerate(text) if c == "{"][:limit]
    for start in starts:
        depth, quote, escaped = 0, "", False
        for i in range(start, len(text)):
            c = text[i]
            if quote:
                escaped, quote = (not escaped and c == "\\"), ("" if c == quote and not escaped else quote)
            elif c in "\"'":
                quote = c
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    yield text[start : i + 1]
                    break


def _load(chunk: str) -> tuple[Any, list[str]]:
    """The parsed chunk and the repairs it needed; ``(None, [])`` when it is not JSON even repaired."""
    try:
        return json.loads(chunk, strict=False), []
    except ValueError:
        repaired = _repair(chunk)
    except RecursionError:  # nested deeper than json can go (a degenerate answer): not a guess
        return None, []
    try:
        return (json.loads(repaired[0], strict=False), repaired[1]) if repaired else (None, [])
    except (ValueError, RecursionError):
        return None, []


def _repair(chunk: str) -> tuple[str, list[str]] | None:
    """Re-emit JSON-ish text as JSON, with what was repaired; ``None`` at an unterminated string."""
    notes: set[str] = set()
    text = chunk.translate(_SMART_QUOTES)
    if text != chunk:
        notes.add("replaced smart quotes")
    tokens: list[tuple[str, str]] = []  # (kind, text): kinds are the groups of _TOKEN
    pos = 0
    while pos < len(text):
        if (m := _TOKEN.match(text, pos)) is None:
            return None
        pos, kind, tok = m.end(), m.lastgroup or "", m.group()
        if kind == "comment":
            notes.add("removed comments")
        elif kind == "str" and tok[0] == "'":
            notes.add("converted single quotes to double quotes")
            tokens.append((kind, '"' + re.sub(r'(?<!\\)"', r'\\"', tok[1:-1].replace("\\'", "'")) + '"'))
        elif kind == "word" and tokens and tokens[-1][0] == "word" and not _NUMBER.fullmatch(tok):
            tokens[-1] = ("word", tokens[-1][1] + " " + tok)  # a bare value in words: 48.85° N
        elif kind != "space":
            tokens.append((kind, tok))
    out: list[str] = []
    for k, (kind, tok) in enumerate(tokens):
        nxt = tokens[k + 1][1] if k + 1 < len(tokens) else ""
        if tok == "," and nxt in ("}", "]"):
            notes.add("removed trailing commas")
            continue
        if kind == "word":
            if nxt == ":":
                notes.add("quoted bare keys")
                tok = json.dumps(tok)
            elif tok.lower() in _WORDS:
                if tok not in ("null", "true", "false"):
                    notes.add(f"read {tok} as JSON {_WORDS[tok.lower()]}")
                tok = _WORDS[tok.lower()]
            elif not _NUMBER.fullmatch(tok):
                notes.add("quoted bare values")
                tok = json.dumps(tok)
            elif tok.startswith("+") or tok.startswith(".") or tok.endswith("."):
                tok = repr(float(tok))
        out.append(tok)
    return "".join(out), sorted(notes)


def _nodes(obj: dict[str, Any], path: str = "", depth: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
    """The mapping (keys lower-cased) and the mappings nested in it, depth first."""
    yield path, {str(k).strip().lower(): v for k, v in obj.items()}
    if depth < 3:
        for key, value in obj.items():
            if isinstance(value, dict):
                yield from _nodes(value, f"{path}.{key}" if path else str(key), depth + 1)


def _from_mapping(obj: dict[str, Any], repairs: list[str]) -> _Found | None:
    notes = list(repairs)
    nodes = list(_nodes(obj))
    for path, node in nodes:
        coords = _coords_in(node, notes)
        if coords is None:
            continue
        if path:
            notes.append(f"found coordinates nested under {path!r}")
        data: dict[str, Any] = {"latitude": coords[0], "longitude": coords[1]}
        _check_range(coords[0], coords[1])
        for name, aliases in _ALIASES.items():
            value = next((n[a] for _, n in nodes for a in aliases if n.get(a) is not None), None)
            if value is not None:
                _put(data, name, value, notes)
        return _Found(data, "repaired-json" if notes else "json", notes)
    return None


def _coords_in(node: dict[str, Any], notes: list[str]) -> tuple[float, float] | None:
    lat_key = next((k for k in _LAT_KEYS if k in node), None)
    lon_key = next((k for k in _LON_KEYS if k in node), None)
    if lat_key and lon_key:
        lat, lon = _number(node[lat_key], "NS"), _number(node[lon_key], "EW")
        if lat is None or lon is None:
            bad = (lat_key, node[lat_key]) if lat is None else (lon_key, node[lon_key])
            raise _Unusable(f"{bad[0]} {bad[1]!r} is not a number; expected decimal degrees")
        for key, want in ((lat_key, "latitude"), (lon_key, "longitude")):
            if key != want:
                notes.append(f"read {want} from key {key!r}")
            if isinstance(node[key], str):
                notes.append(f"read {want} from the string {node[key]!r}")
        return lat, lon
    for key in _PAIR_KEYS:
        value = node.get(key)
        pair: tuple[float | None, float | None] = (None, None)
        if isinstance(value, list | tuple) and len(value) == 2:
            pair = (_number(value[0], "NS"), _number(value[1], "EW"))
        elif isinstance(value, str) and (m := _PAIR.search(value)):
            pair = (_value(m, "1", "NS"), _value(m, "2", "EW"))
        if pair[0] is not None and pair[1] is not None:
            notes.append(f"read {key!r} {value!r} as [latitude, longitude]")
            return pair[0], pair[1]
    return None


def _put(data: dict[str, Any], name: str, value: Any, notes: list[str]) -> None:
    if name in ("radius_km", "confidence"):
        number = _confidence(value) if name == "confidence" else _radius(value)
        if number is None:
            notes.append(f"ignored {name} {value!r}: not a usable number")
        elif number != value:
            notes.append(f"read {name} {value!r} as {number:g}")
        if number is not None:
            data[name] = number
    elif name == "clues_used":
        if isinstance(value, list | str):
            data[name] = [str(v) for v in value if v is not None] if isinstance(value, list) else [value]
    elif name == "rationale":
        data[name] = " ".join(map(str, value)) if isinstance(value, list) else str(value)
    elif isinstance(value, str | int | float) and str(value).strip():
        data[name] = str(value).strip()


def _amount(value: Any, units: tuple[str | None, ...]) -> tuple[float, str] | None:
    """A finite number, or a string like '85%' / '50 km' in one of ``units``: (number, unit)."""
    if isinstance(value, str) and (m := _UNIT.match(value)) and m.group(2) in units:
        return float(m.group(1)), (m.group(2) or "").lower()
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value), ""
    return None


def _confidence(value: Any) -> float | None:
    if isinstance(value, str) and value.strip().lower() in _WORD_CONFIDENCE:
        return _WORD_CONFIDENCE[value.strip().lower()]
    if (found := _amount(value, (None, "%"))) is None:
        return None
    number = found[0] / 100 if found[1] == "%" or 1 < found[0] <= 100 else found[0]
    return number if 0 <= number <= 1 else None


def _radius(value: Any) -> float | None:
    if (found := _amount(value, (None, "km", "kilometers", "kilometres", "mi", "miles"))) is None:
        return None
    number = found[0] * (1.609344 if found[1].startswith("mi") else 1)
    return number if 0 < number <= 20038 else None


# --- numbers and free text --------------------------------------------------------------------


def _number(value: Any, hemis: str) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and (m := _ONE.fullmatch(value.strip())):
        return _value(m, "", hemis)
    return None


def _value(m: re.Match[str], s: str, hemis: str) -> float | None:
    """The signed value of one matched coordinate; ``None`` if its hemisphere is for the other axis."""
    hemi = (m.group(f"hemi{s}") or "")[:1]
    minutes, seconds = float(m.group(f"min{s}") or 0), float(m.group(f"sec{s}") or 0)
    if (hemi and hemi not in hemis) or minutes >= 60 or seconds >= 60:
        return None
    if (minutes or seconds) and not m.group(f"ds{s}"):
        return None
    value = float(m.group(f"deg{s}")) + minutes / 60 + seconds / 3600
    negative = hemi in ("S", "W") if hemi else m.group(f"sign{s}") in ("-", "−")
    return -value if negative else value


def _coordinate_like(m: re.Match[str], s: str) -> bool:
    return "." in m.group(f"deg{s}") or bool(m.group(f"ds{s}") or m.group(f"hemi{s}"))


def _check_range(lat: float, lon: float) -> None:
    for name, value, limit in (("latitude", lat, 90), ("longitude", lon, 180)):
        if not math.isfinite(value):
            raise _Unusable(f"{name} {value!r} is not a finite number; expected decimal degrees")
        if not -limit <= value <= limit:
            raise _Unusable(
                f"{name} {value:g} is outside the valid range -{limit} to {limit}; the answer cannot be "
                "used (the model must give decimal degrees, latitude first)"
            )


def _free_text_candidates(text: str) -> list[tuple[int, float, float, str]]:
    """(position, lat, lon, note) for every labelled pair and every unlabelled pair in the text."""
    found: list[tuple[int, float, float, str]] = []
    lons = [(m.start(), _value(m, "", "EW")) for m in _LON_LABEL.finditer(text)]
    for m in _LAT_LABEL.finditer(text):
        lat = _value(m, "", "NS")
        near = sorted(
            (abs(p - m.start()), p, v) for p, v in lons if v is not None and abs(p - m.start()) < 300
        )
        if lat is not None and near:
            found.append((min(m.start(), near[0][1]), lat, near[0][2], ""))
    for m in _PAIR.finditer(text):
        if not (_coordinate_like(m, "1") and _coordinate_like(m, "2")):
            continue  # 1998, 3 / 12:30: plain integers are not coordinates
        lat, lon, note = _value(m, "1", "NS"), _value(m, "2", "EW"), ""
        if lat is None or lon is None:
            lat, lon = _value(m, "2", "NS"), _value(m, "1", "EW")
            note = f"read {m.group(0)!r} as longitude first, as its hemisphere letters say"
        strong = all(m.group(f"ds{s}") or m.group(f"hemi{s}") for s in "12")
        if lat is None or lon is None or not (strong or (abs(lat) <= 90 and abs(lon) <= 180)):
            continue
        if not any(abs(p - m.start()) < 3 and (la, lo) == (lat, lon) for p, la, lo, _ in found):
            found.append((m.start(), lat, lon, note))
    return sorted(found)


def _from_free_text(text: str) -> _Found:
    found = _free_text_candidates(text)
    if not found:
        raise _Unusable(
            "no coordinates were found in the answer (no JSON with latitude/longitude, no "
            "'latitude: ..., longitude: ...', no pair like '48.8566, 2.3522'); ask for the guess JSON"
        )
    notes = ["read from free text; no radius or confidence was given"]
    chosen = None
    for marker in reversed(list(_FINAL.finditer(text))):
        chosen = next((c for c in found if c[0] >= marker.start()), None)
        if chosen is not None:
            notes.append(f"took the pair after {marker.group(0)!r}")
            break
    if chosen is None:
        chosen = found[-1]
        if len(found) > 1:
            notes.append(f"{len(found)} coordinate pairs in the text; took the last")
    _, lat, lon, note = chosen
    notes += [note] if note else []
    _check_range(lat, lon)
    data: dict[str, Any] = {"latitude": lat, "longitude": lon, "rationale": text.strip()[:RATIONALE_CHARS]}
    for name, regex in _FIELD_LINE.items():
        if m := regex.search(text):
            data[name] = m.group(1).strip().rstrip(".,;")
    return _Found(data, "free-text", notes)


__all__ = ["RATIONALE_CHARS", "parse_guess"]
