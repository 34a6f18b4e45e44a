"""The planner end to end: every stage in one call, each stage's contribution, investigation with
canned OpenStreetMap answers, budgets, failures and the trace. Deterministic: a scripted VLM
server, a weight-free image encoder, a tiny index, a fake OSM server."""

from __future__ import annotations

import asyncio

import pytest

from conftest import BERLIN, KOENIGSTRASSE, fixture, make_locator, online_tools
from geosleuth.agents.planner import Planner
from geosleuth.geo import haversine_km
from geosleuth.schemas import CandidateSource, LocateError, StageStatus, VLMGuess
from geosleuth.testing.openai_server import Reply


def guess(lat: float, lon: float) -> VLMGuess:
    return VLMGuess(latitude=lat, longitude=lon, confidence=0.6, rationale=f"looks like {lat}, {lon}")


def km(p, lat: float, lon: float) -> float:
    return float(haversine_km(p.lat, p.lon, lat, lon))


@pytest.fixture
def vlm_server(fake_vlm):
    fake_vlm.reset()
    fake_vlm.default = Reply.guess(guess(*BERLIN))
    return fake_vlm


@pytest.fixture
def osm(fake_osm):
    return fake_osm


locator = make_locator
online = online_tools


def test_one_call_runs_every_stage_and_the_trace_shows_them(settings, gazetteer, vlm_server):
    loc = locator(
        settings, gazetteer, ocr={"engine": "none"}, vlm={"base_url": vlm_server.base_url, "rag_k": [0]}
    )
    assert loc.planner.engine == "langgraph"
    pred = loc.locate(fixture("blank.jpg"))
    assert [t.node for t in pred.trace] == ["evidence", "retrieval", "generate", "verify", "decide"]
    verify = next(t for t in pred.trace if t.node == "verify")
    assert verify.inputs["vlm_points"] == 1 and verify.outputs["top"][0]["source"] == "vlm"
    assert next(t for t in pred.trace if t.node == "generate").calls == ["vlm zero-shot n=5: ok"]
    assert pred.stage("verify").status == StageStatus.RAN
    assert pred.best is not None and km(pred.best.point, *BERLIN) < 1
    assert pred.best.signals["consistency"] > 1  # five of five samples agree
    # nested regions around the answer
    levels = [r.level for r in pred.regions]
    areas = [r.area_km2 for r in pred.regions]
    assert levels == [0.5, 0.8, 0.95] and areas == sorted(areas) and areas[0] > 0


def test_the_plain_loop_gives_the_same_answer_as_langgraph(settings, gazetteer, vlm_server):
    loc = locator(
        settings, gazetteer, ocr={"engine": "none"}, vlm={"base_url": vlm_server.base_url, "rag_k": [0]}
    )
    graph = loc.locate(fixture("blank.jpg"))
    loc.planner = Planner(loc.deps, runner="sequential")  # as without the `agents` extra
    assert loc.planner.engine == "sequential"
    plain = loc.locate(fixture("blank.jpg"))
    assert [t.node for t in plain.trace] == [t.node for t in graph.trace]
    assert plain.best.point == graph.best.point and plain.confidence == pytest.approx(graph.confidence)


def test_an_exif_point_overrides_the_vlm(settings, gazetteer, vlm_server):
    vlm_server.default = Reply.guess(guess(35.68, 139.69))  # Tokyo
    loc = locator(
        settings,
        gazetteer,
        ocr={"engine": "none"},
        max_candidates=100,  # keep the demoted ones in view
        vlm={"base_url": vlm_server.base_url, "rag_k": [0]},
    )
    pred = loc.locate(fixture("exif_gps.jpg"))
    assert pred.basis == "exif-gps" and pred.best.source == CandidateSource.EXIF
    tokyo = next(c for c in pred.candidates if c.source == CandidateSource.VLM)
    assert tokyo.probability < 0.01 and any("conflicts with the EXIF GPS point" in n for n in tokyo.notes)


def test_a_vlm_guess_in_the_sea_is_demoted(settings, gazetteer, vlm_server):
    vlm_server.default = Reply.guess(guess(40.0, -40.0))  # the middle of the Atlantic
    loc = locator(
        settings, gazetteer, ocr={"engine": "none"}, vlm={"base_url": vlm_server.base_url, "rag_k": [0]}
    )
    pred = loc.locate(fixture("blank.jpg"))
    sea = next(c for c in pred.candidates if c.source == CandidateSource.VLM)
    assert sea.signals["land"] < 0 and any("sea" in n for n in sea.notes)
    assert pred.status == "insufficient_evidence"


def test_neighbours_pull_the_answer_to_their_cluster(settings, gazetteer, vlm_server, tmp_path):
    pytest.importorskip("faiss")
    from geosleuth.retrieval.index import build_index
    from geosleuth.retrieval.sources import open_source
    from geosleuth.testing import PixelEncoder

    # the index holds the Berlin sign's own photo, taken in Berlin; the VLM is split Paris/Berlin
    rows = [
        "image,lat,lon",
        f"{fixture('sign_de_berlin.jpg')},{BERLIN[0]},{BERLIN[1]}",
        f"{fixture('sign_ja_tokyo.jpg')},35.68,139.69",
        f"{fixture('shop_es_phone.jpg')},40.41,-3.70",
    ]
    (tmp_path / "p.csv").write_text("\n".join(rows) + "\n")
    build_index(open_source(tmp_path / "p.csv"), PixelEncoder(), tmp_path / "idx", progress=False)
    vlm_server.default = Reply.guess(guess(48.8566, 2.3522), guess(*BERLIN))
    base = {"ocr": {"engine": "none"}, "vlm": {"base_url": vlm_server.base_url, "rag_k": [0], "samples": 4}}
    without = locator(settings, gazetteer, **base).locate(fixture("sign_de_berlin.jpg"))
    with_index = locator(
        settings,
        gazetteer,
        **base,
        retrieval={"image_encoder": "pixel", "index_dir": str(tmp_path / "idx"), "neighbours_k": 3},
    ).locate(fixture("sign_de_berlin.jpg"))
    top = with_index.candidates[0]
    assert km(top.point, *BERLIN) < 10 and top.signals["density"] > 0
    berlin_before = next(c for c in without.candidates if km(c.point, *BERLIN) < 10)
    assert top.probability > berlin_before.probability


def test_a_street_confirmed_by_overpass_raises_confidence(settings, gazetteer, osm, tmp_path):
    ask_always = {"verifier": {"investigate_below": 0.999}}
    offline = locator(settings, gazetteer, **ask_always).locate(fixture("sign_de_berlin.jpg"))
    assert offline.stage("investigate#1") is None and "offline mode is on" in offline.explanation
    loc = locator(settings, gazetteer, **ask_always, **online(osm, tmp_path))
    pred = loc.locate(fixture("sign_de_berlin.jpg"))
    assert pred.stage("investigate#1").status == StageStatus.RAN
    assert any(r.path.endswith("/interpreter") for r in osm.requests)
    assert all(r.headers.get("user-agent", "").startswith("geosleuth/") for r in osm.requests)
    confirm = next(e for e in pred.evidence if e.id.startswith("osm.feature."))
    assert "Königstraße" in confirm.value
    assert pred.best.signals["tools"] > 0 and km(pred.best.point, *KOENIGSTRASSE) < 1  # pinned to the street
    assert pred.confidence > offline.confidence
    steps = [t.node for t in pred.trace]
    assert steps[:6] == ["evidence", "retrieval", "generate", "verify", "decide", "investigate"]
    assert "verify" in steps[6:] and steps[-1] == "decide"
    assert next(t for t in pred.trace if t.node == "decide").summary.startswith("investigate: ")


def test_tool_budget_and_failing_tools_still_give_a_prediction(settings, gazetteer, osm, tmp_path):
    ask_always = {"verifier": {"investigate_below": 0.999}}
    one_call = locator(
        settings, gazetteer, **ask_always, budgets={"max_tool_calls": 1}, **online(osm, tmp_path)
    )
    pred = one_call.locate(fixture("sign_de_berlin.jpg"))
    assert len(osm.requests) == 1 and "tool-call budget (1) is spent" in pred.explanation
    osm.reset()
    osm.fail_next(500, times=50)
    broken = locator(settings, gazetteer, **ask_always, **online(osm, tmp_path / "other"))
    pred = broken.locate(fixture("sign_de_berlin.jpg"))
    assert pred.stage("investigate#1").status == StageStatus.FAILED
    assert any("OpenStreetMap tools failed" in w for w in pred.warnings)
    assert pred.status == "located" and pred.best.place.country_code == "DE"
    calls = len(osm.requests)
    again = broken.locate(fixture("sign_de_berlin.jpg"))  # not retried for every image
    assert len(osm.requests) == calls and "failed earlier" in again.explanation


def test_rendered_instructions_trigger_no_lookups(settings, gazetteer, osm, tmp_path):
    loc = locator(settings, gazetteer, verifier={"investigate_below": 0.999}, **online(osm, tmp_path))
    pred = loc.locate(fixture("sign_injection.jpg"))
    assert pred.status == "insufficient_evidence" and not osm.requests
    assert "nothing read in the image can be checked" in pred.explanation


def test_async_batch_keeps_order_and_bounds_concurrency(settings, gazetteer):
    loc = locator(settings, gazetteer, ocr={"engine": "none"})
    sources = [fixture("exif_gps.jpg"), fixture("not_an_image.jpg"), fixture("exif_gps_south_west.jpg")]

    async def run():
        return [r async for r in loc.alocate_many(sources, concurrency=2)]

    results = asyncio.run(run())
    assert isinstance(results[1], LocateError) and results[1].error_type == "NotAnImageError"
    assert [r.source for r in results] == [str(s) for s in sources]
    assert results[0].basis == "exif-gps" and results[2].basis == "exif-gps"
    with pytest.raises(ValueError, match="concurrency"):
        asyncio.run(anext(loc.alocate_many(sources, concurrency=0)))


def test_verifier_fit_cli_writes_weights_the_planner_then_uses(settings, gazetteer, tmp_path):
    from typer.testing import CliRunner

    from geosleuth.cli import app

    rows = [
        "image,lat,lon",
        f"{fixture('sign_de_berlin.jpg')},52.52,13.405",
        f"{fixture('sign_fr_paris.jpg')},48.8566,2.3522",
        f"{fixture('exif_gps.jpg')},48.8584,2.2945",
        f"{fixture('not_an_image.jpg')},0.5,0.5",
    ]
    (tmp_path / "truth.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "weights.json"
    res = CliRunner().invoke(app, ["verifier", "fit", str(tmp_path / "truth.csv"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "fitted on 3 photos (3 with a candidate within 25 km)" in res.output
    assert "skipped" in res.output and "not_an_image.jpg" in res.output
    fitted = locator(settings, gazetteer, verifier={"weights_file": str(out)})
    assert fitted.deps.verifier.fit_metrics["n_examples"] == 3
    assert fitted.locate(fixture("sign_de_berlin.jpg")).best.place.country_code == "DE"


def test_the_vlm_chooses_the_checks_and_only_valid_ones_run(settings, gazetteer, osm, tmp_path, vlm_server):
    vlm_server.script(
        Reply.guess(guess(*BERLIN)),  # asked with the photo's text
        Reply.guess(guess(*BERLIN)),  # and without it (the no-text request)
        Reply.calls(
            ("find_osm_feature", {"name": "Königstraße", "latitude": 52.52, "longitude": 13.40}),
            ("geocode", {"name": "Eiffel Tower"}),  # not read in the photo: refused
            (
                "find_osm_feature",
                {"name": "Königstraße", "latitude": -33.9, "longitude": 151.2},
            ),  # no candidate there
        ),
    )
    loc = locator(
        settings,
        gazetteer,
        verifier={"investigate_below": 0.999},
        vlm={"base_url": vlm_server.base_url, "rag_k": [0]},
        **online(osm, tmp_path),
    )
    pred = loc.locate(fixture("sign_de_berlin.jpg"))
    detail = pred.stage("investigate#1").detail
    assert "chosen by the VLM" in detail and detail.count("overpass") == 1 and "geocode" not in detail
    tools_request = (
        vlm_server.requests[-1].body
        if "tools" in vlm_server.requests[-1].body
        else next(r.body for r in vlm_server.requests if r.body and "tools" in r.body)
    )
    assert {t["function"]["name"] for t in tools_request["tools"]} == {"geocode", "find_osm_feature"}
    assert "<untrusted_text>" in tools_request["messages"][1]["content"]
    first = osm.requests[0]  # round 1 made exactly the one valid call the VLM asked for
    assert first.path.endswith("/interpreter") and "nigstra" in first.params["data"]
    assert pred.best.signals["tools"] > 0


def test_a_rule_chooses_when_the_server_has_no_tool_calling(settings, gazetteer, osm, tmp_path, vlm_server):
    vlm_server.script(
        Reply.guess(guess(*BERLIN)),
        Reply.guess(guess(*BERLIN)),  # the no-text request
        Reply.error(
            400, '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
        ),
    )
    loc = locator(
        settings,
        gazetteer,
        verifier={"investigate_below": 0.999},
        vlm={"base_url": vlm_server.base_url, "rag_k": [0]},
        **online(osm, tmp_path),
    )
    pred = loc.locate(fixture("sign_de_berlin.jpg"))
    assert "(rule)" in pred.stage("investigate#1").detail and osm.nominatim_requests


def test_the_runner_is_a_setting(settings, gazetteer):
    from geosleuth.agents.pipeline import Locator, build_deps

    s = settings.with_overrides(ocr={"engine": "none"}, planner="sequential")
    assert Locator(deps=build_deps(s, gazetteer=gazetteer)).planner.engine == "sequential"
