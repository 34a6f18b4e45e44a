"""What the HTTP service adds to `locate`, on real photos (../shared/data/im2gps3k-dev by default):

(a) per photo, the wall time of POST /v1/locate (upload, checks, worker thread, storage, JSON) on a
    real uvicorn server in this process, against `Locator.locate` on the same bytes, run back to
    back in alternating order; the difference's median and p90;
(b) a burst: every photo sent at once with ``--in-flight`` requests open, against ``--workers`` and
    ``--queue-size``: how many answered 200 and 503, throughput, and that every 200 is stored once.

    python bench/service_overhead.py [--photos DIR] [--n 30] [--ocr none] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from geosleuth.agents.pipeline import Locator, build_deps
from geosleuth.config import load_settings
from geosleuth.service.app import create_app
from geosleuth.service.storage import open_storage
from geosleuth.tools.image import IMAGE_SUFFIXES

ROOT = Path(__file__).resolve().parents[1]


def p90(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.9 * len(values)) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--photos", type=Path, default=ROOT.parent / "shared" / "data" / "im2gps3k-dev" / "images"
    )
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument(
        "--ocr", default=None, help="OCR engine (default: settings); 'none' isolates the overhead"
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--queue-size", type=int, default=8)
    ap.add_argument("--in-flight", type=int, default=16)
    args = ap.parse_args()
    if not args.photos.is_dir():
        raise SystemExit(f"no photos at {args.photos} (see ../shared/data/README.md)")
    files = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: args.n]
    photos = [(p.name, p.read_bytes()) for p in files]

    tmp = Path(tempfile.mkdtemp(prefix="geosleuth-bench-"))
    settings = load_settings(
        offline=True,
        ocr={"engine": args.ocr} if args.ocr else None,
        serve={"workers": args.workers, "queue_size": args.queue_size, "max_upload_mb": 50},
    )
    locator = Locator(deps=build_deps(settings))
    locator.deps.gazetteer.ensure_built()
    storage = open_storage(str(tmp / "bench.sqlite3"), tmp)
    app = create_app(locator, storage, settings=settings)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    while not server.started:
        time.sleep(0.05)
    locator.locate(photos[0][1], name=photos[0][0])  # warm the engines once

    direct: list[float] = []
    served: list[float] = []
    with httpx.Client(base_url=base, timeout=120) as client:
        for i, (name, data) in enumerate(photos):
            order = ("direct", "served") if i % 2 == 0 else ("served", "direct")
            for how in order:
                t0 = time.perf_counter()
                if how == "direct":
                    locator.locate(data, name=name)
                    direct.append(time.perf_counter() - t0)
                else:
                    r = client.post("/v1/locate", files={"image": (name, data)})
                    r.raise_for_status()
                    served.append(time.perf_counter() - t0)
    extra = [s - d for s, d in zip(served, direct, strict=True)]
    print(f"(a) {len(photos)} photos, OCR {settings.ocr.engine}")
    print(
        f"    locate():          median {statistics.median(direct) * 1000:8.1f} ms, p90 {p90(direct) * 1000:8.1f} ms"
    )
    print(
        f"    POST /v1/locate:   median {statistics.median(served) * 1000:8.1f} ms, p90 {p90(served) * 1000:8.1f} ms"
    )
    print(
        f"    added by the API:  median {statistics.median(extra) * 1000:8.1f} ms, p90 {p90(extra) * 1000:8.1f} ms"
    )

    before = storage.count_predictions()

    async def burst() -> tuple[list[int], float]:
        sem = asyncio.Semaphore(args.in_flight)
        async with httpx.AsyncClient(base_url=base, timeout=300) as ac:

            async def one(name: str, data: bytes) -> int:
                async with sem:
                    return (await ac.post("/v1/locate", files={"image": (name, data)})).status_code

            t0 = time.perf_counter()
            codes = await asyncio.gather(*(one(n, d) for n, d in photos))
            return list(codes), time.perf_counter() - t0

    codes, seconds = asyncio.run(burst())
    ok = codes.count(200)
    stored = storage.count_predictions() - before
    print(
        f"(b) {len(photos)} at once, {args.in_flight} in flight, workers {args.workers}, queue {args.queue_size}: "
        f"{ok} x 200, {codes.count(503)} x 503, other {len(codes) - ok - codes.count(503)}; "
        f"{ok / seconds:.2f} photos/s; stored {stored} (expected {ok})"
    )
    server.should_exit = True
    thread.join(timeout=30)
    storage.close()


if __name__ == "__main__":
    main()
