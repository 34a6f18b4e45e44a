"""A bounded load test of `geosleuth serve` (issue 15): N locate requests at C in flight.

The server is a real `geosleuth serve` process on a free loopback port (offline, OCR off) whose VLM
is the fake OpenAI-compatible server (`python -m geosleuth.testing.openai_server`, its own process)
at a fixed latency, so every located photo really goes through the VLM stage. The photos are small
distinct generated JPEGs without metadata (or `--photos DIR`).

Reported: throughput (all answers, and 200s), latency p50/p99 (all answers, and 200s), counts by
status (429 and 503 are the bounded queue and rate limit at work: each must be the JSON error shape
with Retry-After), the server's RSS before and after (and its peak), and that every 200 has its own
prediction id, retrievable by GET with the same source (0 lost, 0 duplicated), and that the
database holds exactly one prediction per 200 (a refused request stores nothing).

    python bench/service_load.py [--n 500] [--in-flight 32] [--workers 2] [--queue-size 16]
                                 [--vlm-latency 0.05] [--out results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from geosleuth.testing.serve import ServeProcess, free_port

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, max(0, round(q / 100 * len(ranked) + 0.5) - 1))]


def generated_photos(n: int) -> list[tuple[str, bytes]]:
    from PIL import Image

    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (96, 64), ((7 * i) % 256, (255 - 3 * i) % 256, (41 * i) % 256)).save(buf, "JPEG")
        out.append((f"load_{i:04d}.jpg", buf.getvalue()))
    return out


def folder_photos(folder: Path, n: int) -> list[tuple[str, bytes]]:
    from geosleuth.tools.image import IMAGE_SUFFIXES

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no photos in {folder}")
    return [(f"{i:04d}_{files[i % len(files)].name}", files[i % len(files)].read_bytes()) for i in range(n)]


def start_fake_vlm(latency_s: float, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "geosleuth.testing.openai_server", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--latency", str(latency_s)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/models", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the fake VLM server did not start")
        time.sleep(0.05)


def clean_error(r: httpx.Response) -> bool:
    """A refusal in the one error shape, with Retry-After."""
    try:
        body = r.json()
    except ValueError:
        return False
    return (
        set(body) == {"error"}
        and set(body["error"]) == {"type", "message"}
        and bool(body["error"]["message"])
        and r.headers.get("retry-after", "").isdigit()
    )


async def load(
    base: str, photos: list[tuple[str, bytes]], in_flight: int
) -> tuple[list[dict[str, Any]], float]:
    sem = asyncio.Semaphore(in_flight)
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:

        async def one(name: str, data: bytes) -> dict[str, Any]:
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/locate", files={"image": (name, data, "image/jpeg")})
                except httpx.HTTPError as exc:
                    return {"source": name, "status": f"transport {type(exc).__name__}", "seconds": 0.0}
                seconds = time.perf_counter() - t0
            row: dict[str, Any] = {"source": name, "status": r.status_code, "seconds": seconds}
            if r.status_code == 200:
                body = r.json()
                stages = {s["name"]: s["status"] for s in body["stages"]}
                row |= {"id": body["id"], "answer_source": body["source"], "vlm": stages.get("vlm")}
            else:
                row["clean_error"] = clean_error(r) if r.status_code in (429, 503) else False
                row["error_type"] = r.json().get("error", {}).get("type") if clean_error(r) else None
            return row

        t0 = time.perf_counter()
        rows = await asyncio.gather(*(one(n, d) for n, d in photos))
        return list(rows), time.perf_counter() - t0


async def check_stored(base: str, rows: list[dict[str, Any]]) -> int:
    """How many 200s cannot be fetched again by their id with the same source (lost). A 429 (the
    rate limit counts these GETs too) is waited out as its Retry-After says."""
    sem = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:

        async def lost(row: dict[str, Any]) -> bool:
            async with sem:
                for _try in range(100):
                    r = await client.get(f"/v1/predictions/{row['id']}")
                    if r.status_code != 429:
                        break
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))
            return r.status_code != 200 or r.json()["source"] != row["source"]

        flags = await asyncio.gather(*(lost(row) for row in rows if row["status"] == 200))
    return sum(flags)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="Locate requests (default 500).")
    ap.add_argument("--in-flight", type=int, default=32, help="Requests open at once (default 32).")
    ap.add_argument("--workers", type=int, default=2, help="serve.workers (default 2, the service's).")
    ap.add_argument(
        "--queue-size", type=int, default=16, help="serve.queue_size (default 16, the service's)."
    )
    ap.add_argument("--rate-limit", type=float, default=0.0, help="serve.rate_limit_per_minute (0: off).")
    ap.add_argument("--vlm-latency", type=float, default=0.05, help="Fake VLM seconds per request.")
    ap.add_argument("--photos", type=Path, default=None, help="A folder of photos (default: generated).")
    ap.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    args = ap.parse_args()

    photos = folder_photos(args.photos, args.n) if args.photos else generated_photos(args.n)
    tmp = Path(tempfile.mkdtemp(prefix="geosleuth-load-"))
    database = tmp / "service.sqlite3"
    config = tmp / "geosleuth.toml"
    config.write_text("offline = true\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "GEOSLEUTH_CONFIG": str(config),  # offline, and no developer's settings
        "GEOSLEUTH_SERVE__QUEUE_SIZE": str(args.queue_size),
        "GEOSLEUTH_SERVE__RATE_LIMIT_PER_MINUTE": str(args.rate_limit),
    }
    vlm, vlm_url = start_fake_vlm(args.vlm_latency, env)
    serve_args = ["--offline", "--ocr", "none", "--database", str(database), "--workers", str(args.workers)]
    serve_args += ["--vlm-url", vlm_url, "--vlm-samples", "1", "--quiet"]
    server = ServeProcess(
        serve_args,
        env=env,
        log=tmp / "serve.log",
    )
    try:
        server.start()
        warm = httpx.post(server.url + "/v1/locate", files={"image": photos[0]}, timeout=60)
        warm.raise_for_status()  # the first call pays for lazy imports; not counted
        httpx.delete(server.url + f"/v1/predictions/{warm.json()['id']}", timeout=10).raise_for_status()
        rss_before = server.rss_bytes()
        rows, seconds = asyncio.run(load(server.url, photos, args.in_flight))
        rss_after = server.rss_bytes()
        peak = server.rss_bytes(peak=True)
        ok = [row for row in rows if row["status"] == 200]
        lost = asyncio.run(check_stored(server.url, rows))
    finally:
        server.terminate()
        vlm.kill()
        vlm.wait()
    with sqlite3.connect(database) as db:
        stored = int(db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])
        in_db = dict(db.execute("SELECT id, source FROM predictions").fetchall())
    # The database's word too, beside the API's: each 200's id is stored, under its photo's name.
    lost = max(lost, sum(in_db.get(row["id"]) != row["source"] for row in rows if row["status"] == 200))

    codes = Counter(str(row["status"]) for row in rows)
    refused = [row for row in rows if row["status"] in (429, 503)]
    ids = [row["id"] for row in ok]
    all_s = [row["seconds"] for row in rows if isinstance(row["status"], int)]
    ok_s = [row["seconds"] for row in ok]
    result = {
        "requests": args.n,
        "in_flight": args.in_flight,
        "workers": args.workers,
        "queue_size": args.queue_size,
        "vlm_latency_s": args.vlm_latency,
        "seconds": round(seconds, 3),
        "throughput_rps": round(args.n / seconds, 2),
        "located_per_s": round(len(ok) / seconds, 2),
        "latency_ms": {
            "all": {
                "p50": round(percentile(all_s, 50) * 1000, 1),
                "p99": round(percentile(all_s, 99) * 1000, 1),
            },
            "200": {
                "p50": round(percentile(ok_s, 50) * 1000, 1),
                "p99": round(percentile(ok_s, 99) * 1000, 1),
            },
        },
        "status": dict(sorted(codes.items())),
        "refusals_clean": sum(bool(row["clean_error"]) for row in refused),
        "refusals": len(refused),
        "refusal_types": dict(Counter(str(row.get("error_type")) for row in refused)),
        "vlm_ran": sum(row["vlm"] == "ran" for row in ok),
        "distinct_ids": len(set(ids)),
        "duplicated": len(ids) - len(set(ids)),
        "lost": lost,
        "stored_predictions": stored,
        "rss_mb": {
            "before": round(rss_before / 2**20, 1),
            "after": round(rss_after / 2**20, 1),
            "peak": round(peak / 2**20, 1),
        },
    }
    rows_out = [
        ("requests / in flight", f"{args.n} / {args.in_flight}"),
        ("workers / queue_size", f"{args.workers} / {args.queue_size}"),
        ("fake VLM latency", f"{args.vlm_latency * 1000:.0f} ms"),
        ("wall time", f"{seconds:.2f} s"),
        ("throughput (all answers)", f"{result['throughput_rps']} req/s"),
        ("throughput (200s)", f"{result['located_per_s']} photos/s"),
        (
            "latency p50 / p99 (all)",
            f"{result['latency_ms']['all']['p50']} / {result['latency_ms']['all']['p99']} ms",
        ),
        (
            "latency p50 / p99 (200s)",
            f"{result['latency_ms']['200']['p50']} / {result['latency_ms']['200']['p99']} ms",
        ),
        ("status counts", ", ".join(f"{k}: {v}" for k, v in result["status"].items())),
        ("429/503 with the error shape", f"{result['refusals_clean']} of {result['refusals']}"),
        ("200s whose VLM stage ran", f"{result['vlm_ran']} of {len(ok)}"),
        ("distinct ids / duplicated / lost", f"{result['distinct_ids']} / {result['duplicated']} / {lost}"),
        ("predictions stored", f"{stored} (200s: {len(ok)})"),
        ("server RSS before / after / peak", "{before} / {after} / {peak} MB".format(**result["rss_mb"])),
    ]
    width = max(len(k) for k, _ in rows_out)
    for key, value in rows_out:
        print(f"{key:<{width}}  {value}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    bad = result["duplicated"] or lost or stored != len(ok) or result["refusals_clean"] != len(refused)
    if bad or codes.keys() - {"200", "429", "503"}:
        raise SystemExit("FAILED: lost, duplicated or unclean answers (see the table)")


if __name__ == "__main__":
    main()
