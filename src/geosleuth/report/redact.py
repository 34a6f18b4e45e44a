"""``--redact-exif``: a :class:`~geosleuth.schemas.Prediction` fit to share when the photo's metadata
must not be (a source's phone, a witness's camera).

:func:`redact_exif` returns a copy in which the raw values the photo's EXIF block gave away about
*where*, *when* and *who* are gone, and every report made from it (HTML, Markdown, JSON) is made
from that copy, so the formats cannot disagree about what was removed:

* every ``exif.*`` observation (GPS position, altitude, bearing, capture time, camera make, model,
  software and lens, the description, artist and copyright text, and any field added later) keeps
  its id, kind and the names of its fields, so a reader sees the field existed, but its value, its
  details and its point are replaced by the marker ``redacted (--redact-exif)``;
* the same values are scrubbed wherever else they were copied: the explanation, candidates' notes,
  warnings, stage details, the VLM's answers (the prompt states metadata as facts, and a model can
  quote it) and the trace; coordinates are recognised at any precision from two decimals on, and in
  degrees-minutes-seconds; distances measured from the GPS point go too (several of them, from
  known places, would locate it again);
* when the answer *is* the GPS position (basis ``exif-gps``) the answer cannot be removed without
  removing the report, so it is coarsened: coordinates rounded to 0.1° (about 11 km), radii widened
  to at least 10 km, and the report says so in plain words (:data:`COARSENED_NOTE`).

Kept on purpose:

* the clock's UTC offset (``exif.offset``): a band of longitudes thousands of km wide, which the
  reasoning may rest on; the capture time it was read beside is removed;
* ``provenance.image_sha256``: a hash says nothing about where, when or who; it lets someone who holds
  the original confirm that the report is about that file, which an analyst needs to defend it;
* the text read in the photo's pixels, and the photo itself (re-encoded from the pixels, so it
  carries no metadata): they are what the photo shows, not what its file says;
* ``source``, the file name as given: not metadata, but it can say a lot (``IMG_20240714_153210``);
  rename the file before reporting if it does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from geosleuth.schemas import EvidenceKind, LatLon, Prediction, Redaction

MARKER = "redacted (--redact-exif)"
INLINE = f"[{MARKER}]"
COARSE_DEG = 0.1
MIN_RADIUS_KM = 10.0
COARSENED_NOTE = (
    "coordinates coarsened to about 10 km because they come from the photo's GPS metadata; --redact-exif"
)
REMOVED_NOTE = (
    "the photo's metadata values (GPS position, time, camera, captions) are removed from this report; "
    "--redact-exif"
)
# A copy of the GPS point, at any precision a writer might round it to, is within this of it.
SAME_POINT_DEG = 0.002
MIN_SECRET_CHARS = 3  # shorter camera strings ("HP") would scrub unrelated text
KEPT_KINDS = {EvidenceKind.UTC_OFFSET}
FIELD_NAMES = {
    "exif.gps": "GPS position",
    "exif.altitude": "altitude",
    "exif.bearing": "camera bearing",
    "exif.time": "capture time",
    "exif.camera": "camera",
    "exif.description": "description",
    "exif.artist": "artist",
    "exif.copyright": "copyright",
    "exif.read": "metadata block",
}
_NUMBER = re.compile(r"(?<![\w.])-?\d{1,3}\.\d{2,}(?![\d])")
_PAIR = re.compile(r"(-?\d{1,3}\.\d{2,})(\s*,\s*)(-?\d{1,3}\.\d{2,})")
_EXIF_EXPLANATION = re.compile(r"^Answer from the photo's GPS metadata: .*?\. (?=Metadata can be edited)")
_CONFLICT = re.compile(r"conflicts with the EXIF GPS point [^()]*\(\d+(?:\.\d+)? km away\)")
_FROM_GPS = re.compile(r"\d+(?:\.\d+)? km from the GPS position")
_RAW_VALUE = re.compile(r"'[^']*'|-?\d+(?:[.:/]\d+)*")
# What is never scrubbed: not free text, and not from the metadata.
_UNTOUCHED = ("provenance", "source", "text_lines", "timings", "usage", "redaction")


def redact_exif(prediction: Prediction) -> Prediction:
    """A copy of ``prediction`` without the raw EXIF values that say where, when and who (see the
    module docstring for what goes and what stays). Idempotent; a prediction without EXIF
    observations comes back with only its ``redaction`` set."""
    if prediction.redaction is not None:
        return prediction
    gps = _gps_point(prediction)
    data = prediction.model_dump(mode="json")
    scrub = _Scrubber(prediction, gps)
    redacted_ids = []
    for e in data["evidence"]:
        if e["tool"] == "exif" and EvidenceKind(e["kind"]) not in KEPT_KINDS:
            _redact_observation(e)
            redacted_ids.append(e["id"])
        elif e["id"].startswith("check.gps") and "distance_km" in e["details"]:
            e["details"]["distance_km"] = MARKER  # from the GPS point to a named place
    coarsen = prediction.basis == "exif-gps" and gps is not None
    for key, value in data.items():
        if key not in _UNTOUCHED:
            data[key] = _walk(value, scrub, gps)
    if coarsen and gps is not None:
        _rewrite_exif_explanation(data, prediction, gps)
    data["redaction"] = Redaction(
        evidence_ids=redacted_ids,
        coarsened_deg=COARSE_DEG if coarsen else None,
        note=COARSENED_NOTE if coarsen else REMOVED_NOTE,
    ).model_dump(mode="json")
    return Prediction.model_validate(data)


def coarse(p: LatLon) -> LatLon:
    """``p`` on a 0.1° grid (about 11 km north-south, less east-west away from the equator)."""
    return LatLon(lat=round(p.lat, 1), lon=round(p.lon, 1))


def _gps_point(pred: Prediction) -> LatLon | None:
    gps = next((e for e in pred.evidence if e.id == "exif.gps" and e.tool == "exif"), None)
    if gps is None:
        return None
    if gps.point is not None:
        return gps.point
    try:
        return LatLon(lat=gps.details["lat"], lon=gps.details["lon"])
    except (KeyError, TypeError, ValueError):
        return None  # a rejected position: its raw values go with its details


def _redact_observation(e: dict[str, Any]) -> None:
    name = FIELD_NAMES.get(e["id"], e["id"].removeprefix("exif.").replace("-", " "))
    e["value"] = f"{name}: {MARKER}"
    e["details"] = {k: MARKER for k in e["details"]}
    e["point"] = None
    e["region"] = None
    if e.get("reason"):
        e["reason"] = _RAW_VALUE.sub(INLINE, e["reason"])


class _Scrubber:
    """Replaces, in one string, every copy of the metadata's values (see the module docstring)."""

    def __init__(self, pred: Prediction, gps: LatLon | None) -> None:
        self.gps = gps
        literal: dict[str, str] = {}
        if gps is not None:
            literal[gps.dms()] = INLINE
            for half in gps.dms().split(" "):
                literal[half] = INLINE
        for e in pred.evidence:
            if e.tool != "exif" or e.kind in KEPT_KINDS:
                continue
            if e.reason:  # a rejected value's reason quotes it, and `missing` repeats the reason
                literal[e.reason] = _RAW_VALUE.sub(INLINE, e.reason)
            if e.kind == EvidenceKind.CAMERA:  # make, model, software, lens (not field names)
                for v in e.details.values():
                    if isinstance(v, str) and len(v.strip()) >= MIN_SECRET_CHARS:
                        literal[v.strip()] = INLINE
            if e.kind == EvidenceKind.TIMESTAMP and isinstance(e.details.get("local_time"), str):
                literal.update(dict.fromkeys(_time_forms(e.details["local_time"]), INLINE))
            if e.kind in (EvidenceKind.CAMERA, EvidenceKind.TEXT):
                text = e.value.split(": ", 1)[1] if e.kind == EvidenceKind.TEXT else e.value
                if len(text.strip()) >= MIN_SECRET_CHARS:
                    literal[text.strip()] = INLINE
        # longest first, so a whole phrase goes before its parts
        self.literal = sorted(literal.items(), key=lambda kv: -len(kv[0]))

    def __call__(self, text: str) -> str:
        text = _CONFLICT.sub(f"conflicts with the EXIF GPS point {INLINE}", text)
        text = _FROM_GPS.sub(f"{INLINE} from the GPS position", text)
        for raw, replacement in self.literal:
            if raw in text:
                text = text.replace(raw, replacement)
        if self.gps is not None:
            text = _PAIR.sub(self._pair, text)
            text = _NUMBER.sub(lambda m: INLINE if self._is_coordinate(m.group(0)) else m.group(0), text)
        return text

    def _pair(self, m: re.Match[str]) -> str:
        if self._is_coordinate(m.group(1)) and self._is_coordinate(m.group(3)):
            return INLINE
        return m.group(0)

    def _is_coordinate(self, number: str) -> bool:
        """Whether ``number`` is the GPS latitude or longitude rounded to its own precision
        (trailing zeros say nothing: 33.85680 is 33.8568 written longer)."""
        assert self.gps is not None
        decimals = len(number.split(".")[1].rstrip("0"))
        if decimals < 2:  # 0.1° is the grid a shared report may show
            return False
        half_step = 0.5 * 10.0**-decimals + 1e-9
        v = abs(float(number))
        return any(abs(v - abs(c)) <= half_step for c in (self.gps.lat, self.gps.lon))


def _time_forms(iso: str) -> list[str]:
    """The ways a capture time is written: ISO, with a space, EXIF's colons; the date alone."""
    date, _, clock = iso.partition("T")
    forms = [iso, f"{date} {clock}", f"{date.replace('-', ':')} {clock}"]
    return [f for f in forms if clock] + [date, date.replace("-", ":")]


def _walk(value: Any, scrub: Callable[[str], str], gps: LatLon | None) -> Any:
    """``value`` (JSON-like) with its strings scrubbed, copies of the GPS point coarsened, and the
    radii around them widened."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        return [_walk(v, scrub, gps) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _walk(v, scrub, gps) for k, v in value.items()}
    if gps is None:
        return out
    for lat_key, lon_key in (("lat", "lon"), ("latitude", "longitude")):
        if _near(out.get(lat_key), out.get(lon_key), gps):
            out[lat_key], out[lon_key] = round(out[lat_key], 1), round(out[lon_key], 1)
    center = out.get("center")
    if isinstance(center, dict) and _on_grid_copy(center, gps) and "radius_km" in out:
        out["radius_km"] = max(out["radius_km"], MIN_RADIUS_KM)
    if "circles" in out and "area_km2" in out:  # a confidence region: its area follows its circles
        old = [c["radius_km"] for c in value["circles"]]
        new = [c["radius_km"] for c in out["circles"]]
        grown = sum(math.pi * (b * b - a * a) for a, b in zip(old, new, strict=True))
        out["area_km2"] = round(out["area_km2"] + grown, 3)
    if "point" in out and "source" in out and "radius_km" in out:  # a candidate
        from_gps = out["source"] == "exif" or "exif" in out.get("sources", [])
        if from_gps or _on_grid_copy(out["point"], gps):
            out["radius_km"] = max(out["radius_km"], MIN_RADIUS_KM)
            if out.get("granularity") == "exact":
                out["granularity"] = "city"
            place = out.get("place")
            if isinstance(place, dict):  # the distance to a named place would narrow the ring again
                place["distance_km"] = float(round(place["distance_km"] / MIN_RADIUS_KM) * MIN_RADIUS_KM)
    return out


def _near(lat: Any, lon: Any, gps: LatLon) -> bool:
    if not isinstance(lat, int | float) or not isinstance(lon, int | float) or isinstance(lat, bool):
        return False
    return abs(lat - gps.lat) <= SAME_POINT_DEG and abs(lon - gps.lon) <= SAME_POINT_DEG


def _on_grid_copy(p: Any, gps: LatLon) -> bool:
    """Whether ``p`` (a lat/lon dict, already coarsened by the walk) is the coarsened GPS point."""
    if not isinstance(p, dict):
        return False
    c = coarse(gps)
    return p.get("lat") == c.lat and p.get("lon") == c.lon


def _rewrite_exif_explanation(data: dict[str, Any], pred: Prediction, gps: LatLon) -> None:
    """The GPS answer's account, said again at the coarse grid (its distance to the nearest place
    is finer than the grid, so it goes)."""
    best = pred.best
    where = f", near {best.place.short()}" if best is not None and best.place is not None else ""
    c = coarse(gps)
    head = f"Answer from the photo's GPS metadata: about {c.lat:.1f}, {c.lon:.1f}{where} ({COARSENED_NOTE}). "
    original = _EXIF_EXPLANATION.sub("", pred.explanation, count=1)
    if original != pred.explanation:
        data["explanation"] = head + _Scrubber(pred, gps)(original)
    else:  # worded otherwise: the scrubbed text (already in data) with the note in front
        data["explanation"] = head + data["explanation"]
