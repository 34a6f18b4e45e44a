"""The HTTP API: :func:`create_app` makes a FastAPI app around a Locator, the settings and a storage.

Nothing is built at import. Everything the routes use (locator, storage, limits, pools, the URL
fetcher, metrics, chat sessions) is one :class:`Service`, made by :func:`create_app` and reached by
the routes as a dependency, so a test or a deployment passes in its own.

Errors have one shape, ``{"error": {"type", "message"}}``: ``type`` is the class name of the
project's typed error and the status is :func:`geosleuth.errors.http_status` of it, the table the
CLI's exit codes come from too. A refused request stores nothing.
"""

from __future__ import annotations

import asyncio
import html as html_lib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import PurePath
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from geosleuth.errors import (
    GeoSleuthError,
    InternalError,
    RateLimitedError,
    RequestError,
    ServiceBusyError,
    UnknownIdError,
    UploadTooLargeError,
    http_status,
)
from geosleuth.schemas import LocateError, Prediction
from geosleuth.service import web
from geosleuth.service.chat import ChatSessions
from geosleuth.service.fetch import URLFetcher
from geosleuth.service.jobs import BoundedPool, JobRunner, locate_bytes
from geosleuth.service.limits import APIKeys, RateLimiter
from geosleuth.service.metrics import Metrics
from geosleuth.service.storage import Job, Storage, new_id

if TYPE_CHECKING:
    from geosleuth.agents.pipeline import Locator
    from geosleuth.config import Settings

log = logging.getLogger(__name__)

API = "/v1"
_MULTIPART_SLACK = 64 * 1024  # boundaries and headers around the files of a multipart body
_CSP_META = re.compile(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">')
# Every response: no sniffing of our types, no framing, no referrer leaking an id.
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


# --- what goes over the wire ---------------------------------------------------------------------


class ErrorBody(BaseModel):
    type: str = Field(description="The error's class, e.g. NotAnImageError, URLRefusedError.")
    message: str = Field(description="What was wrong and how to fix it.")


class ErrorResponse(BaseModel):
    error: ErrorBody


# The photo URLs the schema promises to take: http(s), an ASCII host name or IPv4 address, an
# optional port, printable ASCII after it. The fetcher checks them itself, with its own messages,
# and takes a little more (IDNA names, IPv6), but never a URL it would refuse for its form.
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_URL_SCHEMA: dict[str, Any] = {
    "pattern": rf"^[Hh][Tt][Tt][Pp][Ss]?://{_LABEL}(?:\.{_LABEL})*(?::[0-9]{{1,4}})?(?:[/?#][!-~]*)?$"
}


class URLRequest(BaseModel):
    """A photo to fetch. Only ``url``: file paths are never accepted over HTTP."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        description="An http(s) URL of the photo.", max_length=4096, json_schema_extra=_URL_SCHEMA
    )


class URLsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    urls: list[Annotated[str, Field(max_length=4096, json_schema_extra=_URL_SCHEMA)]] = Field(
        min_length=1, description="http(s) URLs of the photos."
    )


class LocateResponse(Prediction):
    """The Prediction, with the id it is stored under."""

    id: str = Field(description="GET /v1/predictions/{id} returns it again.")
    report_url: str | None = Field(default=None, description="The HTML report (with ?report=1).")


class JobCreated(BaseModel):
    id: str
    total: int
    status_url: str
    results_url: str


class JobItemStatus(BaseModel):
    index: int
    source: str
    status: str = Field(description="pending, running, done or failed.")
    prediction_id: str | None = None
    error: str | None = None


class JobStatus(BaseModel):
    id: str
    status: str = Field(
        description="pending (nothing finished), running, or done (every image has its result)."
    )
    total: int
    pending: int
    running: int
    done: int
    failed: int
    items: list[JobItemStatus]


class ChatAboutPrediction(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Talk about a stored prediction")
    prediction_id: str = Field(description="A stored prediction's id.")


class ChatAboutURL(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Talk about a photo, fetched and located first")
    url: str = Field(
        description="An http(s) URL of the photo.", max_length=4096, json_schema_extra=_URL_SCHEMA
    )


# Exactly one of the two: the schema says so (anyOf of two closed objects), not only the route.
ChatRequest: TypeAdapter[ChatAboutPrediction | ChatAboutURL] = TypeAdapter(ChatAboutPrediction | ChatAboutURL)


class Readiness(BaseModel):
    status: str = Field(description="ok, or unavailable (503) when a check failed.")
    checks: dict[str, str] = Field(description="Each check: ok, or why not.")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1, max_length=4000)


class ChatCreated(BaseModel):
    session: str
    prediction: Prediction


# --- the service ---------------------------------------------------------------------------------


@dataclass
class Service:
    """What the routes share; one per app."""

    locator: Locator
    settings: Settings
    storage: Storage
    keys: APIKeys
    limiter: RateLimiter
    pool: BoundedPool
    runner: JobRunner
    fetcher: URLFetcher
    metrics: Metrics
    chats: ChatSessions
    started: float = field(default_factory=time.time)

    @property
    def max_upload(self) -> int:
        return self.settings.serve.max_upload_bytes

    async def run(self, fn: Callable[[], Any]) -> Any:
        """``fn`` in the bounded worker pool (:class:`ServiceBusyError` when it is full)."""
        return await asyncio.wrap_future(self.pool.submit(fn))

    def drain(self) -> None:
        """A shutdown begins: claim no more job images, and end the result streams once those in
        flight are recorded (a follower reconnects after the restart). Non-blocking."""
        self.runner.drain()

    def counted(self, result: Prediction | LocateError) -> None:
        if isinstance(result, LocateError):
            self.metrics.photo("error", [])
        else:
            failed = [s.name for s in result.stages if s.status == "failed"]
            self.metrics.photo(result.status, failed)


def create_app(
    locator: Locator,
    storage: Storage,
    *,
    settings: Settings | None = None,
    fetcher: URLFetcher | None = None,
    job_poll_s: float = 1.0,
) -> FastAPI:
    """The app. ``settings`` default to the locator's (their ``serve`` section sets the limits);
    ``fetcher`` defaults to one made from them. Job items left by an earlier run are resumed when
    the app starts (its lifespan)."""
    settings = settings or locator.settings
    serve = settings.serve
    metrics = Metrics()
    pool = BoundedPool(serve.workers, serve.queue_size)
    runner = JobRunner(
        storage,
        lambda data, name: locate_bytes(locator, data, name),
        workers=serve.workers,
        lease_s=serve.job_lease_s,
        poll_s=job_poll_s,
    )
    service = Service(
        locator=locator,
        settings=settings,
        storage=storage,
        keys=APIKeys.load(serve.api_key_file),
        limiter=RateLimiter(serve.rate_limit_per_minute),
        pool=pool,
        runner=runner,
        fetcher=fetcher or URLFetcher.from_settings(serve),
        metrics=metrics,
        chats=ChatSessions(locator, storage),
    )
    runner.on_result = service.counted
    metrics.gauges["geosleuth_queue_depth"] = ("Locate requests waiting or running.", lambda: pool.depth)
    metrics.gauges["geosleuth_job_items_running"] = ("Job images being located.", lambda: runner.busy)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        runner.start()
        try:
            yield
        finally:
            await asyncio.to_thread(runner.stop, wait=True)
            pool.shutdown(wait=True)

    app = FastAPI(
        title="geosleuth",
        summary="Where was this photo taken? Evidence first.",
        version=_version(),
        lifespan=lifespan,
        responses={400: {"model": ErrorResponse}},
    )
    app.state.service = service
    _errors(app)
    _middleware(app, service)
    _routes(app)
    _web_routes(app)
    return app


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def caller(request: Request, service: Annotated[Service, Depends(get_service)]) -> str:
    """Checks the API key (when keys are on) and counts the request against the caller's rate."""
    identity = service.keys.check(request.headers.get("authorization"))
    who = identity or (request.client.host if request.client else "unknown")
    service.limiter.take(who)
    return who


ServiceDep = Annotated[Service, Depends(get_service)]
Caller = Annotated[str, Depends(caller)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 404, 413, 415, 422, 429, 502, 503)
}
# FastAPI documents a route's error models under the route's own media type; a route that answers
# HTML (or text) still sends its errors as JSON, so these name the content type themselves.
_ERRORS_NOT_JSON: dict[int | str, dict[str, Any]] = {
    code: {
        "description": HTTPStatus(code).phrase,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    for code in (400, *(int(c) for c in _ERRORS))
}


# --- errors and middleware -----------------------------------------------------------------------


def error_response(exc: BaseException) -> JSONResponse:
    """The one error shape, with the status from the errors table (and Retry-After when a wait
    helps)."""
    if isinstance(exc, GeoSleuthError):
        kind, message = type(exc).__name__, str(exc)
    else:
        kind, message = InternalError.__name__, f"internal error ({type(exc).__name__}); see the server log"
    headers = {}
    if isinstance(exc, RateLimitedError):
        headers["Retry-After"] = str(int(exc.retry_after))
    elif isinstance(exc, ServiceBusyError):
        headers["Retry-After"] = "1"
    body = ErrorResponse(error=ErrorBody(type=kind, message=message))
    return JSONResponse(body.model_dump(), status_code=http_status(exc), headers=headers)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(GeoSleuthError)
    async def _ours(_request: Request, exc: GeoSleuthError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return error_response(RequestError("the request is not valid: " + "; ".join(parts)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = ErrorResponse(error=ErrorBody(type="HTTPError", message=str(exc.detail)))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names only the first route's methods (GET, not DELETE)
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def _bug(_request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error", exc_info=exc)
        return error_response(exc)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of this path takes (several routes may share a path)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, BaseRoute) and route.matches(request.scope)[0] != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def _middleware(app: FastAPI, service: Service) -> None:
    origins = service.settings.serve.cors_origins
    if origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.middleware("http")
    async def _measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        t0 = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            for key, value in _SECURITY_HEADERS.items():
                response.headers.setdefault(key, value)
            return response
        finally:
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            service.metrics.request(request.method, path, status, time.perf_counter() - t0)


# --- reading requests ----------------------------------------------------------------------------


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes ``limit`` bytes, declared or not. Kept on the
    request so ``request.form()`` parses it from memory."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise UploadTooLargeError(
            "<upload>",
            f"the request has {int(declared):,} bytes, above the limit of {limit:,} (serve.max_upload_mb)",
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UploadTooLargeError(
                "<upload>", f"the request is larger than the limit of {limit:,} bytes (serve.max_upload_mb)"
            )
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # starlette reads a cached body in form() and json()
    return body


def _upload_name(upload: UploadFile, index: int) -> str:
    """The name a photo is reported by: the upload's file name without any folder (a client's
    path never reaches the locator, which is given bytes)."""
    name = PurePath((upload.filename or "").replace("\\", "/")).name
    return name or f"<upload {index + 1}>"


async def _photos(request: Request, service: Service, *, many: bool) -> list[tuple[str, bytes]]:
    """The photos of a request: multipart ``image`` fields (one, or up to ``serve.max_job_images``),
    or JSON ``{"url": ...}`` / ``{"urls": [...]}`` fetched by the SSRF-safe fetcher."""
    limit = service.settings.serve.max_job_images if many else 1
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    await _read_body(request, service.max_upload * limit + _MULTIPART_SLACK)
    if ctype == "multipart/form-data":
        form = await request.form(max_files=limit, max_fields=limit + 8)
        fields = form.getlist("image")
        others = sorted(set(form.keys()) - {"image"})
        if others:
            raise RequestError(f"unknown form fields {others}; send the photo as the file field 'image'")
        if not fields:
            raise RequestError("no 'image' field: send the photo as a multipart file field named 'image'")
        if len(fields) > limit:
            raise RequestError(f"{len(fields)} images; at most {limit} per request (serve.max_job_images)")
        photos: list[tuple[str, bytes]] = []
        for i, item in enumerate(fields):
            if not isinstance(item, UploadFile):
                raise RequestError(
                    "the 'image' field must be a file upload, not text (file paths are never accepted over HTTP)"
                )
            data = await item.read()
            name = _upload_name(item, i)
            if len(data) > service.max_upload:
                raise UploadTooLargeError(
                    name,
                    f"{len(data):,} bytes is above the limit of {service.max_upload:,} (serve.max_upload_mb)",
                )
            photos.append((name, data))
        return photos
    if ctype == "application/json":
        try:
            raw = json.loads(await request.body())
            urls = URLsRequest.model_validate(raw).urls if many else [URLRequest.model_validate(raw).url]
        except (ValueError, ValidationError) as exc:
            field_name = "urls" if many else "url"
            raise RequestError(
                f'the JSON body must be {{"{field_name}": ...}} and nothing else (file paths are never accepted '
                f"over HTTP): {exc}"
            ) from exc
        if len(urls) > limit:
            raise RequestError(f"{len(urls)} URLs; at most {limit} per request (serve.max_job_images)")
        fetched = await asyncio.gather(*(asyncio.to_thread(service.fetcher.fetch, u) for u in urls))
        return [(_url_name(f.url), f.data) for f in fetched]
    raise RequestError(
        f"content type {ctype or 'none'!r}: send multipart/form-data with a file field 'image', "
        'or application/json {"url": "https://..."}'
    )


def _url_name(url: str) -> str:
    return url.split("?", 1)[0][:300]


def _check(service: Service, name: str, data: bytes) -> None:
    """The photo's header, sniffed (the declared content type is never trusted): not an image, an
    unsupported format or too many pixels is refused before any work."""
    from geosleuth.tools.image import check_image

    s = service.settings
    check_image(
        data, name=name, max_pixels=s.max_image_pixels, max_bytes=min(s.max_file_bytes, service.max_upload)
    )


def _prediction_body(prediction: Prediction) -> str:
    return prediction.model_dump_json(exclude={"trace"})


def _upload_or_json(model: type[BaseModel] | TypeAdapter[Any], *, several: int = 0) -> dict[str, Any]:
    """The OpenAPI request body of a route that takes a multipart upload (field ``image``, one file,
    or 1 to ``several``) or a JSON ``model``: FastAPI cannot derive it, the route reads the body itself."""
    binary: dict[str, Any] = {"type": "string", "format": "binary"}
    image = {"type": "array", "items": binary, "minItems": 1, "maxItems": several} if several else binary
    schema = model.json_schema() if isinstance(model, TypeAdapter) else model.model_json_schema()
    if several and "urls" in schema.get("properties", {}):
        schema["properties"]["urls"]["maxItems"] = several
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"image": image},
                        "required": ["image"],
                        "additionalProperties": False,  # other fields are refused (400)
                    }
                },
                "application/json": {"schema": _inline_refs(schema)},
            },
        }
    }


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` written in place: inside an OpenAPI document a ``#/$defs/...``
    reference would point at the document's root, where there are none."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return dict(walk(schema))


# --- routes --------------------------------------------------------------------------------------


def _routes(app: FastAPI) -> None:
    locate_body = _upload_or_json(URLRequest)
    jobs_body = _upload_or_json(URLsRequest, several=app.state.service.settings.serve.max_job_images)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not ready."}},
    )
    async def readyz(service: ServiceDep) -> JSONResponse:
        """The database answers, the gazetteer is built, and the VLM answers when one is configured."""
        checks = await asyncio.to_thread(_readiness, service)
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
        )

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics(service: ServiceDep) -> Response:
        """Prometheus text: requests, latencies, queue depth, photos and stage failures."""
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post(
        f"{API}/locate",
        tags=["locate"],
        response_model=LocateResponse,
        response_model_exclude={"trace"},
        responses=_ERRORS,
        openapi_extra=locate_body,
    )
    async def locate(
        request: Request,
        service: ServiceDep,
        _who: Caller,
        report: Annotated[bool, Query(description="Add the report's URL.")] = False,
    ) -> LocateResponse:
        """Locate one photo: a multipart upload (field ``image``) or JSON ``{"url": ...}``."""
        [(name, data)] = await _photos(request, service, many=False)
        _check(service, name, data)
        prediction: Prediction = await service.run(lambda: service.locator.locate(data, name=name))
        service.counted(prediction)
        pid = new_id("pred")
        service.storage.put_prediction(pid, prediction.source, _prediction_body(prediction))
        url = f"{API}/predictions/{pid}/report" if report else None
        return LocateResponse(**dict(prediction), id=pid, report_url=url)

    @app.get(f"{API}/predictions/{{pid}}", tags=["predictions"], response_model=Prediction, responses=_ERRORS)
    async def get_prediction(pid: str, service: ServiceDep, _who: Caller) -> Response:
        """A stored prediction."""
        return Response(_stored(service, pid), media_type="application/json")

    @app.delete(f"{API}/predictions/{{pid}}", tags=["predictions"], status_code=204, responses=_ERRORS)
    async def delete_prediction(pid: str, service: ServiceDep, _who: Caller) -> Response:
        """Forget a prediction (its report goes with it)."""
        if not service.storage.delete_prediction(pid):
            raise UnknownIdError(f"no prediction {pid!r}")
        return Response(status_code=204)

    @app.get(
        f"{API}/predictions/{{pid}}/report",
        tags=["predictions"],
        response_class=HTMLResponse,
        responses=_ERRORS_NOT_JSON,
    )
    async def prediction_report(pid: str, service: ServiceDep, _who: Caller) -> HTMLResponse:
        """The explainable HTML report of a stored prediction (the service keeps no photos, so it has none)."""
        from geosleuth.report import render_report

        prediction = Prediction.model_validate_json(_stored(service, pid))
        html = await asyncio.to_thread(
            render_report, prediction, "html", photo_note="not kept by the service"
        )
        headers = {}
        if match := _CSP_META.search(html):
            headers["Content-Security-Policy"] = html_lib.unescape(match.group(1))
        return HTMLResponse(html, headers=headers)

    @app.post(
        f"{API}/jobs",
        tags=["jobs"],
        status_code=202,
        response_model=JobCreated,
        responses=_ERRORS,
        openapi_extra=jobs_body,
    )
    async def create_job(request: Request, service: ServiceDep, _who: Caller) -> JobCreated:
        """Many photos (multipart ``image`` fields, or JSON ``{"urls": [...]}``), located in the
        background. Stored before any work starts, so a restart of the server loses none."""
        photos = await _photos(request, service, many=True)
        job_id = new_id("job")
        service.storage.create_job(job_id, photos)
        service.runner.wake()
        return JobCreated(
            id=job_id,
            total=len(photos),
            status_url=f"{API}/jobs/{job_id}",
            results_url=f"{API}/jobs/{job_id}/results",
        )

    @app.get(f"{API}/jobs/{{job_id}}", tags=["jobs"], response_model=JobStatus, responses=_ERRORS)
    async def job_status(job_id: str, service: ServiceDep, _who: Caller) -> JobStatus:
        """Progress, and each image's status."""
        return _job_status(_job(service, job_id))

    @app.get(
        f"{API}/jobs/{{job_id}}/results",
        tags=["jobs"],
        response_class=StreamingResponse,
        responses={200: {"content": {"application/x-ndjson": {}}}, **_ERRORS},
    )
    async def job_results(
        job_id: str,
        service: ServiceDep,
        _who: Caller,
        follow: Annotated[
            bool, Query(description="Keep the stream open until every image has its result.")
        ] = True,
    ) -> StreamingResponse:
        """JSON Lines, one per image, in the order they finish: ``index``, ``source``, ``status``,
        and ``id`` + ``prediction`` or ``error``."""
        _job(service, job_id)  # 404 before the stream starts
        return StreamingResponse(_result_lines(service, job_id, follow), media_type="application/x-ndjson")

    @app.delete(f"{API}/jobs/{{job_id}}", tags=["jobs"], status_code=204, responses=_ERRORS)
    async def delete_job(job_id: str, service: ServiceDep, _who: Caller) -> Response:
        """Forget a job and its results (the predictions it stored stay until deleted)."""
        if not service.storage.delete_job(job_id):
            raise UnknownIdError(f"no job {job_id!r}")
        return Response(status_code=204)

    chat_body = _upload_or_json(ChatRequest)

    @app.post(
        f"{API}/chat",
        tags=["chat"],
        status_code=201,
        response_model=ChatCreated,
        responses=_ERRORS,
        openapi_extra=chat_body,
    )
    async def create_chat(request: Request, service: ServiceDep, _who: Caller) -> ChatCreated:
        """A conversation about a stored prediction (JSON ``{"prediction_id": ...}``), or about a
        photo (multipart ``image``, or JSON ``{"url": ...}``), located first."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            await _read_body(request, _MULTIPART_SLACK)
            try:
                ask = ChatRequest.validate_json(await request.body())
            except ValidationError as exc:
                raise RequestError(
                    f'the JSON body must be exactly one of {{"prediction_id": ...}} and {{"url": ...}}: {exc}'
                ) from exc
            if isinstance(ask, ChatAboutPrediction):
                prediction = Prediction.model_validate_json(_stored(service, ask.prediction_id))
                sid, pred = service.chats.from_prediction(prediction)
                return ChatCreated(session=sid, prediction=pred)
            fetched = await asyncio.to_thread(service.fetcher.fetch, ask.url)
            name, data = _url_name(fetched.url), fetched.data
        else:
            [(name, data)] = await _photos(request, service, many=False)
        _check(service, name, data)
        sid, pred = await service.run(lambda: service.chats.from_photo(data, name))
        return ChatCreated(session=sid, prediction=pred)

    @app.post(
        f"{API}/chat/{{session}}/messages",
        tags=["chat"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}, **_ERRORS},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ChatMessage.model_json_schema()}},
            }
        },
    )
    async def chat_message(
        session: str, request: Request, service: ServiceDep, _who: Caller
    ) -> StreamingResponse:
        """Ask a question (JSON ``{"question": ...}``). The answer comes as server-sent events:
        ``delta`` events (``{"text"}``) as it is written, then one ``turn`` event (the whole Turn:
        answer, cited evidence, tool calls, hints), or an ``error`` event (the error shape)."""
        try:  # read here, after the key check, and bounded: not by FastAPI before it
            message = ChatMessage.model_validate_json(await _read_body(request, _MULTIPART_SLACK))
        except ValidationError as exc:
            raise RequestError(
                f'the JSON body must be {{"question": "..."}} (1 to 4000 characters): {exc}'
            ) from exc
        conversation = await asyncio.to_thread(service.chats.open, session)  # 404 before the stream
        return StreamingResponse(
            service.chats.events(session, conversation, message.question),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )


def _web_routes(app: FastAPI) -> None:
    """The web page (:mod:`geosleuth.service.web`) at ``/``, its files at ``/web/{name}``, and the
    report's map of a prediction as SVG, which the page shows."""
    page_headers = {"Content-Security-Policy": web.PAGE_CSP, "Cache-Control": "no-cache"}

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return Response(
            web.asset_bytes(web.PAGE.file), media_type=web.PAGE.content_type, headers=page_headers
        )

    @app.get("/web/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        found = web.ASSETS.get(name)
        if found is None:
            raise UnknownIdError(f"no file {name!r} in the web page; it has {sorted(web.ASSETS)}")
        return Response(web.asset_bytes(found.file), media_type=found.content_type, headers=page_headers)

    @app.get(
        f"{API}/predictions/{{pid}}/map",
        tags=["predictions"],
        response_class=Response,
        responses={200: {"content": {"image/svg+xml": {}}}, **_ERRORS},
    )
    async def prediction_map(
        pid: str,
        service: ServiceDep,
        _who: Caller,
        view: Annotated[
            web.MapView, Query(description="Around the answer, its regions, or the world.")
        ] = "answer",
    ) -> Response:
        """The report's map of a stored prediction (one view of it) as a standalone SVG."""
        prediction = Prediction.model_validate_json(_stored(service, pid))
        drawn = await asyncio.to_thread(web.map_svg, prediction, view)
        return Response(drawn.svg, media_type="image/svg+xml", headers={"Content-Security-Policy": drawn.csp})


def _stored(service: Service, pid: str) -> str:
    body = service.storage.get_prediction(pid)
    if body is None:
        raise UnknownIdError(f"no prediction {pid!r} (it was never made here, or it was deleted)")
    return body


def _job(service: Service, job_id: str) -> Job:
    job = service.storage.get_job(job_id)
    if job is None:
        raise UnknownIdError(f"no job {job_id!r}")
    return job


def _job_status(job: Job) -> JobStatus:
    items = [
        JobItemStatus(
            index=i.index,
            source=i.source,
            status=i.status,
            prediction_id=i.prediction_id,
            error=LocateError.model_validate_json(i.result).error
            if i.status == "failed" and i.result
            else None,
        )
        for i in job.items
    ]
    finished = job.count("done", "failed")
    state = "done" if job.done else ("running" if finished or job.count("running") else "pending")
    return JobStatus(
        id=job.id,
        status=state,
        total=len(job.items),
        pending=job.count("pending"),
        running=job.count("running"),
        done=job.count("done"),
        failed=job.count("failed"),
        items=items,
    )


async def _result_lines(
    service: Service, job_id: str, follow: bool, poll_s: float = 0.2
) -> AsyncIterator[bytes]:
    seen = 0
    while True:
        # Read before the fetch: when draining with nothing in flight, the fetch sees every result.
        drained = service.runner.draining and service.runner.busy == 0
        fresh = await asyncio.to_thread(service.storage.finished_items, job_id, seen)
        for item in fresh:
            seen = max(seen, item.finished or 0)
            line: dict[str, Any] = {"index": item.index, "source": item.source, "status": item.status}
            result = json.loads(item.result) if item.result else None
            if item.status == "done":
                line |= {"id": item.prediction_id, "prediction": result}
            else:
                line["error"] = result
            yield (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
        job = await asyncio.to_thread(service.storage.get_job, job_id)
        if job is None or not follow or ((job.done or drained) and not fresh):
            return
        if not fresh:
            await asyncio.sleep(poll_s)


def _readiness(service: Service) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        service.storage.ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {exc}"
    deps = service.locator.deps
    checks["gazetteer"] = "ok" if deps.gazetteer.is_built else "not built"
    if deps.vlm is not None:
        list_models = getattr(deps.vlm, "list_models", None)
        try:
            if list_models is not None:
                list_models()
            checks["vlm"] = "ok"
        except GeoSleuthError as exc:
            checks["vlm"] = f"unreachable: {exc}"
    return checks


def _version() -> str:
    from geosleuth import __version__

    return __version__


__all__ = ["Service", "create_app", "error_response"]
