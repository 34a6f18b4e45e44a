"""The web page of `geosleuth serve` (geosleuth.service.web): served with its policy, and driven in
a real Chromium against a real server (uvicorn on a loopback port): photos in, answers, the
report's map, errors per photo, a chat answer, nothing blocked, no console error, no CSP violation.
The screenshot of an answer goes to $WEB_SHOTS_DIR (default: the test's tmp folder)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'geosleuth[serve]')")

from fastapi.testclient import TestClient

from conftest import fixture, free_port
from geosleuth.agents.pipeline import Locator
from geosleuth.schemas import Prediction
from geosleuth.service import web
from geosleuth.service.app import create_app
from geosleuth.service.storage import Storage, open_storage
from geosleuth.testing.http import LocalServer, QuietHandler

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_XML = "]]></title><script>alert(2)</script><title>"
HOSTILE_VLM = "</blockquote><script>alert('vlm')</script>"


# --- served: the page, its files, the map (no browser) ---------------------------------------------


@pytest.fixture
def client(exif_locator: Locator, tmp_path: Path) -> Iterator[TestClient]:
    exif_locator.deps.gazetteer.ensure_built()
    storage = open_storage(str(tmp_path / "service.sqlite3"), tmp_path)
    with TestClient(create_app(exif_locator, storage, job_poll_s=0.05)) as c:
        yield c
    storage.close()


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        if self.tags and self.tags[-1][0] in ("script", "style") and data.strip():
            self.inline_script = True


def test_the_page_and_its_files_are_served_with_the_policy_and_their_types(client: TestClient):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert policy == web.PAGE_CSP
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["default-src"] == "'none'" and directives["require-trusted-types-for"] == "'script'"
    assert "unsafe" not in policy  # no 'unsafe-inline', no 'unsafe-eval'
    assert page.headers["x-content-type-options"] == "nosniff"
    tags = _Tags()
    tags.feed(page.text)
    assert not tags.inline_script  # the policy would block it: nothing inline at all
    assert not [t for t, attrs in tags.tags if "style" in attrs or any(a.startswith("on") for a in attrs)]
    linked = {attrs.get("src") or attrs.get("href") for t, attrs in tags.tags if t in ("script", "link")}
    assert linked == {f"/web/{name}" for name in web.ASSETS}  # every file the page needs, and only those
    for name, asset in web.ASSETS.items():
        r = client.get(f"/web/{name}")
        assert r.status_code == 200 and r.headers["content-type"] == asset.content_type, name
        assert r.headers["content-security-policy"] == web.PAGE_CSP
        assert r.content == (Path(web.__file__).parent / name).read_bytes()
    assert "/" not in client.get("/openapi.json").json()["paths"]  # the page is not part of the API


@pytest.mark.parametrize(
    "name", ["nope.js", "index.html", "__init__.py", "..%2F__init__.py", "%2e%2e%2fapp.py"]
)
def test_only_the_page_s_own_files_are_served(client: TestClient, name: str):
    r = client.get(f"/web/{name}")
    assert r.status_code == 404 and r.json()["error"]["type"] in ("UnknownIdError", "HTTPError")


def test_the_script_never_turns_data_into_markup():
    script = (Path(web.__file__).parent / "app.js").read_text(encoding="utf-8")
    sinks = re.findall(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|srcdoc", script
    )
    assert sinks == []
    assert "textContent" in script


def _svg(response: Any) -> ET.Element:
    assert response.status_code == 200 and response.headers["content-type"] == "image/svg+xml"
    return ET.fromstring(response.content)


def test_the_map_is_the_report_s_own_view_as_svg(client: TestClient):
    from geosleuth.report import render_report

    made = client.post("/v1/locate", files={"image": ("exif_gps.jpg", fixture("exif_gps.jpg").read_bytes())})
    pid = made.json()["id"]
    r = client.get(f"/v1/predictions/{pid}/map")
    root = _svg(r)
    stored = client.get(f"/v1/predictions/{pid}").content
    report = render_report(Prediction.model_validate_json(stored), "html")
    box = re.search(r'<svg class="view view-answer" viewBox="([^"]*)"', report)
    assert box and root.get("viewBox") == box.group(1) and root.get("data-view") == "answer"
    assert int(root.get("width") or 0) == web.MAP_WIDTH_PX and int(root.get("height") or 0) > 100
    land = root.find(f".//{SVG}path[@class='land']")
    assert land is not None and len(land.get("d") or "") > 10_000
    best = root.find(f".//{SVG}g[@class='best']/{SVG}circle")
    assert best is not None and float(best.get("cx") or 0) == pytest.approx(2.2945, abs=0.01)
    assert [t.text for t in root.iter(f"{SVG}text")] == ["Paris"]
    # the SVG's one stylesheet is the one its policy allows, and no script may run in it
    style = root.find(f"{SVG}style")
    assert style is not None and style.text
    digest = base64.b64encode(hashlib.sha256(style.text.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in r.headers["content-security-policy"]
    assert "script-src 'none'" in r.headers["content-security-policy"]
    # the world view draws the shared basemap, which it carries; the regions view its own detail
    world = _svg(client.get(f"/v1/predictions/{pid}/map", params={"view": "world"}))
    assert world.get("viewBox") == "-180 -90 360 180"
    assert world.find(f"{SVG}defs/{SVG}g[@id='basemap']") is not None
    regions = _svg(client.get(f"/v1/predictions/{pid}/map", params={"view": "regions"}))
    assert regions.find(f".//{SVG}path[@class='region r50']") is not None
    assert client.get(f"/v1/predictions/{pid}/map", params={"view": "street"}).status_code == 400
    assert client.get("/v1/predictions/pred_nope/map").json()["error"]["type"] == "UnknownIdError"
    assert "/v1/predictions/{pid}/map" in client.get("/openapi.json").json()["paths"]


def test_hostile_names_in_the_map_stay_text(client: TestClient):
    made = client.post("/v1/locate", files={"image": ("exif_gps.jpg", fixture("exif_gps.jpg").read_bytes())})
    pred = Prediction.model_validate_json(client.get(f"/v1/predictions/{made.json()['id']}").content)
    assert pred.best is not None and pred.best.place is not None
    pred.best.label = HOSTILE_XML
    pred.best.place.name = HOSTILE
    storage: Storage = client.app.state.service.storage  # type: ignore[attr-defined]
    storage.put_prediction("pred_hostile", pred.source, pred.model_dump_json())
    root = _svg(client.get("/v1/predictions/pred_hostile/map"))
    assert HOSTILE in [t.text for t in root.iter(f"{SVG}text")]
    assert HOSTILE_XML in [t.text for t in root.iter(f"{SVG}title")]
    assert list(root.iter(f"{SVG}script")) == [] and list(root.iter(f"{SVG}img")) == []


# --- in a real browser -----------------------------------------------------------------------------


class PhotoHandler(QuietHandler):
    def do_GET(self) -> None:
        path, _, _ = self.request_parts()
        data = fixture(path.rsplit("/", 1)[-1]).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class PhotoServer(LocalServer):
    handler = PhotoHandler


@contextmanager
def running(locator: Locator, folder: Path, **serve: Any) -> Iterator[str]:
    """``geosleuth serve`` as it runs: the app on uvicorn on a loopback port, in a thread."""
    import uvicorn

    locator.deps.gazetteer.ensure_built()
    storage = open_storage(str(folder / "service.sqlite3"), folder)
    settings = locator.settings.with_overrides(serve=serve)
    app = create_app(locator, storage, settings=settings, job_poll_s=0.05)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="geosleuth-web-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        storage.close()


@pytest.fixture(scope="module")
def served(exif_locator: Locator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server the page tests share (photo URLs may be on loopback: the test's photo server)."""
    with running(exif_locator, tmp_path_factory.mktemp("web"), allow_private_urls=True) as url:
        yield url


def shots_dir(tmp_path: Path) -> Path:
    return Path(os.environ.get("WEB_SHOTS_DIR") or tmp_path)


def assert_clean(page: Any) -> None:
    assert page.console_errors == [] and page.page_errors == [] and page.dialogs == []
    assert page.blocked_requests == [] and page.csp_violations() == []


def cards(page: Any) -> list[dict[str, str]]:
    return page.evaluate(
        """() => [...document.querySelectorAll('[data-testid=photo]')].map((b) => ({
        name: b.querySelector('.name').textContent, status: b.dataset.status,
        state: b.querySelector('[data-testid=photo-state]').textContent }))"""
    )


_RECORD_STATUSES = """() => {
  window.__statuses = [];
  new MutationObserver((changes) => {
    for (const c of changes) {
      if (c.type === 'childList') for (const n of c.addedNodes) n.querySelector && record(n.querySelector('[data-testid=photo]'));
      else record(c.target);
    }
  }).observe(document.getElementById('photos'), { subtree: true, childList: true, attributes: true, attributeFilter: ['data-status'] });
  function record(button) {
    if (!button) return;
    const i = [...document.querySelectorAll('[data-testid=photo]')].indexOf(button);
    const list = (window.__statuses[i] ||= []);
    if (list[list.length - 1] !== button.dataset.status) list.push(button.dataset.status);
  }
}"""

_MAP_PIXELS = """async () => {
  const img = document.getElementById('map');
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  const near = (i, [r, g, b]) => Math.abs(px[i] - r) + Math.abs(px[i + 1] - g) + Math.abs(px[i + 2] - b) < 24;
  let land = 0, sea = 0, marker = 0;
  for (let i = 0; i < px.length; i += 4) {
    if (near(i, [0xf3, 0xef, 0xe6])) land++;
    else if (near(i, [0xcf, 0xe3, 0xf3])) sea++;
    else if (near(i, [0xb3, 0x26, 0x1e])) marker++;
  }
  return { width: img.naturalWidth, land, sea, marker, src: img.currentSrc.slice(0, 5) };
}"""


@pytest.mark.slow
def test_photos_in_answer_map_errors_and_a_chat_answer(served: str, chromium: Any, tmp_path: Path):
    import httpx

    with chromium.open(f"{served}/", width=1280, height=1000) as page:
        p = page.page
        p.wait_for_selector("body[data-ready=true]")
        p.evaluate(_RECORD_STATUSES)
        p.set_input_files("#file-input", [fixture("exif_gps.jpg"), fixture("not_an_image.jpg")])
        p.wait_for_selector("[data-testid=photo][data-status=done]")
        p.wait_for_selector("[data-testid=photo][data-status=failed]")
        p.wait_for_selector("#map[data-loaded=true]")
        good, bad = cards(page)
        # each photo showed its progress on its way (the fast steps may pass between two polls)
        seen = p.evaluate("() => window.__statuses")
        for statuses, last in ((seen[0], "done"), (seen[1], "failed")):
            assert statuses[-1] == last and "uploading" in statuses
            order = ["pending", "uploading", "waiting", "locating", last]
            assert [order.index(s) for s in statuses] == sorted(order.index(s) for s in statuses)
        assert good["name"] == "exif_gps.jpg" and good["status"] == "done" and "Paris" in good["state"]
        # the corrupt file shows the server's own error for it, and did not stop the other
        direct = httpx.post(
            f"{served}/v1/locate",
            files={"image": ("not_an_image.jpg", fixture("not_an_image.jpg").read_bytes())},
        )
        assert direct.status_code == 415
        assert bad["name"] == "not_an_image.jpg" and bad["status"] == "failed"
        assert bad["state"] and bad["state"] in direct.json()["error"]["message"]
        # the answer
        assert page.text("[data-testid=answer-place]") == "Paris, Ile-de-France, France"
        assert page.text("#answer-coords").startswith("48.85")
        assert page.text("#answer-level") in ("high", "medium", "low")
        assert page.count("[data-testid=alternative]") >= 1
        assert page.count("[data-testid=evidence-row]") >= 1 and page.count("#ev-exif\\.gps") == 1
        # the map: the report's, drawn (land, sea and the best marker in its pixels)
        drawn = p.evaluate(_MAP_PIXELS)
        assert drawn["src"] == "blob:" and drawn["width"] == web.MAP_WIDTH_PX
        assert drawn["land"] > 10_000 and drawn["sea"] > 10_000 and drawn["marker"] > 20
        (box,) = page.boxes("#map")
        assert box.width > 600 and box.height > 300
        # the full report, one click away
        href = p.get_attribute("[data-testid=report-link]", "href")
        assert href and re.fullmatch(r"/v1/predictions/pred_[\w-]+/report", href)
        report = httpx.get(served + href)
        assert report.status_code == 200 and "Paris" in report.text
        page.screenshot(shots_dir(tmp_path) / "web-answer.png")
        # another view of the same map
        p.click(".map-controls button[data-view=world]")
        p.wait_for_selector("#map[data-view=world][data-loaded=true]")
        # a question: the streamed answer arrives, and it is the turn's answer
        p.fill("#chat-input", "Why Paris?")
        p.press("#chat-input", "Enter")
        p.wait_for_selector("[data-testid=chat-answer][data-state=done]")
        answer = page.text("[data-testid=chat-answer]")
        assert len(answer) > 20 and answer != "…"
        assert page.count("[data-testid=chat-answer][data-state=failed]") == 0
        page.screenshot(shots_dir(tmp_path) / "web-chat.png")
        # back to the failed photo: no answer panel for it
        p.click("[data-testid=photo][data-status=failed]")
        assert p.is_hidden("#result")
        assert_clean(page)


@pytest.mark.slow
def test_a_dropped_photo_with_a_hostile_name_and_a_pasted_url(served: str, chromium: Any, tmp_path: Path):
    data = base64.b64encode(fixture("exif_gps.jpg").read_bytes()).decode()
    with PhotoServer() as photos, chromium.open(f"{served}/") as page:
        p = page.page
        p.wait_for_selector("body[data-ready=true]")
        p.evaluate(
            """([data, name]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: 'image/jpeg' }));
            document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true }));
            }""",
            [data, f"{HOSTILE}.jpg"],
        )
        url = f"{photos.url}/photo/exif_gps.jpg"
        p.evaluate(
            """(url) => {
            const dt = new DataTransfer();
            dt.setData('text/plain', url);
            document.body.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true }));
            }""",
            url,
        )
        p.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=photo]')].every((b) => b.dataset.status === 'done')"
            " && document.querySelectorAll('[data-testid=photo]').length === 2"
        )
        dropped, pasted = cards(page)
        assert dropped["name"] == f"{HOSTILE}.jpg" and "Paris" in dropped["state"]
        assert pasted["name"] == url and "Paris" in pasted["state"]
        assert page.count("img[src=x]") == 0
        p.wait_for_selector("#map[data-loaded=true]")
        assert_clean(page)
        # the policy is on: no request elsewhere, and no string becomes markup (Trusted Types)
        p.evaluate("() => fetch('http://127.0.0.1:9/').catch(() => null)")
        assert [v.directive for v in page.csp_violations()] == ["connect-src"]
        sink = "() => { try { document.body.innerHTML = '<b>x</b>'; return 'assigned'; } catch (e) { return e.name; } }"
        assert p.evaluate(sink) == "TypeError"


@pytest.mark.slow
def test_a_server_with_keys_asks_for_one_and_the_page_uses_it(
    exif_locator: Locator, chromium: Any, tmp_path: Path
):
    keys = tmp_path / "keys"
    keys.write_text("s3cret-key\n", encoding="utf-8")
    with running(exif_locator, tmp_path, api_key_file=str(keys)) as url, chromium.open(f"{url}/") as page:
        p = page.page
        p.wait_for_selector("body[data-ready=true]")
        p.set_input_files("#file-input", [fixture("exif_gps.jpg")])
        p.wait_for_selector("[data-testid=photo][data-status=failed]")
        assert p.is_visible("#key-row")
        p.fill("#key-input", "s3cret-key")
        p.click("#key-save")
        p.set_input_files("#file-input", [fixture("exif_gps.jpg")])
        p.wait_for_selector("#map[data-loaded=true]")  # the map came with the key too
        assert [c["status"] for c in cards(page)] == ["failed", "done"]
        assert p.is_hidden("#key-row")
        # the one console error is the browser's line about the refused upload (401)
        assert [m.text for m in page.console_errors] == [
            "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
        ]
        assert page.page_errors == [] and page.blocked_requests == [] and page.csp_violations() == []


@pytest.mark.slow
def test_a_photo_too_large_fails_alone(exif_locator: Locator, chromium: Any, tmp_path: Path):
    names = ["exif_gps.jpg", "exif_gps.tif", "exif_gps.png"]  # 8, 46 and 10 KB
    with running(exif_locator, tmp_path, max_upload_mb=0.03) as url, chromium.open(f"{url}/") as page:
        p = page.page
        p.wait_for_selector("body[data-ready=true]")
        p.set_input_files("#file-input", [fixture(n) for n in names])
        p.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=photo]')]"
            ".every((b) => b.dataset.status === 'done' || b.dataset.status === 'failed')"
        )
        shown = cards(page)
        assert [c["name"] for c in shown] == names
        assert [c["status"] for c in shown] == ["done", "failed", "done"]
        assert "exif_gps.tif" in shown[1]["state"] and "serve.max_upload_mb" in shown[1]["state"]
        # the browser's lines about the refused uploads (the job of three, then of two) and nothing else
        assert {m.text for m in page.console_errors} == {
            "Failed to load resource: the server responded with a status of 413 (Request Entity Too Large)"
        }
        assert page.page_errors == [] and page.csp_violations() == []


def hostile(prediction: dict[str, Any]) -> dict[str, Any]:
    """``prediction`` with markup in every string a person reads on the page."""
    p = json.loads(json.dumps(prediction))
    p["best"]["place"]["name"] = p["best"]["place"]["country"] = HOSTILE
    p["explanation"] = HOSTILE_VLM
    p["warnings"] = [HOSTILE]
    for c in p["candidates"]:
        c["label"] = HOSTILE_VLM
        if c["place"]:
            c["place"]["country"] = HOSTILE
    for e in p["evidence"]:
        e["value"], e["reason"] = HOSTILE, HOSTILE_VLM
    return p


@pytest.mark.slow
def test_markup_in_a_prediction_and_a_chat_answer_shows_as_text(served: str, chromium: Any):
    import httpx

    from geosleuth.service.chat import sse
    from geosleuth.testing.browser import Served

    made = httpx.post(
        f"{served}/v1/locate", files={"image": ("exif_gps.jpg", fixture("exif_gps.jpg").read_bytes())}
    )
    shown = hostile(made.json())
    answer = sse("delta", {"text": HOSTILE}) + sse(
        "turn", {"answer": HOSTILE + HOSTILE_VLM, "cited_evidence": [HOSTILE]}
    )
    serve = {  # the page's own server, but these two answers carry markup everywhere
        re.compile(r".*/v1/predictions/pred_[\w-]+$"): Served(json.dumps(shown).encode(), "application/json"),
        re.compile(r".*/v1/chat/chat_[\w-]+/messages$"): Served(answer, "text/event-stream"),
    }
    with chromium.open(f"{served}/", serve=serve) as page:
        p = page.page
        p.wait_for_selector("body[data-ready=true]")
        p.set_input_files("#file-input", [fixture("exif_gps.jpg")])
        p.wait_for_selector("#map[data-loaded=true]")
        assert page.text("[data-testid=answer-place]") == f"{HOSTILE}, Ile-de-France, {HOSTILE}"
        assert page.text("#answer-explanation") == HOSTILE_VLM
        assert HOSTILE in page.text("[data-testid=evidence]") and HOSTILE_VLM in page.text(
            "[data-testid=evidence]"
        )
        assert HOSTILE_VLM in page.text("[data-testid=alternatives]") and HOSTILE in page.text("#notes")
        p.fill("#chat-input", "Why?")
        p.press("#chat-input", "Enter")
        p.wait_for_selector("[data-testid=chat-answer][data-state=done]")
        assert page.text("[data-testid=chat-answer]") == f"{HOSTILE}{HOSTILE_VLM}\ncited: {HOSTILE}"
        assert page.count("img[src=x]") == 0 and page.count("main script, main blockquote") == 0
        assert page.dialogs == [] and page.page_errors == [] and page.console_errors == []
        assert page.csp_violations() == []  # nothing was even tried as markup (Trusted Types would say)
        assert any(r.served for r in page.requests)
