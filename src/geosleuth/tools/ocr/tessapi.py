"""Tesseract in-process, through its C API (``libtesseract.so.5``, Debian's ``libtesseract5``, which
``tesseract-ocr`` depends on), with ctypes: no extra Python package.

The command-line program loads its language models on every call (~0.2 s per pack) and is a new
process each time; a :class:`TessAPI` loads them once and is reused. One handle serves one call at a
time (Tesseract's ``TessBaseAPI`` is not re-entrant), so each handle has its own lock; handles are
kept per language set by :class:`TessAPIPool`.
"""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import io
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache

from PIL import Image

from geosleuth.errors import EngineUnavailableError

log = logging.getLogger(__name__)

Word = tuple[str, float, tuple[int, int, int, int]]

_LIB_NAMES = ("libtesseract.so.5", "libtesseract.so")


@cache
def load_library() -> ctypes.CDLL:
    """The Tesseract shared library, with the argument types of the functions used here.

    Raises :class:`EngineUnavailableError` (saying what to install) when there is none."""
    names = list(_LIB_NAMES)
    found = ctypes.util.find_library("tesseract")
    if found:
        names.insert(0, found)
    lib = None
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        raise EngineUnavailableError(
            "the Tesseract library (libtesseract.so.5) was not found; install it (Debian/Ubuntu: "
            "apt-get install libtesseract5) or set ocr.tesseract_api = false to use the tesseract program"
        )
    p, c_int, c_char_p = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    lib.TessVersion.restype = c_char_p
    lib.TessBaseAPICreate.restype = p
    lib.TessBaseAPIDelete.argtypes = [p]
    lib.TessBaseAPIInit3.argtypes = [p, c_char_p, c_char_p]
    lib.TessBaseAPIInit3.restype = c_int
    lib.TessBaseAPISetPageSegMode.argtypes = [p, c_int]
    lib.TessBaseAPISetVariable.argtypes = [p, c_char_p, c_char_p]
    lib.TessBaseAPISetVariable.restype = c_int
    lib.TessBaseAPISetImage.argtypes = [p, c_char_p, c_int, c_int, c_int, c_int]
    lib.TessBaseAPISetSourceResolution.argtypes = [p, c_int]
    lib.TessBaseAPIGetTsvText.argtypes = [p, c_int]
    lib.TessBaseAPIGetTsvText.restype = ctypes.POINTER(ctypes.c_char)
    lib.TessDeleteText.argtypes = [ctypes.POINTER(ctypes.c_char)]
    lib.TessBaseAPIClear.argtypes = [p]
    lib.TessBaseAPIEnd.argtypes = [p]
    lib.TessMonitorCreate.restype = p
    lib.TessMonitorDelete.argtypes = [p]
    lib.TessMonitorSetDeadlineMSecs.argtypes = [p, c_int]
    lib.TessBaseAPIRecognize.argtypes = [p, p]
    lib.TessBaseAPIRecognize.restype = c_int
    return lib


def library_version() -> str:
    return str(load_library().TessVersion().decode("ascii", "replace"))


def parse_tsv(tsv: str) -> list[Word]:
    """Words of Tesseract's TSV output (level 5 rows): text, confidence in [0, 1], box (x0, y0, x1, y1).

    The program's TSV starts with a header row; the API's has none."""
    words = []
    header = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"
    body = tsv if tsv.startswith("level\t") else header + "\n" + tsv
    for row in csv.DictReader(io.StringIO(body), delimiter="\t", quoting=csv.QUOTE_NONE):
        # A zero-width joiner only asks for a ligature (Devanagari "ल्‍ल"); no word is spelt with it.
        text = (row.get("text") or "").replace("\u200d", "").strip()
        try:
            conf = float(row.get("conf") or -1)
            x, y, w, h = (int(row[k]) for k in ("left", "top", "width", "height"))
        except (ValueError, KeyError, TypeError):
            continue
        if text and conf >= 0:
            words.append((text, conf / 100.0, (x, y, x + w, y + h)))
    return words


class TessAPI:
    """One initialised ``TessBaseAPI`` for one language set; :meth:`words` is thread-safe."""

    def __init__(self, languages: Sequence[str], *, datapath: str | None = None) -> None:
        self.languages = list(languages)
        self._lib = load_library()
        self._lock = threading.Lock()
        handle = self._lib.TessBaseAPICreate()
        if not handle:
            raise EngineUnavailableError("TessBaseAPICreate failed (out of memory?)")
        lang = "+".join(self.languages).encode()
        rc = self._lib.TessBaseAPIInit3(handle, datapath.encode() if datapath else None, lang)
        if rc != 0:
            self._lib.TessBaseAPIDelete(handle)
            raise EngineUnavailableError(
                f"Tesseract could not load the language data {'+'.join(self.languages)!r}; install the "
                "packs (apt-get install tesseract-ocr-<lang>) or set ocr.languages"
            )
        # The program prints nothing for these; the library writes them to stderr.
        self._lib.TessBaseAPISetVariable(handle, b"debug_file", b"/dev/null")
        self._handle: int | None = handle
        # A handle holds its language models (tens of MB for CJK): freed with the object, not at exit.
        self._finalizer = weakref.finalize(self, _free, self._lib, handle)

    def words(self, image: Image.Image, *, psm: int, timeout_s: float | None = None) -> list[Word]:
        """Every word read in ``image`` (any mode; read as 8-bit grey or RGB). With ``timeout_s``,
        Tesseract stops at that deadline and the read gives no words (a warning is logged): one
        pathological image cannot stall a batch."""
        img = image if image.mode in ("L", "RGB") else image.convert("RGB")
        bpp = 1 if img.mode == "L" else 3
        data = img.tobytes()
        with self._lock:
            if self._handle is None:
                raise EngineUnavailableError("this Tesseract handle was closed")
            lib, h = self._lib, self._handle
            lib.TessBaseAPISetPageSegMode(h, psm)
            lib.TessBaseAPISetImage(h, data, img.width, img.height, bpp, img.width * bpp)
            # What the program assumes for a PNG without a resolution (it then estimates one).
            lib.TessBaseAPISetSourceResolution(h, 70)
            if timeout_s is not None:
                monitor = lib.TessMonitorCreate()
                t0 = time.monotonic()
                try:
                    lib.TessMonitorSetDeadlineMSecs(monitor, max(1, int(timeout_s * 1000)))
                    rc = lib.TessBaseAPIRecognize(h, monitor)
                finally:
                    lib.TessMonitorDelete(monitor)
                if rc != 0 or time.monotonic() - t0 >= timeout_s:
                    # A recognition cut short leaves words half-made: reading them back can
                    # crash the library (seen: a segfault in the dev run), so this read gives up.
                    lib.TessBaseAPIClear(h)
                    log.warning(
                        "Tesseract stopped at its %.1f s deadline on a %dx%d image; this read gave "
                        "nothing (ocr.timeout_s caps every call)",
                        timeout_s,
                        img.width,
                        img.height,
                    )
                    return []
            ptr = lib.TessBaseAPIGetTsvText(h, 0)
            if not ptr:
                lib.TessBaseAPIClear(h)
                return []
            try:
                tsv = ctypes.string_at(ptr).decode("utf-8", "replace")
            finally:
                lib.TessDeleteText(ptr)
                lib.TessBaseAPIClear(h)
        return parse_tsv(tsv)

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle = None
                self._finalizer()


def _free(lib: ctypes.CDLL, handle: int) -> None:
    lib.TessBaseAPIEnd(handle)
    lib.TessBaseAPIDelete(handle)


class TessAPIPool:
    """Initialised handles by language set, made on first use; the ``max_handles`` most recently
    used are kept (each holds its language models: a handle for Chinese or Japanese is ~50 MB)."""

    def __init__(self, *, datapath: str | None = None, max_handles: int = 6) -> None:
        if max_handles < 1:
            raise ValueError(f"max_handles must be at least 1, not {max_handles}")
        self.datapath = datapath
        self.max_handles = max_handles
        self._apis: OrderedDict[tuple[str, ...], TessAPI] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, languages: Sequence[str]) -> TessAPI:
        key = tuple(languages)
        with self._lock:
            api = self._apis.get(key)
            if api is None:
                api = self._apis[key] = TessAPI(key, datapath=self.datapath)
                while len(self._apis) > self.max_handles:
                    # A reader still holding the evicted handle keeps it alive until it is done.
                    self._apis.popitem(last=False)
            self._apis.move_to_end(key)
            return api

    def __len__(self) -> int:
        return len(self._apis)

    def words(
        self, image: Image.Image, languages: Sequence[str], *, psm: int, timeout_s: float | None = None
    ) -> list[Word]:
        return self.get(languages).words(image, psm=psm, timeout_s=timeout_s)
