"""Explainable reports: every status renders a complete document, untrusted text stays text, the
page needs nothing from the network and runs no script, and the CLI writes files and folders."""

from __future__ import annotations

import html as htmllib
import io
import re

import piexif
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import fixture, make_locator
from geosleuth.cli import app
from geosleuth.report import render_report, safe_name
from geosleuth.schemas import Prediction, VLMGuess
from geosleuth.testing.openai_server import Reply

HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_VLM = "</blockquote><script>alert('vlm')</script>"
SECTIONS = ("answer", "map", "photo", "reasoning", "hypotheses", "gaps", "provenance")


def hostile_photo(tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A Paris sign whose EXIF description tries to run a script."""
    img = Image.open(fixture("sign_fr_paris.jpg"))
    exif = piexif.dump(
        {"0th": {piexif.ImageIFD.ImageDescription: HOSTILE.encode(), piexif.ImageIFD.Artist: b"<b>x</b>"}}
    )
    path = tmp_path / "hostile <name>.jpg"
    img.save(path, exif=exif, quality=92)
    return str(path)


def run(loc, path):  # type: ignore[no-untyped-def]
    pred, state = loc.run(str(path))
    return pred, state.image.rgb


def assert_inert(page: str) -> None:
    """No markup that could run: no script element, no event handler attribute, no javascript: URL."""
    assert not re.search(r"<script\b", page, re.I)
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", page, re.I)
    assert "javascript:" not in page.lower()
    meta = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert meta is not None
    policy = htmllib.unescape(meta.group(1))
    assert "script-src 'none'" in policy and "default-src 'none'" in policy


@pytest.mark.parametrize(
    "name", ["sign_fr_paris.jpg", "blank.jpg", "exif_gps.jpg", "truncated_with_gps.jpg", "sign_injection.jpg"]
)
def test_every_status_renders_a_complete_inert_document(settings, gazetteer, name):
    loc = make_locator(settings, gazetteer, offline=True)
    pred, image = run(loc, fixture(name))
    page = render_report(pred, "html", image=image, command=f"geosleuth report {name}")
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    for section in SECTIONS:
        assert f'id="{section}"' in page
    assert_inert(page)
    assert page.count('class="basemap"') == 3  # the world once (shared), the two zoomed views' detail
    if pred.status == "located":
        assert 'data-testid="best-marker"' in page and f"{pred.best.point.lat:.5f}" in page
        assert "openstreetmap.org/?mlat=" in page
    else:
        assert "Too little evidence" in page
    assert len(page.encode()) <= 2_000_000


def test_hostile_exif_and_vlm_text_are_shown_as_text(settings, gazetteer, fake_vlm, tmp_path):
    fake_vlm.reset()
    fake_vlm.default = Reply.guess(
        VLMGuess(latitude=48.85, longitude=2.35, confidence=0.5, rationale=HOSTILE_VLM)
    )
    loc = make_locator(
        settings, gazetteer, offline=True, vlm={"base_url": fake_vlm.base_url, "rag_k": [0], "samples": 2}
    )
    pred, image = run(loc, hostile_photo(tmp_path))
    assert any(e.id == "exif.description" and HOSTILE in e.value for e in pred.evidence)
    page = render_report(pred, "html", image=image)
    assert_inert(page)
    assert HOSTILE not in page and HOSTILE_VLM not in page
    assert htmllib.escape(HOSTILE, quote=False) in page or htmllib.escape(HOSTILE) in page
    assert "&lt;/blockquote&gt;&lt;script&gt;" in page
    assert "hostile &lt;name&gt;.jpg" in page  # the file name too
    md = render_report(pred, "md")
    assert HOSTILE not in md and "<script" not in md


def test_ocr_boxes_link_to_the_evidence_they_produced(settings, gazetteer):
    loc = make_locator(settings, gazetteer, offline=True)
    pred, image = run(loc, fixture("sign_fr_paris.jpg"))
    page = render_report(pred, "html", image=image)
    boxes = re.findall(r'<a href="#([^"]+)" data-testid="ocr-box"><rect x="([\d.]+)" y="([\d.]+)"', page)
    assert len(boxes) == len(pred.text_lines) >= 2
    targets = {t for t, _, _ in boxes}
    assert "ev-text.place.2" in targets  # the line "75001 Paris" produced the Paris clue
    for target in targets:
        assert f'id="{target}"' in page


def test_ocr_boxes_sit_on_the_text_of_a_photo_larger_than_the_working_copy(settings, gazetteer, tmp_path):
    """OCR reads a reduced copy of a large photo; its boxes still land on the text, in the photo's
    own pixels and on the embedded picture."""
    loc = make_locator(settings, gazetteer, offline=True)
    small, _ = run(loc, fixture("sign_fr_paris.jpg"))  # 720 x 268: read at full size
    big_path = tmp_path / "big.jpg"
    original = Image.open(fixture("sign_fr_paris.jpg"))
    original.resize((original.width * 5, original.height * 5), Image.Resampling.LANCZOS).save(
        big_path, quality=92
    )
    big, image = run(loc, big_path)  # 3600 x 1340: OCR reads a 2000-px copy
    assert big.provenance.image_size == (3600, 1340) and image.size == (2000, 744)

    def line(pred, text):  # type: ignore[no-untyped-def]
        return next(ln.box for ln in pred.text_lines if text in ln.text)

    for text in ("Paris", "Rivoli"):
        expected = [v * 5 for v in line(small, text)]
        assert line(big, text) == pytest.approx(expected, abs=0.03 * 3600), text
    page = render_report(big, "html", image=image, photo_max_side=1000)
    x, y = (
        float(v) for v in re.search(r'data-testid="ocr-box"><rect x="([\d.]+)" y="([\d.]+)"', page).groups()
    )
    first = big.text_lines[0].box
    assert x == pytest.approx(first[0] * 1000 / 3600, abs=1) and y == pytest.approx(
        first[1] * 1000 / 3600, abs=1
    )


def test_no_photo_and_markdown_and_json(settings, gazetteer):
    loc = make_locator(settings, gazetteer, offline=True)
    pred, image = run(loc, fixture("sign_fr_paris.jpg"))
    without = render_report(pred, "html", image=None)
    assert "data:image/jpeg" not in without and "not embedded" in without
    with_photo = render_report(pred, "html", image=image, photo_max_side=300)
    embedded = re.search(r'href="data:image/jpeg;base64,([^"]+)"', with_photo)
    assert embedded is not None
    import base64

    thumb = Image.open(io.BytesIO(base64.b64decode(embedded.group(1))))
    assert max(thumb.size) == 300 and not thumb.getexif()  # downscaled, no metadata
    md = render_report(pred, "md")
    assert md.startswith("# Where was this photo taken?") and "## Ranked hypotheses" in md
    assert f"{pred.best.point.lat:.5f}" in md
    assert Prediction.model_validate_json(render_report(pred, "json")) == pred


def test_safe_names_never_leave_the_folder():
    for hostile in ("../../etc/passwd.jpg", "/abs/path/x.jpg", "..", "a b<c>.jpg", "ünï.heic", ""):
        name = safe_name(hostile, 3, ".html")
        assert "/" not in name and not name.startswith(".") and name.endswith(".html")


def test_cli_writes_one_file_or_a_folder_with_an_index(tmp_path):
    runner = CliRunner()
    one = tmp_path / "r.html"
    res = runner.invoke(app, ["report", "examples/rue-de-rivoli.jpg", "--out", str(one), "-q"])
    assert res.exit_code == 0, res.output
    page = one.read_text()
    assert "Paris" in page and 'data-testid="best-marker"' in page
    assert one.stat().st_size <= 2_000_000

    folder = tmp_path / "many"
    res = runner.invoke(
        app,
        [
            "report",
            str(fixture("sign_fr_paris.jpg")),
            str(fixture("blank.jpg")),
            str(tmp_path / "missing.jpg"),
            "--out",
            str(folder),
            "-q",
        ],
    )
    assert res.exit_code == 1  # one input could not be used; the others got reports
    files = sorted(p.name for p in folder.iterdir())
    assert "index.html" in files and len([f for f in files if f.endswith(".html")]) == 3
    index = (folder / "index.html").read_text()
    assert_inert(index)
    assert index.count("data-testid=row") == 2 and "missing.jpg" in index

    md = tmp_path / "r.md"
    res = runner.invoke(
        app, ["report", "examples/rue-de-rivoli.jpg", "--out", str(md), "--format", "md", "-q"]
    )
    assert res.exit_code == 0 and md.read_text().startswith("# Where was this photo taken?")
    res = runner.invoke(app, ["report", "examples/rue-de-rivoli.jpg", "--out", str(md), "--format", "pdf"])
    assert res.exit_code == 2
