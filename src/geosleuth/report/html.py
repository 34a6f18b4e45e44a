"""The HTML report: one self-contained file, readable offline, that runs no script.

Jinja renders ``templates/report.html.j2`` with autoescaping on, so every string that came from
the photo (OCR text, EXIF fields), a VLM or a file name is escaped. The page carries a
Content-Security-Policy that allows its one stylesheet (by hash) and ``data:`` images and nothing
else: no script of any origin, no request. The map's views and layers switch with CSS alone."""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any

import jinja2
from PIL import Image

from geosleuth.report.basemap import (
    Basemap,
    circle_path,
    load_basemap,
    point_xy,
    view_box,
    view_box_attr,
    with_aspect,
)
from geosleuth.report.content import ReportContent, build_content
from geosleuth.schemas import LatLon, Prediction

PHOTO_MAX_SIDE = 1024
PHOTO_QUALITY = 82
MARKER_FRACTION = 1 / 120  # a marker's radius, as a share of the view's width
REGION_LEVELS = {0.5: 50, 0.8: 80, 0.95: 95}
ANSWER_CONTEXT_KM = 350.0  # inland, 150 km showed a blank plain: no coast, no border within it


PHOTO_MIN_SHOWN = 480  # a small photo is shown up to twice its size, to this width, so its text reads


@dataclass(frozen=True)
class Photo:
    data_url: str
    width: int
    height: int
    scale: float  # embedded pixels per original pixel

    @property
    def shown_width(self) -> int:
        """The width the page shows it at (CSS caps it at the column): its own, or up to twice
        that for a small photo; never a 300-pixel sign blown up to fill the page."""
        return max(self.width, min(PHOTO_MIN_SHOWN, 2 * self.width))


def embed_photo(image: Image.Image, *, max_side: int = PHOTO_MAX_SIDE, quality: int = PHOTO_QUALITY) -> Photo:
    """The photo as a JPEG data URL, downscaled to ``max_side``, re-encoded from its pixels (so
    the embedded copy carries no EXIF, GPS included)."""
    from geosleuth.tools.image import to_rgb

    rgb = to_rgb(image)
    scale = min(1.0, max_side / max(rgb.size))
    if scale < 1.0:
        rgb = rgb.resize(
            (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.Resampling.LANCZOS
        )
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=quality, optimize=True)
    url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return Photo(data_url=url, width=rgb.width, height=rgb.height, scale=scale)


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(files("geosleuth.report") / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
    )


@lru_cache(maxsize=1)
def stylesheet() -> str:
    return (files("geosleuth.report") / "templates" / "report.css").read_text(encoding="utf-8")


def csp(css: str) -> str:
    """The report's Content-Security-Policy: its own stylesheet (by hash), data: images, nothing else."""
    digest = base64.b64encode(hashlib.sha256(css.encode("utf-8")).digest()).decode("ascii")
    return (
        "default-src 'none'; "
        f"style-src 'sha256-{digest}'; "
        "img-src data:; "
        "script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'"
    )


def source_text(bm: Basemap) -> str:
    s = bm.source
    return f"{s.dataset} {s.scale}, {s.licence} (from {s.package} {s.package_version})"


def area_text(km2: float) -> str:
    if km2 >= 1e6:
        return f"{km2 / 1e6:.1f} million km²"
    if km2 >= 100:
        return f"{km2:,.0f} km²"
    return f"{km2:.1f} km²"


def render_html(
    prediction: Prediction,
    *,
    image: Image.Image | None = None,
    command: str | None = None,
    photo_max_side: int = PHOTO_MAX_SIDE,
    basemap: Basemap | None = None,
    online_map: bool = False,
    photo_note: str | None = None,
) -> str:
    """The HTML report of ``prediction``. ``image`` (the photo, upright) is embedded downscaled
    when given; without it the report says the photo was left out, and ``photo_note`` why (else a
    plain "not embedded"). ``online_map``: add the
    interactive map (:mod:`geosleuth.report.online`); without it the page runs no script."""
    content = build_content(prediction, command=command)
    bm = basemap or load_basemap()
    views = _views(content)
    photo = embed_photo(image, max_side=photo_max_side) if image is not None else None
    css = stylesheet()
    online = None
    if online_map:
        from geosleuth.report.online import online_csp
        from geosleuth.report.online import online_map as make_online_map

        online = make_online_map(prediction)
        css = css + online.css
    policy = online_csp(css, online.script) if online is not None else csp(css)
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            c=content,
            p=prediction,
            a=content.answer,
            css=css,
            csp=policy,
            online=online,
            basemap=f'<g id="basemap">{bm.svg_group()}</g>',
            basemap_source=source_text(bm),
            osm_link=osm_link(content.answer.point, coarse=content.answer.coarsened)
            if content.answer.point
            else "",
            area_text=area_text,
            regions_text=regions_text,
            views=[
                {
                    **v,
                    "detail": bm.svg_group(v["view"]) if v["name"] != "world" else "",
                    "label": _label(prediction, v) if prediction.best else None,
                }
                for v in views
            ],
            regions=_regions(prediction),
            best=_marker(prediction.best.point, prediction.best.label) if prediction.best else None,
            best_name=_short_name(prediction),
            alternatives=[
                _marker(c.point, f"{c.label} (p={c.probability:.2f})")
                for c in prediction.candidates
                if prediction.best is None or (c is not prediction.best and c.point != prediction.best.point)
            ][:9],
            vlm_points=[
                _marker(s.point, f"{s.variant} #{s.index}: {s.where}")
                for s in content.samples
                if s.point and not s.set_aside
            ],
            neighbours=[_marker(p, label) for p, label in content.neighbours],
            photo=photo,
            photo_note=None
            if photo is not None
            else (photo_note or "The photo is not embedded in this report."),
            boxes=_boxes(content, photo),
        )
    )


def osm_link(p: LatLon, *, coarse: bool = False) -> str:
    """The point on openstreetmap.org: a street-level view, or a town-level one without a pin for
    coarsened coordinates (a pin would claim a precision they no longer have)."""
    if coarse:
        return f"https://www.openstreetmap.org/#map=11/{p.lat:.1f}/{p.lon:.1f}"
    return f"https://www.openstreetmap.org/?mlat={p.lat:.5f}&mlon={p.lon:.5f}#map=14/{p.lat:.5f}/{p.lon:.5f}"


def _label(pred: Prediction, view: dict[str, Any]) -> dict[str, str]:
    """Where the best marker's name goes in ``view``: beside it, on the side with room."""
    assert pred.best is not None
    x, y = point_xy(pred.best.point)
    vx, _, vw, _ = view["view"]
    r = view["r"]
    right_side = x > vx + 0.7 * vw
    return {
        "x": f"{x - 1.8 * r if right_side else x + 1.8 * r:.4f}",
        "y": f"{y + 0.7 * r:.4f}",
        "size": f"{2.1 * r:.5f}",
        "anchor": "end" if right_side else "start",
    }


def _short_name(pred: Prediction) -> str:
    """What the best marker is labelled with on the map: the nearest place's name."""
    best = pred.best
    if best is None:
        return ""
    name = best.place.name if best.place else best.label
    return name if len(name) <= 40 else name[:39] + "…"


def regions_text(regions: list[tuple[float, float]]) -> str:
    """'50% within 1,507 km²; 80% within …', or '50, 80 and 95% all within 3.1 km²' when the
    regions are one and the same."""
    if len({round(area, 3) for _, area in regions}) == 1 and len(regions) > 1:
        levels = [f"{lvl * 100:.0f}" for lvl, _ in regions]
        return f"{', '.join(levels[:-1])} and {levels[-1]}% all within {area_text(regions[0][1])}"
    return "; ".join(f"{lvl * 100:.0f}% within {area_text(area)}" for lvl, area in regions)


def _marker(p: LatLon, label: str) -> dict[str, Any]:
    x, y = point_xy(p)
    return {"x": f"{x:.4f}", "y": f"{y:.4f}", "label": label}


def _regions(pred: Prediction) -> list[dict[str, Any]]:
    out = []
    for r in sorted(pred.regions, key=lambda r: -r.level):  # widest first, so the inner ones stay on top
        level = REGION_LEVELS.get(round(r.level, 2), round(r.level * 100))
        d = " ".join(circle_path(c.center, c.radius_km) for c in r.circles)
        out.append({"level": level, "d": d})
    return out


def _views(content: ReportContent) -> list[dict[str, Any]]:
    pred = content.prediction
    best = pred.best
    answer_pts: list[LatLon] = []
    answer_r: list[float] = []
    if best is not None:
        # enough around the point to recognise where it is: a coast, a border, a neighbouring city
        answer_pts, answer_r = [best.point], [max(3 * best.radius_km, ANSWER_CONTEXT_KM)]
    else:
        for c in pred.candidates[:5]:
            answer_pts.append(c.point)
            answer_r.append(c.radius_km)
    region_pts = [c.center for r in pred.regions for c in r.circles] or answer_pts
    region_r = [c.radius_km for r in pred.regions for c in r.circles] or answer_r
    boxes = {
        "answer": with_aspect(view_box(answer_pts or None, radii_km=answer_r or None)),
        "regions": with_aspect(view_box(region_pts or None, radii_km=region_r or None)),
        "world": view_box(None),
    }
    return [
        {
            "name": name,
            "view": box,
            "box": view_box_attr(box),
            "r": max(box[2] * MARKER_FRACTION, 1e-4),
        }
        for name, box in boxes.items()
    ]


def _boxes(content: ReportContent, photo: Photo | None) -> list[dict[str, Any]]:
    if photo is None:
        return []
    size = content.prediction.provenance.image_size
    s = photo.width / size[0] if size else photo.scale
    out = []
    for i, b in enumerate(content.boxes, start=1):
        x0, y0, x1, y1 = b.line.box
        ids = ", ".join(e.id for e in b.evidence) or "no evidence"
        out.append(
            {
                "x": f"{x0 * s:.1f}",
                "y": f"{y0 * s:.1f}",
                "w": f"{max(1.0, (x1 - x0) * s):.1f}",
                "h": f"{max(1.0, (y1 - y0) * s):.1f}",
                "ty": f"{max(14.0, y0 * s - 4):.1f}",
                "text": f"{b.line.text} → {ids}",
                "title": f"{b.line.text!r} (confidence {b.line.confidence:.2f}) → {ids}",
                "target": f"ev-{b.evidence[0].id}" if b.evidence else f"line-{i}",
            }
        )
    return out
