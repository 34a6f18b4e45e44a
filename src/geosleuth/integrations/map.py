"""The report's map as a PNG, for a client that shows images but not HTML (an MCP tool result).

Not a second renderer: the HTML report (:func:`geosleuth.report.render_report`) draws the map, and
this takes its "answer" view, a self-contained ``<svg>`` (the basemap at that view's detail, the
confidence regions, the alternatives, the best answer), with the report's own map rules from its
stylesheet, and rasterises it with resvg (the ``resvg-py`` wheel: a static binary, no system
library). Two adjustments, because resvg implements neither: CSS custom properties are replaced by
their values, and ``vector-effect: non-scaling-stroke`` by stroke widths scaled to the view.
"""

from __future__ import annotations

import re

from geosleuth.errors import MissingDependencyError
from geosleuth.schemas import Prediction

MAP_WIDTH_PX = 800
_ANSWER_VIEW = re.compile(r'<svg class="view view-answer"[^>]*>.*?</svg>', re.DOTALL)
_VIEW_BOX = re.compile(r'viewBox="([-\d.]+) ([-\d.]+) ([-\d.]+) ([-\d.]+)"')
_MAP_RULE = re.compile(r"^\.(land|borders|graticule|region|best|alternatives|vlm|neighbours)\b")
_VARIABLE = re.compile(r"(--[\w-]+):\s*([^;}]+)")
_USE_VARIABLE = re.compile(r"var\((--[\w-]+)\)")
_STROKE_WIDTH = re.compile(r"stroke-width:\s*([\d.]+)(?:px)?")


def map_svg(prediction: Prediction) -> tuple[str, str]:
    """The report's answer view as a standalone SVG, and the stylesheet that draws it."""
    from geosleuth.report import render_report
    from geosleuth.report.html import stylesheet

    html = render_report(prediction, "html")
    match = _ANSWER_VIEW.search(html)
    box = _VIEW_BOX.search(match.group(0)) if match else None
    if match is None or box is None:  # the report's template changed: a bug, tests catch it
        raise RuntimeError("the report has no answer view to draw the map from")
    svg = match.group(0).replace(
        "<svg ", f'<svg xmlns="http://www.w3.org/2000/svg" width="{MAP_WIDTH_PX}" ', 1
    )
    css = stylesheet()
    values = dict(_VARIABLE.findall(css.split("}", 1)[0]))  # the :root rule comes first
    rules = "\n".join(line for line in css.splitlines() if _MAP_RULE.match(line))
    rules = _USE_VARIABLE.sub(lambda m: values.get(m.group(1), "black").strip(), rules)
    per_px = float(box.group(3)) / MAP_WIDTH_PX  # view units per pixel
    rules = _STROKE_WIDTH.sub(lambda m: f"stroke-width: {float(m.group(1)) * per_px:.6g}", rules)
    return svg, rules


def map_png(prediction: Prediction) -> bytes:
    """The report's answer view as PNG bytes (:class:`MissingDependencyError` without resvg-py or
    the report's basemap data)."""
    try:
        import resvg_py
    except ImportError as exc:
        raise MissingDependencyError("resvg-py", "mcp", "The map image of a locate result") from exc
    svg, rules = map_svg(prediction)
    return bytes(resvg_py.svg_to_bytes(svg_string=svg, style_sheet=rules, width=MAP_WIDTH_PX))


__all__ = ["MAP_WIDTH_PX", "map_png", "map_svg"]
