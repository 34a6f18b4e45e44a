"""Agent tools declared once: schemas derived from signatures, validation, budgets, the trace, and
each tool against real local servers (fake OSM, scripted VLM) or the real offline gazetteer/OCR."""

from __future__ import annotations

import inspect
from typing import Annotated

import pytest
from pydantic import Field

from conftest import BERLIN, KOENIGSTRASSE, fixture, make_locator, online_tools
from data import small_sign_photo
from geosleuth.agents.context import RunContext
from geosleuth.agents.planner import GRAPH, Planner
from geosleuth.agents.registry import AgentTool, ToolResult, Toolset
from geosleuth.agents.toolbox import TOOLS, PlaceCheck, ReverseGeocodeResult, ZoomResult
from geosleuth.errors import BudgetExceededError, ToolQueryError, ToolUnavailableError, UnknownToolError
from geosleuth.geo import haversine_km
from geosleuth.schemas import LatLon, StageStatus, TraceStep, VLMGuess
from geosleuth.testing.openai_server import Reply


def km(p: LatLon, lat: float, lon: float) -> float:
    return float(haversine_km(p.lat, p.lon, lat, lon))


def contribution(check: PlaceCheck, signal: str) -> float:
    return next((s.contribution for s in [*check.supporting, *check.opposing] if s.name == signal), 0.0)


def context_after(loc, image) -> RunContext:  # type: ignore[no-untyped-def]
    """Locate ``image`` and return a context over the finished state (as chat and MCP will)."""
    _, state = loc.run(str(image))
    return loc.planner.context(state)


# --- declaration ----------------------------------------------------------------------------------


def test_every_tool_schema_is_the_pydantic_schema_of_its_arguments():
    assert {"geocode", "find_osm_feature", "reverse_geocode", "zoom", "check_place"} <= set(TOOLS.names)
    for tool in TOOLS:
        spec = tool.openai_spec()["function"]
        assert spec["name"] == tool.name
        assert spec["parameters"] == tool.arguments.model_json_schema()
        assert spec["description"] and "\n" not in spec["description"]
        # the signature is the source: every parameter but ctx is a field
        assert list(tool.arguments.model_fields) == list(inspect.signature(tool.function).parameters)[1:]
    geocode = TOOLS["geocode"].json_schema()
    assert geocode["required"] == ["name"] and geocode["additionalProperties"] is False
    assert "pattern" in str(geocode["properties"]["country_code"])


class Echo(ToolResult):
    said: str


def test_a_declaration_needs_context_docstring_and_a_model_result():
    tools = Toolset()

    @tools.tool(budgeted=False)
    def echo(ctx: RunContext, text: Annotated[str, Field(max_length=5, description="What to say.")]) -> Echo:
        """Say it back."""
        return Echo(said=text)

    assert tools["echo"].description == "Say it back."
    assert tools["echo"].json_schema()["properties"]["text"]["description"] == "What to say."

    def no_doc(ctx: RunContext) -> Echo:
        return Echo(said="")

    def no_ctx(text: str) -> Echo:
        """Doc."""
        return Echo(said=text)

    def not_a_model(ctx: RunContext) -> str:
        """Doc."""
        return ""

    for bad in (no_doc, no_ctx, not_a_model):
        with pytest.raises(TypeError):
            AgentTool.from_function(bad)
    with pytest.raises(ValueError, match="declared twice"):
        tools.tool()(echo)
    with pytest.raises(UnknownToolError, match="did you mean 'echo'"):
        tools["ecco"]


def test_bad_arguments_are_a_typed_error_naming_the_field(settings, gazetteer):
    loc = make_locator(settings, gazetteer, ocr={"engine": "none"})
    ctx = context_after(loc, fixture("exif_gps.jpg"))
    with pytest.raises(ToolQueryError, match="point"):
        TOOLS.call(ctx, "reverse_geocode", {"point": {"lat": 95, "lon": 0}})
    with pytest.raises(ToolQueryError, match="path"):
        TOOLS.call(ctx, "reverse_geocode", {"point": {"lat": 1, "lon": 2}, "path": "/etc/passwd"})
    assert ctx.usage.tool_calls == 0


# --- the tools ------------------------------------------------------------------------------------


def test_geocode_and_find_osm_feature_through_the_registry(settings, gazetteer, fake_osm, tmp_path):
    loc = make_locator(settings, gazetteer, ocr={"engine": "none"}, **online_tools(fake_osm, tmp_path))
    ctx = context_after(loc, fixture("blank.jpg"))
    ctx.step = step = TraceStep(node="test", seconds=0.0)
    hits = TOOLS.call(ctx, "geocode", {"name": "Berlin", "country_code": "de"})
    assert [h.country_code for h in hits.hits] == ["DE"] and hits.country_codes == ["DE"]
    feats = TOOLS.call(ctx, "find_osm_feature", {"name": "Königstraße", "near": {"lat": 52.52, "lon": 13.40}})
    assert feats.features and km(feats.features[0].point, *KOENIGSTRASSE) < 0.1
    assert ctx.usage.tool_calls == 2 and len(fake_osm.requests) == 2
    assert [c.name for c in step.tool_calls] == ["geocode", "find_osm_feature"]
    assert step.tool_calls[0].arguments == {"name": "Berlin", "country_code": "de"}
    assert (
        step.tool_calls[0].cost == {"tool_calls": 1, "vlm_requests": 0}
        and "1 hits" in step.tool_calls[0].result
    )


def test_network_tools_are_unavailable_offline_and_reverse_geocode_still_answers(settings, gazetteer):
    loc = make_locator(settings, gazetteer, ocr={"engine": "none"}, offline=True)
    ctx = context_after(loc, fixture("exif_gps.jpg"))
    with pytest.raises(ToolUnavailableError, match="offline"):
        TOOLS.call(ctx, "geocode", {"name": "Paris"})
    assert {t.name for t in TOOLS.available(ctx)} >= {"reverse_geocode", "check_place"}
    assert "geocode" not in TOOLS.available(ctx)
    out = TOOLS.call(ctx, "reverse_geocode", {"point": {"lat": 48.8584, "lon": 2.2945}})
    assert isinstance(out, ReverseGeocodeResult)
    assert out.place.country_code == "FR" and out.address is None and ctx.usage.tool_calls == 0


def test_reverse_geocode_online_adds_the_address_and_costs_one_call(settings, gazetteer, fake_osm, tmp_path):
    loc = make_locator(settings, gazetteer, ocr={"engine": "none"}, **online_tools(fake_osm, tmp_path))
    ctx = context_after(loc, fixture("exif_gps.jpg"))
    before = ctx.usage.tool_calls
    out = TOOLS.call(ctx, "reverse_geocode", {"point": {"lat": 52.52, "lon": 13.405}})
    assert out.place.country_code == "DE" and out.address and "Berlin" in out.address
    assert ctx.usage.tool_calls == before + 1


def test_check_place_weighs_a_hypothesis_with_the_verifiers_signals(settings, gazetteer):
    loc = make_locator(settings, gazetteer, offline=True)
    ctx = context_after(loc, fixture("sign_fr_paris.jpg"))
    paris = TOOLS.call(ctx, "check_place", {"place": "Paris", "country_code": "FR"})
    assert isinstance(paris, PlaceCheck)
    assert paris.rank == 1 and paris.same_as is not None and paris.probability > 0.5
    assert paris.proposed_by == ["text-clue"]
    assert paris.country_probability is not None and paris.country_probability > 0.5
    tokyo = TOOLS.call(ctx, "check_place", {"place": "Tokyo"})
    assert tokyo.rank > 1 and tokyo.probability < 0.05 and tokyo.best == paris.best and not tokyo.proposed_by
    assert any(s.name == "evidence" for s in tokyo.opposing)
    assert contribution(tokyo, "evidence") < contribution(paris, "evidence") - 3
    at_sea = TOOLS.call(ctx, "check_place", {"point": {"lat": 45.0, "lon": -30.0}})
    assert any(s.name == "land" for s in at_sea.opposing) and at_sea.notes
    for bad in ({}, {"place": "Paris", "point": {"lat": 1, "lon": 1}}, {"place": "Xqzzyville"}):
        with pytest.raises(ToolQueryError):
            TOOLS.call(ctx, "check_place", bad)
    assert ctx.usage.tool_calls == 0  # offline and free
    assert ctx.state.ranked[0].label == paris.best  # asking changed nothing


def test_zoom_validates_boxes(settings, gazetteer):
    loc = make_locator(settings, gazetteer, offline=True)
    ctx = context_after(loc, fixture("sign_fr_paris.jpg"))  # 720x268
    for box in (
        {"left": 0, "top": 0, "right": 800, "bottom": 100},  # outside
        {"left": 10, "top": 10, "right": 12, "bottom": 100},  # too narrow
        {"left": 0, "top": 0, "right": 1.5, "bottom": 0.5, "unit": "fraction"},
    ):
        with pytest.raises(ToolQueryError, match="box"):
            TOOLS.call(ctx, "zoom", {"box": box})
    with pytest.raises(ToolQueryError, match="box"):
        TOOLS.call(ctx, "zoom", {"box": {"left": 50, "top": 10, "right": 20, "bottom": 100}})
    whole = TOOLS.call(
        ctx, "zoom", {"box": {"left": 0, "top": 0, "right": 1, "bottom": 1, "unit": "fraction"}}
    )
    assert isinstance(whole, ZoomResult) and whole.box == (0, 0, 720, 268)
    assert "Paris" in whole.text and whole.new_lines == 0 and not whole.new_evidence
    assert whole.image().size == (720, 268)


@pytest.mark.slow
def test_a_sign_too_small_for_ocr_is_read_through_zoom_when_the_vlm_asks(
    settings, gazetteer, fake_vlm, tmp_path
):
    photo, (x0, y0, x1, y1) = small_sign_photo(["Rue de Rivoli", "75001 Paris"])
    path = tmp_path / "street.jpg"
    photo.save(path, quality=92)
    box = {"left": x0 - 40, "top": y0 - 40, "right": x1 + 40, "bottom": y1 + 40}
    fake_vlm.reset()

    def answer(body: dict) -> Reply:
        if "tools" in body:  # the planner's tool choice: look closer at the sign
            return Reply.calls(("zoom", {"box": box}))
        return Reply.guess(VLMGuess(latitude=40.0, longitude=-40.0, confidence=0.3, rationale="no idea"))

    fake_vlm.default = answer
    overrides = {"offline": True, "vlm": {"base_url": fake_vlm.base_url, "rag_k": [0], "samples": 2}}
    pred = make_locator(settings, gazetteer, **overrides).locate(str(path))
    assert pred.status == "located" and pred.best.place.country_code == "FR"
    assert km(pred.best.point, 48.8566, 2.3522) < 25
    assert any(e.details.get("via") == "zoom" for e in pred.evidence)
    zooms = [c for t in pred.trace for c in t.tool_calls if c.name == "zoom"]
    assert len(zooms) == 1 and zooms[0].cost["tool_calls"] == 1 and "Paris" in zooms[0].result
    assert pred.usage.tool_calls == 1
    investigated = [s for s in pred.stages if s.name.startswith("investigate")]
    assert [s.engine for s in investigated] == ["zoom"]  # only the zoom ran: not "osm"
    offered = next(r.body for r in fake_vlm.chat_requests if "tools" in r.body)
    assert [t["function"]["name"] for t in offered["tools"]] == ["zoom"]
    assert offered["tools"][0] == TOOLS["zoom"].openai_spec()  # the schema the VLM sees is the declared one
    assert offered["messages"][1]["content"][0]["type"] == "image_url"  # it sees the photo to choose a box

    # the same photo, the VLM declining to zoom: no text, too little evidence, no tool call
    fake_vlm.default = lambda body: (
        Reply.text("No checks needed.")
        if "tools" in body
        else Reply.guess(VLMGuess(latitude=40.0, longitude=-40.0, confidence=0.3, rationale="?"))
    )
    declined = make_locator(settings, gazetteer, **overrides).locate(str(path))
    assert declined.status == "insufficient_evidence" and declined.usage.tool_calls == 0


def test_the_vlm_is_offered_the_declared_osm_tools(settings, gazetteer, fake_vlm, fake_osm, tmp_path):
    fake_vlm.reset()
    fake_vlm.default = lambda body: (
        Reply.calls(("geocode", {"name": "Berlin", "country_code": "DE"}))
        if "tools" in body
        else Reply.guess(VLMGuess(latitude=BERLIN[0], longitude=BERLIN[1], confidence=0.5, rationale="x"))
    )
    loc = make_locator(
        settings,
        gazetteer,
        verifier={"investigate_below": 0.999},
        vlm={"base_url": fake_vlm.base_url, "rag_k": [0], "samples": 2},
        **online_tools(fake_osm, tmp_path),
    )
    pred = loc.locate(fixture("sign_de_berlin.jpg"))
    offered = next(r.body for r in fake_vlm.chat_requests if "tools" in r.body)["tools"]
    names = [t["function"]["name"] for t in offered]
    assert names[:2] == ["geocode", "find_osm_feature"]
    for spec in offered:
        assert spec == TOOLS[spec["function"]["name"]].openai_spec()
    calls = [c for t in pred.trace for c in t.tool_calls]
    assert calls[0].name == "geocode" and calls[0].arguments["name"] == "Berlin"
    assert pred.usage.tool_calls == len(calls) == len(fake_osm.requests)
    assert {s.engine for s in pred.stages if s.name.startswith("investigate")} <= {"osm", None}
    assert pred.usage.vlm_requests >= 2  # the guess and at least one tool choice


def test_web_search_is_off_by_default_and_talks_only_to_the_configured_searxng(
    settings, gazetteer, searxng_server, tmp_path
):
    off = context_after(
        make_locator(settings, gazetteer, ocr={"engine": "none"}, offline=False), fixture("blank.jpg")
    )
    assert "web_search" not in TOOLS.available(off)
    with pytest.raises(ToolUnavailableError, match="searxng_url"):
        TOOLS.call(off, "web_search", {"query": "boulangerie dupont"})
    loc = make_locator(
        settings,
        gazetteer,
        ocr={"engine": "none"},
        offline=False,
        cache_dir=str(tmp_path / "cache"),
        tools={"searxng_url": searxng_server.url, "min_interval_s": 0.0, "retries": 0},
    )
    ctx = context_after(loc, fixture("blank.jpg"))
    found = TOOLS.call(ctx, "web_search", {"query": "boulangerie dupont lyon", "language": "fr"})
    assert found.results[0].url == "https://example.org/boulangerie-dupont-lyon"
    assert ctx.usage.tool_calls == 1
    assert [r.params.get("language") for r in searxng_server.requests] == ["fr"]
    with pytest.raises(ToolQueryError, match="query"):
        TOOLS.call(ctx, "web_search", {"query": "x" * 1000})


# --- budgets and counting -------------------------------------------------------------------------


def test_each_budget_stops_with_the_best_answer_and_says_which(
    settings, gazetteer, fake_vlm, fake_osm, tmp_path
):
    ask_always = {"verifier": {"investigate_below": 0.999}}
    tools = make_locator(
        settings, gazetteer, **ask_always, budgets={"max_tool_calls": 1}, **online_tools(fake_osm, tmp_path)
    ).locate(fixture("sign_de_berlin.jpg"))
    assert tools.usage.tool_calls == 1 and len(fake_osm.requests) == 1
    assert tools.usage.exceeded == "max_tool_calls" and "budgets.max_tool_calls" in tools.explanation
    assert tools.status == "located" and tools.best.place.country_code == "DE"

    fake_vlm.reset()
    fake_vlm.default = Reply.guess(
        VLMGuess(latitude=BERLIN[0], longitude=BERLIN[1], confidence=0.5, rationale="x")
    )
    vlm = make_locator(
        settings,
        gazetteer,
        ocr={"engine": "none"},
        budgets={"max_vlm_calls": 0},
        vlm={"base_url": fake_vlm.base_url, "rag_k": [0]},
    ).locate(fixture("exif_gps.jpg"))
    assert vlm.stage("vlm").status == StageStatus.SKIPPED and "max_vlm_calls" in vlm.stage("vlm").detail
    assert (
        vlm.usage.exceeded == "max_vlm_calls" and vlm.usage.vlm_requests == 0 and not fake_vlm.chat_requests
    )
    assert vlm.status == "located" and vlm.basis == "exif-gps"

    slow = make_locator(
        settings,
        gazetteer,
        ocr={"engine": "none"},
        budgets={"max_seconds": 0.001},
        vlm={"base_url": fake_vlm.base_url},
    ).locate(fixture("exif_gps.jpg"))
    assert slow.usage.exceeded == "max_seconds" and slow.stage("vlm").status == StageStatus.SKIPPED
    assert slow.status == "located" and slow.basis == "exif-gps" and not fake_vlm.chat_requests


def test_usage_raises_one_typed_error_per_budget(settings):
    from geosleuth.agents.context import Usage
    from geosleuth.config import BudgetSettings

    usage = Usage(BudgetSettings(max_vlm_calls=2, max_tool_calls=1, max_seconds=100))
    assert usage.take_vlm(5) == 2 and usage.vlm_requests == 2
    with pytest.raises(BudgetExceededError) as exc:
        usage.take_vlm(1)
    assert exc.value.budget == "max_vlm_calls" and usage.exceeded is exc.value
    usage.charge_tool("geocode")
    with pytest.raises(BudgetExceededError, match="tool-call budget"):
        usage.charge_tool("geocode")
    assert usage.report().exceeded == "max_vlm_calls"  # the first one


def test_the_trace_lists_the_calls_of_its_own_round_and_eval_counts_calls(
    settings, gazetteer, fake_osm, tmp_path
):
    from geosleuth.eval.records import Sample
    from geosleuth.eval.runner import to_record

    loc = make_locator(
        settings, gazetteer, verifier={"investigate_below": 0.999}, **online_tools(fake_osm, tmp_path)
    )
    pred = loc.locate(fixture("sign_de_berlin.jpg"))
    rounds = [t for t in pred.trace if t.node == "investigate"]
    assert len(rounds) == 2
    made = [c.name for t in rounds for c in t.tool_calls]
    assert len(made) == len(fake_osm.requests) == pred.usage.tool_calls > len(rounds)
    for t in rounds:  # each round's text lines describe exactly that round's calls
        assert len(t.calls) == len(t.tool_calls)
    assert rounds[0].calls != rounds[1].calls
    sample = Sample(id="berlin", truth=LatLon(lat=BERLIN[0], lon=BERLIN[1]), load=bytes)
    record = to_record("k", "test", sample, pred, 1.0, None)
    assert record.tool_calls == pred.usage.tool_calls


# --- the graph ------------------------------------------------------------------------------------


def test_both_runners_come_from_one_declaration(settings, gazetteer):
    loc = make_locator(settings, gazetteer, ocr={"engine": "none"})
    graph = Planner(loc.deps, runner="langgraph")
    drawn = graph._compiled.get_graph()
    edges = {(e.source, e.target) for e in drawn.edges}
    declared = {(a, b) for a, b in GRAPH.edges.items()} | {
        (src, dst) for src, (_, targets) in GRAPH.routes.items() for dst in targets.values()
    }
    assert edges == declared
    plain = Planner(loc.deps, runner="sequential")
    a, _ = graph.run(loc_image(fixture("exif_gps.jpg")))
    b, _ = plain.run(loc_image(fixture("exif_gps.jpg")))
    assert [t.node for t in a.trace] == [t.node for t in b.trace]
    assert a.ranked[0].point == b.ranked[0].point and a.confidence == pytest.approx(b.confidence)


def loc_image(path):  # type: ignore[no-untyped-def]
    from geosleuth.tools.image import open_image

    return open_image(str(path))


def test_locate_trace_shows_each_tool_call_with_arguments_result_and_cost(fake_osm, monkeypatch):
    from typer.testing import CliRunner

    from geosleuth.cli import app

    for key, value in {
        "NOMINATIM_URL": fake_osm.nominatim_url,
        "OVERPASS_URL": fake_osm.overpass_url,
        "MIN_INTERVAL_S": "0",
        "RETRIES": "0",
        "CACHE": "false",  # every call reaches the fake server
    }.items():
        monkeypatch.setenv(f"GEOSLEUTH_TOOLS__{key}", value)
    monkeypatch.setenv("GEOSLEUTH_VERIFIER__INVESTIGATE_BELOW", "0.999")
    res = CliRunner().invoke(
        app,
        ["locate", str(fixture("sign_de_berlin.jpg")), "--online", "--trace"],
    )
    assert res.exit_code == 0, res.output
    tool_lines = [ln.strip() for ln in res.output.splitlines() if ln.strip().startswith("tool: ")]
    assert tool_lines and tool_lines[0].startswith('tool: geocode({"name": "Berlin"')
    assert "hits" in tool_lines[0] and "tool_calls=1" in tool_lines[0]
    assert len(tool_lines) == len(fake_osm.requests)


def test_the_investigate_stage_names_the_tools_that_ran():
    from geosleuth.agents.nodes.investigate import _engine, _engine_of

    assert _engine({_engine_of("zoom")}) == "zoom"
    assert _engine({_engine_of("geocode"), _engine_of("find_osm_feature")}) == "osm"
    assert _engine({_engine_of("zoom"), _engine_of("geocode")}) == "osm+zoom"
    assert _engine(set()) is None  # nothing ran: no engine to name
