"""The HTTP API against its own OpenAPI schema, property-based with Schemathesis (issue 15).

Every operation of ``/openapi.json`` is called in-process (ASGI) with generated requests, valid and
invalid, and each response is checked: no 5xx, a declared status, a declared content type, a body
that matches the declared schema, declared headers, and invalid requests refused with a 4xx. The
locator is the offline evidence-only one of ``tests/test_service.py``; photo URLs are "fetched" by
a transport that serves a fixture photo, so the fetch rules run and nothing leaves the process.

Generated ids rarely name anything stored, so a second test draws requests with the ids of a
stored prediction, job and chat session, to check the 200 bodies too. The defects these found are
pinned by the focused tests at the end of the file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'geosleuth[serve]')")
pytest.importorskip("schemathesis", reason="the dev extra is not installed (pip install 'geosleuth[dev]')")

import httpx
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import fixture
from geosleuth.agents.pipeline import Locator
from geosleuth.service.app import create_app
from geosleuth.service.fetch import URLFetcher
from geosleuth.service.storage import open_storage

log = logging.getLogger(__name__)
# Schemathesis draws with `random` inside a strategy; Hypothesis warns, harmlessly.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")

PUBLIC_ADDRESS = "93.184.215.14"  # what every name "resolves" to: public, so the fetch goes on
EXAMPLES = 20  # per operation and mode (valid, invalid): about 300 calls, 10 s
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    positive_data_acceptance,
]
# A schema-valid request may still be refused for what a schema cannot say: bytes that are not a
# photo (413/415/422). 400 is left out on purpose: each such refusal so far was a schema that said
# too little (an empty image list, other form fields, a chat body with neither field).
CONFIG = {
    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", 401, 404, 413, 415, 422, 429]}}
}


def photo_fetcher(max_bytes: int = 20 * 1024 * 1024) -> URLFetcher:
    """The real fetcher (scheme, host, address and size rules), its network replaced: every name
    resolves to a public address and every GET answers a fixture photo."""
    photo = fixture("exif_gps.jpg").read_bytes()

    def answer(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=photo, headers={"content-type": "image/jpeg"})

    return URLFetcher(
        max_bytes=max_bytes,
        timeout_s=5.0,
        resolver=lambda _host, _port: [PUBLIC_ADDRESS],
        transport=httpx.MockTransport(answer),
    )


@pytest.fixture
def served(exif_locator: Locator, tmp_path: Path) -> Iterator[TestClient]:
    """The app, started (its job runner runs), with a SQLite storage in ``tmp_path``."""
    exif_locator.deps.gazetteer.ensure_built()
    storage = open_storage(str(tmp_path / "service.sqlite3"), tmp_path)
    settings_ = exif_locator.settings.with_overrides(serve={"max_job_images": 4})
    app = create_app(exif_locator, storage, settings=settings_, fetcher=photo_fetcher(), job_poll_s=0.02)
    with TestClient(app) as client:
        yield client
    storage.close()


@dataclass
class Findings:
    """Calls made and failures seen, per operation and mode; one reproduction per distinct failure."""

    calls: Counter[str] = field(default_factory=Counter)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)  # (METHOD path, status)
    failures: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def run(self, case: Any, label: str) -> None:
        self.calls[label] += 1
        response = case.call()
        self.statuses[(f"{case.operation.method.upper()} {case.operation.path}", response.status_code)] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (Failure, FailureGroup) as exc:  # a group: one failure per check that failed
            for failure in exc.exceptions if isinstance(exc, FailureGroup) else [exc]:
                title = str(failure).split("\n", 1)[0]
                self.failures.setdefault((label, title), []).append(case.as_curl_command())

    def summary(self) -> str:
        return "\n".join(
            f"{label}: {title} ({len(repros)}x), e.g. {repros[0]}"
            for (label, title), repros in sorted(self.failures.items())
        )


def explore(operation: Any, findings: Findings, examples: int, **fixed: Any) -> None:
    """``examples`` valid and as many invalid requests to ``operation`` (``fixed`` parts kept)."""
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        label = f"{operation.method.upper()} {operation.path} ({mode.value})"
        with contextlib.suppress(Unsatisfiable):  # no invalid request can be made (nothing to spoil)
            _calls(findings, label, examples)(operation.as_strategy(generation_mode=mode, **fixed))


def _calls(findings: Findings, label: str, examples: int) -> Callable[[Any], None]:
    """A bounded, seeded Hypothesis run of ``findings.run`` over the cases of a strategy."""

    def run(strategy: Any) -> None:
        random.seed(label)  # Schemathesis draws some choices from `random`: the same ones every run

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def call(case: Any) -> None:
            findings.run(case, label)

        call()

    return run


def load_schema(client: TestClient) -> Any:
    return schemathesis.openapi.from_asgi(
        "/openapi.json", client.app, config=schemathesis.Config.from_dict(CONFIG)
    )


@pytest.mark.slow
def test_every_operation_keeps_to_its_schema(served: TestClient) -> None:
    schema = load_schema(served)
    operations = [result.ok() for result in schema.get_all_operations()]
    findings = Findings()
    for operation in operations:
        explore(operation, findings, EXAMPLES)
    paths = {op.path for op in operations}
    assert {"/v1/locate", "/v1/jobs", "/v1/chat", "/v1/predictions/{pid}", "/v1/jobs/{job_id}"} <= paths
    assert len(operations) >= 13 and sum(findings.calls.values()) >= 13 * EXAMPLES
    log.info(
        "%d operations, %d calls, %d failures; statuses %s",
        len(operations),
        sum(findings.calls.values()),
        len(findings.failures),
        dict(Counter(code for (_op, code) in findings.statuses.elements())),
    )
    answered = {op for (op, code), _n in findings.statuses.items() if code < 300}
    assert {"POST /v1/locate", "POST /v1/jobs", "POST /v1/chat"} <= answered  # not only refusals
    assert not findings.failures, findings.summary()


def stored_ids(client: TestClient) -> dict[str, str]:
    """A prediction, a finished job of two images and a chat session, made through the API."""
    photo = fixture("exif_gps.jpg").read_bytes()
    pid = client.post("/v1/locate", files={"image": ("a.jpg", photo, "image/jpeg")}).json()["id"]
    job = client.post("/v1/jobs", files=[("image", ("b.jpg", photo)), ("image", ("c.jpg", photo))]).json()
    deadline = time.monotonic() + 20
    while client.get(f"/v1/jobs/{job['id']}").json()["status"] != "done":
        assert time.monotonic() < deadline, "the job did not finish within 20 s"
        time.sleep(0.05)
    session = client.post("/v1/chat", json={"prediction_id": pid}).json()["session"]
    return {"pid": pid, "job_id": job["id"], "session": session}


@pytest.mark.slow
def test_operations_on_stored_ids_keep_to_their_schema(served: TestClient) -> None:
    ids = stored_ids(served)
    schema = load_schema(served)
    findings = Findings()
    operations = [result.ok() for result in schema.get_all_operations()]
    with_ids = [op for op in operations if "{" in op.path and op.method != "delete"]
    for operation in with_ids:
        names = {p.name for p in operation.path_parameters}
        explore(operation, findings, EXAMPLES // 2, path_parameters={k: ids[k] for k in names})
    assert {op.path for op in with_ids} >= {
        "/v1/predictions/{pid}",
        "/v1/predictions/{pid}/report",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/results",
        "/v1/chat/{session}/messages",
    }
    log.info("%d operations on stored ids, %d calls", len(with_ids), sum(findings.calls.values()))
    answered = {op for (op, code), _n in findings.statuses.items() if code == 200}
    assert answered == {f"{op.method.upper()} {op.path}" for op in with_ids}  # the ids were found
    assert not findings.failures, findings.summary()


# --- the defects the exploration found, one focused test each ---------------------------------------


def test_errors_of_the_html_report_are_documented_as_json(served: TestClient) -> None:
    """FastAPI filed the report's error models under text/html, the page's own type."""
    doc = served.get("/openapi.json").json()
    responses = doc["paths"]["/v1/predictions/{pid}/report"]["get"]["responses"]
    assert set(responses["200"]["content"]) == {"text/html"}
    for code in ("400", "401", "404", "429"):
        assert responses[code]["content"] == {
            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
        }
    missing = served.get("/v1/predictions/pred_nope/report")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"
    assert missing.json()["error"]["type"] == "UnknownIdError"


def test_health_responses_are_declared(served: TestClient) -> None:
    doc = served.get("/openapi.json").json()
    ready = doc["paths"]["/readyz"]["get"]["responses"]
    for code in ("200", "503"):
        assert ready[code]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Readiness"
        }
    assert set(doc["components"]["schemas"]["Readiness"]["required"]) == {"status", "checks"}
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert metrics == {"text/plain": {"schema": {"type": "string"}}}
    assert served.get("/metrics").headers["content-type"].startswith("text/plain")


def test_upload_bodies_say_how_many_images_and_no_other_fields(served: TestClient) -> None:
    """The schema allowed an empty ``image`` list, any number of URLs and other form fields; the
    service refuses all three (400)."""
    paths = served.get("/openapi.json").json()["paths"]
    jobs = paths["/v1/jobs"]["post"]["requestBody"]["content"]
    form = jobs["multipart/form-data"]["schema"]
    assert form["additionalProperties"] is False and form["required"] == ["image"]
    assert (form["properties"]["image"]["minItems"], form["properties"]["image"]["maxItems"]) == (1, 4)
    urls = jobs["application/json"]["schema"]["properties"]["urls"]
    assert (urls["minItems"], urls["maxItems"]) == (1, 4)
    for path in ("/v1/locate", "/v1/chat"):
        one = paths[path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert one["additionalProperties"] is False and one["properties"]["image"]["format"] == "binary"
    photo = fixture("exif_gps.jpg").read_bytes()
    assert served.post("/v1/jobs", json={"urls": []}).status_code == 400
    five = [("image", (f"{i}.jpg", photo)) for i in range(5)]
    assert served.post("/v1/jobs", files=five).status_code == 400
    extra = served.post("/v1/locate", files={"image": ("a.jpg", photo)}, data={"note": "x"})
    assert (extra.status_code, extra.json()["error"]["type"]) == (400, "RequestError")


def test_a_chat_body_is_exactly_one_of_two_closed_objects(served: TestClient) -> None:
    """The schema had two optional fields, so ``{}`` and both at once were valid by it (and refused)."""
    paths = served.get("/openapi.json").json()["paths"]
    schema = paths["/v1/chat"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    variants = schema["anyOf"]
    assert [v["required"] for v in variants] == [["prediction_id"], ["url"]]
    assert all(v["additionalProperties"] is False for v in variants)
    assert "$defs" not in schema and "$ref" not in json.dumps(schema)  # inlined: no dangling refs
    for body in ({}, {"prediction_id": "pred_x", "url": "https://example.org/a.jpg"}):
        r = served.post("/v1/chat", json=body)
        assert (r.status_code, r.json()["error"]["type"]) == (400, "RequestError")
    made = served.post("/v1/chat", json={"url": "https://photos.example/a.jpg"})
    assert made.status_code == 201 and made.json()["prediction"]["basis"] == "exif-gps"


def test_a_405_names_every_method_of_the_path(served: TestClient) -> None:
    """Two routes share /v1/jobs/{job_id} (GET, DELETE); Starlette's 405 said ``Allow: GET``."""
    for method in ("OPTIONS", "PUT", "POST"):
        r = served.request(method, "/v1/jobs/job_x")
        assert (r.status_code, r.headers["allow"]) == (405, "DELETE, GET")
        assert r.json()["error"]["type"] == "HTTPError"
    assert served.put("/v1/predictions/pred_x/report").headers["allow"] == "GET"
    assert served.get("/v1/locate").headers["allow"] == "POST"


@pytest.mark.parametrize(
    "url",
    [
        "http://[",  # urlsplit: ValueError (Invalid IPv6 URL)
        "http://[::1",
        "http://photos.example:99999/a.jpg",  # .port: ValueError (out of range)
        "http://photos.example:xx/a.jpg",  # .port: ValueError (not a number)
        "htTp://\u00afP",  # a non-ASCII host that is no IDNA name: UnicodeEncodeError in the Host header
        "http://a b/a.jpg",  # a space in the host: went out to the network as it was
        "http://\x00a/",
        "http://photos.example/a\x00b.jpg",  # httpx.InvalidURL (a control character in the path)
    ],
)
def test_malformed_photo_urls_are_refused_not_500(served: TestClient, url: str) -> None:
    """Each of these raised out of the fetcher (500 InternalError, or a 502 for the caller's typo)."""
    r = served.post("/v1/locate", json={"url": url})
    assert (r.status_code, r.json()["error"]["type"]) == (400, "URLRefusedError")


def test_photo_url_hosts_go_out_as_ascii_names() -> None:
    seen: list[tuple[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers["host"]))
        return httpx.Response(200, content=b"photo")

    fetcher = URLFetcher(
        max_bytes=100, resolver=lambda _h, _p: [PUBLIC_ADDRESS], transport=httpx.MockTransport(answer)
    )
    assert fetcher.fetch("http://Bücher.example:8080/a b.jpg").data == b"photo"
    assert fetcher.fetch("http://[2606:4700::1]:81/x").data == b"photo"
    assert seen == [
        (f"http://{PUBLIC_ADDRESS}:8080/a%20b.jpg", "xn--bcher-kva.example:8080"),
        ("http://[2606:4700::1]:81/x", "[2606:4700::1]:81"),
    ]


def test_the_declared_url_pattern_matches_what_the_fetcher_takes(served: TestClient) -> None:
    paths = served.get("/openapi.json").json()["paths"]
    schema = paths["/v1/locate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    pattern = re.compile(schema["properties"]["url"]["pattern"])
    fetcher = photo_fetcher()
    for url in ("https://photos.example/a.jpg", "HTTP://a.b-c.example:8080/x?y=1#z", "http://a"):
        assert pattern.match(url), url
        assert fetcher.fetch(url).data[:2] == b"\xff\xd8"
    for url in (
        "ftp://a/x",
        "http://a..b/",
        "http://a b/",
        "http:///x",
        "http://a:99999/",
        "file:///etc/passwd",
    ):
        assert not pattern.match(url), url
