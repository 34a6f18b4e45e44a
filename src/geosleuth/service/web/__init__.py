"""The web page of ``geosleuth serve``: static HTML, CSS and JavaScript shipped in this folder
(no build step, nothing from a CDN), and the map it shows, cut from the HTML report.

The page is served at ``/`` and its files at ``/web/{name}``, only the names in :data:`ASSETS`
(a request never picks a path). Every response carries :data:`PAGE_CSP`: scripts, styles and
requests from the page's own origin only, no inline script or style, no ``eval``, and Trusted Types
required, so a string from a prediction cannot become markup even by mistake (the script sets text
with ``textContent`` and builds elements with DOM calls).

The map is the report's: :func:`map_svg` renders the report of a prediction and takes out one of
its map views (answer, regions or world), made a standalone SVG document with the report's own
stylesheet. The page shows it as an ``<img>``, where an SVG runs no script and loads nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Literal

from geosleuth.schemas import Prediction

MapView = Literal["answer", "regions", "world"]
MAP_VIEWS: tuple[MapView, ...] = ("answer", "regions", "world")
MAP_WIDTH_PX = 1000  # the SVG's intrinsic width; the page scales it to its column

PAGE_CSP = (
    "default-src 'none'; "
    "script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'"
)
"""The page's Content-Security-Policy (``blob:`` images: the photos' thumbnails and the maps the
script fetched with the API key, when there is one)."""


@dataclass(frozen=True)
class Asset:
    file: str
    content_type: str


PAGE = Asset("index.html", "text/html; charset=utf-8")
ASSETS: dict[str, Asset] = {
    a.file: a
    for a in (
        Asset("app.js", "text/javascript; charset=utf-8"),
        Asset("app.css", "text/css; charset=utf-8"),
        Asset("icon.svg", "image/svg+xml"),
    )
}
"""The files under ``/web/``, by name (nothing else in the folder is served)."""


@lru_cache(maxsize=8)
def asset_bytes(name: str) -> bytes:
    """The shipped file ``name`` (one of :data:`ASSETS` or the page's)."""
    return (files("geosleuth.service.web") / name).read_bytes()


# The report's map: one <svg class="view view-NAME" viewBox="..."> per view, and the basemap
# shared by reference (<use href="#basemap">) in a hidden <svg class="defs">.
_VIEW = re.compile(
    r'<svg class="view view-(?P<name>\w+)" viewBox="(?P<box>[^"]*)"[^>]*>(?P<body>.*?)</svg>', re.S
)
_DEFS = re.compile(r'<svg class="defs"[^>]*><defs>(?P<defs>.*?)</defs></svg>', re.S)
_MAP_CSS = 'svg { font-family: system-ui, "DejaVu Sans", sans-serif; }\n'


@dataclass(frozen=True)
class MapSvg:
    svg: str
    csp: str  # the report's policy: its stylesheet by hash, no script


def map_svg(prediction: Prediction, view: MapView = "answer") -> MapSvg:
    """``view`` of the report's map of ``prediction``, as a standalone SVG document."""
    return _report_maps(prediction.model_dump_json())[view]


@lru_cache(maxsize=8)  # one report gives every view: the page asks for them one after another
def _report_maps(body: str) -> dict[MapView, MapSvg]:
    from geosleuth.report.html import csp, render_html, stylesheet

    html = render_html(Prediction.model_validate_json(body))
    views = {m["name"]: m for m in _VIEW.finditer(html)}
    defs = _DEFS.search(html)
    if set(views) != set(MAP_VIEWS) or defs is None:  # the report's template changed shape
        raise RuntimeError(f"the report's map has views {sorted(views)}, expected {list(MAP_VIEWS)}")
    css = _MAP_CSS + stylesheet()
    policy = csp(css)
    return {
        view: MapSvg(svg=_standalone(view, views[view], defs["defs"], css), csp=policy) for view in MAP_VIEWS
    }


def _standalone(view: MapView, match: re.Match[str], defs: str, css: str) -> str:
    box, body = match["box"], match["body"]
    _, _, w, h = (float(v) for v in box.split())
    height = round(MAP_WIDTH_PX * h / w) if w > 0 else MAP_WIDTH_PX // 2
    shared = f"<defs>{defs}</defs>" if 'href="#basemap"' in body else ""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{box}" width="{MAP_WIDTH_PX}" '
        f'height="{height}" preserveAspectRatio="xMidYMid meet" role="img" aria-label="map, {view} view" '
        f'data-view="{view}"><style>{css}</style>{shared}{body}</svg>\n'
    )


__all__ = ["ASSETS", "MAP_VIEWS", "PAGE", "PAGE_CSP", "Asset", "MapSvg", "MapView", "asset_bytes", "map_svg"]
