"""The HTTP discipline every network tool shares (Nominatim, Overpass, SearXNG): :class:`ToolClient`.

* one request at a time per server, and a minimum interval from the end of one to the start of the
  next, shared by every client in the process (Nominatim's usage policy: at most 1 request/s);
* the configured User-Agent and a timeout on every request;
* retries with exponential backoff on connection errors, 429 (``Retry-After`` honoured) and 5xx;
* an on-disk JSON cache under ``cache_dir/tools/<service>/``, keyed by the sha256 of the server URL
  and the normalised request, written atomically. Cached answers cost no request and no wait.

A call never hangs: it takes at most about ``timeout_s * (retries + 1)`` plus the backoff. When the
service cannot answer (offline mode and no cached answer, network down, error status after every
retry) it raises :class:`~geosleuth.errors.ToolUnavailableError` with a one-line reason, which the
planner records as "tool could not run".
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from geosleuth.config import ToolSettings
from geosleuth.errors import ConfigError, ToolUnavailableError

MAX_BACKOFF_S = 8.0
_ERROR_BODY_BYTES = 4096  # enough of an error answer to quote the server's own message


class Failure(Exception):
    """One attempt failed; ``retryable`` says whether trying again may help. ``status`` is the HTTP
    status when the server answered, ``error`` the exception raised when no attempt succeeds, and
    ``body`` the start of an error answer."""

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
        error: type[ToolUnavailableError] = ToolUnavailableError,
        body: bytes = b"",
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.error = error
        self.body = body


class Throttle:
    """One request at a time to one server, each starting ``interval_s`` after the last one ended,
    so the server itself sees the spacing (Nominatim's policy also forbids parallel requests)."""

    def __init__(self) -> None:
        self._turn = threading.Lock()
        self._next = 0.0

    @contextmanager
    def slot(self, interval_s: float) -> Iterator[None]:
        with self._turn:
            while (delay := self._next - time.monotonic()) > 0:
                time.sleep(delay)
            try:
                yield
            finally:
                self._next = max(self._next, time.monotonic() + interval_s)

    def defer(self, seconds: float) -> None:
        # Lock-free on purpose: a request in flight holds the turn; a lost race only shortens a wait.
        self._next = max(self._next, time.monotonic() + seconds)


# One throttle per server for the whole process: the usage policy binds the application, not
# one client object, and a run may build several clients.
_THROTTLES: dict[tuple[str, str], Throttle] = {}
_THROTTLES_LOCK = threading.Lock()


def throttle_for(service: str, url: str) -> Throttle:
    with _THROTTLES_LOCK:
        return _THROTTLES.setdefault((service, url), Throttle())


def network_reason(exc: BaseException) -> str:
    """One short line for a failed request: what went wrong, not the library's whole traceback
    text (geopy's messages embed the full URL and the nested urllib3 error)."""
    text = " ".join(str(e) for e in (exc, exc.__cause__, exc.__context__) if e is not None)
    low = text.lower()
    if "resolve" in low or "name or service not known" in low or "nodename nor servname" in low:
        return "the host name cannot be resolved (no network here? set offline = true)"
    if "refused" in low:
        return "connection refused"
    if "timed out" in low or "timeout" in low:
        return "timed out"
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first[:160]}{'…' if len(first) > 160 else ''}"


@dataclass(frozen=True)
class Answer:
    """A successful HTTP answer."""

    body: bytes
    content_type: str


def send(
    url: str,
    *,
    user_agent: str,
    timeout_s: float,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    credentials: Mapping[str, str] | None = None,
    max_bytes: int | None = None,
) -> Answer:
    """One HTTP request (POST when ``data`` is given) with our User-Agent and timeout; every way it
    can fail becomes a :class:`Failure` (retryable: connection errors, 429 and 5xx). ``credentials``
    are headers not repeated when a redirect leads elsewhere (urllib copies the others)."""
    request = urllib.request.Request(url, data=data, headers={"User-Agent": user_agent, **(headers or {})})
    for name, value in (credentials or {}).items():
        request.add_unredirected_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read() if max_bytes is None else response.read(max_bytes + 1)
            content_type = response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        after = exc.headers.get("Retry-After") if exc.headers else None
        wait = float(after) if after and after.strip().replace(".", "", 1).isdigit() else None
        try:
            start = exc.read(_ERROR_BODY_BYTES)
        except (OSError, http.client.HTTPException):
            start = b""
        raise Failure(
            f"HTTP {exc.code}",
            retryable=exc.code == 429 or exc.code >= 500,
            retry_after=wait,
            status=exc.code,
            body=start,
        ) from exc
    except (OSError, http.client.HTTPException) as exc:  # refused, dropped, timed out, cut short
        raise Failure(network_reason(exc), retryable=True) from exc
    if max_bytes is not None and len(body) > max_bytes:
        raise Failure(f"the answer is larger than {max_bytes:,} bytes", retryable=False, status=200)
    return Answer(body=body, content_type=content_type)


class ToolClient:
    """The shared HTTP discipline; subclasses name their ``service`` and implement the requests.

    The server is ``tools.<service>_url`` (see :meth:`_service_url`). ``cache_dir=None`` (or
    ``tools.cache = false``) disables the cache; ``offline=True`` answers from the cache only.
    ``backoff_s`` is the first retry's wait (doubling after)."""

    service: ClassVar[str]

    def __init__(
        self,
        tools: ToolSettings | None = None,
        *,
        cache_dir: Path | None = None,
        offline: bool = False,
        backoff_s: float = 0.5,
    ) -> None:
        tools = tools or ToolSettings()
        url = self._service_url(tools)
        if backoff_s < 0:
            raise ValueError(f"backoff_s must be >= 0 seconds, got {backoff_s!r}")
        self.tools, self.url, self.offline, self.backoff_s = tools, url, offline, backoff_s
        self.cache_dir = (
            cache_dir / "tools" / self.service if (cache_dir is not None and tools.cache) else None
        )
        # Log under the service's own module (geosleuth.tools.osm, ...), as a reader filters them.
        self._log = logging.getLogger(type(self).__module__)
        self._throttle = throttle_for(self.service, self.url)
        self._setup()

    def _service_url(self, tools: ToolSettings) -> str:
        """The server's URL from the settings, validated, without a trailing slash. It appears in
        errors, logs and cache records, so it must hold no credentials."""
        url = getattr(tools, f"{self.service}_url")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"tools.{self.service}_url = {url!r} is not an http(s) URL like https://host/path"
            )
        return str(url).rstrip("/")

    def _setup(self) -> None:
        """Build the service's client object (no network)."""

    def _call(self, request: dict[str, Any], fetch: Callable[[], Any]) -> Any:
        """The JSON answer to ``request``: from the cache, else from ``fetch()`` (then cached)."""
        blob = json.dumps({"url": self.url, **request}, sort_keys=True, ensure_ascii=False)
        path = (
            None
            if self.cache_dir is None
            else self.cache_dir / f"{hashlib.sha256(blob.encode()).hexdigest()}.json"
        )
        if path is not None and path.is_file():
            try:
                answer = json.loads(path.read_text(encoding="utf-8"))["answer"]
                self._log.debug("%s: answered from the cache (%s)", self.service, path.name)
                return answer
            except (OSError, ValueError, KeyError):
                self._log.warning("%s: ignoring unreadable cache file %s", self.service, path)
        if self.offline:
            raise ToolUnavailableError(
                self.service,
                self.url,
                "offline mode is on and the answer is not cached (set offline = false)",
            )
        answer = self._fetch(fetch)
        if path is not None:
            self._store(path, {"url": self.url, "request": request, "answer": answer})
        return answer

    def _fetch(self, fetch: Callable[[], Any]) -> Any:
        attempts = self.tools.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                with self._throttle.slot(self.tools.min_interval_s):
                    return fetch()
            except Failure as exc:
                failure = exc
            if not failure.retryable or attempt == attempts:
                break
            delay = min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
            if failure.retry_after is not None:
                if failure.retry_after > self.tools.timeout_s:
                    failure.reason += f"; the server asks to wait {failure.retry_after:g} s, too long to wait"
                    break
                delay = max(delay, failure.retry_after)
                self._throttle.defer(failure.retry_after)
            self._log.info(
                "%s: %s; retry in %.2f s (%d/%d)", self.service, failure.reason, delay, attempt, attempts
            )
            time.sleep(delay)
        raise failure.error(
            self.service,
            self.url,
            f"{failure.reason} (after {attempt} attempt{'s' * (attempt > 1)})",
            failure.status,
            attempt,
        ) from failure

    def _store(self, path: Path, record: dict[str, Any]) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(record, f, ensure_ascii=False)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:  # a read-only cache must not cost the answer
            self._log.warning("%s: could not write cache file %s: %s", self.service, path, exc)
