"""Progress without a terminal: a plain line every few seconds (eval, index builds, batches, the
gazetteer build), nothing for a loop that ends first, nothing with -q."""

from __future__ import annotations

import io
import re
import time

from typer.testing import CliRunner

import geosleuth.progress as progress_mod
from conftest import fixture
from geosleuth.cli import app
from geosleuth.progress import Progress


def test_lines_every_interval_say_how_far_how_fast_and_how_long_is_left():
    out = io.StringIO()  # not a terminal
    with Progress("eval demo", 4, unit="samples", stream=out, every=0.05) as bar:
        for _ in range(4):
            time.sleep(0.06)
            bar.advance()
            bar.update(note="within 25 km 50%")
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3
    assert re.match(r"eval demo: \d/4 samples \(\d+%\), .+; within 25 km 50%$", lines[1])
    assert any("left" in ln for ln in lines[:-1])
    assert lines[-1].startswith("eval demo: 4/4 samples (100%)") and "(done in" in lines[-1]


def test_a_quick_loop_prints_nothing_and_disabled_progress_never_prints():
    out = io.StringIO()
    with Progress("quick", 3, stream=out, every=5) as bar:
        bar.advance(3)
    assert out.getvalue() == ""
    with Progress("off", 3, stream=out, every=0.01, enabled=False) as bar:
        time.sleep(0.05)
        bar.advance(3)
    assert out.getvalue() == ""


def test_an_announced_wait_of_unknown_length_says_so_at_once_and_when_done():
    out = io.StringIO()
    with Progress("building the thing (once, about 20 s)", stream=out, every=0.05, announce=True):
        time.sleep(0.12)
    lines = out.getvalue().splitlines()
    assert lines[0] == "building the thing (once, about 20 s)..."
    assert any(re.match(r"building the thing .*: \d+ s so far$", ln) for ln in lines[1:-1])
    assert re.match(r"building the thing .*: done in \d+ s$", lines[-1])


def test_a_resumed_run_counts_its_rate_from_what_it_did_itself():
    bar = Progress("eval", 100, stream=io.StringIO())
    bar.update(completed=90)  # already recorded by an earlier run
    bar._t0 -= 10  # ten seconds in
    bar.advance(5)
    assert "95/100 (95%), 0.5/s, about 10 s left" in bar.line()


def test_the_gazetteer_build_notice_shows_without_a_terminal(tmp_path, monkeypatch, capsys):
    import geosleuth.gazetteer as gaz

    def fake_build(index_path, arrays_path):  # the real one takes 20 s
        time.sleep(0.05)
        index_path.write_bytes(b"")
        arrays_path.write_bytes(b"")

    monkeypatch.setattr(gaz, "build_index", fake_build)
    gaz.Gazetteer(tmp_path / "cache")._ensure_built()
    err = capsys.readouterr().err
    assert f"building the offline gazetteer in {tmp_path / 'cache'} (once, about 20 s)..." in err
    assert "done in" in err


def test_eval_run_without_a_terminal_prints_progress_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(progress_mod, "INTERVAL_S", 0.01)
    rows = ["id,image,lat,lon", *(f"s{i},{fixture('exif_gps.jpg')},48.85,2.29" for i in range(4))]
    (tmp_path / "set.csv").write_text("\n".join(rows) + "\n")
    args = [
        "eval",
        "run",
        str(tmp_path / "set.csv"),
        "--out",
        str(tmp_path / "run"),
        "--ocr",
        "none",
        "--offline",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("eval csv:set: ")]
    assert lines and "(done in" in lines[-1] and lines[-1].startswith("eval csv:set: 4/4 samples (100%)")
    assert "≤25 km 100%" in lines[-1]
    quiet = CliRunner().invoke(app, [*args[:4], str(tmp_path / "run2"), *args[5:], "-q"])
    assert quiet.exit_code == 0 and "eval csv:set: " not in quiet.stderr


def test_index_builds_and_locate_batches_print_progress_lines(tmp_path, monkeypatch):
    import pytest

    monkeypatch.setattr(progress_mod, "INTERVAL_S", 0.001)
    files = [str(fixture(n)) for n in ("exif_gps.jpg", "exif_gps_south_west.jpg", "blank.jpg")]
    res = CliRunner().invoke(app, ["locate", *files, "--ocr", "none", "--offline", "--json"])
    assert res.exit_code == 0, res.output
    assert re.search(r"^locating: 3/3 photos \(100%\).*\(done in", res.stderr, re.M)
    pytest.importorskip("faiss")
    from geosleuth.retrieval.pixel import PixelEncoder

    real = PixelEncoder.encode

    def slow(self, images):  # type: ignore[no-untyped-def]  # two photos must outlast an interval
        time.sleep(0.05)
        return real(self, images)

    monkeypatch.setattr(PixelEncoder, "encode", slow)
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("exif_gps.jpg", "exif_gps_south_west.jpg"):
        (folder / name).write_bytes(fixture(name).read_bytes())
    res = CliRunner().invoke(
        app, ["index", "build", str(folder), "--out", str(tmp_path / "idx"), "--encoder", "pixel"]
    )
    assert res.exit_code == 0, res.output
    assert re.search(r"^indexing: 2/2 photos \(100%\).*\(done in", res.stderr, re.M)
