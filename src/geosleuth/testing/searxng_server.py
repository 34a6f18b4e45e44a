"""A real, local HTTP server that answers like a SearXNG instance's search API, from canned results.

It listens on 127.0.0.1 (a free port), so :class:`~geosleuth.tools.searxng.SearxngClient` talks to
it with its real HTTP stack, timeouts and retries::

    results = [CannedResult("Boulangerie Dupont, Lyon", "https://example.org/dupont", "Pain au levain...")]
    with FakeSearxngServer(results=results) as srv:
        tools = ToolSettings(searxng_url=srv.url)
        srv.fail_next(429, retry_after=0.2)
        ...
        assert srv.searches[-1].params["format"] == "json"

``GET`` or ``POST`` ``/search`` (or ``/``) with ``q``, ``format`` (``json``, else the web page),
``language``, ``pageno``. A result matches when one of the query's words is a word of its title,
content or URL; more matching words rank first. The JSON shape is SearXNG's
(``searx/webutils.py:get_json_response``): ``query``, ``number_of_results``, ``results`` (``url``,
``title``, ``content``, ``engine``, ``engines``, ``parsed_url``, ``score``, ``publishedDate``...),
``answers``, ``corrections``, ``infoboxes``, ``suggestions``, ``unresponsive_engines``. As SearXNG
does, it answers 403 when ``json`` is not among its ``formats``, and 400 ``{"error": ...}`` for a
missing query or an invalid language.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlparse

from geosleuth.testing.http import QuietHandler, RecordedRequest, ScriptedServer

logger = logging.getLogger(__name__)

_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-zA-Z]{2})?$")
FORBIDDEN_PAGE = (  # what Flask's abort(403) sends
    "<!doctype html>\n<html lang=en>\n<title>403 Forbidden</title>\n<h1>Forbidden</h1>\n"
    "<p>You don&#39;t have the permission to access the requested resource. It is either "
    "read-protected or not readable by the server.</p>\n"
)
WEB_PAGE = (
    '<!DOCTYPE html>\n<html lang="en"><head><title>SearXNG</title></head>\n'
    '<body><form id="search" method="GET" action="/search"><input name="q"></form></body></html>\n'
)


@dataclass(frozen=True)
class CannedResult:
    """A page the fake instance knows. ``published`` is ISO 8601, as SearXNG's ``publishedDate``;
    ``extra`` is merged into the result's JSON last (to send odd or malformed fields)."""

    title: str
    url: str
    content: str = ""
    engines: tuple[str, ...] = ("duckduckgo",)
    published: str | None = None
    score: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def words(self) -> set[str]:
        return set(re.findall(r"\w+", f"{self.title} {self.content} {self.url}".casefold()))

    def as_json(self, position: int) -> dict[str, Any]:
        parsed = urlparse(self.url) if isinstance(self.url, str) else None
        out: dict[str, Any] = {
            "url": self.url,
            "title": self.title,
            "content": self.content,
            "engine": self.engines[0] if self.engines else "",
            "template": "default.html",
            "parsed_url": list(parsed) if parsed is not None else None,
            "img_src": "",
            "thumbnail": "",
            "priority": "",
            "engines": list(self.engines),
            "positions": [position],
            "score": self.score,
            "category": "general",
            "publishedDate": self.published,
            "pubdate": "",
        }
        return {**out, **self.extra}


@dataclass(frozen=True)
class _Failure:
    kind: Literal["status", "drop", "html"]
    status: int = 200
    retry_after: float | None = None


class FakeSearxngServer(ScriptedServer):
    """A SearXNG search API on 127.0.0.1 from canned results. Use it as a context manager.

    ``formats``: the output formats its settings.yml enables (without ``json``, every JSON request
    gets 403). ``unresponsive``: ``(engine, message)`` pairs reported as failed in every answer.
    ``latency_s``: a wait before each answer."""

    def __init__(
        self,
        *,
        results: Iterable[CannedResult | tuple[Any, ...]] = (),
        formats: Sequence[str] = ("html", "json"),
        unresponsive: Iterable[tuple[str, str]] = (),
        latency_s: float = 0.0,
        port: int = 0,
    ) -> None:
        super().__init__(port)
        if latency_s < 0:
            raise ValueError(f"latency_s must be >= 0 seconds, got {latency_s!r}")
        self.results = [r if isinstance(r, CannedResult) else CannedResult(*r) for r in results]
        self.formats = list(formats)
        self.unresponsive = [list(pair) for pair in unresponsive]
        self.latency_s = latency_s

    # --- scripting and inspection -------------------------------------------------------------

    def fail_next(
        self,
        status: int | Literal["drop", "html"] = 500,
        *,
        times: int = 1,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``times`` requests with ``status`` (``Retry-After`` added when given; 403
        is SearXNG's "json format disabled" page), close the connection without an answer
        (``"drop"``), or send a 200 web page instead of JSON (``"html"``)."""
        if status in ("drop", "html"):
            failure = _Failure(kind=status)
        elif isinstance(status, int) and 400 <= status <= 599:
            failure = _Failure(kind="status", status=status, retry_after=retry_after)
        else:
            raise ValueError(
                f"status must be an HTTP error status (400-599), 'drop' or 'html', got {status!r}"
            )
        self._script([failure] * times)

    @property
    def searches(self) -> list[RecordedRequest]:
        """The search requests received so far."""
        return [r for r in self.requests if r.path in ("/", "/search")]

    # --- answers ------------------------------------------------------------------------------

    def search(self, params: dict[str, str]) -> tuple[int, Any]:
        """(status, payload) for one search: JSON, or a web page (str) when format is not json."""
        fmt = params.get("format", "html")
        if fmt not in self.formats:
            return 403, FORBIDDEN_PAGE
        if fmt != "json":
            return 200, WEB_PAGE
        q = params.get("q", "")
        if not q:
            return 400, {"error": "No query"}
        language = params.get("language", "all")
        if not (_LANGUAGE.match(language) or language == "auto"):
            return 400, {"error": f'Invalid value "{language}" for parameter language'}
        words = set(re.findall(r"\w+", q.casefold()))
        ranked = sorted(
            ((len(words & r.words()), i, r) for i, r in enumerate(self.results)), key=lambda t: (-t[0], t[1])
        )
        hits = [r for matched, _, r in ranked if matched]
        return 200, {
            "query": q,
            "number_of_results": 0,
            "results": [r.as_json(i + 1) for i, r in enumerate(hits)],
            "answers": [],
            "corrections": [],
            "infoboxes": [],
            "suggestions": [],
            "unresponsive_engines": list(self.unresponsive),
        }


class _Handler(QuietHandler):
    json_ascii = True  # ASCII, as SearXNG sends

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        owner = self.server.owner
        path, params, body = self.request_parts()
        if body:  # SearXNG reads POST parameters from the form body
            params.update(dict(parse_qsl(body, keep_blank_values=True)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        failure = owner._record(RecordedRequest(self.command, path, params, headers, time.monotonic(), body))
        time.sleep(owner.latency_s)
        if failure is not None:
            self._fail(failure)
            return
        if path not in ("/", "/search"):
            self.send_payload(404, "<!doctype html>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n")
            return
        try:
            status, payload = owner.search(params)
        except Exception as exc:  # a bug in the fake must fail the request, not the thread
            logger.exception("fake SearXNG server: answering %s failed", path)
            status, payload = 500, f"<p>the fake server raised {exc!r}</p>"
        self.send_payload(status, payload)

    def _fail(self, failure: _Failure) -> None:
        if failure.kind == "drop":
            self.close_connection = True
            return
        if failure.kind == "html":
            self.send_payload(200, WEB_PAGE)
            return
        extra = {} if failure.retry_after is None else {"Retry-After": f"{failure.retry_after:g}"}
        if failure.status == 403:
            self.send_payload(403, FORBIDDEN_PAGE, extra)
        elif failure.status == 429:  # the limiter's answer (searx/botdetection)
            self.send_payload(429, "Too Many Requests", extra)
        else:
            self.send_payload(failure.status, f"<p>scripted failure {failure.status}</p>", extra)


FakeSearxngServer.handler = _Handler


__all__ = ["CannedResult", "FakeSearxngServer", "RecordedRequest"]
