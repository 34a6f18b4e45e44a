"""Reports of a run folder, and comparisons of runs with each other and with published numbers.

``write_report(RUN)`` writes, next to ``records.jsonl``:

* ``report.md``: accuracy at 1/25/200/750/2500 km, median and mean error, GeoScore, valid-output
  rate, cost per image, Recall-vs-Area; answered vs "too little evidence", accuracy over all, among
  answered and forced, beside constant-guess baselines (always Paris, the best city in hindsight);
  per scene type and per continent; latency (median, p90) and crashes; calibration (reliability,
  ECE, accuracy vs coverage, the issue-14 targets); the worst confident misses and what the answered
  photos read; whether the run covers only part of a benchmark; the distance used, provenance;
* ``metrics.csv`` (one row, flat) and ``metrics.json`` (everything);
* ``error_cdf.png``, ``rva.png``, ``error_map.png`` (truth -> prediction over a land mask),
  ``reliability.png`` (confidence bin -> accuracy at 25 and 750 km) and ``coverage.png``.

The published anchors (DESIGN.md §3) are accuracies within 1/25/200/750/2500 km on Im2GPS3k and
YFCC4k; they were computed with the WGS-84 geodesic, so compare against a run's geodesic table.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from geosleuth.errors import GeoSleuthError, MissingDependencyError
from geosleuth.eval.datasets import subset_note
from geosleuth.eval.metrics import CALIBRATION_KM, MetricsReport, compute
from geosleuth.eval.records import THRESHOLDS_KM, DistanceKind, EvalRecord
from geosleuth.eval.runner import PREDICTIONS, PROVENANCE, RECORDS, PredictionStore, RecordStore, error_km
from geosleuth.schemas import Prediction

REPORT_FILES = (
    "report.md",
    "metrics.csv",
    "metrics.json",
    "error_cdf.png",
    "rva.png",
    "error_map.png",
    "reliability.png",
    "coverage.png",
)
#: How many rows the "worst confident misses" and "what the answered ones read" lists keep.
WORST_MISSES = 10
ANSWERED_SHOWN = 40
#: Characters of untrusted photo text shown per cell.
TEXT_CHARS = 90

# Accuracy (%) within 1 / 25 / 200 / 750 / 2500 km, as published (DESIGN.md §3).
ANCHORS: dict[str, dict[str, tuple[float, ...]]] = {
    "im2gps3k": {
        "GeoCLIP": (14.11, 34.47, 50.65, 69.67, 83.82),
        "Img2Loc (GPT-4V)": (17.10, 45.14, 57.87, 72.91, 84.68),
        "PIGEOTTO": (11.3, 36.7, 53.8, 72.4, 85.3),
        "G3 (GPT-4V)": (16.65, 40.94, 55.56, 71.24, 84.68),
        "G3 (LLaVA-Next-8B)": (14.31, 35.87, 49.42, 66.93, 81.78),
        "GeoRanker": (18.79, 45.05, 61.49, 76.31, 89.29),
    },
    "yfcc4k": {
        "GeoCLIP": (9.59, 19.31, 32.63, 55.0, 74.69),
        "Img2Loc (GPT-4V)": (14.11, 29.57, 41.40, 59.27, 76.88),
        "PIGEOTTO": (10.4, 23.7, 40.6, 62.2, 77.7),
        "G3 (GPT-4V)": (23.99, 35.89, 46.98, 64.26, 78.15),
        "GeoRanker": (32.94, 43.54, 54.32, 69.8, 82.5),
    },
}


def load_run(folder: str | Path) -> tuple[list[EvalRecord], dict[str, Any]]:
    folder = Path(folder)
    path = folder / RECORDS
    if not path.is_file():
        raise GeoSleuthError(
            f"{folder} is not a run folder: no {RECORDS} (make one with `geosleuth eval run`)"
        )
    records: list[EvalRecord] = []
    if path.stat().st_size:
        with RecordStore(path) as store:  # it holds an append handle: close it, not the collector
            records = store.records()
    prov_path = folder / PROVENANCE
    prov = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
    return records, prov


def write_report(
    folder: str | Path, *, distance: DistanceKind = "geodesic", plots: bool = True, per_image: bool = False
) -> list[Path]:
    """Write the report files of a run folder; returns their paths. ``per_image``: also one
    explainable HTML report per image (``reports/``), linked from ``report.md``."""
    folder = Path(folder)
    records, prov = load_run(folder)
    if not records:
        raise GeoSleuthError(f"{folder}: no records yet; run `geosleuth eval run` first")
    records = backfill_scenes(records, prov)
    report = compute(records, distance=distance)
    links = per_image_reports(folder, records) if per_image else []
    predictions = _predictions(folder)
    text = markdown(report, prov, folder)
    text += evidence_markdown(records, predictions, distance=distance, radius_km=report.radius_km)
    if links:
        text += _links_markdown(links)
    written = [
        _write(folder / "report.md", text),
        _write(folder / "metrics.json", json.dumps(report.model_dump(mode="json"), indent=2, default=str)),
        _write_csv(folder / "metrics.csv", report),
    ]
    if plots:
        written += _plots(folder, records, report, distance)
    return written + [folder / link for _, link, _ in links]


def backfill_scenes(records: list[EvalRecord], prov: dict[str, Any]) -> list[EvalRecord]:
    """Records written before ``truth_scene`` existed get it from the dataset's metadata table
    named in the provenance, when that table is still there and has the scene columns; records
    that have it, or runs without such a table, are returned unchanged."""
    if not records or any(r.truth_scene for r in records):
        return records
    files = prov.get("dataset", {}).get("meta_files") or []
    if len(files) != 1 or not Path(files[0]).is_file():
        return records
    from geosleuth.eval.records import SCENE_COLUMNS, scene_of
    from geosleuth.retrieval.tables import read_table

    try:
        columns = read_table(Path(files[0]))
    except (GeoSleuthError, OSError, ValueError):
        return records
    id_col = next((c for c in columns if c.lower() in ("img_id", "id", "image_id")), None)
    if id_col is None or not all(c in columns for c in SCENE_COLUMNS.values()):
        return records
    scenes = {
        str(sid): scene_of({c: columns[c][i] for c in SCENE_COLUMNS.values()})
        for i, sid in enumerate(columns[id_col])
    }
    return [r.model_copy(update={"truth_scene": scenes.get(r.sample_id)}) for r in records]


def _predictions(folder: Path) -> dict[str, Prediction] | None:
    path = folder / PREDICTIONS
    if not path.is_file():
        return None
    with PredictionStore(path) as store:
        return store.latest()


def per_image_reports(folder: Path, records: list[EvalRecord]) -> list[tuple[EvalRecord, str, float | None]]:
    """One HTML report per record that has a prediction, in ``folder/reports``; returns
    (record, relative link, error km) in record order."""
    from geosleuth.report import render_report, safe_name, write_text_atomic

    path = folder / PREDICTIONS
    if not path.is_file():
        raise GeoSleuthError(
            f"{folder} has no {PREDICTIONS}: the run was made before predictions were kept; "
            "rerun `geosleuth eval run` into a new folder to get per-image reports"
        )
    with PredictionStore(path) as store:
        predictions = store.latest()
    out = []
    for i, rec in enumerate(records, start=1):
        pred = predictions.get(rec.key)
        if pred is None:
            continue
        link = f"reports/{safe_name(rec.sample_id, i, '.html')}"
        write_text_atomic(folder / link, render_report(pred, "html"))
        out.append((rec, link, error_km(rec)))
    return out


def _links_markdown(links: list[tuple[EvalRecord, str, float | None]]) -> str:
    rows = ["", "## Per-image reports", "", "| sample | status | error km | report |", "|---|---|---|---|"]
    for rec, link, km in links:
        sample = rec.sample_id.replace("|", "\\|").replace("`", "'")
        err = f"{km:.1f}" if km is not None else "–"
        rows.append(f"| `{sample}` | {rec.status} | {err} | [report]({link}) |")
    return "\n".join(rows) + "\n"


def markdown(report: MetricsReport, prov: dict[str, Any], folder: Path) -> str:
    m = report.metrics
    acc, err, geo = m.get("accuracy", {}), m.get("error_km", {}), m.get("geoscore", {})
    valid, cost, rva = m.get("valid_rate", {}), m.get("cost", {}), m.get("rva", {})
    ds = prov.get("dataset", {})
    lines = [
        f"# {ds.get('name', folder.name)}: {report.n} images",
        "",
        f"Distance: **{report.distance}**"
        + (f" (R = {report.radius_km:g} km)" if report.distance == "sphere" else " (WGS-84)")
        + '; a threshold counts an error ≤ it; "too little evidence" and errors count as misses.',
        "",
        "| " + " | ".join(f"≤{t:g} km" for t in THRESHOLDS_KM) + " | median km | mean km | GeoScore |",
        "|" + "---|" * (len(THRESHOLDS_KM) + 3),
        "| "
        + " | ".join(_pct(acc.get(f"acc@{t:g}km")) for t in THRESHOLDS_KM)
        + f" | {_num(err.get('median_km'))} | {_num(err.get('mean_km'))} | {_num(geo.get('geoscore'), 0)} |",
        "",
        f"Located (answered): {_pct(valid.get('located_rate'))}; any prediction: {_pct(valid.get('prediction_rate'))}; "
        f"usable VLM samples: {_pct(valid.get('vlm_usable_rate'))}.",
        f"Per image: {_num(cost.get('vlm_calls_per_image'), 2)} VLM calls, "
        f"{_num(cost.get('tokens_per_image'), 0)} tokens, {_num(cost.get('tool_calls_per_image'), 2)} tool calls, "
        f"{_num(cost.get('seconds_per_image'), 2)} s.",
    ]
    if rva:
        lines.append(
            f"Recall vs area: {_pct(rva.get('recall@1e3km2'))} within 10³ km², {_pct(rva.get('recall@1e5km2'))} "
            f"within 10⁵ km², {_pct(rva.get('recall@1e7km2'))} within 10⁷ km²; "
            f"AUC over log-area {_num(rva.get('auc_log_area'), 3)}."
        )
    lines += _answers_markdown(m, ds)
    for field, title in (("scene", "scene type"), ("continent", "continent")):
        lines += _group_markdown(m.get("per_group", {}).get(field, {}), field, title)
    lines += _latency_markdown(m.get("latency", {}))
    lines += _calibration_markdown(m.get("calibration", {}))
    lines += [
        "",
        f"Dataset checksum {str(ds.get('checksum', '?'))[:16]}; pipeline {str(prov.get('pipeline_fingerprint', '?'))[:16]}; "
        f"git {str(prov.get('git_commit') or '?')[:12]}; models: "
        + (", ".join(f"{k} {v}" for k, v in prov.get("models", {}).items()) or "none (evidence only)"),
        "",
    ]
    return "\n".join(lines)


def _thresholds_head(first: str) -> list[str]:
    return [
        f"| {first} | n | " + " | ".join(f"≤{t:g} km" for t in THRESHOLDS_KM) + " |",
        "|" + "---|" * (len(THRESHOLDS_KM) + 2),
    ]


def _acc_cells(values: dict[str, Any], prefix: str = "") -> str:
    return " | ".join(_pct(values.get(f"{prefix}acc@{t:g}km")) for t in THRESHOLDS_KM)


def _answers_markdown(m: dict[str, Any], ds: dict[str, Any]) -> list[str]:
    ans, acc, forced = m.get("answers", {}), m.get("accuracy", {}), m.get("forced", {})
    base = m.get("baselines", {})
    lines = [""]
    subset = ds.get("subset")
    if not subset and ds.get("missing") and ds.get("rows"):  # runs recorded before the subset line
        subset = subset_note(str(ds.get("name", "?")), int(ds["rows"]) - int(ds["missing"]), int(ds["rows"]))
    if subset:
        lines += [f"**Subset:** {subset} (not comparable with numbers on the whole benchmark).", ""]
    if not ans:
        return lines
    lines += [
        "## Answers",
        "",
        f"Answered: **{ans.get('answered', 0)}** of {ans.get('n', 0)} ({_pct(ans.get('answered_rate'))}); "
        f'"too little evidence": {ans.get("insufficient_evidence", 0)}; crashes: {ans.get("errors", 0)}. '
        f"Forced answers: the top candidate of {ans.get('abstained_with_candidate', 0)} abstentions; "
        f"{ans.get('no_forced_answer', 0)} records had no candidate at all and count as forced misses.",
        "",
        *_thresholds_head("accuracy"),
        f"| all (abstentions are misses) | {acc.get('n', 0)} | {_acc_cells(acc)} |",
        f"| among answered | {acc.get('n_located', 0)} | {_acc_cells(acc, 'located_')} |",
        f"| forced (top candidate always) | {forced.get('n', 0)} | {_acc_cells(forced)} |",
    ]
    if base:
        cities = ", ".join(dict.fromkeys(str(base.get(f"oracle_city@{t:g}km", "?")) for t in THRESHOLDS_KM))
        lines += [
            f"| baseline: always {base.get('paris', 'Paris')} | {base.get('n', 0)} | {_acc_cells(base, 'paris_')} |",
            f"| baseline (oracle): best of {base.get('cities', 0)} cities in hindsight ({cities}) "
            f"| {base.get('n', 0)} | {_acc_cells(base, 'oracle_')} |",
        ]
        beats = [
            (forced.get(f"acc@{t:g}km") or 0) > (base.get(f"oracle_acc@{t:g}km") or 0) for t in THRESHOLDS_KM
        ]
        lines += [
            "",
            f"Forced accuracy beats the oracle constant guess at {sum(beats)} of {len(beats)} thresholds"
            + (
                " (" + ", ".join(f"{t:g} km" for t, b in zip(THRESHOLDS_KM, beats, strict=True) if b) + ")."
                if any(beats)
                else "."
            ),
        ]
    return lines


def _group_markdown(groups: dict[str, Any], field: str, title: str) -> list[str]:
    if not groups:
        return []
    lines = ["", f"## Per {title}", ""]
    if field == "scene":
        lines += [
            "Scene type: the argmax of the metadata's Prob_indoor / Prob_natural / Prob_urban.",
            "",
        ]
    lines += [
        f"| {field} | n | answered | "
        + " | ".join(f"≤{t:g} km" for t in THRESHOLDS_KM)
        + " | forced ≤25 km | forced ≤750 km | forced ≤2500 km |",
        "|" + "---|" * (len(THRESHOLDS_KM) + 6),
    ]
    for name, v in sorted(groups.items(), key=lambda kv: -int(kv[1].get("n", 0))):
        forced = " | ".join(_pct(v.get(f"forced_acc@{t:g}km")) for t in (25.0, 750.0, 2500.0))
        lines.append(f"| {name} | {v.get('n', 0)} | {v.get('n_located', 0)} | {_acc_cells(v)} | {forced} |")
    return lines


def _latency_markdown(lat: dict[str, Any]) -> list[str]:
    if not lat:
        return []
    types = ", ".join(f"{k} {v}" for k, v in lat.get("crash_types", {}).items())
    return [
        "",
        f"Latency per image: median {_num(lat.get('median_s'), 2)} s, p90 {_num(lat.get('p90_s'), 2)} s, "
        f"mean {_num(lat.get('mean_s'), 2)} s, max {_num(lat.get('max_s'), 2)} s. "
        f"Crashes (status error): {lat.get('crashes', 0)}" + (f" ({types})." if types else "."),
    ]


def _calibration_markdown(cal: dict[str, Any]) -> list[str]:
    if not cal:
        return []
    right, wrong = cal.get("confident_right@750km"), cal.get("wrong_mean_confidence")
    right_target = float(cal.get("confident_right_target", 0.8))
    wrong_target = float(cal.get("wrong_mean_confidence_target", 0.25))
    lines = [
        "",
        "## Calibration",
        "",
        f"Binning: {cal.get('binning', '?')}; ECE = Σ n_b/N · |accuracy_b − mean confidence_b|, correctness "
        "meaning within 25 km or within 750 km. Forced answers carry their top candidate's probability.",
        "",
        "| set | n | ECE (25 km) | ECE (750 km) |",
        "|---|---|---|---|",
        *(
            f"| {name} | {cal.get(f'{name}_n', 0)} | {_num(cal.get(f'{name}_ece@25km'), 3)} | "
            f"{_num(cal.get(f'{name}_ece@750km'), 3)} |"
            for name in ("answered", "forced")
        ),
        "",
        f"Answers with confidence ≥ 0.5 right within 750 km: {_pct(right)} of {cal.get('n_confident', 0)} "
        f"(target ≥ {_pct(right_target)}{_verdict(None if right is None else right >= right_target)}). "
        f"Mean confidence of answers wrong by > 750 km: {_num(wrong, 3)} over {cal.get('n_wrong', 0)} "
        f"(target < {wrong_target:.2f}{_verdict(None if wrong is None else wrong < wrong_target)}).",
    ]
    for name in ("answered", "forced"):
        rows = [r for r in cal.get(f"{name}_reliability", []) if r.get("n")]
        if not rows:
            continue
        lines += [
            "",
            f"Reliability ({name}):",
            "",
            "| confidence | n | mean confidence | ≤25 km | ≤750 km |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['lo']:.1f}–{r['hi']:.1f} | {r['n']} | {_num(r['mean_confidence'], 3)} | "
            f"{_pct(r.get('acc@25km'))} | {_pct(r.get('acc@750km'))} |"
            for r in rows
        ]
    cov = cal.get("coverage", [])
    if cov:
        lines += [
            "",
            "Accuracy vs coverage (forced answers ranked by confidence; keep the top x%):",
            "",
            "| coverage | n | min confidence | " + " | ".join(f"≤{t:g} km" for t in THRESHOLDS_KM) + " |",
            "|" + "---|" * (len(THRESHOLDS_KM) + 3),
        ]
        lines += [
            f"| {100 * r['coverage']:g}% | {r['n']} | {_num(r['min_confidence'], 3)} | {_acc_cells(r)} |"
            for r in cov
        ]
    return lines


def _verdict(met: bool | None) -> str:
    return "" if met is None else ", met" if met else ", NOT met"


def _md_text(value: object, limit: int = TEXT_CHARS) -> str:
    """Untrusted text (read from a photo) as one inert Markdown code span: printable characters
    only, whitespace folded, cut to ``limit``, backticks replaced and pipes escaped for tables."""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in str(value)).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = text.replace("`", "'").replace("|", "\\|")
    return f"`{text}`" if text else "–"


def _what_it_read(pred: Prediction | None) -> tuple[str, str]:
    """(the text lines read, the evidence ids and values) of one prediction, as table cells."""
    if pred is None:
        return "(no prediction kept)", "–"
    text = _md_text(" / ".join(line.text for line in pred.text_lines)) if pred.text_lines else "–"
    evidence = "; ".join(f"{e.id}: {e.value}" for e in pred.evidence)
    return text, _md_text(evidence, 2 * TEXT_CHARS) if evidence else "–"


def evidence_markdown(
    records: list[EvalRecord],
    predictions: dict[str, Prediction] | None,
    *,
    distance: DistanceKind = "geodesic",
    radius_km: float = 6371.0,
) -> str:
    """For a person to look at: the most confident answers wrong by more than 750 km, and what the
    answered photos read (text and evidence, from ``predictions.jsonl``; escaped and cut, since it
    is text from the photos)."""
    from geosleuth.eval.metrics import distance_km

    answered = [r for r in records if r.status == "located" and r.prediction is not None]
    if not answered:
        return ""
    km = distance_km(
        [r.truth for r in answered], [r.prediction for r in answered if r.prediction], distance, radius_km
    )
    rows = sorted(zip(answered, km.tolist(), strict=True), key=lambda rk: -rk[0].confidence)
    preds = predictions or {}
    out = ["", "## Worst confident misses (answered, wrong by > 750 km)", ""]
    if predictions is None:
        out += [f"(no {PREDICTIONS} in the run folder: the text read is not known)", ""]
    misses = [(r, d) for r, d in rows if d > 750.0][:WORST_MISSES]
    head = "| sample | confidence | error km | basis | text read | evidence |\n|---|---|---|---|---|---|"
    out += [head] if misses else ["None."]
    for r, d in misses:
        text, evidence = _what_it_read(preds.get(r.key))
        out.append(
            f"| {_md_text(r.sample_id, 60)} | {r.confidence:.2f} | {d:,.0f} | {r.basis or '–'} | {text} | {evidence} |"
        )
    shown = rows[:ANSWERED_SHOWN]
    out += [
        "",
        f"## What the answered photos read ({len(shown)} of {len(rows)}, most confident first)",
        "",
        head,
    ]
    for r, d in shown:
        text, evidence = _what_it_read(preds.get(r.key))
        out.append(
            f"| {_md_text(r.sample_id, 60)} | {r.confidence:.2f} | {d:,.0f} | {r.basis or '–'} | {text} | {evidence} |"
        )
    return "\n".join(out) + "\n"


def compare(folders: list[Path], *, anchors: bool = False, distance: DistanceKind = "geodesic") -> str:
    """A Markdown table of runs side by side, with the published anchors for their dataset."""
    rows: list[tuple[str, list[float]]] = []
    datasets = set()
    for folder in folders:
        records, prov = load_run(folder)
        rep = compute(records, distance=distance)
        acc = rep.metrics.get("accuracy", {})
        name = prov.get("dataset", {}).get("name", "?")
        datasets.add(_anchor_key(name))
        rows.append(
            (
                f"{folder.name} ({name}, n={rep.n})",
                [100 * (acc.get(f"acc@{t:g}km") or 0) for t in THRESHOLDS_KM],
            )
        )
    if anchors:
        for key in sorted(d for d in datasets if d in ANCHORS):
            rows += [(f"{method} (published, {key})", list(vals)) for method, vals in ANCHORS[key].items()]
    head = "| run | " + " | ".join(f"≤{t:g} km" for t in THRESHOLDS_KM) + " |"
    out = [f"Accuracy (%), {distance} distance.", "", head, "|" + "---|" * (len(THRESHOLDS_KM) + 1)]
    out += [f"| {label} | " + " | ".join(f"{v:.2f}" for v in vals) + " |" for label, vals in rows]
    if anchors and not any(d in ANCHORS for d in datasets):
        out += ["", f"No published anchors for {', '.join(sorted(datasets))} (known: {', '.join(ANCHORS)})."]
    return "\n".join(out) + "\n"


def _anchor_key(name: str) -> str:
    return name.split(":", 1)[0].lower()


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.1f}%"


def _num(v: Any, digits: int = 1) -> str:
    return "–" if v is None else f"{float(v):,.{digits}f}"


def _write(path: Path, text: str) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def _write_csv(path: Path, report: MetricsReport) -> Path:
    flat = {k: v for k, v in report.flat().items() if not isinstance(v, dict | list)}
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(flat))
        writer.writeheader()
        writer.writerow(flat)
    tmp.replace(path)
    return path


def _plots(
    folder: Path, records: list[EvalRecord], report: MetricsReport, distance: DistanceKind
) -> list[Path]:
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", "eval", "The report's plots (or pass --no-plots)") from exc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from geosleuth.eval.metrics import distance_km

    pairs = [(r.truth, r.prediction) for r in records if r.prediction is not None and r.status == "located"]
    errors = (
        np.sort(
            np.asarray(distance_km([t for t, _ in pairs], [p for _, p in pairs], distance, report.radius_km))
        )
        if pairs
        else np.zeros(0)
    )
    out = []
    fig, ax = plt.subplots(figsize=(6, 4))
    if len(errors):
        ax.step(np.maximum(errors, 0.1), np.arange(1, len(errors) + 1) / max(1, report.n), where="post")
    for threshold in THRESHOLDS_KM:
        ax.axvline(threshold, color="grey", lw=0.5, ls=":")
    ax.set(
        xscale="log",
        xlim=(0.1, 20000),
        ylim=(0, 1),
        xlabel=f"error km ({distance})",
        ylabel="share of images",
    )
    ax.set_title(f"Error CDF (n={report.n}; unanswered count as misses)")
    out.append(_save(fig, folder / "error_cdf.png"))

    rva = report.metrics.get("rva", {})
    fig, ax = plt.subplots(figsize=(6, 4))
    if rva.get("areas_km2"):
        ax.plot(rva["areas_km2"], rva["recall"], marker=".")
    ax.set(xscale="log", ylim=(0, 1), xlabel="area of the ranked regions (km²)", ylabel="recall")
    ax.set_title("Recall vs area")
    out.append(_save(fig, folder / "rva.png"))

    fig, ax = plt.subplots(figsize=(10, 5))
    ax.imshow(_land_raster(), extent=(-180, 180, -90, 90), cmap="Greys", vmin=0, vmax=3, origin="lower")
    for truth, pred in pairs:
        ax.plot([truth.lon, pred.lon], [truth.lat, pred.lat], color="tab:red", lw=0.6, alpha=0.7)
    if pairs:
        ax.scatter([t.lon for t, _ in pairs], [t.lat for t, _ in pairs], s=6, color="tab:blue", label="truth")
        ax.scatter(
            [p.lon for _, p in pairs], [p.lat for _, p in pairs], s=6, color="tab:red", label="prediction"
        )
        ax.legend(loc="lower left")
    missed = [r.truth for r in records if r.prediction is None]
    if missed:
        ax.scatter([m.lon for m in missed], [m.lat for m in missed], s=6, color="tab:grey", marker="x")
    ax.set(xlim=(-180, 180), ylim=(-90, 90), xlabel="longitude", ylabel="latitude")
    ax.set_title("Truth → prediction (× = no answer)")
    out.append(_save(fig, folder / "error_map.png"))

    cal = report.metrics.get("calibration", {})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, name in zip(axes, ("answered", "forced"), strict=True):
        rows = [r for r in cal.get(f"{name}_reliability", []) if r.get("n")]
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="perfect calibration")
        for t, color in zip(CALIBRATION_KM, ("tab:blue", "tab:orange"), strict=True):
            if rows:
                ax.plot(
                    [r["mean_confidence"] for r in rows],
                    [r[f"acc@{t:g}km"] for r in rows],
                    marker="o",
                    color=color,
                    label=f"≤{t:g} km (ECE {cal.get(f'{name}_ece@{t:g}km') or 0:.3f})",
                )
        for r in rows:
            ax.annotate(str(r["n"]), (r["mean_confidence"], 0.02), fontsize=7, ha="center", color="grey")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean confidence in bin", ylabel="accuracy in bin")
        ax.set_title(f"Reliability, {name} (n={cal.get(f'{name}_n', 0)}; grey: n per bin)")
        ax.legend(loc="upper left", fontsize=8)
    out.append(_save(fig, folder / "reliability.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    cov = cal.get("coverage", [])
    for t in THRESHOLDS_KM:
        if cov:
            ax.plot(
                [r["coverage"] for r in cov], [r[f"acc@{t:g}km"] for r in cov], marker=".", label=f"≤{t:g} km"
            )
    ax.set(xscale="log", xlim=(0.009, 1.05), ylim=(0, 1), xlabel="coverage (most confident share kept)")
    ax.set(ylabel="accuracy of the kept forced answers")
    ax.set_title("Accuracy vs coverage")
    if cov:
        ax.legend(fontsize=8)
    out.append(_save(fig, folder / "coverage.png"))
    return out


def _land_raster() -> Any:
    import numpy as np
    from global_land_mask import globe

    lat = np.arange(-89.75, 90, 0.5)
    lon = np.arange(-179.75, 180, 0.5)
    grid_lon, grid_lat = np.meshgrid(lon, lat)
    return globe.is_land(grid_lat, grid_lon).astype(np.float32)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["ANCHORS", "REPORT_FILES", "compare", "load_run", "markdown", "write_report"]
