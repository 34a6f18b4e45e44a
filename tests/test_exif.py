import csv

import pytest

from conftest import EXIF_PHOTOS, fixture, requires_shared_data
from geosleuth.geo import geodesic_km
from geosleuth.schemas import EvidenceKind
from geosleuth.tools.exif import read_exif
from geosleuth.tools.image import open_image

EIFFEL = (48.858370, 2.294481)


def exif_of(name, gazetteer):
    return read_exif(open_image(fixture(name)), gazetteer)


@pytest.mark.parametrize("ext", ["jpg", "png", "webp", "tif", "heic"])
def test_gps_in_every_format(ext, gazetteer):
    rep = exif_of(f"exif_gps.{ext}", gazetteer)
    assert rep.gps is not None
    assert geodesic_km(rep.gps.lat, rep.gps.lon, *EIFFEL) * 1000 < 1.0
    assert rep.altitude_m == 35.0
    assert rep.camera == "GeoSleuth Fixture Cam"
    gps = next(e for e in rep.evidence if e.id == "exif.gps")
    assert gps.usable and gps.weight > 0.9 and gps.point == rep.gps


def test_southern_and_western_hemispheres(gazetteer):
    rep = exif_of("exif_gps_south_west.jpg", gazetteer)
    assert rep.gps.lat == pytest.approx(-22.951916, abs=1e-5) and rep.gps.lon == pytest.approx(
        -43.210487, abs=1e-5
    )


@pytest.mark.parametrize(
    "name,reason",
    [
        ("exif_gps_zero_denominator.jpg", "zero denominator"),
        ("exif_gps_null_island.jpg", "exactly 0, 0"),
        ("exif_gps_out_of_range.jpg", "out of range"),
        ("exif_gps_no_coordinates.jpg", "needs both latitude and longitude"),
        ("exif_gps_void.jpg", "measurement void"),
    ],
)
def test_broken_gps_is_recorded_with_a_reason_and_never_used(name, reason, gazetteer):
    rep = exif_of(name, gazetteer)
    assert rep.gps is None
    bad = next(e for e in rep.evidence if e.kind == EvidenceKind.GPS)
    assert not bad.usable and bad.weight == 0 and bad.point is None
    assert reason in bad.reason
    assert any(reason in m for m in rep.missing)


def test_utc_offset_implies_a_longitude_band_and_countries(gazetteer):
    rep = exif_of("exif_gps.jpg", gazetteer)
    assert rep.utc_offset_minutes == 120 and rep.offset_source == "OffsetTimeOriginal tag"
    off = next(e for e in rep.evidence if e.kind == EvidenceKind.UTC_OFFSET)
    assert off.usable and off.weight > 0
    assert off.region.west < EIFFEL[1] < off.region.east  # the band holds Paris in July (CEST)
    assert (
        {"FR", "DE", "IT"} <= set(off.countries) and "GB" not in off.countries and "JP" not in off.countries
    )


def test_offset_from_gps_time_and_a_wrong_clock(gazetteer):
    east = exif_of("exif_no_gps.jpg", gazetteer)
    assert (
        east.utc_offset_minutes == 540
        and "JP" in next(e for e in east.evidence if e.id == "exif.offset").countries
    )
    bad = exif_of("exif_bad_clock.jpg", gazetteer)
    assert bad.utc_offset_minutes is None
    rejected = next(e for e in bad.evidence if e.kind == EvidenceKind.UTC_OFFSET)
    assert not rejected.usable and "more than any time zone" in rejected.reason


def test_no_metadata(gazetteer):
    rep = exif_of("sign_fr_paris.jpg", gazetteer)
    assert not rep.present and rep.gps is None
    assert rep.missing == ["no EXIF metadata (stripped, or never written)"]


def _index_rows():
    rows = []
    for sub in ("exif-samples", "metadata-extractor-images"):
        path = EXIF_PHOTOS / sub / "gps_index.csv"
        if path.exists():
            rows += [
                (EXIF_PHOTOS / sub / "images" / r["path"], float(r["lat"]), float(r["lon"]))
                for r in csv.DictReader(path.open())
            ]
    return rows


@requires_shared_data()
def test_every_real_photo_is_read_within_10_m(gazetteer):
    rows = _index_rows()
    assert len(rows) == 47
    errors = []
    for path, lat, lon in rows:
        rep = read_exif(open_image(path), gazetteer)
        d = float(geodesic_km(rep.gps.lat, rep.gps.lon, lat, lon)) * 1000 if rep.gps else float("inf")
        if d > 10:
            errors.append(f"{path.name}: {d:.1f} m")
    assert not errors, errors


# --- damaged metadata is called what it is ------------------------------------------------------


@pytest.mark.parametrize("kind", ["garbage", "bad-header", "cut-short", "offset-outside"])
def test_a_corrupt_exif_block_is_called_corrupt_not_stripped(kind, gazetteer):
    from data import corrupt_exif_blocks, jpeg_with_exif

    rep = read_exif(open_image(jpeg_with_exif(corrupt_exif_blocks()[kind])), gazetteer)
    assert rep.present and rep.corrupt is not None and "corrupt" in rep.corrupt
    assert rep.gps is None and not any("stripped," in m for m in rep.missing)
    assert any("corrupt" in m for m in rep.missing)
    read = next(e for e in rep.evidence if e.id == "exif.read")
    assert not read.usable and "corrupt" in read.reason


def test_a_partly_corrupt_block_keeps_what_parsed_and_says_so(gazetteer):
    from data import EIFFEL, exif_bytes, jpeg_with_exif

    good = exif_bytes(lat=EIFFEL[0], lon=EIFFEL[1], offset="+02:00")
    rep = read_exif(open_image(jpeg_with_exif(good[: len(good) // 2])), gazetteer)
    assert rep.camera == "GeoSleuth Fixture Cam"  # the first entries survived
    assert rep.corrupt is not None and rep.corrupt.startswith("part of the EXIF block is corrupt")
    assert next(e for e in rep.evidence if e.id == "exif.read").reason.endswith("what parsed is used")


def test_an_empty_exif_block_is_absent_metadata_not_corruption(gazetteer):
    import piexif

    from data import jpeg_with_exif

    rep = read_exif(open_image(jpeg_with_exif(piexif.dump({}))), gazetteer)
    assert not rep.present and rep.corrupt is None
    assert rep.missing == ["no EXIF metadata (stripped, or never written)"]


def test_exif_gps_short_form_says_corrupt(gazetteer):
    from data import corrupt_exif_blocks, jpeg_with_exif
    from geosleuth.tools.exif import exif_gps

    point, why = exif_gps(open_image(jpeg_with_exif(corrupt_exif_blocks()["garbage"])))
    assert point is None and "corrupt" in why


@pytest.mark.parametrize(
    "tag,value,count",
    [
        ("GPSLatitude", ((48, 1), (51, 1)), 2),
        ("GPSLongitude", ((2, 1), (17, 1)), 2),
        ("GPSLatitude", ((48, 1),), 1),
    ],
)
def test_gps_arrays_of_the_wrong_length_are_rejected_with_the_reason(tag, value, count, gazetteer):
    import piexif

    from data import exif_bytes, jpeg_with_exif

    gps = {
        piexif.GPSIFD.GPSLatitudeRef: b"N",
        piexif.GPSIFD.GPSLatitude: ((48, 1), (51, 1), (30, 1)),
        piexif.GPSIFD.GPSLongitudeRef: b"E",
        piexif.GPSIFD.GPSLongitude: ((2, 1), (17, 1), (40, 1)),
    }
    gps[getattr(piexif.GPSIFD, tag)] = value
    rep = read_exif(open_image(jpeg_with_exif(exif_bytes(gps=gps))), gazetteer)
    assert rep.gps is None
    bad = next(e for e in rep.evidence if e.id == "exif.gps")
    values = "1 value" if count == 1 else f"{count} values"
    assert not bad.usable and f"{tag} has {values} where EXIF requires 3" in bad.reason


def test_a_gps_time_of_the_wrong_length_is_a_reason_not_a_crash(gazetteer):
    import piexif

    from data import EIFFEL, exif_bytes, jpeg_with_exif

    data = exif_bytes(
        lat=EIFFEL[0],
        lon=EIFFEL[1],
        gps={piexif.GPSIFD.GPSDateStamp: b"2024:07:14", piexif.GPSIFD.GPSTimeStamp: ((13, 1), (32, 1))},
    )
    rep = read_exif(open_image(jpeg_with_exif(data)), gazetteer)
    assert rep.gps is not None and rep.utc_offset_minutes is None
    bad = next(e for e in rep.evidence if e.id == "exif.offset-gps")
    assert "GPSTimeStamp has 2 values where EXIF requires 3" in bad.reason


def test_a_gps_time_that_is_no_time_of_day_is_a_reason_not_an_overflow(gazetteer):
    import piexif

    from data import EIFFEL, exif_bytes, jpeg_with_exif

    hours = ((2**32 - 1, 1), (0, 1), (0, 1))  # found by the fuzzer: datetime overflowed
    data = exif_bytes(
        lat=EIFFEL[0],
        lon=EIFFEL[1],
        gps={piexif.GPSIFD.GPSDateStamp: b"2024:07:14", piexif.GPSIFD.GPSTimeStamp: hours},
    )
    rep = read_exif(open_image(jpeg_with_exif(data)), gazetteer)
    assert rep.gps is not None and rep.utc_offset_minutes is None
    assert "is not a time of day" in next(e for e in rep.evidence if e.id == "exif.offset-gps").reason
