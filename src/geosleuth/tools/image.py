"""Opening photos safely: every way a file can be wrong becomes one typed error with a readable line.

A photo whose pixels are damaged but whose metadata is intact is not thrown away: it loads with
``pixel_error`` set, so EXIF evidence still counts and the pixel stages say why they were skipped.
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from geosleuth.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    NotAFileError,
    NotAnImageError,
    UnsupportedFormatError,
)

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = {
    "JPEG": "JPEG",
    "MPO": "JPEG (multi-picture)",
    "PNG": "PNG",
    "TIFF": "TIFF",
    "WEBP": "WebP",
    "HEIF": "HEIC/HEIF",
    "AVIF": "AVIF",
    "GIF": "GIF",
    "BMP": "BMP",
}
SUPPORTED_LIST = "JPEG, PNG, TIFF, WebP, HEIC/HEIF, AVIF, GIF, BMP"
IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".jpe",
    ".png",
    ".tif",
    ".tiff",
    ".webp",
    ".heic",
    ".heif",
    ".hif",
    ".avif",
    ".gif",
    ".bmp",
}
# Pillow refuses images above twice this on open; we apply our own (configurable) limit instead.
PILLOW_DEFAULT_MAX_PIXELS = 89_478_485

_heif_registered = False


def _register_heif() -> None:
    global _heif_registered
    if not _heif_registered:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
        except ImportError:  # pragma: no cover - pillow-heif is a core dependency
            log.warning("pillow-heif is not installed: HEIC/HEIF photos cannot be read")
        _heif_registered = True


@dataclass
class LoadedImage:
    """A photo opened for analysis."""

    source: str
    format: str
    width: int
    height: int
    mode: str
    n_bytes: int
    sha256: str
    original: Image.Image
    """The image as opened (lazy pixels), for metadata."""
    rgb: Image.Image | None
    """Decoded pixels: RGB, upright (EXIF orientation applied). None when ``pixel_error`` is set."""
    pixel_error: str | None = None

    @property
    def exif(self) -> Image.Exif:
        return self.original.getexif()

    def info(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "size": [self.width, self.height],
            "mode": self.mode,
            "bytes": self.n_bytes,
            "sha256": self.sha256,
        }


def _sniff_unsupported(head: bytes) -> str | None:
    """Name formats people pass by mistake that Pillow cannot (or should not) open as a photo."""
    if head.startswith(b"%PDF"):
        return "a PDF document"
    lowered = head[:512].lstrip().lower()
    if lowered.startswith(b"<svg") or (lowered.startswith(b"<?xml") and b"<svg" in lowered):
        return "an SVG drawing"
    if head[4:8] == b"ftyp" and head[8:12] in (b"isom", b"mp41", b"mp42", b"qt  ", b"M4V ", b"3gp4", b"3gp5"):
        return "a video"
    if head.startswith((b"PK\x03\x04", b"\x1f\x8b", b"7z\xbc\xaf")):
        return "an archive"
    if head.startswith(b"II*\x00") and head[8:10] == b"CR":
        return "a Canon RAW file (convert it to JPEG or TIFF first)"
    return None


def find_images(folder: Path) -> tuple[list[Path], int]:
    """The image files in ``folder`` and below (by suffix, sorted, hidden files left out), and how
    many other files were left out."""
    found: list[Path] = []
    skipped = 0
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if f.suffix.lower() in IMAGE_SUFFIXES:
            found.append(f)
        else:
            skipped += 1
    return found, skipped


def read_source(source: str | Path, *, max_bytes: int) -> bytes:
    """Read a file with the checks that give one clear line per failure."""
    path, name = Path(source), str(source)
    _check_file(path, name, max_bytes)
    try:
        return path.read_bytes()
    except PermissionError as exc:
        raise ImageNotFoundError(name, "permission denied; check the file's permissions") from exc
    except OSError as exc:
        raise CorruptImageError(name, f"could not be read ({exc.strerror or exc})") from exc


def _check_file(path: Path, name: str, max_bytes: int) -> None:
    """What the file system can tell without reading: it exists, is a regular file, has a size."""
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise ImageNotFoundError(name, "no such file; check the path") from exc
    except NotADirectoryError as exc:
        raise ImageNotFoundError(name, "no such file (a parent in the path is not a folder)") from exc
    except PermissionError as exc:
        raise ImageNotFoundError(name, "permission denied; check the file's permissions") from exc
    if path.is_dir():
        raise NotAFileError(
            name, "is a directory, not an image file; `geosleuth locate DIR` processes every image in it"
        )
    if not path.is_file():
        raise NotAFileError(name, "is not a regular file (a device, socket or pipe); pass an image file")
    if st.st_size == 0:
        raise EmptyImageError(name, "the file is empty (0 bytes)")
    if st.st_size > max_bytes:
        raise ImageTooLargeError(
            name,
            f"the file has {st.st_size:,} bytes, above the limit of {max_bytes:,}; raise max_file_bytes to allow it",
        )


def check_image(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    max_pixels: int = 2 * PILLOW_DEFAULT_MAX_PIXELS,
    max_bytes: int = 512 * 1024 * 1024,
) -> None:
    """Raise the :class:`ImageInputError` that :func:`open_image` would raise before decoding any
    pixels (missing, not a file, unreadable, empty, too large, not an image, an unsupported format,
    a damaged header, too many declared pixels), reading only the file's header: milliseconds, so
    a caller can reject bad inputs before it builds anything heavy. Damaged pixel data is only
    found by decoding, in :func:`open_image`."""
    _register_heif()
    if isinstance(source, bytes | bytearray | memoryview):
        label = name or "<bytes>"
        data = bytes(source)
        _check_bytes(label, data, max_bytes)
        img = _open_header(label, io.BytesIO(data), data[:1024], max_pixels)
        _check_size(label, img, max_pixels)
        return
    path = Path(source)
    label = name or str(source)
    _check_file(path, label, max_bytes)
    try:
        fh = path.open("rb")
    except PermissionError as exc:
        raise ImageNotFoundError(label, "permission denied; check the file's permissions") from exc
    except OSError as exc:
        raise CorruptImageError(label, f"could not be read ({exc.strerror or exc})") from exc
    with fh:
        try:
            head = fh.read(1024)
            fh.seek(0)
        except OSError as exc:
            raise CorruptImageError(label, f"could not be read ({exc.strerror or exc})") from exc
        with _open_header(label, fh, head, max_pixels) as img:
            _check_size(label, img, max_pixels)


def _check_bytes(label: str, data: bytes, max_bytes: int) -> None:
    if not data:
        raise EmptyImageError(label, "no bytes were given (empty input)")
    if len(data) > max_bytes:
        raise ImageTooLargeError(label, f"{len(data):,} bytes is above the limit of {max_bytes:,}")


def open_image(
    source: str | Path | bytes | Image.Image,
    *,
    name: str | None = None,
    max_pixels: int = 2 * PILLOW_DEFAULT_MAX_PIXELS,
    max_bytes: int = 512 * 1024 * 1024,
    draft_side: int | None = None,
) -> LoadedImage:
    """Open a path, raw bytes or a PIL image. Raises a subclass of :class:`ImageInputError`.

    ``draft_side`` lets JPEG decoding skip detail the caller will not use (an encoder that looks at
    224 pixels does not need a 12-megapixel decode): pixels are decoded at the smallest JPEG scale
    that keeps both sides at least that long."""
    _register_heif()
    if isinstance(source, Image.Image):
        label = name or "<image>"
        blob = source.tobytes()
        return _finish(label, source, len(blob), hashlib.sha256(blob).hexdigest(), max_pixels, None)

    if isinstance(source, bytes | bytearray | memoryview):
        label = name or "<bytes>"
        data = bytes(source)
        _check_bytes(label, data, max_bytes)
    else:
        label = name or str(source)
        data = read_source(source, max_bytes=max_bytes)
    img = _open_header(label, io.BytesIO(data), data[:1024], max_pixels)
    return _finish(label, img, len(data), hashlib.sha256(data).hexdigest(), max_pixels, draft_side)


def _open_header(label: str, fp: IO[bytes], head: bytes, max_pixels: int) -> Image.Image:
    """Identify the format from the header (pixels stay lazy); every way that fails is one error."""
    what = _sniff_unsupported(head)
    if what:
        raise UnsupportedFormatError(
            label, f"this is {what}, not a photo; supported formats: {SUPPORTED_LIST}"
        )
    with _pillow_limits(max_pixels):
        try:
            img = Image.open(fp)
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(
                label,
                f"{exc}; this looks like a decompression bomb (raise max_image_pixels if it is a real photo)",
            ) from exc
        except UnidentifiedImageError as exc:
            raise NotAnImageError(
                label,
                f"not an image file in any known format (starts with {head[:8]!r}); supported: {SUPPORTED_LIST}",
            ) from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise CorruptImageError(label, f"the image header is damaged ({exc})") from exc
    if img.format not in SUPPORTED_FORMATS:
        raise UnsupportedFormatError(
            label, f"{img.format} images are not supported; convert it to one of: {SUPPORTED_LIST}"
        )
    return img


@contextmanager
def _pillow_limits(max_pixels: int) -> Iterator[None]:
    """Apply our own pixel limit instead of Pillow's: silence its warning and, when the user allowed
    more than Pillow would, lift Pillow's refusal for the duration (a process-wide setting)."""
    old = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if max_pixels > 2 * PILLOW_DEFAULT_MAX_PIXELS:
            Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = old


def _finish(
    label: str, img: Image.Image, n_bytes: int, digest: str, max_pixels: int, draft_side: int | None
) -> LoadedImage:
    w, h = _check_size(label, img, max_pixels)
    mode = img.mode
    rgb: Image.Image | None = None
    pixel_error: str | None = None
    try:
        if draft_side and img.format == "JPEG":
            img.draft("RGB", (draft_side, draft_side))
        with _pillow_limits(max_pixels):
            rgb = to_rgb(img)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        pixel_error = f"the pixel data is truncated or corrupt ({exc})"
        log.info("%s: %s", label, pixel_error)
    return LoadedImage(
        source=label,
        format=img.format or "unknown",
        width=w,
        height=h,
        mode=mode,
        n_bytes=n_bytes,
        sha256=digest,
        original=img,
        rgb=rgb,
        pixel_error=pixel_error,
    )


def _check_size(label: str, img: Image.Image, max_pixels: int) -> tuple[int, int]:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise CorruptImageError(label, f"the image declares an empty size {w}x{h}")
    if w * h > max_pixels:
        raise ImageTooLargeError(
            label,
            f"the image declares {w}x{h} = {w * h:,} pixels, above the limit of {max_pixels:,} "
            "(a decompression bomb, or a huge scan: raise max_image_pixels to allow it)",
        )
    return w, h


def to_rgb(img: Image.Image) -> Image.Image:
    """Decode to 8-bit RGB, upright: handles greyscale, 16-bit and float, CMYK, palette and alpha
    (flattened onto white), multi-frame files (first frame) and EXIF orientation."""
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    img.load()
    try:
        upright = ImageOps.exif_transpose(img)
    except Exception as exc:  # a malformed orientation tag must not lose the photo
        log.debug("ignoring bad EXIF orientation: %s", exc)
        upright = img
    mode = upright.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(upright, dtype=np.float64)
        lo, hi = np.percentile(arr, [0.5, 99.5]) if arr.size else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1.0
        scaled = np.clip((arr - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    if mode in ("P", "PA"):
        upright = upright.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = upright.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return upright.copy() if upright is img else upright
    return upright.convert("RGB")
