"""Fit the fusion's clue weights and prior on cached labelled photos, with k-fold cross-validation.

Input: a cache from ``scripts/fusion_cache.py`` (what the fusion saw per photo, and the truth).
Each setting of the parameters (the prior, its power, and a scale on the weight of language,
script and place-name clues) re-runs the fusion and the verifier of the evidence-only pipeline on
every cached photo; the per-photo outcomes (top candidate, confidence, answered or not) are kept,
so the cross-validation only selects among them: in each of k folds (fixed by ``--seed``) the
setting with the lowest objective (:func:`brier`: forced accuracy and the answers' Brier score) on the other folds is
scored on the held-out fold. The held-out numbers of the fitted model are compared with those of
the hand-set weights (``HAND_WEIGHTS``: the photo prior to the power 0.4, all scales 1) and of the
square root of population with the same likelihoods (the prior before issue 14).

    PYTHONPATH=src python scripts/fit_fusion.py CACHE.pkl [--folds 5] [--seed 14] [--write]

``--write`` writes ``src/geosleuth/data/fusion_weights.json`` from the setting chosen on all the
photos, with the cross-validated numbers beside it (``fusion.weights = "fitted"`` uses it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "geosleuth" / "data" / "fusion_weights.json"
SCALES_KM = (1.0, 25.0, 200.0, 750.0, 2500.0)
HIT_KM = 750.0
GRID: dict[str, tuple[Any, ...]] = {
    "prior": ("population", "photos"),
    "prior_power": (0.3, 0.4, 0.5, 0.7, 1.0),
    "language": (0.7, 1.0, 1.5),
    "script": (0.7, 1.0, 1.5),
    "place-name": (0.7, 1.0),
}


@dataclass
class Outcome:
    """One photo under one setting: the top candidate's distance to the truth, its probability,
    and whether the pipeline would answer."""

    distance_km: float
    confidence: float
    answered: bool


def run_setting(cache: list[dict[str, Any]], setting: dict[str, Any], gazetteer: Any) -> list[Outcome]:
    from geosleuth.agents.fusion import EvidenceFusion, FusionWeights
    from geosleuth.agents.nodes.verify import _pool, _verification_inputs
    from geosleuth.agents.verifier import Verifier
    from geosleuth.config import load_settings
    from geosleuth.geo import haversine_km
    from geosleuth.schemas import CandidateSource
    from geosleuth.tools.exif import ExifReport

    settings = load_settings().with_overrides(offline=True, fusion={"prior": setting["prior"]})
    weights = FusionWeights(
        kind_scale={k: float(setting[k]) for k in ("language", "script", "place-name")},
        prior_power=float(setting["prior_power"]),
    )
    fusion = EvidenceFusion(gazetteer, settings, weights)
    verifier = Verifier(gazetteer, settings.verifier)
    out: list[Outcome] = []
    empty: tuple[Any, float, bool] | None = None
    for photo in cache:
        lat, lon = photo["truth"]
        if not photo["evidence"] and empty is not None:
            point, p, answered = empty
        else:
            exif = photo["exif"] or ExifReport()
            fused = fusion.fuse(photo["evidence"], photo["matches"], exif, [])
            state = SimpleNamespace(
                found=None,
                vlm_points=[],
                tool_candidates=[],
                evidence=photo["evidence"],
                exif=exif,
                fusion=fused,
                vlm=None,
            )
            ctx = SimpleNamespace(state=state, settings=settings)
            pool, evidence_p, remainder = _pool(state, fused)  # type: ignore[arg-type]
            if not pool:
                point, p, answered = None, 0.0, False
            else:
                ranked = verifier.verify(_verification_inputs(ctx, pool, evidence_p, remainder)).candidates  # type: ignore[arg-type]
                top = ranked[0]
                point, p = top.point, top.probability
                answered = p >= settings.min_probability and top.source != CandidateSource.PRIOR
            if not photo["evidence"]:
                empty = (point, p, answered)
        d = float(haversine_km(lat, lon, point.lat, point.lon)) if point is not None else 20037.0
        out.append(Outcome(d, p, answered))
    return out


def metrics(outcomes: list[Outcome]) -> dict[str, Any]:
    """Forced accuracy (top candidate, answered or not), coverage, accuracy and calibration of the
    answered ones at 750 km, and the confidence of wrong ones."""
    d = np.array([o.distance_km for o in outcomes])
    p = np.array([o.confidence for o in outcomes])
    a = np.array([o.answered for o in outcomes])
    hit = d <= HIT_KM
    m: dict[str, Any] = {"photos": len(outcomes), "answered": int(a.sum())}
    for r in SCALES_KM:
        m[f"forced_acc_{int(r)}km"] = round(float((d <= r).mean()), 4)
        m[f"acc_{int(r)}km"] = round(float(((d <= r) & a).mean()), 4)
    m["answered_acc_750km"] = round(float(hit[a].mean()), 4) if a.any() else None
    conf = a & (p >= 0.5)
    m["confident"] = int(conf.sum())
    m["confident_acc_750km"] = round(float(hit[conf].mean()), 4) if conf.any() else None
    wrong = a & ~hit
    m["wrong_answers"] = int(wrong.sum())
    m["wrong_answers_mean_conf"] = round(float(p[wrong].mean()), 4) if wrong.any() else None
    m["forced_wrong_mean_conf"] = round(float(p[~hit].mean()), 4) if (~hit).any() else None
    m["ece_answered_750km"] = round(ece(p[a], hit[a]), 4) if a.any() else None
    m["ece_forced_750km"] = round(ece(p, hit), 4)
    m["brier_750km"] = round(float(((p - hit) ** 2).mean()), 5)
    return m


def ece(p: np.ndarray, hit: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width confidence bins."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            total += sel.sum() * abs(float(hit[sel].mean()) - float(p[sel].mean()))
    return total / max(len(p), 1)


def brier(outcomes: list[Outcome], rows: np.ndarray) -> float:
    """What the selection minimises: one minus the mean forced accuracy at 25/200/750/2500 km (the
    ranking), plus the Brier score of the answered photos' confidence against "within 750 km",
    counted per photo (so answering wrongly with confidence costs, abstaining costs nothing)."""
    d = np.array([outcomes[i].distance_km for i in rows])
    p = np.array([outcomes[i].confidence for i in rows])
    a = np.array([outcomes[i].answered for i in rows])
    forced = np.mean([(d <= r).mean() for r in SCALES_KM[1:]])
    return float(1 - forced + (((p - (d <= HIT_KM)) ** 2) * a).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache", type=Path)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args()
    from geosleuth.gazetteer import Gazetteer

    cache: list[dict[str, Any]] = pickle.loads(args.cache.read_bytes())
    gazetteer = Gazetteer()
    names = list(GRID)
    settings = [
        s
        for s in (dict(zip(names, values, strict=True)) for values in itertools.product(*GRID.values()))
        if s["prior"] == "photos" or s["prior_power"] == 0.5  # the population prior: its square root only
    ]
    # the shipped hand-set weights (HAND_WEIGHTS: the photo prior to the power 0.4, scales 1), and
    # the model before issue 14 (the square root of population)
    hand = {"prior": "photos", "prior_power": 0.4, "language": 1.0, "script": 1.0, "place-name": 1.0}
    population = {**hand, "prior": "population", "prior_power": 0.5}
    t0 = time.perf_counter()
    results = [run_setting(cache, s, gazetteer) for s in settings]
    print(
        f"{len(settings)} settings x {len(cache)} photos in {time.perf_counter() - t0:.0f} s", file=sys.stderr
    )
    i_hand, i_population = settings.index(hand), settings.index(population)

    rng = np.random.default_rng(args.seed)
    fold = rng.permutation(len(cache)) % args.folds
    held: dict[str, list[Outcome | None]] = {k: [None] * len(cache) for k in ("population", "hand", "fitted")}
    chosen = []
    for k in range(args.folds):
        train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        best = min(range(len(settings)), key=lambda i: brier(results[i], train))
        chosen.append(settings[best])
        for i in test:
            held["hand"][i] = results[i_hand][i]
            held["population"][i] = results[i_population][i]
            held["fitted"][i] = results[best][i]
    best_all = min(range(len(settings)), key=lambda i: brier(results[i], np.arange(len(cache))))
    groups = sorted({p["group"] for p in cache})
    report: dict[str, Any] = {
        "cache": str(args.cache),
        "folds": args.folds,
        "seed": args.seed,
        "grid": {k: list(v) for k, v in GRID.items()},
        "chosen_per_fold": chosen,
        "chosen_on_all": settings[best_all],
        "held_out": {},
    }
    for model, outs in held.items():
        full = [o for o in outs if o is not None]
        report["held_out"][model] = {"all": metrics(full)}
        for g in groups:
            report["held_out"][model][g] = metrics(
                [o for o, p in zip(full, cache, strict=True) if p["group"] == g]
            )
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if args.write:
        s = settings[best_all]
        OUT.write_text(
            json.dumps(
                {
                    "made_by": "scripts/fit_fusion.py "
                    + " ".join(a for a in sys.argv[2:] if a != "--write")
                    + f" on {len(cache)} photos ({', '.join(groups)})",
                    "prior": s["prior"],
                    "prior_power": s["prior_power"],
                    "kind_scale": {k: s[k] for k in ("language", "script", "place-name")},
                    "held_out": {m: report["held_out"][m]["all"] for m in held},
                },
                indent=1,
            )
            + "\n"
        )
        print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
