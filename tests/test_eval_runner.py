"""The benchmark runner: crash-safe records, resume after SIGKILL, reports, concurrency."""

from __future__ import annotations

import html
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import EXIF_PHOTOS, fixture
from geosleuth.errors import GeoSleuthError
from geosleuth.eval.records import EvalRecord
from geosleuth.eval.report import REPORT_FILES, compare, write_report
from geosleuth.eval.runner import RECORDS, RecordStore
from geosleuth.schemas import LatLon

GEOSLEUTH = [sys.executable, "-m", "geosleuth.cli"]
PARIS_PHOTO = (48.8584, 2.2945)  # where tests/fixtures/exif_gps.jpg says it was taken


def table(tmp_path: Path, n: int) -> Path:
    """n rows of the same geotagged photo; every third truth is far from its GPS: a known accuracy."""
    rows = ["id,image,lat,lon"]
    for i in range(n):
        lat, lon = PARIS_PHOTO if i % 3 else (-33.87, 151.21)
        rows.append(f"s{i:03d},{fixture('exif_gps.jpg')},{lat + i * 1e-4},{lon}")
    path = tmp_path / "set.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def eval_cmd(dataset: Path, out: Path, *extra: str) -> list[str]:
    return [
        *GEOSLEUTH,
        "eval",
        "run",
        str(dataset),
        "--out",
        str(out),
        "--ocr",
        "none",
        "--offline",
        "-q",
        *extra,
    ]


def lines(path: Path) -> int:
    return sum(1 for ln in path.read_bytes().splitlines() if ln.strip()) if path.exists() else 0


def test_a_run_killed_twice_resumes_to_the_same_table(tmp_path):
    n = 60
    data = table(tmp_path, n)
    rng = random.Random(7)
    killed = tmp_path / "killed"
    for _ in range(2):
        proc = subprocess.Popen(
            eval_cmd(data, killed, "--concurrency", "3"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        target = lines(killed / RECORDS) + rng.randint(3, 15)
        deadline = time.time() + 120
        while lines(killed / RECORDS) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert 0 < lines(killed / RECORDS) < n, "the kill should land midway"
    done = subprocess.run(eval_cmd(data, killed), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "already recorded" in done.stdout
    straight = subprocess.run(
        eval_cmd(data, tmp_path / "straight"), capture_output=True, text=True, timeout=300
    )
    assert straight.returncode == 0, straight.stderr
    records = RecordStore(killed / RECORDS).records()
    assert len(records) == n and len({r.key for r in records}) == n  # nothing lost, nothing twice
    write_report(killed, plots=False)
    write_report(tmp_path / "straight", plots=False)
    a = json.loads((killed / "metrics.json").read_text())["metrics"]["accuracy"]
    b = json.loads((tmp_path / "straight" / "metrics.json").read_text())["metrics"]["accuracy"]
    assert a == b and a["acc@25km"] == pytest.approx(40 / 60)
    table_a = (killed / "report.md").read_text().split("\n")[4:7]
    table_b = (tmp_path / "straight" / "report.md").read_text().split("\n")[4:7]
    assert table_a == table_b


def test_a_torn_last_line_is_cut_and_a_rerun_skips_what_is_done(tmp_path):
    path = tmp_path / RECORDS
    rec = EvalRecord(
        key="k1", sample_id="a", dataset="d", truth=LatLon(lat=1, lon=2), status="error", error="x"
    )
    path.write_text(rec.model_dump_json() + "\n" + rec.model_dump_json()[:40])
    store = RecordStore(path)
    assert store.repaired == 40 and [r.key for r in store.records()] == ["k1"]
    store.close()
    path.write_text("not json\n")
    with pytest.raises(Exception, match="line 1: not a geosleuth record"):
        RecordStore(path).records()


def test_the_configuration_is_part_of_the_key(tmp_path):
    data = table(tmp_path, 6)
    out = tmp_path / "run"
    first = subprocess.run(eval_cmd(data, out), capture_output=True, text=True, timeout=300)
    again = subprocess.run(eval_cmd(data, out), capture_output=True, text=True, timeout=300)
    assert "6 samples run" in first.stdout and "0 samples run, 6 already recorded" in again.stdout
    other = subprocess.run(
        [*eval_cmd(data, out)[:-1], "--config", str(_config(tmp_path, "min_probability = 0.5")), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "6 samples run, 0 already recorded" in other.stdout, other.stderr
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["dataset"]["checksum"] and prov["pipeline_fingerprint"] and "packages" in prov


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "other.toml"
    path.write_text("offline = true\n" + text + "\n")
    return path


def test_runs_against_the_vlm_server_keep_requests_in_flight(tmp_path):
    from geosleuth.testing.openai_server import FakeOpenAIServer

    data = table(tmp_path, 16)
    with FakeOpenAIServer(model="tiny-vlm", latency_s=0.3) as srv:
        out = subprocess.run(
            [*eval_cmd(data, tmp_path / "vlm", "--concurrency", "8", "--vlm-url", srv.base_url)],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "GEOSLEUTH_VLM__RAG_K": "[0]"},
        )
        assert out.returncode == 0, out.stderr
        assert srv.max_in_flight >= 6  # eight images in flight, not one after another
    records = RecordStore(tmp_path / "vlm" / RECORDS).records()
    assert all(r.vlm_calls == 1 and r.vlm_samples == 5 for r in records)


@pytest.mark.skipif(not EXIF_PHOTOS.is_dir(), reason=f"{EXIF_PHOTOS} is absent")
def test_exif_photos_with_gps_stripped_give_every_report_file(tmp_path):
    out = tmp_path / "exif"
    res = subprocess.run(eval_cmd(EXIF_PHOTOS, out), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    records = RecordStore(out / RECORDS).records()
    assert len(records) == 47
    assert not any(r.basis == "exif-gps" for r in records)  # the GPS was removed from what it saw
    report = subprocess.run(
        [*GEOSLEUTH, "eval", "report", str(out)], capture_output=True, text=True, timeout=300
    )
    assert report.returncode == 0, report.stderr
    for name in REPORT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert "Distance: **geodesic**" in report.stdout
    table_md = compare([out], anchors=True)
    assert "exif" in table_md and "No published anchors" in table_md
    # one explainable report per image, from the predictions kept beside the records
    per = subprocess.run(
        [*GEOSLEUTH, "eval", "report", str(out), "--per-image", "--no-plots"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert per.returncode == 0, per.stderr
    pages = sorted((out / "reports").glob("*.html"))
    assert len(pages) == 47
    md = (out / "report.md").read_text()
    links = re.findall(r"\]\((reports/[^)]+)\)", md)
    assert len(links) == 47 and all((out / link).is_file() for link in links)
    assert "script-src 'none'" in html.unescape(pages[0].read_text())


def test_per_image_reports_need_the_predictions(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    rec = EvalRecord(key="k", sample_id="a", dataset="x", truth=LatLon(lat=1, lon=2), status="error")
    (out / RECORDS).write_text(rec.model_dump_json() + "\n")
    with pytest.raises(GeoSleuthError, match=r"predictions\.jsonl"):
        write_report(out, plots=False, per_image=True)


def test_compare_adds_the_published_anchors(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    rec = EvalRecord(
        key="k",
        sample_id="a",
        dataset="im2gps3k",
        truth=LatLon(lat=1, lon=2),
        prediction=LatLon(lat=1, lon=2),
        status="located",
    )
    (out / RECORDS).write_text(rec.model_dump_json() + "\n")
    (out / "provenance.json").write_text(json.dumps({"dataset": {"name": "im2gps3k"}}))
    md = compare([out], anchors=True)
    assert "| GeoCLIP (published, im2gps3k) | 14.11 | 34.47 | 50.65 | 69.67 | 83.82 |" in md
    assert "| run (im2gps3k, n=1) | 100.00 |" in md


def test_load_run_closes_the_records_file(tmp_path):
    import gc
    import warnings

    from geosleuth.eval.report import load_run

    out = tmp_path / "run"
    out.mkdir()
    rec = EvalRecord(key="k", sample_id="a", dataset="x", truth=LatLon(lat=1, lon=2), status="error")
    (out / RECORDS).write_text(rec.model_dump_json() + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        records, _ = load_run(out)
        gc.collect()  # an unclosed handle warns when it is collected
    assert [r.key for r in records] == ["k"]
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
