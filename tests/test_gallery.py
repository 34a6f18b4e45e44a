import logging

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip(
    "geoclip", reason="geoclip is installed by the setup command: pip install --no-deps geoclip==1.3.0"
)

from geosleuth.errors import EmptySourceError
from geosleuth.geo import geodesic_km
from geosleuth.retrieval.gallery import GalleryRetriever, GPSGallery
from geosleuth.retrieval.location import GeoCLIPLocationEncoder, geoclip_logit_scale


class Counting:
    """Wraps a location encoder and counts the points it encodes."""

    def __init__(self, inner, fingerprint=None):
        self.inner, self.points = inner, 0
        self.name, self.dim = inner.name, inner.dim
        self._fp = fingerprint

    @property
    def fingerprint(self):
        return self._fp or self.inner.fingerprint

    def encode(self, pts):
        self.points += len(np.asarray(pts).reshape(-1, 2))
        return self.inner.encode(pts)


@pytest.fixture(scope="module")
def loc():
    return GeoCLIPLocationEncoder()


def grid_gallery(step=2.0):
    lat, lon = np.meshgrid(np.arange(-60, 70, step), np.arange(-180, 180, step), indexing="ij")
    return GPSGallery(np.column_stack([lat.ravel(), lon.ravel()]), name=f"grid{step}")


def test_geoclip_gallery_top_k_finds_the_point(loc, cache_dir):
    gallery = GPSGallery.geoclip()
    assert len(gallery) == 100_000
    retriever = GalleryRetriever(gallery, loc, logit_scale=geoclip_logit_scale(), cache_dir=cache_dir)
    picks = [17, 4242, 99_999]
    query = loc.encode(gallery.coords[picks])  # a "perfect image": exactly the location's embedding
    results = retriever.top_k(query, k=5)
    assert len(results) == 3
    for i, row in zip(picks, results, strict=True):
        assert (
            row[0].index == i
            or float(geodesic_km(row[0].point.lat, row[0].point.lon, *gallery.coords[i])) < 1
        )
        probs = [c.probability for c in row]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    single = retriever.top_k(query[1], k=5)[0]
    assert [c.index for c in single] == [c.index for c in results[1]]  # batching changes nothing
    with pytest.raises(ValueError, match="k must be between"):
        retriever.top_k(query, k=0)


def test_embeddings_are_cached_and_stale_caches_rebuilt(loc, tmp_path, caplog):
    gallery = grid_gallery(6.0)
    first = Counting(loc)
    a = gallery.embeddings(first, tmp_path)
    assert first.points == len(gallery)
    again = Counting(loc)
    b = gallery.embeddings(again, tmp_path)
    assert again.points == 0 and np.array_equal(a, b)  # reused
    other = Counting(loc, fingerprint="f" * 64)  # another encoder's weights: another cache entry
    gallery.embeddings(other, tmp_path)
    assert other.points == len(gallery)
    # damage the cache file: it is rebuilt, with a warning, never used as is
    cached = next((tmp_path / "gallery").glob(f"{gallery.fingerprint[:16]}-{loc.fingerprint[:16]}.npy"))
    cached.write_bytes(cached.read_bytes()[:1000])
    damaged = Counting(loc)
    with caplog.at_level(logging.WARNING):
        c = gallery.embeddings(damaged, tmp_path)
    assert damaged.points == len(gallery) and np.array_equal(a, c)
    assert "rebuilding" in caplog.text


def test_user_gallery_files_and_weights(tmp_path, loc):
    csv = tmp_path / "g.csv"
    csv.write_text("Latitude,Longitude,weight\n48.85,2.35,10\n35.68,139.69,1\n-33.86,151.21,1\n")
    g = GPSGallery.from_file(csv)
    assert len(g) == 3 and g.weights is not None
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"lat": [48.85, 35.68], "lon": [2.35, 139.69]}), tmp_path / "g.parquet")
    assert len(GPSGallery.from_file(tmp_path / "g.parquet")) == 2
    # the weight is a prior: a query halfway between two points leans to the heavier one
    r = GalleryRetriever(g, loc, logit_scale=geoclip_logit_scale(), cache_dir=tmp_path)
    flat = GalleryRetriever(GPSGallery(g.coords), loc, logit_scale=geoclip_logit_scale(), cache_dir=tmp_path)
    q = loc.encode([[42.0, 70.0]])
    assert (
        r.top_k(q, 3)[0][0].probability >= flat.top_k(q, 3)[0][0].probability
        or r.top_k(q, 1)[0][0].index == 0
    )


@pytest.mark.parametrize(
    "text,words",
    [
        ("lat,lon\n", "no rows"),
        ("lat,lon\n10,20\n95,20\n", "row 3"),
        ("lat,lon\nten,20\n", "not numbers"),
        ("x1,x2\n1,2\n", "no latitude column"),
    ],
)
def test_bad_gallery_files(tmp_path, text, words):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises((ValueError, EmptySourceError), match=words):
        GPSGallery.from_file(path)
    with pytest.raises(ValueError, match="positive"):
        GPSGallery([[0, 0]], weights=[0])


def test_refinement_goes_below_gallery_spacing(loc, tmp_path):
    """A coarse 2-degree grid, and 'images' that are exactly their true location's embedding:
    the gallery alone is off by up to ~150 km; refinement around its best points gets closer."""
    gallery = grid_gallery(2.0)
    r = GalleryRetriever(gallery, loc, logit_scale=geoclip_logit_scale(), cache_dir=tmp_path)
    rng = np.random.default_rng(5)
    truth = np.column_stack([rng.uniform(-50, 60, 12), rng.uniform(-170, 170, 12)])
    q = loc.encode(truth)
    before, after = [], []
    for t, emb, top in zip(truth, q, r.top_k(q, 3), strict=True):
        refined = r.refine(emb, top, radii_km=(5, 15, 30, 60, 90), bearings=16)
        before.append(float(geodesic_km(top[0].point.lat, top[0].point.lon, *t)))
        after.append(float(geodesic_km(refined[0].point.lat, refined[0].point.lon, *t)))
        assert refined[0].logit >= top[0].logit
        assert sum(c.probability for c in refined) <= 1 + 1e-6
    assert np.median(after) < np.median(before)
