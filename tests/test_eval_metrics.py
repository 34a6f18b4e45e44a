"""Metrics of the benchmark harness: parity with GeoEstimation's published footers, and each metric
on small hand-made records."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geosleuth.eval.metrics import (
    METRICS,
    GeoEstimationRow,
    MetricsReport,
    UnknownMetricError,
    area_to_cover_km2,
    cap_area_km2,
    compute,
    distance_km,
    footer_from_rows,
    geoscore_points,
    globe_area_km2,
    metric,
    read_geoestimation_results,
    recall_at_areas,
)
from geosleuth.eval.records import THRESHOLDS_KM, EvalRecord
from geosleuth.geo import haversine_km
from geosleuth.schemas import CircleRegion, ConfidenceRegion, LatLon

GEOESTIMATION = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "geoestimation"
RESULT_FILES = sorted((GEOESTIMATION / "results").glob("**/*.csv"))
needs_geoestimation = pytest.mark.skipif(
    not RESULT_FILES,
    reason=f"GeoEstimation result files not found under {GEOESTIMATION / 'results'} "
    "(reference data lives in ../shared/data, outside the repository)",
)

ORIGIN = LatLon(lat=0.0, lon=0.0)
KM_PER_DEG = math.pi * 6371.0 / 180.0  # along the equator, on the R = 6371 km sphere


def east_of_origin(km: float) -> LatLon:
    """A point ``km`` east of (0, 0) along the equator, exactly, on the 6371 km sphere."""
    return LatLon(lat=0.0, lon=km / KM_PER_DEG)


def rec(
    i: int,
    *,
    truth: LatLon = ORIGIN,
    pred: LatLon | None = None,
    status: str = "located",
    regions: list[ConfidenceRegion] | None = None,
    **kw: Any,
) -> EvalRecord:
    return EvalRecord(
        key=f"k{i}",
        sample_id=f"s{i}",
        dataset="toy",
        truth=truth,
        prediction=pred,
        status=status,
        regions=regions or [],
        **kw,
    )


def region(
    *circles: tuple[LatLon, float], level: float = 0.95, area: float | None = None
) -> ConfidenceRegion:
    cs = [CircleRegion(center=c, radius_km=r) for c, r in circles]
    total = float(cap_area_km2([r for _, r in circles]).sum()) if area is None else area
    return ConfidenceRegion(level=level, circles=cs, area_km2=total)


# --- parity with GeoEstimation (ECCV'18) ------------------------------------------------------


@needs_geoestimation
@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_sphere_reproduces_geoestimation_footer_exactly(path: Path) -> None:
    rows, footer = read_geoestimation_results(path)
    assert len(rows) in (237, 2997)
    ours = footer_from_rows(rows, distance="sphere", radius_km=6371.0)
    assert ours.hits is not None
    n = len(rows)
    assert list(footer.accuracy) == list(THRESHOLDS_KM)
    for t, printed in footer.accuracy.items():
        # counts: the printed fraction has 6 decimals, so fraction * n pins the count to < 0.002
        assert round(printed * n) == ours.hits[t], f"{path.name}: count at {t} km"
    decimals = len(footer.printed[-1].partition(".")[2])
    assert round(ours.mean_km, decimals) == footer.mean_km, f"{path.name}: mean error"
    # and the six values exactly as the file prints them
    assert ours.printed == footer.printed


@needs_geoestimation
def test_geodesic_does_not_reproduce_the_footers() -> None:
    """The data README: WGS-84 geodesic distances (the later papers' convention) do not reproduce
    GeoEstimation's footers; the authors used a sphere. Every file's mean error differs (by a few km)
    and several counts cross a threshold, so the two conventions must be reported apart."""
    differing = 0
    for path in RESULT_FILES:
        rows, footer = read_geoestimation_results(path)
        if footer_from_rows(rows, distance="geodesic").printed != footer.printed:
            differing += 1
    assert differing >= 1


@needs_geoestimation
def test_read_geoestimation_results_stops_at_blank_line() -> None:
    rows, footer = read_geoestimation_results(RESULT_FILES[0])
    assert all(isinstance(r, GeoEstimationRow) and r.img_id for r in rows)
    assert len(footer.printed) == 6 and footer.distance is None
    # the published per-image distances are the same sphere, to their 2 printed decimals
    d = distance_km([r.truth for r in rows], [r.prediction for r in rows], "sphere")
    printed = np.array([r.great_circle_distance_km for r in rows])
    assert np.max(np.abs(d - printed)) <= 0.005 + 1e-9


def test_read_geoestimation_results_on_a_tiny_file(tmp_path: Path) -> None:
    text = (
        "img_id,gt_lat,predicted_lat,gt_long,predicted_long,great_circle_distance\r\n"
        "a.jpg,0.0,0.0,0.0,0.0,0.00\r\n"
        "b.jpg,0.0,0.0,0.0,1.0,111.19\r\n"
        "\r\n"
        "street acc (1km),city acc (25km),region acc (200km),country acc (750km),"
        "continent acc (2500km),mean deviation (km)\r\n"
        "0.5,0.5,1.0,1.0,1.0,55.6\r\n"
    )
    path = tmp_path / "toy.csv"
    path.write_bytes(text.encode())
    rows, footer = read_geoestimation_results(path)
    assert [r.img_id for r in rows] == ["a.jpg", "b.jpg"]
    assert footer.accuracy == {1.0: 0.5, 25.0: 0.5, 200.0: 1.0, 750.0: 1.0, 2500.0: 1.0}
    ours = footer_from_rows(rows)
    assert ours.printed == ["0.5", "0.5", "1.0", "1.0", "1.0", "55.6"] == footer.printed

    path.write_bytes(text.replace("\r\n\r\n", "\r\n").encode())
    with pytest.raises(ValueError, match="blank line"):
        read_geoestimation_results(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        read_geoestimation_results(tmp_path / "missing.csv")


# --- distances ----------------------------------------------------------------------------------


def test_distance_km_conventions() -> None:
    truth, pred = [ORIGIN, ORIGIN], [east_of_origin(25.0), LatLon(lat=10.0, lon=10.0)]
    sphere = distance_km(truth, pred, "sphere", 6371.0)
    np.testing.assert_allclose(sphere[0], 25.0, rtol=1e-12)
    np.testing.assert_allclose(sphere[1], haversine_km(0, 0, 10, 10))
    np.testing.assert_allclose(distance_km(truth, pred, "sphere", 1000.0), sphere * 1000.0 / 6371.0)
    geodesic = distance_km(truth, pred, "geodesic")
    assert not np.allclose(geodesic, sphere, rtol=1e-6)  # the ellipsoid is wider at the equator
    assert distance_km([], [], "sphere").shape == (0,)
    with pytest.raises(ValueError, match="distance"):
        distance_km(truth, pred, "flat")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="radius_km"):
        distance_km(truth, pred, "sphere", 0.0)
    with pytest.raises(ValueError, match="same length"):
        distance_km(truth, pred[:1], "sphere")


# --- registry and report ------------------------------------------------------------------------


def test_registry_and_report_state_the_convention() -> None:
    assert {"accuracy", "error_km", "geoscore", "valid_rate", "cost", "per_group", "rva"} <= set(METRICS)
    report = compute([rec(0, pred=ORIGIN)], distance="sphere", radius_km=6371.0)
    assert isinstance(report, MetricsReport)
    assert (report.distance, report.radius_km, report.n) == ("sphere", 6371.0, 1)
    assert set(report.metrics) == set(METRICS)
    assert compute([rec(0, pred=ORIGIN)]).distance == "geodesic"  # the default
    flat = report.flat()
    assert flat["distance"] == "sphere" and flat["accuracy.acc@1km"] == 1.0
    # JSON round trip
    assert MetricsReport.model_validate_json(report.model_dump_json()) == report

    only = compute([], names=["accuracy", "accuracy"])
    assert list(only.metrics) == ["accuracy"] and only.n == 0 and only.metrics["accuracy"]["acc@1km"] is None

    with pytest.raises(UnknownMetricError, match="Did you mean 'accuracy'") as info:
        compute([], names=["acuracy"])
    assert isinstance(info.value, KeyError)
    with pytest.raises(ValueError, match="distance"):
        compute([], distance="ellipsoid")  # type: ignore[arg-type]


def test_metric_decorator_registers_and_refuses_duplicates() -> None:
    @metric("_test_count")
    def count(records: Any, *, distance: Any, radius_km: float) -> dict[str, Any]:
        return {"n": len(records), "distance": distance}

    try:
        assert compute([rec(0)], names=["_test_count"], distance="sphere").metrics == {
            "_test_count": {"n": 1, "distance": "sphere"}
        }
        with pytest.raises(ValueError, match="already registered"):
            metric("_test_count")(lambda records, *, distance, radius_km: {})
    finally:
        METRICS.pop("_test_count", None)


# --- the metrics ----------------------------------------------------------------------------------


def test_accuracy_threshold_is_inclusive_and_misses_count() -> None:
    records = [
        rec(0, pred=east_of_origin(25.0)),  # exactly on the city threshold: a hit
        rec(1, pred=east_of_origin(25.001)),  # just past it
        rec(2, pred=ORIGIN, status="insufficient_evidence"),  # a point, but no answer: a miss
        rec(3, status="error", error="boom"),
    ]
    acc = compute(records, distance="sphere", names=["accuracy"]).metrics["accuracy"]
    assert (acc["n"], acc["n_located"]) == (4, 2)
    assert acc["hits@1km"] == 0 and acc["acc@1km"] == 0.0
    assert acc["hits@25km"] == 1 and acc["acc@25km"] == 0.25 and acc["located_acc@25km"] == 0.5
    assert acc["hits@200km"] == 2 and acc["acc@2500km"] == 0.5 and acc["located_acc@2500km"] == 1.0
    assert [k for k in acc if k.startswith("acc@")] == [
        "acc@1km",
        "acc@25km",
        "acc@200km",
        "acc@750km",
        "acc@2500km",
    ]


def test_error_km_over_located_and_over_predictions() -> None:
    records = [
        rec(0, pred=east_of_origin(10.0)),
        rec(1, pred=east_of_origin(30.0)),
        rec(2, pred=east_of_origin(100.0)),
        rec(3, pred=east_of_origin(1000.0), status="insufficient_evidence"),
        rec(4, status="error"),
    ]
    err = compute(records, distance="sphere", names=["error_km"]).metrics["error_km"]
    assert err["n_located"] == 3 and err["n_predicted"] == 4
    assert err["median_km"] == pytest.approx(30.0) and err["mean_km"] == pytest.approx(140.0 / 3)
    assert err["median_km_predicted"] == pytest.approx(65.0)
    assert err["mean_km_predicted"] == pytest.approx(285.0)
    empty = compute([rec(0, status="error")], names=["error_km"]).metrics["error_km"]
    assert empty["median_km"] is None and empty["mean_km_predicted"] is None


def test_geoscore() -> None:
    assert geoscore_points(0.0) == 5000
    assert geoscore_points(1492.7) == round(5000 / math.e)
    assert geoscore_points(40_000.0) == 0
    records = [rec(0, pred=ORIGIN), rec(1, pred=east_of_origin(1492.7)), rec(2, status="error")]
    gs = compute(records, distance="sphere", names=["geoscore"]).metrics["geoscore"]
    assert gs["geoscore"] == pytest.approx((5000 + 1839) / 3)
    assert gs["geoscore_located"] == pytest.approx((5000 + 1839) / 2)


def test_valid_rate_and_cost() -> None:
    records = [
        rec(
            0, pred=ORIGIN, vlm_calls=2, vlm_samples=10, vlm_usable=8, tokens=1000, tool_calls=3, seconds=2.0
        ),
        rec(1, pred=ORIGIN, status="insufficient_evidence", vlm_calls=1, vlm_samples=10, vlm_usable=2),
        rec(2, status="error", seconds=1.0),
        rec(3, status="error"),
    ]
    m = compute(records, names=["valid_rate", "cost"]).metrics
    vr = m["valid_rate"]
    assert (vr["prediction_rate"], vr["located_rate"], vr["vlm_usable_rate"]) == (0.5, 0.25, 0.5)
    c = m["cost"]
    assert c["vlm_calls_per_image"] == 0.75 and c["tokens_per_image"] == 250.0
    assert c["tool_calls_per_image"] == 0.75 and c["seconds_per_image"] == 0.75 and c["seconds_total"] == 3.0
    assert compute([rec(0)], names=["valid_rate"]).metrics["valid_rate"]["vlm_usable_rate"] is None


def test_per_group_keys_and_values() -> None:
    paris, berlin = LatLon(lat=48.8566, lon=2.3522), LatLon(lat=52.52, lon=13.405)
    tokyo = LatLon(lat=35.68, lon=139.69)
    records = [
        rec(0, truth=paris, pred=paris, truth_country="FR", truth_continent="EU"),
        rec(1, truth=berlin, pred=paris, truth_country="DE", truth_continent="EU"),
        rec(2, truth=tokyo, status="error", truth_country="JP", truth_continent="AS"),
        rec(3, truth=tokyo, pred=tokyo),
    ]
    pg = compute(records, names=["per_group"]).metrics["per_group"]
    assert set(pg) == {"continent", "country", "scene"}
    assert set(pg["scene"]) == {"unknown"}  # no record has a scene type
    assert set(pg["continent"]) == {"AS", "EU", "unknown"}
    assert set(pg["country"]) == {"DE", "FR", "JP", "unknown"}
    eu = pg["continent"]["EU"]
    assert eu["n"] == 2 and eu["acc@1km"] == 0.5 and eu["acc@2500km"] == 1.0
    assert pg["continent"]["AS"]["acc@2500km"] == 0.0 and pg["continent"]["AS"]["located_acc@1km"] is None
    assert pg["country"]["unknown"]["acc@1km"] == 1.0


# --- Recall vs Area -----------------------------------------------------------------------------


def test_rva_recall_is_monotone_and_uses_cumulative_area() -> None:
    near = east_of_origin(5.0)
    far = LatLon(lat=40.0, lon=40.0)
    small, big = 10.0, 1000.0
    records = [
        # truth in the first (small) circle
        rec(0, regions=[region((near, small), (far, big))]),
        # truth only in the second circle: needs both areas
        rec(1, truth=far, regions=[region((near, small), (far, big))]),
        # truth in no circle
        rec(2, truth=LatLon(lat=-60.0, lon=-120.0), regions=[region((near, small))]),
        # no regions at all
        rec(3, status="error"),
    ]
    need = area_to_cover_km2(records, distance="sphere")
    a_small, a_big = cap_area_km2([small, big])
    assert need[0] == pytest.approx(a_small)
    assert need[1] == pytest.approx(a_small + a_big)
    assert need[2] == np.inf and need[3] == np.inf

    r = compute(records, distance="sphere", names=["rva"]).metrics["rva"]
    recall = np.array(r["recall"])
    assert np.all(np.diff(recall) >= 0)
    assert r["areas_km2"][0] == 1.0 and r["areas_km2"][-1] == pytest.approx(globe_area_km2())
    assert r["n"] == 4 and r["n_with_regions"] == 3
    assert recall[-1] == 0.5 and r["recall@1e3km2"] == 0.25 and r["recall@1e7km2"] == 0.5
    assert 0.0 < r["auc_log_area"] < 0.5


def test_rva_highest_level_region_and_stored_area_bound() -> None:
    near = east_of_origin(5.0)
    wide = region((near, 100.0), (near, 100.0), (near, 100.0), level=0.95, area=float(cap_area_km2(100.0)))
    tight = region((east_of_origin(3000.0), 10.0), level=0.5)
    # truth in the third (identical) circle; the stored union area bounds the additive sum
    need = area_to_cover_km2([rec(0, truth=near, regions=[tight, wide])], distance="sphere")
    assert need[0] == pytest.approx(float(cap_area_km2(100.0)))


def test_rva_globe_covering_circle_gives_full_recall() -> None:
    globe_circle = math.pi * 6371.0 + 10.0
    records = [
        rec(i, truth=LatLon(lat=lat, lon=lon), regions=[region((ORIGIN, globe_circle))])
        for i, (lat, lon) in enumerate([(0.0, 180.0), (-89.0, 0.0), (45.0, -100.0)])
    ]
    for distance in ("sphere", "geodesic"):
        r = compute(records, distance=distance, names=["rva"]).metrics["rva"]
        assert r["recall"][-1] == 1.0 and r["recall"][-2] == 0.0


def test_rva_without_regions_is_zero_and_candidates_are_a_fallback() -> None:
    none = compute([rec(0), rec(1, status="error")], names=["rva"]).metrics["rva"]
    assert set(none["recall"]) == {0.0} and none["auc_log_area"] == 0.0 and none["n_with_regions"] == 0
    empty = compute([], names=["rva"]).metrics["rva"]
    assert empty["auc_log_area"] is None and empty["recall@1e5km2"] is None

    cands = [
        {"point": {"lat": 10.0, "lon": 10.0}, "p": 0.6, "source": "vlm", "radius_km": 50.0},
        {"point": {"lat": 0.0, "lon": 0.0}, "p": 0.4, "source": "vlm"},  # no radius: skipped
        {"point": {"lat": 0.0, "lon": 0.0}, "p": 0.3, "source": "retrieval", "radius_km": 20.0},
    ]
    need = area_to_cover_km2([rec(0, candidates=cands)], distance="sphere")
    assert need[0] == pytest.approx(float(cap_area_km2(50.0) + cap_area_km2(20.0)))


def test_recall_at_areas_is_inclusive() -> None:
    need = np.array([10.0, 100.0, np.inf])
    np.testing.assert_allclose(recall_at_areas(need, [9.9, 10.0, 100.0, 1e9]), [0, 1 / 3, 2 / 3, 2 / 3])
