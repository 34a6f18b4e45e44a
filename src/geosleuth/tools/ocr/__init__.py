"""OCR engines behind one interface. :func:`make_ocr_engine` picks one from the settings.

* ``rapidocr``: PP-OCR detection + Chinese/English recognition, models inside the wheel.
* ``tesseract``: the Tesseract program with its language packs; slow and noisy on whole photos.
* ``hybrid``: RapidOCR finds the text, Tesseract reads it (many scripts, diacritics kept).
* ``auto``: hybrid when both are installed, else whichever one is.
"""

from __future__ import annotations

import logging
import shutil

from geosleuth.config import OCRSettings
from geosleuth.errors import EngineUnavailableError, MissingDependencyError
from geosleuth.tools.ocr.base import OCREngine, OCRResult, TextLine

__all__ = ["OCREngine", "OCRResult", "TextLine", "make_ocr_engine"]

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install an OCR engine: pip install 'geosleuth[ocr]' (RapidOCR, models included) "
    "and/or apt-get install tesseract-ocr tesseract-ocr-<lang>"
)


def make_ocr_engine(settings: OCRSettings) -> OCREngine | None:
    """The configured engine, or None when ``engine = 'none'``.

    Raises :class:`EngineUnavailableError` or :class:`MissingDependencyError` when the engine asked
    for cannot run here; the message says what to install.
    """
    if settings.engine == "none":
        return None
    rapid = tess = None
    if settings.engine in ("auto", "hybrid", "rapidocr"):
        try:
            from geosleuth.tools.ocr.rapid import RapidOCREngine

            rapid = RapidOCREngine(min_confidence=settings.min_confidence, max_side=settings.max_side)
        except MissingDependencyError:
            if settings.engine != "auto":
                raise
    if settings.engine in ("tesseract", "hybrid") or (
        settings.engine == "auto" and shutil.which(settings.tesseract_cmd)
    ):
        from geosleuth.tools.ocr.tesseract import TesseractEngine

        tess = TesseractEngine(
            cmd=settings.tesseract_cmd,
            languages=settings.languages,
            min_confidence=max(settings.min_confidence, 0.6),
            max_side=settings.max_side,
            timeout_s=settings.timeout_s,
            use_api=settings.tesseract_api,
        )
    if settings.engine == "rapidocr":
        return rapid
    if settings.engine == "tesseract":
        return tess
    if rapid is not None and tess is not None:
        from geosleuth.tools.ocr.hybrid import HybridOCREngine

        identifier = None
        if settings.narrow_latin_packs:
            from geosleuth.tools.langid import CLD2Identifier

            try:
                identifier = CLD2Identifier()
            except MissingDependencyError:
                log.debug("no pycld2: Latin lines are read with every installed Latin pack")
        return HybridOCREngine(
            rapid,
            tess,
            min_confidence=settings.min_confidence,
            tiles=settings.tiles,
            identifier=identifier,
        )
    if rapid is not None:
        return rapid
    if tess is not None:
        return tess
    raise EngineUnavailableError(f"no OCR engine is installed; {INSTALL_HINT}")
