import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

pytest.importorskip("faiss")

from conftest import EXIF_PHOTOS, FIXTURES, fixture, requires_shared_data
from geosleuth.errors import EmptySourceError, IndexError_
from geosleuth.retrieval.index import NeighbourIndex, build_index, index_from_arrays
from geosleuth.retrieval.sources import open_source
from geosleuth.testing import PixelEncoder


@pytest.fixture(scope="module")
def fixture_index(tmp_path_factory):
    out = tmp_path_factory.mktemp("idx")
    report = build_index(open_source(FIXTURES), PixelEncoder(), out, shard_size=4, progress=False)
    return out, report


def test_folder_build_counts_every_skip(fixture_index):
    out, report = fixture_index
    assert report.kind == "flat" and report.indexed >= 9
    # the fixtures folder holds pictures without GPS, broken GPS and broken files: all counted, none silent
    assert report.skipped["no_gps"] >= 10 and report.skipped["unreadable"] >= 5
    lines = [json.loads(x) for x in (out / "skipped.jsonl").read_text().splitlines()]
    assert len(lines) == sum(report.skipped.values())
    assert {"key", "reason", "detail"} <= set(lines[0])
    assert any(x["key"] == "exif_gps_null_island.jpg" and x["reason"] == "no_gps" for x in lines)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["count"] == report.indexed
    assert manifest["encoder"]["name"] == "pixel" and manifest["encoder"]["dim"] == 64


def test_search_returns_itself_first_and_dissimilar_last(fixture_index, gazetteer):
    out, _ = fixture_index
    idx = NeighbourIndex(out, gazetteer=gazetteer)
    enc = PixelEncoder()
    idx.check_encoder(enc)
    from PIL import Image

    q = enc.encode([Image.open(fixture("exif_gps_south_west.jpg"))])
    res = idx.search(q, k=3)[0]
    assert res.similar[0].key == "exif_gps_south_west.jpg" and res.similar[0].similarity == pytest.approx(
        1, abs=1e-2
    )
    assert res.similar[0].place.country_code == "BR"
    assert res.dissimilar and res.dissimilar[0].similarity <= res.similar[-1].similarity
    sims = [n.similarity for n in res.similar]
    assert sims == sorted(sims, reverse=True)


def test_wrong_encoder_dimension_and_weights_are_refused(fixture_index):
    out, _ = fixture_index
    idx = NeighbourIndex(out)
    with pytest.raises(IndexError_, match="64-d embeddings"):
        idx.check_encoder(PixelEncoder(dim=32))
    with pytest.raises(IndexError_, match="other weights"):
        idx.check_encoder(PixelEncoder(dim=64, seed=1))
    with pytest.raises(IndexError_, match=r"shape \(1, 32\)"):
        idx.search(np.ones((1, 32), dtype=np.float32))


def test_corrupt_truncated_and_unfinished_indexes(fixture_index, tmp_path):
    import shutil

    out, _ = fixture_index
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    data = (broken / "index.faiss").read_bytes()
    (broken / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexError_, match="truncated"):
        NeighbourIndex(broken)
    (broken / "index.faiss").write_bytes(b"\0" * len(data))  # same size, wrong bytes
    with pytest.raises(IndexError_, match="corrupt"):
        NeighbourIndex(broken, verify=True)
    with pytest.raises(IndexError_, match="cannot be read by FAISS"):
        NeighbourIndex(broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["status"] = "building"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexError_, match="did not finish"):
        NeighbourIndex(broken)
    with pytest.raises(IndexError_, match="no manifest"):
        NeighbourIndex(tmp_path)


def test_rebuilding_with_another_encoder_needs_restart(fixture_index, tmp_path):
    import shutil

    out, _ = fixture_index
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with pytest.raises(IndexError_, match="another build"):
        build_index(open_source(FIXTURES), PixelEncoder(dim=32), copy, shard_size=4, progress=False)
    report = build_index(
        open_source(FIXTURES), PixelEncoder(dim=32), copy, shard_size=4, restart=True, progress=False
    )
    assert NeighbourIndex(copy).dim == 32 and report.shards_reused == 0


def test_table_sources_csv_parquet_and_duplicates(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("sign_fr_paris.jpg", "sign_de_berlin.jpg", "sign_ja_tokyo.jpg"):
        (tmp_path / "img" / name).write_bytes(fixture(name).read_bytes())
    (tmp_path / "img" / "copy.jpg").write_bytes(fixture("sign_fr_paris.jpg").read_bytes())
    table = tmp_path / "photos.csv"
    table.write_text(
        "image,lat,lon,city,country\n"
        "img/sign_fr_paris.jpg,48.85,2.35,Paris,France\n"
        "img/sign_de_berlin.jpg,52.52,13.40,Berlin,Germany\n"
        "img/sign_ja_tokyo.jpg,35.69,139.69,,Japan\n"
        "img/copy.jpg,48.85,2.35,Paris,France\n"
        "img/missing.jpg,1,1,,\n"
        "img/sign_fr_paris.jpg,north,2,,\n"
    )
    src = open_source(table)
    assert src.layout == "table" and len(src.items) == 5 and len(src.bad_rows) == 1
    report = build_index(src, PixelEncoder(), tmp_path / "idx", progress=False)
    assert report.indexed == 3
    assert report.skipped == {"duplicate": 1, "unreadable": 1, "bad_row": 1}
    idx = NeighbourIndex(tmp_path / "idx")
    from PIL import Image

    hit = idx.search(PixelEncoder().encode([Image.open(fixture("sign_de_berlin.jpg"))]), k=1)[0].similar[0]
    assert hit.source_place == {"city": "Berlin", "country": "Germany"}

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"path": ["img/sign_ja_tokyo.jpg"], "latitude": [35.69], "longitude": [139.69]}),
        tmp_path / "p.parquet",
    )
    assert (
        build_index(
            open_source(tmp_path / "p.parquet"), PixelEncoder(), tmp_path / "idx2", progress=False
        ).indexed
        == 1
    )


def test_mp16_layout_from_a_tar(tmp_path):
    tar_path = tmp_path / "mp-16-images.tar"
    with tarfile.open(tar_path, "w") as tar:
        for img_id, name in (("ab/cd/1.jpg", "sign_fr_paris.jpg"), ("ef/gh/2.jpg", "sign_ja_tokyo.jpg")):
            tar.add(fixture(name), arcname="mp-16-images/x/" + img_id.replace("/", "_"))
    csv = tmp_path / "MP16_Pro_places365.csv"
    csv.write_text(
        "IMG_ID,AUTHOR,LAT,LON,neighbourhood,city,county,state,region,country,continent\n"
        "ab/cd/1.jpg,a,48.85,2.35,,Paris,,Ile-de-France,,France,Europe\n"
        "ef/gh/2.jpg,b,35.69,139.69,Shinjuku,Tokyo,,Tokyo,,Japan,Asia\n"
        "zz/zz/3.jpg,c,1,2,,,,,,nan,\n"
    )
    src = open_source(csv, images=tar_path)
    assert src.layout == "mp16" and len(src.items) == 3
    report = build_index(src, PixelEncoder(), tmp_path / "idx", progress=False)
    assert report.indexed == 2 and report.skipped == {"unreadable": 1}
    idx = NeighbourIndex(tmp_path / "idx")
    from PIL import Image

    hit = idx.search(PixelEncoder().encode([Image.open(fixture("sign_ja_tokyo.jpg"))]), k=1)[0].similar[0]
    assert hit.key == "ef/gh/2.jpg" and hit.source_place["neighbourhood"] == "Shinjuku"


def test_empty_sources(tmp_path):
    with pytest.raises(EmptySourceError, match="no images"):
        open_source(tmp_path)
    (tmp_path / "a.jpg").write_bytes(fixture("blank.jpg").read_bytes())
    with pytest.raises(EmptySourceError, match="none of the 1 items could be indexed"):
        build_index(open_source(tmp_path), PixelEncoder(), tmp_path / "out", progress=False)


def test_ivfpq_with_exact_reranking_finds_true_neighbours(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((100, 64)).astype(np.float32)
    x = centres[rng.integers(0, 100, 6000)] + 0.3 * rng.standard_normal((6000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    manifest = index_from_arrays(
        tmp_path / "ivf", x, rng.uniform(-80, 80, 6000), rng.uniform(-180, 180, 6000), kind="ivfpq"
    )
    assert manifest["index"]["kind"] == "ivfpq" and (tmp_path / "ivf" / "vectors.f16.npy").exists()
    idx = NeighbourIndex(tmp_path / "ivf")
    q = x[:50]
    got = idx.search(q, k=10, dissimilar=True)
    exact = np.argsort(-(q @ x.T), axis=1)[:, :10]
    recall = np.mean(
        [len({int(n.key) for n in r.similar} & set(e.tolist())) / 10 for r, e in zip(got, exact, strict=True)]
    )
    assert recall >= 0.95
    assert all(abs(r.similar[0].similarity - 1) < 1e-2 for r in got)  # itself, exactly re-ranked
    worst = np.argsort(q @ x.T, axis=1)[:, 0]
    assert np.mean([int(r.dissimilar[0].key) == w for r, w in zip(got, worst, strict=True)]) > 0.8


@requires_shared_data()
@pytest.mark.slow
def test_cli_build_on_real_photos_resumes_after_a_kill(tiny_clip_dir, tmp_path):
    out = tmp_path / "idx"
    cmd = [
        sys.executable,
        "-m",
        "geosleuth.cli",
        "index",
        "build",
        str(EXIF_PHOTOS),
        "--out",
        str(out),
        "--encoder",
        str(tiny_clip_dir),
        "--shard-size",
        "6",
        "--batch-size",
        "3",
    ]
    env = dict(os.environ)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True
    )
    deadline = time.time() + 300
    # finished shards only: a shard being written is a hidden temp file that also ends in .npz
    while time.time() < deadline and len(list((out / "shards").glob("[0-9]*.npz"))) < 2:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("[0-9]*.npz")}
    assert 2 <= len(done) < 8, "the build should have been killed midway"
    assert json.loads((out / "manifest.json").read_text())["status"] == "building"
    with pytest.raises(IndexError_, match="did not finish"):
        NeighbourIndex(out)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert res.returncode == 0, res.stderr
    assert f"{len(done)} of 8 shards reused" in res.stdout and "indexed 47 photos" in res.stdout
    assert not list((out / "shards").glob(".*")), "temp files of the killed run are cleaned up"
    for name, mtime in done.items():  # finished shards were not embedded again
        assert (out / "shards" / name).stat().st_mtime_ns == mtime
    search = subprocess.run(
        [
            sys.executable,
            "-m",
            "geosleuth.cli",
            "index",
            "search",
            str(out),
            str(EXIF_PHOTOS / "exif-samples/images/jpg/gps/DSCN0010.jpg"),
            "-k",
            "3",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert search.returncode == 0, search.stderr
    data = json.loads(search.stdout)
    assert (
        data["similar"][0]["key"].endswith("DSCN0010.jpg")
        and data["similar"][0]["place"]["country_code"] == "IT"
    )
    info = subprocess.run(
        [sys.executable, "-m", "geosleuth.cli", "index", "info", str(out), "--verify"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert info.returncode == 0 and "47 photos" in info.stdout and "checksums verified" in info.stdout
