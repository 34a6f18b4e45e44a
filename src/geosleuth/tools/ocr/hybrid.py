"""RapidOCR finds the text, Tesseract reads it.

RapidOCR's detector is good at finding text in busy photos and cheap; Tesseract's recognisers cover
many scripts (with their ``tesseract-ocr-<lang>`` packs) and keep diacritics, but its page layout
analysis is slow and hallucinates text in photo textures. So: detect with RapidOCR, stack the text
crops into one small image, read it with Tesseract once, and keep, per box, Tesseract's reading
when it is confident, else RapidOCR's.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

from geosleuth.tools.ocr.base import OCRResult, TextLine, dense_join, downscale, group_lines, union_box
from geosleuth.tools.ocr.rapid import Box, RapidOCREngine
from geosleuth.tools.ocr.tesseract import TesseractEngine

log = logging.getLogger(__name__)

CROP_HEIGHT = 48
GAP = 24
MAX_BOXES = 60


def _widen(boxes: list[Box], width: int, factor: float = 1.5) -> list[Box]:
    """Extend each line sideways by ``factor`` line heights, stopping at neighbouring lines.

    RapidOCR's detector finds the scripts its recogniser knows; on a line that mixes in others
    (kana after kanji, Cyrillic) its box can stop short of the last characters."""
    out = []
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        h = y1 - y0
        left, right = max(0.0, x0 - factor * h), min(float(width), x1 + factor * h)
        for j, (a0, b0, a1, b1) in enumerate(boxes):
            if j == i or min(y1, b1) - max(y0, b0) <= 0.3 * h:
                continue
            if a1 <= x0:
                left = max(left, a1)
            elif a0 >= x1:
                right = min(right, a0)
        out.append((left, y0, right, y1))
    return out


class HybridOCREngine:
    name = "rapidocr+tesseract"

    def __init__(
        self, rapid: RapidOCREngine, tesseract: TesseractEngine, *, min_confidence: float = 0.5
    ) -> None:
        self.rapid = rapid
        self.tesseract = tesseract
        self.min_confidence = min_confidence
        self.max_side = rapid.max_side

    def version(self) -> str:
        return f"{self.rapid.version()} detection + {self.tesseract.version()} recognition"

    def read(self, images: Sequence[Image.Image]) -> list[OCRResult]:
        return [self._read_one(img) for img in images]

    def _read_one(self, image: Image.Image) -> OCRResult:
        small, scale = downscale(image.convert("RGB"), self.max_side)
        # Keep the likeliest text boxes: a photo of a market can have hundreds.
        found = sorted(self.rapid.detect_and_read(small), key=lambda f: -f[2])[:MAX_BOXES]
        if not found:
            return OCRResult(engine=self.name, lines=[], languages=self.tesseract.languages)
        # Read whole lines, not RapidOCR's word boxes: its boxes can overlap or split digit groups.
        groups = group_lines([box for box, _, _ in found])
        cores = [union_box([found[i][0] for i in g]) for g in groups]
        line_boxes = _widen(cores, small.width)
        readings = self._tesseract_readings(small, line_boxes, cores)
        lines = []
        # The widened boxes are for reading; the line's box is what was detected (its core).
        for g, box, (ttext, tconf) in zip(groups, cores, readings, strict=True):
            rtext = dense_join([found[i][1] for i in g])
            rconf = sum(found[i][2] for i in g) / len(g)
            if ttext and tconf >= max(self.min_confidence, 0.6):
                text, conf = ttext, tconf
            else:
                text, conf = rtext, rconf
            if text and conf >= self.min_confidence:
                scaled = (box[0] / scale, box[1] / scale, box[2] / scale, box[3] / scale)
                alts = tuple(t for t in (ttext, rtext) if t and t != text)
                lines.append(
                    TextLine(text=text, confidence=round(min(1.0, conf), 3), box=scaled, alternatives=alts)
                )
        return OCRResult(engine=self.name, lines=lines, languages=self.tesseract.languages)

    def _tesseract_readings(
        self, image: Image.Image, boxes: list[Box], cores: list[Box]
    ) -> list[tuple[str, float]]:
        """Read all boxes with one Tesseract call on a vertical stack of normalised crops.

        ``cores`` are the boxes before widening: a lone character found only in the widened margin
        is the sign's border or a neighbouring object, not text, and is dropped."""
        crops = []
        core_ranges = []
        for (x0, y0, x1, y1), core in zip(boxes, cores, strict=True):
            pad = max(2.0, 0.15 * (y1 - y0))
            left = max(0.0, x0 - pad)
            crop = image.crop(
                (left, max(0, y0 - pad), min(image.width, x1 + pad), min(image.height, y1 + pad))
            )
            grey = ImageOps.grayscale(crop)
            # Light text on a dark sign: invert, Tesseract reads dark on light best.
            if float(np.median(np.asarray(grey))) < 128:
                grey = ImageOps.invert(grey)
            grey = ImageOps.autocontrast(grey)
            w = min(2400, max(1, round(grey.width * CROP_HEIGHT / max(1, grey.height))))
            sx = w / max(1, grey.width)
            crops.append(grey.resize((w, CROP_HEIGHT), Image.Resampling.LANCZOS))
            core_ranges.append((GAP + (core[0] - left) * sx, GAP + (core[2] - left) * sx))
        width = max(c.width for c in crops) + 2 * GAP
        height = sum(c.height + GAP for c in crops) + GAP
        sheet = Image.new("L", (width, height), 255)
        bands = []
        y = GAP
        for c in crops:
            sheet.paste(c, (GAP, y))
            bands.append((y, y + c.height))
            y += c.height + GAP
        words = self.tesseract.words(sheet, psm=6)
        out: list[tuple[list[str], list[float]]] = [([], []) for _ in crops]
        kept: list[list[tuple[float, float]]] = [[] for _ in crops]
        for text, conf, (wx0, wy0, wx1, wy1) in words:
            if _is_junk(text):
                continue
            mid = (wy0 + wy1) / 2
            for i, (a, b) in enumerate(bands):
                if a - GAP / 2 <= mid <= b + GAP / 2:
                    lo, hi = core_ranges[i]
                    # gap between two intervals <= limit  <=>  each starts before the other ends + limit
                    near = any(
                        wx0 - x1 <= CROP_HEIGHT / 2 and x0 - wx1 <= CROP_HEIGHT / 2 for x0, x1 in kept[i]
                    )
                    if len(text) <= 1 and not (lo <= (wx0 + wx1) / 2 <= hi) and not near:
                        break
                    out[i][0].append(text)
                    out[i][1].append(conf)
                    kept[i].append((wx0, wx1))
                    break
        return [(dense_join(texts), sum(confs) / len(confs)) if texts else ("", 0.0) for texts, confs in out]


def _is_junk(word: str) -> bool:
    """Punctuation-only "words" (a sign's border read as '|'), but not currency signs or '+'."""
    return all(not ch.isalnum() and unicodedata.category(ch) != "Sc" for ch in word) and word not in {
        "+",
        "&",
        "@",
    }
