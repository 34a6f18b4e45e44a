"""The OCR interface: a batch of images in, recognised text lines with boxes and confidences out."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Protocol, runtime_checkable

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from geosleuth.schemas import TextLine


class OCRResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine: str
    lines: list[TextLine] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list, description="Language models the engine used.")
    unread: int = Field(
        default=0, ge=0, description="Text regions found that no installed model read (another script?)."
    )
    readable_scripts: list[str] = Field(
        default_factory=list, description="Scripts the engine's installed models read (names)."
    )
    missing_scripts: list[tuple[str, str]] = Field(
        default_factory=list, description="(script, package to install) of major scripts it cannot read."
    )

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


@runtime_checkable
class OCREngine(Protocol):
    """Batch-first OCR. Implementations are cheap to construct and load their models on first use."""

    name: str

    def read(self, images: Sequence[Image.Image]) -> list[OCRResult]:
        """Recognise text in each image (RGB, upright). One result per image, in order."""
        ...

    def version(self) -> str:
        """Engine and model version, recorded in provenance."""
        ...


def downscale(image: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    """Shrink so the longest side is at most ``max_side``; returns the image and the scale applied."""
    w, h = image.size
    scale = min(1.0, max_side / max(w, h))
    if scale >= 1.0:
        return image, 1.0
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS), scale


def group_lines(boxes: Sequence[tuple[float, float, float, float]]) -> list[list[int]]:
    """Indices of boxes that sit on one text line, each line left to right, lines top to bottom.

    Boxes share a line when they overlap vertically by half the smaller height, have similar
    heights, and the horizontal gap to the previous box is under ~1.5 line heights."""
    order = sorted(range(len(boxes)), key=lambda i: (boxes[i][1] + boxes[i][3]) / 2)
    rows: list[list[int]] = []
    for i in order:
        _, y0, _, y1 = boxes[i]
        h = y1 - y0
        for row in rows:
            ry0 = sum(boxes[j][1] for j in row) / len(row)
            ry1 = sum(boxes[j][3] for j in row) / len(row)
            rh = ry1 - ry0
            overlap = min(y1, ry1) - max(y0, ry0)
            if overlap >= 0.5 * min(h, rh) and abs(h - rh) <= 0.6 * max(h, rh):
                row.append(i)
                break
        else:
            rows.append([i])
    lines: list[list[int]] = []
    for row in rows:
        row.sort(key=lambda j: boxes[j][0])
        current = [row[0]]
        for j in row[1:]:
            prev_right = max(boxes[k][2] for k in current)
            height = max(boxes[j][3] - boxes[j][1], boxes[current[-1]][3] - boxes[current[-1]][1])
            if boxes[j][0] - prev_right > 1.5 * height:
                lines.append(current)
                current = [j]
            else:
                current.append(j)
        lines.append(current)
    lines.sort(key=lambda ln: (min(boxes[j][1] for j in ln), min(boxes[j][0] for j in ln)))
    return lines


def union_box(boxes: Sequence[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def merge_into_lines(lines: Sequence[TextLine]) -> list[TextLine]:
    """Join word boxes that sit on one text line, left to right, so multi-word names ("Rue de
    Rivoli", "New York") stay together for the clue stage."""
    out = []
    for idx in group_lines([ln.box for ln in lines]):
        row = [lines[i] for i in idx]
        weights = [max(1, len(r.text)) for r in row]
        conf = sum(r.confidence * w for r, w in zip(row, weights, strict=True)) / sum(weights)
        text = dense_join([r.text for r in row])
        out.append(TextLine(text=text, confidence=round(conf, 3), box=union_box([r.box for r in row])))
    return out


def dense_joiner(a: str, b: str) -> str:
    """No space between two pieces of a script written without spaces."""
    from geosleuth.gazetteer import is_dense_script_char

    return "" if a and b and is_dense_script_char(a[-1]) and is_dense_script_char(b[0]) else " "


def dense_join(pieces: Sequence[str]) -> str:
    """Join pieces of text with spaces, except between two pieces of a space-less script."""
    if not pieces:
        return ""
    out = pieces[0]
    for a, b in pairwise(pieces):
        out += dense_joiner(a, b) + b
    return out
