"""A real, headless, offline Chromium for tests of HTML that geosleuth writes (the reports).

Playwright (the ``dev`` extra) drives the system Chromium (Debian's ``chromium`` package) through
``executable_path``; ``playwright install``, which downloads its own browsers, is never needed.

A page opened here cannot reach anything but its own file: every request goes through one route
that lets through only that file (and ``data:``/``blob:`` URLs), and aborts and records the rest,
sibling files included, since a self-contained report must not need them. A test that needs the
network's answers gives them itself: ``serve`` maps URL patterns to :class:`Served` responses (a
local copy of a library, a generated map tile), which the page gets instead of the network. WebSockets are closed and
recorded the same way, service workers are blocked, and host names do not resolve, so even what no
route sees (DNS prefetch, preconnect) goes nowhere. What the page did is recorded where it happens,
on the :class:`PageReport`: console messages, uncaught exceptions, dialogs (an ``alert()`` means a
script ran: it is recorded and dismissed), attempted requests, and Content-Security-Policy
violations (an init script, which CSP does not govern, collects ``securitypolicyviolation``
events)::

    with Chromium() as chromium, chromium.open(Path("report.html")) as page:
        assert not page.console_errors and not page.blocked_requests and not page.dialogs
        page.screenshot(tmp_path / "report.png")

One :class:`Chromium` serves many pages (launching it is the slow part); each page gets its own
browser context, so pages share no cookies, storage or routes.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import urlsplit
from urllib.request import url2pathname

from geosleuth.errors import EngineUnavailableError, InputNotFoundError, MissingDependencyError

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright, Route, WebSocketRoute
    from playwright.sync_api import ConsoleMessage as PlaywrightConsoleMessage
    from playwright.sync_api import Dialog as PlaywrightDialog
    from playwright.sync_api import Error as PlaywrightError

CHROMIUM_ENV = "GEOSLEUTH_CHROMIUM"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
INSTALL_CHROMIUM = "apt-get install chromium"
INSTALL_PLAYWRIGHT = "pip install playwright"
# Offline, a local page loads in well under a second; one that hangs should fail a test fast, not in
# Playwright's default 30 s.
TIMEOUT_MS = 10_000

# Run before any of the page's own scripts and outside its CSP. The list is read-only for the page.
_RECORD_CSP = """(() => {
  const seen = [];
  Object.defineProperty(window, "__geosleuthCspViolations", { value: seen });
  window.addEventListener("securitypolicyviolation", (e) => seen.push({
    directive: e.effectiveDirective, blocked_uri: e.blockedURI, sample: e.sample,
    source: e.sourceFile, line: e.lineNumber,
  }), true);
})();"""
_NEXT_FRAMES = "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"
_BOXES = """(selector) => [...document.querySelectorAll(selector)].map((el) => {
  const r = el.getBoundingClientRect();
  return { x: r.x + window.scrollX, y: r.y + window.scrollY, width: r.width, height: r.height };
})"""


def find_chromium() -> str | None:
    """The Chromium to drive: ``$GEOSLEUTH_CHROMIUM`` when set, else Debian's ``/usr/bin/chromium``,
    else ``chromium``/``chromium-browser`` on PATH; None when there is none (or when
    ``$GEOSLEUTH_CHROMIUM`` names no executable: a wrong setting is not silently replaced)."""
    if os.environ.get(CHROMIUM_ENV):
        chosen = os.environ[CHROMIUM_ENV]
        return chosen if os.path.isfile(chosen) and os.access(chosen, os.X_OK) else None
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def unavailable_reason() -> str | None:
    """Why a real browser cannot run here (a skip reason naming the fix), or None when it can."""
    missing = []
    if os.environ.get(CHROMIUM_ENV) and find_chromium() is None:
        missing.append(f"${CHROMIUM_ENV}={os.environ[CHROMIUM_ENV]} is not an executable file")
    elif find_chromium() is None:
        missing.append(f"Chromium is not installed ({INSTALL_CHROMIUM}, or set ${CHROMIUM_ENV})")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append(f"Playwright is not installed ({INSTALL_PLAYWRIGHT}, in the dev extra)")
    return "; ".join(missing) or None


@dataclass(frozen=True)
class ConsoleMessage:
    type: str  # "log", "info", "warning", "error", "debug", ...
    text: str
    url: str
    line: int


@dataclass(frozen=True)
class PageError:
    """An exception the page's scripts raised and did not catch."""

    name: str
    message: str


@dataclass(frozen=True)
class Dialog:
    type: str  # "alert", "confirm", "prompt" or "beforeunload"
    message: str


@dataclass(frozen=True)
class Request:
    """A request the page attempted; ``allowed`` is False for the ones that were aborted, ``served``
    True for the ones a :class:`Served` response answered."""

    url: str
    resource_type: str  # "document", "image", "fetch", "stylesheet", "websocket", ...
    allowed: bool
    served: bool = False


@dataclass(frozen=True)
class Served:
    """What the page gets, instead of the network, for the URLs of one ``serve`` pattern. It allows
    any origin (``Access-Control-Allow-Origin: *``), so ``crossorigin`` and Subresource Integrity
    checks run on it as they would on a CDN's copy."""

    body: bytes
    content_type: str
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CspViolation:
    directive: str  # the effective directive, e.g. "script-src-elem" or "script-src-attr"
    blocked_uri: str  # "inline", "eval" or a URL
    sample: str
    source: str
    line: int


@dataclass(frozen=True)
class Box:
    """An element's border box in page coordinates (CSS pixels, scrolling included)."""

    x: float
    y: float
    width: float
    height: float

    def inside(self, other: Box, *, tolerance: float = 0.5) -> bool:
        """Whether this box lies within ``other`` (give or take ``tolerance`` pixels)."""
        return (
            self.x >= other.x - tolerance
            and self.y >= other.y - tolerance
            and self.x + self.width <= other.x + other.width + tolerance
            and self.y + self.height <= other.y + other.height + tolerance
        )


@dataclass
class PageReport:
    """One opened page and everything it did. The lists fill as events arrive; ``page`` is the
    Playwright page for anything else."""

    page: Page
    url: str
    console: list[ConsoleMessage] = field(default_factory=list)
    page_errors: list[PageError] = field(default_factory=list)
    dialogs: list[Dialog] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    @property
    def console_errors(self) -> list[ConsoleMessage]:
        return [m for m in self.console if m.type == "error"]

    @property
    def blocked_requests(self) -> list[Request]:
        return [r for r in self.requests if not r.allowed]

    def csp_violations(self) -> list[CspViolation]:
        """The Content-Security-Policy violations of the page's main frame so far."""
        rows = self.page.evaluate("() => window.__geosleuthCspViolations || []")
        return [CspViolation(**row) for row in rows]

    def settle(self) -> None:
        """Wait two animation frames, so what the load event started (drawing, an image's onerror)
        has happened and its events have been recorded."""
        self.page.evaluate(_NEXT_FRAMES)

    def evaluate(self, js: str, arg: Any = None) -> Any:
        """Run ``js`` (an expression, or a function given ``arg``) in the page; return its value."""
        return self.page.evaluate(js, arg)

    def count(self, selector: str) -> int:
        return self.page.locator(selector).count()

    def text(self, selector: str = "body") -> str:
        """The rendered text of the first element matching ``selector``."""
        return self.page.locator(selector).first.inner_text()

    def boxes(self, selector: str) -> list[Box]:
        """The border boxes of every element matching ``selector``, in document order."""
        return [Box(**row) for row in self.page.evaluate(_BOXES, selector)]

    def screenshot(self, path: str | Path, *, full_page: bool = True) -> Path:
        """Save a PNG of the page (all of it, unless ``full_page=False``) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=path, full_page=full_page)
        return path


class Chromium:
    """A headless system Chromium, started on entry and closed on exit; :meth:`open` opens pages."""

    def __init__(self, executable: str | None = None, *, headless: bool = True) -> None:
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise EngineUnavailableError(
                f"No Chromium found (${CHROMIUM_ENV}={os.environ.get(CHROMIUM_ENV, '')!r}, then "
                f"{', '.join(CHROMIUM_CANDIDATES) or 'nothing'} and PATH). "
                f"Install it with: {INSTALL_CHROMIUM}, or set ${CHROMIUM_ENV} to its path"
            )
        self.headless = headless
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None

    def __enter__(self) -> Self:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError as e:
            raise MissingDependencyError("playwright", "dev", "Driving a real browser") from e
        self._playwright = sync_playwright().start()
        try:
            self._browser = self._playwright.chromium.launch(
                executable_path=self.executable,
                headless=self.headless,
                # Chromium refuses to start as root with its sandbox on (Playwright turns it off by
                # default anyway). No host name resolves but the loopback address (a test's own
                # server; the route still aborts what a page may not ask for): a second wall.
                args=["--no-sandbox", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
            )
        except BaseException:
            self._playwright.stop()
            self._playwright = None
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._browser is not None:
            self._browser.close()
            self._browser = None
        if self._playwright is not None:
            self._playwright.stop()
            self._playwright = None

    @property
    def version(self) -> str:
        return self._started().version

    def _started(self) -> Browser:
        if self._browser is None:
            raise RuntimeError("Chromium is not running: use it as a context manager (with Chromium() as c)")
        return self._browser

    @contextmanager
    def open(
        self,
        target: str | Path,
        *,
        width: int = 1280,
        height: int = 900,
        wait_until: Literal["load", "domcontentloaded", "networkidle", "commit"] = "load",
        serve: Mapping[str | re.Pattern[str], Served] | None = None,
    ) -> Iterator[PageReport]:
        """Open ``target`` offline and yield its :class:`PageReport`. A :class:`~pathlib.Path` is a
        file to open; a ``str`` is HTML, written to a temporary file first so that it loads as a
        report does (a ``file://`` page). ``serve``: URL patterns (Playwright globs, or compiled
        regular expressions) answered with the given :class:`Served` responses, recorded as
        allowed and served; every other request is still aborted. A ``str`` that is an
        ``http://127.0.0.1:PORT/`` URL is a local server's page (``geosleuth serve`` in a test):
        requests to its origin go through, and only those."""
        with ExitStack() as stack:
            if isinstance(target, str) and _LOOPBACK_URL.match(target):
                url = target
                origin = _origin(target)

                def is_own(requested: str) -> bool:
                    return _origin(requested) == origin or urlsplit(requested).scheme in ("data", "blob")
            else:
                path = _target_file(target, stack)
                url = path.as_uri()

                def is_own(requested: str) -> bool:
                    return _is_own(requested, path)

            context = self._started().new_context(
                viewport={"width": width, "height": height}, service_workers="block"
            )
            stack.callback(context.close)
            context.set_default_timeout(TIMEOUT_MS)
            context.add_init_script(_RECORD_CSP)
            page = context.new_page()
            report = PageReport(page=page, url=url)

            def route(route: Route) -> None:
                request = route.request
                allowed = is_own(request.url)
                report.requests.append(Request(request.url, request.resource_type, allowed))
                if allowed:
                    route.continue_()
                else:
                    route.abort("blockedbyclient")

            def websocket(ws: WebSocketRoute) -> None:
                report.requests.append(Request(ws.url, "websocket", False))
                ws.close()

            def console(m: PlaywrightConsoleMessage) -> None:
                where = m.location
                report.console.append(ConsoleMessage(m.type, m.text, where["url"], where["lineNumber"]))

            def page_error(e: PlaywrightError) -> None:
                report.page_errors.append(PageError(e.name or "Error", e.message))

            def dialog(d: PlaywrightDialog) -> None:
                report.dialogs.append(Dialog(d.type, d.message))
                d.dismiss()

            context.route("**/*", route)
            # Routes registered later are tried first: the served patterns go before the wall.
            for pattern, response in (serve or {}).items():
                context.route(pattern, _serving(response, report))
            context.route_web_socket(re.compile(".*"), websocket)
            page.on("console", console)
            page.on("pageerror", page_error)
            page.on("dialog", dialog)
            page.goto(report.url, wait_until=wait_until)
            report.settle()
            yield report


@contextmanager
def open_page(
    target: str | Path,
    *,
    width: int = 1280,
    height: int = 900,
    chromium: Chromium | None = None,
    serve: Mapping[str | re.Pattern[str], Served] | None = None,
) -> Iterator[PageReport]:
    """Open one page offline (see :meth:`Chromium.open`), in ``chromium`` or a Chromium started
    for it."""
    with ExitStack() as stack:
        if chromium is None:
            chromium = stack.enter_context(Chromium())
        yield stack.enter_context(chromium.open(target, width=width, height=height, serve=serve))


def _serving(response: Served, report: PageReport) -> Any:
    def fulfil(route: Route) -> None:
        request = route.request
        report.requests.append(Request(request.url, request.resource_type, True, served=True))
        route.fulfill(
            status=response.status,
            body=response.body,
            content_type=response.content_type,
            headers={"access-control-allow-origin": "*", **response.headers},
        )

    return fulfil


def _target_file(target: str | Path, stack: ExitStack) -> Path:
    if isinstance(target, Path):
        if not target.is_file():
            raise InputNotFoundError(f"{target}: no such file to open in the browser")
        return target.resolve()
    if "<" not in target:
        raise ValueError(
            f"target={target[:80]!r} is neither HTML nor a Path: pass pathlib.Path(...) to open a file"
        )
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="geosleuth-page-")))
    path = folder / "page.html"
    path.write_text(target, encoding="utf-8")
    return path.resolve()


_LOOPBACK_URL = re.compile(r"http://127\.0\.0\.1:\d+(/|$)")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _is_own(url: str, path: Path) -> bool:
    """Whether a request is for the page's own file (any query or fragment) or needs no network."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob"):
        return True
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        return False
    return Path(url2pathname(parts.path)) == path
