"""Opening photos safely: every way a file can be wrong becomes one typed error with a readable line.

A photo whose pixels are damaged but whose metadata is intact is not thrown away: it loads with
``pixel_error`` set, so EXIF evidence still counts and the pixel stages say why they were skipped.

Memory stays bounded whatever a file declares. The analysis works on a *working copy* at most
``max_side`` pixels long (OCR reads 2000, a VLM sees 1024, image encoders 224-448):

- a large JPEG is decoded straight at a reduced scale (the DCT scaling of Pillow's draft mode);
- other formats are decoded once and reduced band by band, so no full-size copy in another mode
  (RGBA, float) is ever made, and the full-size decode is let go before the function returns;
- full resolution is read again from the source only for the region that needs it
  (:meth:`LoadedImage.region`: the zoom tool, re-encoding without GPS);
- decoding is serialised across threads, so a batch holds one full-size decode at a time;
- a format that costs more memory to decode than JPEG or PNG (4 bytes a pixel) gets a pixel limit
  lowered by the same factor (:data:`DECODE_COST`).
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import math
import os
import stat
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from geosleuth.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageInputError,
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
# 100 M pixels (a 10000 x 10000 scan, a 108-megapixel phone photo just above): decoding one costs
# about 400 MB, which with the engines keeps a run near 1 GB. Settings.max_image_pixels has the same
# default (a test checks).
DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
# The working copy's longest side when the caller does not say (the pipeline asks for what its
# stages read: max(ocr.max_side, vlm.image_max_side)).
WORKING_MAX_SIDE = 2048
# How many times the memory of a JPEG or PNG decode (4 bytes a pixel in Pillow) decoding a format
# takes, measured on RGB files with Pillow 13 / pillow-heif 1.8: WebP 16 bytes a pixel, HEIF 8.6,
# TIFF 6.3. A format's pixel limit is max_image_pixels divided by its factor.
DECODE_COST = {"WEBP": 4.0, "HEIF": 2.0, "AVIF": 2.0, "TIFF": 1.5}
DRAFTABLE = {"JPEG", "MPO"}  # decoders that can scale down while decoding
# Reduce by a whole factor (a box filter) while the image stays at least this many times the
# target, then resample with Lanczos: Pillow's "reducing_gap" (thumbnail's default; close to a
# full Lanczos resize). An image less than 4 times the target is resized in one Lanczos pass.
REDUCING_GAP = 2.0
BAND_PIXELS = 4_000_000  # pixels converted at a time when a mode change needs a copy
LEVEL_SAMPLES = 4_000_000  # pixels sampled for the contrast range of 16-bit and float images
HIGH_DEPTH = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}
ORIENTATION_TAG, EXIF_IFD, GPS_IFD = 0x0112, 0x8769, 0x8825
# Pillow's own mapping (ImageOps.exif_transpose) from the EXIF orientation to the transpose that
# turns the stored pixels upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

Box = tuple[float, float, float, float]
# What Pillow raises on damaged data: its decoders' OSError and SyntaxError, and, from plugins that
# trust a field's type or range, TypeError (an IFDRational where an int belongs), IndexError,
# KeyError, ZeroDivisionError, OverflowError, struct.error (found by scripts/fuzz.py).
DECODE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    TypeError,
    IndexError,
    KeyError,
    ZeroDivisionError,
    OverflowError,
    struct.error,
)
PIXEL_ERRORS: tuple[type[Exception], ...] = (*DECODE_ERRORS, Image.DecompressionBombError)

# Pillow's pixel limit and the warnings filters are process-wide; holding this while they are
# changed also keeps a batch's threads to one full-size decode at a time.
_DECODE_LOCK = threading.RLock()
_heif_registered = False


def _register_heif() -> None:
    global _heif_registered
    if not _heif_registered:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
        except ImportError:  # pragma: no cover - pillow-heif is a core dependency
            log.warning("pillow-heif is not installed: HEIC/HEIF photos cannot be read")
        _quiet_libtiff()
        _heif_registered = True


def _quiet_libtiff() -> None:
    """Stop libtiff printing its decoding errors straight to stderr ("ZIPDecode: Decoding error at
    scanline 0, ..."): Pillow silences libtiff's warnings but not its errors, and raises each as an
    OSError too, which becomes the photo's ``pixel_error``, so the raw line is only noise beside the
    one line a failure gets. Linux only (the library is found in /proc/self/maps; Pillow's wheels
    bundle their own libtiff, which no name lookup would find); elsewhere nothing changes."""
    import ctypes

    import PIL._imaging  # noqa: F401 - Pillow's C core, which loads the libtiff it links

    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            mapped = (ln.split()[-1] for ln in maps if "/libtiff" in ln)
            path = next(mapped, None)
        if path is None:
            return
        lib = ctypes.CDLL(path)
        lib.TIFFSetErrorHandler.restype = ctypes.c_void_p
        lib.TIFFSetErrorHandler.argtypes = [ctypes.c_void_p]
        lib.TIFFSetErrorHandler(None)
    except (OSError, AttributeError) as exc:  # no /proc, or not the libtiff we know
        log.debug("libtiff's error messages stay on stderr: %s", exc)


@dataclass(frozen=True)
class _Source:
    """Where the full-resolution pixels can be read again: a path (checked against the digest), the
    caller's bytes, or the caller's PIL image."""

    label: str
    max_pixels: int
    path: Path | None = None
    data: bytes | None = None
    image: Image.Image | None = None
    sha256: str = ""
    levels: tuple[float, float] | None = None  # the contrast range of a 16-bit image

    @contextmanager
    def open(self) -> Iterator[Image.Image]:
        if self.image is not None:
            yield self.image
            return
        if self.data is not None:
            with Image.open(io.BytesIO(self.data)) as img:
                yield img
            return
        assert self.path is not None
        _, digest = _file_digest(self.path, self.label)
        if digest != self.sha256:
            raise CorruptImageError(self.label, "the file changed since it was opened; open it again")
        with _open_file(self.path, self.label) as fh, Image.open(fh) as img:
            yield img


@dataclass
class LoadedImage:
    """A photo opened for analysis: what its header says, its metadata, and a working copy of its
    pixels of bounded size. Boxes (OCR lines, zoom regions) are in pixels of :attr:`full_size`."""

    source: str
    format: str
    width: int
    """As stored in the file, before the EXIF orientation is applied."""
    height: int
    mode: str
    n_bytes: int
    sha256: str
    rgb: Image.Image | None
    """The working copy: RGB, upright (EXIF orientation applied), its longest side at most the
    ``max_side`` it was opened with. None when ``pixel_error`` is set."""
    pixel_error: str | None = None
    exif: Image.Exif = field(default_factory=Image.Exif)
    exif_bytes: int = 0
    """Size of the file's raw EXIF block (0: none). A block that parses to nothing is corrupt,
    not absent."""
    notes: list[str] = field(default_factory=list)
    """What Pillow warned about while reading the file (corrupt EXIF, a malformed MPO...)."""
    orientation: int = 1
    _source: _Source | None = field(default=None, repr=False, compare=False)

    @property
    def full_size(self) -> tuple[int, int]:
        """Width and height of the upright photo at full resolution: the frame of every box."""
        if self.orientation in (5, 6, 7, 8):
            return self.height, self.width
        return self.width, self.height

    @property
    def scale(self) -> float:
        """Working-copy pixels per full-resolution pixel (1.0: the working copy is the whole photo)."""
        return 1.0 if self.rgb is None else self.rgb.width / self.full_size[0]

    def full_box(self, box: Box) -> Box:
        """``box`` in pixels of the working copy, in pixels of :attr:`full_size`."""
        if self.rgb is None or self.rgb.size == self.full_size:
            return box
        sx, sy = self.rgb.width / self.full_size[0], self.rgb.height / self.full_size[1]
        return box[0] / sx, box[1] / sy, box[2] / sx, box[3] / sy

    def region(
        self, box: tuple[int, int, int, int] | None = None, *, enough: int | None = None
    ) -> Image.Image:
        """The upright photo inside ``box`` (left, top, right, bottom in pixels of :attr:`full_size`;
        the whole photo when None), in RGB, at full resolution.

        When the working copy is smaller than the photo the pixels are decoded again from the
        source; the full-size decode lives only inside this call. ``enough``: a JPEG may be decoded
        at a reduced scale as long as the region's longest side keeps at least this many pixels
        (for a caller that would shrink it to that anyway). Raises :class:`CorruptImageError` when
        the pixels cannot be decoded or the file changed since it was opened."""
        fw, fh = self.full_size
        x0, y0, x1, y1 = box if box is not None else (0, 0, fw, fh)
        if not (0 <= x0 < x1 <= fw and 0 <= y0 < y1 <= fh):
            raise ValueError(f"region {(x0, y0, x1, y1)} is not inside the {fw}x{fh} photo")
        if self.rgb is not None and self.rgb.size == (fw, fh):
            return self.rgb.crop((x0, y0, x1, y1))
        src = self._source
        if self.rgb is None or src is None:
            raise CorruptImageError(self.source, self.pixel_error or "its pixels were not kept")
        sx0, sy0, sx1, sy1 = _stored_box((x0, y0, x1, y1), self.orientation, (self.width, self.height))
        with _reading() as caught:
            try:
                with src.open() as img:
                    if getattr(img, "n_frames", 1) > 1:
                        img.seek(0)
                    reduce = max(sx1 - sx0, sy1 - sy0) / enough if enough else 1.0
                    if reduce >= 2 and src.image is None and img.format in DRAFTABLE:
                        img.draft(
                            "RGB", (max(1, int(self.width / reduce)), max(1, int(self.height / reduce)))
                        )
                    kx, ky = img.size[0] / self.width, img.size[1] / self.height
                    img.load()
                    crop = img.crop(
                        (
                            math.floor(sx0 * kx),
                            math.floor(sy0 * ky),
                            min(img.size[0], math.ceil(sx1 * kx)),
                            min(img.size[1], math.ceil(sy1 * ky)),
                        )
                    )
            except DECODE_ERRORS as exc:
                if isinstance(exc, ImageInputError):
                    raise
                raise CorruptImageError(
                    self.source, f"its pixels could not be decoded again ({exc})"
                ) from exc
        _log_warnings(self.source, caught)
        return _upright(_to_rgb_sized(crop, crop.size, src.levels), self.orientation)

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


@dataclass
class FolderScan:
    """What a folder holds: the image files (by suffix, sorted, hidden files left out), how many
    other files were left out, and the entries named like images that cannot be read (broken
    symbolic links, link loops, pipes and devices, unreadable subfolders): input errors to report,
    not files to drop in silence."""

    images: list[Path] = field(default_factory=list)
    skipped: int = 0
    problems: list[ImageInputError] = field(default_factory=list)


def find_images(folder: Path) -> FolderScan:
    """Scan ``folder`` and below (symbolic links to files are followed, links to folders are not:
    a link back up cannot loop)."""
    scan = FolderScan()
    found: list[tuple[Path, ImageInputError | None]] = []

    def unreadable(exc: OSError) -> None:
        where = exc.filename or str(folder)
        found.append(
            (Path(where), ImageNotFoundError(where, f"cannot list this folder ({exc.strerror or exc})"))
        )

    for root, dirs, files in os.walk(folder, onerror=unreadable):
        dirs.sort()
        for name in files:
            if name.startswith("."):
                continue
            path = Path(root) / name
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                scan.skipped += 1
                continue
            try:
                _check_kind(path, str(path))
            except ImageInputError as exc:
                found.append((path, exc))
            else:
                found.append((path, None))
    for path, problem in sorted(found, key=lambda f: f[0]):
        if problem is None:
            scan.images.append(path)
        else:
            scan.problems.append(problem)
    return scan


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


def _check_kind(path: Path, name: str) -> os.stat_result:
    """The file's status, or the error that says what it is instead of a regular file."""
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        if path.is_symlink():
            raise ImageNotFoundError(
                name, f"is a broken symbolic link (it points to {os.readlink(path)}, which does not exist)"
            ) from exc
        raise ImageNotFoundError(name, "no such file; check the path") from exc
    except NotADirectoryError as exc:
        raise ImageNotFoundError(name, "no such file (a parent in the path is not a folder)") from exc
    except PermissionError as exc:
        raise ImageNotFoundError(name, "permission denied; check the file's permissions") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotAFileError(
                name, "is a symbolic link loop (it leads back to itself); fix or remove the link"
            ) from exc
        raise ImageNotFoundError(name, f"cannot be opened ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise NotAFileError(
            name, "is a directory, not an image file; `geosleuth locate DIR` processes every image in it"
        )
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a named pipe"
            if stat.S_ISFIFO(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "a device"
        )
        raise NotAFileError(name, f"is not a regular file ({kind}); pass an image file")
    return st


def _check_file(path: Path, name: str, max_bytes: int) -> None:
    """What the file system can tell without reading: it exists, is a regular file, has a size."""
    st = _check_kind(path, name)
    if st.st_size == 0:
        raise EmptyImageError(name, "the file is empty (0 bytes)")
    if st.st_size > max_bytes:
        raise ImageTooLargeError(
            name,
            f"the file has {st.st_size:,} bytes, above the limit of {max_bytes:,}; raise max_file_bytes to allow it",
        )


def _open_file(path: Path, name: str) -> IO[bytes]:
    try:
        return path.open("rb")
    except PermissionError as exc:
        raise ImageNotFoundError(name, "permission denied; check the file's permissions") from exc
    except OSError as exc:
        raise CorruptImageError(name, f"could not be read ({exc.strerror or exc})") from exc


def _file_digest(path: Path, name: str) -> tuple[int, str]:
    """The file's size and sha256, read in chunks (the bytes are never all in memory)."""
    digest, n = hashlib.sha256(), 0
    with _open_file(path, name) as fh:
        try:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
                n += len(chunk)
        except OSError as exc:
            raise CorruptImageError(name, f"could not be read ({exc.strerror or exc})") from exc
    return n, digest.hexdigest()


def check_image(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
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
        with _reading() as caught:
            img = _open_header(label, io.BytesIO(data), data[:1024], max_pixels)
            img.close()
        _log_warnings(label, caught)
        return
    label = name or str(source)
    with _header(Path(source), label, max_pixels, max_bytes) as (img, caught):
        pass
    _log_warnings(label, caught)


@contextmanager
def _header(
    path: Path, label: str, max_pixels: int, max_bytes: int
) -> Iterator[tuple[Image.Image, list[warnings.WarningMessage]]]:
    """The file opened as far as its header, with every check before decoding passed."""
    _check_file(path, label, max_bytes)
    with _open_file(path, label) as fh:
        try:
            head = fh.read(1024)
            fh.seek(0)
        except OSError as exc:
            raise CorruptImageError(label, f"could not be read ({exc.strerror or exc})") from exc
        with _reading() as caught:
            img = _open_header(label, fh, head, max_pixels)
            try:
                yield img, caught
            finally:
                img.close()


def _check_bytes(label: str, data: bytes, max_bytes: int) -> None:
    if not data:
        raise EmptyImageError(label, "no bytes were given (empty input)")
    if len(data) > max_bytes:
        raise ImageTooLargeError(label, f"{len(data):,} bytes is above the limit of {max_bytes:,}")


def open_image(
    source: str | Path | bytes | Image.Image,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_side: int | None = WORKING_MAX_SIDE,
    draft_side: int | None = None,
) -> LoadedImage:
    """Open a path, raw bytes or a PIL image. Raises a subclass of :class:`ImageInputError`.

    ``max_side``: the longest side of the working copy (:attr:`LoadedImage.rgb`); None keeps full
    resolution. ``draft_side`` lets JPEG decoding skip more detail (an encoder that looks at 224
    pixels does not need a 12-megapixel decode): pixels are decoded at the smallest JPEG scale that
    keeps both sides at least that long."""
    _register_heif()
    if isinstance(source, Image.Image):
        label = name or "<image>"
        n, digest = _pixel_digest(source)
        with _reading() as caught:
            loaded = _finish(
                label, source, n, digest, _Source(label, max_pixels, image=source), max_side, None
            )
        loaded.notes = _log_warnings(label, caught)
        return loaded
    if isinstance(source, bytes | bytearray | memoryview):
        label = name or "<bytes>"
        data = bytes(source)
        _check_bytes(label, data, max_bytes)
        digest = hashlib.sha256(data).hexdigest()
        with _reading() as caught:
            img = _open_header(label, io.BytesIO(data), data[:1024], max_pixels)
            src = _Source(label, max_pixels, data=data, sha256=digest)
            try:
                loaded = _finish(label, img, len(data), digest, src, max_side, draft_side)
            finally:
                img.close()  # the full-size pixels go now, not when the garbage collector gets to them
        loaded.notes = _log_warnings(label, caught)
        return loaded
    label = name or str(source)
    path = Path(source)
    with _header(path, label, max_pixels, max_bytes) as (img, caught):
        n, digest = _file_digest(path, label)
        src = _Source(label, max_pixels, path=path, sha256=digest)
        loaded = _finish(label, img, n, digest, src, max_side, draft_side)
    loaded.notes = _log_warnings(label, caught)
    return loaded


def _open_header(label: str, fp: IO[bytes], head: bytes, max_pixels: int) -> Image.Image:
    """Identify the format from the header (pixels stay lazy); every way that fails is one error.
    Call inside :func:`_reading`."""
    what = _sniff_unsupported(head)
    if what:
        raise UnsupportedFormatError(
            label, f"this is {what}, not a photo; supported formats: {SUPPORTED_LIST}"
        )
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
    except DECODE_ERRORS as exc:
        raise CorruptImageError(label, f"the image header is damaged ({exc})") from exc
    if img.format not in SUPPORTED_FORMATS:
        img.close()
        raise UnsupportedFormatError(
            label, f"{img.format} images are not supported; convert it to one of: {SUPPORTED_LIST}"
        )
    try:
        _check_size(label, img, max_pixels)
    except ImageInputError:
        img.close()
        raise
    return img


@contextmanager
def _reading() -> Iterator[list[warnings.WarningMessage]]:
    """Hold the decode lock, lift Pillow's own pixel limit (ours is checked right after the header
    is read, before any pixel is decoded, and names the declared size and the setting to change) and
    collect what Pillow warns about, for the caller to log with the file's name: all three are
    process-wide state."""
    with _DECODE_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield caught
        finally:
            Image.MAX_IMAGE_PIXELS = old


def _log_warnings(label: str, caught: list[warnings.WarningMessage]) -> list[str]:
    """Log Pillow's warnings about one file (never raw on stderr) and return them, once each.
    Its decompression-bomb warning is left out: our own limit has been applied."""
    notes: list[str] = []
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            continue
        text = " ".join(str(w.message).split())
        if text not in notes:
            notes.append(text)
            log.info("%s: %s", label, text)
    return notes


def _finish(
    label: str,
    img: Image.Image,
    n_bytes: int,
    digest: str,
    src: _Source,
    max_side: int | None,
    draft_side: int | None,
) -> LoadedImage:
    """Decode the working copy and read the metadata; inside :func:`_reading`. The full-size pixels
    are the caller's to free (by closing ``img``) unless ``img`` is the caller's own image."""
    w, h = _check_size(label, img, max_pixels=src.max_pixels)
    mode = img.mode
    rgb: Image.Image | None = None
    pixel_error: str | None = None
    levels: tuple[float, float] | None = None
    try:
        rgb, levels = _decode_working(img, max_side=max_side, draft_side=draft_side, own=src.image is None)
    except PIXEL_ERRORS as exc:
        pixel_error = f"the pixel data is truncated or corrupt ({exc})"
        log.info("%s: %s", label, pixel_error)
    # After decoding: a PNG's eXIf chunk may follow its pixel data.
    exif, exif_bytes = _exif_of(img)
    orientation = _orientation(exif)
    if rgb is not None:
        rgb = _upright(rgb, orientation)
    return LoadedImage(
        source=label,
        format=img.format or "unknown",
        width=w,
        height=h,
        mode=mode,
        n_bytes=n_bytes,
        sha256=digest,
        rgb=rgb,
        pixel_error=pixel_error,
        exif=exif,
        exif_bytes=exif_bytes,
        orientation=orientation,
        _source=_Source(label, src.max_pixels, src.path, src.data, src.image, src.sha256, levels),
    )


def _decode_working(
    img: Image.Image, *, max_side: int | None, draft_side: int | None, own: bool
) -> tuple[Image.Image, tuple[float, float] | None]:
    """The working copy (RGB, as stored: not yet upright) and the contrast range of a 16-bit image.
    ``own``: ``img`` is ours, so draft mode may change it."""
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    w, h = img.size
    target = _fit((w, h), max_side)
    reduced = target != (w, h)
    if own and img.format in DRAFTABLE and (reduced or draft_side):
        low = draft_side or 1
        img.draft("RGB", (max(target[0] if reduced else 1, low), max(target[1] if reduced else 1, low)))
    img.load()
    if target == (w, h):
        target = img.size  # draft_side alone: the draft scale is the working copy
    levels = _levels(img) if img.mode in HIGH_DEPTH else None
    return _to_rgb_sized(img, target, levels), levels


def _fit(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """``size`` scaled down, never up, so its longest side is at most ``max_side`` (rounded as the
    OCR engines round, so a working copy they receive is not resampled again)."""
    w, h = size
    if not max_side or max(w, h) <= max_side:
        return w, h
    s = max_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def _exif_of(img: Image.Image) -> tuple[Image.Exif, int]:
    """The EXIF block parsed, every value decoded (its GPS and Exif sub-blocks too), so Pillow's
    warnings about it come now, with the file's name; and the size of the raw block."""
    raw = img.info.get("exif")
    size = len(raw) if isinstance(raw, bytes | bytearray) else 0
    try:
        exif = img.getexif()
        dict(exif)  # Pillow decodes values on first access: now, while its warnings are caught
        exif.get_ifd(GPS_IFD)
        exif.get_ifd(EXIF_IFD)
    except Exception as exc:  # Pillow raises many kinds on damaged metadata; none may lose the photo
        warnings.warn(
            f"Corrupt EXIF data: it could not be parsed ({type(exc).__name__}: {exc})", stacklevel=2
        )
        exif = Image.Exif()
    if size and not len(exif) and isinstance(raw, bytes | bytearray):
        problem = _exif_block_problem(bytes(raw))
        if problem:  # Pillow drops a block it cannot read without a word
            warnings.warn(f"Corrupt EXIF data: {problem}", stacklevel=2)
    return exif, size


def _exif_block_problem(raw: bytes) -> str | None:
    """Why an EXIF block from which nothing parsed is damaged; None when it is valid but empty."""
    data = raw[6:] if raw.startswith(b"Exif\x00\x00") else raw
    if not data:
        return None
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return f"the block does not start with a TIFF header (it starts with {data[:8]!r})"
    if len(data) < 10:
        return f"the block is cut short ({len(raw)} bytes)"
    order: Any = "little" if data[:2] == b"II" else "big"
    offset = int.from_bytes(data[4:8], order)
    if offset < 8 or offset + 2 > len(data):
        return f"its first directory is at byte {offset}, outside the {len(data)}-byte block"
    if int.from_bytes(data[offset : offset + 2], order) == 0:
        return None
    return "its entries could not be read (the block is cut short or its offsets point outside it)"


def _orientation(exif: Image.Exif) -> int:
    try:
        value = int(exif.get(ORIENTATION_TAG, 1))
    except (TypeError, ValueError):  # a malformed orientation tag must not lose the photo
        return 1
    return value if value in _UPRIGHT else 1


def _upright(img: Image.Image, orientation: int) -> Image.Image:
    """``img`` (a fresh image of ours) turned upright, with the file's metadata dropped from its
    ``info``: the orientation tag no longer applies to these pixels (a second :func:`to_rgb` would
    turn them again), and the EXIF is :attr:`LoadedImage.exif`."""
    method = _UPRIGHT.get(orientation)
    out = img.transpose(method) if method is not None else img
    out.info = {}
    return out


def _stored_box(
    box: tuple[int, int, int, int], orientation: int, stored: tuple[int, int]
) -> tuple[int, int, int, int]:
    """A box in the upright photo, in the stored pixels the orientation turns into it."""
    w, h = stored

    def point(u: int, v: int) -> tuple[int, int]:
        return {
            2: (w - u, v),
            3: (w - u, h - v),
            4: (u, h - v),
            5: (v, u),
            6: (v, h - u),
            7: (w - v, h - u),
            8: (w - v, u),
        }.get(orientation, (u, v))

    (ax, ay), (bx, by) = point(box[0], box[1]), point(box[2], box[3])
    return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)


def _to_rgb_sized(img: Image.Image, size: tuple[int, int], levels: tuple[float, float] | None) -> Image.Image:
    """``img``'s pixels in RGB at ``size`` (at most its own), never as a full-size copy in another
    mode: reduced by a whole factor first (exact band by band), converted band by band."""
    w, h = img.size
    factor = max(1, int(min(w / size[0], h / size[1]) / REDUCING_GAP))
    out: Image.Image
    if img.mode == "RGB":
        out = img.reduce(factor) if factor > 1 else img
    elif factor == 1 and w * h <= BAND_PIXELS:
        out = _band_rgb(img, levels)
    else:
        rows = max(factor, BAND_PIXELS // max(1, w) // factor * factor)
        out = Image.new("RGB", (-(-w // factor), -(-h // factor)))
        for y in range(0, h, rows):
            band = _band_rgb(img.crop((0, y, w, min(h, y + rows))), levels)
            out.paste(band.reduce(factor) if factor > 1 else band, (0, y // factor))
    if out.size != size:
        out = out.resize(size, Image.Resampling.LANCZOS)
    return out.copy() if out is img else out


def _band_rgb(img: Image.Image, levels: tuple[float, float] | None) -> Image.Image:
    """8-bit RGB of one band: greyscale, 16-bit and float (stretched to ``levels``), CMYK, palette
    and alpha (flattened onto white)."""
    mode = img.mode
    if mode in HIGH_DEPTH:
        lo, hi = levels if levels is not None else _levels(img)
        arr = np.asarray(img, dtype=np.float64)
        scaled = np.clip((arr - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return img
    return img.convert("RGB")


def _levels(img: Image.Image) -> tuple[float, float]:
    """The 0.5th and 99.5th percentiles of a 16-bit or float image (of every pixel up to
    :data:`LEVEL_SAMPLES`, of an even sample beyond), the range stretched to 8 bits."""
    w, h = img.size
    step = max(1, math.ceil(math.sqrt(w * h / LEVEL_SAMPLES)))
    rows = max(step, BAND_PIXELS // max(1, w) // step * step)
    parts = [
        np.asarray(img.crop((0, y, w, min(h, y + rows))), dtype=np.float64)[::step, ::step].ravel()
        for y in range(0, h, rows)
    ]
    arr = np.concatenate(parts) if parts else np.zeros(0)
    lo, hi = (float(v) for v in np.percentile(arr, [0.5, 99.5])) if arr.size else (0.0, 1.0)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _pixel_digest(img: Image.Image) -> tuple[int, str]:
    """The size and sha256 of the image's raw pixel bytes, hashed band by band."""
    digest, n = hashlib.sha256(), 0
    img.load()
    w, h = img.size
    rows = max(1, BAND_PIXELS // max(1, w))
    for y in range(0, h, rows):
        blob = img.crop((0, y, w, min(h, y + rows))).tobytes()
        digest.update(blob)
        n += len(blob)
    return n, digest.hexdigest()


def _check_size(label: str, img: Image.Image, max_pixels: int) -> tuple[int, int]:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise CorruptImageError(label, f"the image declares an empty size {w}x{h}")
    cost = DECODE_COST.get(img.format or "", 1.0)
    limit = int(max_pixels / cost)
    if w * h > limit:
        why = (
            f" (max_image_pixels {max_pixels:,} divided by {cost:g}: decoding "
            f"{SUPPORTED_FORMATS.get(img.format or '', img.format)} takes {cost:g} times the memory of a JPEG)"
            if cost != 1.0
            else ""
        )
        raise ImageTooLargeError(
            label,
            f"the image declares {w}x{h} = {w * h:,} pixels, above the limit of {limit:,}{why} "
            "(a decompression bomb, or a huge scan: raise max_image_pixels to allow it)",
        )
    return w, h


def to_rgb(img: Image.Image, *, max_side: int | None = None) -> Image.Image:
    """Decode to 8-bit RGB, upright: handles greyscale, 16-bit and float, CMYK, palette and alpha
    (flattened onto white), multi-frame files (first frame) and EXIF orientation. ``max_side``
    scales it down, never up, so its longest side is at most that (Lanczos)."""
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    img.load()
    try:
        orientation = _orientation(img.getexif())
    except Exception as exc:  # a malformed EXIF block must not lose the photo
        log.debug("ignoring unreadable EXIF orientation: %s", exc)
        orientation = 1
    levels = _levels(img) if img.mode in HIGH_DEPTH else None
    return _upright(_to_rgb_sized(img, _fit(img.size, max_side), levels), orientation)
