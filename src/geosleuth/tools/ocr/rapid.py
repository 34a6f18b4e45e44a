"""RapidOCR (PaddleOCR's PP-OCR models on ONNX Runtime). The detection, direction and recognition
models ship inside the ``rapidocr-onnxruntime`` wheel, so it runs offline:
``pip install 'geosleuth[ocr]'``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from importlib.metadata import version
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from geosleuth.errors import MissingDependencyError
from geosleuth.tools.ocr.base import OCRResult, TextLine, dense_join, downscale, group_lines, union_box

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
T = TypeVar("T")


class RapidOCREngine:
    """Scene-text detection (DBNet) and Chinese/English recognition. Strong at finding text in busy
    photos; drops diacritics and reads no scripts but Latin and Han."""

    name = "rapidocr"

    def __init__(self, *, min_confidence: float = 0.5, max_side: int = 2000) -> None:
        try:
            import rapidocr_onnxruntime  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("rapidocr-onnxruntime", "ocr", "RapidOCR") from exc
        self.min_confidence = min_confidence
        self.max_side = max_side
        # Detection on a 2000-px photo takes ONNX Runtime ~300 MB of activations. Every inference
        # runs on this one thread: a batch with several workers then holds one set at a time (and
        # in one malloc arena), measured 1.6 GB -> 0.8 GB for `eval run` with 4 in flight, at the
        # same speed (the runtime already uses every core for one image).
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rapidocr")

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return self._pool.submit(fn, *args).result()

    @cached_property
    def _engine(self) -> Any:
        from rapidocr_onnxruntime import RapidOCR

        # rapidocr sets its own logger to INFO on import; keep it quiet unless asked.
        logging.getLogger("RapidOCR").setLevel(logging.WARNING)
        return RapidOCR()

    def version(self) -> str:
        return f"rapidocr-onnxruntime {version('rapidocr-onnxruntime')} (PP-OCR ch/en)"

    def detect_and_read(self, image: Image.Image) -> list[tuple[Box, str, float]]:
        """Every detected text box (axis-aligned, pixels of ``image``) with its reading and score."""
        arr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        # Every box the detector finds (text_score 0), not only those its ch/en recogniser reads
        # confidently: text in other scripts gets a low score, and the hybrid reads it with Tesseract.
        result, _ = self._run(lambda a: self._engine(a, text_score=0.0), arr)
        out = []
        for quad, text, score in result or []:
            xs = [float(p[0]) for p in quad]
            ys = [float(p[1]) for p in quad]
            out.append(((min(xs), min(ys), max(xs), max(ys)), str(text).strip(), float(score)))
        return out

    def read_lines(self, image: Image.Image, boxes: Sequence[Box]) -> list[tuple[str, float]]:
        """Recognise whole-line crops (one batch). The recogniser tends to drop spaces in Latin text,
        so callers use this as an alternative reading, good for phone numbers and web addresses."""
        arr = np.asarray(image.convert("RGB"))[:, :, ::-1]
        crops = []
        for x0, y0, x1, y1 in boxes:
            crop = arr[
                max(0, int(y0)) : max(int(y0) + 1, int(y1) + 1),
                max(0, int(x0)) : max(int(x0) + 1, int(x1) + 1),
            ]
            crops.append(np.ascontiguousarray(crop))
        result, _ = self._run(lambda c: self._engine.text_rec(c), crops)
        return [(str(r[0]).strip(), float(r[1])) for r in result]

    def read(self, images: Sequence[Image.Image]) -> list[OCRResult]:
        return [self._read_one(img) for img in images]

    def _read_one(self, image: Image.Image) -> OCRResult:
        small, scale = downscale(image.convert("RGB"), self.max_side)
        found = [f for f in self.detect_and_read(small) if f[1] and f[2] >= self.min_confidence]
        groups = group_lines([box for box, _, _ in found])
        line_boxes = [union_box([found[i][0] for i in g]) for g in groups]
        whole = self.read_lines(small, line_boxes) if line_boxes else []
        lines = []
        for g, box, (wtext, _) in zip(groups, line_boxes, whole, strict=True):
            text = dense_join([found[i][1] for i in g])
            weights = [max(1, len(found[i][1])) for i in g]
            conf = sum(found[i][2] * w for i, w in zip(g, weights, strict=True)) / sum(weights)
            lines.append(
                TextLine(
                    text=text,
                    confidence=round(min(1.0, conf), 3),
                    box=(box[0] / scale, box[1] / scale, box[2] / scale, box[3] / scale),
                    alternatives=(wtext,) if wtext and wtext != text else (),
                )
            )
        return OCRResult(
            engine=self.name, lines=lines, languages=["ch", "en"], readable_scripts=["Latin", "Han"]
        )
