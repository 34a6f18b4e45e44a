import io

import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURES, fixture
from geosleuth.errors import (
    EmptyImageError,
    ImageInputError,
    ImageNotFoundError,
    ImageTooLargeError,
    NotAFileError,
    NotAnImageError,
    UnsupportedFormatError,
)
from geosleuth.tools.image import open_image


@pytest.mark.parametrize(
    "name,error,words",
    [
        ("does_not_exist.jpg", ImageNotFoundError, "no such file"),
        ("empty.jpg", EmptyImageError, "empty (0 bytes)"),
        ("not_an_image.jpg", NotAnImageError, "not an image"),
        ("corrupt_header.png", NotAnImageError, "not an image"),
        ("bomb.png", ImageTooLargeError, "decompression bomb"),
        ("document.pdf", UnsupportedFormatError, "PDF"),
        ("drawing.svg", UnsupportedFormatError, "SVG"),
        ("icon.ico", UnsupportedFormatError, "ICO images are not supported"),
    ],
)
def test_bad_inputs_raise_one_typed_readable_error(name, error, words):
    path = FIXTURES / name
    with pytest.raises(error) as info:
        open_image(path)
    assert words in str(info.value)
    assert str(path) in str(info.value)  # names the input
    assert "\n" not in str(info.value)  # one line
    assert isinstance(info.value, ImageInputError)


def test_errors_subclass_builtins():
    with pytest.raises(FileNotFoundError):
        open_image(FIXTURES / "nope.png")
    with pytest.raises(IsADirectoryError):
        open_image(FIXTURES)
    with pytest.raises(ValueError):
        open_image(fixture("empty.jpg"))


def test_directory_and_size_limits(tmp_path):
    with pytest.raises(NotAFileError, match="directory"):
        open_image(tmp_path)
    with pytest.raises(ImageTooLargeError, match="max_file_bytes"):
        open_image(fixture("sign_fr_paris.jpg"), max_bytes=1000)
    with pytest.raises(ImageTooLargeError, match="max_image_pixels"):
        open_image(fixture("sign_fr_paris.jpg"), max_pixels=1000)


def test_truncated_pixels_without_metadata_fail_but_with_metadata_load():
    img = open_image(fixture("truncated.jpg"))
    assert img.rgb is None and "truncated" in img.pixel_error
    img = open_image(fixture("truncated_with_gps.jpg"))
    assert img.rgb is None and len(img.exif.get_ifd(0x8825)) > 0  # the GPS survives


@pytest.mark.parametrize(
    "name", ["mode_cmyk.jpg", "mode_grey.png", "mode_palette.png", "mode_alpha.png", "mode_16bit.tif"]
)
def test_every_mode_becomes_usable_rgb(name):
    img = open_image(fixture(name))
    assert img.rgb is not None and img.rgb.mode == "RGB"
    arr = np.asarray(img.rgb, dtype=np.float64)
    assert arr.std() > 20  # contrast survives (16-bit is rescaled, not clipped to white)
    ref = np.asarray(open_image(fixture("sign_fr_paris.jpg")).rgb.convert("L"), dtype=np.float64)
    grey = np.asarray(img.rgb.convert("L"), dtype=np.float64)
    assert np.corrcoef(ref.ravel(), grey.ravel())[0, 1] > 0.8  # same picture, whatever the mode


def test_exif_orientation_is_applied():
    img = open_image(fixture("exif_orientation.jpg"))
    assert img.height > img.width  # stored sideways
    assert img.rgb.width > img.rgb.height  # upright after the orientation tag


def test_bytes_and_pil_inputs():
    data = fixture("exif_gps.jpg").read_bytes()
    a = open_image(data)
    assert a.source == "<bytes>" and a.format == "JPEG" and len(a.sha256) == 64
    b = open_image(Image.open(io.BytesIO(data)), name="mine")
    assert b.source == "mine" and b.rgb.size == a.rgb.size
    with pytest.raises(EmptyImageError):
        open_image(b"", name="<stdin>")


def test_formats():
    for ext, fmt in [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"), ("tif", "TIFF"), ("heic", "HEIF")]:
        img = open_image(fixture(f"exif_gps.{ext}"))
        assert img.format == fmt and img.rgb is not None


@pytest.mark.parametrize("name", [*sorted(p.name for p in FIXTURES.iterdir()), "does_not_exist.jpg"])
def test_check_image_raises_what_open_image_raises_before_decoding(name):
    """The quick check reads only the header, yet agrees with a full open on every fixture: the
    same error (type and message), or none where the photo opens (damaged pixels included)."""
    from geosleuth.tools.image import check_image

    path = FIXTURES / name
    try:
        open_image(path)
    except ImageInputError as exc:
        expected: ImageInputError | None = exc
    else:
        expected = None
    try:
        check_image(path)
    except ImageInputError as exc:
        assert expected is not None and type(exc) is type(expected) and str(exc) == str(expected)
    else:
        assert expected is None
    if path.is_file():  # the same for bytes (stdin)
        data = path.read_bytes()
        try:
            check_image(data, name="<stdin>")
        except ImageInputError as exc:
            assert expected is not None and type(exc) is type(expected)
        else:
            assert expected is None
