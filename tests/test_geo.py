import math

import numpy as np
import pytest
from geographiclib.geodesic import Geodesic

from geosleuth.geo import destination, distance_km, geodesic_km, haversine_km, point_distance_km
from geosleuth.schemas import LatLon


def test_haversine_known_distance_paris_london():
    # Great circle Paris (48.8566, 2.3522) to London (51.5074, -0.1278) on R = 6371 km: 343.5 km.
    assert haversine_km(48.8566, 2.3522, 51.5074, -0.1278) == pytest.approx(343.56, abs=0.05)


def test_sphere_radius_is_configurable_and_validated():
    d1 = haversine_km(0, 0, 0, 90, radius_km=6371.0)
    assert d1 == pytest.approx(math.pi / 2 * 6371.0)
    assert haversine_km(0, 0, 0, 90, radius_km=1.0) == pytest.approx(math.pi / 2)
    with pytest.raises(ValueError, match="radius_km"):
        haversine_km(0, 0, 1, 1, radius_km=0)


def test_geodesic_matches_karney_everywhere_including_antipodes_and_poles():
    rng = np.random.default_rng(7)
    lat1, lat2 = rng.uniform(-90, 90, 400), rng.uniform(-90, 90, 400)
    lon1, lon2 = rng.uniform(-180, 180, 400), rng.uniform(-180, 180, 400)
    # Hard cases: nearly antipodal (Vincenty does not converge), poles, antimeridian, identical points.
    lat1 = np.concatenate([lat1, [0.0, 0.5, 90.0, -90.0, 10.0, 45.0]])
    lon1 = np.concatenate([lon1, [0.0, 0.0, 0.0, 10.0, 179.9, 7.0]])
    lat2 = np.concatenate([lat2, [0.0, -0.5, -90.0, 90.0, 10.0, 45.0]])
    lon2 = np.concatenate([lon2, [179.7, 179.5, 0.0, 50.0, -179.9, 7.0]])
    ours = geodesic_km(lat1, lon1, lat2, lon2)
    ref = np.array(
        [
            Geodesic.WGS84.Inverse(a, b, c, d)["s12"] / 1000
            for a, b, c, d in zip(lat1, lon1, lat2, lon2, strict=True)
        ]
    )
    np.testing.assert_allclose(ours, ref, atol=1e-6)  # a millimetre


def test_distance_broadcasts_and_dispatches():
    d = distance_km(48.0, 2.0, np.array([48.0, 49.0, 50.0]), 2.0, method="sphere")
    assert d.shape == (3,)
    assert d[0] == 0.0 and d[1] < d[2]
    geo = distance_km(48.0, 2.0, 49.0, 2.0)
    sph = distance_km(48.0, 2.0, 49.0, 2.0, method="sphere")
    assert abs(geo - sph) < 1.0 and geo != sph  # one degree of latitude: 111.2 km either way, not equal
    with pytest.raises(ValueError, match="method"):
        distance_km(0, 0, 1, 1, method="manhattan")  # type: ignore[arg-type]


def test_point_distance():
    a, b = LatLon(lat=0, lon=0), LatLon(lat=0, lon=1)
    assert point_distance_km(a, b) == pytest.approx(111.32, abs=0.01)


def test_destination_travels_the_great_circle():
    lat, lon = destination(48.8566, 2.3522, np.array([0.0, 90.0, 180.0, 270.0]), 500.0)
    assert haversine_km(48.8566, 2.3522, lat, lon) == pytest.approx([500.0] * 4)
    assert lat[0] > 48.8566 > lat[2] and lon[1] > 2.3522 > lon[3]  # north, east, south, west
    assert lon[0] == pytest.approx(2.3522) and lon[2] == pytest.approx(2.3522)
    lat, lon = destination(0.0, 179.5, 90.0, 111.195)  # one degree east, across the antimeridian
    assert lat == pytest.approx(0.0, abs=1e-9) and lon == pytest.approx(-179.5, abs=1e-4)
    with pytest.raises(ValueError, match="radius_km"):
        destination(0, 0, 0, 1, radius_km=-1)
