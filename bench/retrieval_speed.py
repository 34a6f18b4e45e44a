"""Location encoder throughput, GPS gallery start-up and top-k latency, and what refinement gains.

    .venv/bin/python bench/retrieval_speed.py [--points 20000] [--queries 1000] [--truth 300]

* Location encoder: points/s on CPU (GeoCLIP's weights from the wheel).
* Gallery (GeoCLIP's 100K): start-up from the embedding cache vs encoding the gallery, which is
  what `geoclip.predict` pays on every call; top-k ms per query, single and batched.
* Refinement: with no CLIP ViT-L/14 weights here, the "images" are the location embeddings of true
  points (a perfect image encoder). That isolates the gallery's resolution: how far its best point
  is from the truth, with and without re-scoring rings of points around the top 3.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from geosleuth.geo import geodesic_km
from geosleuth.retrieval.gallery import GalleryRetriever, GPSGallery
from geosleuth.retrieval.location import GeoCLIPLocationEncoder, geoclip_logit_scale


def median_time(fn, repeats: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--truth", type=int, default=300)
    args = ap.parse_args()

    enc = GeoCLIPLocationEncoder()
    rng = np.random.default_rng(0)
    pts = np.column_stack(
        [np.degrees(np.arcsin(rng.uniform(-1, 1, args.points))), rng.uniform(-180, 180, args.points)]
    )
    t = median_time(lambda: enc.encode(pts))
    print(f"location encoder : {args.points / t:,.0f} points/s ({args.points:,} points, median of 3, CPU)")

    gallery = GPSGallery.geoclip()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        t0 = time.perf_counter()
        retriever = GalleryRetriever(gallery, enc, logit_scale=geoclip_logit_scale(), cache_dir=cache)
        cold = time.perf_counter() - t0
        warm = median_time(
            lambda: GalleryRetriever(gallery, enc, logit_scale=geoclip_logit_scale(), cache_dir=cache)
        )
        print(
            f"gallery start-up : {warm * 1000:.0f} ms from the cache, {cold:.1f} s encoding 100K points "
            f"(geoclip.predict pays the latter on every call): {cold / warm:,.0f}x"
        )

        q = enc.encode(gallery.coords[rng.integers(0, len(gallery), args.queries)])
        single = median_time(lambda: [retriever.top_k(q[i], k=10) for i in range(50)]) / 50
        batched = median_time(lambda: retriever.top_k(q, k=10)) / len(q)
        print(
            f"gallery top-10   : {single * 1000:.1f} ms/query single, {batched * 1000:.2f} ms/query batched ({len(q)} at once)"
        )

        # refinement: truth = populated places (GeoNames via the gazetteer), weighted by population
        from geosleuth.gazetteer import Gazetteer

        a = Gazetteer()._arrays
        w = np.sqrt(np.maximum(a["pop"], 1).astype(float))
        pick = rng.choice(len(w), size=args.truth, replace=False, p=w / w.sum())
        truth = np.column_stack([a["lat"][pick], a["lon"][pick]])
        emb = enc.encode(truth)
        tops = retriever.top_k(emb, k=3)
        before, after = [], []
        t0 = time.perf_counter()
        for t_, e, top in zip(truth, emb, tops, strict=True):
            refined = retriever.refine(e, top)
            before.append(float(geodesic_km(top[0].point.lat, top[0].point.lon, *t_)))
            after.append(float(geodesic_km(refined[0].point.lat, refined[0].point.lon, *t_)))
        refine_ms = (time.perf_counter() - t0) / len(truth) * 1000
        b, r = np.array(before), np.array(after)
        print(
            f"refinement       : {refine_ms:.0f} ms/image; with perfect image embeddings of {len(truth)} populated places:"
        )
        for km in (1, 25):
            print(
                f"                   within {km:>2} km: gallery {np.mean(b <= km):.1%} -> refined {np.mean(r <= km):.1%}"
            )
        print(
            f"                   median error: gallery {np.median(b):.1f} km -> refined {np.median(r):.1f} km"
        )


if __name__ == "__main__":
    main()
