import io

import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURES, fixture
from geosleuth.errors import (
    CorruptImageError,
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


def test_upright_pixels_do_not_carry_the_orientation_to_be_turned_again():
    from geosleuth.tools.image import to_rgb

    img = open_image(fixture("exif_orientation.jpg"))
    # what the stages do with the working copy (a VLM resize, an encoder) must not rotate it again
    assert to_rgb(img.rgb).size == img.rgb.size and not img.rgb.getexif()
    once = to_rgb(Image.open(fixture("exif_orientation.jpg")))
    assert to_rgb(once).size == once.size == img.rgb.size
    assert img.region().size == img.rgb.size


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


# --- bounded memory: a working copy, full resolution only where it is needed ---------------------


def _asymmetric(size=(300, 200)) -> Image.Image:
    """A picture whose every orientation looks different (a gradient and an off-centre mark)."""
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.float64)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float64)[:, None, None]
    arr = np.concatenate(
        [np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)), np.full((h, w, 1), 90.0)], 2
    )
    arr[20:50, 30:120] = (255, 0, 0)
    return Image.fromarray(arr.astype(np.uint8))


def test_a_large_png_gets_a_bounded_working_copy_and_boxes_map_back():
    from data import big_png

    img = open_image(big_png(6000, 4000), max_side=2000)
    assert (
        img.rgb.size == (2000, 1333)
        and img.full_size == (6000, 4000)
        and (img.width, img.height) == (6000, 4000)
    )
    assert img.scale == pytest.approx(1 / 3)
    assert img.full_box((100.0, 100.0, 200.0, 200.0)) == pytest.approx((300.0, 300.1, 600.0, 600.2), abs=0.5)
    crop = img.region((2990, 1990, 3010, 2010))
    assert crop.size == (20, 20) and crop.mode == "RGB"
    with Image.open(io.BytesIO(big_png(6000, 4000))) as full:
        assert np.array_equal(
            np.asarray(crop), np.asarray(full.convert("RGB").crop((2990, 1990, 3010, 2010)))
        )


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path, monkeypatch):
    from PIL import JpegImagePlugin

    path = tmp_path / "big.jpg"
    _asymmetric((4800, 3200)).save(path, quality=90)
    asked = []
    real = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        asked.append(size)
        return real(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    img = open_image(path, max_side=1000)
    assert img.rgb.size == (1000, 667) and img.full_size == (4800, 3200)
    assert asked == [(1000, 667)]  # decoded at 1/4 (1200 x 800), never at full size
    # the zoom's region: full resolution for a small box, a reduced scale is enough for a big one
    assert img.region((100, 100, 300, 200)).size == (200, 100)
    assert img.region((0, 0, 4800, 3200), enough=1200).size == (1200, 800)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_region_is_the_upright_full_resolution_crop_in_every_orientation(orientation):
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    _asymmetric().save(buf, format="PNG", exif=exif.tobytes())
    data = buf.getvalue()
    small = open_image(data, max_side=100)  # the working copy is smaller: region() decodes again
    full = open_image(data, max_side=None)
    assert full.rgb.size == small.full_size and small.orientation == orientation
    w, h = small.full_size
    for box in ((0, 0, w, h), (10, 5, 60, 40), (w - 50, h - 30, w, h)):
        assert np.array_equal(np.asarray(small.region(box)), np.asarray(full.rgb.crop(box))), box
    assert small.rgb.size == ((100, 67) if w > h else (67, 100))


def test_region_refuses_a_file_that_changed_since_it_was_opened(tmp_path):
    path = tmp_path / "photo.png"
    _asymmetric().save(path)
    img = open_image(path, max_side=100)
    assert img.region((0, 0, 50, 50)).size == (50, 50)
    _asymmetric().rotate(90, expand=True).save(path)
    with pytest.raises(CorruptImageError, match="changed since it was opened"):
        img.region((0, 0, 50, 50))
    with pytest.raises(ValueError, match="not inside"):
        img.region((0, 0, 500, 50))


def test_a_16_bit_working_copy_keeps_the_full_images_contrast():
    from geosleuth.tools.image import to_rgb

    small = open_image(fixture("mode_16bit.tif"), max_side=200)
    full = to_rgb(Image.open(fixture("mode_16bit.tif")))
    ref = np.asarray(full.resize(small.rgb.size, Image.Resampling.LANCZOS).convert("L"), dtype=np.float64)
    got = np.asarray(small.rgb.convert("L"), dtype=np.float64)
    assert np.abs(ref - got).mean() < 3
    assert np.array_equal(np.asarray(small.region((0, 0, 50, 40))), np.asarray(full.crop((0, 0, 50, 40))))


def test_formats_that_cost_more_to_decode_get_a_lower_pixel_limit():
    buf = io.BytesIO()
    _asymmetric((100, 100)).save(buf, format="WEBP")
    with pytest.raises(ImageTooLargeError, match="divided by 4: decoding WebP") as info:
        open_image(buf.getvalue(), max_pixels=30_000)
    assert "max_image_pixels" in str(info.value)
    buf = io.BytesIO()
    _asymmetric((100, 100)).save(buf, format="PNG")
    assert open_image(buf.getvalue(), max_pixels=30_000).rgb.size == (100, 100)


def test_the_default_pixel_limit_is_the_settings_default():
    from geosleuth.config import Settings
    from geosleuth.tools.image import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

    s = Settings()
    assert s.max_image_pixels == DEFAULT_MAX_PIXELS and s.max_file_bytes == DEFAULT_MAX_BYTES


@pytest.mark.slow
def test_opening_a_large_png_holds_about_one_decode(tmp_path):
    """48 M pixels decode to 192 MB (4 bytes a pixel); opening the photo holds that and a reduced
    copy, not two full-size copies as the old loader did (measured: 270 MB, before 370 MB)."""
    import subprocess
    import sys

    from data import big_png

    path = tmp_path / "big.png"
    path.write_bytes(big_png(8000, 6000))
    code = (
        "import resource, sys; from geosleuth.tools.image import open_image; "
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        "img = open_image(sys.argv[1], max_side=2000); "
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert float(out.stdout) < 192 * 1.6, out.stdout


def test_libtiffs_decoding_errors_do_not_reach_stderr(tmp_path):
    """libtiff prints its errors straight to stderr; the loader turns that off (the error is the
    photo's pixel_error). Found by the fuzzer."""
    import subprocess
    import sys

    data = bytearray(fixture("mode_16bit.tif").read_bytes())
    for i in range(200, 260):  # damage the deflated strip
        data[i] ^= 0x55
    path = tmp_path / "damaged.tif"
    path.write_bytes(bytes(data))
    code = (
        "import sys; from geosleuth.tools.image import open_image; print(open_image(sys.argv[1]).pixel_error)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert "truncated or corrupt" in out.stdout and out.stderr == ""


def test_a_tiff_field_of_the_wrong_type_is_damaged_pixels_not_a_crash():
    """StripOffsets (tag 273) written as a RATIONAL: Pillow raises TypeError while decoding. Found
    by the fuzzer; the photo loads with its metadata and the reason."""
    import struct

    data = bytearray(fixture("exif_gps.tif").read_bytes())
    ifd = struct.unpack("<I", data[4:8])[0]
    for k in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        entry = ifd + 2 + 12 * k
        if struct.unpack("<H", data[entry : entry + 2])[0] == 273:
            data[entry + 2 : entry + 4] = struct.pack("<H", 5)  # LONG -> RATIONAL
    img = open_image(bytes(data))
    assert img.rgb is None and "IFDRational" in img.pixel_error
    assert len(img.exif.get_ifd(0x8825)) > 0  # the GPS survives
