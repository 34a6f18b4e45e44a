"""Run a dataset through the pipeline: bounded concurrency, crash-safe records, resume.

* Each sample's record is keyed by a hash of (dataset, sample id, the pipeline's fingerprint: the
  settings that change answers, model ids and weight checksums, sampling parameters, prompt
  template hashes, the index's manifest). A rerun with the same key skips the sample.
* ``records.jsonl`` is append-only: a record is written whole (one ``write`` of one line), flushed
  and fsync'ed only when the sample is final. On start a torn last line (a kill mid-write) is cut
  off, so a run killed at any moment resumes and neither loses nor duplicates a record.
* Errors are records too (status ``error``, with the reason): a bad image never stops a run.
* ``provenance.json`` in the run folder: git commit, package versions, the settings, prompt hashes,
  model ids, the dataset's checksum and description.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Self

from geosleuth.agents.pipeline import Locator
from geosleuth.errors import GeoSleuthError, ImageInputError
from geosleuth.eval.datasets import Dataset
from geosleuth.eval.records import EvalRecord, Sample, scene_of
from geosleuth.gazetteer import Gazetteer
from geosleuth.geo import geodesic_km
from geosleuth.schemas import Prediction

log = logging.getLogger(__name__)

RECORDS = "records.jsonl"
PREDICTIONS = "predictions.jsonl"
PROVENANCE = "provenance.json"
_PACKAGES = ("geosleuth", "torch", "transformers", "faiss-cpu", "openai", "langgraph", "pydantic", "numpy")


class JsonLines:
    """An append-only JSON Lines file: whole lines with fsync; a torn last line is cut on open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.repaired = self._repair()
        self._fh = path.open("ab")

    def _repair(self) -> int:
        """Cut a torn last line (a kill mid-write): returns the bytes removed."""
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
            return 0
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1
        with self.path.open("r+b") as fh:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        log.warning(
            "%s: removed a torn last line (%d bytes) left by an interrupted run", self.path, len(data) - keep
        )
        return len(data) - keep

    def append_text(self, text: str) -> None:
        line = (text + "\n").encode("utf-8")
        with self._lock:
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        with self._lock:
            self._fh.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordStore(JsonLines):
    """``records.jsonl``: one :class:`EvalRecord` a line; the keys already done."""

    def records(self) -> list[EvalRecord]:
        out = []
        with self.path.open("rb") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        out.append(EvalRecord.model_validate_json(line))
                    except ValueError as exc:
                        raise GeoSleuthError(
                            f"{self.path}, line {n}: not a geosleuth record ({exc})"
                        ) from exc
        return out

    def keys(self) -> set[str]:
        return {r.key for r in self.records()}

    def append(self, record: EvalRecord) -> None:
        self.append_text(record.model_dump_json())


class PredictionStore(JsonLines):
    """``predictions.jsonl``: each sample's whole :class:`Prediction` (without its trace), keyed
    like its record, for per-image reports. Written before the record, so every record has one;
    a sample redone after a kill appears twice, and the last one counts."""

    def append(self, key: str, prediction: Prediction) -> None:
        self.append_text(
            json.dumps({"key": key, "prediction": prediction.model_dump(mode="json", exclude={"trace"})})
        )

    def latest(self) -> dict[str, Prediction]:
        out: dict[str, Prediction] = {}
        with self.path.open("rb") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    out[str(row["key"])] = Prediction.model_validate(row["prediction"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise GeoSleuthError(
                        f"{self.path}, line {n}: not a geosleuth prediction ({exc})"
                    ) from exc
        return out


def fingerprint(locator: Locator) -> str:
    """What makes answers differ: settings (without endpoints, paths, secrets and throughput
    knobs), model ids and weight checksums, prompt template hashes, the index's manifest."""
    s = locator.settings
    data = s.model_dump(mode="json", exclude={"cache_dir"})
    for key in ("base_url", "api_key", "timeout_s", "max_retries", "max_concurrency"):
        data["vlm"].pop(key, None)
    data.pop("tools", None)
    d = locator.deps
    parts: dict[str, Any] = {"settings": data}
    if d.retriever is not None:
        parts["image_encoder"] = d.retriever.encoder.fingerprint
        if d.retriever.index is not None:
            parts["index"] = hashlib.sha256(
                json.dumps(d.retriever.index.manifest, sort_keys=True, default=str).encode()
            ).hexdigest()
    if d.vlm is not None:
        parts["vlm"] = f"{d.vlm.name}:{d.vlm.model}"
        parts["prompts"] = locator.prompt_hash
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def record_key(dataset: str, sample_id: str, pipeline: str) -> str:
    return hashlib.sha256(f"{dataset}\0{sample_id}\0{pipeline}".encode()).hexdigest()[:32]


def to_record(
    key: str, dataset: str, sample: Sample, pred: Prediction, seconds: float, gazetteer: Gazetteer | None
) -> EvalRecord:
    place = gazetteer.reverse_one(sample.truth) if gazetteer is not None else None
    vlm = pred.vlm
    return EvalRecord(
        key=key,
        sample_id=sample.id,
        dataset=dataset,
        truth=sample.truth,
        prediction=pred.best.point if pred.best is not None else None,
        status=pred.status,
        confidence=pred.confidence,
        confidence_level=pred.confidence_level.value,
        basis=pred.basis,
        candidates=[
            {
                "lat": c.point.lat,
                "lon": c.point.lon,
                "p": c.probability,
                "source": c.source.value,
                "radius_km": c.radius_km,
            }
            for c in pred.candidates[:10]
        ],
        regions=pred.regions,
        stages={st.name: st.status.value for st in pred.stages},
        timings=pred.timings,
        vlm_calls=len(vlm.calls) if vlm else 0,
        vlm_samples=vlm.total_samples if vlm else 0,
        vlm_usable=vlm.usable_samples if vlm else 0,
        tokens=vlm.usage.total if vlm else 0,
        tool_calls=pred.usage.tool_calls,
        seconds=round(seconds, 4),
        truth_country=place.country_code if place else None,
        truth_continent=place.continent_code if place else None,
        truth_scene=scene_of(sample.meta),
    )


def error_record(key: str, dataset: str, sample: Sample, exc: BaseException, seconds: float) -> EvalRecord:
    return EvalRecord(
        key=key,
        sample_id=sample.id,
        dataset=dataset,
        truth=sample.truth,
        status="error",
        seconds=round(seconds, 4),
        error=str(exc) if isinstance(exc, GeoSleuthError) else f"{type(exc).__name__}: {exc}",
        error_type=type(exc).__name__,
        truth_scene=scene_of(sample.meta),
    )


@dataclass
class RunSummary:
    folder: Path
    total: int
    skipped_done: int
    ran: int
    errors: int
    seconds: float
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


def provenance(locator: Locator, dataset: Dataset, pipeline: str) -> dict[str, Any]:
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
                cwd=Path(__file__).resolve().parent,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    settings = locator.settings.model_dump(mode="json")
    settings["vlm"].pop("api_key", None)
    return {
        "created_at": datetime.now(UTC).isoformat(),
        "git_commit": commit,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "packages": versions,
        "pipeline_fingerprint": pipeline,
        "models": locator.model_ids(),
        "prompt_hash": locator.prompt_hash,
        "settings": settings,
        "dataset": {"name": dataset.name, "checksum": dataset.checksum(), **dataset.describe()},
    }


def run(
    dataset: Dataset,
    locator: Locator,
    folder: str | Path,
    *,
    concurrency: int = 4,
    on_record: Callable[[EvalRecord], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> RunSummary:
    """Evaluate every sample of ``dataset`` not yet in ``folder``'s records (see the module docstring).

    ``stop`` (set by a Ctrl-C handler) ends the run cleanly: no new sample starts, the ones in
    flight finish and are written. ``on_start(already_done, total)`` is called before the first
    sample; ``on_record`` after each record is written."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pipeline = fingerprint(locator)
    prov_path = folder / PROVENANCE
    prov = provenance(locator, dataset, pipeline)
    if prov_path.exists():
        old = json.loads(prov_path.read_text())
        if (
            old.get("pipeline_fingerprint") != pipeline
            or old.get("dataset", {}).get("checksum") != prov["dataset"]["checksum"]
        ):
            log.warning(
                "%s holds records of another configuration or dataset; they are kept, and new "
                "records get their own keys",
                folder,
            )
    _write_json_atomic(prov_path, prov)
    store = RecordStore(folder / RECORDS)
    predictions = PredictionStore(folder / PREDICTIONS)
    done = store.keys()
    samples = list(dataset)
    todo = [(s, record_key(dataset.name, s.id, pipeline)) for s in samples]
    todo = [(s, k) for s, k in todo if k not in done]
    summary = RunSummary(folder, len(samples), len(samples) - len(todo), 0, 0, 0.0)
    if store.repaired:
        summary.notes.append(f"cut a torn last line ({store.repaired} bytes) left by an interrupted run")
    gaz = locator.deps.gazetteer
    stop = stop or threading.Event()
    if on_start is not None:
        on_start(summary.skipped_done, summary.total)

    def one(sample: Sample, key: str) -> tuple[EvalRecord, Prediction | None]:
        start = time.perf_counter()
        try:
            pred = locator.locate(sample.load(), name=sample.name or sample.id)
            return to_record(key, dataset.name, sample, pred, time.perf_counter() - start, gaz), pred
        except (ImageInputError, GeoSleuthError, OSError, ValueError, RuntimeError) as exc:
            return error_record(key, dataset.name, sample, exc, time.perf_counter() - start), None

    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            pending: set[Future[tuple[EvalRecord, Prediction | None]]] = set()
            queue: Iterator[tuple[Sample, str]] = iter(todo)
            while True:
                while not stop.is_set() and len(pending) < concurrency:
                    item = next(queue, None)
                    if item is None:
                        break
                    pending.add(pool.submit(one, *item))
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    rec, pred = fut.result()
                    if pred is not None:
                        predictions.append(rec.key, pred)
                    store.append(rec)
                    summary.ran += 1
                    summary.errors += rec.status == "error"
                    if on_record is not None:
                        on_record(rec)
    finally:
        store.close()
        predictions.close()
    summary.interrupted = stop.is_set() and summary.skipped_done + summary.ran < summary.total
    summary.seconds = round(time.perf_counter() - t0, 3)
    return summary


def error_km(record: EvalRecord) -> float | None:
    if record.prediction is None:
        return None
    p, t = record.prediction, record.truth
    return float(geodesic_km(t.lat, t.lon, p.lat, p.lon))


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


__all__ = ["PROVENANCE", "RECORDS", "RecordStore", "RunSummary", "fingerprint", "record_key", "run"]
