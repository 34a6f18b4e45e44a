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
