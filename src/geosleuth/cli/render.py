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


def print_prediction(out: Console, p: Prediction, *, trace: bool = False) -> None:
    """Print :func:`prediction_lines`, then a blank line."""
    for line in prediction_lines(p, trace=trace):
        out.print(line)
    out.print()


def prediction_lines(p: Prediction, *, trace: bool = False) -> list[str]:
    """The answer as rich-markup lines: best guess, confidence, explanation, alternatives, evidence,
    the VLM's answers, what is missing, warnings, regions, the trace (with ``trace``) and stages."""
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
    if p.evidence:
        lines.append("  Evidence:")
        for e in p.evidence:
            # ✓ counted, · informational or too weak to matter, ✗ rejected (with the reason)
            mark = "[red]✗[/]" if not e.usable else ("[green]✓[/]" if e.weight >= 0.1 else "·")
            extra = f"  [dim]({escape(e.reason)})[/]" if e.reason else ""
            lines.append(f"    {mark} {e.tool:<8} {escape(e.value)}{extra}")
    lines += _vlm_lines(p)
    if p.missing:
        lines.append("  Missing: " + escape("; ".join(p.missing)))
    for w in p.warnings:
        lines.append(f"  [yellow]Warning:[/] {escape(w)}")
    if p.regions:
        lines.append(
            "  Regions    : "
            + "; ".join(
                f"{r.level:.0%} within {len(r.circles)} circle{'s' if len(r.circles) > 1 else ''} "
                f"({r.area_km2:,.0f} km²)"
                for r in p.regions
            )
        )
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
