"""The plumbing the test servers share: a threaded HTTP server on 127.0.0.1 that logs instead of
printing, answers without Nagle delays, and starts and stops as a context manager; and, for the
fake network services, a record of every request and a queue of scripted failures."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, urlsplit

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A loopback port nothing listens on now (for a server to start on, or "connection refused")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default listen backlog (5) drops bursts of concurrent connects
    owner: Any

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; a client hanging up mid-test is not news.
        logger.debug(
            "%s: error handling a request from %s", type(self.owner).__name__, client_address, exc_info=True
        )


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers; every reply sets Content-Length
    server: QuietServer

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(f"{type(self.server.owner).__name__}: " + format, *args)

    json_ascii: ClassVar[bool] = False  # escape non-ASCII in JSON answers, as some services do

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle's algorithm holds the body
        # back until the client's delayed ACK (~40 ms), which real servers do not do.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send_payload(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        """Answer ``status`` with ``payload``: a string as an HTML page, anything else as JSON."""
        if isinstance(payload, str):
            data, ctype = payload.encode(), "text/html; charset=utf-8"
        else:
            data, ctype = json.dumps(payload, ensure_ascii=self.json_ascii).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def request_parts(self) -> tuple[str, dict[str, str], str]:
        """The request's path (no trailing slash), query parameters and body text."""
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        return parts.path.rstrip("/") or "/", params, body


class LocalServer:
    """Start/stop, ``with`` support and the URL, for a server whose requests ``handler`` answers.
    Subclasses set ``handler`` and call ``super().__init__(port)``."""

    handler: ClassVar[type[QuietHandler]]

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self._httpd: QuietServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        httpd = QuietServer(("127.0.0.1", self.port), self.handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=type(self).__name__, daemon=True
        )
        self._thread.start()
        logger.debug("%s listening on %s", type(self).__name__, self.url)
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self._httpd is None:
            raise RuntimeError(
                f"{type(self).__name__} is not running; call start() or use it in a `with` block"
            )
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it: ``params`` merges the query string and a form body."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    time: float = 0.0  # time.monotonic() on arrival
    body: str = field(default="", repr=False)


class ScriptedServer(LocalServer):
    """A :class:`LocalServer` that records every request and answers the next ones with scripted
    failures first. Subclasses define the failures' type and how their handler plays them."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self._lock = threading.Lock()
        self._failures: deque[Any] = deque()
        self._requests: list[RecordedRequest] = []

    def _script(self, failures: Iterable[Any]) -> None:
        with self._lock:
            self._failures.extend(failures)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (a copy), in arrival order."""
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        """Forget recorded requests and scripted failures (canned data is kept)."""
        with self._lock:
            self._requests.clear()
            self._failures.clear()

    def _record(self, request: RecordedRequest) -> Any:
        """Record ``request``; the scripted failure to answer it with, or None."""
        with self._lock:
            self._requests.append(request)
            return self._failures.popleft() if self._failures else None
