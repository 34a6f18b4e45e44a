"""Build ``src/geosleuth/data/brands.json.gz``: chain and network names, and the countries they
operate in, from OpenStreetMap's name-suggestion-index (NSI, BSD-3-Clause).

NSI lists the brands, operators and transit networks that OSM mappers tag (about 50,000), each
with a ``locationSet``: the countries (ISO codes), sub-country areas (``gb-sct``), UN M49 regions
(``150`` Europe, ``001`` the world), custom areas (``aldi-sued.geojson``) or circles
(``[lon, lat, km]``) it is found in. Here each name becomes its ``name_key`` and the set of
countries, or ``*`` for a name found in more than :data:`WIDESPREAD` countries or world-wide: such a
name says nothing about the country, but it is a brand, so a town of the same name read in an
image ("TOYOTA" on a dealer's sign) is less likely the town.

Kept: the ``brands`` and ``transit`` trees, and the ``operators`` of things a photo shows with a
name on them (shops, amenities, tourism, railways, public transport); not power lines, pipes and
survey points. Custom areas and circles are placed by their centre (reverse geocoded with the
project's gazetteer); M49 regions by the gazetteer's continents. Excluded areas are ignored (the
set only grows, which weakens the clue, never sharpens it wrongly).

A one-word name that is also a common word ("Next", "Central", "Target", "Dia") is marked
``common`` (its Zipf frequency per ``wordfreq`` is at least :data:`COMMON_ZIPF` in one of
:data:`COMMON_LANGUAGES`, or :data:`COMMON_ZIPF_EN` in English): on a sign it is more often the word
than the chain, so it gives no country evidence. ``wordfreq`` is needed only here, at build time.

    pip install wordfreq==3.1.1   # build time only
    # the package from the npm registry (22 MB), once:
    curl -sO https://registry.npmjs.org/name-suggestion-index/-/name-suggestion-index-8.0.20260918.tgz
    PYTHONPATH=src python scripts/build_brands.py name-suggestion-index-8.0.20260918.tgz
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tarfile
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "geosleuth" / "data" / "brands.json.gz"
# A name in more countries than this is "widespread": no country evidence.
WIDESPREAD = 25
COMMON_ZIPF = 4.5
COMMON_ZIPF_EN = 4.3
COMMON_LANGUAGES = ("en", "fr", "de", "es", "it", "pt", "nl", "sv", "pl", "ru", "tr")
OPERATOR_KEEP = ("amenity", "shop", "tourism", "railway", "public_transport", "leisure", "healthcare")
# UN M49 regions NSI uses, as continents of the gazetteer (Channel Islands: their two codes).
M49_CONTINENTS = {
    "150": ("EU",),
    "002": ("AF",),
    "202": ("AF",),
    "142": ("AS",),
    "145": ("AS",),
    "005": ("SA",),
    "419": ("SA", "NA"),
    "003": ("NA",),
    "029": ("NA",),
    "009": ("OC",),
}
M49_CODES = {"830": ("JE", "GG")}
NAMED_AREAS = {"conus": ("US",), "northern cyprus": ("CY",), "crimea": ("UA",), "mainland china": ("CN",)}


def _read(package: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    with tarfile.open(package) as tar:

        def load(name: str) -> Any:
            member = tar.extractfile(f"package/{name}")
            assert member is not None, name
            return json.load(member)

        nsi = load("dist/json/nsi.json")
        features = load("dist/json/featureCollection.json")
        version = load("package.json")["version"]
    return nsi, features, version


def _centre(coords: Any) -> tuple[float, float]:
    flat: list[tuple[float, float]] = []

    def walk(c: Any) -> None:
        if isinstance(c[0], int | float):
            flat.append((float(c[0]), float(c[1])))
        else:
            for x in c:
                walk(x)

    walk(coords)
    lon = sum(p[0] for p in flat) / len(flat)
    return sum(p[1] for p in flat) / len(flat), (lon + 180.0) % 360.0 - 180.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", type=Path, help="name-suggestion-index-*.tgz from the npm registry")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    from wordfreq import zipf_frequency

    from geosleuth.config import load_settings
    from geosleuth.gazetteer import Gazetteer, key_is_indexable, name_key
    from geosleuth.schemas import LatLon

    def common(key: str) -> bool:
        if " " in key:
            return False
        return zipf_frequency(key, "en") >= COMMON_ZIPF_EN or any(
            zipf_frequency(key, lang) >= COMMON_ZIPF for lang in COMMON_LANGUAGES
        )

    nsi, features, version = _read(args.package)
    gaz = Gazetteer(load_settings().cache_dir)
    by_continent: dict[str, list[str]] = defaultdict(list)
    for code, c in gaz.countries.items():
        by_continent[c.continent_code].append(code)
    area_points = {f["id"]: _centre(f["geometry"]["coordinates"]) for f in features["features"]}
    # custom areas and circles: one reverse geocode each
    points = sorted(area_points.items())
    places = gaz.reverse([LatLon(lat=la, lon=lo) for _, (la, lo) in points])
    area_country = {k: p.country_code for (k, _), p in zip(points, places, strict=True)}

    def countries(include: list[Any]) -> set[str] | None:
        """The countries of a locationSet's include list; None: world-wide."""
        out: set[str] = set()
        for x in include:
            if isinstance(x, list):
                place = gaz.reverse_one(LatLon(lat=float(x[1]), lon=float(x[0])))
                if place.country_code:
                    out.add(place.country_code)
                continue
            s = str(x).lower()
            if s == "001":
                return None
            if s.endswith(".geojson"):
                cc = area_country.get(s)
                if cc:
                    out.add(cc)
            elif s in M49_CONTINENTS:
                for cont in M49_CONTINENTS[s]:
                    out.update(by_continent[cont])
            elif s in M49_CODES:
                out.update(M49_CODES[s])
            elif s in NAMED_AREAS:
                out.update(NAMED_AREAS[s])
            elif len(s) == 2 and s.isalpha():
                out.add(s.upper())
            elif "-" in s and s.split("-")[0].isalpha() and len(s.split("-")[0]) == 2:
                out.add(s.split("-")[0].upper())
        return {c for c in out if c in gaz.countries}

    names: dict[str, set[str] | None] = {}
    display: dict[str, str] = {}
    kept = 0
    for path, tree in nsi["nsi"].items():
        root, *rest = path.split("/")
        if root == "flags" or (root == "operators" and (not rest or rest[0] not in OPERATOR_KEEP)):
            continue
        for item in tree["items"]:
            cs = countries(item.get("locationSet", {}).get("include", []))
            if cs is not None and not cs:
                continue
            kept += 1
            tags = item.get("tags", {})
            surfaces = {item.get("displayName", ""), *item.get("matchNames", [])}
            surfaces |= {v for k, v in tags.items() if k in ("name", "brand", "operator", "network")}
            surfaces |= {  # names in other languages and scripts: name:ru, brand:zh-Hans (not brand:wikidata)
                v
                for k, v in tags.items()
                if k.split(":")[0] in ("name", "brand")
                and k.count(":") == 1
                and not k.endswith(("wikidata", "wikipedia"))
            }
            for s in surfaces:
                key = name_key(s)
                if not key_is_indexable(key) or (len(key) < 4 and not any(ord(ch) > 0x2E80 for ch in key)):
                    continue
                if key in names:
                    old = names[key]
                    names[key] = None if old is None or cs is None else old | cs
                else:
                    names[key] = None if cs is None else set(cs)
                    display[key] = s
    table = {
        k: [display[k], "*" if v is None or len(v) > WIDESPREAD else " ".join(sorted(v))]
        + ([1] if common(k) else [])
        for k, v in sorted(names.items())
    }
    data = {
        "_about": {
            "source": f"name-suggestion-index {version} (github.com/osmlab/name-suggestion-index, BSD-3-Clause)",
            "licence": "BSD-3-Clause, Copyright name-suggestion-index contributors",
            "method": (
                "brands, transit networks and operators of shops/amenities/tourism/railways/public "
                "transport; per name_key: a display name and its countries, '*' for world-wide or in more "
                f"than {WIDESPREAD} countries, and a third item 1 for a one-word name that is a common word "
                f"(wordfreq Zipf >= {COMMON_ZIPF}, English >= {COMMON_ZIPF_EN}); built by scripts/build_brands.py"
            ),
            "items": kept,
        },
        "names": table,
    }
    raw = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    args.out.write_bytes(gzip.compress(raw, mtime=0))
    wide = sum(1 for v in table.values() if v[1] == "*")
    n_common = sum(1 for v in table.values() if len(v) > 2)
    print(
        f"{args.out}: {len(table)} names from {kept} items ({wide} widespread, {n_common} common words), "
        f"{args.out.stat().st_size / 1e6:.2f} MB",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
