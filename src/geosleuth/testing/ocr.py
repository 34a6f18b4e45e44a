"""An OCR engine that "reads" the text it was given, for tests and benches that are about what
happens to text after OCR (clues, injection defences) and should not pay for, or depend on, a real
engine's misreadings."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from geosleuth.schemas import TextLine
from geosleuth.tools.ocr.base import OCRResult


class ScriptedOCR:
    """Reads ``text`` (lines split on newlines) in every image, at ``confidence``; the lines' boxes
    are stacked 40 px apart from the top left."""

    name = "scripted"

    def __init__(self, text: str | Sequence[str], confidence: float = 0.95) -> None:
        self.lines = text.splitlines() if isinstance(text, str) else list(text)
        self.confidence = confidence

    def read(self, images: Sequence[Image.Image]) -> list[OCRResult]:
        lines = [
            TextLine(text=t, confidence=self.confidence, box=(10.0, 10.0 + 40 * i, 300.0, 40.0 + 40 * i))
            for i, t in enumerate(ln for ln in self.lines if ln.strip())
        ]
        return [OCRResult(engine=self.name, lines=list(lines)) for _ in images]

    def version(self) -> str:
        return "scripted"


__all__ = ["ScriptedOCR"]
