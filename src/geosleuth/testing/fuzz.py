"""Property-based fuzzing of the code that reads untrusted input: the image loader, the EXIF reader
and the VLM answer parser (`hypothesis`, in the dev extra).

Inputs are generated (EXIF blocks with values of every wrong type and length, answers in JSON,
broken JSON and free text) and mutated from real bytes (bit flips, truncation, splices of two
files, inserted and deleted runs, overwritten length fields). Each target takes one input and
returns the kind of outcome it had (``"loaded"``, ``"refused NotAnImageError"``, ``"guess json"``,
...). Only the project's typed errors may come out of the code under test; anything else escaping,
or a broken invariant (an ``AssertionError``), is a crash.

``tests/test_fuzz.py`` runs a few dozen examples of each target per test run; ``scripts/fuzz.py``
runs thousands and counts the outcomes.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from geosleuth.errors import CorruptImageError, ImageInputError, MissingDependencyError

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - the dev extra has it
    raise MissingDependencyError("hypothesis", "dev", "Fuzzing") from exc

MAX_PIXELS = 4_000_000  # a mutated header may declare any size: keep decodes fast
MAX_SIDE = 256
# Bytes that break parsers: zero, all ones, the sign boundary, and JPEG/PNG/TIFF structure bytes.
INTERESTING = [0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE, 0xD8, 0xD9, 0xE1, 0x2A, 0x4D, 0x49]


# --- mutating real bytes --------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes], max_ops: int = 4) -> bytes:
    """One of ``seeds`` changed by up to ``max_ops`` mutations (most often near its start, where the
    headers and the metadata are)."""
    data = bytearray(draw(st.sampled_from(list(seeds))))
    for _ in range(draw(st.integers(0, max_ops))):
        if not data:
            break
        n = len(data)
        head = min(n, 4096)
        pos = draw(st.one_of(st.integers(0, head - 1), st.integers(0, n - 1)))
        op = draw(
            st.sampled_from(["flip", "byte", "truncate", "splice", "insert", "delete", "int", "repeat"])
        )
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            data[pos] = draw(st.sampled_from(INTERESTING))
        elif op == "truncate":
            del data[pos:]
        elif op == "splice":  # the rest of the file replaced by part of another
            other = draw(st.sampled_from(list(seeds)))
            start = draw(st.integers(0, max(0, len(other) - 1)))
            data[pos:] = other[start : start + draw(st.integers(0, 4096))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "int":  # a length or offset field set to an extreme
            value = draw(st.sampled_from([0, 1, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
            width = draw(st.sampled_from([2, 4]))
            data[pos : pos + width] = value.to_bytes(4, draw(st.sampled_from(["big", "little"])))[-width:]
        else:  # a run repeated, as a chunk or a segment written twice
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 256))]
    return bytes(data)


@st.composite
def mutated_text(draw: st.DrawFn, seeds: Sequence[str], max_ops: int = 4) -> str:
    """One of ``seeds`` with characters flipped, deleted, duplicated or inserted (braces, quotes,
    digits, signs and degree marks most of all)."""
    text = list(draw(st.sampled_from(list(seeds))))
    specials = [*"{}[]:,\"'\\-+.°′″NSEW0123456789 \n", "NaN", "1e309", "```", "</think>", "null"]
    for _ in range(draw(st.integers(0, max_ops))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "repeat", "truncate"]))
        if op == "insert":
            text[pos:pos] = list(draw(st.sampled_from(specials)))
        elif op == "delete":
            del text[pos : pos + draw(st.integers(1, 8))]
        elif op == "replace" and pos < len(text):
            text[pos] = draw(st.one_of(st.sampled_from(specials[:30]), st.characters()))
        elif op == "repeat":
            text[pos:pos] = text[pos : pos + draw(st.integers(1, 40))] * draw(st.integers(1, 30))
        else:
            del text[pos:]
    return "".join(text)


# --- generated EXIF -------------------------------------------------------------------------------


def _rational() -> st.SearchStrategy[tuple[int, int]]:
    return st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)) | st.sampled_from(
        [(0, 0), (1, 0), (48, 1), (90, 1), (181, 1), (2**32 - 1, 1)]
    )


def _rationals() -> st.SearchStrategy[tuple[tuple[int, int], ...]]:
    return st.lists(_rational(), min_size=1, max_size=4).map(tuple)


def _dms(max_degrees: int) -> st.SearchStrategy[tuple[tuple[int, int], ...]]:
    """A well-formed degrees/minutes/seconds triple, so the accepting path is fuzzed too."""
    return st.tuples(
        st.integers(0, max_degrees).map(lambda d: (d, 1)),
        st.integers(0, 59).map(lambda m: (m, 1)),
        st.integers(0, 5999).map(lambda s: (s, 100)),
    )


def _ascii() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"N", b"S", b"E", b"W", b"X", b"", b"A", b"V", b"M", b"T", b"GPS", b"NETWORK"]),
        st.sampled_from(
            [b"2024:07:14 15:32:10", b"2024:02:30 25:61:61", b"+02:00", b"-14:30", b"+99:99", b"::"]
        ),
    )


@st.composite
def exif_blocks(draw: st.DrawFn) -> bytes:
    """An EXIF block (``Exif\\0\\0`` + TIFF) written by piexif with values of the right tags but any
    shape: GPS triples of 1-4 values, zero denominators, out-of-range degrees, odd references,
    malformed times and offsets, strange makes and captions."""
    import piexif

    g, e, z = piexif.GPSIFD, piexif.ExifIFD, piexif.ImageIFD
    gps: dict[int, Any] = {}
    for tag, strategy in (
        (g.GPSLatitudeRef, st.sampled_from([b"N", b"S"]) | _ascii()),
        (g.GPSLatitude, _dms(90) | _rationals()),
        (g.GPSLongitudeRef, st.sampled_from([b"E", b"W"]) | _ascii()),
        (g.GPSLongitude, _dms(180) | _rationals()),
        (g.GPSAltitudeRef, st.integers(0, 255)),
        (g.GPSAltitude, _rational()),
        (g.GPSTimeStamp, _rationals()),
        (g.GPSDateStamp, _ascii()),
        (g.GPSStatus, _ascii()),
        (g.GPSImgDirectionRef, _ascii()),
        (g.GPSImgDirection, _rational()),
        (g.GPSHPositioningError, _rational()),
        (g.GPSProcessingMethod, _ascii()),
    ):
        if draw(st.booleans()):
            gps[tag] = draw(strategy)
    exif: dict[int, Any] = {}
    for tag in (e.DateTimeOriginal, e.OffsetTimeOriginal, e.OffsetTime, e.LensModel):
        if draw(st.booleans()):
            exif[tag] = draw(_ascii())
    zeroth: dict[int, Any] = {}
    for tag in (z.Make, z.Model, z.Software, z.DateTime, z.ImageDescription, z.Artist, z.Copyright):
        if draw(st.booleans()):
            zeroth[tag] = draw(_ascii())
    if draw(st.booleans()):
        zeroth[z.Orientation] = draw(st.integers(0, 65535))
    try:
        return bytes(piexif.dump({"0th": zeroth, "Exif": exif, "GPS": gps}))
    except Exception:  # a value piexif cannot write: that input is not generated (the block is empty)
        return bytes(piexif.dump({}))


def jpeg_with_exif(app1: bytes) -> bytes:
    """A small JPEG carrying ``app1`` as its EXIF block, whatever it holds."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (48, 32), (90, 140, 60)).save(buf, format="JPEG", quality=80, exif=app1)
    return buf.getvalue()


# --- generated VLM answers ------------------------------------------------------------------------

_KEYS = [
    "latitude", "longitude", "lat", "lon", "lng", "coordinates", "location", "confidence", "radius_km",
    "rationale", "country", "city", "clues_used", "answer", "Latitude", "LAT",
]  # fmt: skip


def _json_value(depth: int = 2) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(10**20), 10**20),
        st.text(max_size=30),
        st.sampled_from(
            [48.8566, -33.87, 2.35, 151.2, 90.0, -180.0, 0.0, 1e309, "48.85° N", "high", "25 km"]
        ),
    )
    if depth == 0:
        return scalars
    return st.one_of(
        scalars,
        st.lists(_json_value(depth - 1), max_size=4),
        st.dictionaries(st.sampled_from(_KEYS), _json_value(depth - 1), max_size=5),
    )


def _as_json(obj: Any) -> str:
    try:
        return json.dumps(obj, allow_nan=True)
    except (ValueError, OverflowError):
        return "{}"


@st.composite
def vlm_answers(draw: st.DrawFn) -> str:
    """What a model might answer: JSON objects of the guess's keys with values of any type, that
    JSON broken, coordinates in words and degrees-minutes-seconds, thinking, fences, and noise."""
    lat = draw(st.floats(-100, 100, allow_nan=False) | st.sampled_from([0.0, 90.0, -90.0, 48.8566]))
    lon = draw(st.floats(-200, 200, allow_nan=False) | st.sampled_from([0.0, 180.0, -180.0, 2.3522]))
    obj = draw(st.dictionaries(st.sampled_from(_KEYS), _json_value(), max_size=8))
    seeds = [
        _as_json(obj),
        _as_json({"latitude": lat, "longitude": lon, "confidence": 0.5, "rationale": "signs"}),
        f"```json\n{_as_json({'lat': lat, 'lon': lon})}\n```",
        f"<think>maybe {{'lat': {lat}}}</think>Final answer: {abs(lat):.4f}° {'N' if lat >= 0 else 'S'}, "
        f"{abs(lon):.4f}° {'E' if lon >= 0 else 'W'}",
        f"Latitude: {lat}, Longitude: {lon}. Country: France",
        "48°51′24″N 2°21′8″E",
        "{latitude: 48.85, longitude: 2.35, confidence: high, // a comment\n}",
        "I cannot tell where this is.",
    ]
    nested = st.builds(
        lambda opener, n, inner: (
            opener * n + inner + {"[": "]", '{"a":': "}"}[opener] * draw(st.integers(0, n))
        ),
        st.sampled_from(["[", '{"a":']),
        st.sampled_from([2, 50, 999, 1001, 2500]) | st.integers(1, 3000),  # past json's recursion limit too
        st.sampled_from(seeds[:2]),
    )
    return draw(
        st.one_of(
            mutated_text(seeds),
            st.text(max_size=200),
            st.builds(lambda a, b: a + b, st.sampled_from(seeds), st.text(max_size=50)),
            nested,
        )
    )


# --- the targets ----------------------------------------------------------------------------------


@contextmanager
def _no_warnings_escape() -> Iterator[None]:
    """The loader catches what Pillow warns about a file and keeps it as notes: nothing may reach
    the caller as a raw warning."""
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        yield
    assert not leaked, [f"{w.category.__name__}: {w.message}" for w in leaked]


def load_image(data: bytes) -> str:
    """Open bytes as a photo. Only an :class:`ImageInputError` may come out, and the quick header
    check must raise the same kind as the full open (or neither raises)."""
    from geosleuth.tools.image import check_image, open_image

    try:
        with _no_warnings_escape():
            check_image(data, name="<fuzz>", max_pixels=MAX_PIXELS)
        checked: type[ImageInputError] | None = None
    except ImageInputError as exc:
        checked = type(exc)
    try:
        with _no_warnings_escape():
            img = open_image(data, name="<fuzz>", max_pixels=MAX_PIXELS, max_side=MAX_SIDE)
    except ImageInputError as exc:
        assert checked is type(exc), f"check_image raised {checked}, open_image {type(exc).__name__}: {exc}"
        return f"refused {type(exc).__name__}"
    assert checked is None, f"check_image raised {checked.__name__}, open_image loaded it"
    img.exif.get_ifd(0x8825)
    if img.rgb is None:
        assert img.pixel_error
        return "loaded, pixels damaged"
    assert img.rgb.mode == "RGB" and max(img.rgb.size) <= MAX_SIDE, (img.rgb.mode, img.rgb.size)
    w, h = img.full_size
    assert w >= img.rgb.width and h >= img.rgb.height
    try:
        with _no_warnings_escape():
            crop = img.region((0, 0, min(w, 16), min(h, 16)))
    except CorruptImageError:
        return "loaded, full resolution damaged"
    assert crop.mode == "RGB" and crop.size == (min(w, 16), min(h, 16)), crop.size
    return "loaded"


def read_metadata(data: bytes, gazetteer: Any) -> str:
    """Read a photo's EXIF evidence. Loading may refuse the bytes (a typed error); reading the
    metadata never raises, and whatever it accepts is valid."""
    from geosleuth.tools.exif import read_exif
    from geosleuth.tools.image import open_image

    try:
        with _no_warnings_escape():
            img = open_image(data, name="<fuzz>", max_pixels=MAX_PIXELS, max_side=MAX_SIDE)
    except ImageInputError as exc:
        return f"refused {type(exc).__name__}"
    with _no_warnings_escape():
        rep = read_exif(img, gazetteer)
    for e in rep.evidence:
        assert e.usable or e.reason, e
    if rep.gps is not None:
        assert -90 <= rep.gps.lat <= 90 and -180 <= rep.gps.lon <= 180
        assert (rep.gps.lat, rep.gps.lon) != (0.0, 0.0)
        gps = next(e for e in rep.evidence if e.id == "exif.gps")
        assert gps.usable and gps.point == rep.gps
        return "gps"
    if rep.utc_offset_minutes is not None:
        assert abs(rep.utc_offset_minutes) <= 14 * 60
    return "corrupt" if rep.corrupt else "metadata" if rep.present else "none"


def parse_answer(text: str) -> str:
    """Parse a VLM answer. It never raises and never reaches its last-resort handler (a parser
    bug it would otherwise hide as "parser error"); a guess is always in range and finite."""
    from geosleuth.agents.vlm.parse import parse_guess

    sample = parse_guess(text, "stop")
    assert sample.raw_text == text
    if sample.guess is None:
        assert sample.error and not sample.error.startswith("parser error"), sample.error
        return "unusable"
    g = sample.guess
    assert math.isfinite(g.latitude) and math.isfinite(g.longitude)
    assert -90 <= g.latitude <= 90 and -180 <= g.longitude <= 180
    return f"guess {sample.parse}"


Target = Callable[..., str]
