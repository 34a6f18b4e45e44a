"""A Prediction as text for a person: the answer, its confidence, the evidence, the stages.

:func:`prediction_lines` gives rich-markup lines (every value from the Prediction escaped), so any
surface that shows an answer (``locate``, a conversation, a report) renders it the same way;
:func:`print_prediction` prints them on a console.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from rich.markup import escape

from geosleuth.schemas import Prediction, StageStatus

if TYPE_CHECKING:
    from rich.console import Console

STAGE_MARKS = {
    StageStatus.RAN: "✓",
    StageStatus.SKIPPED: "–",
    StageStatus.UNAVAILABLE: "✗",
    StageStatus.FAILED: "!",
}
MAX_ALTERNATIVES = 4
MAX_DISCARDED = 5
MAX_TEXT_LINES = 12


def print_prediction(out: Console, p: Prediction, *, trace: bool = False) -> None:
    """Print :func:`prediction_lines`, then a blank line."""
    for line in prediction_lines(p, trace=trace):
        out.print(line)
    out.print()


def prediction_lines(p: Prediction, *, trace: bool = False) -> list[str]:
    """The answer as rich-markup lines: best guess, confidence, explanation, alternatives, the text
    read in the photo, evidence, the VLM's answers, what is missing, warnings, regions, the trace
    (with ``trace``) and stages."""
    lines = [f"[bold]{escape(p.source)}[/]"]
    if p.best is not None:
        b = p.best
        where = escape(b.place.short()) if b.place else ""
        lines.append(f"  Best guess : {b.point}  {where}")
        basis = "EXIF GPS metadata" if p.basis == "exif-gps" else "evidence in the image"
        radius = f"; within ~{b.radius_km:.0f} km" if b.radius_km >= 1 else ""
        lines.append(f"  Confidence : {p.confidence_level.value} ({p.confidence:.2f}), from {basis}{radius}")
    else:
        lines.append("  [yellow]Too little evidence for a location.[/]")
    lines.append(f"  {escape(p.explanation)}")
    alts = [c for c in p.candidates if c is not p.best and c.probability >= 0.01][:MAX_ALTERNATIVES]
    if alts:
        lines.append("  Alternatives:")
        for c in alts:
            where = escape(c.place.short()) if c.place else ""
            lines.append(f"    {c.probability:5.2f}  {c.point}  {escape(c.label)}  [dim]{where}[/]")
    lines += _text_lines(p)
    if p.evidence:
        lines.append("  Evidence:")
        for e in p.evidence:
            # ✓ counted, · informational or too weak to matter, – ignored as configured, ✗ rejected
            if not e.usable:
                mark = "[red]✗[/]"
            elif e.details.get("ignored"):
                mark = "–"
            else:
                mark = "[green]✓[/]" if e.weight >= 0.1 else "·"
            extra = f"  [dim]({escape(e.reason)})[/]" if e.reason else ""
            lines.append(f"    {mark} {e.tool:<8} {escape(e.value)}{extra}")
    lines += _vlm_lines(p)
    if p.missing:
        lines.append("  Missing: " + escape("; ".join(p.missing)))
    for w in p.warnings:
        lines.append(f"  [yellow]Warning:[/] {escape(w)}")
    if p.regions:
        lines.append("  Regions    : " + _regions(p))
    if trace and p.trace:
        lines += _trace_lines(p)
    lines.append("  Stages:")
    for s in p.stages:
        engine = f" [{s.engine}]" if s.engine else ""
        timing = f" {s.seconds * 1000:.0f} ms" if s.seconds else ""
        lines.append(
            f"    {STAGE_MARKS[s.status]} {s.name:<9} {s.status.value}{escape(engine)}{timing}: "
            f"{escape(s.detail)}"
        )
    return lines


def _regions(p: Prediction) -> str:
    """The nested regions, each distinct one once: "50%, 80% and 95% within 1 circle (3 km²)"."""
    groups: list[tuple[list[float], int, float]] = []
    for r in p.regions:
        key = [(c.center.lat, c.center.lon, c.radius_km) for c in r.circles]
        if groups and groups[-1][1] == len(key) and _same_circles(p, groups[-1], key):
            groups[-1][0].append(r.level)
        else:
            groups.append(([r.level], len(key), r.area_km2))
    out = []
    for levels, n, area in groups:
        names = [f"{lv:.0%}" for lv in levels]
        said = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        out.append(f"{said} within {n} circle{'s' if n > 1 else ''} ({area:,.0f} km²)")
    return "; ".join(out)


def _same_circles(
    p: Prediction, group: tuple[list[float], int, float], key: list[tuple[float, float, float]]
) -> bool:
    """Whether ``key`` has the same circles as the region the group was started with."""
    first = next(r for r in p.regions if r.level == group[0][0])
    return key == [(c.center.lat, c.center.lon, c.radius_km) for c in first.circles]


def _text_lines(p: Prediction) -> list[str]:
    """The text OCR read, line by line with its confidence, so a misread shows."""
    if not p.text_lines:
        return []
    lines = ["  Text read  :"]
    for ln in p.text_lines[:MAX_TEXT_LINES]:
        lines.append(f"    {escape(repr(ln.text))}  [dim]({ln.confidence:.2f})[/]")
    if len(p.text_lines) > MAX_TEXT_LINES:
        lines.append(f"    [dim]... and {len(p.text_lines) - MAX_TEXT_LINES} more lines (see --json)[/]")
    return lines


def _vlm_lines(p: Prediction) -> list[str]:
    if p.vlm is None:
        return []
    v = p.vlm
    lines = [
        f"  VLM        : {escape(v.model)}: {v.usable_samples}/{v.total_samples} usable answers, "
        f"{v.usage.total} tokens, {v.seconds:.1f} s"
    ]
    if v.consensus is not None:
        lines.append(f"    consensus {v.consensus} ({v.consensus_share:.0%} of answers within 100 km)")
    if v.rationale:
        lines.append(f"    rationale: {escape(' '.join(v.rationale.split())[:600])}")
    for line in v.discarded[:MAX_DISCARDED]:
        lines.append(f"    [dim]set aside: {escape(line)}[/]")
    if len(v.discarded) > MAX_DISCARDED:
        lines.append(f"    [dim]... and {len(v.discarded) - MAX_DISCARDED} more (see --json)[/]")
    return lines


def _trace_lines(p: Prediction) -> list[str]:
    lines = ["  Trace:"]
    for step in p.trace:
        lines.append(f"    [bold]{escape(step.node)}[/] {step.seconds * 1000:.0f} ms: {escape(step.summary)}")
        for label, data in (("in", step.inputs), ("out", step.outputs)):
            if data:
                lines.append(f"      {label}: {escape(json.dumps(data, ensure_ascii=False, default=str))}")
        for call in step.calls:
            lines.append(f"      call: {escape(call)}")
        for tool in step.tool_calls:
            args = json.dumps(tool.arguments, ensure_ascii=False, default=str)
            cost = ", ".join(f"{k}={v}" for k, v in tool.cost.items() if v) or "free"
            outcome = f"[red]error: {escape(tool.error)}[/]" if tool.error else escape(tool.result)
            lines.append(
                f"      tool: {escape(tool.name)}({escape(args)}) -> {outcome} "
                f"[dim]({cost}, {tool.seconds * 1000:.0f} ms)[/]"
            )
    return lines
