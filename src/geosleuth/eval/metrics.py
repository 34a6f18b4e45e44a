"""Metrics over :class:`~geosleuth.eval.records.EvalRecord` lists, as registered functions.

A metric is a plain function ``(records, *, distance, radius_km) -> dict[str, Any]`` registered
with :func:`metric`; :func:`compute` runs the chosen ones and returns a :class:`MetricsReport` that
states the distance convention and sphere radius it used (DESIGN §4: offer both, default to the
WGS-84 geodesic, say which in every result).

Conventions shared by every metric:

* A record *answers* when its status is ``"located"`` and it has a prediction. Records whose status
  is ``"error"`` or ``"insufficient_evidence"`` (and located records without a point) count as
  misses: accuracy divides by all records, GeoScore gives them 0. The same figures restricted to
  located records are reported beside them (``located_*``), so abstention and precision can be
  told apart.
* Accuracy counts ``d <= threshold`` (a prediction exactly 25.0 km away is a hit at 25 km), as
  GeoEstimation's evaluation did.
* ``"sphere"`` is the haversine on a sphere of ``radius_km`` (GeoEstimation, R = 6371 km);
  ``"geodesic"`` is the WGS-84 ellipsoid and ignores ``radius_km`` for distances.

The GeoEstimation parity helpers at the bottom (:func:`read_geoestimation_results`,
:func:`footer_from_rows`) read the per-image result files that paper published and recompute their
footers, which checks this module's spherical distance and threshold convention against numbers
no one on this project wrote.
"""

from __future__ import annotations

import csv
import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field

from geosleuth import geo
from geosleuth.errors import UnknownMetricError
from geosleuth.eval.records import THRESHOLDS_KM, DistanceKind, EvalRecord
from geosleuth.geo import EARTH_RADIUS_KM, FloatArray
from geosleuth.schemas import CircleRegion, LatLon

BoolArray = NDArray[np.bool_]
MetricValues = dict[str, Any]
ArrayLikeFloat = ArrayLike

GEOSCORE_MAX = 5000
GEOSCORE_SCALE_KM = 1492.7

#: Default Recall-vs-Area budgets: 1 km² to 1e8 km² in quarter decades, then the whole globe.
RVA_DECADES: tuple[float, ...] = tuple(np.arange(0.0, 8.0 + 1e-9, 0.25).tolist())
RVA_SUMMARY_KM2: tuple[float, ...] = (1e3, 1e5, 1e7)

_DISTANCES: tuple[str, ...] = get_args(DistanceKind)


# --- registry -----------------------------------------------------------------------------------


class MetricFn(Protocol):
    """What :func:`metric` registers."""

    def __call__(
        self, records: Sequence[EvalRecord], *, distance: DistanceKind, radius_km: float
    ) -> MetricValues: ...


METRICS: dict[str, MetricFn] = {}


def metric(name: str) -> Callable[[MetricFn], MetricFn]:
    """Register a metric function under ``name`` (a name may be registered once)."""

    def register(fn: MetricFn) -> MetricFn:
        if name in METRICS and METRICS[name] is not fn:
            raise ValueError(
                f"metric {name!r} is already registered (by {METRICS[name]!r}); pick another name"
            )
        METRICS[name] = fn
        return fn

    return register


def get_metric(name: str) -> MetricFn:
    """The registered metric ``name``; an unknown name raises with a "did you mean" hint."""
    try:
        return METRICS[name]
    except KeyError:
        close = difflib.get_close_matches(name, METRICS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownMetricError(
            f"unknown metric {name!r}.{hint} Known metrics: {', '.join(sorted(METRICS))}."
        ) from None


class MetricsReport(BaseModel):
    """The values of several metrics over one set of records, with the convention that made them."""

    model_config = ConfigDict(extra="forbid")
    distance: DistanceKind = Field(description="Distance convention used: 'geodesic' (WGS-84) or 'sphere'.")
    radius_km: float = Field(
        description="Sphere radius: the distance radius when distance='sphere', and the radius of the "
        "spherical caps whose areas Recall-vs-Area adds up."
    )
    n: int = Field(description="Number of records, misses included.")
    thresholds_km: list[float] = Field(default_factory=lambda: list(THRESHOLDS_KM))
    metrics: dict[str, MetricValues] = Field(description="Metric name -> its values.")

    def flat(self) -> dict[str, Any]:
        """One level of ``"metric.key"`` entries (nested values stay nested), with the convention
        first, for tables and CSV rows."""
        out: dict[str, Any] = {"distance": self.distance, "radius_km": self.radius_km, "n": self.n}
        for name, values in self.metrics.items():
            for key, value in values.items():
                out[f"{name}.{key}"] = value
        return out


def compute(
    records: Iterable[EvalRecord],
    *,
    distance: DistanceKind = "geodesic",
    radius_km: float = EARTH_RADIUS_KM,
    names: Sequence[str] | None = None,
) -> MetricsReport:
    """Run the named metrics (all registered ones by default) over ``records``."""
    _check_convention(distance, radius_km)
    recs = list(records)
    chosen = list(dict.fromkeys(names)) if names is not None else list(METRICS)
    fns = {name: get_metric(name) for name in chosen}
    values = {name: fn(recs, distance=distance, radius_km=radius_km) for name, fn in fns.items()}
    return MetricsReport(distance=distance, radius_km=radius_km, n=len(recs), metrics=values)


def _check_convention(distance: str, radius_km: float) -> None:
    if distance not in _DISTANCES:
        raise ValueError(f"distance must be one of {_DISTANCES}, got {distance!r}")
    if not (isinstance(radius_km, int | float) and math.isfinite(radius_km) and radius_km > 0):
        raise ValueError(f"radius_km must be a positive number of km (e.g. 6371.0), got {radius_km!r}")


# --- distances ----------------------------------------------------------------------------------


def distance_km(
    truth: Sequence[LatLon],
    pred: Sequence[LatLon],
    kind: DistanceKind = "geodesic",
    radius_km: float = EARTH_RADIUS_KM,
) -> FloatArray:
    """Pairwise distances (km) between ``truth[i]`` and ``pred[i]``, computed in one vectorised call.
    ``"sphere"`` is the haversine with ``radius_km``; ``"geodesic"`` is WGS-84."""
    _check_convention(kind, radius_km)
    if len(truth) != len(pred):
        raise ValueError(f"truth and pred must have the same length, got {len(truth)} and {len(pred)}")
    if not truth:
        return np.zeros(0)
    tlat, tlon = geo.latlon_arrays(truth)
    plat, plon = geo.latlon_arrays(pred)
    return geo.distance_km(tlat, tlon, plat, plon, method=kind, radius_km=radius_km)


@dataclass(frozen=True)
class _Outcomes:
    """Per-record distances and statuses, shared by the metrics."""

    km: FloatArray  # NaN where there is no prediction
    predicted: BoolArray  # has a prediction, whatever its status
    located: BoolArray  # status == "located"
    answered: BoolArray  # located and predicted: the only records that can score

    @property
    def n(self) -> int:
        return len(self.km)


def _outcomes(records: Sequence[EvalRecord], distance: DistanceKind, radius_km: float) -> _Outcomes:
    predicted = np.array([r.prediction is not None for r in records], dtype=bool)
    located = np.array([r.status == "located" for r in records], dtype=bool)
    km = np.full(len(records), np.nan)
    with_pred = [(i, r.truth, r.prediction) for i, r in enumerate(records) if r.prediction is not None]
    if with_pred:
        idx, truth, pred = zip(*with_pred, strict=True)
        km[list(idx)] = distance_km(truth, pred, distance, radius_km)
    return _Outcomes(km=km, predicted=predicted, located=located, answered=predicted & located)


def _threshold_key(threshold_km: float) -> str:
    return f"{threshold_km:g}km"


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def _accuracy(o: _Outcomes, mask: BoolArray | None = None) -> MetricValues:
    if mask is not None:
        o = _Outcomes(o.km[mask], o.predicted[mask], o.located[mask], o.answered[mask])
    n, n_located = o.n, int(o.located.sum())
    out: MetricValues = {"n": n, "n_located": n_located}
    with np.errstate(invalid="ignore"):
        for t in THRESHOLDS_KM:
            key = _threshold_key(t)
            hits = int(np.count_nonzero(o.answered & (o.km <= t)))
            out[f"acc@{key}"] = _ratio(hits, n)
            out[f"hits@{key}"] = hits
            out[f"located_acc@{key}"] = _ratio(hits, n_located)
    return out


# --- the metrics --------------------------------------------------------------------------------


@metric("accuracy")
def accuracy(records: Sequence[EvalRecord], *, distance: DistanceKind, radius_km: float) -> MetricValues:
    """Share of records within each threshold of :data:`THRESHOLDS_KM` (``d <= t``), as
    ``acc@1km`` ... ``acc@2500km``, with the hit counts (``hits@…``).

    Records with status ``"error"`` or ``"insufficient_evidence"`` count as misses in ``acc@…``
    (denominator: all records). ``located_acc@…`` divides the same hits by the located records only.
    """
    return _accuracy(_outcomes(records, distance, radius_km))


@metric("error_km")
def error_km(records: Sequence[EvalRecord], *, distance: DistanceKind, radius_km: float) -> MetricValues:
    """Median and mean error (km) over located records, and over every record with a prediction
    (``*_predicted``, which adds the points of insufficient-evidence answers). ``None`` when empty."""
    o = _outcomes(records, distance, radius_km)
    out: MetricValues = {}
    for suffix, mask in (("", o.answered), ("_predicted", o.predicted)):
        d = o.km[mask]
        out[f"median_km{suffix}"] = float(np.median(d)) if d.size else None
        out[f"mean_km{suffix}"] = float(np.mean(d)) if d.size else None
        out[f"n{suffix or '_located'}"] = int(d.size)
    return out


def geoscore_points(km: ArrayLikeFloat) -> FloatArray:
    """GeoGuessr points for errors in km: ``round(5000 * exp(-d / 1492.7))``."""
    d = np.asarray(km, dtype=np.float64)
    out: FloatArray = np.round(GEOSCORE_MAX * np.exp(-d / GEOSCORE_SCALE_KM))
    return out


@metric("geoscore")
def geoscore(records: Sequence[EvalRecord], *, distance: DistanceKind, radius_km: float) -> MetricValues:
    """Mean GeoScore, ``round(5000 * exp(-d / 1492.7))`` per image; a miss (error, insufficient
    evidence, no point) scores 0. ``geoscore_located`` averages over located records only."""
    o = _outcomes(records, distance, radius_km)
    points = np.where(o.answered, geoscore_points(np.nan_to_num(o.km, nan=0.0)), 0.0)
    n_located = int(o.located.sum())
    return {
        "geoscore": float(points.mean()) if o.n else None,
        "geoscore_located": float(points[o.located].mean()) if n_located else None,
        "n": o.n,
        "n_located": n_located,
    }


@metric("valid_rate")
def valid_rate(records: Sequence[EvalRecord], *, distance: DistanceKind, radius_km: float) -> MetricValues:
    """Share of records with a prediction, share located, and share of VLM samples that were usable
    (``sum(vlm_usable) / sum(vlm_samples)``; ``None`` when no sample was drawn)."""
    n = len(records)
    n_predicted = sum(r.prediction is not None for r in records)
    n_located = sum(r.status == "located" for r in records)
    samples = sum(r.vlm_samples for r in records)
    usable = sum(r.vlm_usable for r in records)
    return {
        "prediction_rate": _ratio(n_predicted, n),
        "located_rate": _ratio(n_located, n),
        "vlm_usable_rate": _ratio(usable, samples),
        "n": n,
        "n_predicted": n_predicted,
        "n_located": n_located,
        "vlm_samples": samples,
        "vlm_usable": usable,
    }


@metric("cost")
def cost(records: Sequence[EvalRecord], *, distance: DistanceKind, radius_km: float) -> MetricValues:
    """Mean VLM calls, tokens, tool calls and wall-clock seconds per image, and total seconds."""
    n = len(records)
    return {
        "vlm_calls_per_image": _ratio(sum(r.vlm_calls for r in records), n),
        "tokens_per_image": _ratio(sum(r.tokens for r in records), n),
        "tool_calls_per_image": _ratio(sum(r.tool_calls for r in records), n),
        "seconds_per_image": _ratio(sum(r.seconds for r in records), n),
        "seconds_total": float(sum(r.seconds for r in records)),
        "n": n,
    }


UNKNOWN_GROUP = "unknown"


@metric("per_group")
def per_group(records: Sequence[EvalRecord], *, distance: DistanceKind, radius_km: float) -> MetricValues:
    """Accuracy (as :func:`accuracy`, misses included, with ``forced_acc@…`` beside it) per truth
    continent, per truth country and per scene type (``truth_scene``: indoor / natural / urban,
    the argmax of the dataset's scene probabilities): ``{"continent": {name: {...}}, "country":
    {code: {...}}, "scene": {...}}``. Records without the field are grouped under ``"unknown"``."""
    o = _outcomes(records, distance, radius_km)
    f = _forced(records, distance, radius_km)
    out: MetricValues = {}
    for field, values in (
        ("continent", [r.truth_continent for r in records]),
        ("country", [r.truth_country for r in records]),
        ("scene", [r.truth_scene for r in records]),
    ):
        labels = np.array([v or UNKNOWN_GROUP for v in values], dtype=object)
        groups: MetricValues = {}
        for g in sorted(set(labels.tolist())):
            mask = labels == g
            forced_hits = {k: v for k, v in _hits(f.km[mask], "forced_").items() if "acc@" in k}
            groups[str(g)] = {**_accuracy(o, mask), **forced_hits}
        out[field] = groups
    return out


# --- forced answers, constant baselines, latency, calibration ------------------------------------

#: The points a "constant guess" baseline may choose from (name, lat, lon): the most populous
#: metropolitan areas of each continent and the most photographed capitals, fixed here so that the
#: oracle baseline (the best of them in hindsight) means the same on every run.
WORLD_CITIES: tuple[tuple[str, float, float], ...] = (
    ("Paris", 48.8566, 2.3522),
    ("London", 51.5074, -0.1278),
    ("Rome", 41.9028, 12.4964),
    ("Berlin", 52.5200, 13.4050),
    ("Madrid", 40.4168, -3.7038),
    ("Moscow", 55.7558, 37.6173),
    ("Istanbul", 41.0082, 28.9784),
    ("Cairo", 30.0444, 31.2357),
    ("Lagos", 6.5244, 3.3792),
    ("Nairobi", -1.2921, 36.8219),
    ("Johannesburg", -26.2041, 28.0473),
    ("Dubai", 25.2048, 55.2708),
    ("Tehran", 35.6892, 51.3890),
    ("Delhi", 28.6139, 77.2090),
    ("Mumbai", 19.0760, 72.8777),
    ("Bangkok", 13.7563, 100.5018),
    ("Singapore", 1.3521, 103.8198),
    ("Jakarta", -6.2088, 106.8456),
    ("Beijing", 39.9042, 116.4074),
    ("Shanghai", 31.2304, 121.4737),
    ("Hong Kong", 22.3193, 114.1694),
    ("Seoul", 37.5665, 126.9780),
    ("Tokyo", 35.6762, 139.6503),
    ("Sydney", -33.8688, 151.2093),
    ("Auckland", -36.8485, 174.7633),
    ("Honolulu", 21.3069, -157.8583),
    ("Los Angeles", 34.0522, -118.2437),
    ("San Francisco", 37.7749, -122.4194),
    ("Vancouver", 49.2827, -123.1207),
    ("Denver", 39.7392, -104.9903),
    ("Chicago", 41.8781, -87.6298),
    ("Toronto", 43.6532, -79.3832),
    ("New York", 40.7128, -74.0060),
    ("Washington", 38.9072, -77.0369),
    ("Miami", 25.7617, -80.1918),
    ("Mexico City", 19.4326, -99.1332),
    ("Bogotá", 4.7110, -74.0721),
    ("Lima", -12.0464, -77.0428),
    ("São Paulo", -23.5505, -46.6333),
    ("Buenos Aires", -34.6037, -58.3816),
)
ALWAYS_PARIS: tuple[str, float, float] = WORLD_CITIES[0]

#: Reliability bins: equal-width confidence intervals [0, 0.1), [0.1, 0.2), ... [0.9, 1.0].
CALIBRATION_BINS = 10
#: Accuracy against these thresholds is what calibration is measured on (city and country).
CALIBRATION_KM: tuple[float, ...] = (25.0, 750.0)
#: Shares of the most confident forced answers that the accuracy-vs-coverage curve keeps.
COVERAGES: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
#: The confidence above which an answer counts as confident (issue 14 §4: right within 750 km at
#: least 80% of the time), and the bar wrong answers' mean confidence must stay under.
CONFIDENT = 0.5
WRONG_MEAN_CONFIDENCE_TARGET = 0.25
CONFIDENT_RIGHT_TARGET = 0.8


def _candidate_point(cand: Mapping[str, Any]) -> LatLon | None:
    point = cand.get("point")
    try:
        if point is not None:
            return point if isinstance(point, LatLon) else LatLon.model_validate(point)
        return LatLon(lat=float(cand["lat"]), lon=float(cand["lon"]))
    except (KeyError, TypeError, ValueError):
        return None


def forced_answer(record: EvalRecord) -> tuple[LatLon | None, float]:
    """What a system that always answers would say, and with what confidence: the prediction of a
    located record; else the top candidate (``candidates[0]``, confidence its ``p``); else the point
    an abstention kept, if any; else ``(None, 0.0)``, a miss."""
    if record.status == "located" and record.prediction is not None:
        return record.prediction, record.confidence
    if record.candidates:
        point = _candidate_point(record.candidates[0])
        if point is not None:
            p = record.candidates[0].get("p")
            return point, float(p) if isinstance(p, int | float) else record.confidence
    if record.prediction is not None:
        return record.prediction, record.confidence
    return None, 0.0


@dataclass(frozen=True)
class _Forced:
    km: FloatArray  # inf where there is no forced answer (a miss at every threshold)
    confidence: FloatArray
    has_answer: BoolArray


def _forced(records: Sequence[EvalRecord], distance: DistanceKind, radius_km: float) -> _Forced:
    answers = [forced_answer(r) for r in records]
    km = np.full(len(records), np.inf)
    with_point = [(i, records[i].truth, p) for i, (p, _) in enumerate(answers) if p is not None]
    if with_point:
        idx, truth, pred = zip(*with_point, strict=True)
        km[list(idx)] = distance_km(truth, pred, distance, radius_km)
    return _Forced(
        km=km,
        confidence=np.array([c for _, c in answers], dtype=np.float64),
        has_answer=np.array([p is not None for p, _ in answers], dtype=bool),
    )


def _hits(km: FloatArray, prefix: str = "") -> MetricValues:
    n = len(km)
    out: MetricValues = {}
    for t in THRESHOLDS_KM:
        hits = int(np.count_nonzero(km <= t))
        out[f"{prefix}acc@{_threshold_key(t)}"] = _ratio(hits, n)
        out[f"{prefix}hits@{_threshold_key(t)}"] = hits
    return out


@metric("answers")
def answers(records: Sequence[EvalRecord], *, distance: DistanceKind, radius_km: float) -> MetricValues:
    """How the records ended: ``answered`` (located with a point), ``insufficient_evidence``,
    ``errors`` (crashes), and how many abstentions still ranked a candidate (``abstained_with_candidate``,
    what the forced answer uses) or had nothing at all (``no_forced_answer``)."""
    o = _outcomes(records, distance, radius_km)
    has_forced = [forced_answer(r)[0] is not None for r in records]
    return {
        "n": o.n,
        "answered": int(o.answered.sum()),
        "insufficient_evidence": sum(r.status == "insufficient_evidence" for r in records),
        "errors": sum(r.status == "error" for r in records),
        "answered_rate": _ratio(int(o.answered.sum()), o.n),
        "abstained_with_candidate": sum(
            f and not a for f, a in zip(has_forced, o.answered.tolist(), strict=True)
        ),
        "no_forced_answer": sum(not f for f in has_forced),
    }


@metric("forced")
def forced(records: Sequence[EvalRecord], *, distance: DistanceKind, radius_km: float) -> MetricValues:
    """Forced accuracy: every record answers with :func:`forced_answer` (the top candidate when the
    pipeline abstained), as published systems always answer; a record with no candidate at all is
    a miss (counted in ``n_without_answer``). Denominator: all records."""
    f = _forced(records, distance, radius_km)
    return {"n": len(records), "n_without_answer": int((~f.has_answer).sum()), **_hits(f.km)}


@metric("baselines")
def baselines(records: Sequence[EvalRecord], *, distance: DistanceKind, radius_km: float) -> MetricValues:
    """Constant guesses on the same photos: always Paris (``paris_acc@…``), and an **oracle**
    (``oracle_acc@…``) that picks, per threshold and in hindsight, the one city of
    :data:`WORLD_CITIES` that scores best on these very records (``oracle_city@…`` names it). A
    method that cannot beat these has learnt nothing about where photos are."""
    n = len(records)
    out: MetricValues = {"n": n, "cities": len(WORLD_CITIES), "paris": ALWAYS_PARIS[0]}
    if not n:
        return {**out, **_hits(np.zeros(0), "paris_"), **_hits(np.zeros(0), "oracle_")}
    tlat, tlon = geo.latlon_arrays([r.truth for r in records])
    clat = np.array([c[1] for c in WORLD_CITIES])
    clon = np.array([c[2] for c in WORLD_CITIES])
    km = geo.distance_km(
        tlat[None, :], tlon[None, :], clat[:, None], clon[:, None], method=distance, radius_km=radius_km
    )  # (cities, records)
    out.update(_hits(km[WORLD_CITIES.index(ALWAYS_PARIS)], "paris_"))
    for t in THRESHOLDS_KM:
        counts = np.count_nonzero(km <= t, axis=1)
        i = int(np.argmax(counts))  # ties: the first city listed
        key = _threshold_key(t)
        out[f"oracle_acc@{key}"] = _ratio(int(counts[i]), n)
        out[f"oracle_hits@{key}"] = int(counts[i])
        out[f"oracle_city@{key}"] = WORLD_CITIES[i][0]
    return out


@metric("latency")
def latency(records: Sequence[EvalRecord], *, distance: DistanceKind, radius_km: float) -> MetricValues:
    """Seconds per image (``record.seconds``: the pipeline's wall time for that image, waits for a
    slot excluded): median, p90 (linear interpolation), mean, max; and the crashes (status
    ``"error"``) by exception type."""
    sec = np.array([r.seconds for r in records], dtype=np.float64)
    types: dict[str, int] = {}
    for r in records:
        if r.status == "error":
            types[r.error_type or "unknown"] = types.get(r.error_type or "unknown", 0) + 1
    return {
        "n": len(records),
        "median_s": float(np.median(sec)) if sec.size else None,
        "p90_s": float(np.percentile(sec, 90)) if sec.size else None,
        "mean_s": float(sec.mean()) if sec.size else None,
        "max_s": float(sec.max()) if sec.size else None,
        "crashes": sum(types.values()),
        "crash_types": dict(sorted(types.items())),
    }


def reliability(
    confidence: FloatArray, km: FloatArray, *, bins: int = CALIBRATION_BINS
) -> tuple[list[MetricValues], dict[str, float | None]]:
    """Reliability table over ``bins`` equal-width confidence bins (the last one closed at 1.0):
    per bin its range, ``n``, mean confidence and accuracy at each of :data:`CALIBRATION_KM`; and
    the expected calibration error per threshold, ``sum_b n_b / N * |acc_b - conf_b|`` (empty bins
    add nothing; ``None`` without records)."""
    conf = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    table: list[MetricValues] = []
    ece = dict.fromkeys((f"ece@{_threshold_key(t)}" for t in CALIBRATION_KM), 0.0)
    total = len(conf)
    for b in range(bins):
        mask = which == b
        nb = int(mask.sum())
        row: MetricValues = {"lo": b / bins, "hi": (b + 1) / bins, "n": nb}
        row["mean_confidence"] = float(conf[mask].mean()) if nb else None
        for t in CALIBRATION_KM:
            key = _threshold_key(t)
            acc = float(np.count_nonzero(km[mask] <= t)) / nb if nb else None
            row[f"acc@{key}"] = acc
            if nb and acc is not None:
                ece[f"ece@{key}"] += nb / total * abs(acc - row["mean_confidence"])
        table.append(row)
    return table, {k: (v if total else None) for k, v in ece.items()}


def coverage_curve(
    confidence: FloatArray, km: FloatArray, coverages: Sequence[float] = COVERAGES
) -> list[MetricValues]:
    """Accuracy when only the most confident ``ceil(x * N)`` answers are kept, for each share ``x``
    (ties in confidence keep the records' order), with the lowest confidence kept."""
    n = len(confidence)
    if not n:
        return []
    order = np.argsort(-np.asarray(confidence, dtype=np.float64), kind="stable")
    out = []
    for x in coverages:
        k = max(1, math.ceil(x * n - 1e-9))
        top = order[:k]
        row: MetricValues = {"coverage": x, "n": k, "min_confidence": float(confidence[top].min())}
        row.update({k2: v for k2, v in _hits(km[top]).items() if k2.startswith("acc@")})
        out.append(row)
    return out


@metric("calibration")
def calibration(records: Sequence[EvalRecord], *, distance: DistanceKind, radius_km: float) -> MetricValues:
    """Is the confidence a probability of being right? For the ``answered`` records (located, their
    confidence) and for ``forced`` answers (every record, :func:`forced_answer`): a reliability table
    and the expected calibration error against correctness within 25 km and 750 km (10 equal-width
    bins, :func:`reliability`). ``coverage``: forced answers ranked by confidence, accuracy of the
    top x% (:func:`coverage_curve`). The issue-14 §4 targets: the share of answers with
    confidence >= 0.5 right within 750 km (target >= 0.8) and the mean confidence of answers wrong
    by more than 750 km (target < 0.25)."""
    o = _outcomes(records, distance, radius_km)
    f = _forced(records, distance, radius_km)
    conf = np.array([r.confidence for r in records], dtype=np.float64)
    ans_conf, ans_km = conf[o.answered], o.km[o.answered]
    out: MetricValues = {
        "bins": CALIBRATION_BINS,
        "binning": f"{CALIBRATION_BINS} equal-width bins of confidence on [0, 1]",
    }
    for name, c, km in (("answered", ans_conf, ans_km), ("forced", f.confidence, f.km)):
        table, ece = reliability(c, km)
        out[f"{name}_n"] = len(c)
        out.update({f"{name}_{k}": v for k, v in ece.items()})
        out[f"{name}_reliability"] = table
    out["coverage"] = coverage_curve(f.confidence, f.km)
    confident = ans_conf >= CONFIDENT
    wrong = ans_km > 750.0
    n_confident = int(confident.sum())
    out["n_confident"] = n_confident
    out["confident_right@750km"] = _ratio(int(np.count_nonzero(ans_km[confident] <= 750.0)), n_confident)
    out["confident_right_target"] = CONFIDENT_RIGHT_TARGET
    out["n_wrong"] = int(wrong.sum())
    out["wrong_mean_confidence"] = float(ans_conf[wrong].mean()) if wrong.any() else None
    out["wrong_mean_confidence_target"] = WRONG_MEAN_CONFIDENCE_TARGET
    return out


# --- Recall vs Area ---------------------------------------------------------------------------


def cap_area_km2(radius_km: ArrayLikeFloat, sphere_radius_km: float = EARTH_RADIUS_KM) -> FloatArray:
    """Area of a spherical cap of great-circle radius ``radius_km`` (capped at the whole sphere)."""
    alpha = np.minimum(np.asarray(radius_km, dtype=np.float64) / sphere_radius_km, math.pi)
    out: FloatArray = 4 * math.pi * sphere_radius_km**2 * np.sin(alpha / 2) ** 2
    return out


def globe_area_km2(sphere_radius_km: float = EARTH_RADIUS_KM) -> float:
    """Surface of the sphere, ``4 pi R^2`` (about 5.1e8 km² for R = 6371 km)."""
    return float(cap_area_km2(math.pi * sphere_radius_km, sphere_radius_km))


def rva_budgets_km2(sphere_radius_km: float = EARTH_RADIUS_KM) -> FloatArray:
    """The default area budgets: 1 km² ... 1e8 km² in quarter decades, then the whole globe."""
    return np.array([*(10.0**e for e in RVA_DECADES), globe_area_km2(sphere_radius_km)])


def ranked_circles(record: EvalRecord) -> tuple[list[CircleRegion], float | None]:
    """The circles Recall-vs-Area reads from one record, in rank order, with the stored area of
    their union when the record has one.

    The highest-level :class:`~geosleuth.schemas.ConfidenceRegion` is used (it holds the most
    circles; lower levels are its prefixes). Without regions, candidates that carry both a point
    (``{"lat", "lon"}``) and a positive ``radius_km`` are used, in their stored order."""
    if record.regions:
        top = max(record.regions, key=lambda r: r.level)
        return list(top.circles), (top.area_km2 if top.area_km2 > 0 else None)
    circles: list[CircleRegion] = []
    for cand in record.candidates:
        point, radius = cand.get("point"), cand.get("radius_km")
        if point is None or not isinstance(radius, int | float) or not radius > 0:
            continue
        try:
            center = point if isinstance(point, LatLon) else LatLon.model_validate(point)
        except ValueError:
            continue
        circles.append(CircleRegion(center=center, radius_km=float(radius)))
    return circles, None


def area_to_cover_km2(
    records: Sequence[EvalRecord], *, distance: DistanceKind = "geodesic", radius_km: float = EARTH_RADIUS_KM
) -> FloatArray:
    """Per record, the smallest accumulated area (km²) of its ranked circles that holds the truth;
    ``inf`` when no circle holds it (or there are none).

    Circle areas are spherical caps on a sphere of ``radius_km`` and are *added*, so overlaps are
    counted twice: that over-states the area, which can only lower recall at a given budget (a
    conservative curve). The sum is then bounded by two true upper bounds of the prefix's union:
    the region's stored ``area_km2`` (the union of all its circles) and the globe's surface. A truth
    is inside a circle when ``distance(truth, centre) <= radius`` under ``distance``."""
    _check_convention(distance, radius_km)
    rec_idx: list[int] = []
    truths: list[LatLon] = []
    centres: list[LatLon] = []
    radii: list[float] = []
    cum_area: list[float] = []
    globe = globe_area_km2(radius_km)
    for i, record in enumerate(records):
        circles, stored = ranked_circles(record)
        if not circles:
            continue
        r = np.array([c.radius_km for c in circles], dtype=np.float64)
        cum = np.minimum(np.cumsum(cap_area_km2(r, radius_km)), globe)
        if stored is not None:
            cum = np.minimum(cum, stored)
        rec_idx.extend([i] * len(circles))
        truths.extend([record.truth] * len(circles))
        centres.extend(c.center for c in circles)
        radii.extend(r.tolist())
        cum_area.extend(cum.tolist())
    need = np.full(len(records), np.inf)
    if not rec_idx:
        return need
    inside = distance_km(truths, centres, distance, radius_km) <= np.array(radii)
    # prefix areas are non-decreasing, so the first covering circle gives the minimum
    np.minimum.at(need, np.array(rec_idx)[inside], np.array(cum_area)[inside])
    return need


def recall_at_areas(need_km2: FloatArray, budgets_km2: ArrayLikeFloat) -> FloatArray:
    """Share of images whose area-to-cover is within each budget (``<=``)."""
    need = np.sort(np.asarray(need_km2, dtype=np.float64))
    budgets = np.asarray(budgets_km2, dtype=np.float64)
    if need.size == 0:
        return np.full(budgets.shape, np.nan)
    out: FloatArray = np.searchsorted(need, budgets, side="right") / need.size
    return out


def log_area_auc(budgets_km2: ArrayLikeFloat, recall: ArrayLikeFloat) -> float:
    """Trapezoidal area under recall over log10(area), divided by the log10 span: 1.0 is perfect."""
    x = np.log10(np.asarray(budgets_km2, dtype=np.float64))
    y = np.asarray(recall, dtype=np.float64)
    span = float(x[-1] - x[0])
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / span) if span > 0 else float(y[-1])


@metric("rva")
def rva(records: Sequence[EvalRecord], *, distance: DistanceKind, radius_km: float) -> MetricValues:
    """Recall vs Area: recall (share of all images, misses included) whose truth lies inside the
    ranked circles accumulated up to each area budget (see :func:`area_to_cover_km2` for how areas
    add up). Returns the curve (``areas_km2``, ``recall``: 1 km² ... 1e8 km² by quarter decades,
    then the globe), its log-area AUC normalised to [0, 1] over that range, and recall at 1e3, 1e5
    and 1e7 km². Regions are read whatever the record's status."""
    budgets = rva_budgets_km2(radius_km)
    need = area_to_cover_km2(records, distance=distance, radius_km=radius_km)
    recall = recall_at_areas(need, budgets)
    empty = not records
    out: MetricValues = {
        "n": len(records),
        "n_with_regions": sum(bool(ranked_circles(r)[0]) for r in records),
        "areas_km2": budgets.tolist(),
        "recall": [None] * len(budgets) if empty else recall.tolist(),
        "auc_log_area": None if empty else log_area_auc(budgets, recall),
    }
    for a, rec in zip(RVA_SUMMARY_KM2, recall_at_areas(need, RVA_SUMMARY_KM2), strict=True):
        out[f"recall@1e{round(math.log10(a))}km2"] = None if empty else float(rec)
    return out


# --- GeoEstimation parity ---------------------------------------------------------------------


@dataclass(frozen=True)
class GeoEstimationRow:
    """One image of a GeoEstimation results file (ECCV'18)."""

    img_id: str
    truth: LatLon
    prediction: LatLon
    great_circle_distance_km: float  # as the file prints it (2 decimals)


class GeoEstimationFooter(BaseModel):
    """A results file's footer: accuracies (fractions, ``d <= t``) and mean error in km."""

    model_config = ConfigDict(extra="forbid")
    accuracy: dict[float, float] = Field(description="Threshold km -> fraction of images within it.")
    mean_km: float
    printed: list[str] = Field(description="The values as the file prints them (or would have).")
    hits: dict[float, int] | None = Field(default=None, description="Counts, when recomputed from rows.")
    distance: DistanceKind | None = Field(default=None, description="None when read from a file.")
    radius_km: float | None = None


_FOOTER_THRESHOLD = re.compile(r"\((\d+(?:\.\d+)?)\s*km\)")


def _authors_text(accuracy: Mapping[float, float], mean_km: float) -> list[str]:
    # GeoEstimation printed Python floats rounded to 6 (fractions) and 2 (km) decimals.
    return [str(round(v, 6)) for v in accuracy.values()] + [str(round(mean_km, 2))]


def read_geoestimation_results(path: str | Path) -> tuple[list[GeoEstimationRow], GeoEstimationFooter]:
    """Read a GeoEstimation per-image results CSV: rows up to the blank line, then the footer
    (a header naming the thresholds, e.g. ``street acc (1km)``, and one row of values)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{p}: no such GeoEstimation results file") from exc
    try:
        blank = next(i for i, line in enumerate(lines) if not line.strip())
    except StopIteration:
        raise ValueError(
            f"{p}: no blank line before a footer; is this a GeoEstimation results file?"
        ) from None
    body = list(csv.DictReader(lines[:blank]))
    rows: list[GeoEstimationRow] = []
    for lineno, rec in enumerate(body, start=2):
        try:
            rows.append(
                GeoEstimationRow(
                    img_id=rec["img_id"],
                    truth=LatLon(lat=float(rec["gt_lat"]), lon=float(rec["gt_long"])),
                    prediction=LatLon(lat=float(rec["predicted_lat"]), lon=float(rec["predicted_long"])),
                    great_circle_distance_km=float(rec["great_circle_distance"]),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{p}, line {lineno}: not a GeoEstimation result row ({exc})") from exc
    footer_lines = [line for line in lines[blank + 1 :] if line.strip()]
    if len(footer_lines) < 2:
        raise ValueError(f"{p}: expected a footer header and a values row after the blank line")
    header = next(csv.reader([footer_lines[0]]))
    values = next(csv.reader([footer_lines[1]]))
    if len(header) != len(values) or not header or "mean" not in header[-1]:
        raise ValueError(f"{p}: unexpected footer {footer_lines[0]!r} / {footer_lines[1]!r}")
    thresholds = []
    for name in header[:-1]:
        m = _FOOTER_THRESHOLD.search(name)
        if m is None:
            raise ValueError(f"{p}: footer column {name!r} names no '(… km)' threshold")
        thresholds.append(float(m.group(1)))
    footer = GeoEstimationFooter(
        accuracy={t: float(v) for t, v in zip(thresholds, values[:-1], strict=True)},
        mean_km=float(values[-1]),
        printed=[v.strip() for v in values],
    )
    return rows, footer


def footer_from_rows(
    rows: Sequence[GeoEstimationRow],
    distance: DistanceKind = "sphere",
    radius_km: float = EARTH_RADIUS_KM,
    thresholds_km: Sequence[float] = THRESHOLDS_KM,
) -> GeoEstimationFooter:
    """Recompute a footer from the rows' coordinates: accuracy at each threshold (``d <= t``) and
    mean error, printed the way the authors printed them. With the defaults (sphere, R = 6371 km)
    this reproduces every published footer exactly."""
    if not rows:
        raise ValueError("footer_from_rows needs at least one row, got none")
    d = distance_km([r.truth for r in rows], [r.prediction for r in rows], distance, radius_km)
    hits = {float(t): int(np.count_nonzero(d <= t)) for t in thresholds_km}
    acc = {t: h / len(rows) for t, h in hits.items()}
    mean = float(d.mean())
    return GeoEstimationFooter(
        accuracy=acc,
        mean_km=mean,
        printed=_authors_text(acc, mean),
        hits=hits,
        distance=distance,
        radius_km=radius_km,
    )


__all__ = [
    "ALWAYS_PARIS",
    "CALIBRATION_BINS",
    "CALIBRATION_KM",
    "COVERAGES",
    "GEOSCORE_MAX",
    "GEOSCORE_SCALE_KM",
    "METRICS",
    "WORLD_CITIES",
    "GeoEstimationFooter",
    "GeoEstimationRow",
    "MetricFn",
    "MetricsReport",
    "UnknownMetricError",
    "accuracy",
    "answers",
    "area_to_cover_km2",
    "baselines",
    "calibration",
    "cap_area_km2",
    "compute",
    "cost",
    "coverage_curve",
    "distance_km",
    "error_km",
    "footer_from_rows",
    "forced",
    "forced_answer",
    "geoscore",
    "geoscore_points",
    "get_metric",
    "globe_area_km2",
    "latency",
    "log_area_auc",
    "metric",
    "per_group",
    "ranked_circles",
    "read_geoestimation_results",
    "recall_at_areas",
    "reliability",
    "rva",
    "rva_budgets_km2",
    "valid_rate",
]
