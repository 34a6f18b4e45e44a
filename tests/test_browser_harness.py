"""The real-browser harness itself (geosleuth.testing.browser): pages render, nothing leaves the
file, and what a page does (console, exceptions, dialogs, CSP violations) is recorded."""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from geosleuth.errors import EngineUnavailableError, InputNotFoundError, MissingDependencyError
from geosleuth.testing.browser import Box, Chromium, PageReport, find_chromium

OpenPage = Callable[..., PageReport]  # the `browser_page` fixture

SVG_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>map</title></head><body>
<svg id="map" width="400" height="200" viewBox="0 0 400 200">
  <path class="coast" d="M10 10 L390 10 L390 190 Z" fill="#ccd"/>
  <circle class="marker" cx="200" cy="100" r="6" fill="red"/>
  <circle class="marker" cx="50" cy="50" r="4"/>
</svg><p id="caption">Lyon, France</p></body></html>"""


def test_a_static_svg_page_renders_and_can_be_queried(browser_page: OpenPage) -> None:
    page = browser_page(SVG_PAGE, width=800, height=600)

    assert page.count("#map .marker") == 2
    assert page.text("#caption") == "Lyon, France"
    (svg,) = page.boxes("#map")
    assert (svg.width, svg.height) == (400, 200)
    assert all(marker.inside(svg) for marker in page.boxes("#map .marker"))
    assert page.evaluate("document.querySelector('#map path').getTotalLength()") > 0
    assert page.console == [] and page.page_errors == [] and page.dialogs == []
    assert [(r.resource_type, r.allowed) for r in page.requests] == [("document", True)]
    assert page.requests[0].url == page.url


def test_a_file_page_may_load_itself_only(browser_page: OpenPage, tmp_path: Path) -> None:
    (tmp_path / "beside.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    report = tmp_path / "report.html"
    report.write_text('<p>report</p><img id="beside" src="beside.png"><a href="#top">top</a>')

    page = browser_page(report)

    assert page.url == report.resolve().as_uri()
    assert [(r.url, r.allowed) for r in page.requests] == [
        (page.url, True),
        ((tmp_path / "beside.png").resolve().as_uri(), False),
    ]
    assert page.evaluate("document.getElementById('beside').naturalWidth") == 0


def test_network_requests_are_blocked_and_recorded(browser_page: OpenPage) -> None:
    page = browser_page(
        """<img id="remote" src="https://example.org/x.png">
        <script>
          fetch("http://127.0.0.1:9/").then(
            () => { document.body.dataset.fetch = "answered"; },
            () => { document.body.dataset.fetch = "failed"; });
          new WebSocket("wss://example.org/socket");
        </script>"""
    )
    page.page.wait_for_selector("body[data-fetch]")

    blocked = {(r.url, r.resource_type) for r in page.blocked_requests}
    assert blocked == {
        ("https://example.org/x.png", "image"),
        ("http://127.0.0.1:9/", "fetch"),
        ("wss://example.org/socket", "websocket"),
    }
    assert page.evaluate("document.body.dataset.fetch") == "failed"
    assert page.evaluate("document.getElementById('remote').naturalWidth") == 0
    assert all(r.allowed == (r.url == page.url) for r in page.requests)


def test_served_patterns_answer_instead_of_the_network_and_the_rest_stays_blocked(
    browser_page: OpenPage,
) -> None:
    import base64
    import hashlib

    from geosleuth.testing.browser import Served

    js = b"document.body.dataset.lib = 'ran';"
    sri = "sha384-" + base64.b64encode(hashlib.sha384(js).digest()).decode()
    page = browser_page(
        f"""<body><script src="https://cdn.example.org/lib.js" integrity="{sri}" crossorigin="anonymous"></script>
        <img id="tile" src="https://tiles.example.org/1/0/0.png"><img id="other" src="https://example.org/x.png"></body>""",
        serve={
            "https://cdn.example.org/lib.js": Served(js, "application/javascript"),
            "https://tiles.example.org/**": Served(_png(4, 3), "image/png"),
        },
    )
    assert page.evaluate("document.body.dataset.lib") == "ran"  # CORS and SRI passed on the copy
    assert page.evaluate("document.getElementById('tile').naturalWidth") == 4
    assert [r.url for r in page.requests if r.served] == [
        "https://cdn.example.org/lib.js",
        "https://tiles.example.org/1/0/0.png",
    ]
    assert [r.url for r in page.blocked_requests] == ["https://example.org/x.png"]


def _png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 220, 240)).save(buf, format="PNG")
    return buf.getvalue()


def test_console_errors_and_uncaught_exceptions_are_collected(browser_page: OpenPage) -> None:
    page = browser_page(
        """<script>
          console.log("hello");
          console.error("map failed", 42);
          throw new TypeError("boom");
        </script>"""
    )

    assert [(m.type, m.text) for m in page.console] == [("log", "hello"), ("error", "map failed 42")]
    assert [m.text for m in page.console_errors] == ["map failed 42"]
    assert page.console_errors[0].url == page.url
    assert [(e.name, e.message) for e in page.page_errors] == [("TypeError", "boom")]


def test_a_csp_blocks_an_injected_script_and_the_violation_is_recorded(browser_page: OpenPage) -> None:
    page = browser_page(
        """<!doctype html><html><head>
        <meta http-equiv="Content-Security-Policy" content="script-src 'none'">
        </head><body><p>Artist: <script>alert(1)</script></p>
        <img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" onload="alert(2)"></body></html>"""
    )

    assert page.dialogs == []
    assert {(v.directive, v.blocked_uri) for v in page.csp_violations()} == {
        ("script-src-elem", "inline"),
        ("script-src-attr", "inline"),
    }


def test_a_script_that_runs_is_detected_by_its_dialog(browser_page: OpenPage) -> None:
    # Without a CSP the classic injection runs: the harness must see it, or its "no dialog" means nothing.
    page = browser_page("<p>Artist: <img src=x onerror=alert(1)></p>")

    assert [(d.type, d.message) for d in page.dialogs] == [("alert", "1")]
    assert page.csp_violations() == []


def test_a_screenshot_is_a_png_of_the_page(browser_page: OpenPage, tmp_path: Path) -> None:
    page = browser_page(SVG_PAGE, width=640, height=480)

    path = page.screenshot(tmp_path / "shots" / "map.png")

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width == 640 and height >= 240
    assert len(data) > 1000


def test_several_pages_share_one_browser_without_sharing_state(browser_page: OpenPage) -> None:
    first = browser_page("<script>localStorage.setItem('k', 'v'); console.error('first')</script>")
    second = browser_page("<p>second</p>")

    assert first.page.context is not second.page.context
    assert second.evaluate("localStorage.getItem('k')") is None
    assert [m.text for m in first.console_errors] == ["first"] and second.console == []


def test_a_missing_file_or_a_path_given_as_text_is_refused(chromium: Chromium, tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError), chromium.open(tmp_path / "absent.html"):
        pass
    with pytest.raises(ValueError), chromium.open(str(tmp_path / "report.html")):
        pass


# --- without a browser: these run everywhere -------------------------------------------------------


def test_find_chromium_prefers_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from geosleuth.testing import browser

    chrome = tmp_path / "chrome"
    chrome.write_text("#!/bin/sh\n")
    chrome.chmod(0o755)
    monkeypatch.setenv("GEOSLEUTH_CHROMIUM", str(chrome))
    assert find_chromium() == str(chrome)

    # A wrong setting is reported, not replaced by another Chromium.
    monkeypatch.setenv("GEOSLEUTH_CHROMIUM", str(tmp_path / "absent"))
    assert find_chromium() is None
    reason = browser.unavailable_reason()
    assert reason is not None and str(tmp_path / "absent") in reason


def test_no_chromium_is_an_unavailable_engine_that_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from geosleuth.testing import browser

    monkeypatch.delenv("GEOSLEUTH_CHROMIUM", raising=False)
    monkeypatch.setattr(browser, "CHROMIUM_CANDIDATES", ())
    monkeypatch.setenv("PATH", "")

    assert browser.find_chromium() is None
    reason = browser.unavailable_reason()
    assert reason is not None and browser.INSTALL_CHROMIUM in reason
    with pytest.raises(EngineUnavailableError, match=browser.INSTALL_CHROMIUM):
        browser.Chromium()


def test_box_inside() -> None:
    outer = Box(0, 0, 100, 50)
    assert Box(10, 10, 20, 20).inside(outer)
    assert not Box(90, 10, 20, 20).inside(outer)


def test_no_playwright_is_a_missing_dependency_that_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)  # what `import` finds when it is absent

    with pytest.raises(MissingDependencyError) as caught, Chromium(executable="/bin/true"):
        pass
    assert (caught.value.package, caught.value.extra) == ("playwright", "dev")
