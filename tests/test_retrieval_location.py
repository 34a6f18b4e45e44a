import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip(
    "geoclip", reason="geoclip is installed by the setup command: pip install --no-deps geoclip==1.3.0"
)

from geosleuth.retrieval.location import GeoCLIPLocationEncoder, equal_earth, geoclip_logit_scale  # noqa: E402


@pytest.fixture(scope="module")
def encoder():
    return GeoCLIPLocationEncoder()


def globe_points(n=1200, seed=0):
    rng = np.random.default_rng(seed)
    # uniform on the sphere, plus the poles, the antimeridian and the prime meridian
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    lon = rng.uniform(-180, 180, n)
    edges = [
        (90, 0),
        (-90, 0),
        (90, 180),
        (-90, -180),
        (0, 180),
        (0, -180),
        (45, 179.9999),
        (45, -179.9999),
        (0, 0),
        (-33.9, 151.2),
    ]
    return np.vstack([np.column_stack([lat, lon]), np.array(edges)]).astype(np.float32)


def test_matches_the_reference_geoclip_encoder(encoder):
    from geoclip import LocationEncoder

    ref = LocationEncoder().eval()  # loads the same shipped weights
    pts = torch.from_numpy(globe_points())
    with torch.no_grad():
        ours, theirs = encoder.features(pts).numpy(), ref(pts).numpy()
    assert len(pts) >= 1000
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_encode_is_normalised_batched_and_order_independent(encoder):
    pts = globe_points(300, seed=1)
    a = encoder.encode(pts)
    assert a.shape == (len(pts), 512) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    encoder.batch_size = 7  # many small batches give the same answer
    try:
        np.testing.assert_allclose(encoder.encode(pts), a, atol=5e-5)  # float32 GEMM blocking differs
    finally:
        encoder.batch_size = 4096
    np.testing.assert_allclose(encoder.encode(pts[::-1]), a[::-1], atol=5e-5)


def test_nearby_points_are_more_similar_than_far_ones(encoder):
    paris, versailles, tokyo = encoder.encode([[48.8566, 2.3522], [48.8049, 2.1204], [35.6895, 139.6917]])
    assert paris @ versailles > paris @ tokyo


def test_invalid_points_are_refused(encoder):
    with pytest.raises(ValueError, match="point 1"):
        encoder.encode([[0, 0], [91, 0]])
    with pytest.raises(ValueError, match="not a valid"):
        encoder.encode([[np.nan, 0]])


def test_equal_earth_is_symmetric():
    p = equal_earth(torch.tensor([[30.0, 60.0], [-30.0, -60.0]]))
    assert torch.allclose(p[0], -p[1])


def test_fingerprint_and_temperature(encoder):
    assert len(encoder.fingerprint) == 64
    assert geoclip_logit_scale() == pytest.approx(np.exp(3.681), rel=1e-3)
