"""A real, local HTTP server that answers like Nominatim and the Overpass API, from canned data.

It listens on 127.0.0.1 (a free port), so geopy's ``Nominatim`` and our Overpass transport talk to
it with their real HTTP stacks, timeouts and retries::

    places = [CannedPlace("Paris", 48.8566, 2.3522, "fr"), ("Paris", 33.6609, -95.5555, "us")]
    features = [CannedFeature("Café (Rivoli)*", {"amenity": "cafe"}, 48.8606, 2.3376)]
    with FakeOSMServer(places=places, features=features, latency_s=0.01) as srv:
        tools = ToolSettings(nominatim_url=srv.nominatim_url, overpass_url=srv.overpass_url)
        srv.fail_next(429, retry_after=0.2)
        ...
        assert srv.requests[-1].headers["user-agent"].startswith("geosleuth")

Nominatim: ``GET /search`` (``q``, ``format=json|jsonv2``, ``limit``, ``countrycodes``,
``viewbox`` + ``bounded``, ``addressdetails``) and ``GET /reverse`` (``lat``, ``lon``). ``/search``
keeps the places whose name contains ``q`` (any case). Overpass: ``POST /api/interpreter`` with a
``data=`` form body (or the raw query, or ``GET ?data=``); the query is read minimally: its
``around:R,lat,lon``, its tag filters (``["key"~"re",i]`` and ``[~"keyre"~"re",i]``) and the
``out`` limit. The JSON shapes follow the real services' answers.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

from geosleuth.geo import haversine_km
from geosleuth.testing.http import QuietHandler, RecordedRequest, ScriptedServer

logger = logging.getLogger(__name__)

LICENCE = "Data © OpenStreetMap contributors, ODbL 1.0. http://osm.org/copyright"
OVERPASS_COPYRIGHT = (
    "The data included in this document is from www.openstreetmap.org. The data is made available under ODbL."
)
_ids = itertools.count(1000)


@dataclass(frozen=True)
class CannedPlace:
    """A place Nominatim knows. ``display_name`` defaults to ``"<name>, <COUNTRY CODE>"``."""

    name: str
    lat: float
    lon: float
    country_code: str
    osm_class: str = "place"
    osm_value: str = "city"
    importance: float = 0.5
    display_name: str | None = None
    osm_type: Literal["node", "way", "relation"] = "node"
    osm_id: int = field(default_factory=lambda: next(_ids))


@dataclass(frozen=True)
class CannedFeature:
    """A feature Overpass knows. A ``name`` tag is added from ``name`` when ``tags`` has none;
    a way is answered with ``lat``/``lon`` as its centre."""

    name: str
    tags: dict[str, str]
    lat: float
    lon: float
    osm_type: Literal["node", "way"] = "node"
    osm_id: int = field(default_factory=lambda: next(_ids))

    @property
    def all_tags(self) -> dict[str, str]:
        return {"name": self.name, **self.tags} if self.name and "name" not in self.tags else dict(self.tags)


@dataclass(frozen=True)
class _Failure:
    status: int | None  # None: drop the connection
    retry_after: float | None


class FakeOSMServer(ScriptedServer):
    """Nominatim + Overpass on 127.0.0.1 from canned data. Use it as a context manager."""

    def __init__(
        self,
        *,
        places: Iterable[CannedPlace | tuple[Any, ...]] = (),
        features: Iterable[CannedFeature | tuple[Any, ...]] = (),
        latency_s: float = 0.0,
        reverse_max_km: float = 25.0,
        port: int = 0,
    ) -> None:
        super().__init__(port)
        if latency_s < 0:
            raise ValueError(f"latency_s must be >= 0 seconds, got {latency_s!r}")
        self.places = [p if isinstance(p, CannedPlace) else CannedPlace(*p) for p in places]
        self.features = [f if isinstance(f, CannedFeature) else CannedFeature(*f) for f in features]
        self.latency_s = latency_s
        self.reverse_max_km = reverse_max_km

    @property
    def nominatim_url(self) -> str:
        return self.url

    @property
    def overpass_url(self) -> str:
        return self.url + "/api/interpreter"

    # --- scripting and inspection -------------------------------------------------------------

    def fail_next(
        self, status: int | Literal["drop"] = 500, *, times: int = 1, retry_after: float | None = None
    ) -> None:
        """Answer the next ``times`` requests (any path) with ``status`` (``Retry-After`` added when
        given), or close the connection without an answer (``"drop"``)."""
        if status != "drop" and not (isinstance(status, int) and 400 <= status <= 599):
            raise ValueError(f"status must be an HTTP error status (400-599) or 'drop', got {status!r}")
        self._script([_Failure(None if status == "drop" else int(status), retry_after)] * times)

    @property
    def nominatim_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path in ("/search", "/reverse")]

    @property
    def overpass_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/api/interpreter"]

    # --- answers ------------------------------------------------------------------------------

    def search(self, params: dict[str, str]) -> tuple[int, Any]:
        q = " ".join(params.get("q", "").split()).casefold()
        if not q:
            return 400, {"error": {"code": 400, "message": "Nothing to search for."}}
        codes = {c.strip().lower() for c in params.get("countrycodes", "").split(",") if c.strip()}
        box = _floats(params.get("viewbox", ""), 4) if params.get("bounded") == "1" else None
        limit = min(int(params.get("limit", 10)), 40)
        hits = [
            p
            for p in self.places
            if q in p.name.casefold()
            and (not codes or p.country_code.lower() in codes)
            and (box is None or _in_box(p.lat, p.lon, box))
        ]
        hits.sort(key=lambda p: -p.importance)
        return 200, [_place_json(p, params) for p in hits[:limit]]

    def reverse(self, params: dict[str, str]) -> tuple[int, Any]:
        try:
            lat, lon = float(params["lat"]), float(params["lon"])
        except (KeyError, ValueError):
            return 400, {"error": {"code": 400, "message": "Need coordinates or OSM object to lookup."}}
        if not self.places:
            return 200, {"error": "Unable to geocode"}
        best = min(self.places, key=lambda p: float(haversine_km(lat, lon, p.lat, p.lon)))
        if float(haversine_km(lat, lon, best.lat, best.lon)) > self.reverse_max_km:
            return 200, {"error": "Unable to geocode"}
        return 200, _place_json(best, {**params, "addressdetails": params.get("addressdetails", "1")})

    def interpret(self, ql: str) -> tuple[int, Any]:
        if "[out:json]" not in ql:
            return 400, _overpass_error("only [out:json] is supported by the fake server")
        around = re.search(r"around:([\d.]+),\s*(-?[\d.]+),\s*(-?[\d.]+)", ql)
        if around is None:
            return 400, _overpass_error("the fake server needs an (around:R,lat,lon) filter")
        radius_m, lat, lon = (float(g) for g in around.groups())
        try:
            filters = _tag_filters(ql)
        except re.error as exc:
            return 400, _overpass_error(f"invalid regular expression: {exc}")
        limit_match = re.search(r"\bout\b[^;]*?(\d+)\s*;", ql)
        types = {t for t in ("node", "way") if re.search(rf"\b{t}\s*\(", ql)}
        elements = []
        for f in self.features:
            tags = f.all_tags
            if f.osm_type not in types or haversine_km(lat, lon, f.lat, f.lon) * 1000.0 > radius_m:
                continue
            if all(any(k.search(key) and v.search(val) for key, val in tags.items()) for k, v in filters):
                elements.append(_element_json(f, tags))
        if limit_match:
            elements = elements[: int(limit_match.group(1))]
        return 200, {
            "version": 0.6,
            "generator": "Overpass API 0.7.62.1 (fake)",
            "osm3s": {"timestamp_osm_base": "2025-01-01T00:00:00Z", "copyright": OVERPASS_COPYRIGHT},
            "elements": elements,
        }


def _floats(text: str, n: int) -> tuple[float, ...] | None:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        return None
    return values if len(values) == n else None


def _in_box(lat: float, lon: float, box: Sequence[float]) -> bool:
    lon1, lat1, lon2, lat2 = box
    return min(lat1, lat2) <= lat <= max(lat1, lat2) and min(lon1, lon2) <= lon <= max(lon1, lon2)


def _place_json(p: CannedPlace, params: dict[str, str]) -> dict[str, Any]:
    v2 = params.get("format", "jsonv2") == "jsonv2"
    d = 0.01
    out: dict[str, Any] = {
        "place_id": p.osm_id + 100_000,
        "licence": LICENCE,
        "osm_type": p.osm_type,
        "osm_id": p.osm_id,
        "lat": f"{p.lat:.7f}",
        "lon": f"{p.lon:.7f}",
        ("category" if v2 else "class"): p.osm_class,
        "type": p.osm_value,
        "place_rank": 16,
        "importance": p.importance,
        "addresstype": p.osm_value,
        "name": p.name,
        "display_name": p.display_name or f"{p.name}, {p.country_code.upper()}",
    }
    if params.get("addressdetails") == "1":
        out["address"] = {p.osm_value: p.name, "country_code": p.country_code.lower()}
    out["boundingbox"] = [f"{v:.7f}" for v in (p.lat - d, p.lat + d, p.lon - d, p.lon + d)]
    return out


def _element_json(f: CannedFeature, tags: dict[str, str]) -> dict[str, Any]:
    if f.osm_type == "node":
        return {"type": "node", "id": f.osm_id, "lat": f.lat, "lon": f.lon, "tags": tags}
    return {
        "type": "way",
        "id": f.osm_id,
        "center": {"lat": f.lat, "lon": f.lon},
        "nodes": [f.osm_id * 10, f.osm_id * 10 + 1],
        "tags": tags,
    }


_QL_STRING = r'"((?:[^"\\]|\\.)*)"'
_FILTER = re.compile(rf"\[(~?)(?:{_QL_STRING}|([\w:]+))~{_QL_STRING}(,\s*i)?\]")


def _ql_unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), text)


def _tag_filters(ql: str) -> list[tuple[re.Pattern[str], re.Pattern[str]]]:
    """``(key pattern, value pattern)`` of each regex tag filter; a plain key matches exactly."""
    filters = []
    for tilde, quoted_key, bare_key, value, nocase in _FILTER.findall(ql):
        key = _ql_unescape(quoted_key) if quoted_key else bare_key
        key_re = re.compile(key) if tilde else re.compile(f"^{re.escape(key)}$")
        filters.append((key_re, re.compile(_ql_unescape(value), re.IGNORECASE if nocase else 0)))
    return filters


def _overpass_error(message: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<html><body>\n'
        f'<p><strong style="color:#FF0000">Error</strong>: {message} </p>\n</body></html>\n'
    )


class _Handler(QuietHandler):
    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        owner = self.server.owner
        path, params, body = self.request_parts()
        if path == "/api/interpreter" and body:
            # Overpass takes a form body (data=...) or the bare query, as overpy sends it.
            params.update(
                dict(parse_qsl(body, keep_blank_values=True)) if body.startswith("data=") else {"data": body}
            )
        headers = {k.lower(): v for k, v in self.headers.items()}
        failure = owner._record(RecordedRequest(self.command, path, params, headers, time.monotonic(), body))
        time.sleep(owner.latency_s)
        if failure is not None:
            if failure.status is None:
                self.close_connection = True
                return
            extra = {} if failure.retry_after is None else {"Retry-After": f"{failure.retry_after:g}"}
            self.send_payload(failure.status, _overpass_error(f"scripted failure {failure.status}"), extra)
            return
        try:
            status, payload = self._route(path, params)
        except Exception as exc:  # a bug in the fake must fail the request, not the thread
            logger.exception("fake OSM server: answering %s failed", path)
            status, payload = 500, _overpass_error(f"the fake server raised {exc!r}")
        self.send_payload(status, payload)

    def _route(self, path: str, params: dict[str, str]) -> tuple[int, Any]:
        owner = self.server.owner
        if path in ("/search", "/reverse"):
            if params.get("format", "jsonv2") not in ("json", "jsonv2"):
                return 400, {
                    "error": {"code": 400, "message": "The fake server answers json and jsonv2 only."}
                }
            return owner.search(params) if path == "/search" else owner.reverse(params)
        if path == "/api/interpreter":
            if not params.get("data"):
                return 400, _overpass_error("no query found (send data=...)")
            return owner.interpret(params["data"])
        return 404, {"error": "Not Found"}


FakeOSMServer.handler = _Handler


__all__ = ["CannedFeature", "CannedPlace", "FakeOSMServer", "RecordedRequest"]
