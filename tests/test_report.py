"""Explainable reports: every status renders a complete document, untrusted text stays text, the
page needs nothing from the network and runs no script, and the CLI writes files and folders."""

from __future__ import annotations

import html as htmllib
import io
import json
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


def test_the_format_follows_the_out_suffix_unless_given(tmp_path):
    runner = CliRunner()
    for suffix, start in (
        (".md", "# Where was this photo taken?"),
        (".json", "{"),
        (".html", "<!doctype html>"),
    ):
        out = tmp_path / f"r{suffix}"
        res = runner.invoke(app, ["report", "examples/rue-de-rivoli.jpg", "--out", str(out), "-q"])
        assert res.exit_code == 0, res.output
        assert out.read_text().lower().startswith(start.lower()), suffix
    json.loads((tmp_path / "r.json").read_text())  # a whole JSON report, not HTML named .json
    res = runner.invoke(
        app, ["report", "examples/rue-de-rivoli.jpg", "--out", str(tmp_path / "x.md"), "--format", "html"]
    )
    assert res.exit_code == 2 and "x.html" in res.output and not (tmp_path / "x.md").exists()


# --- --redact-exif -------------------------------------------------------------------------------

OPERA = (-33.856784, 151.215297)  # nowhere else in a report of a blank photo
CAMERA = ("Nikonia", "Z9000 Mark II")
CAPTIONS = ("holiday at the harbour", "Jane Roe", "(c) Jane Roe 2024")


def gps_photo(tmp_path, name: str = "gps.jpg") -> str:  # type: ignore[no-untyped-def]
    """A photo whose metadata says where (GPS, altitude, bearing), when and who (camera, captions)."""
    from data import exif_bytes

    raw = piexif.load(
        exif_bytes(
            lat=OPERA[0],
            lon=OPERA[1],
            make=CAMERA[0],
            model=CAMERA[1],
            when="2023:11:05 07:41:52",
            offset="+11:00",
            gps_time=("2023:11:04", (20, 41, 52)),
            gps={piexif.GPSIFD.GPSImgDirectionRef: b"T", piexif.GPSIFD.GPSImgDirection: (2735, 10)},
        )
    )
    raw["0th"][piexif.ImageIFD.ImageDescription] = CAPTIONS[0].encode()
    raw["0th"][piexif.ImageIFD.Artist] = CAPTIONS[1].encode()
    raw["0th"][piexif.ImageIFD.Copyright] = CAPTIONS[2].encode()
    path = tmp_path / name
    Image.new("RGB", (320, 240), (90, 140, 60)).save(path, exif=piexif.dump(raw), quality=90)
    return str(path)


def secrets() -> list[str]:
    """What the metadata gave away, as a report could write it: each coordinate at 2 to 6
    decimals (without its sign, which a hemisphere letter may replace), in degrees-minutes-seconds,
    and the time and the camera and the captions."""
    from geosleuth.schemas import LatLon

    out = [f"{abs(v):.{d}f}" for v in OPERA for d in range(2, 7)]
    out += LatLon(lat=OPERA[0], lon=OPERA[1]).dms().split(" ")
    out += ["2023-11-05", "2023:11:05", "07:41:52", "273.5", "274°", *CAMERA, *CAPTIONS]
    return out


def without_basemap(page: str) -> str:
    """The page without the basemap's path data, whose thousands of 2-decimal numbers match any
    coordinate's 2-decimal rounding by chance."""
    return re.sub(r'<g class="basemap">.*?</g>', "", page, flags=re.S)


def leaks(text: str) -> list[str]:
    plain = htmllib.unescape(without_basemap(text)).replace("\\", "")  # Markdown escapes too
    return [s for s in secrets() if s in plain]


def test_redact_exif_removes_where_when_and_who_from_every_format(settings, gazetteer, fake_vlm, tmp_path):
    # the VLM is told the metadata (as tool facts) and echoes it: its copy must go too
    fake_vlm.reset()
    fake_vlm.default = Reply.guess(
        VLMGuess(
            latitude=round(OPERA[0], 4),
            longitude=round(OPERA[1], 4),
            confidence=0.9,
            rationale=f"The metadata puts it at {OPERA[0]:.4f}, {OPERA[1]:.4f}, shot on a {CAMERA[0]}.",
        )
    )
    loc = make_locator(
        settings, gazetteer, offline=True, vlm={"base_url": fake_vlm.base_url, "rag_k": [0], "samples": 2}
    )
    pred, image = run(loc, gps_photo(tmp_path))
    assert pred.basis == "exif-gps"
    for fmt in ("html", "md", "json"):
        plain = render_report(pred, fmt, image=image)  # type: ignore[arg-type]
        assert f"{abs(OPERA[0]):.5f}" in plain and CAMERA[1] in plain  # the control: they were there
        shared = render_report(pred, fmt, image=image, redact_exif=True)  # type: ignore[arg-type]
        assert leaks(shared) == [], fmt
        assert "redacted (--redact-exif)" in shared.replace("\\", "")
        assert "coarsened to about 10 km because they come from the photo's GPS metadata" in htmllib.unescape(
            shared
        ).replace("\\", "")

    red = Prediction.model_validate_json(render_report(pred, "json", redact_exif=True))
    assert red.redaction is not None and red.redaction.coarsened_deg == 0.1
    assert red.best is not None and (red.best.point.lat, red.best.point.lon) == (-33.9, 151.2)
    assert red.best.radius_km >= 10 and all(c.radius_km >= 10 for r in red.regions for c in r.circles)
    assert red.regions[0].area_km2 >= 314
    gps = next(e for e in red.evidence if e.id == "exif.gps")
    assert gps.point is None and gps.region is None and set(gps.details) == {"lat", "lon"}
    assert gps.value == "GPS position: redacted (--redact-exif)"
    assert {"exif.gps", "exif.time", "exif.camera", "exif.artist", "exif.bearing"} <= set(
        red.redaction.evidence_ids
    )
    assert (
        next(e for e in red.evidence if e.id == "exif.offset").value
        == next(e for e in pred.evidence if e.id == "exif.offset").value
    )  # a band of longitudes: kept
    assert red.provenance.image_sha256 == pred.provenance.image_sha256  # a hash is not a place
    # the answer card still says, plainly, that the photo carries GPS metadata
    page = render_report(pred, "html", image=image, redact_exif=True)
    assert "EXIF metadata carries a GPS position" in page
    assert 'value="-33.9, 151.2"' in page and "#map=11/-33.9/151.2" in page


def test_redact_exif_without_the_gps_answer_removes_and_does_not_coarsen(settings, gazetteer, tmp_path):
    loc = make_locator(settings, gazetteer, offline=True, use_exif_gps=False)
    pred, image = run(loc, gps_photo(tmp_path))
    assert pred.basis != "exif-gps"
    red = render_report(pred, "json", redact_exif=True)
    assert leaks(red) == [] and leaks(render_report(pred, "html", image=image, redact_exif=True)) == []
    assert Prediction.model_validate_json(red).redaction.coarsened_deg is None  # type: ignore[union-attr]
    from geosleuth.report import redact_exif

    once = redact_exif(pred)
    assert redact_exif(once) == once  # idempotent


def test_cli_redact_exif_covers_the_report_and_the_index(tmp_path):
    photo = gps_photo(tmp_path)
    runner = CliRunner()
    one = tmp_path / "r.html"
    res = runner.invoke(app, ["report", photo, "--out", str(one), "-q", "--redact-exif"])
    assert res.exit_code == 0, res.output
    assert leaks(one.read_text()) == [] and "redacted (--redact-exif)" in one.read_text()
    res = runner.invoke(app, ["report", photo, "--out", str(tmp_path / "plain.html"), "-q"])
    assert res.exit_code == 0 and f"{abs(OPERA[0]):.5f}" in (tmp_path / "plain.html").read_text()

    folder = tmp_path / "many"
    res = runner.invoke(
        app, ["report", photo, str(fixture("blank.jpg")), "--out", str(folder), "-q", "--redact-exif"]
    )
    assert res.exit_code == 0, res.output
    for page in folder.iterdir():
        assert leaks(page.read_text()) == [], page.name


def test_a_bug_on_one_photo_is_its_error_row_and_the_batch_goes_on(monkeypatch, tmp_path):
    from geosleuth.agents.pipeline import Locator

    real = Locator.run

    def buggy(self, source, *, name=None):  # type: ignore[no-untyped-def]
        if "blank" in str(source):
            raise ZeroDivisionError("a bug")
        return real(self, source, name=name)

    monkeypatch.setattr(Locator, "run", buggy)
    folder = tmp_path / "many"
    photos = [str(fixture("sign_fr_paris.jpg")), str(fixture("blank.jpg")), str(fixture("exif_gps.jpg"))]
    res = CliRunner().invoke(app, ["report", *photos, "--out", str(folder), "--ocr", "none", "-vv"])
    assert res.exit_code == 3, res.output  # as locate: a batch with a bug exits 3
    assert len([p for p in folder.glob("*.html") if p.name != "index.html"]) == 2  # the others got theirs
    index = (folder / "index.html").read_text()
    assert index.count("data-testid=row") == 2 and index.count("data-testid=error-row") == 1
    assert "internal error (ZeroDivisionError: a bug)" in index and "(InternalError)" in index
    assert "blank.jpg: internal error (ZeroDivisionError: a bug); rerun with -vv" in res.stderr
    assert "Traceback" in res.stderr  # at debug level (-vv) only
    res = CliRunner().invoke(
        app, ["report", *photos, "--out", str(tmp_path / "quiet"), "--ocr", "none", "-q"]
    )
    assert res.exit_code == 3 and "Traceback" not in res.stderr


# --- --online-map ---------------------------------------------------------------------------------


def policy_of(page: str) -> str:
    meta = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert meta is not None
    return htmllib.unescape(meta.group(1))


def test_the_online_map_is_pinned_hashed_and_its_data_cannot_close_its_block(settings, gazetteer):
    import base64
    import hashlib
    import json

    from geosleuth.report.online import LEAFLET_CSS, LEAFLET_CSS_SRI, LEAFLET_JS, LEAFLET_JS_SRI, map_data

    loc = make_locator(settings, gazetteer, offline=True)
    pred, image = run(loc, fixture("sign_fr_paris.jpg"))
    pred.best.label = HOSTILE
    pred.candidates[1].label = HOSTILE_VLM + "</script><!--"
    offline = render_report(pred, "html", image=image)
    page = render_report(pred, "html", image=image, online_map=True)
    assert_inert(offline)  # the flag's absence: no script, the strict policy, no trace of the map
    assert "online-map" not in offline and "unpkg" not in offline and "leaflet" not in offline.lower()
    policy = policy_of(page)
    assert (
        "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy and "connect-src 'none'" in policy
    )
    assert "script-src 'sha256-" in policy and LEAFLET_JS in policy and LEAFLET_CSS in policy
    assert "img-src data: https://tile.openstreetmap.org;" in policy
    # exactly one inline script, ours, and the policy allows it by the hash of what is in the page
    inline = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(inline) == 1
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in policy
    assert f'src="{LEAFLET_JS}" integrity="{LEAFLET_JS_SRI}" crossorigin="anonymous"' in page
    assert f'href="{LEAFLET_CSS}" integrity="{LEAFLET_CSS_SRI}" crossorigin="anonymous"' in page
    assert "innerHTML" not in inline[0] and "textContent" in inline[0]
    # the data block: one element, nothing that can end it, and it reads back as the map's layers
    block = re.findall(r'<script type="application/json" id="online-map-data">(.*?)</script>', page, re.S)
    assert len(block) == 1 and not set("<>&") & set(block[0])
    assert json.loads(block[0]) == json.loads(json.dumps(map_data(pred)))
    assert json.loads(block[0])["best"]["label"] == HOSTILE
    assert page.count("<script") == 3  # the data, Leaflet, ours: the hostile labels made none
    # the stylesheet the policy hashes is the page's one style element
    (css,) = re.findall(r"<style>(.*?)</style>", page, re.S)
    assert "'sha256-" + base64.b64encode(hashlib.sha256(css.encode()).digest()).decode() + "'" in policy
    with pytest.raises(ValueError, match="HTML"):
        render_report(pred, "md", online_map=True)


def test_cli_online_map(tmp_path):
    runner = CliRunner()
    out = tmp_path / "r.html"
    res = runner.invoke(
        app, ["report", "examples/rue-de-rivoli.jpg", "--out", str(out), "-q", "--online-map"]
    )
    assert res.exit_code == 0, res.output
    assert 'id="online-map"' in out.read_text() and "unpkg.com/leaflet@1.9.4" in out.read_text()
    res = runner.invoke(
        app,
        [
            "report",
            "examples/rue-de-rivoli.jpg",
            "--out",
            str(tmp_path / "r.md"),
            "--format",
            "md",
            "--online-map",
        ],
    )
    assert res.exit_code == 2 and "--online-map" in res.stderr


def test_layout_fixes_from_looking_at_the_screenshots(settings, gazetteer):
    """What the screenshots showed reading badly, held by structure rather than wording."""
    loc = make_locator(settings, gazetteer, offline=True, use_exif_gps=False)
    # a blank photo: no empty evidence table, a sentence in its place, a photo not blown up
    pred, image = run(loc, fixture("blank.jpg"))
    page = render_report(pred, "html", image=image)
    reasoning = page.split('id="reasoning"')[1].split("</section>")[0]
    assert "<table>" not in reasoning and '<p class="muted">' in reasoning
    assert re.search(r'<svg class="photo" width="480" viewBox="0 0 320 240"', page)  # 2x at most, to 480
    # many candidates strung from Europe to southern Africa: views neither strips nor ribbons
    pred, image = run(loc, fixture("exif_gps.jpg"))
    page = render_report(pred, "html", image=image)
    for name in ("answer", "regions"):
        box = re.search(rf'class="view view-{name}" viewBox="([^"]+)"', page)
        assert box is not None
        _, _, w, h = (float(v) for v in box.group(1).split())
        assert 1.25 - 1e-6 <= w / h <= 2.2 + 1e-6, name
    # the GPS was ignored (use_exif_gps off): it is not "used", nor a clue of the reasoning
    row = re.search(r'id="ev-exif\.gps">(.*?)</tr>', page, re.S)
    assert row is not None and row.group(1).rstrip().endswith("</td>") and "<td>no <span" in row.group(1)
    steps = page.split('<ol class="steps">')[1].split("</ol>")[0]
    assert "#ev-exif.offset" in steps and "#ev-exif.gps" not in steps
    # a located answer: its place's name beside the best marker, in each view
    pred, image = run(loc, fixture("sign_fr_paris.jpg"))
    page = render_report(pred, "html", image=image)
    assert page.count('class="best-label"') == 3 and ">Paris</text>" in page
    assert "Against it:" not in page.split('id="reasoning"')[1].split("<table>")[0]
