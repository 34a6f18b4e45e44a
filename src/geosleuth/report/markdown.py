"""The Markdown report: the same content as the HTML one, for pasting into a ticket or a wiki.

Text from the photo, a VLM or a file name is untrusted: it is put in code spans or quoted blocks
with Markdown's special characters neutralised, so it cannot become a link, an image or HTML."""

from __future__ import annotations

import re

from geosleuth.report.content import build_content
from geosleuth.report.html import osm_link, regions_text
from geosleuth.schemas import Prediction

_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-!|>~])")


def md_text(text: str) -> str:
    """``text`` as inert Markdown: special characters escaped, HTML brackets as entities, one line."""
    flat = " ".join(str(text).split())
    return _SPECIAL.sub(r"\\\1", flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def md_code(text: str) -> str:
    """``text`` for a code span: one line, no backticks."""
    return " ".join(str(text).replace("`", "'").split())


def render_markdown(prediction: Prediction, *, command: str | None = None) -> str:
    c = build_content(prediction, command=command)
    a, p = c.answer, prediction
    out = [f"# Where was this photo taken? `{md_code(c.title)}`", ""]
    if a.located and a.point is not None:
        out += [
            f"**{md_text(a.label)}** — `{a.coords}` "
            f"([OpenStreetMap]({osm_link(a.point, coarse=a.coarsened)}))",
            "",
            f"Confidence **{a.level}** (p = {a.confidence:.2f}), from {a.basis}; within about "
            f"{max(a.radius_km or 1.0, 1.0):.0f} km.",
        ]
        if a.regions:
            out.append(f"Regions: {regions_text(a.regions)}.")
    else:
        out.append(
            "**Too little evidence for a location.** geosleuth does not commit to a place for this photo."
        )
    if c.exif_gps:
        used = " and it was used as the answer" if p.basis == "exif-gps" else ""
        if "exif.gps" in c.unused:
            used = f"; it was {c.unused['exif.gps']}"
        out += [
            "",
            f"The photo's EXIF metadata carries a GPS position ({md_text(c.exif_gps)}){used}.",
        ]
    if c.redaction:
        out += ["", f"**Redacted for sharing:** {md_text(c.redaction)}."]
    out += ["", md_text(a.sentence), "", "## Reasoning, coarse to fine", ""]
    for s in c.steps:
        prob = f" (p = {s.probability:.2f})" if s.probability is not None else ""
        ids = ", ".join(f"`{e.id}`" for e in s.evidence[:8])
        out.append(f"1. **{s.level}**: {md_text(s.claim)}{prob}" + (f" — {ids}" if ids else ""))
    if c.against:
        out += ["", "Against it: " + md_text(" ".join(c.against))]
    out += [
        "",
        "## Ranked hypotheses",
        "",
        "| # | place | p | radius | for | against |",
        "|---|---|---|---|---|---|",
    ]
    for h in c.hypotheses:
        out.append(
            f"| {h.rank} | {md_text(h.candidate.label)} | {h.candidate.probability:.3f} | {h.candidate.radius_km:.0f} km "
            f"| {md_text(', '.join(h.supporting))} | {md_text(', '.join(h.opposing))} |"
        )
    out += ["", "## Evidence", ""]
    out += [
        f"- `{e.id}` {md_text(e.value)} (weight {e.weight:.2f})"
        + (f" — not used: {md_text(c.unused[e.id])}" if e.id in c.unused else "")
        for e in p.evidence
    ] or ["- none: the photo has no metadata, and no text was read in it"]
    if c.boxes:
        out += ["", "## Text read in the photo", ""]
        out += [
            f"- `{md_code(b.line.text)}` → " + (", ".join(f"`{e.id}`" for e in b.evidence) or "no evidence")
            for b in c.boxes
        ]
    if c.samples:
        out += ["", "## The VLM's answers (model output, untrusted)", ""]
        for sample in c.samples:
            where = f"{sample.point} {md_text(sample.where)}" if sample.point else "no usable answer"
            aside = f" — set aside: {md_text(sample.set_aside)}" if sample.set_aside else ""
            quote = md_text(sample.rationale or sample.raw)[:1500]
            out += [f"- {md_text(sample.variant)}: {where}{aside}", f"  > {quote}"]
    out += ["", "## Missing, and what would change the answer", ""]
    out += [f"- would help: {md_text(g)}" for g in c.gaps]
    out += [f"- not found: {md_text(m)}" for m in c.missing]
    out += [f"- {md_text(n)} {st}: {md_text(d)}" for n, st, d in c.stages_not_run]
    prov = p.provenance
    out += [
        "",
        "## Provenance",
        "",
        f"- geosleuth {prov.geosleuth_version}, settings sha256 `{prov.config_hash}`",
        f"- photo sha256 `{prov.image_sha256}`" if prov.image_sha256 else "- photo sha256 unknown",
    ]
    if prov.prompt_hash:
        out.append(f"- prompt sha256 `{prov.prompt_hash}`")
    out += [f"- model {md_text(k)}: `{md_code(v)}`" for k, v in prov.models.items()]
    out.append("- timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in p.timings.items()))
    if c.command:
        out.append(f"- reproduce: `{md_code(c.command)}`")
    return "\n".join(out) + "\n"
