import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import FIXTURES, fixture
from geosleuth.cli import app
from geosleuth.errors import (
    ConfigError,
    ImageNotFoundError,
    InternalError,
    MissingDependencyError,
    TableError,
    VLMConnectionError,
    WeightsNotFoundError,
)

runner = CliRunner()


def run(*args, input=None):
    return runner.invoke(app, ["locate", *args], input=input)


def test_locate_prints_a_readable_answer():
    res = run(str(fixture("exif_gps.jpg")), "--ocr", "none")
    assert res.exit_code == 0, res.output
    assert "Paris, Ile-de-France, France" in res.stdout
    assert "from EXIF GPS metadata" in res.stdout
    assert "retrieval unavailable" in res.stdout and "vlm       unavailable" in res.stdout


def test_locate_json_is_a_prediction():
    res = run(str(fixture("sign_fr_paris.jpg")), "--json")
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    assert data["status"] == "located" and data["best"]["place"]["name"] == "Paris"
    assert {s["name"] for s in data["stages"]} >= {"exif", "ocr", "retrieval", "vlm"}


def test_too_little_evidence_is_said_plainly():
    res = run(str(fixture("blank.jpg")))
    assert res.exit_code == 0
    assert "Too little evidence" in res.stdout


@pytest.mark.parametrize(
    "name,words",
    [
        ("missing.jpg", "no such file"),
        ("empty.jpg", "empty"),
        ("not_an_image.jpg", "not an image"),
        ("truncated.jpg", "truncated"),
        ("bomb.png", "decompression bomb"),
        ("document.pdf", "PDF"),
        ("icon.ico", "not supported"),
    ],
)
def test_bad_input_is_one_line_on_stderr(name, words):
    res = run(str(FIXTURES / name))
    assert res.exit_code == 1
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geosleuth: error: ") and words in lines[0]
    assert "Traceback" not in res.output


def test_folder_batch_continues_past_bad_files(tmp_path):
    for name in ("exif_gps.jpg", "exif_gps_south_west.jpg", "not_an_image.jpg", "empty.jpg"):
        (tmp_path / name).write_bytes(fixture(name).read_bytes())
    (tmp_path / "notes.txt").write_text("not an image, and not named like one")
    res = run(str(tmp_path), "--json", "--ocr", "none")
    assert res.exit_code == 1  # some inputs failed
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(records) == 4
    ok = [r for r in records if "status" in r]
    bad = [r for r in records if "error" in r]
    assert len(ok) == 2 and len(bad) == 2
    assert "2 located" in res.stderr and "1 non-image files skipped" in res.stderr


def test_stdin():
    res = run("-", "--json", "--ocr", "none", input=fixture("exif_gps_south_west.jpg").read_bytes())
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    assert data["source"] == "<stdin>" and data["best"]["point"]["lat"] < 0


def test_ignore_exif_gps_flag():
    res = run(str(fixture("exif_gps.jpg")), "--ignore-exif-gps", "--ocr", "none", "--json")
    assert json.loads(res.stdout)["basis"] != "exif-gps"


def test_bad_settings_exit_2(monkeypatch):
    monkeypatch.setenv("GEOSLEUTH_MIN_PROBABILITY", "lots")
    res = run(str(fixture("exif_gps.jpg")))
    assert res.exit_code == 2 and "min_probability" in res.stderr and "Traceback" not in res.output


def test_config_show():
    res = runner.invoke(app, ["config", "show"])
    assert res.exit_code == 0 and "[ocr]" in res.stdout and "precedence" in res.stdout
    res = runner.invoke(app, ["config", "show", "--json"])
    assert json.loads(res.stdout)["use_exif_gps"] is True


def test_real_subprocess_and_fast_help():
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, "-m", "geosleuth.cli", "locate", str(fixture("exif_gps.heic")), "--ocr", "none"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "geosleuth.cli", "locate", str(FIXTURES), "--ocr", "none"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert bad.returncode == 1  # the fixtures folder holds broken files on purpose
    assert "Traceback" not in bad.stderr
    # --help must not import the heavy stages
    code = "import sys, geosleuth.cli; assert 'geosleuth.agents.pipeline' not in sys.modules; assert 'numpy' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_index_commands_fail_with_one_line(tmp_path):
    res = runner.invoke(app, ["index", "info", str(tmp_path)])
    assert res.exit_code == 1 and "no manifest.json" in res.stderr and "Traceback" not in res.output
    res = runner.invoke(app, ["index", "build", str(FIXTURES), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "no image encoder" in res.stderr
    res = runner.invoke(
        app, ["index", "build", str(tmp_path / "nope"), "--out", str(tmp_path / "x"), "--encoder", "pixel"]
    )
    assert res.exit_code == 1 and "no such file or folder" in res.stderr
    res = runner.invoke(
        app,
        [
            "index",
            "build",
            str(FIXTURES),
            "--out",
            str(tmp_path / "x"),
            "--encoder",
            "pixel",
            "--kind",
            "hnsw",
        ],
    )
    assert res.exit_code == 2 and "--kind" in res.stderr  # a bad option value is bad usage


def test_index_build_info_search_with_the_pixel_encoder(tmp_path):
    pytest.importorskip("faiss")
    out = tmp_path / "idx"
    res = runner.invoke(app, ["index", "build", str(FIXTURES), "--out", str(out), "--encoder", "pixel"])
    assert res.exit_code == 0, res.output
    assert "indexed" in res.stdout and "no gps" in res.stdout
    res = runner.invoke(app, ["index", "info", str(out)])
    assert res.exit_code == 0 and "encoder    : pixel" in res.stdout
    res = runner.invoke(app, ["index", "search", str(out), str(fixture("exif_gps_vs_text.jpg")), "-k", "2"])
    assert res.exit_code == 0 and "most dissimilar" in res.stdout
    first = res.stdout.splitlines()[1]
    assert first.strip().startswith("+1.000") and "[exif_gps_vs_text.jpg]" in first and "Paris" in first


# --- inputs are checked before anything heavy is built ------------------------------------------


@pytest.mark.parametrize("name", ["missing.jpg", "not_an_image.jpg", "document.pdf", "empty.jpg"])
def test_a_bad_input_fails_at_once_on_an_empty_cache(tmp_path, monkeypatch, name):
    import geosleuth.agents.pipeline as pipeline

    def no_heavy_work(*args, **kwargs):
        raise AssertionError("build_deps ran although no input could be used")

    monkeypatch.setattr(pipeline, "build_deps", no_heavy_work)
    cache = tmp_path / "cache"
    cache.mkdir()
    t0 = time.perf_counter()
    res = run(str(FIXTURES / name), "--cache-dir", str(cache))
    seconds = time.perf_counter() - t0
    assert res.exit_code == 1, res.output
    assert len(res.stderr.strip().splitlines()) == 1 and res.stdout == ""
    assert seconds < 5, f"{seconds:.1f} s"
    assert list(cache.iterdir()) == []  # no gazetteer was built


def test_a_missing_input_fails_at_once_in_a_real_process(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "GEOSLEUTH_CACHE_DIR"}
    t0 = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "geosleuth.cli",
            "locate",
            str(tmp_path / "missing.jpg"),
            "--cache-dir",
            str(cache),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    seconds = time.perf_counter() - t0  # the interpreter's start included
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("geosleuth: error: ") == 1 and "Traceback" not in out.stderr
    assert seconds < 5, f"{seconds:.1f} s"
    assert not any(cache.glob("gazetteer*"))


def test_a_batch_reports_every_bad_input_and_locates_the_rest_in_order(tmp_path):
    sources = [
        str(tmp_path / "missing.jpg"),
        str(fixture("exif_gps.jpg")),
        str(fixture("not_an_image.jpg")),
        str(fixture("exif_gps_south_west.jpg")),
    ]
    res = run(*sources, "--json", "--ocr", "none")
    assert res.exit_code == 1
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["source"] for r in records] == sources
    assert [r.get("error_type") for r in records] == ["ImageNotFoundError", None, "NotAnImageError", None]
    assert records[1]["status"] == "located" and records[3]["best"]["point"]["lat"] < 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("geosleuth: error: ")]
    assert len(errors) == 2


# --- one table maps errors to exit codes ------------------------------------------------------


@pytest.mark.parametrize(
    "error,code",
    [
        (ImageNotFoundError("a.jpg", "no such file"), 1),
        (TableError("t.csv: no latitude column"), 1),
        (VLMConnectionError("could not connect"), 1),
        (PermissionError(13, "Permission denied"), 1),
        (ConfigError("min_probability: not a number"), 2),
        (MissingDependencyError("faiss-cpu", "retrieval", "A neighbour index"), 2),
        (WeightsNotFoundError("CLIP", "not in the HF cache"), 2),
        (InternalError("a bug"), 3),
        (KeyError("a bug"), 3),
        (KeyboardInterrupt(), 130),
    ],
)
def test_each_kind_of_error_exits_with_its_code(monkeypatch, error, code):
    import geosleuth.config

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(geosleuth.config, "load_settings", fail)
    res = runner.invoke(app, ["config", "show"])
    assert res.exit_code == code
    assert res.stdout == "" and "Traceback" not in res.output
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("geosleuth: ")


def test_a_bug_on_one_photo_exits_3_and_the_batch_goes_on(monkeypatch):
    from geosleuth.agents.pipeline import Locator

    real = Locator.locate

    def buggy(self, source, *, name=None):
        if "south_west" in str(source):
            raise ZeroDivisionError("a bug")
        return real(self, source, name=name)

    monkeypatch.setattr(Locator, "locate", buggy)
    res = run(
        str(fixture("exif_gps.jpg")), str(fixture("exif_gps_south_west.jpg")), "--json", "--ocr", "none"
    )
    assert res.exit_code == 3
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert records[0]["status"] == "located" and records[1]["error_type"] == "InternalError"


def test_every_command_reports_errors_through_the_table():
    commands = list(app.registered_commands)
    for group in app.registered_groups:
        commands += group.typer_instance.registered_commands
    assert len(commands) >= 10
    for command in commands:
        assert getattr(command.callback, "reports_errors", False), command.callback


def test_verifier_fit_reads_the_table_before_building_the_pipeline(tmp_path, monkeypatch):
    import geosleuth.agents.pipeline as pipeline

    def no_heavy_work(*args, **kwargs):
        raise AssertionError("the pipeline was built for a table that cannot be used")

    monkeypatch.setattr(pipeline, "build_deps", no_heavy_work)
    out = str(tmp_path / "w.json")
    res = runner.invoke(app, ["verifier", "fit", str(tmp_path / "missing.csv"), "--out", out])
    assert res.exit_code == 1 and "no such file" in res.stderr
    (tmp_path / "truth.csv").write_text("image,latitude\na.jpg,1.0\n")
    res = runner.invoke(app, ["verifier", "fit", str(tmp_path / "truth.csv"), "--out", out])
    assert res.exit_code == 1 and "longitude" in res.stderr and "Traceback" not in res.output


# --- errors a script can read: one JSON object per input ----------------------------------------


@pytest.mark.parametrize(
    "name,error_type",
    [
        ("missing.jpg", "ImageNotFoundError"),
        ("not_an_image.jpg", "NotAnImageError"),
        ("bomb.png", "ImageTooLargeError"),
        ("truncated.jpg", "CorruptImageError"),  # found by the pipeline, not the header check
    ],
)
def test_one_bad_file_with_json_is_one_error_object(name, error_type):
    res = run(str(FIXTURES / name), "--json", "--ocr", "none")
    assert res.exit_code == 1
    (record,) = [json.loads(line) for line in res.stdout.splitlines()]
    assert record["source"] == str(FIXTURES / name) and record["error_type"] == error_type and record["error"]
    assert len(res.stderr.strip().splitlines()) == 1  # and still its one line on stderr


def test_a_run_that_cannot_start_still_answers_every_input_in_json(monkeypatch):
    import geosleuth.agents.pipeline as pipeline
    from geosleuth.errors import EngineUnavailableError

    def broken(*args, **kwargs):
        raise EngineUnavailableError("tesseract cannot run here: install it or pick another engine")

    monkeypatch.setattr(pipeline, "build_deps", broken)
    sources = [str(fixture("exif_gps.jpg")), str(FIXTURES / "missing.jpg"), str(fixture("blank.jpg"))]
    res = run(*sources, "--json")
    assert res.exit_code == 2
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["source"] for r in records] == sources
    assert [r["error_type"] for r in records] == [
        "EngineUnavailableError",
        "ImageNotFoundError",
        "EngineUnavailableError",
    ]


def test_bad_settings_with_json_answer_every_input(monkeypatch):
    monkeypatch.setenv("GEOSLEUTH_MIN_PROBABILITY", "lots")
    res = run(str(fixture("exif_gps.jpg")), str(fixture("blank.jpg")), "--json")
    assert res.exit_code == 2
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["error_type"] for r in records] == ["ConfigError", "ConfigError"]


def test_links_that_lead_nowhere_and_pipes_are_input_errors_counted_and_named(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(fixture("exif_gps.jpg").read_bytes())
    (folder / "broken.jpg").symlink_to(folder / "gone.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    os.mkfifo(folder / "pipe.jpg")
    (folder / "up").symlink_to(tmp_path)  # a link to a folder above: not followed, so no loop
    (folder / "notes.txt").write_text("not a photo")
    res = run(str(folder), "--json", "--ocr", "none")
    assert res.exit_code == 1
    records = {Path(r["source"]).name: r for r in map(json.loads, res.stdout.splitlines())}
    assert set(records) == {"a.jpg", "broken.jpg", "loop.jpg", "pipe.jpg"}
    assert records["a.jpg"]["status"] == "located"
    assert (
        records["broken.jpg"]["error_type"] == "ImageNotFoundError"
        and "broken symbolic link" in records["broken.jpg"]["error"]
    )
    assert (
        records["loop.jpg"]["error_type"] == "NotAFileError"
        and "symbolic link loop" in records["loop.jpg"]["error"]
    )
    assert (
        records["pipe.jpg"]["error_type"] == "NotAFileError" and "named pipe" in records["pipe.jpg"]["error"]
    )
    assert "4 inputs: 1 located, 0 too little evidence, 3 failed, 1 non-image files skipped" in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("geosleuth: error: ")]
    assert len(errors) == 3
    # a single input that is a link loop: an input error (exit 1), not an internal one
    res = run(str(folder / "loop.jpg"))
    assert res.exit_code == 1 and "symbolic link loop" in res.stderr and "internal" not in res.stderr


def test_a_folder_without_photos_is_one_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no photos here")
    res = run(str(tmp_path), "--json")
    assert res.exit_code == 1
    (record,) = [json.loads(line) for line in res.stdout.splitlines()]
    assert record["error_type"] == "EmptySourceError" and "no image files" in record["error"]
    assert "1 other files left out" in record["error"]


def test_library_warnings_reach_stderr_as_log_lines_not_raw_warnings(tmp_path):
    from data import corrupt_exif_blocks, jpeg_with_exif

    path = tmp_path / "damaged-exif.jpg"
    path.write_bytes(jpeg_with_exif(corrupt_exif_blocks()["cut-short"]))
    out = subprocess.run(
        [sys.executable, "-m", "geosleuth.cli", "locate", str(path), "--json", "--ocr", "none", "-v"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "Warning:" not in out.stderr and "warnings.warn" not in out.stderr  # no raw Python warning
    assert "Expecting to read" in out.stderr  # Pillow's words, as a log record (-v)
    pred = json.loads(out.stdout)
    assert any(e["id"] == "exif.read" and "corrupt" in e["reason"] for e in pred["evidence"])


def test_prepare_builds_once_and_check_says_what_is_missing(tmp_path, gazetteer, cache_dir):
    gazetteer.ensure_built()
    res = runner.invoke(app, ["prepare", "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0 and "already built" in res.stdout
    res = runner.invoke(app, ["prepare", "--check", "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0 and "built in" in res.stdout
    empty = tmp_path / "empty"
    res = runner.invoke(app, ["prepare", "--check", "--cache-dir", str(empty)])
    assert res.exit_code == 1
    assert "landmask" in res.stderr and ".sqlite" in res.stderr and "geosleuth prepare" in res.stderr
    assert not empty.exists()  # a check builds nothing
