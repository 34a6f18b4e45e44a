"""Throughput of the OpenAI-compatible backend against the local test server with simulated latency.

Each request is a full geolocation request (its own copy of the bundled photo, encoded as a JPEG
data URL, the zero-shot prompt, the JSON schema, n samples), answered by geosleuth.testing's server
after ``--latency`` seconds. The server runs in its own process, as a real one would (``--in-process``
shares this process and its GIL instead, and reports the peak of requests in flight).
The target (issue 4): 32 concurrent requests give >= 25x the sequential throughput at 0.5 s.

    python bench/vlm_throughput.py --latency 0.5 --concurrency 1 8 32 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

from geosleuth.agents.vlm.openai_backend import OpenAICompatibleVLM
from geosleuth.agents.vlm.prompting import PromptBuilder, PromptContext
from geosleuth.agents.vlm.serve import bundled_image
from geosleuth.config import VLMSettings
from geosleuth.testing.openai_server import FakeOpenAIServer


@contextlib.contextmanager
def server_process(latency: float) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "geosleuth.testing.openai_server",
        "--port",
        str(port),
        "--latency",
        str(latency),
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--rounds", type=int, default=8, help="Requests per run = rounds x concurrency.")
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--in-process", action="store_true", help="Run the server in this process.")
    args = ap.parse_args()

    settings = VLMSettings(samples=args.samples, rag_k=[0])
    request = PromptBuilder(settings).requests(bundled_image(), PromptContext(), key="bench")[0]
    photo = bundled_image()
    rows = []
    fake = FakeOpenAIServer(model="bench-vlm", latency_s=args.latency) if args.in_process else None
    with (
        fake if fake is not None else contextlib.nullcontext(),
        contextlib.nullcontext(fake.base_url) if fake is not None else server_process(args.latency) as url,
    ):
        for c in args.concurrency:
            n_requests = args.rounds * c
            rates = []
            for _ in range(args.repeats):
                batch = [request.model_copy(update={"images": [photo.copy()]}) for _ in range(n_requests)]
                with OpenAICompatibleVLM(url, max_concurrency=c, server="vllm") as backend:
                    backend.generate([request])  # warm-up: model discovery and the connection pool
                    if fake is not None:
                        fake.reset()
                    t0 = time.perf_counter()
                    calls = backend.generate(batch)
                    elapsed = time.perf_counter() - t0
                bad = [call for call in calls if call.error or len(call.usable) != args.samples]
                if bad:
                    raise SystemExit(f"{len(bad)} requests failed: {bad[0].error}")
                rates.append(n_requests / elapsed)
            peak = fake.max_in_flight if fake is not None else "-"
            rows.append((c, n_requests, statistics.median(rates), peak))
    base = rows[0][2]
    where = "in this process" if args.in_process else "in its own process"
    print(
        f"latency {args.latency} s, {args.samples} samples per request, server {where}, median of {args.repeats} runs"
    )
    print(f"{'concurrency':>11} {'requests':>8} {'req/s':>8} {'x seq':>6} {'max in flight':>13}")
    for c, n, rate, peak in rows:
        print(f"{c:>11} {n:>8} {rate:>8.2f} {rate / base:>6.1f} {peak:>13}")


if __name__ == "__main__":
    main()
