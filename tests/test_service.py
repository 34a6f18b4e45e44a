"""The HTTP API (geosleuth.service.app) through FastAPI's TestClient: fields and statuses asserted."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'geosleuth[serve]')")

from fastapi.testclient import TestClient

from conftest import fixture
from geosleuth.agents.pipeline import Locator
from geosleuth.service.app import create_app
from geosleuth.service.fetch import URLFetcher
from geosleuth.service.storage import Storage, open_storage
from geosleuth.testing.http import LocalServer, QuietHandler

EIFFEL = (48.8583, 2.2945)


# --- helpers ---------------------------------------------------------------------------------------


def make_client(
    locator: Locator, storage: Storage, fetcher: URLFetcher | None = None, **serve: Any
) -> TestClient:
    settings = locator.settings.with_overrides(serve=serve) if serve else locator.settings
    return TestClient(create_app(locator, storage, settings=settings, fetcher=fetcher, job_poll_s=0.05))


def upload(name: str, data: bytes | None = None, ctype: str = "image/jpeg") -> dict[str, Any]:
    return {"image": (name, fixture(name).read_bytes() if data is None else data, ctype)}


def error_of(response: Any) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}
    assert body["error"]["message"]
    return response.status_code, body["error"]["type"]


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    st = open_storage(str(tmp_path / "service.sqlite3"), tmp_path)
    yield st
    st.close()


@pytest.fixture
def client(exif_locator: Locator, storage: Storage) -> Iterator[TestClient]:
    exif_locator.deps.gazetteer.ensure_built()  # as `geosleuth serve` does before it listens
    with make_client(exif_locator, storage) as c:
        yield c


class PhotoHandler(QuietHandler):
    """/photo/NAME: a fixture; /hop/N/NAME: N redirects, then the fixture; /to?url=U: a redirect to U;
    /big: a body of 3 MB."""

    def do_GET(self) -> None:
        path, params, _ = self.request_parts()
        parts = path.strip("/").split("/")
        if parts[0] == "photo":
            self._send(fixture(parts[1]).read_bytes())
        elif parts[0] == "hop":
            left = int(parts[1])
            target = f"/hop/{left - 1}/{parts[2]}" if left > 1 else f"/photo/{parts[2]}"
            self._redirect(target)
        elif parts[0] == "to":
            self._redirect(params["url"])
        elif parts[0] == "big":
            self._send(b"\xff\xd8" + b"\0" * 3_000_000)
        else:
            self.send_payload(404, {"error": "not found"})

    def _send(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")  # not trusted anyway
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


class PhotoServer(LocalServer):
    handler = PhotoHandler


@pytest.fixture
def photos() -> Iterator[PhotoServer]:
    with PhotoServer() as srv:
        yield srv


# --- health, schema, metrics -----------------------------------------------------------------------


def test_health_ready_and_generated_docs(client: TestClient):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "gazetteer": "ok"}}
    schema = client.get("/openapi.json").json()
    for path in (
        "/v1/locate",
        "/v1/predictions/{pid}",
        "/v1/predictions/{pid}/report",
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/results",
        "/v1/chat",
        "/v1/chat/{session}/messages",
    ):
        assert path in schema["paths"], path
    body = schema["paths"]["/v1/locate"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_metrics_count_requests_and_photos(client: TestClient):
    assert client.post("/v1/locate", files=upload("exif_gps.jpg")).status_code == 200
    assert client.post("/v1/locate", files=upload("not_an_image.jpg")).status_code == 415
    text = client.get("/metrics").text
    assert 'geosleuth_http_requests_total{method="POST",route="/v1/locate",status="200"} 1' in text
    assert 'geosleuth_http_requests_total{method="POST",route="/v1/locate",status="415"} 1' in text
    assert 'geosleuth_http_request_seconds_count{route="/v1/locate"} 2' in text
    assert 'geosleuth_photos_total{outcome="located"} 1' in text
    assert "geosleuth_queue_depth 0" in text


# --- locate, predictions, reports ------------------------------------------------------------------


def test_locate_an_upload_store_it_fetch_report_delete(client: TestClient, storage: Storage):
    r = client.post("/v1/locate?report=1", files=upload("exif_gps.jpg"))
    assert r.status_code == 200
    body = r.json()
    assert body["id"].startswith("pred_")
    assert body["source"] == "exif_gps.jpg" and body["status"] == "located" and body["basis"] == "exif-gps"
    assert body["best"]["point"]["lat"] == pytest.approx(EIFFEL[0], abs=1e-3)
    assert body["best"]["point"]["lon"] == pytest.approx(EIFFEL[1], abs=1e-3)
    assert body["report_url"] == f"/v1/predictions/{body['id']}/report"
    assert "trace" not in body
    assert r.headers["x-content-type-options"] == "nosniff"

    stored = client.get(f"/v1/predictions/{body['id']}").json()
    assert stored["best"] == body["best"] and stored["source"] == "exif_gps.jpg"

    report = client.get(body["report_url"])
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    policy = report.headers["content-security-policy"]
    assert policy.startswith("default-src 'none'") and "script-src 'none'" in policy
    assert "Paris" in report.text

    assert client.delete(f"/v1/predictions/{body['id']}").status_code == 204
    assert error_of(client.get(f"/v1/predictions/{body['id']}")) == (404, "UnknownIdError")
    assert error_of(client.get(body["report_url"])) == (404, "UnknownIdError")
    assert error_of(client.delete(f"/v1/predictions/{body['id']}")) == (404, "UnknownIdError")
    assert storage.count_predictions() == 0


def test_a_path_in_the_upload_name_is_dropped(client: TestClient):
    r = client.post(
        "/v1/locate",
        files=upload("exif_gps.jpg")
        | {"image": ("../../etc/passwd/x.jpg", fixture("exif_gps.jpg").read_bytes(), "image/jpeg")},
    )
    assert r.status_code == 200 and r.json()["source"] == "x.jpg"


@pytest.mark.parametrize(
    ("name", "ctype", "status", "kind"),
    [
        ("not_an_image.jpg", "image/jpeg", 415, "NotAnImageError"),
        ("document.pdf", "image/jpeg", 415, "UnsupportedFormatError"),  # the declared type is not trusted
        ("bomb.png", "image/png", 413, "ImageTooLargeError"),
        ("empty.jpg", "image/jpeg", 422, "EmptyImageError"),
    ],
)
def test_refused_uploads_get_the_error_shape_and_store_nothing(
    client: TestClient, storage: Storage, name: str, ctype: str, status: int, kind: str
):
    assert error_of(client.post("/v1/locate", files=upload(name, ctype=ctype))) == (status, kind)
    assert storage.count_predictions() == 0


def test_uploads_above_max_upload_mb_are_refused(exif_locator: Locator, storage: Storage):
    with make_client(exif_locator, storage, max_upload_mb=0.01) as c:
        big = fixture("exif_gps.jpg").read_bytes() + b"\0" * 20_000
        assert error_of(c.post("/v1/locate", files=upload("x.jpg", big))) == (413, "UploadTooLargeError")
        # chunked, with no Content-Length: refused as the bytes pass the limit
        r = c.post(
            "/v1/locate", content=iter([b"x" * 8192] * 20), headers={"content-type": "application/json"}
        )
        assert error_of(r) == (413, "UploadTooLargeError")
    assert storage.count_predictions() == 0


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"data": {"image": "/etc/passwd"}, "files": {"other": ("a", b"a")}},  # a text field, not a file
        {"json": {"path": "/etc/passwd"}},
        {"json": {"url": "https://example.org/a.jpg", "path": "/etc/passwd"}},
        {"content": b"/etc/passwd", "headers": {"content-type": "text/plain"}},
        {"files": {"photo": ("a.jpg", b"a", "image/jpeg")}},
    ],
    ids=["form-text", "json-path", "json-extra", "text-body", "wrong-field"],
)
def test_file_paths_and_odd_bodies_are_refused(
    client: TestClient, storage: Storage, request_kwargs: dict[str, Any]
):
    assert error_of(client.post("/v1/locate", **request_kwargs)) == (400, "RequestError")
    assert storage.count_predictions() == 0


def test_a_full_queue_answers_503_with_retry_after(exif_locator: Locator, storage: Storage):
    with make_client(exif_locator, storage, workers=1, queue_size=1) as c:
        service = c.app.state.service  # type: ignore[attr-defined]
        gate = threading.Event()
        busy = service.pool.submit(gate.wait)  # the one slot is taken
        try:
            r = c.post("/v1/locate", files=upload("exif_gps.jpg"))
            assert error_of(r) == (503, "ServiceBusyError")
            assert r.headers["retry-after"] == "1"
            assert "geosleuth_queue_depth 1" in c.get("/metrics").text
        finally:
            gate.set()
            busy.result(timeout=5)
        assert c.post("/v1/locate", files=upload("exif_gps.jpg")).status_code == 200
    assert storage.count_predictions() == 1


def test_unknown_routes_keep_the_error_shape(client: TestClient):
    assert error_of(client.get("/v1/nothing")) == (404, "HTTPError")
    assert error_of(client.put("/v1/locate")) == (405, "HTTPError")


# --- photo URLs: the SSRF rules --------------------------------------------------------------------


def test_locate_a_url_on_a_private_address_when_allowed(
    exif_locator: Locator, storage: Storage, photos: PhotoServer
):
    with make_client(exif_locator, storage, allow_private_urls=True, max_upload_mb=1) as c:
        r = c.post("/v1/locate", json={"url": f"{photos.url}/hop/2/exif_gps.jpg"})
        assert r.status_code == 200, r.text
        assert r.json()["source"] == f"{photos.url}/photo/exif_gps.jpg" and r.json()["basis"] == "exif-gps"
        four = c.post("/v1/locate", json={"url": f"{photos.url}/hop/4/exif_gps.jpg"})
        assert (
            error_of(four) == (400, "URLRefusedError")
            and "more than 3 redirects" in four.json()["error"]["message"]
        )
        assert error_of(c.post("/v1/locate", json={"url": f"{photos.url}/missing"})) == (502, "URLFetchError")
        assert error_of(c.post("/v1/locate", json={"url": f"{photos.url}/big"})) == (
            413,
            "UploadTooLargeError",
        )
    assert storage.count_predictions() == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/photo/exif_gps.jpg",
        "http://localhost:{port}/photo/exif_gps.jpg",
        "http://10.1.2.3/a.jpg",
        "http://192.168.0.1/a.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/photo/exif_gps.jpg",
        "http://[::ffff:127.0.0.1]:{port}/a.jpg",
        "http://0.0.0.0:{port}/a.jpg",
        "http://224.0.0.1/a.jpg",
        "file:///etc/passwd",
        "ftp://example.org/a.jpg",
        "http://user:pw@example.org/a.jpg",
    ],
)
def test_urls_that_reach_inside_are_refused(
    client: TestClient, storage: Storage, photos: PhotoServer, url: str
):
    r = client.post("/v1/locate", json={"url": url.format(port=photos.url.rsplit(":", 1)[1])})
    assert error_of(r) == (400, "URLRefusedError")
    assert storage.count_predictions() == 0


def test_a_redirect_to_a_private_address_is_refused():
    import httpx

    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.host} {request.headers['host']}")
        return httpx.Response(302, headers={"location": "http://10.0.0.7/secret.jpg"})

    fetcher = URLFetcher(
        max_bytes=1000, resolver=lambda host, port: ["93.184.215.14"], transport=httpx.MockTransport(answer)
    )
    from geosleuth.errors import URLRefusedError

    with pytest.raises(URLRefusedError, match=r"10\.0\.0\.7 is a private address"):
        fetcher.fetch("http://photos.example/a.jpg")
    # the checked address was the one connected to, with the name kept in Host; the redirect was not followed
    assert seen == ["93.184.215.14 photos.example"]


def test_a_name_that_resolves_to_a_private_address_is_refused():
    from geosleuth.errors import URLRefusedError

    fetcher = URLFetcher(max_bytes=1000, resolver=lambda host, port: ["93.184.215.14", "10.0.0.1"])
    with pytest.raises(URLRefusedError, match="private"):  # every address must be public
        fetcher.fetch("https://rebind.example/a.jpg")


# --- API keys, rate limits, CORS -------------------------------------------------------------------


def test_api_keys_are_required_when_configured(exif_locator: Locator, storage: Storage, tmp_path: Path):
    keys = tmp_path / "keys"
    keys.write_text("# team keys\nplain-key-1\nsha256:" + hashlib.sha256(b"hashed-key-2").hexdigest() + "\n")
    with make_client(exif_locator, storage, api_key_file=keys) as c:
        assert c.get("/healthz").status_code == 200  # health stays open
        assert error_of(c.post("/v1/locate", files=upload("exif_gps.jpg"))) == (401, "AuthenticationError")
        wrong = {"Authorization": "Bearer nope"}
        assert error_of(c.post("/v1/locate", files=upload("exif_gps.jpg"), headers=wrong)) == (
            401,
            "AuthenticationError",
        )
        assert storage.count_predictions() == 0
        for key in ("plain-key-1", "hashed-key-2"):
            r = c.post("/v1/locate", files=upload("exif_gps.jpg"), headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200
    assert storage.count_predictions() == 2


def test_rate_limit_per_key_answers_429_with_retry_after(
    exif_locator: Locator, storage: Storage, tmp_path: Path
):
    keys = tmp_path / "keys"
    keys.write_text("key-a\nkey-b\n")
    with make_client(exif_locator, storage, api_key_file=keys, rate_limit_per_minute=2) as c:
        a, b = ({"Authorization": f"Bearer {k}"} for k in ("key-a", "key-b"))
        assert [c.get("/v1/predictions/x", headers=a).status_code for _ in range(2)] == [404, 404]
        limited = c.get("/v1/predictions/x", headers=a)
        assert error_of(limited) == (429, "RateLimitedError")
        assert 1 <= int(limited.headers["retry-after"]) <= 30
        assert c.get("/v1/predictions/x", headers=b).status_code == 404  # another key has its own budget


def test_cors_is_off_unless_configured(exif_locator: Locator, storage: Storage):
    origin = {"Origin": "https://app.example"}
    with make_client(exif_locator, storage) as c:
        assert "access-control-allow-origin" not in c.get("/healthz", headers=origin).headers
    with make_client(exif_locator, storage, cors_origins=["https://app.example"]) as c:
        assert (
            c.get("/healthz", headers=origin).headers["access-control-allow-origin"] == "https://app.example"
        )
        assert (
            "access-control-allow-origin"
            not in c.get("/healthz", headers={"Origin": "https://evil.example"}).headers
        )


# --- jobs ------------------------------------------------------------------------------------------


def _results(c: TestClient, job_id: str) -> list[dict[str, Any]]:
    with c.stream("GET", f"/v1/jobs/{job_id}/results") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in r.iter_lines() if line]


def test_a_job_of_uploads_streams_one_result_per_image(client: TestClient, storage: Storage):
    names = ["exif_gps.jpg", "not_an_image.jpg", "exif_gps_south_west.jpg"]
    files = [("image", (n, fixture(n).read_bytes(), "image/jpeg")) for n in names]
    r = client.post("/v1/jobs", files=files)
    assert r.status_code == 202
    job = r.json()
    assert job["total"] == 3 and job["id"].startswith("job_")
    lines = _results(client, job["id"])
    assert sorted(line["index"] for line in lines) == [0, 1, 2]
    by_index = {line["index"]: line for line in lines}
    assert by_index[1]["status"] == "failed" and by_index[1]["error"]["error_type"] == "NotAnImageError"
    for i in (0, 2):
        assert by_index[i]["status"] == "done" and by_index[i]["prediction"]["basis"] == "exif-gps"
        stored = client.get(f"/v1/predictions/{by_index[i]['id']}").json()
        assert stored["source"] == names[i]
    status = client.get(f"/v1/jobs/{job['id']}").json()
    assert (status["status"], status["total"], status["done"], status["failed"], status["pending"]) == (
        "done",
        3,
        2,
        1,
        0,
    )
    assert [i["status"] for i in status["items"]] == ["done", "failed", "done"]
    assert status["items"][1]["error"]
    assert storage.count_predictions() == 2
    assert error_of(client.get("/v1/jobs/job_nope")) == (404, "UnknownIdError")
    assert error_of(client.get("/v1/jobs/job_nope/results")) == (404, "UnknownIdError")


def test_a_job_with_too_many_images_is_refused_whole(exif_locator: Locator, storage: Storage):
    with make_client(exif_locator, storage, max_job_images=2) as c:
        files = [
            ("image", (f"{i}.jpg", fixture("exif_gps.jpg").read_bytes(), "image/jpeg")) for i in range(3)
        ]
        assert error_of(c.post("/v1/jobs", files=files))[0] == 400
        refused = c.post("/v1/jobs", json={"urls": ["http://10.0.0.1/a.jpg"]})
        assert error_of(refused) == (400, "URLRefusedError")
    assert storage.pending_items(10) == []


class GatedLocator(Locator):
    """The real locator, but the photos named in ``hold`` wait for ``gate`` (a process stopped
    while they were in flight)."""

    def __init__(self, base: Locator, hold: set[str]) -> None:
        super().__init__(deps=base.deps)
        self.hold = hold
        self.gate = threading.Event()
        self.started = threading.Event()

    def locate(self, source: Any, *, name: str | None = None) -> Any:
        if name in self.hold:
            self.started.set()
            self.gate.wait(30)
        return super().locate(source, name=name)


def test_a_job_survives_a_restart_with_one_result_per_image(
    exif_locator: Locator, database: str, tmp_path: Path
):
    names = ["exif_gps.jpg", "exif_gps_south_west.jpg", "exif_gps.png"]
    files = [("image", (n, fixture(n).read_bytes(), "image/jpeg")) for n in names]
    gated = GatedLocator(exif_locator, hold={"exif_gps_south_west.jpg"})
    first_db = open_storage(database, tmp_path)
    first = make_client(gated, first_db, workers=1)
    with first:
        job_id = first.post("/v1/jobs", files=files).json()["id"]
        assert gated.started.wait(20)
        deadline = time.monotonic() + 10
        while first.get(f"/v1/jobs/{job_id}").json()["done"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        mid = first.get(f"/v1/jobs/{job_id}").json()
        assert (mid["done"], mid["running"], mid["pending"]) == (1, 1, 1)
        first.app.state.service.runner.abandon()  # type: ignore[attr-defined]  # as a killed process

    second_db = open_storage(database, tmp_path)
    try:
        with make_client(exif_locator, second_db, workers=1) as second:
            lines = _results(second, job_id)
            gated.gate.set()  # the old worker finishes late: its result must not count
            time.sleep(0.3)
            status = second.get(f"/v1/jobs/{job_id}").json()
        assert sorted(line["index"] for line in lines) == [0, 1, 2]
        assert (status["status"], status["done"], status["failed"]) == ("done", 3, 0)
        assert len({item["prediction_id"] for item in status["items"]}) == 3
        assert second_db.count_predictions() == 3
    finally:
        gated.gate.set()
        second_db.close()
        first_db.close()


# --- chat ------------------------------------------------------------------------------------------


def sse_events(response: Any) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_chat_about_an_upload_streams_the_answer_and_survives_a_restart(
    exif_locator: Locator, storage: Storage, tmp_path: Path
):
    with make_client(exif_locator, storage) as c:
        made = c.post("/v1/chat", files=upload("exif_gps.jpg"))
        assert made.status_code == 201
        session = made.json()["session"]
        assert session.startswith("chat_") and made.json()["prediction"]["basis"] == "exif-gps"
        r = c.post(f"/v1/chat/{session}/messages", json={"question": "Why Paris?"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
        kinds = [k for k, _ in events]
        assert kinds[-1] == "turn" and set(kinds[:-1]) <= {"delta"}
        turn = events[-1][1]
        assert turn["index"] == 1 and turn["question"] == "Why Paris?" and turn["answer"]
        streamed = "".join(d["text"] for k, d in events if k == "delta")
        assert streamed == turn["answer"] or not streamed
    # a new app on the same database picks the session up where it was
    reopened = open_storage(str(tmp_path / "service.sqlite3"), tmp_path)
    try:
        with make_client(exif_locator, reopened) as again:
            events = sse_events(
                again.post(f"/v1/chat/{session}/messages", json={"question": "How sure are you?"})
            )
        assert events[-1][0] == "turn" and events[-1][1]["index"] == 2
    finally:
        reopened.close()


def test_chat_about_a_stored_prediction(client: TestClient):
    pid = client.post("/v1/locate", files=upload("exif_gps.jpg")).json()["id"]
    made = client.post("/v1/chat", json={"prediction_id": pid})
    assert made.status_code == 201 and made.json()["prediction"]["source"] == "exif_gps.jpg"
    events = sse_events(
        client.post(f"/v1/chat/{made.json()['session']}/messages", json={"question": "Where?"})
    )
    assert events[-1][0] == "turn" and events[-1][1]["answer"]
    assert error_of(client.post("/v1/chat", json={"prediction_id": "pred_nope"})) == (404, "UnknownIdError")
    assert error_of(client.post("/v1/chat", json={})) == (400, "RequestError")
    assert error_of(client.post("/v1/chat/chat_nope/messages", json={"question": "Where?"})) == (
        404,
        "UnknownIdError",
    )
    assert error_of(client.post(f"/v1/chat/{made.json()['session']}/messages", json={"question": ""})) == (
        400,
        "RequestError",
    )
