"""EXIF evidence: GPS position, altitude and bearing, capture time and its UTC offset, camera.

Every value is checked before it is used. A broken value (zero denominator, 0,0, out of range, a
GPS block without coordinates or with too few values, a clock that disagrees with GPS time by a
non-zone amount) still becomes an Evidence item, with ``usable=False`` and the reason, so a reader
sees what was rejected. A metadata block that is there but does not parse is called corrupt, not
absent: "no metadata" would tell the reader it was stripped.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import datetime, timedelta
from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from geosleuth.gazetteer import Gazetteer
from geosleuth.schemas import BoxRegion, CircleRegion, Evidence, EvidenceKind, LatLon
from geosleuth.tools.image import LoadedImage

log = logging.getLogger(__name__)

TOOL = "exif"


def _evidence(eid: str, kind: EvidenceKind, value: str, *, weight: float = 0.0, **kw: Any) -> Evidence:
    """An observation of this tool (weight 0: recorded for the reader, not used to locate)."""
    return Evidence(id=eid, tool=TOOL, kind=kind, value=value, weight=weight, **kw)


def _rejected(eid: str, kind: EvidenceKind, value: str, reason: str, **kw: Any) -> Evidence:
    """An observation that must not be used, with the reason."""
    return Evidence(id=eid, tool=TOOL, kind=kind, value=value, weight=0.0, usable=False, reason=reason, **kw)


# EXIF tag ids
GPS_IFD, EXIF_IFD = 0x8825, 0x8769
MAKE, MODEL, SOFTWARE, DATETIME = 0x010F, 0x0110, 0x0131, 0x0132
IMAGE_DESCRIPTION, ARTIST, COPYRIGHT = 0x010E, 0x013B, 0x8298
MAX_CAPTION_CHARS = 500
DATETIME_ORIGINAL, DATETIME_DIGITIZED = 0x9003, 0x9004
OFFSET_TIME, OFFSET_TIME_ORIGINAL = 0x9010, 0x9011
LENS_MODEL = 0xA434
G_LAT_REF, G_LAT, G_LON_REF, G_LON, G_ALT_REF, G_ALT, G_TIME = 1, 2, 3, 4, 5, 6, 7
G_STATUS, G_DIR_REF, G_DIR, G_DATE, G_HPOS_ERR, G_METHOD = 9, 16, 17, 29, 31, 27

GPS_WEIGHT = 0.95  # metadata can be edited or stripped and re-written; it is strong, not infallible
NETWORK_FIX_RADIUS_KM = 1.0
DEFAULT_FIX_RADIUS_KM = 0.05


class ExifReport(BaseModel):
    """What the metadata says, parsed and checked. ``evidence`` lists every observation."""

    model_config = ConfigDict(extra="forbid")
    present: bool = False
    corrupt: str | None = Field(
        default=None, description="Why the metadata block is (partly) unreadable; None when it parsed."
    )
    gps: LatLon | None = None
    gps_radius_km: float | None = None
    altitude_m: float | None = None
    local_time: datetime | None = None
    utc_offset_minutes: int | None = None
    offset_source: str | None = None
    camera: str | None = None
    evidence: list[Evidence] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)


class _Bad(ValueError):
    """A value that must not be used; the message is the reason."""


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        v = v.decode("ascii", "replace")
    return str(v).replace("\x00", "").strip()


def _rational(v: Any, tag: str) -> float:
    num = getattr(v, "numerator", None)
    den = getattr(v, "denominator", None)
    if den is not None and den == 0:
        raise _Bad(f"{tag} has a zero denominator ({num}/0)")
    try:
        f = float(v)
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise _Bad(f"{tag} is not a number ({v!r})") from exc
    if not math.isfinite(f):
        raise _Bad(f"{tag} is not a finite number ({v!r})")
    return f


def _triple(value: Any, tag: str, what: str) -> list[Any]:
    """The three values EXIF stores ``tag`` as; _Bad with the count when there are not three
    (a block cut short, or a writer that dropped the seconds: either way not a complete value)."""
    parts = list(value) if isinstance(value, tuple | list) else [value]
    if len(parts) != 3:
        n = f"{len(parts)} value{'s' if len(parts) != 1 else ''}"
        raise _Bad(f"{tag} has {n} where EXIF requires 3 ({what}): it may be truncated, so it is not used")
    return parts


def _dms(value: Any, tag: str) -> float:
    """Degrees from the degrees/minutes/seconds triple EXIF requires."""
    deg, minutes, seconds = (_rational(p, tag) for p in _triple(value, tag, "degrees, minutes, seconds"))
    if not (0 <= minutes < 60.0 + 1e-6) or not (0 <= seconds < 60.0 + 1e-6):
        raise _Bad(f"{tag} has minutes or seconds out of range ({minutes}, {seconds})")
    sign = -1.0 if deg < 0 else 1.0
    return sign * (abs(deg) + minutes / 60.0 + seconds / 3600.0)


def _parse_gps(gps: dict[int, Any]) -> tuple[LatLon, list[str]]:
    """The GPS point, or _Bad with the reason. Also returns caveats for usable values."""
    caveats: list[str] = []
    if G_LAT not in gps or G_LON not in gps:
        have = "a latitude only" if G_LAT in gps else "a longitude only" if G_LON in gps else "no coordinates"
        raise _Bad(f"the GPS block has {have}; a position needs both latitude and longitude")
    lat = _dms(gps[G_LAT], "GPSLatitude")
    lon = _dms(gps[G_LON], "GPSLongitude")
    for name, ref_tag, pos, neg, val in (
        ("latitude", G_LAT_REF, "N", "S", lat),
        ("longitude", G_LON_REF, "E", "W", lon),
    ):
        ref = _text(gps.get(ref_tag, "")).upper()[:1]
        if ref == "":
            caveats.append(f"no {name} hemisphere reference; took the sign as written")
            continue
        if ref not in (pos, neg):
            raise _Bad(f"GPS {name} reference is {ref!r}, expected {pos!r} or {neg!r}")
        signed = -abs(val) if ref == neg else abs(val)
        if name == "latitude":
            lat = signed
        else:
            lon = signed
    if abs(lat) > 90 or abs(lon) > 180:
        raise _Bad(f"GPS position {lat:.6f}, {lon:.6f} is out of range")
    if lat == 0.0 and lon == 0.0:
        raise _Bad("GPS position is exactly 0, 0 (a placeholder devices write when they have no fix)")
    status = _text(gps.get(G_STATUS, "")).upper()
    if status == "V":
        raise _Bad("GPSStatus is 'V' (measurement void): the receiver had no valid fix")
    return LatLon(lat=lat, lon=lon), caveats


_DT_RE = re.compile(r"^\s*(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET_RE = re.compile(r"^\s*([+-])(\d{2}):?(\d{2})\s*$")


def _parse_datetime(raw: Any) -> datetime:
    text = _text(raw)
    m = _DT_RE.match(text)
    if not m:
        raise _Bad(f"timestamp {text!r} is not in EXIF's 'YYYY:MM:DD HH:MM:SS' form")
    try:
        return datetime(*(int(g) for g in m.groups()))  # type: ignore[arg-type]
    except ValueError as exc:
        raise _Bad(f"timestamp {text!r} is not a real date ({exc})") from exc


def _parse_offset(raw: Any) -> int:
    text = _text(raw)
    m = _OFFSET_RE.match(text)
    if not m:
        raise _Bad(f"UTC offset {text!r} is not in '+HH:MM' form")
    minutes = int(m.group(2)) * 60 + int(m.group(3))
    if minutes > 14 * 60:
        raise _Bad(f"UTC offset {text!r} is beyond ±14:00")
    return minutes if m.group(1) == "+" else -minutes


def _gps_utc(gps: dict[int, Any]) -> datetime:
    if G_DATE not in gps or G_TIME not in gps:
        raise _Bad("no GPS date and time")
    date_text = _text(gps[G_DATE])
    m = re.match(r"^(\d{4})[:\-](\d{2})[:\-](\d{2})$", date_text)
    if not m:
        raise _Bad(f"GPSDateStamp {date_text!r} is malformed")
    h, mi, s = (
        _rational(x, "GPSTimeStamp") for x in _triple(gps[G_TIME], "GPSTimeStamp", "hours, minutes, seconds")
    )
    try:
        day = datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError as exc:
        raise _Bad(f"GPSDateStamp {date_text!r} is not a real date") from exc
    if not (0 <= h < 24 and 0 <= mi < 60 and 0 <= s < 61):  # 60: a leap second
        raise _Bad(f"GPSTimeStamp {h:g}:{mi:g}:{s:g} is not a time of day")
    return day + timedelta(hours=h, minutes=mi, seconds=s)


def format_offset(minutes: int) -> str:
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _damage(image: LoadedImage) -> str | None:
    """What Pillow said was wrong with the file's EXIF block while reading it, if anything."""
    said = [_PILLOW_PREFIX.sub("", n) or n for n in image.notes if _METADATA_NOTE.search(n)]
    return "; ".join(dict.fromkeys(said)) if said else None


_METADATA_NOTE = re.compile(r"exif|metadata|makernote", re.I)
_PILLOW_PREFIX = re.compile(r"^(possibly )?corrupt exif( makernote)? data[.:]?\s*", re.I)


def _corrupt_reason(image: LoadedImage) -> str | None:
    """Why the block is corrupt when it is there but nothing in it could be read; else None."""
    said = _damage(image) if image.exif_bytes else None
    return f"the EXIF block ({image.exif_bytes:,} bytes) is corrupt: {said}" if said else None


def exif_gps(image: LoadedImage) -> tuple[LatLon | None, str | None]:
    """Just the GPS point, or None and the reason (for index builds that need nothing else)."""
    try:
        gps = dict(image.exif.get_ifd(GPS_IFD))
    except Exception as exc:
        return None, f"the EXIF block is corrupt ({exc})"
    if not gps:
        if not len(image.exif) and (corrupt := _corrupt_reason(image)):
            return None, corrupt
        return None, "no GPS position in the metadata"
    try:
        return _parse_gps(gps)[0], None
    except _Bad as bad:
        return None, str(bad)


def read_exif(image: LoadedImage, gazetteer: Gazetteer) -> ExifReport:
    """Parse and check the photo's metadata. Never raises on bad metadata: it records why instead."""
    report = ExifReport()
    try:
        exif: Image.Exif = image.exif
        gps = dict(exif.get_ifd(GPS_IFD))
        sub = dict(exif.get_ifd(EXIF_IFD))
    except Exception as exc:  # a malformed IFD must not lose the photo
        return _corrupt(report, f"the EXIF block is corrupt and could not be parsed ({exc})")
    report.present = bool(len(exif) or gps or sub)
    if not report.present:
        corrupt = _corrupt_reason(image)
        if corrupt:
            return _corrupt(report, corrupt)
        report.missing.append("no EXIF metadata (stripped, or never written)")
        return report
    damage = _damage(image)
    if damage:  # parts parsed: each value is still checked below, and the reader is told
        report.corrupt = f"part of the EXIF block is corrupt: {damage}"
        report.evidence.append(
            _rejected(
                "exif.read", EvidenceKind.CAMERA, "metadata block", report.corrupt + "; what parsed is used"
            )
        )

    _camera(report, exif, sub)
    _captions(report, exif)
    _gps(report, gps)
    _time(report, gps, sub, exif, gazetteer)
    return report


def _corrupt(report: ExifReport, reason: str) -> ExifReport:
    report.present = True
    report.corrupt = reason
    report.evidence.append(_rejected("exif.read", EvidenceKind.CAMERA, "metadata block", reason))
    report.missing.append(
        "the EXIF metadata is corrupt, so nothing in it was used (not stripped: it is there)"
    )
    return report


def _camera(report: ExifReport, exif: Image.Exif, sub: dict[int, Any]) -> None:
    make, model = _text(exif.get(MAKE, "")), _text(exif.get(MODEL, ""))
    if model.lower().startswith(make.lower()) and make:
        make = ""
    camera = " ".join(p for p in (make, model) if p)
    if camera:
        report.camera = camera
        details = {"make": _text(exif.get(MAKE, "")), "model": model}
        if SOFTWARE in exif:
            details["software"] = _text(exif[SOFTWARE])
        if LENS_MODEL in sub:
            details["lens"] = _text(sub[LENS_MODEL])
        report.evidence.append(_evidence("exif.camera", EvidenceKind.CAMERA, camera, details=details))


def _captions(report: ExifReport, exif: Image.Exif) -> None:
    """Free text someone wrote into the file (description, artist, copyright): recorded for the
    reader, never used to locate, and untrusted like any text that comes with a photo."""
    for tag, eid, label in (
        (IMAGE_DESCRIPTION, "exif.description", "description"),
        (ARTIST, "exif.artist", "artist"),
        (COPYRIGHT, "exif.copyright", "copyright"),
    ):
        text = " ".join(_text(exif.get(tag, "")).split())[:MAX_CAPTION_CHARS]
        if text:
            report.evidence.append(
                _evidence(eid, EvidenceKind.TEXT, f"{label}: {text}", details={"field": label})
            )


def _gps(report: ExifReport, gps: dict[int, Any]) -> None:
    if not gps:
        report.missing.append("no GPS position in the metadata")
        return
    try:
        point, caveats = _parse_gps(gps)
    except _Bad as bad:
        report.evidence.append(
            _rejected(
                "exif.gps",
                EvidenceKind.GPS,
                "GPS position in metadata",
                str(bad),
                details={
                    "raw": {
                        str(k): repr(v) for k, v in gps.items() if k in (G_LAT_REF, G_LAT, G_LON_REF, G_LON)
                    }
                },
            )
        )
        report.missing.append(f"the GPS position in the metadata is unusable: {bad}")
        return

    method = _text(gps.get(G_METHOD, "")).upper().replace("ASCII", "").strip()
    radius = DEFAULT_FIX_RADIUS_KM
    details: dict[str, Any] = {"lat": point.lat, "lon": point.lon}
    if G_HPOS_ERR in gps:
        try:
            err_m = _rational(gps[G_HPOS_ERR], "GPSHPositioningError")
            if 0 < err_m < 100_000:
                radius = max(err_m / 1000.0, 0.005)
                details["horizontal_error_m"] = round(err_m, 1)
        except _Bad as bad:
            caveats.append(str(bad))
    if "NETWORK" in method or "CELLID" in method or "WLAN" in method:
        radius = max(radius, NETWORK_FIX_RADIUS_KM)
        caveats.append(f"position from {method.lower()} positioning, not satellite GPS")
    if method:
        details["method"] = method
    weight = GPS_WEIGHT if not caveats else 0.85
    report.gps = point
    report.gps_radius_km = radius
    report.evidence.append(
        _evidence(
            "exif.gps",
            EvidenceKind.GPS,
            f"{point.dms()} ({point})",
            weight=weight,
            point=point,
            region=CircleRegion(center=point, radius_km=radius),
            reason="; ".join(caveats) or None,
            details=details,
        )
    )

    if G_ALT in gps:
        try:
            alt = _rational(gps[G_ALT], "GPSAltitude")
            ref = gps.get(G_ALT_REF, b"\x00")
            below = (ref[0] if isinstance(ref, bytes) and ref else ref) in (1, "1")
            alt = -alt if below else alt
            report.altitude_m = round(alt, 1)
            report.evidence.append(
                _evidence(
                    "exif.altitude",
                    EvidenceKind.ALTITUDE,
                    f"{alt:.0f} m {('below' if alt < 0 else 'above')} sea level",
                    details={"altitude_m": round(alt, 2)},
                )
            )
        except _Bad as bad:
            report.evidence.append(_rejected("exif.altitude", EvidenceKind.ALTITUDE, "altitude", str(bad)))
    if G_DIR in gps:
        try:
            bearing = _rational(gps[G_DIR], "GPSImgDirection") % 360.0
            ref = "magnetic" if _text(gps.get(G_DIR_REF, "")).upper() == "M" else "true"
            report.evidence.append(
                _evidence(
                    "exif.bearing",
                    EvidenceKind.BEARING,
                    f"camera facing {bearing:.0f}° ({ref} north)",
                    details={"bearing_deg": round(bearing, 1), "reference": ref},
                )
            )
        except _Bad:
            pass


def _time(
    report: ExifReport, gps: dict[int, Any], sub: dict[int, Any], exif: Image.Exif, gazetteer: Gazetteer
) -> None:
    raw_local = sub.get(DATETIME_ORIGINAL) or sub.get(DATETIME_DIGITIZED) or exif.get(DATETIME)
    local: datetime | None = None
    if raw_local is None:
        report.missing.append("no capture time in the metadata")
    else:
        try:
            local = _parse_datetime(raw_local)
            report.local_time = local
            report.evidence.append(
                _evidence(
                    "exif.time",
                    EvidenceKind.TIMESTAMP,
                    f"taken {local:%Y-%m-%d %H:%M:%S} (camera clock, local time)",
                    details={"local_time": local.isoformat()},
                )
            )
        except _Bad as bad:
            report.evidence.append(_rejected("exif.time", EvidenceKind.TIMESTAMP, _text(raw_local), str(bad)))
            report.missing.append("the capture time in the metadata is unusable")

    offset: int | None = None
    source = None
    raw_offset = sub.get(OFFSET_TIME_ORIGINAL) or sub.get(OFFSET_TIME)
    if raw_offset is not None:
        try:
            offset = _parse_offset(raw_offset)
            source = "OffsetTimeOriginal tag"
        except _Bad as bad:
            report.evidence.append(
                _rejected("exif.offset-tag", EvidenceKind.UTC_OFFSET, _text(raw_offset), str(bad))
            )

    derived: int | None = None
    derived_problem: str | None = None
    if local is not None and (G_DATE in gps and G_TIME in gps):
        try:
            utc = _gps_utc(gps)
            diff_min = (local - utc).total_seconds() / 60.0
            nearest = 15 * round(diff_min / 15.0)
            if abs(nearest) > 14 * 60:
                derived_problem = (
                    f"camera clock and GPS time differ by {diff_min / 60:+.1f} h, more than any time zone: "
                    "the camera clock is probably wrong"
                )
            elif abs(diff_min - nearest) > 5:
                derived_problem = (
                    f"camera clock and GPS time differ by {diff_min:+.0f} min, not a whole time-zone offset: "
                    "the camera clock is probably off"
                )
            else:
                derived = int(nearest)
        except _Bad as bad:
            derived_problem = str(bad)

    if offset is None and derived is not None:
        offset, source = derived, "difference between camera clock and GPS time"
    if derived_problem and offset is None:
        report.evidence.append(
            _rejected("exif.offset-gps", EvidenceKind.UTC_OFFSET, "UTC offset from GPS time", derived_problem)
        )
    if offset is None:
        if not any(e.kind == EvidenceKind.UTC_OFFSET for e in report.evidence):
            report.missing.append("no UTC offset in the metadata")
        return

    report.utc_offset_minutes = offset
    report.offset_source = source
    caveats = []
    if derived is not None and source == "OffsetTimeOriginal tag" and derived != offset:
        caveats.append(f"GPS time implies {format_offset(derived)} instead")
    # Phones set their clocks from the network; a camera clock set by hand is often left on home time.
    weight = 0.5 if source == "OffsetTimeOriginal tag" else 0.35
    if caveats:
        weight = 0.25
    region = None
    countries: dict[str, float] = {}
    details: dict[str, Any] = {"offset_minutes": offset, "source": source}
    if local is not None:
        match = gazetteer.where_offset(local, offset)
        if match is not None:
            region = BoxRegion(south=-90, north=90, west=match.west, east=match.east)
            countries = {c: round(min(1.0, s), 4) for c, s in match.countries.items() if s > 0}
            details["longitude_band"] = [match.west, match.east]
            details["zones"] = list(match.zones[:20])
        else:
            caveats.append("no time zone used this offset at that date")
            weight = 0.0
    else:
        # Without a date we cannot apply daylight saving; the nominal band is offset x 15 deg, ±7.5.
        centre = offset / 4.0
        region = BoxRegion(
            south=-90,
            north=90,
            west=((centre - 22.5 + 180) % 360) - 180,
            east=((centre + 22.5 + 180) % 360) - 180,
        )
    band = f"; longitudes {region.west:.0f}° to {region.east:.0f}°" if region else ""
    report.evidence.append(
        _evidence(
            "exif.offset",
            EvidenceKind.UTC_OFFSET,
            f"clock at UTC{format_offset(offset)} (from {source}){band}",
            weight=weight,
            region=region,
            countries=countries,
            reason="; ".join(caveats) or None,
            details=details,
        )
    )
