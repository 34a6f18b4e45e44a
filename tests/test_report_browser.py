"""Reports opened in a real Chromium with the network blocked: nothing is requested, nothing runs,
no console error, the map drew, the OCR boxes sit over the photo, hostile text shows as text.
Screenshots go to the test's tmp folder (look at them: tmp_path/report-*.png)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import fixture, make_locator
from geosleuth.report import render_report
from test_report import HOSTILE, HOSTILE_VLM, hostile_photo

pytestmark = pytest.mark.slow


def write(loc, photo, tmp_path: Path, name: str) -> tuple[Path, object]:  # type: ignore[no-untyped-def]
    pred, state = loc.run(str(photo))
    path = tmp_path / f"{name}.html"
    path.write_text(render_report(pred, "html", image=state.image.rgb), encoding="utf-8")
    return path, pred


def assert_clean(page) -> None:  # type: ignore[no-untyped-def]
    assert page.console_errors == [] and page.page_errors == [] and page.dialogs == []
    assert page.blocked_requests == [] and page.csp_violations() == []


@pytest.mark.parametrize("name", ["sign_fr_paris.jpg", "blank.jpg", "exif_gps.jpg"])
def test_a_report_draws_offline_and_runs_nothing(settings, gazetteer, browser_page, tmp_path, name):
    loc = make_locator(settings, gazetteer, offline=True)
    path, pred = write(loc, fixture(name), tmp_path, Path(name).stem)
    page = browser_page(path)
    assert_clean(page)
    # the basemap drew: its land path has real geometry and the visible view shows it
    land_len = page.evaluate("() => document.querySelector('#basemap path.land').getAttribute('d').length")
    assert land_len > 10_000
    drawn = page.boxes(".view-answer .basemap path.land")
    assert drawn and drawn[0].width > 0  # the visible view's own land path has area on screen
    views = page.boxes("svg.view")
    visible = [b for b in views if b.width > 0 and b.height > 0]
    assert len(visible) == 1 and visible[0].width > 600
    if pred.status == "located":
        marker = page.boxes(".view-answer [data-testid=best-marker] circle")
        assert marker and marker[0].width > 0 and marker[0].inside(visible[0])
    photo = page.boxes("svg.photo")
    if pred.text_lines:
        ocr = page.boxes("[data-testid=ocr-box] rect")
        assert len(ocr) == len(pred.text_lines)
        assert all(b.inside(photo[0]) for b in ocr)
    page.screenshot(tmp_path / f"report-{Path(name).stem}.png")


def test_hostile_strings_appear_as_text_and_no_script_runs(
    settings, gazetteer, browser_page, fake_vlm, tmp_path
):
    from geosleuth.schemas import VLMGuess
    from geosleuth.testing.openai_server import Reply

    fake_vlm.reset()
    fake_vlm.default = Reply.guess(
        VLMGuess(latitude=48.85, longitude=2.35, confidence=0.5, rationale=HOSTILE_VLM)
    )
    loc = make_locator(
        settings, gazetteer, offline=True, vlm={"base_url": fake_vlm.base_url, "rag_k": [0], "samples": 2}
    )
    path, _ = write(loc, hostile_photo(tmp_path), tmp_path, "hostile")
    page = browser_page(path)
    assert_clean(page)
    text = page.text()
    assert HOSTILE in text and "<script>alert('vlm')</script>" in text
    assert page.count("img[src=x]") == 0 and page.count("body script") == 0
    page.screenshot(tmp_path / "report-hostile.png")


def test_the_layer_and_view_switches_work_without_script(settings, gazetteer, browser_page, tmp_path):
    loc = make_locator(settings, gazetteer, offline=True)
    path, _ = write(loc, fixture("sign_fr_paris.jpg"), tmp_path, "paris")
    page = browser_page(path)
    page.page.click("label[for=view-world]")
    visible = [b for b in page.boxes("svg.view") if b.width > 0]
    assert len(visible) == 1
    assert page.evaluate("() => getComputedStyle(document.querySelector('.view-world')).display") == "block"
    page.page.click("label[for=layer-best]")
    assert (
        page.evaluate("() => getComputedStyle(document.querySelector('.view-world .best')).display") == "none"
    )
    assert_clean(page)


# --- --online-map ---------------------------------------------------------------------------------


def online_report(settings, gazetteer, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The Paris sign's report with the interactive map, and hostile labels on its points."""
    loc = make_locator(settings, gazetteer, offline=True)
    pred, state = loc.run(str(fixture("sign_fr_paris.jpg")))
    pred.best.label = HOSTILE
    pred.candidates[1].label = HOSTILE_VLM
    path = tmp_path / "online.html"
    path.write_text(render_report(pred, "html", image=state.image.rgb, online_map=True), encoding="utf-8")
    return path, pred


def assert_drawn_map(page) -> None:  # type: ignore[no-untyped-def]
    drawn = page.boxes(".view-answer .basemap path.land")
    assert drawn and drawn[0].width > 0
    marker = page.boxes(".view-answer [data-testid=best-marker] circle")
    assert marker and marker[0].width > 0


def test_the_online_map_offline_leaves_the_drawn_map_and_asks_only_for_leaflet(
    settings, gazetteer, browser_page, tmp_path
):
    from geosleuth.report.online import LEAFLET_CSS, LEAFLET_JS

    path, _ = online_report(settings, gazetteer, tmp_path)
    page = browser_page(path)
    assert page.page_errors == [] and page.dialogs == []  # our script ran, found no Leaflet, threw nothing
    assert page.csp_violations() == []  # ours is allowed by its hash; nothing else tried to run
    assert sorted(r.url for r in page.blocked_requests) == sorted([LEAFLET_CSS, LEAFLET_JS])
    # the only console errors are the browser's own lines about those two blocked files
    assert len(page.console_errors) <= 2 and all("Failed to load" in m.text for m in page.console_errors)
    assert_drawn_map(page)
    assert page.evaluate("document.getElementById('online-map').hidden") is True
    assert page.boxes("#online-map-offline")[0].height > 0  # the sentence saying why there is no map
    page.screenshot(tmp_path / "report-online-offline.png")


def leaflet_copy() -> Path:
    from conftest import LEAFLET_DIR
    from geosleuth.report.online import LEAFLET_CSS_SRI, LEAFLET_JS_SRI

    if not (LEAFLET_DIR / "leaflet.js").is_file():
        pytest.skip(
            f"no local copy of Leaflet 1.9.4 at {LEAFLET_DIR} (.ci/run fetches it from the npm registry; "
            "or set GEOSLEUTH_LEAFLET_DIR to a folder with leaflet.js and leaflet.css)"
        )
    for name, pinned in (("leaflet.js", LEAFLET_JS_SRI), ("leaflet.css", LEAFLET_CSS_SRI)):
        assert sri(LEAFLET_DIR / name) in pinned.split(), f"{LEAFLET_DIR / name} is not Leaflet 1.9.4's"
    return LEAFLET_DIR


def sri(path: Path) -> str:
    import base64
    import hashlib

    return "sha384-" + base64.b64encode(hashlib.sha384(path.read_bytes()).digest()).decode()


def tile_png() -> bytes:
    """A 256-pixel map tile: land colour, one dark line, so a screenshot shows the tiles."""
    import io

    from PIL import Image, ImageDraw

    img = Image.new("RGB", (256, 256), (236, 232, 222))
    ImageDraw.Draw(img).line((0, 255, 255, 0), fill=(140, 140, 150), width=3)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_the_online_map_draws_tiles_markers_and_attribution_and_labels_stay_text(
    settings, gazetteer, browser_page, tmp_path
):
    from geosleuth.report.online import LEAFLET_CSS, LEAFLET_JS
    from geosleuth.testing.browser import Served

    dist = leaflet_copy()
    path, pred = online_report(settings, gazetteer, tmp_path)
    serve = {
        LEAFLET_JS: Served((dist / "leaflet.js").read_bytes(), "application/javascript"),
        LEAFLET_CSS: Served((dist / "leaflet.css").read_bytes(), "text/css"),
        "https://tile.openstreetmap.org/**": Served(tile_png(), "image/png"),
    }
    page = browser_page(path, serve=serve)
    page.page.wait_for_selector("#online-map .leaflet-tile-loaded")
    page.settle()
    assert page.console_errors == [] and page.page_errors == [] and page.dialogs == []
    assert page.blocked_requests == [] and page.csp_violations() == []  # Leaflet runs under the policy
    tiles = [r for r in page.requests if r.url.startswith("https://tile.openstreetmap.org/")]
    assert tiles and all(r.served for r in tiles)
    assert page.count("#online-map .leaflet-tile-loaded") >= 4
    box = page.boxes("#online-map")[0]
    assert box.width > 600 and box.height > 300
    (best,) = page.boxes("#online-map path.gs-best")
    assert best.width > 0 and best.inside(box)
    assert page.count("#online-map path.gs-region") == sum(len(r.circles) for r in pred.regions)
    assert "© OpenStreetMap contributors" in page.text("#online-map .leaflet-control-attribution")
    # the hostile label is the best marker's tooltip, as text
    assert HOSTILE in page.text("#online-map .leaflet-tooltip")
    assert page.count("img[src=x]") == 0 and page.count("body script") == 3  # data, Leaflet, ours
    assert page.evaluate("document.getElementById('online-map-offline').hidden") is True
    assert_drawn_map(page)  # the drawn map is still there
    page.screenshot(tmp_path / "report-online.png")
