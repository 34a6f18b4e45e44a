"""The neighbour index: geotagged photos embedded by an image encoder, searchable with FAISS.

Layout of an index folder::

    manifest.json        what built it (encoder id and weights fingerprint, dimension, source,
                         parameters), counts, skipped items by reason, file sizes and checksums
    shards/NNNNN.npz     embeddings (float16) and coordinates, one file per shard, written
                         atomically: a killed build resumes at the first missing shard
    skipped.jsonl        every item that was not indexed, with the reason
    index.faiss          exact inner product (small indexes) or IVF-PQ (large ones)
    vectors.f16.npy      IVF-PQ only: all embeddings in float16, memory-mapped, for exact re-ranking
    meta.npz, meta.sqlite coordinates (in RAM) and keys/place fields (read only for results)

Large indexes keep only 4-bit PQ codes in RAM; a query takes a short list from IVF-PQ (SIMD "fast
scan") and re-ranks it exactly against the float16 vectors on disk (the page cache serves the hot ones). Dissimilar
neighbours come from searching with the negated query, as G3 and Img2Loc do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geosleuth.errors import EmptySourceError, ImageInputError, IndexError_, MissingDependencyError
from geosleuth.retrieval.base import ImageEncoder, file_sha256
from geosleuth.retrieval.sources import Source, read_image_bytes
from geosleuth.schemas import LatLon, Neighbour

log = logging.getLogger(__name__)

FORMAT = "geosleuth-index/1"
IndexKind = Literal["auto", "flat", "ivfpq"]
FLAT_MAX = 200_000  # above this many vectors, "auto" builds IVF-PQ


def require_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise MissingDependencyError("faiss-cpu", "retrieval", "The neighbour index") from exc
    return faiss


@dataclass
class IVFPQParams:
    """IVF with 4-bit PQ codes scanned by SIMD ("fast scan"): m/2 bytes a vector in RAM. The short
    list it returns is re-ranked exactly, so the coarse 4-bit codes cost no recall; at 1M vectors
    they scan ~6x faster than 8-bit PQ (bench/index_scale.py)."""

    nlist: int
    m: int
    nbits: int = 4
    nprobe: int = 32
    shortlist: int = 100
    train_size: int = 200_000

    @classmethod
    def for_size(cls, n: int, dim: int) -> IVFPQParams:
        nlist = int(min(65536, max(64, 2 ** round(math.log2(4 * math.sqrt(max(n, 1)))))))
        m = next(m for m in (96, 64, 48, 32, 24, 16, 12, 8, 4, 2, 1) if dim % m == 0 and m <= dim)
        return cls(nlist=nlist, m=m)


@dataclass
class BuildReport:
    indexed: int
    skipped: dict[str, int]
    shards_total: int
    shards_reused: int
    seconds: float
    kind: str
    out: Path
    notes: list[str] = field(default_factory=list)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    _atomic_write_bytes(path, json.dumps(obj, indent=2, ensure_ascii=False).encode())


# --- building -----------------------------------------------------------------------------------


def build_index(
    source: Source,
    encoder: ImageEncoder,
    out: Path,
    *,
    kind: IndexKind = "auto",
    shard_size: int = 2048,
    batch_size: int = 32,
    restart: bool = False,
    progress: bool | None = None,
    on_shard: Callable[[int, int], None] | None = None,
) -> BuildReport:
    """Embed every usable photo of ``source`` and build the searchable index in ``out``.

    Resumable: shards already written by an earlier run of the same build are reused. A build
    into a folder that holds another encoder's or another source's index is refused unless
    ``restart`` (which deletes the old shards). ``progress``: False hides it; None follows the
    process (:mod:`geosleuth.progress`: a bar on a terminal, else a line every few seconds)."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    shards_dir = out / "shards"
    shards_dir.mkdir(exist_ok=True)
    manifest_path = out / "manifest.json"
    identity = {
        "encoder": {"name": encoder.name, "fingerprint": encoder.fingerprint, "dim": encoder.dim},
        "source": {
            "path": str(source.path),
            "layout": source.layout,
            "fingerprint": source.fingerprint,
            "items": len(source.items),
        },
        "shard_size": shard_size,
    }
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        differs = [k for k, v in identity.items() if old.get(k) != v]
        same = not differs
        if differs and not restart:
            was = "; ".join(
                f"{k} was {json.dumps(old.get(k))}, now {json.dumps(identity[k])}" for k in differs
            )
            raise IndexError_(
                f"{out} holds another build ({was}); use another --out folder, or --restart to rebuild it"
            )
        if restart and not same:
            for f in shards_dir.glob("*.npz"):
                f.unlink()
    manifest = {
        "format": FORMAT,
        **identity,
        "status": "building",
        "created_at": datetime.now(UTC).isoformat(),
        "geosleuth_version": _version(),
    }
    _write_json(manifest_path, manifest)
    for stale in shards_dir.glob(".*.tmp.npz"):  # a shard half-written by a killed run
        stale.unlink(missing_ok=True)

    from geosleuth.progress import Progress

    items = source.items
    n_shards = math.ceil(len(items) / shard_size)
    seen_hashes: dict[str, str] = {}
    reused = 0
    with Progress("indexing", len(items), unit="photos", enabled=progress) as bar:
        for s in range(n_shards):
            path = shards_dir / f"{s:05d}.npz"
            chunk = items[s * shard_size : (s + 1) * shard_size]
            if path.exists():
                try:
                    with np.load(path, allow_pickle=False) as z:
                        for h, k in zip(z["hashes"], z["keys"], strict=True):
                            seen_hashes.setdefault(str(h), str(k))
                    reused += 1
                    bar.advance(len(chunk))
                    continue
                except (OSError, ValueError, KeyError) as exc:
                    log.warning("shard %s is damaged (%s); embedding it again", path, exc)
            _build_shard(chunk, encoder, path, batch_size, seen_hashes, bar)
            if on_shard is not None:
                on_shard(s, n_shards)

    skipped, count = _collect(shards_dir, n_shards, out / "skipped.jsonl", source.bad_rows)
    if count == 0:
        raise EmptySourceError(
            f"{source.path}: none of the {len(items)} items could be indexed ({_reasons(skipped)}); see {out / 'skipped.jsonl'}"
        )
    chosen = ("flat" if count <= FLAT_MAX else "ivfpq") if kind == "auto" else kind
    index_info = _assemble(out, shards_dir, n_shards, count, encoder.dim, chosen)
    manifest.update(
        status="complete",
        count=count,
        skipped=skipped,
        index=index_info,
        completed_at=datetime.now(UTC).isoformat(),
    )
    _write_json(manifest_path, manifest)
    return BuildReport(
        indexed=count,
        skipped=skipped,
        shards_total=n_shards,
        shards_reused=reused,
        seconds=round(time.perf_counter() - t0, 2),
        kind=chosen,
        out=out,
    )


def _build_shard(
    chunk: list[Any], encoder: ImageEncoder, path: Path, batch_size: int, seen: dict[str, str], bar: Any
) -> None:
    from geosleuth.tools.exif import exif_gps
    from geosleuth.tools.image import open_image

    keys, lats, lons, places, hashes, vecs = [], [], [], [], [], []
    skipped: list[dict[str, str]] = []
    pending: list[tuple[Any, Any, float, float, str]] = []

    def flush() -> None:
        if not pending:
            return
        emb = encoder.encode([p[1] for p in pending])
        for (item, _, lat, lon, digest), v in zip(pending, emb, strict=True):
            keys.append(item.key)
            lats.append(lat)
            lons.append(lon)
            places.append(json.dumps(item.place, ensure_ascii=False))
            hashes.append(digest)
            vecs.append(v)
        pending.clear()

    for item in chunk:
        data = read_image_bytes(item)
        bar.advance(1)
        if isinstance(data, str):
            skipped.append({"key": item.key, "reason": "unreadable", "detail": data})
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            skipped.append(
                {"key": item.key, "reason": "duplicate", "detail": f"same bytes as {seen[digest]}"}
            )
            continue
        try:
            image = open_image(data, name=item.key, draft_side=448)
        except ImageInputError as exc:
            skipped.append({"key": item.key, "reason": "unreadable", "detail": exc.reason})
            continue
        lat, lon = item.lat, item.lon
        if lat is None or lon is None:
            point, why = exif_gps(image)
            if point is None:
                skipped.append({"key": item.key, "reason": "no_gps", "detail": why or "no GPS"})
                continue
            lat, lon = point.lat, point.lon
        if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180) or (
            lat == 0 and lon == 0
        ):
            skipped.append({"key": item.key, "reason": "invalid_coordinates", "detail": f"{lat}, {lon}"})
            continue
        if image.rgb is None:
            skipped.append(
                {"key": item.key, "reason": "unreadable", "detail": image.pixel_error or "no pixels"}
            )
            continue
        seen[digest] = item.key
        pending.append((item, image.rgb, float(lat), float(lon), digest))
        if len(pending) >= batch_size:
            flush()
    flush()
    write_shard(path, np.asarray(vecs).reshape(-1, encoder.dim), lats, lons, keys, places, hashes, skipped)


def write_shard(
    path: Path,
    vectors: ArrayLike,
    lat: ArrayLike,
    lon: ArrayLike,
    keys: list[str],
    places: list[str],
    hashes: list[str],
    skipped: list[dict[str, str]],
) -> None:
    """One shard file, written atomically (a killed build leaves no half shard behind)."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(
        tmp,
        vectors=np.asarray(vectors, dtype=np.float16),
        lat=np.asarray(lat, dtype=np.float64),
        lon=np.asarray(lon, dtype=np.float64),
        keys=np.asarray(keys, dtype=str),
        places=np.asarray(places, dtype=str),
        hashes=np.asarray(hashes, dtype=str),
        skipped=np.asarray([json.dumps(x, ensure_ascii=False) for x in skipped], dtype=str),
    )
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def index_from_arrays(
    out: Path,
    vectors: NDArray[Any],
    lat: ArrayLike,
    lon: ArrayLike,
    *,
    kind: IndexKind = "auto",
    encoder_name: str = "precomputed",
    encoder_fingerprint: str = "precomputed",
    shard_size: int = 65536,
) -> dict[str, Any]:
    """Build an index from embeddings you already have (L2-normalised rows), e.g. for benchmarks or
    to import another system's features. Returns the manifest."""
    vectors = np.asarray(vectors)
    lat_a, lon_a = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    n, dim = vectors.shape
    if len(lat_a) != n or len(lon_a) != n:
        raise ValueError(f"{n} vectors but {len(lat_a)} latitudes and {len(lon_a)} longitudes")
    if n == 0:
        raise EmptySourceError("no vectors to index")
    shards_dir = out / "shards"
    shards_dir.mkdir(parents=True, exist_ok=True)
    n_shards = math.ceil(n / shard_size)
    for sidx in range(n_shards):
        sl = slice(sidx * shard_size, (sidx + 1) * shard_size)
        m = len(lat_a[sl])
        keys = [str(i) for i in range(sidx * shard_size, sidx * shard_size + m)]
        write_shard(
            shards_dir / f"{sidx:05d}.npz", vectors[sl], lat_a[sl], lon_a[sl], keys, ["{}"] * m, [""] * m, []
        )
    skipped, count = _collect(shards_dir, n_shards, out / "skipped.jsonl", [])
    chosen = ("flat" if count <= FLAT_MAX else "ivfpq") if kind == "auto" else kind
    manifest = {
        "format": FORMAT,
        "encoder": {"name": encoder_name, "fingerprint": encoder_fingerprint, "dim": dim},
        "source": {"path": "<arrays>", "layout": "arrays", "fingerprint": "", "items": n},
        "shard_size": shard_size,
        "status": "complete",
        "count": count,
        "skipped": skipped,
        "index": _assemble(out, shards_dir, n_shards, count, dim, chosen),
        "created_at": datetime.now(UTC).isoformat(),
        "geosleuth_version": _version(),
    }
    _write_json(out / "manifest.json", manifest)
    return manifest


def _collect(
    shards_dir: Path, n_shards: int, skipped_path: Path, bad_rows: list[tuple[str, str]]
) -> tuple[dict[str, int], int]:
    counts: dict[str, int] = {}
    count = 0
    lines = [json.dumps({"key": k, "reason": "bad_row", "detail": why}) for k, why in bad_rows]
    for s in range(n_shards):
        with np.load(shards_dir / f"{s:05d}.npz", allow_pickle=False) as z:
            count += len(z["keys"])
            lines += [str(x) for x in z["skipped"]]
    for line in lines:
        reason = json.loads(line)["reason"]
        counts[reason] = counts.get(reason, 0) + 1
    _atomic_write_bytes(skipped_path, ("\n".join(lines) + "\n" if lines else "").encode())
    return counts, count


def _reasons(skipped: dict[str, int]) -> str:
    return ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in sorted(skipped.items())) or "nothing usable"


def _assemble(out: Path, shards_dir: Path, n_shards: int, count: int, dim: int, kind: str) -> dict[str, Any]:
    """Write the metadata and the FAISS index from the shards, streaming (never all vectors as float32)."""
    faiss = require_faiss()
    lat = np.empty(count, dtype=np.float64)
    lon = np.empty(count, dtype=np.float64)
    vectors_path = out / "vectors.f16.npy"
    vec_mm = np.lib.format.open_memmap(
        vectors_path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float16, shape=(count, dim)
    )
    db_tmp = out / ".meta.sqlite.tmp"
    db_tmp.unlink(missing_ok=True)
    db = sqlite3.connect(db_tmp)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, key TEXT, place TEXT)")
    pos = 0
    for s in range(n_shards):
        with np.load(shards_dir / f"{s:05d}.npz", allow_pickle=False) as z:
            n = len(z["keys"])
            vec_mm[pos : pos + n] = z["vectors"]
            lat[pos : pos + n] = z["lat"]
            lon[pos : pos + n] = z["lon"]
            db.executemany(
                "INSERT INTO items VALUES (?,?,?)",
                (
                    (pos + i, str(k), str(p))
                    for i, (k, p) in enumerate(zip(z["keys"], z["places"], strict=True))
                ),
            )
            pos += n
    db.commit()
    db.close()
    vec_mm.flush()
    del vec_mm

    info: dict[str, Any] = {"kind": kind, "dim": dim}
    vectors = np.load(vectors_path.with_suffix(".tmp.npy"), mmap_mode="r")
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
        for start in range(0, count, 65536):
            index.add(np.ascontiguousarray(vectors[start : start + 65536], dtype=np.float32))
    else:
        params = IVFPQParams.for_size(count, dim)
        index = faiss.IndexIVFPQFastScan(
            faiss.IndexFlatIP(dim), dim, params.nlist, params.m, params.nbits, faiss.METRIC_INNER_PRODUCT
        )
        rng = np.random.default_rng(0)
        sample = np.sort(
            rng.choice(count, size=min(count, max(params.train_size, 40 * params.nlist)), replace=False)
        )
        log.info(
            "training IVF-PQ (%d lists, %d x %d-bit codes) on %d vectors",
            params.nlist,
            params.m,
            params.nbits,
            len(sample),
        )
        index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
        log.info("adding %d vectors", count)
        for start in range(0, count, 65536):
            index.add(np.ascontiguousarray(vectors[start : start + 65536], dtype=np.float32))
        index.nprobe = params.nprobe
        info.update(
            {
                "codes": "IVF-PQ fast scan",
                "nlist": params.nlist,
                "m": params.m,
                "nbits": params.nbits,
                "nprobe": params.nprobe,
                "shortlist": params.shortlist,
            }
        )
    del vectors
    index_tmp = out / ".index.faiss.tmp"
    faiss.write_index(index, str(index_tmp))
    os.replace(index_tmp, out / "index.faiss")
    np.savez(out / ".meta.tmp.npz", lat=lat, lon=lon)
    os.replace(out / ".meta.tmp.npz", out / "meta.npz")
    os.replace(db_tmp, out / "meta.sqlite")
    if kind == "flat":
        vectors_path.with_suffix(".tmp.npy").unlink()
        vectors_path.unlink(missing_ok=True)
    else:
        os.replace(vectors_path.with_suffix(".tmp.npy"), vectors_path)
    files = ["index.faiss", "meta.npz", "meta.sqlite"] + (["vectors.f16.npy"] if kind != "flat" else [])
    info["files"] = {f: {"bytes": (out / f).stat().st_size, "sha256": file_sha256(out / f)} for f in files}
    return info


# --- searching ----------------------------------------------------------------------------------


@dataclass
class SearchResult:
    similar: list[Neighbour]
    dissimilar: list[Neighbour]


class NeighbourIndex:
    """A built index, opened for search. Checks that it is complete and intact before use."""

    def __init__(
        self, folder: str | Path, *, gazetteer: Any | None = None, verify: bool = False, device: str = "cpu"
    ) -> None:
        self.folder = Path(folder)
        manifest_path = self.folder / "manifest.json"
        if not manifest_path.is_file():
            raise IndexError_(
                f"{self.folder} is not a geosleuth index (no manifest.json); build one with `geosleuth index build`"
            )
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except ValueError as exc:
            raise IndexError_(f"{manifest_path} is not valid JSON ({exc}); rebuild the index") from exc
        if self.manifest.get("format") != FORMAT:
            raise IndexError_(
                f"{self.folder}: unknown index format {self.manifest.get('format')!r}; expected {FORMAT}"
            )
        if self.manifest.get("status") != "complete":
            raise IndexError_(
                f"{self.folder}: the build did not finish; run the same `geosleuth index build` again to resume it"
            )
        info = self.manifest["index"]
        for name, meta in info["files"].items():
            p = self.folder / name
            if not p.is_file():
                raise IndexError_(f"{self.folder}: {name} is missing; rebuild the index (--restart)")
            if p.stat().st_size != meta["bytes"]:
                raise IndexError_(
                    f"{p} has {p.stat().st_size:,} bytes, the manifest says {meta['bytes']:,}: truncated or "
                    "replaced; rebuild the index (--restart)"
                )
            if verify and file_sha256(p) != meta["sha256"]:
                raise IndexError_(f"{p} does not match its checksum: corrupt; rebuild the index (--restart)")
        self.kind = info["kind"]
        self.dim = int(info["dim"])
        faiss = require_faiss()
        try:
            self.index = faiss.read_index(str(self.folder / "index.faiss"))
        except RuntimeError as exc:
            raise IndexError_(
                f"{self.folder / 'index.faiss'} cannot be read by FAISS (corrupt?): {exc}"
            ) from exc
        if self.index.d != self.dim:
            raise IndexError_(
                f"{self.folder}: index.faiss has dimension {self.index.d}, the manifest says {self.dim}"
            )
        if self.kind == "ivfpq":
            self.index.nprobe = int(info.get("nprobe", 32))
            self.shortlist = int(info.get("shortlist", 100))
            self.vectors = np.load(self.folder / "vectors.f16.npy", mmap_mode="r")
        if device.startswith("cuda") and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
            self.index = faiss.index_cpu_to_all_gpus(self.index)
        with np.load(self.folder / "meta.npz") as z:
            self.lat, self.lon = z["lat"], z["lon"]
        self.gazetteer = gazetteer

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @property
    def encoder_name(self) -> str:
        return str(self.manifest["encoder"]["name"])

    def check_encoder(self, encoder: ImageEncoder) -> None:
        """Refuse an encoder other than the one that built the index (its vectors mean something else)."""
        built = self.manifest["encoder"]
        if encoder.dim != self.dim:
            raise IndexError_(
                f"{self.folder} holds {self.dim}-d embeddings from {built['name']!r}; the encoder {encoder.name!r} "
                f"makes {encoder.dim}-d ones. Search with {built['name']!r}, or build an index with this encoder"
            )
        if encoder.fingerprint != built["fingerprint"]:
            raise IndexError_(
                f"{self.folder} was built by {built['name']!r} (weights {built['fingerprint'][:12]}); the encoder "
                f"{encoder.name!r} has other weights ({encoder.fingerprint[:12]}). Search with the same weights, "
                "or build an index with these"
            )

    def _search_raw(self, q: NDArray[np.float32], k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        k = min(k, self.count)
        if self.kind == "flat":
            sims, ids = self.index.search(q, k)
            return sims, ids
        short = min(self.count, max(self.shortlist, 4 * k))
        _, cand = self.index.search(q, short)
        sims = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids = np.full((len(q), k), -1, dtype=np.int64)
        block = 128
        for start in range(0, len(q), block):
            c = cand[start : start + block]
            qb = q[start : start + block]
            # Score each distinct candidate once against the whole block (one BLAS product), with a
            # sorted gather from the memory-mapped vectors (kind to the page cache), then pick each
            # query's own candidates out of that table.
            uniq, inverse = np.unique(np.where(c >= 0, c, 0), return_inverse=True)
            table = np.asarray(self.vectors[uniq], dtype=np.float32) @ qb.T  # (distinct, block)
            exact = table[inverse.reshape(c.shape), np.arange(len(c))[:, None]]
            exact[c < 0] = -np.inf
            top = np.argsort(-exact, axis=1)[:, :k]
            best = np.take_along_axis(exact, top, axis=1)
            sims[start : start + len(c), : top.shape[1]] = best
            ids[start : start + len(c), : top.shape[1]] = np.where(
                np.isfinite(best), np.take_along_axis(c, top, axis=1), -1
            )
        return sims, ids

    def search(self, embeddings: ArrayLike, k: int = 20, *, dissimilar: bool = True) -> list[SearchResult]:
        """For each embedding, the k most similar photos and (via the negated query) the k least."""
        q = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise IndexError_(
                f"query embeddings have shape {tuple(q.shape)}, this index needs (n, {self.dim}) from "
                f"{self.encoder_name!r}"
            )
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        sims, ids = self._search_raw(q, k)
        neg = self._search_raw(np.ascontiguousarray(-q), k) if dissimilar else None
        results = []
        for row in range(len(q)):
            similar = self._neighbours(ids[row], sims[row])
            far = self._neighbours(neg[1][row], -neg[0][row]) if neg is not None else []
            results.append(SearchResult(similar=similar, dissimilar=far))
        return results

    @cached_property
    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(
            f"file:{self.folder / 'meta.sqlite'}?mode=ro", uri=True, check_same_thread=False
        )

    def _neighbours(self, ids: NDArray[np.int64], sims: NDArray[np.float32]) -> list[Neighbour]:
        valid = [(int(i), float(s)) for i, s in zip(ids, sims, strict=True) if i >= 0 and np.isfinite(s)]
        if not valid:
            return []
        rows = {
            r[0]: r[1:]
            for r in self._db.execute(
                f"SELECT id, key, place FROM items WHERE id IN ({','.join('?' * len(valid))})",
                [i for i, _ in valid],
            )
        }
        points = [LatLon(lat=float(self.lat[i]), lon=float(self.lon[i])) for i, _ in valid]
        places = self.gazetteer.reverse(points) if self.gazetteer is not None else [None] * len(points)
        return [
            Neighbour(
                point=pt,
                similarity=round(sim, 6),
                key=rows[i][0],
                place=place,
                source_place=json.loads(rows[i][1]) if rows[i][1] else {},
            )
            for (i, sim), pt, place in zip(valid, points, places, strict=True)
        ]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._db.close()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("geosleuth")
    except Exception:  # pragma: no cover
        return "0+unknown"


def index_info(folder: str | Path) -> dict[str, Any]:
    """The manifest of an index folder (complete or not), for `geosleuth index info`."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise IndexError_(f"{folder} is not a geosleuth index (no manifest.json)")
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except ValueError as exc:
        raise IndexError_(f"{path} is not valid JSON ({exc})") from exc
    return data
