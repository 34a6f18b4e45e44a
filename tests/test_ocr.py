import shutil
import subprocess

import pytest

from conftest import fixture
from geosleuth.config import OCRSettings
from geosleuth.errors import EngineUnavailableError
from geosleuth.tools.image import open_image
from geosleuth.tools.ocr import make_ocr_engine
from geosleuth.tools.ocr.base import TextLine, group_lines, merge_into_lines

HAS_TESSERACT = shutil.which("tesseract") is not None


def tesseract_langs() -> set[str]:
    if not HAS_TESSERACT:
        return set()
    out = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True, check=False)
    return set(out.stdout.split()[1:]) if out.returncode == 0 else set()


needs_tesseract = pytest.mark.skipif(
    not HAS_TESSERACT, reason="tesseract is not installed (apt-get install tesseract-ocr)"
)


def read(engine_name: str, name: str) -> list[str]:
    engine = make_ocr_engine(OCRSettings(engine=engine_name))
    return [ln.text for ln in engine.read([open_image(fixture(name)).rgb])[0].lines]


def test_rapidocr_reads_a_sign_as_lines():
    lines = read("rapidocr", "sign_fr_paris.jpg")
    assert len(lines) == 2 and lines[0] == "Rue de Rivoli"
    assert lines[1].replace(" ", "") == "75001Paris"  # PP-OCR sometimes drops the space


def test_rapidocr_reads_han_and_keeps_line_readings_for_numbers():
    engine = make_ocr_engine(OCRSettings(engine="rapidocr"))
    result = engine.read([open_image(fixture("shop_es_phone.jpg")).rgb])[0]
    phone_line = next(ln for ln in result.lines if "Tel" in ln.text)
    readings = [phone_line.text, *phone_line.alternatives]
    assert any("915" in r.replace(" ", "") for r in readings)
    han = read("rapidocr", "sign_ja_tokyo.jpg")
    assert any("新宿" in t for t in han)


@needs_tesseract
@pytest.mark.skipif("deu" not in tesseract_langs(), reason="tesseract-ocr-deu is not installed")
def test_hybrid_keeps_diacritics():
    lines = read("hybrid", "sign_de_berlin.jpg")
    assert "Königstraße" in lines


@needs_tesseract
@pytest.mark.skipif("jpn" not in tesseract_langs(), reason="tesseract-ocr-jpn is not installed")
def test_hybrid_reads_kana():
    lines = read("hybrid", "sign_ja_tokyo.jpg")
    assert any("しんじゅく" in t for t in lines)


@needs_tesseract
def test_tesseract_engine_alone():
    lines = read("tesseract", "sign_fr_paris.jpg")
    assert any("Paris" in t for t in lines)


def test_no_text_no_lines():
    assert read("rapidocr", "blank.jpg") == []


def test_engine_selection_and_errors(monkeypatch):
    assert make_ocr_engine(OCRSettings(engine="none")) is None
    auto = make_ocr_engine(OCRSettings(engine="auto"))
    assert auto.name == ("rapidocr+tesseract" if HAS_TESSERACT else "rapidocr")
    with pytest.raises(EngineUnavailableError, match="apt-get install tesseract-ocr"):
        make_ocr_engine(OCRSettings(engine="tesseract", tesseract_cmd="no-such-tesseract"))


def box_line(text: str, x0: float, y0: float, x1: float, y1: float) -> TextLine:
    return TextLine(text=text, confidence=0.9, box=(x0, y0, x1, y1))


def test_words_merge_into_lines_left_to_right():
    words = [
        box_line("Rivoli", 152, 12, 250, 40),
        box_line("Rue", 10, 10, 80, 40),
        box_line("de", 95, 11, 140, 41),
        box_line("75001", 10, 70, 110, 100),
        box_line("Paris", 125, 71, 210, 99),
        box_line("far away", 900, 70, 1000, 100),  # same height, big gap: another line
    ]
    lines = merge_into_lines(words)
    assert [ln.text for ln in lines] == ["Rue de Rivoli", "75001 Paris", "far away"]
    assert lines[0].box == (10, 10, 250, 41)


def test_group_lines_does_not_mix_sizes():
    # A big title above small print that overlaps it vertically is not one line.
    boxes = [(0, 0, 200, 100), (210, 60, 260, 80)]
    assert group_lines(boxes) == [[0], [1]]


class _TileDetector:
    """A detector that sees one small sign only when it is enlarged: at (1200, 900)-(1260, 912)
    of a 1600x1200 photo, in whatever tile covers it; plus one big line found at every size."""

    max_side = 2000

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def detect_and_read(self, image):
        self.calls.append(image.size)
        if image.size == (1600, 1200):  # the whole photo: only the big line
            return [((100.0, 100.0, 900.0, 160.0), "BIG LINE", 0.95)]
        # a tile, enlarged 2x: report the small sign where this tile holds it (tile origin from
        # the pixel we painted at each tile's top-left corner)
        x0, y0 = image.getpixel((0, 0))[:2]
        x0, y0 = x0 * 10, y0 * 10
        found = [((2 * (100 - x0), 2 * (100 - y0), 2 * (900 - x0), 2 * (160 - y0)), "BIG LINE", 0.95)]
        if x0 <= 1200 and y0 <= 900 and x0 + image.size[0] / 2 >= 1260 and y0 + image.size[1] / 2 >= 912:
            found.append(
                ((2 * (1200 - x0), 2 * (900 - y0), 2 * (1260 - x0), 2 * (912 - y0)), "Nørreport", 0.8)
            )
        return found


def test_tiles_find_small_text_and_drop_what_the_first_pass_found():
    from PIL import Image

    from geosleuth.tools.ocr.hybrid import HybridOCREngine

    image = Image.new("RGB", (1600, 1200), (128, 128, 128))
    # each tile's top-left pixel says where the tile starts (in tens of pixels), so the fake
    # detector can place its boxes; LANCZOS keeps a corner pixel's value closely enough
    tw, th = int(1600 * 0.625), int(1200 * 0.625)
    for x0 in (0, 1600 - tw):
        for y0 in (0, 1200 - th):
            image.paste((x0 // 10, y0 // 10, 0), (x0, y0, x0 + 3, y0 + 3))
    detector = _TileDetector()
    engine = HybridOCREngine(detector, tesseract=None, tiles="auto")  # type: ignore[arg-type]
    first = detector.detect_and_read(image)
    new = engine._tiled(image, first)
    assert len(detector.calls) == 1 + 4 and all(s == (2 * tw, 2 * th) for s in detector.calls[1:])
    # the small sign once (two tiles hold it), in the photo's pixels; the big line not again
    assert [t for _, t, _ in new] == ["Nørreport"]
    (box, _, _) = new[0]
    assert box == pytest.approx((1200, 900, 1260, 912), abs=1.0)


def test_tiles_only_when_the_first_pass_read_little():
    from geosleuth.tools.ocr.hybrid import _little_text

    sure = ((0.0, 0.0, 10.0, 10.0), "Rue", 0.95)
    unsure = ((0.0, 0.0, 10.0, 10.0), "~", 0.2)
    assert _little_text([]) and _little_text([sure, unsure, unsure])
    assert not _little_text([sure, sure])


def test_latin_lines_are_read_with_english_and_the_languages_identified_in_them():
    from geosleuth.tools.langid import LanguageGuess
    from geosleuth.tools.ocr.hybrid import HybridOCREngine

    class Says:
        def __init__(self, *guesses):
            self.guesses = [LanguageGuess(code=c, name=c, confidence=p) for c, p in guesses]

        def identify(self, texts):
            return [self.guesses for _ in texts]

    packs = ["eng", "cat", "dan", "deu", "fra", "nld", "pol", "spa"]

    class Detector:
        max_side = 2000

    def chosen(*guesses):
        engine = HybridOCREngine(Detector(), None, identifier=Says(*guesses))  # type: ignore[arg-type]
        return engine._latin_packs(packs, ["NOUS VOUS RAPPELONS", "SORTIE"])

    assert chosen(("en", 0.17), ("fr", 0.19)) == ["eng", "fra"]  # a French station board
    assert chosen(("en", 0.9)) == ["eng"]
    assert chosen(("fr", 0.5), ("de", 0.3), ("nl", 0.2)) == ["eng", "fra", "deu"]  # at most three
    assert chosen(("fr", 0.05)) == packs  # nothing identified surely: every pack
    assert chosen(("ja", 0.9)) == packs  # a language without a Latin pack
    assert chosen() == packs
    no_cld2 = HybridOCREngine(Detector(), None)  # type: ignore[arg-type]
    assert no_cld2._latin_packs(packs, ["x"]) == packs
