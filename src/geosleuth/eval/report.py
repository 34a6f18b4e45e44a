"""Reports of a run folder, and comparisons of runs with each other and with published numbers.

``write_report(RUN)`` writes, next to ``records.jsonl``:

* ``report.md``: accuracy at 1/25/200/750/2500 km, median and mean error, GeoScore, valid-output
  rate, cost per image, per-continent accuracy, Recall-vs-Area, the distance used, provenance;
* ``metrics.csv`` (one row, flat) and ``metrics.json`` (everything);
* ``error_cdf.png``, ``rva.png``, ``error_map.png`` (truth -> prediction over a land mask).

The published anchors (DESIGN.md §3) are accuracies within 1/25/200/750/2500 km on Im2GPS3k and
YFCC4k; they were computed with the WGS-84 geodesic, so compare against a run's geodesic table.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from geosleuth.errors import GeoSleuthError, MissingDependencyError
from geosleuth.eval.metrics import MetricsReport, compute
from geosleuth.eval.records import THRESHOLDS_KM, DistanceKind, EvalRecord
from geosleuth.eval.runner import PREDICTIONS, PROVENANCE, RECORDS, PredictionStore, RecordStore, error_km

REPORT_FILES = ("report.md", "metrics.csv", "metrics.json", "error_cdf.png", "rva.png", "error_map.png")

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
    report = compute(records, distance=distance)
    links = per_image_reports(folder, records) if per_image else []
    text = markdown(report, prov, folder)
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
    groups = m.get("per_group", {}).get("continent", {})
    if groups:
        lines += [
            "",
            "| continent | n | " + " | ".join(f"≤{t:g} km" for t in THRESHOLDS_KM) + " |",
            "|" + "---|" * (len(THRESHOLDS_KM) + 2),
        ]
        for name, values in sorted(groups.items(), key=lambda kv: -int(kv[1].get("n", 0))):
            lines.append(
                f"| {name} | {values.get('n', 0)} | "
                + " | ".join(_pct(values.get(f"acc@{t:g}km")) for t in THRESHOLDS_KM)
                + " |"
            )
    lines += [
        "",
        f"Dataset checksum {str(ds.get('checksum', '?'))[:16]}; pipeline {str(prov.get('pipeline_fingerprint', '?'))[:16]}; "
        f"git {str(prov.get('git_commit') or '?')[:12]}; models: "
        + (", ".join(f"{k} {v}" for k, v in prov.get("models", {}).items()) or "none (evidence only)"),
        "",
    ]
    return "\n".join(lines)


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
