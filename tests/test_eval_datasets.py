"""Benchmark datasets: published metadata, generic tables, EXIF folders (GPS stripped), HF folders."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from conftest import EXIF_PHOTOS, FIXTURES, SHARED_DATA
from geosleuth.errors import EmptySourceError, GeoSleuthError
from geosleuth.eval.datasets import (
    Dataset,
    DatasetError,
    ExifFolderDataset,
    HFDiskDataset,
    Im2GPS,
    Im2GPS3k,
    MetadataNotFoundError,
    MissingImagesError,
    TableDataset,
    YFCC4k,
    open_dataset,
    select,
)
from geosleuth.eval.records import Sample
from geosleuth.eval.strip import gps_left, strip_gps
from geosleuth.schemas import EvidenceKind, LatLon
from geosleuth.tools.exif import exif_gps, read_exif
from geosleuth.tools.image import open_image

META = SHARED_DATA / "geoestimation" / "meta"
IM2GPS3K_META = META / "im2gps3k_places365.csv"
IM2GPS_META = META / "im2gps_places365.csv"
needs_meta = pytest.mark.skipif(
    not IM2GPS3K_META.is_file(), reason=f"GeoEstimation metadata not present at {META}"
)
needs_photos = pytest.mark.skipif(
    not (EXIF_PHOTOS / "exif-samples" / "gps_index.csv").is_file(),
    reason=f"reference EXIF photos not present at {EXIF_PHOTOS}",
)


def tiny_jpeg(color: tuple[int, int, int] = (120, 80, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buf, "JPEG")
    return buf.getvalue()


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def meta_ids(path: Path) -> list[tuple[str, float, float]]:
    with path.open(newline="") as fh:
        return [(r["IMG_ID"], float(r["LAT"]), float(r["LON"])) for r in csv.DictReader(fh)]


# --- Im2GPS3k / Im2GPS on the published metadata -------------------------------------------------


@needs_meta
def test_im2gps3k_without_images_fails_before_running_and_says_where_images_come_from(
    tmp_path: Path,
) -> None:
    images = tmp_path / "im2gps3k"
    images.mkdir()
    with pytest.raises(MissingImagesError) as info:
        Im2GPS3k(images, meta=IM2GPS3K_META)
    err = info.value
    assert isinstance(err, FileNotFoundError) and isinstance(err, GeoSleuthError)
    first = sorted(i for i, _, _ in meta_ids(IM2GPS3K_META))[0]
    msg = str(err)
    assert "2997 of 2997 images are missing" in msg
    assert first in msg and "im2gps3ktest.zip" in msg and "revisiting-im2gps" in msg
    assert "missing='skip'" not in msg  # skipping would leave nothing: no such advice
    assert len(err.missing) == 2997
    # demanding every image fails the same way, and there skipping the missing ones is the way out
    with pytest.raises(MissingImagesError, match="2997 of 2997") as strict:
        Im2GPS3k(images, meta=IM2GPS3K_META, missing="error")
    assert "missing='skip'" in str(strict.value)


@needs_meta
def test_im2gps3k_parses_all_rows_and_a_subset_folder_is_evaluated_on_those_present(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = sorted(meta_ids(IM2GPS3K_META))
    images = tmp_path / "images"
    images.mkdir()
    for img_id, _, _ in rows[:3]:
        (images / img_id).write_bytes(tiny_jpeg())
    shutil.copy(IM2GPS3K_META, tmp_path / "im2gps3k_places365.csv")  # found in the folder's parent

    with caplog.at_level("WARNING", logger="geosleuth.eval.datasets"):
        ds = open_dataset(f"im2gps3k:{images}")  # no flag: a subset folder just works
    d = ds.describe()
    assert ds.name == "im2gps3k" and len(ds) == 3
    assert d["rows"] == 2997 and d["missing"] == 2994 and d["present"] == 3
    assert len(d["missing_examples"]) == 5
    assert d["selection"]["missing"] == "skip"
    assert d["subset"] == "3 of 2997 images of im2gps3k present; evaluated on those"
    assert [r.getMessage() for r in caplog.records if d["subset"] in r.getMessage()]
    assert open_dataset(f"im2gps3k:{images}", missing="skip").ids == ds.ids  # --skip-missing: an alias
    assert [(s.id, s.truth.lat, s.truth.lon) for s in ds] == rows[:3]
    s = next(iter(ds))
    assert s.load() == (images / s.id).read_bytes()
    assert s.meta["AUTHOR"] and "S365_Label" in s.meta

    # demanding all: the canonical selection needs only the selected images
    assert open_dataset(f"im2gps3k:{images}", limit=3, missing="error").ids == [r[0] for r in rows[:3]]
    with pytest.raises(MissingImagesError, match="1 of 4 images"):
        open_dataset(f"im2gps3k:{images}", limit=4, missing="error")
    with pytest.raises(MissingImagesError, match="2994 of 2997 images"):
        open_dataset(f"im2gps3k:{images}", missing="error")
    # by default a limit is drawn from the images present
    assert open_dataset(f"im2gps3k:{images}", limit=4).ids == [r[0] for r in rows[:3]]


@needs_meta
def test_im2gps_237_and_metadata_not_found(tmp_path: Path) -> None:
    images = tmp_path / "im2gps"
    images.mkdir()
    with pytest.raises(MissingImagesError, match="237 of 237") as info:
        Im2GPS(images, meta=IM2GPS_META)
    assert "graphics.cs.cmu.edu" in str(info.value)
    with pytest.raises(MetadataNotFoundError, match=r"im2gps_places365\.csv") as nf:
        Im2GPS(images)
    assert isinstance(nf.value, FileNotFoundError) and "GeoEstimation" in str(nf.value)


def test_yfcc4k_finds_ids_by_base_name_and_stem(tmp_path: Path) -> None:
    images = tmp_path / "yfcc4k"
    images.mkdir()
    (images / "111.jpg").write_bytes(tiny_jpeg())
    (images / "222.jpg").write_bytes(tiny_jpeg((1, 2, 3)))
    write_csv(
        tmp_path / "yfcc4k_places365.csv",
        ["IMG_ID", "LAT", "LON"],
        [["ab/cd/111.jpg", 10.5, 20.25], ["222", -33.9, 151.2]],
    )
    ds = open_dataset(f"yfcc4k:{images}")
    assert isinstance(ds, YFCC4k) and ds.name == "yfcc4k"
    assert ds.ids == ["222", "ab/cd/111.jpg"]
    assert [s.load() for s in ds] == [(images / "222.jpg").read_bytes(), (images / "111.jpg").read_bytes()]
    assert ds.describe()["expected"] == 4536

    write_csv(tmp_path / "more.csv", ["photo_id", "latitude", "longitude"], [["333", 1, 2], ["111", 3, 4]])
    with pytest.raises(MissingImagesError, match="1 of 2") as info:
        open_dataset(f"yfcc4k:{images}", meta=tmp_path / "more.csv", missing="error")
    assert "yfcc4k.zip" in str(info.value) and "333" in str(info.value)
    subset = open_dataset(f"yfcc4k:{images}", meta=tmp_path / "more.csv")  # by default: those present
    assert subset.ids == ["111"] and subset.describe()["present"] == 1


# --- generic tables ------------------------------------------------------------------------------


def table_fixture(tmp_path: Path, n: int = 20, *, reverse: bool = False) -> Path:
    (tmp_path / "img" / "sub").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        rel = f"img/sub/p{i:02d}.jpg"
        (tmp_path / rel).write_bytes(tiny_jpeg((i * 10 % 256, 0, 0)))
        rows.append([rel, 40 + i / 10, -3 - i / 10, f"city{i}"])
    return write_csv(
        tmp_path / "photos.csv", ["image", "lat", "lon", "city"], rows[::-1] if reverse else rows
    )


def test_table_dataset_ids_are_relative_posix_paths(tmp_path: Path) -> None:
    ds = open_dataset(str(table_fixture(tmp_path, 3)))
    assert isinstance(ds, TableDataset) and ds.name == "csv:photos"
    assert ds.ids == ["img/sub/p00.jpg", "img/sub/p01.jpg", "img/sub/p02.jpg"]
    s = next(iter(ds))
    assert s.truth == LatLon(lat=40.0, lon=-3.0) and s.meta == {"city": "city0"}
    assert s.load() == (tmp_path / "img/sub/p00.jpg").read_bytes()
    assert ds.describe()["sources"]["table"] == str(tmp_path / "photos.csv")


def test_table_images_option_id_column_and_parquet(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    elsewhere = tmp_path / "photos"
    elsewhere.mkdir()
    (elsewhere / "a.jpg").write_bytes(tiny_jpeg())
    table = pa.table({"id": ["x1"], "file": ["a.jpg"], "latitude": [1.5], "longitude": [2.5]})
    pq.write_table(table, tmp_path / "set.parquet")
    with pytest.raises(MissingImagesError, match=r"a\.jpg"):
        open_dataset(str(tmp_path / "set.parquet"))
    ds = open_dataset(str(tmp_path / "set.parquet"), images=elsewhere)
    assert ds.name == "parquet:set" and ds.ids == ["x1"]
    assert next(iter(ds)).load() == (elsewhere / "a.jpg").read_bytes()


def test_limit_and_sample_are_stable_and_reproducible(tmp_path: Path) -> None:
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    forward, backward = table_fixture(a), table_fixture(b, reverse=True)
    # the order of the table's rows does not matter: ids are sorted
    assert open_dataset(str(forward), limit=3).ids == open_dataset(str(backward), limit=3).ids
    assert open_dataset(str(forward), limit=3).ids == [f"img/sub/p{i:02d}.jpg" for i in range(3)]

    s1 = open_dataset(str(forward), sample=5, seed=7)
    assert s1.ids == open_dataset(str(backward), sample=5, seed=7).ids == sorted(s1.ids)
    assert len(s1) == 5 and s1.ids != open_dataset(str(forward), sample=5, seed=8).ids
    both = open_dataset(str(forward), sample=5, seed=7, limit=2)
    assert both.ids == s1.ids[:2]
    d = both.describe()["selection"]
    assert (d["sample"], d["limit"], d["seed"]) == (5, 2, 7)
    assert len(open_dataset(str(forward), sample=500)) == 20
    assert select(list(range(10)), limit=None, sample=3, seed=1) == select(
        list(range(10)), limit=None, sample=3, seed=1
    )
    for bad in ({"limit": 0}, {"sample": -1}, {"missing": "ignore"}):
        with pytest.raises(DatasetError):
            open_dataset(str(forward), **bad)


def test_checksum_follows_coordinates_not_images(tmp_path: Path) -> None:
    path = table_fixture(tmp_path, 4)
    first = open_dataset(str(path)).checksum()
    assert first == open_dataset(str(path)).checksum() and len(first) == 64
    (tmp_path / "img/sub/p00.jpg").write_bytes(tiny_jpeg((0, 255, 0)))
    assert open_dataset(str(path)).checksum() == first  # images are not hashed
    path.write_text(path.read_text().replace("40.1,", "40.2,"))
    assert open_dataset(str(path)).checksum() != first
    # a dataset built in memory hashes its (id, lat, lon) list
    load = tiny_jpeg
    x = Dataset("x", [Sample("a", LatLon(lat=1, lon=2), load), Sample("b", LatLon(lat=3, lon=4), load)])
    y = Dataset("x", [Sample("b", LatLon(lat=3, lon=4), load), Sample("a", LatLon(lat=1, lon=2.0001), load)])
    assert x.ids == y.ids == ["a", "b"] and x.checksum() != y.checksum()


def test_duplicate_ids_and_bad_rows_are_named(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(tiny_jpeg())
    write_csv(tmp_path / "dup.csv", ["image", "lat", "lon"], [["a.jpg", 1, 2], ["./a.jpg", 1, 2]])
    with pytest.raises(DatasetError, match=r"'a\.jpg'"):
        open_dataset(str(tmp_path / "dup.csv"))
    write_csv(tmp_path / "bad.csv", ["image", "lat", "lon"], [["a.jpg", 1, 2], ["b.jpg", 95, 2]])
    with pytest.raises(ValueError, match="row 3"):
        open_dataset(str(tmp_path / "bad.csv"))


def test_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="did you mean 'im2gps3k'"):
        open_dataset("im2gps3kk:/nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        open_dataset(str(tmp_path / "nowhere.csv"))
    with pytest.raises(DatasetError, match="image folder"):
        open_dataset("yfcc4k:")
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(DatasetError, match="table"):
        open_dataset(str(tmp_path / "notes.md"))


# --- EXIF folders: truth from GPS, bytes without it ----------------------------------------------


def test_strip_gps_removes_position_and_keeps_time() -> None:
    for name in ("exif_gps.jpg", "exif_gps.png", "exif_gps.webp"):
        data = (FIXTURES / name).read_bytes()
        assert gps_left(data, name) is not None
        clean = strip_gps(data, name)
        assert gps_left(clean, name) is None
        assert exif_gps(open_image(clean))[0] is None
    jpeg = (FIXTURES / "exif_gps.jpg").read_bytes()
    before, after = open_image(jpeg).exif, open_image(strip_gps(jpeg)).exif
    assert after.get_ifd(0x8769).get(0x9003) == before.get_ifd(0x8769).get(0x9003)  # DateTimeOriginal
    assert gps_left(strip_gps(jpeg) + b"<exif:GPSLatitude>1</exif:GPSLatitude>") is not None


def test_exif_folder_refuses_photos_that_keep_gps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import geosleuth.eval.datasets as mod

    for name in ("exif_gps.jpg", "exif_gps_south_west.jpg", "exif_no_gps.jpg"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    ds = open_dataset(str(tmp_path))
    assert isinstance(ds, ExifFolderDataset) and ds.name == f"exif:{tmp_path.name}"
    assert ds.ids == ["exif_gps.jpg", "exif_gps_south_west.jpg"]
    assert ds.describe()["skipped"] == {"no_gps": 1}

    real = mod._strip_file

    def leaky(path: Path, name: str) -> tuple[bytes, str]:
        return (path.read_bytes(), "untouched") if name == "exif_gps.jpg" else real(path, name)

    monkeypatch.setattr(mod, "_strip_file", leaky)
    ds = ExifFolderDataset(tmp_path)
    assert ds.ids == ["exif_gps_south_west.jpg"]
    d = ds.describe()
    assert d["skipped"] == {"no_gps": 1, "refused_after_strip": 1}
    assert "EXIF GPS still reads" in d["skipped_examples"]["refused_after_strip"][0]
    with pytest.raises(EmptySourceError, match="refused"):
        ExifFolderDataset(tmp_path, limit=1)


@needs_photos
def test_exif_folder_on_real_photos(tmp_path: Path, gazetteer) -> None:  # type: ignore[no-untyped-def]
    picks = ["jpg/gps/DSCN0010.jpg", "jpg/Kodak_CX7530.jpg", "heic/IMG_5195.HEIC"]
    root = EXIF_PHOTOS / "exif-samples"
    with (root / "gps_index.csv").open(newline="") as fh:
        index = {r["path"]: (float(r["lat"]), float(r["lon"])) for r in csv.DictReader(fh)}
    for rel in picks:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / "images" / rel, tmp_path / rel)

    ds = open_dataset(f"exif:{tmp_path}")
    assert ds.ids == sorted(picks)
    for s in ds:
        assert (s.truth.lat, s.truth.lon) == pytest.approx(index[s.id], abs=1e-9)
        data = s.load()
        report = read_exif(open_image(data, name=s.id), gazetteer)
        assert report.gps is None
        assert not any(e.kind == EvidenceKind.GPS and e.usable for e in report.evidence)
        assert report.local_time is not None  # the capture time survives
        assert s.load() == data  # the same bytes every time


# --- Hugging Face save_to_disk folders -----------------------------------------------------------


def write_hf(folder: Path, rows: list[dict[str, object]], *, files: int = 2, with_id: bool = True) -> Path:
    pa = pytest.importorskip("pyarrow")
    folder.mkdir(parents=True)
    fields = [
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("latitude", pa.float64()),
        ("longitude", pa.float64()),
        ("country", pa.string()),
    ]
    if with_id:
        fields.insert(0, ("id", pa.string()))
    schema = pa.schema(fields)
    names = [f"data-{k:05d}-of-{files:05d}.arrow" for k in range(files)]
    for k, name in enumerate(names):
        part = rows[k::files]
        cols = {f.name: [r.get(f.name) for r in part] for f in schema}
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            writer.write_table(pa.table(cols, schema=schema))
    features = {"image": {"_type": "Image"}, "latitude": {"dtype": "float64", "_type": "Value"}}
    (folder / "dataset_info.json").write_text(json.dumps({"features": features}))
    state = {"_data_files": [{"filename": n} for n in names], "_fingerprint": "f00", "_split": "test"}
    (folder / "state.json").write_text(json.dumps(state))
    return folder


def test_hf_folder_with_embedded_images(tmp_path: Path) -> None:
    rows = [
        {
            "id": f"osv{i}",
            "image": {"bytes": tiny_jpeg((i, i, i)), "path": f"{i}.jpg"},
            "latitude": i,
            "longitude": -i,
            "country": "FR",
        }
        for i in range(5)
    ]
    folder = write_hf(tmp_path / "osv5m-test", rows)
    ds = open_dataset(str(folder), limit=3)
    assert isinstance(ds, HFDiskDataset) and ds.name == "hf:osv5m-test"
    assert ds.ids == ["osv0", "osv1", "osv2"]
    by_id = {s.id: s for s in ds}
    assert by_id["osv2"].load() == tiny_jpeg((2, 2, 2))
    assert by_id["osv2"].truth == LatLon(lat=2, lon=-2)
    assert by_id["osv2"].meta == {"row": 1, "country": "FR"}  # row 1 of the concatenated files
    d = ds.describe()
    assert d["rows"] == 5 and [Path(p).name for p in d["meta_files"]] == ["dataset_info.json", "state.json"]

    # a DatasetDict needs its split named
    dd = tmp_path / "dd"
    write_hf(dd / "test", rows)
    write_hf(dd / "train", rows)
    (dd / "dataset_dict.json").write_text(json.dumps({"splits": ["test", "train"]}))
    with pytest.raises(DatasetError, match="test, train"):
        open_dataset(f"hf:{dd}")
    assert open_dataset(str(dd / "test")).ids == sorted(r["id"] for r in rows)  # type: ignore[type-var]


def test_hf_folder_with_image_paths(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(tiny_jpeg())
    rows = [
        {"image": {"bytes": None, "path": "a.jpg"}, "latitude": 1.0, "longitude": 2.0},
        {"image": {"bytes": None, "path": "b.jpg"}, "latitude": 3.0, "longitude": 4.0},
    ]
    folder = write_hf(tmp_path / "set", rows, files=1, with_id=False)
    with pytest.raises(MissingImagesError, match="2 of 2"):
        open_dataset(str(folder))
    ds = open_dataset(str(folder), images=tmp_path / "imgs", missing="skip")
    assert ds.ids == ["a.jpg"] and ds.describe()["missing"] == 1
    assert next(iter(ds)).load() == (tmp_path / "imgs" / "a.jpg").read_bytes()
