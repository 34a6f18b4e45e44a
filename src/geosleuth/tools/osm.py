"""OpenStreetMap tools for the planner's investigation step: Nominatim (geocoding) and Overpass.

Both follow the network tools' shared HTTP discipline (:class:`~geosleuth.tools.http_client.ToolClient`):
a per-server throttle (Nominatim's usage policy: at most 1 request/s, none in parallel), the
configured User-Agent and a timeout on every request, retries with backoff on connection errors,
429 (``Retry-After`` honoured) and 5xx, and an on-disk cache under ``cache_dir/tools/<service>/``.
When a service cannot answer, a call raises :class:`ToolUnavailableError`, which the planner records
as "tool could not run".

overpy's own ``Overpass.query`` sends no User-Agent and has no timeout, so requests go through our
transport and overpy parses the answers (``out center`` gives ways a centre point).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from geosleuth.config import Settings
from geosleuth.errors import ConfigError, MissingDependencyError, ToolQueryError
from geosleuth.errors import ToolUnavailableError as ToolUnavailableError  # callers catch it from here
from geosleuth.geo import point_distance_km
from geosleuth.schemas import BoxRegion, LatLon
from geosleuth.tools.http_client import Failure, ToolClient, network_reason, send

logger = logging.getLogger(__name__)

DEFAULT_KINDS: tuple[str, ...] = ("shop", "amenity", "tourism", "highway", "railway", "place")
NAME_KEYS = r"^(name|name:.+|alt_name|official_name|short_name)$"
_KEEP_TAGS = {"brand", "operator", "wikidata", "wikipedia", "cuisine", "website"}


# --- answers ------------------------------------------------------------------------------------


class GeocodeHit(BaseModel):
    """One Nominatim result."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="The place's own name (first part of display_name if none).")
    display_name: str = Field(description="Full label: name, admin areas, country.")
    point: LatLon
    country_code: str | None = Field(default=None, description="ISO 3166-1 alpha-2, capitals.")
    osm_type: str | None = Field(default=None, description="node, way or relation.")
    osm_id: int | None = None
    osm_class: str | None = Field(default=None, description="OSM main key: place, amenity, boundary...")
    osm_value: str | None = Field(default=None, description="Its value: city, cafe, administrative...")
    importance: float | None = Field(default=None, description="Nominatim's 0..1 prominence estimate.")
    box: BoxRegion | None = Field(default=None, description="The place's bounding box.")


class OSMFeature(BaseModel):
    """A named OpenStreetMap node or way found near a point."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    osm_type: Literal["node", "way"]
    osm_id: int
    name: str = Field(description="Its `name` tag, else the name:* tag that matched.")
    tags: dict[str, str] = Field(description="Names, kind keys (shop, amenity...), address and brand tags.")
    point: LatLon = Field(description="The node, or the way's centre.")
    distance_m: float = Field(ge=0, description="Geodesic distance from the search point.")


def _clean_name(name: str) -> str:
    cleaned = " ".join(str(name).split())
    if not cleaned:
        raise ToolQueryError(f"name must contain some text, got {name!r}")
    return cleaned


# --- Nominatim ----------------------------------------------------------------------------------


def _geopy_adapter(*, proxies: Any, ssl_context: Any) -> Any:
    # geopy's requests adapter retries connection errors twice by itself; ours are the only retries.
    from geopy.adapters import RequestsAdapter, URLLibAdapter

    if RequestsAdapter.is_available:
        return RequestsAdapter(proxies=proxies, ssl_context=ssl_context, max_retries=0)
    return URLLibAdapter(proxies=proxies, ssl_context=ssl_context)


def _geopy_failure(exc: Exception) -> Failure:
    from geopy import exc as gexc
    from geopy.adapters import AdapterHTTPError

    cause = exc.__cause__
    status = cause.status_code if isinstance(cause, AdapterHTTPError) else None
    reason = f"HTTP {status}" if status else network_reason(exc)
    if isinstance(exc, gexc.GeocoderRateLimited):
        return Failure(reason + " (rate limited)", retryable=True, retry_after=exc.retry_after, status=status)
    if isinstance(exc, gexc.GeocoderTimedOut | gexc.GeocoderUnavailable | gexc.GeocoderParseError):
        return Failure(reason, retryable=True, status=status)
    if isinstance(
        exc, gexc.GeocoderQueryError | gexc.GeocoderAuthenticationFailure | gexc.GeocoderQuotaExceeded
    ):
        return Failure(reason, retryable=False, status=status)
    if isinstance(exc, gexc.GeocoderInsufficientPrivileges):
        return Failure(
            reason + " (refused: check tools.user_agent and the usage policy)", retryable=False, status=status
        )
    return Failure(reason, retryable=status is None or status >= 500, status=status)


def _hit(raw: dict[str, Any]) -> GeocodeHit:
    display = str(raw.get("display_name") or "")
    code = (raw.get("address") or {}).get("country_code")
    box = None
    bb = raw.get("boundingbox")
    if isinstance(bb, list) and len(bb) == 4:
        s, n, w, e = (float(v) for v in bb)
        box = BoxRegion(south=s, north=n, west=w, east=e)
    return GeocodeHit(
        name=str(raw.get("name") or display.split(",")[0]),
        display_name=display,
        point=LatLon(lat=float(raw["lat"]), lon=float(raw["lon"])),
        country_code=code.upper() if isinstance(code, str) and code else None,
        osm_type=raw.get("osm_type"),
        osm_id=int(raw["osm_id"]) if raw.get("osm_id") is not None else None,
        osm_class=raw.get("class", raw.get("category")),
        osm_value=raw.get("type"),
        importance=float(raw["importance"]) if raw.get("importance") is not None else None,
        box=box,
    )


def _viewbox(near: LatLon, km: float) -> list[tuple[float, float]]:
    dlat = km / 111.32
    dlon = min(180.0, km / (111.32 * max(math.cos(math.radians(near.lat)), 0.01)))
    return [
        (max(-90.0, near.lat - dlat), max(-180.0, near.lon - dlon)),
        (min(90.0, near.lat + dlat), min(180.0, near.lon + dlon)),
    ]


class Geocoder(ToolClient):
    """Nominatim through geopy, with the shared throttle, retries and cache."""

    service = "nominatim"

    def _setup(self) -> None:
        from geopy.exc import ConfigurationError
        from geopy.geocoders import Nominatim

        parts = urlsplit(self.url)
        try:
            self._nominatim = Nominatim(
                domain=parts.netloc + parts.path,
                scheme=parts.scheme,
                user_agent=self.tools.user_agent,
                timeout=self.tools.timeout_s,
                adapter_factory=_geopy_adapter,
            )
        except ConfigurationError as exc:
            raise ConfigError(f"tools.user_agent = {self.tools.user_agent!r} is refused: {exc}") from exc

    def _run(self, call: Callable[[], Any]) -> Any:
        from geopy.exc import GeopyError

        try:
            found = call()
        except GeopyError as exc:
            raise _geopy_failure(exc) from exc
        if found is None:
            return None
        return [loc.raw for loc in found] if isinstance(found, list) else found.raw

    def geocode(
        self,
        name: str,
        *,
        country_codes: Sequence[str] | None = None,
        near: LatLon | None = None,
        near_km: float = 50.0,
        limit: int = 5,
    ) -> list[GeocodeHit]:
        """Places called ``name``, best first; only in ``country_codes`` (ISO alpha-2) and only
        within ``near_km`` of ``near`` when given."""
        query = _clean_name(name)
        if not 1 <= limit <= 50:
            raise ToolQueryError(f"limit must be between 1 and 50, got {limit!r}")
        codes = sorted({str(c).strip().lower() for c in country_codes or ()})
        bad = [c for c in codes if not (len(c) == 2 and c.isalpha())]
        if bad:
            raise ToolQueryError(f"country_codes must be ISO 3166-1 alpha-2 codes like 'fr', got {bad!r}")
        if near is not None and not near_km > 0:
            raise ToolQueryError(f"near_km must be positive, got {near_km!r}")
        box = None if near is None else [(round(a, 5), round(b, 5)) for a, b in _viewbox(near, near_km)]
        request = {"op": "search", "q": query, "countrycodes": codes, "viewbox": box, "limit": limit}
        kwargs: dict[str, Any] = {"exactly_one": False, "limit": limit, "addressdetails": True}
        if codes:
            kwargs["country_codes"] = codes
        if box is not None:
            kwargs.update(viewbox=box, bounded=True)
        raws = self._call(request, lambda: self._run(lambda: self._nominatim.geocode(query, **kwargs)))
        return [_hit(r) for r in raws or []]

    def reverse(self, point: LatLon, *, zoom: int | None = None) -> GeocodeHit | None:
        """The address at ``point`` (``zoom``: 3 country ... 18 building, the default), or None."""
        lat, lon = round(point.lat, 6), round(point.lon, 6)
        request = {"op": "reverse", "lat": lat, "lon": lon, "zoom": zoom}
        raw = self._call(
            request,
            lambda: self._run(lambda: self._nominatim.reverse((lat, lon), zoom=zoom, addressdetails=True)),
        )
        return _hit(raw) if raw else None


# --- Overpass -----------------------------------------------------------------------------------

_ERE_SPECIAL = set("\\.^$|?*+()[]{}")


def regex_literal(text: str) -> str:
    """``text`` as a POSIX extended regular expression that matches it literally."""
    return "".join("\\" + ch if ch in _ERE_SPECIAL else ch for ch in text)


def ql_string(text: str) -> str:
    """``text`` as an Overpass QL double-quoted string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def build_find_named_query(
    name: str,
    near: LatLon,
    radius_m: int,
    kinds: Sequence[str] = DEFAULT_KINDS,
    *,
    timeout_s: int = 25,
    limit: int = 50,
) -> str:
    """Overpass QL for nodes and ways within ``radius_m`` of ``near`` that carry one of the
    ``kinds`` keys and whose name (or name:*, alt_name...) contains ``name``, ignoring case."""
    if not 1 <= radius_m <= 50_000:
        raise ToolQueryError(f"radius_m must be between 1 and 50000 metres, got {radius_m!r}")
    bad = [k for k in kinds if not re.fullmatch(r"[a-z0-9_:]+", k)]
    if bad:
        raise ToolQueryError(f"kinds must be OSM keys like 'shop' or 'amenity', got {bad!r}")
    around = f"(around:{int(radius_m)},{near.lat:.6f},{near.lon:.6f})"
    kind_filter = f'[~{ql_string("^(" + "|".join(kinds) + ")$")}~"."]' if kinds else ""
    name_filter = f"[~{ql_string(NAME_KEYS)}~{ql_string(regex_literal(_clean_name(name)))},i]"
    body = "\n".join(f"  {t}{around}{kind_filter}{name_filter};" for t in ("node", "way"))
    return f"[out:json][timeout:{max(1, int(timeout_s))}];\n(\n{body}\n);\nout center qt {int(limit)};"


def _overpy() -> Any:
    try:
        import overpy
    except ImportError as exc:
        raise MissingDependencyError("overpy", "agents", "The Overpass tool") from exc
    return overpy


class Overpass(ToolClient):
    """The Overpass API through overpy: named features near a point."""

    service = "overpass"

    def _setup(self) -> None:
        self._api = _overpy().Overpass(url=self.url)

    def _post(self, query: str) -> Any:
        overpy = _overpy()
        raw = send(
            self.url,
            user_agent=self.tools.user_agent,
            timeout_s=self.tools.timeout_s,
            data=urlencode({"data": query}).encode(),
            headers={"Accept": "application/json"},
        ).body
        try:
            self._api.parse_json(raw)  # raises on Overpass runtime errors reported as "remark"
            return json.loads(raw)
        except overpy.exception.OverPyException as exc:
            raise Failure(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        except ValueError as exc:
            raise Failure(f"the answer is not Overpass JSON ({exc})", retryable=True) from exc

    def find_named(
        self,
        name: str,
        near: LatLon,
        radius_m: int | None = None,
        kinds: Sequence[str] = DEFAULT_KINDS,
        *,
        limit: int = 50,
    ) -> list[OSMFeature]:
        """Features within ``radius_m`` (default tools.overpass_radius_m) of ``near`` whose name
        contains ``name`` (any case, any name:* tag), nearest first."""
        radius = self.tools.overpass_radius_m if radius_m is None else radius_m
        query = build_find_named_query(
            name, near, radius, kinds, timeout_s=int(self.tools.timeout_s * 0.9), limit=limit
        )
        data = self._call({"op": "find_named", "ql": query}, lambda: self._post(query))
        result = _overpy().Result.from_json(data, api=self._api)
        wanted, names = _clean_name(name).casefold(), re.compile(NAME_KEYS)
        features = []
        for element, osm_type in [(n, "node") for n in result.nodes] + [(w, "way") for w in result.ways]:
            lat = element.lat if osm_type == "node" else element.center_lat
            lon = element.lon if osm_type == "node" else element.center_lon
            if lat is None or lon is None:
                continue
            tags = {str(k): str(v) for k, v in element.tags.items()}
            matched = [v for k, v in tags.items() if names.match(k) and wanted in v.casefold()]
            keep = {
                k: v
                for k, v in tags.items()
                if names.match(k) or k in kinds or k in _KEEP_TAGS or k.startswith("addr:")
            }
            point = LatLon(lat=float(lat), lon=float(lon))
            name_ = tags.get("name") or (matched[0] if matched else "")
            distance_m = point_distance_km(near, point) * 1000.0
            features.append(
                OSMFeature(
                    osm_type=osm_type,
                    osm_id=int(element.id),
                    name=name_,
                    tags=keep,
                    point=point,
                    distance_m=distance_m,
                )
            )
        return sorted(features, key=lambda f: f.distance_m)


# --- construction from settings -----------------------------------------------------------------


@dataclass(frozen=True)
class OSMTools:
    """The planner's OpenStreetMap tools. ``overpass`` is None when overpy is not installed."""

    geocoder: Geocoder
    overpass: Overpass | None


def unavailable_reason(settings: Settings) -> str | None:
    """Why :func:`make_tools` gives no tools, or None when it does."""
    if settings.offline:
        return "offline mode is on (settings.offline / GEOSLEUTH_OFFLINE); OpenStreetMap tools are off"
    return None


def make_tools(settings: Settings) -> OSMTools | None:
    """The OSM tools configured by ``settings``, or None (the reason is logged) when offline."""
    reason = unavailable_reason(settings)
    if reason is not None:
        logger.info("no OpenStreetMap tools: %s", reason)
        return None
    geocoder = Geocoder(settings.tools, cache_dir=settings.cache_dir)
    try:
        overpass: Overpass | None = Overpass(settings.tools, cache_dir=settings.cache_dir)
    except MissingDependencyError as exc:
        logger.info("no Overpass tool: %s", exc)
        overpass = None
    return OSMTools(geocoder=geocoder, overpass=overpass)
