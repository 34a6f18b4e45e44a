"""Neighbour index at scale: synthetic *clustered* embeddings (iid random vectors make recall
meaningless), built with the same code `geosleuth index build` uses, measured against exact search.

    .venv/bin/python bench/index_scale.py --n 1000000            # about 10 minutes on 2 cores
    .venv/bin/python bench/index_scale.py --n 200000 --kind flat # exact index, for comparison

Reports build time, peak RAM (build, and a fresh process that only opens and queries), disk,
queries/s (batched and single) and recall@20 against exact inner-product search, then extrapolates
linearly to MP16-Pro's 4.12M photos.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MP16 = 4_120_000


def clustered(n: int, dim: int, clusters: int, seed: int, spread: float = 0.6) -> np.ndarray:
    """Unit vectors around `clusters` random centres, float16: place-like structure, like CLIP
    features of photos from many places (cosine to their centre ~0.85)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float16)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        x = centres[rng.integers(0, clusters, m)] + spread * rng.standard_normal((m, dim)).astype(
            np.float32
        ) / np.sqrt(dim)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start : start + m] = x
    return out


def exact_top(db: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), k), dtype=np.int64)
    for start in range(0, len(db), 100_000):
        s = q @ np.asarray(db[start : start + 100_000], dtype=np.float32).T
        cand_s = np.concatenate([best_s, s], axis=1)
        cand_i = np.concatenate(
            [best_i, np.arange(start, start + s.shape[1])[None, :].repeat(len(q), 0)], axis=1
        )
        top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(cand_s, top, axis=1)
        best_i = np.take_along_axis(cand_i, top, axis=1)
    return best_i


def memory_mb() -> dict[str, float]:
    """This process's peak resident memory (VmHWM: since its exec, unlike ru_maxrss, which Linux
    carries over from the parent) and its anonymous memory now (not the page cache)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "RssAnon"):
            out[key] = int(value.split()[0]) / 1024
    return out


def build_child(folder: str, vectors: str, kind: str) -> None:
    """Runs in a fresh process: build from float16 vectors on disk, so its peak RAM is the build's."""
    from geosleuth.retrieval.index import index_from_arrays

    db = np.load(vectors, mmap_mode="r")
    rng = np.random.default_rng(3)
    lat, lon = rng.uniform(-60, 70, len(db)), rng.uniform(-180, 180, len(db))
    t0 = time.perf_counter()
    manifest = index_from_arrays(Path(folder), db, lat, lon, kind=kind)  # type: ignore[arg-type]
    print(
        json.dumps(
            {"build_s": time.perf_counter() - t0, "peak_mb": memory_mb()["VmHWM"], "manifest": manifest}
        )
    )


def query_child(folder: str, queries: str, k: int) -> None:
    """Runs in a fresh process: open the index and query it, so its peak RAM is the index's."""
    from geosleuth.retrieval.index import NeighbourIndex

    t0 = time.perf_counter()
    idx = NeighbourIndex(folder)
    open_s = time.perf_counter() - t0
    q = np.load(queries)
    idx._search_raw(q[:50], k)  # warm the page cache a little, as a running service would be
    t0 = time.perf_counter()
    _, ids = idx._search_raw(q, k)
    batched = time.perf_counter() - t0
    singles = []
    for row in q[:200]:
        t = time.perf_counter()
        idx._search_raw(row[None, :], k)
        singles.append(time.perf_counter() - t)
    np.save(queries + ".ids.npy", ids)
    mem = memory_mb()
    print(
        json.dumps(
            {
                "anon_rss_mb": mem["RssAnon"],
                "open_s": open_s,
                "batched_qps": len(q) / batched,
                "single_ms_median": statistics.median(singles) * 1000,
                "peak_rss_mb": mem["VmHWM"],
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--clusters", type=int, default=0, help="default: n / 50 (about 50 photos a place)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--kind", default="ivfpq", choices=["ivfpq", "flat"])
    ap.add_argument("--keep", type=Path, help="build here and keep it (default: a temporary folder)")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--build-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        query_child(args.child[0], args.child[1], int(args.child[2]))
        return
    if args.build_child:
        build_child(*args.build_child)
        return

    work = args.keep or Path(tempfile.mkdtemp(prefix="geosleuth-index-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    args.clusters = args.clusters or max(1, args.n // 50)
    t0 = time.perf_counter()
    db = clustered(args.n, args.dim, args.clusters, seed=1)
    q = clustered(args.queries, args.dim, args.clusters, seed=2).astype(np.float32)
    gen_s = time.perf_counter() - t0
    np.save(work / "db.npy", db)
    built = subprocess.run(
        [sys.executable, __file__, "--build-child", str(work / "index"), str(work / "db.npy"), args.kind],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(built.stdout.strip().splitlines()[-1])
    manifest, build_s, build_rss = report["manifest"], report["build_s"], report["peak_mb"]

    t0 = time.perf_counter()
    truth = exact_top(db, q, args.k)
    exact_s = time.perf_counter() - t0
    del db

    qpath = str(work / "queries.npy")
    np.save(qpath, q)
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(work / "index"), qpath, str(args.k)],
        capture_output=True,
        text=True,
        check=True,
    )
    child = json.loads(out.stdout.strip().splitlines()[-1])
    ids = np.load(qpath + ".ids.npy")
    recall = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(ids, truth, strict=True)]))

    files = manifest["index"]["files"]
    disk = sum(f["bytes"] for f in files.values())
    ram_only = sum(f["bytes"] for name, f in files.items() if name != "vectors.f16.npy")
    scale = MP16 / args.n
    params = {k: v for k, v in manifest["index"].items() if k not in ("files",)}
    print(f"index            : {params}")
    print(
        f"vectors          : {args.n:,} x {args.dim} (clustered, {args.clusters:,} centres), {args.queries} queries"
    )
    print(f"data generation  : {gen_s:.1f} s (not part of the build)")
    print(f"build            : {build_s:.1f} s   peak RSS {build_rss:.0f} MB")
    print(
        f"disk             : {disk / 1e6:.0f} MB ({ram_only / 1e6:.0f} MB index+metadata, rest float16 vectors for re-ranking)"
    )
    print(
        f"query process    : open {child['open_s']:.2f} s, peak RSS {child['peak_rss_mb']:.0f} MB "
        f"(of which anonymous at the end {child['anon_rss_mb']:.0f} MB; the rest is page cache of the mapped vectors)"
    )
    print(
        f"queries/s        : {child['batched_qps']:.0f} batched ({args.queries} at once), single {child['single_ms_median']:.2f} ms median"
    )
    print(f"recall@{args.k}        : {recall:.4f} against exact search ({exact_s:.1f} s brute force)")
    print(
        f"extrapolated to 4.12M (x{scale:.2f}, linear): build ~{build_s * scale / 60:.0f} min, disk ~{disk * scale / 1e9:.2f} GB, "
        f"index+metadata in RAM ~{ram_only * scale / 1e9:.2f} GB"
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
