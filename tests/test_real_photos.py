"""The reference photos beside the repository: every file gets a Prediction or one clear error."""

import json
import os
import subprocess
import sys

import pytest

from conftest import EXIF_PHOTOS, requires_shared_data

pytestmark = [requires_shared_data(), pytest.mark.slow]


def test_every_file_gets_a_prediction_or_a_clear_error():
    files = sorted(p for p in EXIF_PHOTOS.rglob("*") if p.is_file())
    assert len(files) >= 47
    out = subprocess.run(
        [sys.executable, "-m", "geosleuth.cli", "locate", *map(str, files), "--json", "--workers", "2"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=1200,
        check=False,
    )
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr, out.stderr[-2000:]
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(records) == len(files)
    errors = [r for r in records if "error" in r]
    # Only the non-images (CSV and README files) are refused, each with a readable reason.
    assert {r["source"].rsplit(".", 1)[-1] for r in errors} <= {"csv", "md"}
    assert all(r["error_type"] == "NotAnImageError" for r in errors)
    located = [r for r in records if r.get("basis") == "exif-gps"]
    assert len(located) == 47
