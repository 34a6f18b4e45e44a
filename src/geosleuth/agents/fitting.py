"""Fitting the verifier on labelled photos, as a batch job over a table of truths.

Each photo runs through the configured pipeline; what the verifier saw for it (its
:class:`~geosleuth.agents.verifier.VerificationInputs`) is paired with the true position, and the
verifier's weights are fitted so that the candidate nearest the truth wins. The model and its fit
live in ``verifier.py``, one photo's run in ``pipeline.py``; this module is the loop between them,
used by ``geosleuth verifier fit`` and from Python alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geosleuth.errors import EmptySourceError, GeoSleuthError
from geosleuth.schemas import LatLon

if TYPE_CHECKING:
    from geosleuth.agents.pipeline import Locator
    from geosleuth.config import Settings

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ("image", "path", "file", "filename")


@dataclass
class FitResult:
    """What a fit did: its metrics (``Verifier.fit_metrics``: examples, hits, log-loss and top-1
    before and after), where the weights went, and the photos that could not be used."""

    metrics: dict[str, Any]
    weights: dict[str, float]
    weights_file: Path | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (photo, why)


def fit_verifier(
    table: Path,
    *,
    out: Path | None = None,
    images: Path | None = None,
    hit_km: float = 25.0,
    l2: float = 0.01,
    locator: Locator | None = None,
    settings: Settings | None = None,
    on_skip: Callable[[str, GeoSleuthError], None] | None = None,
) -> FitResult:
    """Fit the verifier of ``locator`` (else one made from ``settings``) on the photos of ``table``
    (CSV/Parquet with an image path and lat/lon columns; paths relative to ``images``, else to the
    table's folder) and write the weights to ``out`` (use them with ``verifier.weights_file``).

    A photo that cannot be used (missing, not an image) is skipped, reported to ``on_skip``; when
    none gives candidates to fit on, :class:`EmptySourceError`. The table is read before the
    pipeline is built, so a bad table fails at once."""
    from geosleuth.retrieval.tables import find_column, latlon_columns, read_table

    columns = read_table(table)
    paths = columns[find_column(columns, IMAGE_COLUMNS, table, "image path")]
    coords = latlon_columns(columns, table)
    if locator is None:
        from geosleuth.agents.pipeline import Locator

        locator = Locator(settings)
    examples = []
    skipped: list[tuple[str, str]] = []
    for path, (lat, lon) in zip(paths, coords, strict=True):
        src = str((images or table.parent) / path)
        try:
            _, state = locator.run(src)
        except GeoSleuthError as exc:
            skipped.append((src, str(exc)))
            if on_skip is not None:
                on_skip(src, exc)
            continue
        if state.inputs is not None:
            examples.append((state.inputs, LatLon(lat=float(lat), lon=float(lon))))
    if not examples:
        raise EmptySourceError(f"no photo of {table} gave candidates to fit on ({len(skipped)} failed)")
    verifier = locator.deps.verifier
    weights = verifier.fit(examples, hit_km=hit_km, l2=l2)
    written = verifier.save_weights(out) if out is not None else None
    return FitResult(
        metrics=dict(verifier.fit_metrics), weights=weights, weights_file=written, skipped=skipped
    )
