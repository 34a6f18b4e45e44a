"""The benchmark harness's vocabulary: what a dataset yields (:class:`Sample`) and what a run writes
per sample (:class:`EvalRecord`, one JSON line each). Metrics read records; reports read metrics.

A record holds everything needed to recompute every metric without rerunning the pipeline: the
truth, the answer (or why there is none), the ranked regions for Recall-vs-Area, the calls, tokens
and seconds it cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from geosleuth.schemas import ConfidenceRegion, LatLon

DistanceKind = Literal["geodesic", "sphere"]
THRESHOLDS_KM: tuple[float, ...] = (1.0, 25.0, 200.0, 750.0, 2500.0)
THRESHOLD_NAMES: dict[float, str] = {
    1.0: "street",
    25.0: "city",
    200.0: "region",
    750.0: "country",
    2500.0: "continent",
}


@dataclass(frozen=True)
class Sample:
    """One benchmark item. ``load`` gives the bytes the pipeline sees (for EXIF sets: with the GPS
    removed); ``id`` is stable across runs and machines (the dataset's own id, or its relative path)."""

    id: str
    truth: LatLon
    load: Callable[[], bytes]
    name: str = ""  # what to call the image in records and errors (its path)
    meta: dict[str, Any] = field(default_factory=dict)


class EvalRecord(BaseModel):
    """One sample's outcome, appended to ``records.jsonl`` once it is final."""

    model_config = ConfigDict(extra="forbid")
    key: str = Field(description="Hash of (dataset, sample id, pipeline config, models, prompts, index).")
    sample_id: str
    dataset: str
    truth: LatLon
    prediction: LatLon | None = Field(default=None, description="The best answer; None when there is none.")
    status: Literal["located", "insufficient_evidence", "error"]
    confidence: float = 0.0
    confidence_level: str = "none"
    basis: str | None = None
    candidates: list[dict[str, Any]] = Field(default_factory=list, description="Ranked: point, p, source.")
    regions: list[ConfidenceRegion] = Field(default_factory=list)
    stages: dict[str, str] = Field(default_factory=dict, description="Stage name -> status.")
    timings: dict[str, float] = Field(default_factory=dict)
    vlm_calls: int = 0
    vlm_samples: int = 0
    vlm_usable: int = 0
    tokens: int = 0
    tool_calls: int = 0
    seconds: float = 0.0
    error: str | None = None
    error_type: str | None = None
    truth_country: str | None = None
    truth_continent: str | None = None
    truth_scene: str | None = Field(
        default=None,
        description="The photo's scene type from the dataset's metadata (indoor, natural or urban: the "
        "argmax of Prob_indoor/Prob_natural/Prob_urban); None when the dataset has none. Records "
        "written before this field read as None.",
    )


#: Scene type -> the metadata column (GeoEstimation's places365 tables) holding its probability.
SCENE_COLUMNS: dict[str, str] = {"indoor": "Prob_indoor", "natural": "Prob_natural", "urban": "Prob_urban"}


def scene_of(meta: dict[str, Any]) -> str | None:
    """The scene type whose probability is highest in a sample's metadata (ties: the first of
    indoor, natural, urban); None unless all three probabilities are there and are numbers."""
    probs: dict[str, float] = {}
    for scene, column in SCENE_COLUMNS.items():
        try:
            probs[scene] = float(meta[column])
        except (KeyError, TypeError, ValueError):
            return None
    if not all(p == p for p in probs.values()):  # NaN
        return None
    return max(probs, key=lambda k: probs[k])


__all__ = [
    "SCENE_COLUMNS",
    "THRESHOLDS_KM",
    "THRESHOLD_NAMES",
    "DistanceKind",
    "EvalRecord",
    "Sample",
    "scene_of",
]
