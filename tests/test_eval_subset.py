"""A benchmark folder that holds only part of the benchmark (issue 14 §1): it runs on the images
present, says how many, and the report shows the count, the forced accuracy beside the baselines,
per scene type, latency and calibration, and what the answered photos read."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import SHARED_DATA, fixture
from geosleuth.cli import app
from geosleuth.errors import EXIT_INPUT, EXIT_USAGE, MissingImagesError
from geosleuth.eval.datasets import open_dataset
from geosleuth.eval.records import scene_of
from geosleuth.eval.report import REPORT_FILES, _md_text, write_report
from geosleuth.eval.runner import PROVENANCE, RECORDS, RecordStore

GEOSLEUTH = [sys.executable, "-m", "geosleuth.cli"]
HEADER = ["IMG_ID", "AUTHOR", "LAT", "LON", "Prob_indoor", "Prob_natural", "Prob_urban"]
# (id, fixture copied under that id or None, lat, lon, indoor, natural, urban)
ROWS = [
    ("a1.jpg", "exif_gps.jpg", -33.87, 151.21, 0.1, 0.2, 0.7),  # its EXIF says Paris: a confident miss
    ("b2.jpg", "blank.jpg", 48.85, 2.35, 0.6, 0.3, 0.1),
    ("c3.jpg", "exif_no_gps.jpg", 35.68, 139.69, 0.2, 0.5, 0.3),
    ("d4.jpg", None, 40.71, -74.0, 0.3, 0.3, 0.4),
    ("e5.jpg", None, 51.5, -0.12, 0.3, 0.4, 0.3),
]
DEV = SHARED_DATA / "im2gps3k-dev" / "images"
DEV_META = SHARED_DATA / "geoestimation" / "meta" / "im2gps3k_places365.csv"


def benchmark_folder(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir()
    meta = tmp_path / "meta.csv"
    with meta.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for img_id, source, lat, lon, *probs in ROWS:
            w.writerow([img_id, "someone", lat, lon, *probs])
            if source is not None:
                shutil.copy(fixture(source), images / img_id)
    return images, meta


@pytest.mark.slow
def test_a_subset_folder_runs_on_those_present_and_the_report_says_so(tmp_path: Path) -> None:
    images, meta = benchmark_folder(tmp_path)
    out = tmp_path / "run"
    cmd = [*GEOSLEUTH, "eval", "run", f"im2gps3k:{images}", "--meta", str(meta), "--out", str(out)]
    cmd += ["--ocr", "none", "--offline", "--concurrency", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    note = "3 of 5 images of im2gps3k present; evaluated on those"
    assert note in " ".join(res.stderr.split())
    prov = json.loads((out / PROVENANCE).read_text())["dataset"]
    assert prov["present"] == 3 and prov["missing"] == 2 and prov["rows"] == 5 and prov["subset"] == note

    records = {r.sample_id: r for r in RecordStore(out / RECORDS).records()}
    assert sorted(records) == ["a1.jpg", "b2.jpg", "c3.jpg"]
    assert {k: r.truth_scene for k, r in records.items()} == {
        "a1.jpg": "urban",
        "b2.jpg": "indoor",
        "c3.jpg": "natural",
    }
    assert records["a1.jpg"].basis == "exif-gps" and records["a1.jpg"].status == "located"

    write_report(out)
    for name in REPORT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    md = (out / "report.md").read_text()
    assert f"**Subset:** {note}" in md
    for heading in ("## Answers", "## Per scene type", "## Per continent", "## Calibration"):
        assert heading in md
    assert "| forced (top candidate always) | 3 |" in md
    assert "| baseline: always Paris | 3 |" in md and "(oracle)" in md
    assert "Latency per image: median" in md and "Crashes (status error): 0" in md
    # one confident answer 16,000 km off: the wrong answers' mean confidence misses its target
    assert "(target < 0.25, NOT met)" in md
    # the EXIF answer is 16,000 km off with high confidence: the first worst miss, with its evidence
    worst = md.split("## Worst confident misses")[1].split("## What the answered")[0]
    assert "`a1.jpg`" in worst and "exif" in worst
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["answers"]["n"] == 3 and metrics["answers"]["errors"] == 0
    assert set(metrics["per_group"]["scene"]) == {"urban", "indoor", "natural"}
    assert metrics["calibration"]["n_wrong"] >= 1 and metrics["calibration"]["answered_n"] >= 1
    flat = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"forced.acc@750km", "baselines.paris_acc@750km", "baselines.oracle_city@25km"} <= set(flat)
    assert {"calibration.answered_ece@750km", "latency.p90_s", "answers.answered"} <= set(flat)
    assert metrics["latency"]["crashes"] == 0 and metrics["latency"]["median_s"] > 0

    # demanding the whole benchmark fails before anything runs, naming what is missing
    args = cmd[len(GEOSLEUTH) :]
    strict = CliRunner().invoke(app, [*args, "--require-all"])
    assert strict.exit_code == EXIT_INPUT and isinstance(strict.exception, SystemExit)
    assert "2 of 5 images are missing" in " ".join(strict.output.split())
    # --skip-missing is an alias of the default: the same records, nothing rerun
    again = CliRunner().invoke(app, [*args, "--skip-missing"])
    assert again.exit_code == 0 and "0 samples run, 3 already recorded" in again.output
    both = CliRunner().invoke(app, [*args, "--skip-missing", "--require-all"])
    assert both.exit_code == EXIT_USAGE


def test_a_benchmark_folder_with_none_present_is_an_error_with_where_to_get_them(tmp_path: Path) -> None:
    images, meta = benchmark_folder(tmp_path)
    for p in images.iterdir():
        p.unlink()
    with pytest.raises(MissingImagesError, match="5 of 5 images are missing") as info:
        open_dataset(f"im2gps3k:{images}", meta=meta)
    assert "im2gps3ktest.zip" in str(info.value) and "--skip-missing" not in str(info.value)
    # your own table still demands every image by default
    table = tmp_path / "mine.csv"
    table.write_text(f"image,lat,lon\n{fixture('blank.jpg')},1,2\n{tmp_path / 'gone.jpg'},3,4\n")
    with pytest.raises(MissingImagesError, match="1 of 2"):
        open_dataset(str(table))
    assert len(open_dataset(str(table), missing="skip")) == 1


def test_photo_text_in_the_report_is_inert() -> None:
    shown = _md_text("Rue | de `la` Paix\n<script>alert(1)</script>\x07" + "x" * 200, limit=40)
    assert shown.startswith("`") and shown.endswith("`") and "\n" not in shown and "\x07" not in shown
    assert "\\|" in shown and shown.count("`") == 2 and len(shown) <= 40 + 2 + 1 and shown.endswith("…`")


@pytest.mark.skipif(
    not DEV.is_dir() or not DEV_META.is_file(), reason=f"the Im2GPS3k dev photos are not at {DEV}"
)
def test_dev_photos_are_a_subset_with_scene_types(tmp_path: Path, exif_locator) -> None:  # type: ignore[no-untyped-def]
    from geosleuth.eval.metrics import compute
    from geosleuth.eval.runner import run

    ds = open_dataset(f"im2gps3k:{DEV}", meta=DEV_META, sample=5, seed=1)
    d = ds.describe()
    on_disk = {p.name for p in DEV.iterdir()}
    with DEV_META.open(newline="") as fh:
        meta = {r["IMG_ID"]: r for r in csv.DictReader(fh)}
    assert d["present"] == len(on_disk & set(meta)) and d["rows"] == len(meta) == 2997
    assert d["subset"].startswith(f"{d['present']} of 2997 images of im2gps3k present")
    summary = run(ds, exif_locator, tmp_path / "dev", concurrency=2)
    assert summary.errors == 0 and summary.ran == 5
    records = RecordStore(tmp_path / "dev" / RECORDS).records()
    assert all(r.truth_scene == scene_of(meta[r.sample_id]) and r.truth_scene for r in records)
    m = compute(records).metrics
    assert m["answers"]["n"] == 5 and m["latency"]["crashes"] == 0
    assert sum(g["n"] for g in m["per_group"]["scene"].values()) == 5


def test_old_records_get_their_scene_type_from_the_recorded_metadata(tmp_path: Path) -> None:
    from geosleuth.eval.records import EvalRecord
    from geosleuth.eval.report import backfill_scenes
    from geosleuth.schemas import LatLon

    _, meta = benchmark_folder(tmp_path)
    old = [
        EvalRecord(key=f"k{i}", sample_id=sid, dataset="im2gps3k", truth=LatLon(lat=0, lon=0), status="error")
        for i, sid in enumerate(["a1.jpg", "c3.jpg", "zz.jpg"])
    ]
    prov = {"dataset": {"meta_files": [str(meta)]}}
    assert [r.truth_scene for r in backfill_scenes(old, prov)] == ["urban", "natural", None]
    assert backfill_scenes(old, {"dataset": {"meta_files": [str(tmp_path / "gone.csv")]}}) == old
    new = [old[0].model_copy(update={"truth_scene": "indoor"}), old[1]]
    assert backfill_scenes(new, prov) == new  # a run that has scene types keeps its own
