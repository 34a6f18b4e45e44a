"""In-process Tesseract, the world's scripts, and saying when text goes unread."""

import shutil
import subprocess
from functools import cache

import pytest
from PIL import ImageOps

from conftest import fixture
from data import SCRIPT_SIGNS, script_sign
from geosleuth.agents.nodes.evidence import unread_message
from geosleuth.config import OCRSettings
from geosleuth.tools.image import open_image
from geosleuth.tools.ocr import make_ocr_engine
from geosleuth.tools.ocr.base import OCRResult
from geosleuth.tools.ocr.scripts import missing_major_scripts, script_groups, text_script
from geosleuth.tools.ocr.tessapi import parse_tsv

HAS_TESSERACT = shutil.which("tesseract") is not None
needs_tesseract = pytest.mark.skipif(
    not HAS_TESSERACT, reason="tesseract is not installed (apt-get install tesseract-ocr)"
)
# The pack each script sign needs (what .ci/run installs).
SIGN_PACK = {
    "Cyrl": "rus",
    "Grek": "ell",
    "Arab": "ara",
    "Hebr": "heb",
    "Deva": "hin",
    "Hang": "kor",
    "Hans": "chi_sim",
    "Jpan": "jpn",
    "Latn": "dan",
}


@cache
def langs() -> frozenset[str]:
    if not HAS_TESSERACT:
        return frozenset()
    out = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True, check=False)
    return frozenset(out.stdout.split()[1:]) if out.returncode == 0 else frozenset()


@cache
def hybrid():  # one engine for the module: its packs load once
    return make_ocr_engine(OCRSettings(engine="auto"))


@needs_tesseract
def test_in_process_tesseract_reads_the_same_words_as_the_program():
    pytest.importorskip("ctypes")
    from geosleuth.tools.ocr.tesseract import TesseractEngine

    api = TesseractEngine(languages=["eng", "fra", "deu"], use_api=True)
    prog = TesseractEngine(languages=["eng", "fra", "deu"], use_api=False)
    assert api.in_process and not prog.in_process
    for name in ("sign_fr_paris.jpg", "sign_de_berlin.jpg", "sign_en_generic.jpg"):
        grey = ImageOps.grayscale(open_image(fixture(name)).rgb)
        a, b = api.words(grey, psm=11), prog.words(grey, psm=11)
        assert [w[0] for w in a] == [w[0] for w in b], name
        assert all(abs(x[1] - y[1]) < 0.02 and x[2] == y[2] for x, y in zip(a, b, strict=True))
    assert "(libtesseract)" in api.version()


@needs_tesseract
def test_the_handle_pool_keeps_the_most_recent_language_sets_and_frees_the_rest():
    import gc
    import weakref

    from geosleuth.tools.ocr.tessapi import TessAPIPool

    pool = TessAPIPool(max_handles=2)
    eng = pool.get(["eng"])
    assert pool.get(["eng"]) is eng  # kept, not re-made
    fra = weakref.ref(pool.get(["fra"]))
    pool.get(["eng"])  # eng is now the most recent: fra goes first
    pool.get(["deu"])
    assert len(pool) == 2
    gc.collect()
    assert fra() is None  # evicted and freed (its handle with it)
    assert pool.get(["eng"]) is eng
    with pytest.raises(ValueError, match="max_handles"):
        TessAPIPool(max_handles=0)


@needs_tesseract
def test_a_tesseract_call_stops_at_its_deadline_and_gives_up(caplog):
    import time

    from geosleuth.tools.ocr.tessapi import TessAPI

    api = TessAPI(["eng"])
    grey = ImageOps.grayscale(open_image(fixture("sign_en_generic.jpg")).rgb)
    page = grey.resize((grey.width * 4, grey.height * 4))  # enough work to outlast 1 ms
    t0 = time.perf_counter()
    full = api.words(page, psm=11)
    whole = time.perf_counter() - t0
    t0 = time.perf_counter()
    with caplog.at_level("WARNING", logger="geosleuth.tools.ocr.tessapi"):
        cut = api.words(page, psm=11, timeout_s=0.001)
    assert time.perf_counter() - t0 < whole / 2
    assert full and cut == [] and "deadline" in caplog.text and "ocr.timeout_s" in caplog.text
    # the handle reads on normally after a read cut short
    assert api.words(grey, psm=11, timeout_s=30) == api.words(grey, psm=11)  # in time: the same words


def test_parse_tsv_reads_the_api_output_without_header_and_drops_joiners():
    row = "5\t1\t1\t1\t1\t1\t10\t20\t30\t40\t91.5\tदिल्\u200dली\n4\t1\t1\t1\t1\t0\t0\t0\t9\t9\t-1\t\n"
    assert parse_tsv(row) == [("दिल्ली", 0.915, (10, 20, 40, 60))]


def test_text_lines_record_their_script():
    from geosleuth.schemas import TextLine

    cases = {"улица Ленина": "Cyrl", "渋谷駅 ハチ公口": "Jpan", "서울 特別市": "Hang", "上海市": "Hani"}
    for text, script in cases.items():
        assert TextLine(text=text, confidence=0.9, box=(0, 0, 1, 1)).script == script
    assert TextLine(text="75001", confidence=0.9, box=(0, 0, 1, 1)).script is None
    assert text_script("Königstraße") == "Latn"


def test_script_groups_put_the_main_pack_first_and_name_missing_packs():
    groups = script_groups(["cat", "deu", "eng", "rus", "ukr", "jpn", "xyz"])
    assert groups["Latn"][0] == "eng" and "xyz" in groups["Latn"]
    assert groups["Cyrl"] == ["rus", "ukr"] and groups["Jpan"] == ["jpn"]
    missing = dict(missing_major_scripts(["eng", "jpn"]))
    assert missing["Cyrillic"] == "tesseract-ocr-rus" and missing["Han"] == "tesseract-ocr-chi-sim"
    assert "Latin" not in missing and "Japanese" not in missing


def test_unread_text_says_what_can_be_read_and_what_to_install():
    result = OCRResult(
        engine="x",
        unread=2,
        readable_scripts=["Latin"],
        missing_scripts=missing_major_scripts(["eng"]),
    )
    msg = unread_message(result)
    assert msg.startswith("2 text regions found in the image could not be read")
    assert "reads Latin" in msg and "Cyrillic: tesseract-ocr-rus" in msg


@needs_tesseract
@pytest.mark.parametrize("script", sorted(SIGN_PACK))
def test_a_sign_in_each_script_is_read(script):
    if SIGN_PACK[script] not in langs():
        pytest.skip(
            f"{SIGN_PACK[script]} is not installed (apt-get install tesseract-ocr-{SIGN_PACK[script]})"
        )
    try:
        img = script_sign(script)
    except FileNotFoundError as exc:
        pytest.skip(f"font missing: {exc}")
    result = hybrid().read([img])[0]
    text = "\n".join(ln.text for ln in result.lines)
    for word in SCRIPT_SIGNS[script][2]:
        assert word in text, (script, text)
    main = {"Hans": "Hani"}.get(script, script)
    assert any(ln.script == main for ln in result.lines), [ln.script for ln in result.lines]


@needs_tesseract
def test_text_in_a_script_without_its_pack_is_reported_unread():
    try:
        img = script_sign("Hebr")
    except FileNotFoundError as exc:
        pytest.skip(f"font missing: {exc}")
    engine = make_ocr_engine(OCRSettings(engine="auto", languages=["eng"]))
    result = engine.read([img])[0]
    assert not any(ln.script == "Hebr" for ln in result.lines)
    assert result.unread >= 1, [(ln.text, ln.confidence) for ln in result.lines]
    assert result.readable_scripts == ["Latin"]
    assert ("Hebrew", "tesseract-ocr-heb") in result.missing_scripts
