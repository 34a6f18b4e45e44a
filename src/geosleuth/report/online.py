"""``--online-map``: an interactive map (Leaflet, OpenStreetMap tiles) beside the drawn one, opt-in.

A report is complete without it: the drawn SVG map is still there, and a page opened offline (or
where unpkg.com is blocked) shows exactly what it shows without the flag. With it, the page loads
Leaflet from unpkg.com, pinned by Subresource Integrity, and tiles from tile.openstreetmap.org, and
runs one small script of ours (``templates/online-map.js``), allowed by its hash. Opening the page
then tells unpkg.com and OpenStreetMap that someone looks at the report, and the tiles it fetches
tell OpenStreetMap roughly where the answer is: that is why it is opt-in.

The policy (:func:`online_csp`) still allows no other script, no inline script but ours, no
``eval``, no requests but those two hosts' files (``connect-src 'none'``: tiles are images). The
map's data goes into the page as JSON in a ``<script type="application/json">`` block, which no
browser runs; :func:`script_json` escapes ``<``, ``>`` and ``&`` so that no label can close the
block, and the script reads it with ``JSON.parse`` and sets every label as text.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any

from geosleuth.schemas import Prediction

LEAFLET_VERSION = "1.9.4"
LEAFLET_JS = f"https://unpkg.com/leaflet@{LEAFLET_VERSION}/dist/leaflet.js"
LEAFLET_CSS = f"https://unpkg.com/leaflet@{LEAFLET_VERSION}/dist/leaflet.css"
# Computed from the npm registry's tarball (the files unpkg serves), whose own integrity matches the
# registry's (sha512-nxS1ynzJOmOlHp+iL3FyWqK89GtNL8U8rvlMOsQdTTssxZwCXh8N2NB3GDQOL+YR3XnWyZAxwQixURb+FA74PA==):
#   curl -sS -o leaflet.tgz https://registry.npmjs.org/leaflet/-/leaflet-1.9.4.tgz && tar xzf leaflet.tgz
#   openssl dgst -sha384 -binary package/dist/leaflet.js | openssl base64 -A    (and -sha512, and .css)
# Their sha256 forms equal the ones on leafletjs.com's download page (sha256-20nQCchB9co0qIjJZRGu
# k2/Z9VM+kNiyxNV1lvTlZBo= for the script, sha256-p4NxAoJBhIIN+hmNHrzRCf9tD/miZyoHS5obTRR9BMY= for
# the stylesheet). A browser takes the strongest hash listed and refuses a file that does not match.
LEAFLET_JS_SRI = (
    "sha384-cxOPjt7s7Iz04uaHJceBmS+qpjv2JkIHNVcuOrM+YHwZOmJGBXI00mdUXEq65HTH "
    "sha512-BwHfrr4c9kmRkLw6iXFdzcdWV/PGkVgiIyIWLLlTSXzWQzxuSg4DiQUCpauz/EWjgk5TYQqX/kvn9pG1NpYfqg=="
)
LEAFLET_CSS_SRI = (
    "sha384-sHL9NAb7lN7rfvG5lfHpm643Xkcjzp4jFvuavGOndn6pjVqS6ny56CAt3nsEVT4H "
    "sha512-Zcn6bjR/8RZbLEpLIeOwNtzREBAJnUKESxces60Mpoj+2okopSAcSUIUOseddDm0cxnGQzxIR7vJgsLZbdLE3w=="
)
TILE_HOST = "https://tile.openstreetmap.org"
MAX_ALTERNATIVES = 9
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


@dataclass(frozen=True)
class OnlineMap:
    """What the template needs for the interactive map."""

    data: str  # JSON, safe inside <script type="application/json">
    script: str  # our inline script, exactly as hashed
    css: str  # our stylesheet for the map's box, appended to the report's one
    js_url: str = LEAFLET_JS
    js_sri: str = LEAFLET_JS_SRI
    css_url: str = LEAFLET_CSS
    css_sri: str = LEAFLET_CSS_SRI
    version: str = LEAFLET_VERSION


@lru_cache(maxsize=1)
def script() -> str:
    return (files("geosleuth.report") / "templates" / "online-map.js").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def stylesheet() -> str:
    return (files("geosleuth.report") / "templates" / "online-map.css").read_text(encoding="utf-8")


def sha256_source(text: str) -> str:
    """A CSP hash source for ``text`` (an inline script or style element's exact content)."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def online_csp(css: str, js: str) -> str:
    """The report's policy with the interactive map: our stylesheet and script by hash, Leaflet's
    two files by their exact URLs, OpenStreetMap's tiles as images; nothing else."""
    return (
        "default-src 'none'; "
        f"style-src {sha256_source(css)} {LEAFLET_CSS}; "
        f"img-src data: {TILE_HOST}; "
        f"script-src {sha256_source(js)} {LEAFLET_JS}; "
        "connect-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'"
    )


def script_json(data: Any) -> str:
    """``data`` as JSON that can sit inside a ``<script>`` element: no ``<``, ``>`` or ``&`` (so no
    ``</script>`` and no ``<!--``), and no line separators; ``JSON.parse`` reads it back unchanged."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for raw, escaped in _SCRIPT_ESCAPES.items():
        text = text.replace(raw, escaped)
    return text


def map_data(pred: Prediction) -> dict[str, Any]:
    """The interactive map's layers: the best point, the alternatives, the confidence regions."""
    from geosleuth.report.html import REGION_LEVELS

    best = pred.best
    return {
        "best": None
        if best is None
        else {"lat": best.point.lat, "lon": best.point.lon, "label": best.label, "radius_km": best.radius_km},
        "alternatives": [
            {"lat": c.point.lat, "lon": c.point.lon, "label": f"{c.label} (p={c.probability:.2f})"}
            for c in pred.candidates
            if best is None or (c is not best and c.point != best.point)
        ][:MAX_ALTERNATIVES],
        "regions": [
            {
                "level": REGION_LEVELS.get(round(r.level, 2), round(r.level * 100)),
                "circles": [
                    {"lat": c.center.lat, "lon": c.center.lon, "radius_km": c.radius_km} for c in r.circles
                ],
            }
            for r in sorted(pred.regions, key=lambda r: -r.level)
        ],
    }


def online_map(pred: Prediction) -> OnlineMap:
    return OnlineMap(data=script_json(map_data(pred)), script=script(), css=stylesheet())
