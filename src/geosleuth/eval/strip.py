"""Removing the GPS from a photo while keeping the rest of its metadata.

An evaluation on geotagged photos must hand the pipeline bytes without the answer in them, yet
keep what a real unlabelled photo would still carry: the capture time and UTC offset (evidence the
pipeline uses), the camera, the maker note. So the GPS IFD goes (and the Interop IFD, which Pillow
cannot write back), XMP goes (it can hold GPS too), and everything else stays.

JPEGs keep their pixels: only the Exif/XMP APP1 segments are replaced. Other formats (HEIC, WebP,
PNG, TIFF, MPO) are re-encoded as JPEG at quality 95 with the cleaned EXIF, their pixels turned
upright (so orientation is reset to 1).

:func:`gps_left` says whether bytes still carry a usable position; a harness must refuse any
sample for which it does not say None.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from PIL import Image

from geosleuth.errors import StripError
from geosleuth.tools.exif import EXIF_IFD, GPS_IFD, exif_gps
from geosleuth.tools.image import LoadedImage, open_image

INTEROP_IFD, MAKER_NOTE, ORIENTATION = 0xA005, 0x927C, 0x0112
MAX_APP1 = 65533  # a JPEG segment's length field is 16 bits and counts itself
# XMP spells its GPS tags out; after stripping they must not appear anywhere in the file.
XMP_GPS_MARKERS = (b"GPSLatitude", b"GPSLongitude")


@dataclass(frozen=True)
class Stripped:
    """Bytes without GPS, and how they were made (for the reader of a benchmark report)."""

    data: bytes
    method: str


def exif_without_gps(img: LoadedImage, *, upright: bool, maker_note: bool = True) -> bytes:
    """The EXIF block minus the GPS IFD, as bytes starting with b'Exif\\0\\0'."""
    old, new = img.exif, Image.Exif()
    new.update({tag: value for tag, value in old.items() if tag not in (GPS_IFD, EXIF_IFD)})
    sub = {k: v for k, v in old.get_ifd(EXIF_IFD).items() if k != INTEROP_IFD}
    if not maker_note:
        sub.pop(MAKER_NOTE, None)
    if sub:
        new[EXIF_IFD] = sub
    if upright and ORIENTATION in new:  # the re-encoded pixels are already turned upright
        new[ORIENTATION] = 1
    return new.tobytes()


def splice_jpeg(data: bytes, app1: bytes) -> bytes:
    """The JPEG with its Exif/XMP APP1 segments replaced by ``app1``; pixels untouched."""
    if len(app1) > MAX_APP1:
        raise StripError(f"the EXIF block has {len(app1):,} bytes, more than one JPEG segment holds")
    out, i = [data[:2], b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1], 2
    while i + 4 <= len(data) and data[i] == 0xFF and data[i + 1] not in (0xDA, 0xD9):
        size = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if not (data[i + 1] == 0xE1 and data[i + 4 : i + 10] in (b"Exif\0\0", b"http:/")):
            out.append(data[i : i + 2 + size])
        i += 2 + size
    return b"".join([*out, data[i:]])


def strip_gps_image(data: bytes, image: LoadedImage) -> Stripped:
    """Like :func:`strip_gps` for a photo already opened (``image`` is ``open_image(data)``)."""
    is_jpeg = image.format == "JPEG"
    for maker_note in (True, False):
        app1 = exif_without_gps(image, upright=not is_jpeg, maker_note=maker_note)
        if len(app1) <= MAX_APP1:
            break
    note = "" if maker_note else ", maker note dropped (too big)"
    if is_jpeg:
        return Stripped(splice_jpeg(data, app1), "jpeg: APP1 rewritten" + note)
    if image.rgb is None:
        raise StripError(f"{image.source}: no pixels to re-encode without the GPS ({image.pixel_error})")
    buf, clean = io.BytesIO(), image.region()  # full resolution, read again from the bytes
    clean.info = {}  # Pillow would carry XMP (which can hold GPS) over from info
    try:
        clean.save(buf, "JPEG", quality=95, exif=app1)
    except (OSError, ValueError) as exc:
        raise StripError(f"{image.source}: could not re-encode without the GPS ({exc})") from exc
    return Stripped(buf.getvalue(), f"{image.format.lower()} -> jpeg q95" + note)


def strip_gps(data: bytes, name: str = "<bytes>") -> bytes:
    """The photo's bytes without its GPS position, keeping time, UTC offset, camera and maker note.

    Raises :class:`~geosleuth.errors.ImageInputError` when the bytes are not a photo and
    :class:`StripError` when the GPS cannot be removed. Check the result with :func:`gps_left`."""
    return strip_gps_image(data, open_image(data, name=name)).data


def gps_left(data: bytes, name: str = "<bytes>") -> str | None:
    """Why the bytes still carry a usable position (EXIF GPS that parses, or XMP GPS tags), or
    None when they carry none: the only answer that makes them safe to evaluate on."""
    point, _ = exif_gps(open_image(data, name=name, draft_side=64))
    if point is not None:
        return f"the EXIF GPS still reads {point}"
    for marker in XMP_GPS_MARKERS:
        if marker in data:
            return f"the bytes still hold an XMP {marker.decode()} tag"
    return None


__all__ = [
    "StripError",
    "Stripped",
    "exif_without_gps",
    "gps_left",
    "splice_jpeg",
    "strip_gps",
    "strip_gps_image",
]
