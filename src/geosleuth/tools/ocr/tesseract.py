"""Tesseract OCR (Debian: ``apt-get install tesseract-ocr``, plus a ``tesseract-ocr-<lang>`` package
per language): in-process through its C library when it loads (:mod:`.tessapi`: models loaded once,
~0.2 s saved per call and pack), else through its command-line program."""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
from collections.abc import Sequence
from functools import cached_property

from PIL import Image

from geosleuth.errors import EngineUnavailableError
from geosleuth.tools.ocr.base import OCRResult, TextLine, downscale, merge_into_lines
from geosleuth.tools.ocr.scripts import missing_major_scripts, readable_scripts
from geosleuth.tools.ocr.tessapi import TessAPIPool, Word, library_version, parse_tsv

log = logging.getLogger(__name__)

# Language packs that are not scripts for running text.
_NOT_TEXT = {"osd", "equ", "snum"}


class TesseractEngine:
    """Scene text with page segmentation mode 11 (sparse text: signs, not pages)."""

    name = "tesseract"

    def __init__(
        self,
        *,
        cmd: str = "tesseract",
        languages: Sequence[str] = (),
        min_confidence: float = 0.5,
        max_side: int = 2000,
        timeout_s: float = 60.0,
        psm: int = 11,
        use_api: bool = True,
    ) -> None:
        path = shutil.which(cmd)
        if path is None:
            raise EngineUnavailableError(
                f"Tesseract program {cmd!r} was not found on PATH; install it (Debian/Ubuntu: "
                "apt-get install tesseract-ocr tesseract-ocr-fra ...) or choose ocr.engine = 'rapidocr'"
            )
        self.cmd = path
        self.requested = list(languages)
        self.min_confidence = min_confidence
        self.max_side = max_side
        self.timeout_s = timeout_s
        self.psm = psm
        self.use_api = use_api
        self._pool: TessAPIPool | None = None

    @property
    def in_process(self) -> bool:
        """Whether words are read through the library (else by running the program)."""
        if not self.use_api:
            return False
        if self._pool is None:
            try:
                library_version()
            except EngineUnavailableError as exc:
                log.warning("%s; running the tesseract program instead (slower)", exc)
                self.use_api = False
                return False
            self._pool = TessAPIPool()
        return True

    def _run(self, args: list[str], data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                [self.cmd, *args], input=data, capture_output=True, timeout=self.timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise EngineUnavailableError(
                f"tesseract took longer than {self.timeout_s:.0f} s; raise ocr.timeout_s"
            ) from exc

    @cached_property
    def installed_languages(self) -> list[str]:
        out = self._run(["--list-langs"])
        langs = [ln.strip() for ln in out.stdout.decode("utf-8", "replace").splitlines()[1:] if ln.strip()]
        return [lang for lang in langs if lang not in _NOT_TEXT]

    @cached_property
    def languages(self) -> list[str]:
        installed = self.installed_languages
        if not installed:
            raise EngineUnavailableError(
                "tesseract has no language data installed; apt-get install tesseract-ocr-eng"
            )
        if not self.requested:
            return installed
        missing = [lang for lang in self.requested if lang not in installed]
        if missing:
            log.warning(
                "tesseract language packs %s are not installed (apt-get install %s); using %s",
                missing,
                " ".join(f"tesseract-ocr-{m}" for m in missing),
                [lang for lang in self.requested if lang in installed] or installed,
            )
        return [lang for lang in self.requested if lang in installed] or installed

    @cached_property
    def _version(self) -> str:
        if self.in_process:
            head = f"tesseract {library_version()} (libtesseract)"
        else:
            out = self._run(["--version"])
            first = (out.stdout or out.stderr).decode("utf-8", "replace").splitlines()
            head = first[0].strip() if first else "tesseract"
        return head + f" [{'+'.join(self.languages)}]"

    def version(self) -> str:
        return self._version

    def read(self, images: Sequence[Image.Image]) -> list[OCRResult]:
        return [self._read_one(img) for img in images]

    def _read_one(self, image: Image.Image) -> OCRResult:
        small, scale = downscale(image.convert("RGB"), self.max_side)
        words = [
            TextLine(
                text=t,
                confidence=round(min(1.0, c), 3),
                box=(b[0] / scale, b[1] / scale, b[2] / scale, b[3] / scale),
            )
            for t, c, b in self.words(small, psm=self.psm)
            if c >= self.min_confidence
        ]
        return OCRResult(
            engine=self.name,
            lines=merge_into_lines(words),
            languages=self.languages,
            readable_scripts=readable_scripts(self.languages),
            missing_scripts=missing_major_scripts(self.languages),
        )

    def words(
        self,
        image: Image.Image,
        *,
        psm: int,
        languages: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[Word]:
        """Every word Tesseract reads: text, confidence in [0, 1], box (x0, y0, x1, y1). ``languages``
        (default: all of :attr:`languages`) are packs to read with, in order of preference. In
        process, a call stops after ``timeout_s`` (at most :attr:`timeout_s`) and gives no words;
        the program is stopped after :attr:`timeout_s` with an error."""
        langs = list(languages) if languages else self.languages
        if self.in_process:
            assert self._pool is not None
            limit = self.timeout_s if timeout_s is None else min(timeout_s, self.timeout_s)
            return self._pool.words(image, langs, psm=psm, timeout_s=limit)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        args = ["stdin", "stdout", "-l", "+".join(langs), "--psm", str(psm), "tsv"]
        out = self._run(args, buf.getvalue())
        if out.returncode != 0:
            err = out.stderr.decode("utf-8", "replace").strip().splitlines()
            raise EngineUnavailableError(f"tesseract failed: {err[-1] if err else out.returncode}")
        return parse_tsv(out.stdout.decode("utf-8", "replace"))
