"""RapidOCR finds the text, Tesseract reads it.

RapidOCR's detector is good at finding text in busy photos and cheap; Tesseract's recognisers cover
many scripts (with their ``tesseract-ocr-<lang>`` packs) and keep diacritics, but its page layout
analysis is slow and hallucinates text in photo textures. So: detect with RapidOCR, stack the text
crops into one small image, read it with Tesseract, and keep, per box, Tesseract's reading when it
is confident, else RapidOCR's.

Scripts: Tesseract with every installed pack at once is slow (20 packs: ~4x one), so lines are read
first with the packs of the script RapidOCR's reading suggests (Latin, or Han/Japanese), and only
the lines that neither engine read confidently are tried with each other installed script's packs
(Cyrillic, Greek, Arabic, ...), keeping the most confident reading. Lines that no pack reads are
counted in :attr:`OCRResult.unread`, with the scripts the installed packs can read.
"""

from __future__ import annotations

import logging
import unicodedata
from collections import Counter
from collections.abc import Sequence
from difflib import SequenceMatcher
from itertools import pairwise
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, ImageOps

from geosleuth.tools.ocr.base import OCRResult, TextLine, dense_join, downscale, group_lines, union_box
from geosleuth.tools.ocr.rapid import Box, RapidOCREngine
from geosleuth.tools.ocr.scripts import (
    PACK_SCRIPT,
    missing_major_scripts,
    readable_scripts,
    script_groups,
    text_script,
)
from geosleuth.tools.ocr.tesseract import TesseractEngine

if TYPE_CHECKING:
    from geosleuth.tools.langid import LanguageIdentifier

log = logging.getLogger(__name__)

CROP_HEIGHT = 48
GAP = 24
MAX_BOXES = 60
PAD = 0.15
# A line read at least this confidently by Tesseract (or RapidOCR) is not tried with other scripts.
SURE_TESSERACT = 0.75
SURE_RAPID = 0.9
# The trial reads of unsure lines with other scripts' packs are speculative: each Tesseract call
# stops after this many seconds (CJK packs on eight long Latin lines of a station board: 54 s).
TRIAL_TIMEOUT_S = 8.0
# At most this many unsure lines (the tallest) are tried with the other scripts' packs.
MAX_TRIAL_LINES = 8
# A line too small to be legible is not counted as unread text.
MIN_UNREAD_HEIGHT_PX = 14.0
# Scripts seen in the mixed reading of unsure lines that are each tried alone.
MAX_CANDIDATE_SCRIPTS = 2
# Tiling (ocr.tiles): each of 2x2 tiles, overlapping by a quarter of the side, is enlarged this
# many times for the detector; photos with a side under TILE_MIN_SIDE px are not tiled; "auto"
# tiles when fewer than TILE_IF_FEWER boxes were read confidently.
TILE_ZOOM = 2
TILE_OVERLAP = 0.125
TILE_MIN_SIDE = 480
TILE_IF_FEWER = 2
Detection = tuple[Box, str, float]
# Latin lines are read with English and the languages identified in RapidOCR's reading of them
# (ocr.narrow_latin_packs): at most this many packs, each identified at least this confidently.
MAX_LATIN_PACKS = 3
MIN_PACK_CONFIDENCE = 0.1  # CLD2 on sign text: ~0.2 for a French station board
# ISO 639-1 (what CLD2 says) -> Tesseract's pack, for the Latin-script languages with a pack.
ISO1_PACK = {
    "af": "afr", "ca": "cat", "cs": "ces", "cy": "cym", "da": "dan", "de": "deu", "en": "eng",
    "es": "spa", "et": "est", "eu": "eus", "fi": "fin", "fr": "fra", "ga": "gle", "gl": "glg",
    "hr": "hrv", "hu": "hun", "id": "ind", "is": "isl", "it": "ita", "lt": "lit", "lv": "lav",
    "ms": "msa", "mt": "mlt", "nl": "nld", "no": "nor", "nb": "nor", "pl": "pol", "pt": "por",
    "ro": "ron", "sk": "slk", "sl": "slv", "sq": "sqi", "sv": "swe", "tr": "tur", "vi": "vie",
}  # fmt: skip


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
        self,
        rapid: RapidOCREngine,
        tesseract: TesseractEngine,
        *,
        min_confidence: float = 0.5,
        tiles: Literal["off", "auto", "always"] = "off",
        identifier: LanguageIdentifier | None = None,
    ) -> None:
        self.rapid = rapid
        self.tesseract = tesseract
        self.min_confidence = min_confidence
        self.max_side = rapid.max_side
        self.tiles = tiles
        self.identifier = identifier

    def version(self) -> str:
        return f"{self.rapid.version()} detection + {self.tesseract.version()} recognition"

    def read(self, images: Sequence[Image.Image]) -> list[OCRResult]:
        return [self._read_one(img) for img in images]

    def _read_one(self, image: Image.Image) -> OCRResult:
        small, scale = downscale(image.convert("RGB"), self.max_side)
        langs = self.tesseract.languages
        result = OCRResult(
            engine=self.name,
            languages=langs,
            readable_scripts=readable_scripts(langs),
            missing_scripts=missing_major_scripts(langs),
        )
        found = self.rapid.detect_and_read(small)
        if self.tiles == "always" or (self.tiles == "auto" and _little_text(found)):
            found += self._tiled(small, found)
        # Keep the likeliest text boxes: a photo of a market can have hundreds.
        found = sorted(found, key=lambda f: -f[2])[:MAX_BOXES]
        if not found:
            return result
        # Read whole lines, not RapidOCR's word boxes: its boxes can overlap or split digit groups.
        groups = group_lines([box for box, _, _ in found])
        cores = [union_box([found[i][0] for i in g]) for g in groups]
        line_boxes = _widen(cores, small.width)
        rapid = [(dense_join([found[i][1] for i in g]), sum(found[i][2] for i in g) / len(g)) for g in groups]
        readings = self._read_by_script(small, line_boxes, cores, rapid)
        lines = []
        unread = 0
        # The widened boxes are for reading; the line's box is what was detected (its core).
        for box, (ttext, tconf), (rtext, rconf) in zip(cores, readings, rapid, strict=True):
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
            if _legible(box) and (
                not (text and conf >= self.min_confidence)
                or (tconf < SURE_TESSERACT and _disagree(ttext, rtext))
            ):
                # nothing read, or two engines that disagree and neither sure: likely a script
                # no installed pack reads
                unread += 1
        return result.model_copy(update={"lines": lines, "unread": unread})

    def _latin_packs(self, packs: list[str], texts: list[str]) -> list[str]:
        """The Latin packs to read ``texts`` (RapidOCR's readings) with: English and the languages
        the identifier finds in them (at most :data:`MAX_LATIN_PACKS` in all), or every pack when
        it finds none confidently. Tesseract tries each further pack on every word it is unsure
        of, so 19 packs cost several times English alone (a station board: 120 s against 18)."""
        if self.identifier is None or len(packs) <= MAX_LATIN_PACKS:
            return packs
        guesses = self.identifier.identify([" ".join(texts)])[0]
        found = [ISO1_PACK.get(g.code) for g in guesses if g.confidence >= MIN_PACK_CONFIDENCE]
        chosen = [p for p in dict.fromkeys(["eng", *[f for f in found if f]]) if p in packs]
        if len(chosen) <= 1 and not (chosen == ["eng"] and found[:1] == ["eng"]):
            return packs  # nothing identified: every pack
        return chosen[:MAX_LATIN_PACKS]

    def _tiled(self, image: Image.Image, found: list[Detection]) -> list[Detection]:
        """Text the whole-image pass missed: detected again in 2x2 overlapping tiles enlarged
        :data:`TILE_ZOOM` times (small text the detector passes over at full size), in ``image``'s
        pixels; boxes that overlap one already found are dropped."""
        if min(image.size) < TILE_MIN_SIDE:
            return []
        w, h = image.size
        tw, th = int(w * (0.5 + TILE_OVERLAP)), int(h * (0.5 + TILE_OVERLAP))
        new: list[Detection] = []
        for x0 in (0, w - tw):
            for y0 in (0, h - th):
                tile = image.crop((x0, y0, x0 + tw, y0 + th))
                big = tile.resize((tw * TILE_ZOOM, th * TILE_ZOOM), Image.Resampling.LANCZOS)
                for (a, b, c, d), text, score in self.rapid.detect_and_read(big):
                    box = (x0 + a / TILE_ZOOM, y0 + b / TILE_ZOOM, x0 + c / TILE_ZOOM, y0 + d / TILE_ZOOM)
                    if not any(_overlap(box, other) > 0.3 for other, _, _ in (*found, *new)):
                        new.append((box, text, score))
        log.debug("tiles found %d more text boxes", len(new))
        return new

    def _read_by_script(
        self, image: Image.Image, boxes: list[Box], cores: list[Box], rapid: list[tuple[str, float]]
    ) -> list[tuple[str, float]]:
        """Tesseract's reading of each line: first with the packs of the script RapidOCR read it in,
        then, for lines still unsure, with each other script's packs (the most confident wins)."""
        by_script = script_groups(self.tesseract.languages)
        default = "Latn" if "Latn" in by_script else next(iter(by_script))
        first: dict[str, list[int]] = {}
        for i, (rtext, _) in enumerate(rapid):
            script = text_script(rtext)
            if script == "Hani" and "Hani" not in by_script and "Jpan" in by_script:
                script = "Jpan"
            first.setdefault(script if script in by_script else default, []).append(i)
        readings: list[tuple[str, float]] = [("", 0.0)] * len(boxes)
        tried: list[set[str]] = [set() for _ in boxes]
        for script, idx in first.items():
            packs = by_script[script]
            if script == "Latn":
                packs = self._latin_packs(packs, [rapid[i][0] for i in idx])
            for i, r in zip(idx, self._read_sheet(image, boxes, cores, idx, packs), strict=True):
                readings[i] = r
                tried[i].add(script)
        unsure = [
            i
            for i, ((_, tconf), (_, rconf)) in enumerate(zip(readings, rapid, strict=True))
            if _legible(cores[i])
            # numbers RapidOCR read (a platform, a price): no other script reads them better
            and not (rconf >= 0.5 and not any(ch.isalpha() for ch in rapid[i][0]))
            and (
                (tconf < SURE_TESSERACT and rconf < SURE_RAPID)
                or _disagree(readings[i][0], rapid[i][0])
                or _odd_case(readings[i][0])
            )
        ]
        unsure = sorted(unsure, key=lambda i: -(cores[i][3] - cores[i][1]))[:MAX_TRIAL_LINES]
        # One call with every other script's packs: Tesseract tries them word by word, ~5x cheaper
        # than one call per script (measured 0.12 vs 2.3 CPU s for a Cyrillic sign, 10 scripts).
        others = [p for script, packs in by_script.items() if script != default for p in packs]
        won: set[str] = set()
        candidates: Counter[str] = Counter()
        if others and unsure:
            read = self._read_sheet(image, boxes, cores, unsure, others, timeout_s=TRIAL_TIMEOUT_S)
            for i, (text, conf) in zip(unsure, read, strict=True):
                script = text_script(text) if text else None
                if script in by_script and script != default:
                    candidates[script] += 1
                if text and conf > readings[i][1] + 0.05:
                    readings[i] = (text, conf)
                    if conf >= SURE_TESSERACT and script in by_script:
                        won.add(script)
        # The mixed reading can be weak where one script's packs alone read well (Thai): the
        # scripts it saw most read the unsure lines again on their own.
        for script, _ in candidates.most_common(MAX_CANDIDATE_SCRIPTS):
            packs = by_script[script]
            if script not in won and self._try(
                image, boxes, cores, unsure, packs, readings, tried, margin=0.05
            ):
                won.add(script)
        # A sign is mostly in one script: a script that read an unsure line confidently is tried on
        # the photo's other lines too (RapidOCR reads "Москва" as a confident "MockBa").
        for script in won - {default}:
            idx = [
                i
                for i in range(len(boxes))
                if i not in unsure and script not in tried[i] and _legible(cores[i])
            ][:MAX_TRIAL_LINES]
            if idx:
                self._try(image, boxes, cores, idx, by_script[script], readings, tried, margin=-0.1)
        return readings

    def _try(
        self,
        image: Image.Image,
        boxes: list[Box],
        cores: list[Box],
        idx: list[int],
        packs: list[str],
        readings: list[tuple[str, float]],
        tried: list[set[str]],
        *,
        margin: float,
    ) -> bool:
        """Read lines ``idx`` with ``packs`` (one script's); keep a reading more confident than the
        one before by ``margin`` (or, when negative, at most that much less confident but sure
        enough). Whether it read any line confidently."""
        kept = False
        script = PACK_SCRIPT.get(packs[0], "Latn")
        read = self._read_sheet(image, boxes, cores, idx, packs, timeout_s=TRIAL_TIMEOUT_S)
        for i, (text, conf) in zip(idx, read, strict=True):
            tried[i].add(script)
            if (
                text
                and conf > readings[i][1] + margin
                and conf >= min(SURE_TESSERACT, readings[i][1] + margin)
            ):
                readings[i] = (text, conf)
                kept = kept or conf >= SURE_TESSERACT
        return kept

    def _read_sheet(
        self,
        image: Image.Image,
        boxes: list[Box],
        cores: list[Box],
        idx: list[int],
        packs: list[str],
        *,
        timeout_s: float | None = None,
    ) -> list[tuple[str, float]]:
        """Read the lines ``idx`` with one Tesseract call (packs ``packs``; stopped after
        ``timeout_s``, at most ``ocr.timeout_s``) on a vertical stack of normalised crops.

        ``cores`` are the boxes before widening: a lone character found only in the widened margin
        is the sign's border or a neighbouring object, not text, and is dropped."""
        crops = []
        core_ranges = []
        for i in idx:
            (x0, y0, x1, y1), core = boxes[i], cores[i]
            pad = max(2.0, PAD * (y1 - y0))
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
        words = self.tesseract.words(sheet, psm=6, languages=packs, timeout_s=timeout_s)
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


def _little_text(found: Sequence[Detection]) -> bool:
    """Fewer than :data:`TILE_IF_FEWER` boxes the detector's own recogniser read confidently."""
    return sum(1 for _, _, score in found if score >= SURE_RAPID) < TILE_IF_FEWER


def _overlap(a: Box, b: Box) -> float:
    """The part of the smaller box that the two share."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller if smaller > 0 else 0.0


def _disagree(a: str, b: str) -> bool:
    """Two engines' readings of one line that share little: neither knows its script (Tesseract's
    Latin packs read Thai as a confident "auuayu5n", RapidOCR as "ucnninne")."""
    if not a or not b:
        return False
    return SequenceMatcher(None, a.casefold(), b.casefold()).ratio() < 0.5


def _odd_case(text: str) -> bool:
    """Capitals inside lower-case words ("JeHuHa", "MocKBa"): Latin letters standing in for
    another script's (Cyrillic, Greek), not a Latin word."""
    return sum(1 for a, b in pairwise(text) if a.islower() and b.isupper()) >= 2


def _legible(box: Box) -> bool:
    """Tall enough to read, and wider than tall (a line of text, not a texture blob)."""
    h = box[3] - box[1]
    return h >= MIN_UNREAD_HEIGHT_PX and (box[2] - box[0]) >= 1.5 * h


def _is_junk(word: str) -> bool:
    """Punctuation-only "words" (a sign's border read as '|'), but not currency signs or '+'."""
    return all(not ch.isalnum() and unicodedata.category(ch) != "Sc" for ch in word) and word not in {
        "+",
        "&",
        "@",
    }
