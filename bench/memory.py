"""Peak memory (RSS) of geosleuth on large images and on an evaluation batch.

    .venv/bin/python bench/memory.py [--cases baseline png-15k jpeg-8k eval-10] [--json out.json]

Each case runs the real command line (``python -m geosleuth.cli ...``) in a fresh process and reads that
process's peak resident set size from the kernel (``os.wait4``'s rusage, the same number as
``resource.getrusage``): what a user's machine would have to hold, models and all.

- ``baseline``: ``locate`` on a small sign (what the engines cost without a large image);
- ``png-15k``: ``locate`` on a 15000 x 15000 PNG (a few hundred KB on disk, 225 M pixels declared);
- ``png-15k-allowed``: the same with ``GEOSLEUTH_MAX_IMAGE_PIXELS=250000000`` (the limit before it
  was lowered), so the image is decoded rather than refused;
- ``png-10k``: a 10000 x 10000 PNG, the most pixels the default limit lets in (worst case);
- ``jpeg-8k``: ``locate`` on an 8000 x 8000 JPEG (a 64-megapixel photo);
- ``eval-10``: ``eval run --limit 10`` on ``../shared/data/im2gps3k-dev`` (the fixtures' signs when
  that folder is absent), four images in flight as ``eval run`` does by default.

The images are generated (seeded) into ``--work`` once and reused. Run it against another checkout's
code with ``PYTHONPATH=that/src`` to compare before and after.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
IM2GPS = ROOT.parent / "shared" / "data" / "im2gps3k-dev"
CASES = ("baseline", "png-15k", "png-15k-allowed", "png-10k", "jpeg-8k", "eval-10")
ENV = {"png-15k-allowed": {"GEOSLEUTH_MAX_IMAGE_PIXELS": "250000000"}}


def big_png(path: Path, side: int) -> Path:
    """An RGB PNG of ``side`` x ``side`` pixels written row by row (bands of colour and a diagonal
    line, so it is not one flat colour), without ever holding the picture in memory."""
    if path.exists():
        return path

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    comp = zlib.compressobj(9)
    parts = [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))]
    idat = []
    for y in range(side):
        shade = 60 + (y * 7 // side) * 25
        row = bytearray(bytes((shade, 120, 200 - shade // 2)) * side)
        x = (y * 3) % side
        row[3 * x : 3 * x + 3] = b"\xff\xff\xff"
        idat.append(comp.compress(b"\x00" + bytes(row)))
    idat.append(comp.flush())
    parts += [chunk(b"IDAT", b"".join(idat)), chunk(b"IEND", b"")]
    path.write_bytes(b"".join(parts))
    return path


def big_jpeg(path: Path, side: int) -> Path:
    """A textured ``side`` x ``side`` JPEG (noise and a few shapes: a realistic file size)."""
    if path.exists():
        return path
    from PIL import Image, ImageDraw

    noise = Image.effect_noise((side, side), 40)
    img = Image.merge("RGB", (noise, noise.point(lambda v: v // 2 + 60), noise.point(lambda v: 255 - v)))
    del noise
    draw = ImageDraw.Draw(img)
    for i in range(40):
        x, y = (i * 977) % side, (i * 613) % side
        draw.rectangle((x, y, x + side // 10, y + side // 20), fill=(20 + i * 5, 90, 160))
    img.save(path, quality=88)
    return path


def eval_table(work: Path) -> tuple[str, list[str]]:
    """The dataset argument and options of ``eval run`` for ten photos."""
    if (IM2GPS / "labels.csv").exists():
        return str(IM2GPS / "labels.csv"), []
    table = work / "fixtures.csv"
    names = [*sorted(p.name for p in FIXTURES.glob("sign_*.jpg")), "shop_es_phone.jpg", "blank.jpg"]
    names = (names * 10)[:10]
    with table.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "lat", "lon"])
        for i, n in enumerate(names):
            w.writerow([str(FIXTURES / n), 48.85 + i * 0.01, 2.35])
    return str(table), []


def command(case: str, work: Path) -> list[str]:
    geosleuth = [sys.executable, "-m", "geosleuth.cli"]
    if case == "baseline":
        return [*geosleuth, "locate", str(FIXTURES / "sign_fr_paris.jpg"), "--json", "--offline"]
    if case in ("png-15k", "png-15k-allowed"):
        return [*geosleuth, "locate", str(big_png(work / "big-15000.png", 15000)), "--json", "--offline"]
    if case == "png-10k":
        return [*geosleuth, "locate", str(big_png(work / "big-10000.png", 10000)), "--json", "--offline"]
    if case == "jpeg-8k":
        return [*geosleuth, "locate", str(big_jpeg(work / "big-8000.jpg", 8000)), "--json", "--offline"]
    if case == "eval-10":
        dataset, extra = eval_table(work)
        out = Path(tempfile.mkdtemp(prefix="eval-", dir=work))
        return [*geosleuth, "eval", "run", dataset, *extra, "--limit", "10", "--out", str(out), "--offline"]
    raise SystemExit(f"unknown case {case!r}; known: {', '.join(CASES)}")


def measure(cmd: list[str], env: dict[str, str]) -> dict[str, object]:
    """Run ``cmd`` and return its peak RSS (MB), seconds, exit status and last line of stderr."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT, env={**os.environ, **env})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    return {
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports kilobytes
        "seconds": round(time.perf_counter() - t0, 1),
        "exit": proc.returncode,
        "stderr_tail": tail[0][:200],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    ap.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-memory", help="generated images")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    code = os.environ.get("PYTHONPATH", "(installed package)")
    print(f"# peak RSS per case, a fresh process each; code from {code}; Python {platform.python_version()}")
    results = {}
    for case in args.cases:
        cmd = command(case, args.work)  # generates the input first, outside the measured process
        results[case] = r = measure(cmd, ENV.get(case, {}))
        print(
            f"{case:10s} {r['peak_rss_mb']:8.1f} MB  {r['seconds']:6.1f} s  exit {r['exit']}  {r['stderr_tail']}"
        )
    if args.json:
        args.json.write_text(json.dumps({"pythonpath": code, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
