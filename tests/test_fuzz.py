"""Fuzzing the readers of untrusted input with generated and mutated inputs: the image loader, the
EXIF reader and the VLM answer parser. Only the project's typed errors may come out (see
geosleuth.testing.fuzz for the targets and their invariants). A few seconds each; scripts/fuzz.py
runs the same targets for longer."""

from __future__ import annotations

import pytest

pytest.importorskip("hypothesis")
from hypothesis import given, settings

from conftest import FIXTURES
from geosleuth.testing import fuzz

IMAGES = [
    "exif_gps.jpg",
    "exif_gps.png",
    "exif_gps.webp",
    "exif_gps.tif",
    "exif_gps.heic",
    "exif_orientation.jpg",
    "mode_cmyk.jpg",
    "mode_palette.png",
    "mode_alpha.png",
    "mode_16bit.tif",
    "truncated_with_gps.jpg",
    "sign_fr_paris.jpg",
]
SEEDS = [(FIXTURES / name).read_bytes() for name in IMAGES]
EXIF_SEEDS = SEEDS[:6]  # photos with metadata


def _exif_block(name: str) -> bytes:
    from PIL import Image

    with Image.open(FIXTURES / name) as img:
        return bytes(img.info["exif"])


BLOCKS = [
    _exif_block(n)
    for n in ("exif_gps.jpg", "exif_bad_clock.jpg", "exif_orientation.jpg", "exif_gps_void.jpg")
]


@settings(max_examples=80)
@given(data=fuzz.mutated(SEEDS))
def test_the_image_loader_only_raises_typed_errors_on_mutated_files(data):
    fuzz.load_image(data)


@settings(max_examples=60)
@given(data=fuzz.mutated(EXIF_SEEDS, max_ops=3))
def test_the_exif_reader_never_raises_on_mutated_metadata(data, gazetteer):
    fuzz.read_metadata(data, gazetteer)


@settings(max_examples=80)
@given(block=fuzz.mutated(BLOCKS, max_ops=3))
def test_the_exif_reader_never_raises_on_mutated_blocks(block, gazetteer):
    fuzz.read_metadata(fuzz.jpeg_with_exif(block), gazetteer)


@settings(max_examples=80)
@given(block=fuzz.exif_blocks())
def test_the_exif_reader_checks_every_generated_value(block, gazetteer):
    fuzz.read_metadata(fuzz.jpeg_with_exif(block), gazetteer)


@settings(max_examples=200)
@given(text=fuzz.vlm_answers())
def test_the_vlm_answer_parser_never_fails_on_any_answer(text):
    fuzz.parse_answer(text)


def test_no_warning_escapes_the_loader_or_the_exif_reader(gazetteer, recwarn):
    """Pillow's warnings about a file are caught while it is read and kept as notes: none reaches
    the caller (the CLI would log it; a library caller would see a raw warning)."""
    from geosleuth.tools.exif import read_exif
    from geosleuth.tools.image import open_image

    # one IFD0 entry, the Model tag (272) as 12 SHORTs: Pillow warns "had too many entries" when
    # the value is first read, which is after the file was opened
    ifd = b"\x00\x01" + b"\x01\x10\x00\x03\x00\x00\x00\x0c\x00\x00\x00\x1a" + b"\x00\x00\x00\x00"
    bad = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08" + ifd + b"\x00" * 24
    img = open_image(fuzz.jpeg_with_exif(bad))
    assert any("too many entries" in n for n in img.notes)
    read_exif(img, gazetteer)
    assert not [w for w in recwarn if "PIL" in w.filename], [str(w.message) for w in recwarn]
