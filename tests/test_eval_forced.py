"""The metrics a real-photo run is judged by (issue 14 §1): answered vs abstained, forced accuracy,
constant-guess baselines, per scene type, latency and calibration, on hand-made records whose
answers are known."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from geosleuth.eval.metrics import (
    WORLD_CITIES,
    compute,
    coverage_curve,
    forced_answer,
    reliability,
)
from geosleuth.eval.records import EvalRecord, scene_of
from geosleuth.schemas import LatLon

PARIS = LatLon(lat=48.8566, lon=2.3522)
TOKYO = LatLon(lat=35.6762, lon=139.6503)
SYDNEY = LatLon(lat=-33.8688, lon=151.2093)


def cand(point: LatLon, p: float) -> dict[str, Any]:
    return {"lat": point.lat, "lon": point.lon, "p": p, "source": "gazetteer", "radius_km": 100.0}


def rec(
    i: int,
    truth: LatLon,
    *,
    pred: LatLon | None = None,
    status: str = "located",
    confidence: float = 0.0,
    candidates: list[dict[str, Any]] | None = None,
    **kw: Any,
) -> EvalRecord:
    if status == "located" and pred is not None and candidates is None:
        candidates = [cand(pred, confidence)]
    return EvalRecord(
        key=f"k{i}",
        sample_id=f"s{i}",
        dataset="toy",
        truth=truth,
        prediction=pred,
        status=status,
        confidence=confidence,
        candidates=candidates or [],
        **kw,
    )


def test_forced_answers_take_the_top_candidate_and_a_record_without_one_is_a_miss() -> None:
    records = [
        rec(0, PARIS, pred=PARIS, confidence=0.9),  # answered, right
        rec(1, TOKYO, status="insufficient_evidence", confidence=0.1, candidates=[cand(TOKYO, 0.1)]),
        rec(2, TOKYO, status="insufficient_evidence", candidates=[cand(SYDNEY, 0.05), cand(TOKYO, 0.01)]),
        rec(3, SYDNEY, status="insufficient_evidence"),  # nothing at all
        rec(4, SYDNEY, status="error", error="boom", error_type="RuntimeError"),
    ]
    assert forced_answer(records[1]) == (TOKYO, 0.1)
    assert forced_answer(records[3]) == (None, 0.0)
    m = compute(records, names=["answers", "accuracy", "forced"]).metrics
    assert m["answers"] == {
        "n": 5,
        "answered": 1,
        "insufficient_evidence": 3,
        "errors": 1,
        "answered_rate": 0.2,
        "abstained_with_candidate": 2,
        "no_forced_answer": 2,
    }
    # abstaining accuracy: only the answer counts; among answered: 1 of 1; forced: 2 of 5
    assert m["accuracy"]["acc@25km"] == pytest.approx(1 / 5)
    assert m["accuracy"]["located_acc@25km"] == 1.0
    assert m["forced"]["hits@25km"] == 2 and m["forced"]["acc@25km"] == pytest.approx(2 / 5)
    assert m["forced"]["n_without_answer"] == 2
    # Sydney -> Tokyo is about 7,800 km: a forced miss even at 2500 km
    assert m["forced"]["hits@2500km"] == 2


def test_constant_baselines_always_paris_and_the_oracle_city() -> None:
    truths = [PARIS, PARIS, TOKYO, TOKYO, TOKYO]
    records = [rec(i, t, status="insufficient_evidence") for i, t in enumerate(truths)]
    b = compute(records, names=["baselines"]).metrics["baselines"]
    assert b["cities"] == len(WORLD_CITIES)
    assert b["paris"] == "Paris"
    assert b["paris_hits@1km"] == 2 and b["paris_acc@25km"] == pytest.approx(2 / 5)
    assert b["oracle_city@25km"] == "Tokyo" and b["oracle_acc@25km"] == pytest.approx(3 / 5)
    # at 2500 km Paris still covers only the Paris photos, Tokyo the three others
    assert b["oracle_hits@2500km"] == 3
    empty = compute([], names=["baselines"]).metrics["baselines"]
    assert empty["oracle_acc@25km"] is None and empty["paris_acc@25km"] is None


def test_scene_is_the_argmax_of_the_metadata_probabilities_and_groups_accuracy() -> None:
    assert scene_of({"Prob_indoor": "0.2", "Prob_natural": "0.5", "Prob_urban": "0.3"}) == "natural"
    assert scene_of({"Prob_indoor": 0.4, "Prob_natural": 0.4, "Prob_urban": 0.2}) == "indoor"  # tie: first
    assert scene_of({"Prob_indoor": "0.2", "Prob_natural": "x", "Prob_urban": "0.3"}) is None
    assert scene_of({"AUTHOR": "someone"}) is None
    records = [
        rec(0, PARIS, pred=PARIS, confidence=0.8, truth_scene="urban"),
        rec(1, PARIS, status="insufficient_evidence", truth_scene="urban"),
        rec(2, TOKYO, status="insufficient_evidence", candidates=[cand(TOKYO, 0.2)], truth_scene="indoor"),
        rec(3, SYDNEY, status="insufficient_evidence"),
    ]
    scenes = compute(records, names=["per_group"]).metrics["per_group"]["scene"]
    assert set(scenes) == {"urban", "indoor", "unknown"}
    assert scenes["urban"]["n"] == 2 and scenes["urban"]["acc@25km"] == 0.5
    assert scenes["indoor"]["acc@25km"] == 0.0 and scenes["indoor"]["forced_acc@25km"] == 1.0
    assert scenes["unknown"]["n"] == 1 and scenes["unknown"]["forced_acc@2500km"] == 0.0
    # records written before truth_scene existed still read
    old = rec(9, PARIS).model_dump(mode="json")
    del old["truth_scene"]
    assert EvalRecord.model_validate(old).truth_scene is None


def test_latency_median_p90_and_crashes() -> None:
    records = [
        rec(i, PARIS, status="insufficient_evidence", seconds=s) for i, s in enumerate([1, 2, 3, 4, 10])
    ]
    records.append(rec(5, PARIS, status="error", seconds=0.5, error="x", error_type="OSError"))
    lat = compute(records, names=["latency"]).metrics["latency"]
    assert lat["median_s"] == 2.5
    assert lat["p90_s"] == pytest.approx(float(np.percentile([0.5, 1, 2, 3, 4, 10], 90)))
    assert lat["max_s"] == 10 and lat["crashes"] == 1 and lat["crash_types"] == {"OSError": 1}


def test_expected_calibration_error_on_a_crafted_set() -> None:
    # bin 0.9-1.0: 4 answers at 0.95, 3 right within 25 km -> |0.75 - 0.95| = 0.2, weight 4/10
    # bin 0.1-0.2: 6 answers at 0.15, 1 right -> |1/6 - 0.15|, weight 6/10
    conf = np.array([0.95] * 4 + [0.15] * 6)
    km = np.array([1.0, 2.0, 3.0, 5000.0] + [10.0] + [5000.0] * 5)
    table, ece = reliability(conf, km)
    assert len(table) == 10 and [r["n"] for r in table] == [0, 6, 0, 0, 0, 0, 0, 0, 0, 4]
    assert table[9]["acc@25km"] == 0.75 and table[9]["mean_confidence"] == pytest.approx(0.95)
    assert table[0]["acc@25km"] is None and table[0]["mean_confidence"] is None
    assert ece["ece@25km"] == pytest.approx(0.4 * 0.2 + 0.6 * abs(1 / 6 - 0.15))
    assert ece["ece@750km"] == pytest.approx(0.4 * 0.2 + 0.6 * abs(1 / 6 - 0.15))
    # confidence 1.0 falls in the last bin; a perfectly calibrated set has ECE 0
    table, ece = reliability(np.array([1.0, 1.0, 0.0, 0.0]), np.array([0.0, 0.0, 9e3, 9e3]))
    assert table[9]["n"] == 2 and ece == {"ece@25km": 0.0, "ece@750km": 0.0}
    assert reliability(np.zeros(0), np.zeros(0))[1] == {"ece@25km": None, "ece@750km": None}


def test_coverage_curve_keeps_the_most_confident_first() -> None:
    conf = np.array([0.1, 0.9, 0.5, 0.7, 0.3, 0.2, 0.8, 0.6, 0.4, 0.05])
    right = np.array([False, True, False, True, False, False, True, True, False, False])
    km = np.where(right, 1.0, 9000.0)
    curve = coverage_curve(conf, km, coverages=(0.1, 0.3, 0.5, 1.0))
    assert [r["n"] for r in curve] == [1, 3, 5, 10]
    assert [r["acc@25km"] for r in curve] == [1.0, 1.0, 0.8, 0.4]
    assert [r["min_confidence"] for r in curve] == [0.9, 0.7, 0.5, 0.05]
    assert curve[0]["n"] == 1 and coverage_curve(np.zeros(0), np.zeros(0)) == []


def test_calibration_metric_answered_forced_and_the_issue_targets() -> None:
    records = [
        rec(0, PARIS, pred=PARIS, confidence=0.9),
        rec(1, PARIS, pred=PARIS, confidence=0.6),
        rec(2, PARIS, pred=TOKYO, confidence=0.55),  # confident and wrong
        rec(3, PARIS, pred=SYDNEY, confidence=0.1),  # wrong, unconfident
        rec(4, TOKYO, status="insufficient_evidence", confidence=0.05, candidates=[cand(TOKYO, 0.05)]),
        rec(5, TOKYO, status="insufficient_evidence"),
    ]
    cal = compute(records, names=["calibration"]).metrics["calibration"]
    assert cal["answered_n"] == 4 and cal["forced_n"] == 6
    assert cal["binning"].startswith("10 equal-width")
    answered = reliability(np.array([0.9, 0.6, 0.55, 0.1]), np.array([0.0, 0.0, 9e3, 9e3]))[1]
    assert cal["answered_ece@25km"] == pytest.approx(answered["ece@25km"])
    t = cal
    assert t["n_confident"] == 3 and t["confident_right@750km"] == pytest.approx(2 / 3)
    assert t["n_wrong"] == 2 and t["wrong_mean_confidence"] == pytest.approx((0.55 + 0.1) / 2)
    top = cal["coverage"][0]  # 1% of 6 -> the single most confident forced answer
    assert top["n"] == 1 and top["min_confidence"] == 0.9 and top["acc@25km"] == 1.0
    assert cal["coverage"][-1]["n"] == 6 and cal["coverage"][-1]["acc@25km"] == pytest.approx(3 / 6)
    # forced reliability: the abstention with a right candidate at 0.05 is in the first bin
    first = cal["forced_reliability"][0]
    assert first["n"] == 2 and first["acc@25km"] == 0.5
    assert math.isclose(first["mean_confidence"], 0.025)
