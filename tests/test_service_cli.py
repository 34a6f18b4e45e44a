"""``geosleuth serve`` as a real process: start, answer, stop on SIGTERM with a clean exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install 'geosleuth[serve]')")
import httpx

from conftest import ROOT, fixture, free_port


def test_serve_answers_and_stops_cleanly_on_sigterm(tmp_path: Path, cache_dir: Path):
    port = free_port()
    database = tmp_path / "served.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "GEOSLEUTH_CACHE_DIR": str(cache_dir)}
    command = [sys.executable, "-m", "geosleuth.cli", "serve", "--offline", "--ocr", "none"]
    command += ["--port", str(port), "--database", str(database)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(f"{base}/healthz", timeout=1).json() == {"status": "ok"}:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start within 60 s"
            time.sleep(0.2)
        photo = fixture("exif_gps.jpg")
        r = httpx.post(f"{base}/v1/locate", files={"image": (photo.name, photo.read_bytes())}, timeout=30)
        assert r.status_code == 200
        body = r.json()
        assert body["basis"] == "exif-gps" and body["best"]["place"]["name"] == "Paris"
        assert httpx.get(f"{base}/v1/predictions/{body['id']}", timeout=5).json()["source"] == "exif_gps.jpg"
        assert httpx.get(f"{base}/readyz", timeout=5).json()["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err
    assert f"serving on http://127.0.0.1:{port}" in err
    assert "Traceback" not in err and err.rstrip().endswith("geosleuth: stopped")
    assert database.is_file()
