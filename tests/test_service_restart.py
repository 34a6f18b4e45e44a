"""``geosleuth serve`` killed (SIGKILL) or stopped (SIGTERM) in the middle of a 50-image job, then
started again on the same SQLite database: the job completes and each image has exactly one result
(issue 15).

The server is a real process; its VLM is the fake OpenAI-compatible server of
:mod:`geosleuth.testing.openai_server` in this process, at a fixed latency, so each image costs
about 0.15 s. One scripted answer is slow: the image whose VLM call it is is in flight, and only
that one, when the signal comes, so the test knows what was interrupted. Under SIGTERM a single
``POST /v1/locate`` is in flight too, and a client is following the job's results.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install 'geosleuth[serve]')")
import httpx
from PIL import Image

from conftest import ROOT
from geosleuth.service.storage import Job, open_storage
from geosleuth.testing.openai_server import PARIS, FakeOpenAIServer, Reply
from geosleuth.testing.serve import ServeProcess

pytestmark = pytest.mark.slow

N = 50
FIRST_DONE = 5  # images finished before the signal; the next one is in flight


def photos() -> list[tuple[str, bytes]]:
    """50 small distinct JPEGs without metadata (so the answer needs the VLM)."""
    out = []
    for i in range(N):
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (5 * i, 255 - 5 * i, (37 * i) % 256)).save(buf, "JPEG")
        out.append((f"photo_{i:02d}.jpg", buf.getvalue()))
    return out


@pytest.fixture(scope="module")
def vlm() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(model="tiny-vlm", latency_s=0.1) as srv:
        yield srv


@pytest.fixture
def serve(vlm: FakeOpenAIServer, tmp_path: Path, cache_dir: Path) -> Any:
    """``serve(workers)``: a ServeProcess (not started) on ``tmp_path``'s database, VLM at ``vlm``."""
    vlm.reset()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "GEOSLEUTH_CACHE_DIR": str(cache_dir)}
    database = tmp_path / "service.sqlite3"
    made: list[ServeProcess] = []

    def make(workers: int) -> ServeProcess:
        args = ["--offline", "--ocr", "none", "--database", str(database), "--workers", str(workers)]
        args += ["--vlm-url", vlm.base_url, "--vlm-samples", "1"]
        made.append(ServeProcess(args, env=env, log=tmp_path / "serve.log"))
        return made[-1]

    make.database = database  # type: ignore[attr-defined]
    yield make
    for server in made:
        server.kill()


def submit(server: ServeProcess) -> str:
    files = [("image", (name, data, "image/jpeg")) for name, data in photos()]
    r = httpx.post(server.url + "/v1/jobs", files=files, timeout=30)
    assert r.status_code == 202, r.text
    assert r.json()["total"] == N
    return str(r.json()["id"])


def wait_for(server: ServeProcess, job_id: str, done: int, running: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        status = httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=5).json()
        if (status["done"], status["running"]) == (done, running):
            return
        assert status["done"] <= done, status
        assert time.monotonic() < deadline, f"not {done} done and {running} running: {status}"
        time.sleep(0.02)


def stored(database: Path, job_id: str) -> Job:
    storage = open_storage(str(database), database.parent)
    try:
        job = storage.get_job(job_id)
    finally:
        storage.close()
    assert job is not None
    return job


def results(server: ServeProcess, job_id: str) -> list[dict[str, Any]]:
    """Every result line, the stream followed until each image has one."""
    with httpx.stream("GET", f"{server.url}/v1/jobs/{job_id}/results", timeout=60) as r:
        assert r.status_code == 200
        return [json.loads(line) for line in r.iter_lines() if line]


def assert_complete(server: ServeProcess, job_id: str) -> list[dict[str, Any]]:
    """The job is done and each of the 50 images has exactly one result, with its own prediction."""
    lines = results(server, job_id)
    assert sorted(line["index"] for line in lines) == list(range(N))  # none lost, none twice
    assert {line["status"] for line in lines} == {"done"}
    assert [line["source"] for line in sorted(lines, key=lambda x: x["index"])] == [n for n, _ in photos()]
    assert len({line["id"] for line in lines}) == N
    for line in lines:
        assert {s["name"]: s["status"] for s in line["prediction"]["stages"]}["vlm"] == "ran"
    status = httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=5).json()
    assert (status["status"], status["done"], status["failed"], status["pending"], status["running"]) == (
        "done",
        N,
        0,
        0,
        0,
    )
    assert {item["prediction_id"] for item in status["items"]} == {line["id"] for line in lines}
    first = lines[0]
    again = httpx.get(f"{server.url}/v1/predictions/{first['id']}", timeout=5).json()
    assert again["source"] == first["source"]
    return lines


def test_a_job_killed_mid_way_completes_after_restart_with_one_result_per_image(
    serve: Any, vlm: FakeOpenAIServer
):
    vlm.script(*[Reply.guess(PARIS)] * FIRST_DONE, Reply.guess(PARIS, delay_s=30))  # the 6th hangs
    first = serve(workers=1).start()
    job_id = submit(first)
    wait_for(first, job_id, done=FIRST_DONE, running=1)
    # "running" is set when the image is claimed, before its VLM request goes out: kill only once
    # the 6th request has arrived, so the count below does not depend on the machine's speed
    deadline = time.monotonic() + 30
    while len(vlm.chat_requests) < FIRST_DONE + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(vlm.chat_requests) == FIRST_DONE + 1
    first.kill()

    left = stored(serve.database, job_id)
    assert (left.count("done"), left.count("running"), left.count("pending")) == (FIRST_DONE, 1, N - 6)
    interrupted = next(item.index for item in left.items if item.status == "running")

    second = serve(workers=4).start()  # more workers than before: the resume does not care
    lines = assert_complete(second, job_id)
    # Each image went to the VLM once, the interrupted one twice (its first answer never came).
    assert len(vlm.chat_requests) == N + 1
    assert [line["index"] for line in lines][:FIRST_DONE] == list(range(FIRST_DONE))
    assert interrupted == FIRST_DONE
    second.terminate()


def test_sigterm_lets_the_images_in_flight_finish_and_claims_no_more(serve: Any, vlm: FakeOpenAIServer):
    slow = Reply.guess(PARIS, delay_s=1.5)
    vlm.script(*[Reply.guess(PARIS)] * FIRST_DONE, slow, slow)  # the 6th job image, then a locate
    first = serve(workers=1).start()
    job_id = submit(first)
    wait_for(first, job_id, done=FIRST_DONE, running=1)
    photo = photos()[0][1]
    with ThreadPoolExecutor(1) as pool:
        single = pool.submit(
            httpx.post, first.url + "/v1/locate", files={"image": ("single.jpg", photo)}, timeout=30
        )
        deadline = time.monotonic() + 10
        while vlm.pending:  # until the locate request's VLM call has come in (and is held)
            assert time.monotonic() < deadline, "the locate request did not reach the VLM"
            time.sleep(0.01)
        # A client follows the results: graceful shutdown must not wait for the whole job because of it.
        with httpx.stream("GET", f"{first.url}/v1/jobs/{job_id}/results", timeout=60) as follower:
            t0 = time.monotonic()
            assert first.terminate(timeout_s=20) == 0, first.output()
            stopped_s = time.monotonic() - t0
            streamed = [json.loads(line) for line in follower.iter_lines() if line]
        located = single.result()
    assert "Traceback" not in first.output()
    assert located.status_code == 200 and located.json()["source"] == "single.jpg"  # answered, not cut

    left = stored(serve.database, job_id)
    # The image in flight finished and was recorded; no other was started; nothing is left running.
    assert (left.count("done"), left.count("running"), left.count("pending")) == (FIRST_DONE + 1, 0, N - 6)
    assert stopped_s < 10, f"SIGTERM took {stopped_s:.1f} s"
    assert sorted(line["index"] for line in streamed) == list(range(FIRST_DONE + 1))

    second = serve(workers=4).start()
    assert_complete(second, job_id)
    assert len(vlm.chat_requests) == N + 1  # the 50 images and the locate: nothing was done twice
    again = httpx.get(f"{second.url}/v1/predictions/{located.json()['id']}", timeout=5)
    assert again.status_code == 200 and again.json()["source"] == "single.jpg"
    assert second.terminate() == 0
