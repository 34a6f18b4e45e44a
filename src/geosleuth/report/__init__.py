"""Explainable geolocation reports: one file an analyst can open, read, defend and share.

* :func:`render_report`: a :class:`~geosleuth.schemas.Prediction` as HTML, Markdown or JSON;
* :func:`redact_exif`: the same prediction without the photo's metadata values, to share;
* :func:`write_report` / :func:`write_index`: files on disk (one per photo, and an index).

Reports are made from a Prediction alone (plus, optionally, the photo to embed), so `locate`,
eval runs, the service and chat can all make one."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Literal

from PIL import Image

from geosleuth.report import redact
from geosleuth.report.basemap import load_basemap, point_xy, view_box, view_box_attr, with_aspect
from geosleuth.report.html import csp, embed_photo, render_html, source_text, stylesheet
from geosleuth.report.markdown import render_markdown
from geosleuth.report.redact import redact_exif
from geosleuth.schemas import Prediction

ReportFormat = Literal["html", "md", "json"]
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
SUFFIX: dict[str, str] = {"html": ".html", "md": ".md", "json": ".json"}
THUMB_SIDE = 160


def render_report(
    prediction: Prediction,
    format: ReportFormat = "html",
    *,
    image: Image.Image | None = None,
    command: str | None = None,
    photo_max_side: int = 1024,
    redact_exif: bool = False,
    online_map: bool = False,
    photo_note: str | None = None,
) -> str:
    """The report of ``prediction`` as text in ``format``. ``redact_exif``: made from
    :func:`~geosleuth.report.redact.redact_exif` of it, so no format shows the photo's raw
    metadata values (GPS, time, camera, captions). ``online_map`` (HTML only): add an interactive
    Leaflet map with OpenStreetMap tiles beside the drawn one (:mod:`geosleuth.report.online`).
    ``photo_note``: why there is no ``image`` (HTML), e.g. "left out (--no-photo)"."""
    if online_map and format != "html":
        raise ValueError(f"online_map is for HTML reports; format is {format!r}")
    if redact_exif:
        prediction = redact.redact_exif(prediction)  # the argument hides the function's name
    if format == "html":
        return render_html(
            prediction,
            image=image,
            command=command,
            photo_max_side=photo_max_side,
            online_map=online_map,
            photo_note=photo_note,
        )
    if format == "md":
        return render_markdown(prediction, command=command)
    if format == "json":
        return prediction.model_dump_json(indent=2) + "\n"
    raise ValueError(f"report format must be html, md or json, got {format!r}")


def safe_name(source: str, index: int, suffix: str) -> str:
    """A file name for the report of ``source``: its stem with anything unusual replaced, numbered
    (file names are untrusted: they never choose a folder)."""
    stem = _UNSAFE.sub("_", Path(source).stem).strip("._")[:80] or "photo"
    return f"{index:04d}-{stem}{suffix}"


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file, so a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class IndexEntry:
    prediction: Prediction | None
    source: str
    report: str | None  # relative link
    error: str | None = None
    thumbnail: str | None = None  # data URL
    error_type: str | None = None  # the geosleuth error class (InternalError: a bug)


def thumbnail(image: Image.Image) -> str:
    return embed_photo(image, max_side=THUMB_SIDE, quality=70).data_url


def write_index(entries: list[IndexEntry], folder: Path) -> Path:
    """``index.html``: one row per photo (thumbnail, answer, confidence, status, link) and one map
    of every answer. Self-contained and script-free like the reports."""
    bm = load_basemap()
    css = stylesheet()
    points = [
        e.prediction.best.point for e in entries if e.prediction is not None and e.prediction.best is not None
    ]
    box = with_aspect(view_box(points or None, radii_km=50.0 if points else None))
    r = max(box[2] / 150, 1e-4)
    markers = []
    rows = []
    for i, e in enumerate(entries, start=1):
        p = e.prediction
        name = escape(e.source)
        link = f'<a href="{escape(e.report)}">{name}</a>' if e.report else name
        thumb = f'<img src="{e.thumbnail}" alt="" width="96">' if e.thumbnail else ""
        if p is None:
            kind = f" <span class=muted>({escape(e.error_type)})</span>" if e.error_type else ""
            rows.append(
                f"<tr data-testid=error-row><td>{i}</td><td>{thumb}</td><td>{link}</td>"
                f"<td colspan=3 class=con>{escape(e.error or '')}{kind}</td></tr>"
            )
            continue
        best = p.best
        answer = escape(
            best.place.short() if best and best.place else (best.label if best else "too little evidence")
        )
        rows.append(
            f"<tr data-testid=row><td>{i}</td><td>{thumb}</td><td>{link}</td><td>{answer}</td>"
            f"<td><span class='level {p.confidence_level.value}'>{p.confidence_level.value}</span> {p.confidence:.2f}</td>"
            f"<td>{escape(p.status)}</td></tr>"
        )
        if best is not None:
            x, y = point_xy(best.point)
            markers.append(
                f'<a href="{escape(e.report or "")}"><circle cx="{x:.4f}" cy="{y:.4f}" r="{r:.5f}"><title>{i}. {name}: {answer}</title></circle></a>'
            )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp(css)}">
<title>geosleuth reports ({len(entries)} photos)</title><style>{css}</style></head>
<body><main><h1>geosleuth reports: {len(entries)} photos</h1>
<section><svg class="view view-world index-map" viewBox="{view_box_attr(box)}" role="img" aria-label="map of every answer">
<rect x="-540" y="-270" width="1080" height="540" fill="#cfe3f3"/>{bm.svg_group(box)}<g class="best">{"".join(markers)}</g></svg>
<div class="legend">Basemap: {escape(source_text(bm))}</div></section>
<section><table><tr><th>#</th><th>photo</th><th>file</th><th>answer</th><th>confidence</th><th>status</th></tr>
{"".join(rows)}</table></section>
<footer>Made by geosleuth. Self-contained: no network, no script.</footer></main></body></html>
"""
    return write_text_atomic(folder / "index.html", page)


__all__ = [
    "IndexEntry",
    "ReportFormat",
    "redact_exif",
    "render_report",
    "safe_name",
    "thumbnail",
    "write_index",
    "write_text_atomic",
]
