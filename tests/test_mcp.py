"""The MCP server (geosleuth.integrations.mcp): tools listed from the registry, locate by path and by
data URI with its map, explain and ask on the id, typed tool errors for bad images, local paths
refused in HTTP mode; all in-process through the SDK's client, and once as `geosleuth mcp` over stdio."""

from __future__ import annotations

import base64
import io
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

import anyio
from mcp import Client, StdioServerParameters
from PIL import Image

from conftest import ROOT, fixture
from geosleuth.integrations.map import MAP_WIDTH_PX
from geosleuth.integrations.mcp import create_server
from geosleuth.integrations.tools import INTEGRATION_TOOLS, IntegrationContext

PARIS = (48.85837, 2.29448)  # exif_gps.jpg's GPS position


@pytest.fixture
def ctx(settings, exif_locator, tmp_path):  # type: ignore[no-untyped-def]
    context = IntegrationContext(settings, locator=exif_locator, database=str(tmp_path / "mcp.sqlite3"))
    yield context
    context.close()


def session(context: IntegrationContext, work: Callable[[Client], Awaitable[Any]]) -> Any:
    """Run ``work`` with an in-process client connected to a server over ``context``."""

    async def main() -> Any:
        async with Client(create_server(context)) as client:
            return await work(client)

    return anyio.run(main)


def call(context: IntegrationContext, name: str, arguments: dict[str, Any]) -> Any:
    return session(context, lambda c: c.call_tool(name, arguments))


def data_uri(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def error_type(result: Any) -> str:
    assert result.is_error and result.structured_content is None
    return result.content[0].text.split(":", 1)[0]


def test_tools_are_listed_with_the_registrys_names_descriptions_and_schemas(ctx):
    listed = session(ctx, lambda c: c.list_tools()).tools
    assert [t.name for t in listed] == INTEGRATION_TOOLS.names == ["locate", "explain", "ask"]
    for spec in listed:
        tool = INTEGRATION_TOOLS[spec.name]
        assert spec.description == tool.description
        assert spec.input_schema == tool.arguments.model_json_schema()
        assert spec.output_schema == tool.result.model_json_schema(mode="serialization")
    locate = listed[0]
    assert (
        locate.input_schema["required"] == ["image"] and locate.input_schema["additionalProperties"] is False
    )
    assert "prediction" not in locate.output_schema["properties"]  # the artifact, not structured content
    assert ctx._locator is not None and ctx._storage is None  # listing built nothing


def test_locate_by_path_returns_summary_text_and_map_then_explain_and_ask_use_its_id(ctx):
    async def work(c: Client) -> tuple[Any, Any, Any, Any]:
        located = await c.call_tool("locate", {"image": str(fixture("exif_gps.jpg"))})
        pid = located.structured_content["id"]
        explained = await c.call_tool("explain", {"prediction_id": pid})
        asked = await c.call_tool("ask", {"prediction_id": pid, "question": "Could it be Lisbon?"})
        again = await c.call_tool("ask", {"prediction_id": pid, "question": "Why Paris?"})
        return located, explained, asked, again

    located, explained, asked, again = session(ctx, work)
    assert not located.is_error
    s = located.structured_content
    assert s["status"] == "located" and s["basis"] == "exif-gps" and s["country_code"] == "FR"
    assert s["point"]["lat"] == pytest.approx(PARIS[0], abs=1e-4)
    assert s["point"]["lon"] == pytest.approx(PARIS[1], abs=1e-4)
    assert s["id"].startswith("pred_") and "prediction" not in s
    assert [b.type for b in located.content] == ["text", "image"]
    assert s["id"] in located.content[0].text
    png = located.content[1]
    assert png.mime_type == "image/png"
    with Image.open(io.BytesIO(base64.b64decode(png.data))) as img:
        assert img.format == "PNG" and img.width == MAP_WIDTH_PX
        assert len(img.convert("RGB").getcolors(1 << 20) or []) > 3  # land, sea, markers: not blank
    assert ctx.storage.get_prediction(s["id"]) is not None  # stored as the HTTP service stores it

    e = explained.structured_content
    assert not explained.is_error and e["id"] == s["id"] and e["status"] == "located"
    assert {"country", "city"} <= {step["level"] for step in e["steps"]}
    assert "exif.gps" in {ev["id"] for ev in e["evidence"]}
    assert e["hypotheses"][0]["rank"] == 1

    a = asked.structured_content
    assert not asked.is_error and a["engine"] == "rules" and "exif.gps" in a["cited_evidence"]
    assert a["error"] is None  # check_place ran: the photo located here keeps its planner state
    assert a["place"].startswith("Paris") and again.structured_content["session"] == a["session"]
    assert ctx.storage.get_chat(a["session"]) is not None


def test_locate_by_data_uri(ctx):
    result = call(ctx, "locate", {"image": data_uri(fixture("exif_gps.jpg").read_bytes())})
    s = result.structured_content
    assert not result.is_error and s["source"] == "<data URI>" and s["country_code"] == "FR"


def test_http_mode_refuses_local_paths_and_stores_nothing(settings, exif_locator, tmp_path):
    remote = IntegrationContext(
        settings, locator=exif_locator, database=str(tmp_path / "db.sqlite3"), allow_local_files=False
    )
    result = call(remote, "locate", {"image": str(fixture("exif_gps.jpg"))})
    assert error_type(result) == "RequestError" and "--allow-local-files" in result.content[0].text
    assert remote.storage.count_predictions() == 0
    ok = call(remote, "locate", {"image": data_uri(fixture("exif_gps.jpg").read_bytes())})
    assert not ok.is_error  # a data URI is still fine
    remote.close()


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("data:image/png;base64,@@not-base64@@", "RequestError"),
        ("data:text/plain;base64,aGVsbG8=", "RequestError"),
        ("data:image/jpeg;base64,", "RequestError"),
        (data_uri(b"hello, not a photo"), "NotAnImageError"),
        ("/no/such/photo.jpg", "ImageNotFoundError"),
        (str(ROOT / "tests" / "fixtures"), "NotAFileError"),
        ("ftp://example.com/photo.jpg", "URLRefusedError"),
        ("http://127.0.0.1:9/photo.jpg", "URLRefusedError"),  # loopback: the SSRF-safe fetcher refuses it
    ],
)
def test_bad_images_are_tool_errors_naming_the_problem(ctx, image, expected):
    result = call(ctx, "locate", {"image": image})
    assert error_type(result) == expected
    assert ctx.storage.count_predictions() == 0


def test_an_oversized_data_uri_is_refused_before_decoding(settings, exif_locator, tmp_path):
    small = IntegrationContext(
        settings.with_overrides(serve={"max_upload_mb": 0.001}),
        locator=exif_locator,
        database=str(tmp_path / "db.sqlite3"),
    )
    result = call(small, "locate", {"image": data_uri(fixture("exif_gps.jpg").read_bytes())})
    assert error_type(result) == "UploadTooLargeError"
    small.close()


def test_unknown_and_malformed_ids_and_the_server_keeps_answering(ctx):
    async def work(c: Client) -> tuple[Any, Any, Any, Any]:
        unknown = await c.call_tool("explain", {"prediction_id": "pred_doesnotexist"})
        malformed = await c.call_tool("ask", {"prediction_id": "../etc/passwd", "question": "?"})
        extra = await c.call_tool("locate", {"image": "x.jpg", "path": "/etc/passwd"})
        return unknown, malformed, extra, await c.list_tools()

    unknown, malformed, extra, listed = session(ctx, work)
    assert error_type(unknown) == "UnknownIdError" and "call locate first" in unknown.content[0].text
    assert error_type(malformed) == "ToolQueryError" and "prediction_id" in malformed.content[0].text
    assert error_type(extra) == "ToolQueryError" and "path" in extra.content[0].text
    assert len(listed.tools) == 3


@pytest.mark.slow
def test_geosleuth_mcp_over_stdio(cache_dir, gazetteer, tmp_path):
    gazetteer.ensure_built()  # shared with the subprocess through the cache dir
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "GEOSLEUTH_CACHE_DIR": str(cache_dir),
    }
    args = [
        "-m",
        "geosleuth.cli",
        "mcp",
        "--offline",
        "--ocr",
        "none",
        "--database",
        str(tmp_path / "db.sqlite3"),
    ]
    params = StdioServerParameters(command=sys.executable, args=args, env=env, cwd=str(ROOT))

    async def main() -> tuple[Any, Any]:
        async with Client(params) as client:
            listed = await client.list_tools()
            located = await client.call_tool("locate", {"image": str(fixture("exif_gps.jpg"))})
            return listed, located

    listed, located = anyio.run(main)
    assert [t.name for t in listed.tools] == ["locate", "explain", "ask"]
    assert not located.is_error and located.structured_content["country_code"] == "FR"
    assert Path(tmp_path / "db.sqlite3").exists()


def test_a_url_goes_through_the_ssrf_safe_fetcher(settings, exif_locator, tmp_path):
    import httpx

    from geosleuth.service.fetch import URLFetcher

    seen: list[httpx.Request] = []

    def serve(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=fixture("exif_gps.jpg").read_bytes())

    fetcher = URLFetcher(
        max_bytes=1 << 20, resolver=lambda host, port: ["93.184.215.14"], transport=httpx.MockTransport(serve)
    )
    context = IntegrationContext(
        settings,
        locator=exif_locator,
        fetcher=fetcher,
        database=str(tmp_path / "db.sqlite3"),
        allow_local_files=False,
    )
    result = call(context, "locate", {"image": "https://photos.example/p/exif_gps.jpg?sig=secret"})
    assert not result.is_error and result.structured_content["country_code"] == "FR"
    assert result.structured_content["source"] == "https://photos.example/p/exif_gps.jpg"  # no query string
    assert [r.url.host for r in seen] == ["93.184.215.14"] and seen[0].headers["host"] == "photos.example"
    private = URLFetcher(
        max_bytes=1 << 20, resolver=lambda host, port: ["10.0.0.7"], transport=httpx.MockTransport(serve)
    )
    context._fetcher = private
    refused = call(context, "locate", {"image": "https://intranet.example/p.jpg"})
    assert error_type(refused) == "URLRefusedError" and len(seen) == 1
    context.close()


def test_the_registry_keeps_each_tool_set_to_its_context():
    from geosleuth.agents.context import RunContext
    from geosleuth.agents.registry import AgentTool
    from geosleuth.agents.toolbox import TOOLS

    with pytest.raises(TypeError, match="IntegrationContext"):
        INTEGRATION_TOOLS.add(TOOLS["reverse_geocode"])  # a planner tool runs in a RunContext
    with pytest.raises(TypeError, match="first parameter must be `ctx: RunContext`"):
        AgentTool.from_function(INTEGRATION_TOOLS["locate"].function)
    assert all(t.context is IntegrationContext for t in INTEGRATION_TOOLS)
    assert all(t.context is RunContext for t in TOOLS)


@pytest.mark.parametrize(
    ("args", "http", "allowed"),
    [
        ([], False, True),
        (["--http", "--port", "8799"], True, False),
        (["--http", "--allow-local-files"], True, True),
    ],
)
def test_the_command_serves_stdio_or_http_and_refuses_local_files_over_http(monkeypatch, args, http, allowed):
    from typer.testing import CliRunner

    import geosleuth.integrations.mcp as server_module
    from geosleuth.cli import app

    made: list[IntegrationContext] = []
    runs: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(server_module, "create_server", lambda context: made.append(context) or "server")
    monkeypatch.setattr(server_module, "run_stdio", lambda server: runs.append(("stdio", {})))
    monkeypatch.setattr(server_module, "run_http", lambda server, **kw: runs.append(("http", kw)))
    result = CliRunner().invoke(app, ["mcp", "--offline", "-q", *args])
    assert result.exit_code == 0, result.output
    assert [kind for kind, _ in runs] == ["http" if http else "stdio"]
    assert made[0].allow_local_files is allowed and made[0].settings.offline is True
    if http:
        assert runs[0][1]["host"] == "127.0.0.1" and runs[0][1]["port"] == (
            8799 if "--port" in args else 8765
        )
