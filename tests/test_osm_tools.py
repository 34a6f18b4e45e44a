"""OpenStreetMap tools (Nominatim through geopy, Overpass through overpy) against the local fake server."""

from __future__ import annotations

import itertools
import pickle
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from geosleuth.config import Settings, ToolSettings
from geosleuth.schemas import LatLon
from geosleuth.testing.http import free_port
from geosleuth.testing.osm_server import CannedFeature, CannedPlace, FakeOSMServer
from geosleuth.tools.osm import (
    Geocoder,
    OSMTools,
    Overpass,
    ToolQueryError,
    ToolUnavailableError,
    build_find_named_query,
    make_tools,
    regex_literal,
)

pytest.importorskip("overpy")

PARIS = LatLon(lat=48.8566, lon=2.3522)
PLACES = [
    CannedPlace("Paris", 48.8566, 2.3522, "fr", importance=0.9, display_name="Paris, Île-de-France, France"),
    CannedPlace("Paris", 33.6609, -95.5555, "us", importance=0.4),
    CannedPlace("Paris-l'Hôpital", 46.9170, 4.6330, "fr", osm_value="village", importance=0.2),
]
FEATURES = [
    CannedFeature("Café (Rivoli)*", {"amenity": "cafe", "addr:street": "Rue de Rivoli"}, 48.8606, 2.3376),
    CannedFeature("Café Rivoli", {"amenity": "cafe"}, 48.8610, 2.3380),
    CannedFeature("Café de Flore", {"amenity": "cafe", "opening_hours": "7-2"}, 48.8542, 2.3326),
    CannedFeature("Gare X", {"railway": "station", "name:fr": "Gare de Lyon"}, 48.8443, 2.3730, "way"),
    CannedFeature("Gare de Lyon", {"railway": "station"}, 45.7605, 4.8595),  # Lyon, 390 km away
]


@pytest.fixture
def server() -> Iterator[FakeOSMServer]:
    with FakeOSMServer(places=PLACES, features=FEATURES) as srv:
        yield srv


def tools_for(srv: FakeOSMServer, **overrides: Any) -> ToolSettings:
    values: dict[str, Any] = {
        "nominatim_url": srv.nominatim_url,
        "overpass_url": srv.overpass_url,
        "min_interval_s": 0.0,
        "timeout_s": 2.0,
        "retries": 2,
        **overrides,
    }
    return ToolSettings(**values)


def geocoder(srv: FakeOSMServer, cache_dir: Path | None = None, **overrides: Any) -> Geocoder:
    return Geocoder(tools_for(srv, **overrides), cache_dir=cache_dir, backoff_s=0.05)


def overpass(srv: FakeOSMServer, cache_dir: Path | None = None, **overrides: Any) -> Overpass:
    return Overpass(tools_for(srv, **overrides), cache_dir=cache_dir, backoff_s=0.05)


# --- answers ------------------------------------------------------------------------------------


def test_geocode_filters_by_country(server: FakeOSMServer) -> None:
    g = geocoder(server)
    everywhere = g.geocode("  paris ")
    assert [h.country_code for h in everywhere] == ["FR", "US", "FR"]  # by importance
    assert everywhere[0].display_name == "Paris, Île-de-France, France"
    assert everywhere[0].point == PARIS and everywhere[0].osm_class == "place"
    assert everywhere[0].box is not None and everywhere[0].box.contains(PARIS)

    us = g.geocode("Paris", country_codes=["US"])
    assert [(h.name, h.country_code) for h in us] == [("Paris", "US")]
    assert server.requests[-1].params["countrycodes"] == "us"
    assert server.requests[-1].params["q"] == "Paris"


def test_geocode_near_uses_a_bounded_viewbox(server: FakeOSMServer) -> None:
    hits = geocoder(server).geocode("paris", near=LatLon(lat=48.80, lon=2.30), near_km=50, limit=3)
    assert [h.display_name for h in hits] == ["Paris, Île-de-France, France"]
    params = server.requests[-1].params
    assert params["bounded"] == "1" and params["limit"] == "3"
    lon1, lat1, lon2, lat2 = (float(v) for v in params["viewbox"].split(","))
    assert lat1 < 48.80 < lat2 and lon1 < 2.30 < lon2 and 0.8 < lat2 - lat1 < 1.0


def test_geocode_rejects_bad_arguments(server: FakeOSMServer) -> None:
    g = geocoder(server)
    for kwargs in ({"country_codes": ["France"]}, {"limit": 0}, {"near": PARIS, "near_km": 0}):
        with pytest.raises(ToolQueryError):
            g.geocode("Paris", **kwargs)
    with pytest.raises(ToolQueryError, match="name"):
        g.geocode("   ")
    assert server.requests == []


def test_reverse(server: FakeOSMServer) -> None:
    g = geocoder(server)
    hit = g.reverse(LatLon(lat=48.85, lon=2.35))
    assert hit is not None and hit.name == "Paris" and hit.country_code == "FR"
    assert server.requests[-1].path == "/reverse" and server.requests[-1].params["lat"] == "48.85"
    assert g.reverse(LatLon(lat=0.0, lon=-30.0)) is None  # mid-Atlantic: "Unable to geocode"


def test_find_named_within_and_outside_radius(server: FakeOSMServer) -> None:
    op = overpass(server)
    found = op.find_named("gare de lyon", PARIS, radius_m=3000)
    assert [(f.osm_type, f.name) for f in found] == [("way", "Gare X")]  # matched by name:fr; Lyon is far
    assert found[0].tags["name:fr"] == "Gare de Lyon" and found[0].tags["railway"] == "station"
    assert 2000 < found[0].distance_m < 2100

    near_flore = LatLon(lat=48.8542, lon=2.3326)
    assert [f.name for f in op.find_named("café", near_flore, radius_m=300)] == ["Café de Flore"]
    assert {f.name for f in op.find_named("café", near_flore, radius_m=2000)} == {
        "Café de Flore",
        "Café Rivoli",
        "Café (Rivoli)*",
    }
    assert op.find_named("café", PARIS, radius_m=500) == []
    assert op.find_named("Café de Flore", PARIS, kinds=("shop",)) == []  # it is an amenity


def test_find_named_escapes_regex_metacharacters(server: FakeOSMServer) -> None:
    found = overpass(server).find_named("Café (Rivoli)*", PARIS)
    # Unescaped, "Café (Rivoli)*" would match every café.
    assert [f.name for f in found] == ["Café (Rivoli)*"]
    assert found[0].tags == {"name": "Café (Rivoli)*", "amenity": "cafe", "addr:street": "Rue de Rivoli"}


def test_build_find_named_query() -> None:
    q = build_find_named_query('Café (Rivoli)* "Chez\\Nous"', PARIS, 1500, ("shop", "amenity"), timeout_s=7)
    assert q.startswith("[out:json][timeout:7];")
    assert q.count("(around:1500,48.856600,2.352200)") == 2
    assert "node(around:" in q and "way(around:" in q and "out center" in q
    assert '[~"^(shop|amenity)$"~"."]' in q
    # Regex escape, then QL string escape: a literal "(" is \( in the regex and \\( in the QL.
    assert r'~"Café \\(Rivoli\\)\\* \"Chez\\\\Nous\"",i]' in q
    for bad in ({"radius_m": 0}, {"radius_m": 60_000}, {"kinds": ("shop]",)}, {"name": " "}):
        args: dict[str, Any] = {"name": "x", "near": PARIS, "radius_m": 100, **bad}
        with pytest.raises(ToolQueryError):
            build_find_named_query(**args)


@pytest.mark.parametrize("text", ["Café (Rivoli)*", "a.b+c?", "[x]{2}|y", "^$\\", "St. Mary's", "中文 (1)"])
def test_regex_literal_matches_only_itself(text: str) -> None:
    pattern = re.compile(regex_literal(text))
    assert pattern.fullmatch(text)
    assert not pattern.fullmatch(text + "x")


# --- HTTP discipline ----------------------------------------------------------------------------


def test_user_agent_is_sent_to_both_services(server: FakeOSMServer) -> None:
    ua = "geosleuth-tests/1.0 (tests@example.org)"
    geocoder(server, user_agent=ua).geocode("Paris")
    overpass(server, user_agent=ua).find_named("Café", PARIS)
    assert [r.headers["user-agent"] for r in server.requests] == [ua, ua]
    assert server.overpass_requests[0].method == "POST"


def test_rate_limit_spaces_requests_and_cache_hits_are_instant(server: FakeOSMServer, tmp_path: Path) -> None:
    g = geocoder(server, tmp_path, min_interval_s=0.2)
    g.geocode("Paris")
    g.geocode("Paris", country_codes=["fr"])
    first, second = server.requests
    assert second.time - first.time >= 0.19

    start = time.monotonic()
    again = g.geocode("Paris", country_codes=["fr"])
    assert time.monotonic() - start < 0.15  # no wait for the interval
    assert len(server.requests) == 2
    assert again and again[0].country_code == "FR"


def test_rate_limit_holds_across_threads_and_clients(server: FakeOSMServer) -> None:
    clients = [geocoder(server, min_interval_s=0.15) for _ in range(3)]  # one server, one throttle
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda c: c[1].geocode(f"Paris {c[0]}"), enumerate(clients)))
    times = sorted(r.time for r in server.requests)
    assert len(times) == 3 and all(b - a >= 0.14 for a, b in itertools.pairwise(times))


def test_cache_survives_a_new_client_and_is_keyed_by_request(server: FakeOSMServer, tmp_path: Path) -> None:
    before = geocoder(server, tmp_path).geocode("Paris", country_codes=["us"])
    assert len(list((tmp_path / "tools" / "nominatim").glob("*.json"))) == 1
    fresh = geocoder(server, tmp_path)
    assert fresh.geocode("Paris", country_codes=["us"]) == before
    assert len(server.requests) == 1
    fresh.geocode("Paris", country_codes=["fr"])  # another request, another key
    fresh.reverse(PARIS)
    assert len(server.requests) == 3

    op = overpass(server, tmp_path)
    assert op.find_named("Café", PARIS) == overpass(server, tmp_path).find_named("Café", PARIS)
    assert len(server.overpass_requests) == 1
    assert len(list((tmp_path / "tools" / "overpass").glob("*.json"))) == 1

    geocoder(server, tmp_path, cache=False).geocode("Paris", country_codes=["us"])
    assert len(server.requests) == 5

    assert not list(tmp_path.rglob(".tmp-*"))  # written through a temporary file, then renamed
    for path in (tmp_path / "tools" / "nominatim").glob("*.json"):
        path.write_text("{truncated", encoding="utf-8")
    assert geocoder(server, tmp_path).geocode("Paris", country_codes=["us"]) == before  # asks again
    assert len(server.requests) == 6


def test_retries_on_server_errors_and_dropped_connections(server: FakeOSMServer) -> None:
    server.fail_next(500)
    server.fail_next("drop")
    assert geocoder(server).geocode("Paris")
    assert len(server.requests) == 3

    server.reset()
    server.fail_next(504)
    assert overpass(server).find_named("Café de Flore", PARIS)
    assert len(server.requests) == 2


def test_429_retry_after_is_honoured(server: FakeOSMServer) -> None:
    server.fail_next(429, retry_after=1)  # geopy reads whole seconds only, as HTTP defines them
    assert geocoder(server).geocode("Paris")
    first, second = server.requests
    assert second.time - first.time >= 0.99

    server.reset()
    server.fail_next(429, retry_after=0.3)
    assert overpass(server).find_named("Café de Flore", PARIS)
    first, second = server.requests
    assert second.time - first.time >= 0.29


def test_gives_up_after_retries_with_a_typed_error(server: FakeOSMServer) -> None:
    server.fail_next(500, times=10)
    with pytest.raises(ToolUnavailableError) as info:
        geocoder(server, retries=2).geocode("Paris")
    assert isinstance(info.value, ConnectionError)
    assert pickle.loads(pickle.dumps(info.value)).reason == info.value.reason
    assert info.value.service == "nominatim" and info.value.url == server.nominatim_url
    assert "nominatim" in str(info.value) and server.nominatim_url in str(info.value)
    assert "HTTP 500" in str(info.value) and "3 attempts" in str(info.value)
    assert len(server.requests) == 3

    server.reset()
    server.fail_next(504, times=10)
    with pytest.raises(ToolUnavailableError, match=r"overpass.*HTTP 504.*2 attempts"):
        overpass(server, retries=1).find_named("Café", PARIS)

    server.reset()
    server.fail_next(403)  # refused: retrying cannot help
    with pytest.raises(ToolUnavailableError, match="403"):
        geocoder(server).geocode("Paris")
    assert len(server.requests) == 1

    server.reset()
    server.fail_next(429, retry_after=60)  # longer than timeout_s: give up now rather than hang
    start = time.monotonic()
    with pytest.raises(ToolUnavailableError, match="wait 60 s"):
        overpass(server).find_named("Café", PARIS)
    assert time.monotonic() - start < 1.0


def test_offline_raises_without_any_request_but_serves_the_cache(
    server: FakeOSMServer, tmp_path: Path
) -> None:
    online = geocoder(server, tmp_path)
    cached = online.geocode("Paris")
    tools = tools_for(server)
    offline_g = Geocoder(tools, cache_dir=tmp_path, offline=True)
    assert offline_g.geocode("Paris") == cached
    with pytest.raises(ToolUnavailableError, match="offline"):
        offline_g.reverse(PARIS)
    with pytest.raises(ToolUnavailableError, match=r"overpass.*offline"):
        Overpass(tools, cache_dir=tmp_path, offline=True).find_named("Café", PARIS)
    assert len(server.requests) == 1


@pytest.mark.parametrize("service", ["nominatim", "overpass"])
def test_unreachable_server_fails_fast(service: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    tools = ToolSettings(
        nominatim_url=url, overpass_url=url + "/api/interpreter", timeout_s=0.5, retries=1, min_interval_s=0
    )
    start = time.monotonic()
    with pytest.raises(ToolUnavailableError, match=service):
        if service == "nominatim":
            Geocoder(tools, backoff_s=0.05).geocode("Paris")
        else:
            Overpass(tools, backoff_s=0.05).find_named("Café", PARIS)
    assert time.monotonic() - start < 3.0


def test_a_slow_server_times_out(tmp_path: Path) -> None:
    with FakeOSMServer(places=PLACES, latency_s=0.6) as srv:
        start = time.monotonic()
        with pytest.raises(ToolUnavailableError, match="nominatim"):
            geocoder(srv, timeout_s=0.2, retries=1).geocode("Paris")
        assert time.monotonic() - start < 2.0
        assert len(srv.requests) == 2


# --- construction -------------------------------------------------------------------------------


def test_make_tools(server: FakeOSMServer, tmp_path: Path) -> None:
    tools = tools_for(server)
    assert make_tools(Settings(cache_dir=tmp_path, offline=True, tools=tools)) is None
    made = make_tools(Settings(cache_dir=tmp_path, tools=tools))
    assert isinstance(made, OSMTools) and made.overpass is not None
    assert made.geocoder.url == server.nominatim_url and made.overpass.url == server.overpass_url
    made.geocoder.geocode("Paris")
    assert list((tmp_path / "tools" / "nominatim").glob("*.json"))
    assert server.requests  # nothing is requested until a tool is called
