"""Distances and small geometric helpers, vectorised over numpy arrays.

Two distance conventions exist in the literature and both are offered:

* ``"geodesic"``: WGS-84 ellipsoid (GeoCLIP, G3, GeoRanker). Default.
* ``"sphere"``: great circle on a sphere, R = 6371 km unless given (GeoEstimation, ECCV'18).

The geodesic is Vincenty's inverse formula run on whole arrays at once; the few pairs where it does
not converge (nearly antipodal points) fall back to Karney's algorithm from geographiclib, so every
pair gets an answer accurate to well under a millimetre.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geosleuth.schemas import LatLon

EARTH_RADIUS_KM = 6371.0
WGS84_A = 6378137.0
WGS84_F = 1 / 298.257223563
WGS84_B = WGS84_A * (1 - WGS84_F)

DistanceMethod = Literal["geodesic", "sphere"]

FloatArray = NDArray[np.float64]


def _as_float(x: ArrayLike) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


def haversine_km(
    lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike, radius_km: float = EARTH_RADIUS_KM
) -> FloatArray:
    """Great-circle distance on a sphere, broadcasting over its arguments (degrees in, km out)."""
    if not radius_km > 0:
        raise ValueError(f"radius_km must be positive, got {radius_km!r}")
    p1, p2 = np.radians(_as_float(lat1)), np.radians(_as_float(lat2))
    dphi = p2 - p1
    dlmb = np.radians(_as_float(lon2) - _as_float(lon1))
    h = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * radius_km * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def geodesic_km(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike) -> FloatArray:
    """WGS-84 ellipsoidal distance, broadcasting over its arguments (degrees in, km out)."""
    la1, lo1, la2, lo2 = np.broadcast_arrays(
        _as_float(lat1), _as_float(lon1), _as_float(lat2), _as_float(lon2)
    )
    shape = la1.shape
    la1, lo1, la2, lo2 = (a.ravel() for a in (la1, lo1, la2, lo2))
    out = np.empty(la1.shape, dtype=np.float64)

    f, a, b = WGS84_F, WGS84_A, WGS84_B
    u1 = np.arctan((1 - f) * np.tan(np.radians(la1)))
    u2 = np.arctan((1 - f) * np.tan(np.radians(la2)))
    big_l = np.radians(((lo2 - lo1 + 180.0) % 360.0) - 180.0)
    su1, cu1, su2, cu2 = np.sin(u1), np.cos(u1), np.sin(u2), np.cos(u2)

    lam = big_l.copy()
    active = np.ones(lam.shape, dtype=bool)
    converged = np.zeros(lam.shape, dtype=bool)
    sin_sigma = cos_sigma = sigma = cos2_alpha = cos_2sm = np.zeros_like(lam)
    for _ in range(200):
        sl, cl = np.sin(lam), np.cos(lam)
        sin_sigma = np.sqrt((cu2 * sl) ** 2 + (cu1 * su2 - su1 * cu2 * cl) ** 2)
        cos_sigma = su1 * su2 + cu1 * cu2 * cl
        sigma = np.arctan2(sin_sigma, cos_sigma)
        with np.errstate(invalid="ignore", divide="ignore"):
            sin_alpha = np.where(sin_sigma == 0, 0.0, cu1 * cu2 * sl / sin_sigma)
            cos2_alpha = 1 - sin_alpha**2
            cos_2sm = np.where(cos2_alpha == 0, 0.0, cos_sigma - 2 * su1 * su2 / cos2_alpha)
        c = f / 16 * cos2_alpha * (4 + f * (4 - 3 * cos2_alpha))
        lam_new = big_l + (1 - c) * f * sin_alpha * (
            sigma + c * sin_sigma * (cos_2sm + c * cos_sigma * (-1 + 2 * cos_2sm**2))
        )
        done = np.abs(lam_new - lam) < 1e-12
        lam = np.where(active, lam_new, lam)
        converged |= done & active
        active &= ~done
        if not active.any():
            break

    u_sq = cos2_alpha * (a**2 - b**2) / b**2
    big_a = 1 + u_sq / 16384 * (4096 + u_sq * (-768 + u_sq * (320 - 175 * u_sq)))
    big_b = u_sq / 1024 * (256 + u_sq * (-128 + u_sq * (74 - 47 * u_sq)))
    d_sigma = (
        big_b
        * sin_sigma
        * (
            cos_2sm
            + big_b
            / 4
            * (
                cos_sigma * (-1 + 2 * cos_2sm**2)
                - big_b / 6 * cos_2sm * (-3 + 4 * sin_sigma**2) * (-3 + 4 * cos_2sm**2)
            )
        )
    )
    out[:] = b * big_a * (sigma - d_sigma) / 1000.0
    out[sin_sigma == 0] = 0.0

    bad = ~converged | ~np.isfinite(out)
    if bad.any():
        from geographiclib.geodesic import Geodesic

        g = Geodesic.WGS84
        for i in np.flatnonzero(bad):
            out[i] = g.Inverse(la1[i], lo1[i], la2[i], lo2[i], Geodesic.DISTANCE)["s12"] / 1000.0
    return out.reshape(shape)


def distance_km(
    lat1: ArrayLike,
    lon1: ArrayLike,
    lat2: ArrayLike,
    lon2: ArrayLike,
    method: DistanceMethod = "geodesic",
    radius_km: float = EARTH_RADIUS_KM,
) -> FloatArray:
    """Distance by the named convention; see the module docstring."""
    if method == "geodesic":
        return geodesic_km(lat1, lon1, lat2, lon2)
    if method == "sphere":
        return haversine_km(lat1, lon1, lat2, lon2, radius_km=radius_km)
    raise ValueError(f"method must be 'geodesic' or 'sphere', got {method!r}")


def point_distance_km(a: LatLon, b: LatLon, method: DistanceMethod = "geodesic") -> float:
    """Distance between two points."""
    return float(distance_km(a.lat, a.lon, b.lat, b.lon, method=method))


def destination(
    lat: ArrayLike,
    lon: ArrayLike,
    bearing_deg: ArrayLike,
    distance_km: ArrayLike,
    radius_km: float = EARTH_RADIUS_KM,
) -> tuple[FloatArray, FloatArray]:
    """Where a great circle from (lat, lon) leads after ``distance_km`` on ``bearing_deg`` (clockwise
    from north), broadcasting over its arguments. Longitudes come back in [-180, 180)."""
    if not radius_km > 0:
        raise ValueError(f"radius_km must be positive, got {radius_km!r}")
    p1, l1 = np.radians(_as_float(lat)), np.radians(_as_float(lon))
    theta = np.radians(_as_float(bearing_deg))
    delta = _as_float(distance_km) / radius_km
    sin_p2 = np.sin(p1) * np.cos(delta) + np.cos(p1) * np.sin(delta) * np.cos(theta)
    p2 = np.arcsin(np.clip(sin_p2, -1.0, 1.0))
    l2 = l1 + np.arctan2(np.sin(theta) * np.sin(delta) * np.cos(p1), np.cos(delta) - np.sin(p1) * np.sin(p2))
    return np.degrees(p2), (np.degrees(l2) + 180.0) % 360.0 - 180.0


def latlon_arrays(points: Sequence[LatLon]) -> tuple[FloatArray, FloatArray]:
    """Split points into latitude and longitude arrays."""
    return (
        np.fromiter((p.lat for p in points), dtype=np.float64, count=len(points)),
        np.fromiter((p.lon for p in points), dtype=np.float64, count=len(points)),
    )


def to_unit_vectors(lat: ArrayLike, lon: ArrayLike) -> FloatArray:
    """Points on the unit sphere, shape (n, 3); chord distance is monotone in great-circle distance."""
    la, lo = np.radians(_as_float(lat)), np.radians(_as_float(lon))
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def chord_to_km(chord: ArrayLike, radius_km: float = EARTH_RADIUS_KM) -> FloatArray:
    """Convert a chord length on the unit sphere into a great-circle distance in km."""
    return 2 * radius_km * np.arcsin(np.clip(_as_float(chord) / 2, 0.0, 1.0))
