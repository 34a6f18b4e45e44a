"""The service's Prometheus metrics, in the text exposition format (written by hand: a few
counters, one histogram, gauges read when scraped)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

# Request latency buckets (seconds): a health check to a slow VLM answer.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}" if inner else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class Metrics:
    """Counts requests (by method, route and status), their latencies (by route), photos located
    (by outcome) and stage failures (by stage); ``gauges`` are read at each scrape."""

    gauges: dict[str, tuple[str, Callable[[], float]]] = field(default_factory=dict)
    _requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    _latency: dict[str, list[float]] = field(default_factory=dict)  # route -> bucket counts + [sum, count]
    _photos: Counter[str] = field(default_factory=Counter)
    _stage_failures: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(method, route, str(status))] += 1
            row = self._latency.setdefault(route, [0.0] * (len(BUCKETS) + 2))
            for i, edge in enumerate(BUCKETS):
                if seconds <= edge:
                    row[i] += 1
            row[-2] += seconds
            row[-1] += 1

    def photo(self, outcome: str, failed_stages: list[str]) -> None:
        with self._lock:
            self._photos[outcome] += 1
            for stage in failed_stages:
                self._stage_failures[stage] += 1

    def render(self) -> str:
        lines: list[str] = []

        def head(name: str, kind: str, text: str) -> None:
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")

        with self._lock:
            head("geosleuth_http_requests_total", "counter", "HTTP requests by method, route and status.")
            for (method, route, status), n in sorted(self._requests.items()):
                lines.append(
                    f"geosleuth_http_requests_total{_labels(method=method, route=route, status=status)} {n}"
                )
            head("geosleuth_http_request_seconds", "histogram", "HTTP request latency by route.")
            for route, row in sorted(self._latency.items()):
                for edge, hits in zip(BUCKETS, row, strict=False):
                    lines.append(
                        f"geosleuth_http_request_seconds_bucket{_labels(route=route, le=f'{edge:g}')} {hits:g}"
                    )
                lines.append(
                    f"geosleuth_http_request_seconds_bucket{_labels(route=route, le='+Inf')} {row[-1]:g}"
                )
                lines.append(f"geosleuth_http_request_seconds_sum{_labels(route=route)} {row[-2]:.6f}")
                lines.append(f"geosleuth_http_request_seconds_count{_labels(route=route)} {row[-1]:g}")
            head("geosleuth_photos_total", "counter", "Photos processed, by outcome.")
            for outcome, n in sorted(self._photos.items()):
                lines.append(f"geosleuth_photos_total{_labels(outcome=outcome)} {n}")
            head("geosleuth_stage_failures_total", "counter", "Pipeline stages that failed, by stage.")
            for stage, n in sorted(self._stage_failures.items()):
                lines.append(f"geosleuth_stage_failures_total{_labels(stage=stage)} {n}")
        for name, (text, read) in sorted(self.gauges.items()):
            head(name, "gauge", text)
            lines.append(f"{name} {read():g}")
        return "\n".join(lines) + "\n"


__all__ = ["Metrics"]
