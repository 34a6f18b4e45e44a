"""Benchmark datasets: what to evaluate on, read from local files only.

Every dataset is a fixed list of :class:`~geosleuth.eval.records.Sample` sorted by id, so a
selection (``limit``, ``sample``) is the same on every machine, and checked before anything runs:
missing images fail at construction, not an hour into a run.

Kinds (``open_dataset`` specs):

- ``im2gps3k:IMAGES`` / ``im2gps:IMAGES``: the published ground truth of GeoEstimation
  (``im2gps3k_places365.csv``, ``im2gps_places365.csv``: IMG_ID, AUTHOR, LAT, LON, scene labels)
  and a folder holding each IMG_ID as a file. The metadata is looked for in the folder, its parent
  and the parent's ``meta/``, unless ``meta`` names it.
- ``yfcc4k:IMAGES``: a table with an id column (IMG_ID, image_id, photo_id, id, image, path,
  file, filename) and latitude/longitude columns (LAT/LON, latitude/longitude, lat/lng...), found
  by name; CSV/TSV with a header row, or Parquet. By default ``yfcc4k_places365.csv``,
  ``yfcc4k.csv``, ``info.csv``, ``yfcc4k.txt`` or ``yfcc25600_places365.csv`` beside the images.
  An id with folders (``ab/cd/123.jpg``) is also found by its base name, and an id without a
  suffix (``123``) by its stem.
- a ``.csv``/``.tsv``/``.parquet`` path (or ``csv:PATH``): one row per image, with an image path
  column (image, path, file, filename, image_path, img_id, ...) relative to ``images`` or else to
  the table's folder, and latitude/longitude columns; an id column (id, image_id, ...) is optional.
- a folder of geotagged photos (or ``exif:FOLDER``): the truth is each photo's EXIF GPS and
  ``load()`` returns the bytes with the GPS removed (:mod:`geosleuth.eval.strip`). Photos whose
  stripped bytes would still carry usable GPS are refused and counted.
- a Hugging Face ``datasets`` folder written by ``save_to_disk`` (or ``hf:FOLDER``):
  ``dataset_info.json``/``state.json`` beside ``data-*.arrow``, read with pyarrow (OSV-5M style).
  The image column is the one typed ``Image`` in ``dataset_info.json`` (else found by name) and
  holds ``{bytes, path}`` structs, raw bytes, or paths; latitude/longitude columns are found by
  name. A ``DatasetDict`` folder (``dataset_dict.json``) needs its split: ``FOLDER/test``.

Sample ids are the dataset's own ids (IMG_ID, an id column) or else the image path relative to the
dataset's root, with POSIX separators; a Hugging Face row without either is ``row-<index>``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Literal, TypeVar

from geosleuth.errors import (
    SHOW_MISSING,
    DatasetError,
    EmptySourceError,
    GeoSleuthError,
    ImageInputError,
    InputNotFoundError,
    MetadataNotFoundError,
    MissingDependencyError,
    MissingImagesError,
)
from geosleuth.eval.records import Sample
from geosleuth.retrieval.sources import IMAGE_COLUMNS, open_source
from geosleuth.retrieval.tables import LAT_NAMES, LON_NAMES, find_column, latlon_columns, read_table
from geosleuth.schemas import LatLon
from geosleuth.tools.image import IMAGE_SUFFIXES, read_source

log = logging.getLogger(__name__)

T = TypeVar("T")

Missing = Literal["error", "skip"]
ID_COLUMNS = ("id", "img_id", "image_id", "photo_id", "key", "uid", "uuid")
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
MAX_IMAGE_BYTES = 512 * 1024 * 1024


# --- the base ------------------------------------------------------------------------------------


@dataclass
class _Row:
    """One listed item before selection: the sample, and the file it needs (None: bytes in hand)."""

    sample: Sample
    path: Path | None = None

    def present(self) -> bool:
        return self.path is None or self.path.is_file()


@dataclass
class Selection:
    """How the samples were chosen from the listed rows; recorded in ``describe()``."""

    limit: int | None = None
    sample: int | None = None
    seed: int = 0
    missing: Missing = "error"

    def check(self) -> None:
        for what, n in (("limit", self.limit), ("sample", self.sample)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise DatasetError(f"{what}={n!r}: expected a positive whole number of images")
        if self.missing not in ("error", "skip"):
            raise DatasetError(f"missing={self.missing!r}: expected 'error' or 'skip'")


class Dataset:
    """A benchmark: a fixed list of samples in a stable order (sorted by id).

    ``name`` says which benchmark ("im2gps3k", "yfcc4k", "csv:<stem>", "exif:<folder>",
    "hf:<folder>"); ``describe()`` says where it was read from and how it was selected;
    ``checksum()`` identifies exactly which truth was evaluated."""

    kind: ClassVar[str] = "custom"
    images_from: ClassVar[str] = ""
    """Where the benchmark's images come from (shown when they are missing)."""

    def __init__(
        self,
        name: str,
        samples: Sequence[Sample],
        *,
        sources: dict[str, str] | None = None,
        meta_files: Sequence[Path] = (),
        info: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.samples: tuple[Sample, ...] = tuple(sorted(samples, key=lambda s: s.id))
        self.sources = dict(sources or {})
        self.meta_files = tuple(meta_files)
        self.info: dict[str, Any] = dict(info or {})
        self._checksum: str | None = None
        _check_unique([s.id for s in self.samples], name)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {len(self)} samples>"

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    def checksum(self) -> str:
        """sha256 over the metadata files' bytes (in the order listed in ``describe()``), then one
        ``id<TAB>lat<TAB>lon`` line per sample sorted by id (coordinates as Python's ``repr``).
        The images are not hashed: they can be many gigabytes, and the ids name them."""
        if self._checksum is None:
            h = hashlib.sha256()
            for path in self.meta_files:
                h.update(f"file\t{path.stat().st_size}\n".encode())
                with path.open("rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
            for s in self.samples:
                h.update(f"{s.id}\t{s.truth.lat!r}\t{s.truth.lon!r}\n".encode())
            self._checksum = h.hexdigest()
        return self._checksum

    def describe(self) -> dict[str, Any]:
        """Provenance: name, kind, source paths, metadata files, counts, selection, checksum."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "samples": len(self),
            "checksum": self.checksum(),
            "sources": self.sources,
            "meta_files": [str(p) for p in self.meta_files],
        }
        out.update(self.info)
        if self.images_from:
            out["images_from"] = self.images_from
        return out

    # Subclasses list their rows, then hand them here with the caller's selection.
    def _finish(self, rows: list[_Row], selection: Selection, *, root: Path, hint: str) -> list[Sample]:
        selection.check()
        rows = sorted(rows, key=lambda r: r.sample.id)
        _check_unique([r.sample.id for r in rows], self.name)
        info: dict[str, Any] = {"rows": len(rows)}
        pool = rows
        if selection.missing == "skip":
            pool = [r for r in rows if r.present()]
            absent = [r for r in rows if not r.present()]
            info["missing"] = len(absent)
            info["present"] = len(pool)
            info["missing_examples"] = [_shown(r, root) for r in absent[:SHOW_MISSING]]
            if not pool:
                where = str(root) if root.is_dir() else f"{root} (no such folder)"
                names = [_shown(r, root) for r in absent]
                raise MissingImagesError(self.name, names, len(rows), where, hint, suggest_skip=False)
            if absent:
                info["subset"] = subset_note(self.name, len(pool), len(rows))
                log.warning(
                    "%s (in %s; missing='error' / --require-all demands every image)", info["subset"], root
                )
        chosen = select(pool, limit=selection.limit, sample=selection.sample, seed=selection.seed)
        if selection.missing == "error":
            absent = [r for r in chosen if not r.present()]
            if absent:
                where = str(root) if root.is_dir() else f"{root} (no such folder)"
                names = [_shown(r, root) for r in absent]
                raise MissingImagesError(self.name, names, len(chosen), where, hint)
            info["missing"] = 0
            if len(chosen) == len(rows):  # else only the chosen were looked for
                info["present"] = len(rows)
        if not chosen:
            skipped = f", all {info.get('missing', 0)} missing from {root}" if info.get("missing") else ""
            raise EmptySourceError(f"{self.name}: no images to evaluate ({len(rows)} listed{skipped})")
        info["selection"] = {
            "limit": selection.limit,
            "sample": selection.sample,
            "seed": selection.seed,
            "missing": selection.missing,
            "order": "sorted by id",
            "drawn_from": "present images" if selection.missing == "skip" else "all listed images",
        }
        self.info.update(info)
        return [r.sample for r in chosen]


def subset_note(name: str, present: int, listed: int) -> str:
    """The one line that says a run covers only part of a benchmark (logged, recorded, reported)."""
    return f"{present} of {listed} images of {name} present; evaluated on those"


def select(items: Sequence[T], *, limit: int | None, sample: int | None, seed: int = 0) -> list[T]:
    """``sample``: N items drawn with ``random.Random(seed).sample`` from ``items`` (kept in their
    order); then ``limit``: the first N. ``items`` must already be in a stable order."""
    chosen = list(items)
    if sample is not None and sample < len(chosen):
        picked = set(random.Random(seed).sample(range(len(chosen)), sample))
        chosen = [x for i, x in enumerate(chosen) if i in picked]
    if limit is not None:
        chosen = chosen[:limit]
    return chosen


def _shown(row: _Row, root: Path) -> str:
    """A missing file as the user would look for it: relative to the image folder when inside it."""
    if row.path is None:
        return row.sample.name
    try:
        return row.path.relative_to(root).as_posix()
    except ValueError:
        return str(row.path)


def _check_unique(ids: Sequence[str], dataset: str) -> None:
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    if dupes:
        raise DatasetError(
            f"{dataset}: sample ids must be unique, but {len(dupes)} repeat (first: {dupes[0]!r}); "
            "give the table an id column, or remove the duplicate rows"
        )


def _file_loader(path: Path, name: str) -> Callable[[], bytes]:
    def load() -> bytes:
        try:
            return read_source(path, max_bytes=MAX_IMAGE_BYTES)
        except ImageInputError as exc:
            exc.source = name
            raise

    return load


def _posix_id(rel: str) -> str:
    return PurePosixPath(rel.replace("\\", "/")).as_posix()


def _rel_id(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


class _ImageFolder:
    """Finds a listed image in a folder: as its relative path, else by base name, else by stem
    (published lists and archives do not always agree on sub-folders or suffixes)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._names: dict[str, Path] | None = None
        self._stems: dict[str, Path | None] | None = None

    def _index(self) -> tuple[dict[str, Path], dict[str, Path | None]]:
        if self._names is None or self._stems is None:
            names: dict[str, Path] = {}
            stems: dict[str, Path | None] = {}
            if self.root.is_dir():
                for dirpath, _, files in os.walk(self.root):
                    for f in files:
                        p = Path(dirpath) / f
                        names.setdefault(f, p)
                        stem = Path(f).stem
                        stems[stem] = None if stem in stems else p  # None: ambiguous
            self._names, self._stems = names, stems
        return self._names, self._stems

    def find(self, rel: str) -> Path:
        """The file for ``rel``; the direct path (which does not exist) when nothing matches."""
        direct = self.root / rel
        if direct.is_file():
            return direct
        names, stems = self._index()
        base = PurePosixPath(rel.replace("\\", "/")).name
        hit = names.get(base) or names.get(rel.replace("/", "_"))
        if hit is None and Path(base).suffix.lower() not in IMAGE_SUFFIXES:
            hit = stems.get(base)
        return hit or direct


# --- published benchmarks ------------------------------------------------------------------------


class Im2GPS3k(Dataset):
    """Im2GPS3k (2997 Flickr photos; Vo et al., ICCV 2017), with GeoEstimation's ground truth.

    A folder holding part of the benchmark is evaluated on the images present by default
    (``missing="skip"``: one warning, and ``describe()`` records ``present`` of ``rows`` and the
    ``subset`` line the report shows); none present is a :class:`MissingImagesError` that says where
    the images come from. ``missing="error"`` demands every selected image."""

    kind = "im2gps3k"
    meta_name = "im2gps3k_places365.csv"
    expected = 2997
    meta_url = (
        "https://raw.githubusercontent.com/TIBHannover/GeoEstimation/original_tf/meta/im2gps3k_places365.csv"
    )
    images_from = (
        "the im2gps3ktest.zip archive of Vo et al.'s 'Revisiting IM2GPS' "
        "(https://github.com/lugiavn/revisiting-im2gps; linked from the GeoEstimation and G3 READMEs)"
    )
    id_columns: ClassVar[tuple[str, ...]] = ("img_id",)
    meta_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        images: str | Path,
        *,
        meta: str | Path | None = None,
        limit: int | None = None,
        sample: int | None = None,
        seed: int = 0,
        missing: Missing = "skip",
        meta_dirs: Sequence[Path] = (),
    ) -> None:
        images = Path(images).expanduser()
        meta_path = self.find_meta(images, Path(meta).expanduser() if meta else None, meta_dirs)
        columns = read_table(meta_path)
        id_col = find_column(columns, self.id_columns, meta_path, "image id")
        coords = latlon_columns(columns, meta_path)
        lat_col = find_column(columns, LAT_NAMES, meta_path, "latitude")
        lon_col = find_column(columns, LON_NAMES, meta_path, "longitude")
        extra = [c for c in columns if c not in (id_col, lat_col, lon_col)]
        folder = _ImageFolder(images)
        rows = []
        for i, raw_id in enumerate(columns[id_col]):
            if not raw_id:
                raise DatasetError(f"{meta_path}: row {i + 2} has an empty {id_col}")
            sid = _posix_id(raw_id)
            path = folder.find(sid)
            truth = LatLon(lat=float(coords[i, 0]), lon=float(coords[i, 1]))
            meta_fields = {c: columns[c][i] for c in extra if columns[c][i] != ""}
            rows.append(_Row(Sample(sid, truth, _file_loader(path, sid), str(path), meta_fields), path))
        if len(rows) != self.expected:
            log.warning(
                "%s: %s lists %d images, not the published %d", self.kind, meta_path, len(rows), self.expected
            )
        super().__init__(
            self.kind, [], sources={"images": str(images), "meta": str(meta_path)}, meta_files=[meta_path]
        )
        self.info["expected"] = self.expected
        hint = (
            f"{self.kind}'s images come from {self.images_from}: unpack them so that each "
            f"{id_col} of {meta_path.name} is a file in {images} (or pass images=... / --images)."
        )
        samples = self._finish(rows, Selection(limit, sample, seed, missing), root=images, hint=hint)
        self.samples = tuple(samples)

    @classmethod
    def find_meta(cls, images: Path, meta: Path | None, extra_dirs: Sequence[Path] = ()) -> Path:
        """``meta`` when given, else the first of the benchmark's table names found in ``extra_dirs``,
        the image folder, its parent, or the parent's ``meta/``."""
        if meta is not None:
            if not meta.is_file():
                raise MetadataNotFoundError(f"{cls.kind}: metadata {meta} does not exist; {cls._get_meta()}")
            return meta
        names = cls.meta_names or (cls.meta_name,)
        places = list(dict.fromkeys([*extra_dirs, images, images.parent, images.parent / "meta"]))
        tried = [d / n for d in places for n in names]
        for p in tried:
            if p.is_file():
                return p
        raise MetadataNotFoundError(
            f"{cls.kind}: no metadata table found (looked for {', '.join(str(p) for p in tried)}); "
            f"{cls._get_meta()}, and put it beside the images or pass meta=... (--meta)"
        )

    @classmethod
    def _get_meta(cls) -> str:
        return f"download it from {cls.meta_url}"


class Im2GPS(Im2GPS3k):
    """Im2GPS (237 Flickr photos; Hays & Efros, CVPR 2008), with GeoEstimation's ground truth."""

    kind = "im2gps"
    meta_name = "im2gps_places365.csv"
    expected = 237
    meta_url = (
        "https://raw.githubusercontent.com/TIBHannover/GeoEstimation/original_tf/meta/im2gps_places365.csv"
    )
    images_from = (
        "the Im2GPS test set, http://graphics.cs.cmu.edu/projects/im2gps/ (gps_query_imgs; "
        "linked from the GeoEstimation README)"
    )


class YFCC4k(Im2GPS3k):
    """YFCC4k (4536 YFCC100M photos; Vo et al., ICCV 2017).

    Expected layout: the images of ``yfcc4k.zip`` in a folder, and a table with an id column and
    LAT/LON columns beside it (``yfcc4k_places365.csv`` from G3's release, or any of
    ``yfcc4k.csv``, ``info.csv``, ``yfcc4k.txt``, ``yfcc25600_places365.csv``), or named by ``meta``.
    G3's README links GeoEstimation's ``yfcc25600_places365.csv``, which lists more photos than
    YFCC4k holds: only the photos present count (the default, ``missing="skip"``)."""

    kind = "yfcc4k"
    meta_name = "yfcc4k_places365.csv"
    meta_names = ("yfcc4k_places365.csv", "yfcc4k.csv", "info.csv", "yfcc4k.txt", "yfcc25600_places365.csv")
    expected = 4536
    meta_url = (
        "https://huggingface.co/Jia-py/G3-checkpoint (yfcc4k metadata) or "
        "https://github.com/TIBHannover/GeoEstimation/releases/download/pytorch/yfcc25600_places365.csv"
    )
    images_from = (
        "the yfcc4k.zip archive of Vo et al.'s 'Revisiting IM2GPS' "
        "(https://github.com/lugiavn/revisiting-im2gps; linked from the G3 README); a metadata table "
        "with more rows than the 4536 images (such as yfcc25600_places365.csv) is fine: only the photos present count"
    )
    id_columns = ("img_id", "image_id", "photo_id", "id", "image", "img", "path", "file", "filename")

    @classmethod
    def _get_meta(cls) -> str:
        return f"get it from {cls.meta_url}"


# --- generic sets --------------------------------------------------------------------------------


class TableDataset(Dataset):
    """A CSV/TSV/Parquet table of (image, lat, lon[, id]) rows; images relative to ``images`` or
    else to the table's folder. Extra columns become each sample's ``meta``."""

    kind = "table"

    def __init__(
        self,
        path: str | Path,
        *,
        images: str | Path | None = None,
        limit: int | None = None,
        sample: int | None = None,
        seed: int = 0,
        missing: Missing = "error",
    ) -> None:
        path = Path(path).expanduser()
        root = Path(images).expanduser() if images else path.parent
        columns = read_table(path)
        image_col = find_column(columns, IMAGE_COLUMNS, path, "image path")
        coords = latlon_columns(columns, path)
        lat_col = find_column(columns, LAT_NAMES, path, "latitude")
        lon_col = find_column(columns, LON_NAMES, path, "longitude")
        lowered = {c.lower().strip(): c for c in columns}
        id_col = next((lowered[c] for c in ID_COLUMNS if c in lowered and lowered[c] != image_col), None)
        extra = [c for c in columns if c not in (image_col, lat_col, lon_col, id_col)]
        rows = []
        for i, rel in enumerate(columns[image_col]):
            if not rel:
                raise DatasetError(f"{path}: row {i + 2} has an empty {image_col} column")
            p = Path(rel).expanduser()
            p = p if p.is_absolute() else root / rel
            sid = _posix_id(columns[id_col][i]) if id_col and columns[id_col][i] else None
            sid = sid or (_rel_id(p, root) if Path(rel).is_absolute() else _posix_id(rel))
            truth = LatLon(lat=float(coords[i, 0]), lon=float(coords[i, 1]))
            meta_fields = {c: columns[c][i] for c in extra if columns[c][i] != ""}
            rows.append(_Row(Sample(sid, truth, _file_loader(p, str(p)), str(p), meta_fields), p))
        fmt = "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"
        super().__init__(
            f"{fmt}:{path.stem}", [], sources={"table": str(path), "images": str(root)}, meta_files=[path]
        )
        hint = (
            f"The table's {image_col} column names files relative to {root}; "
            "pass images=... (--images) if they are elsewhere."
        )
        self.samples = tuple(
            self._finish(rows, Selection(limit, sample, seed, missing), root=root, hint=hint)
        )


class ExifFolderDataset(Dataset):
    """A folder of photos whose EXIF GPS is the truth. ``load()`` gives the bytes with the GPS
    removed (capture time, UTC offset and camera kept); a photo whose stripped bytes would still
    carry a usable position is refused. Photos without usable GPS are not samples; both are
    counted in ``describe()["skipped"]``."""

    kind = "exif"

    def __init__(
        self,
        folder: str | Path,
        *,
        limit: int | None = None,
        sample: int | None = None,
        seed: int = 0,
        missing: Missing = "error",
    ) -> None:
        from geosleuth.tools.exif import exif_gps
        from geosleuth.tools.image import open_image

        root = Path(folder).expanduser()
        if not root.is_dir():
            raise InputNotFoundError(f"{root}: no such folder")
        try:
            items = open_source(root, layout="folder").items
        except EmptySourceError:
            raise EmptySourceError(
                f"{root}: no photos in this folder (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
            ) from None
        skipped: Counter[str] = Counter()
        examples: dict[str, list[str]] = {}

        def skip(reason: str, what: str) -> None:
            skipped[reason] += 1
            examples.setdefault(reason, [])
            if len(examples[reason]) < SHOW_MISSING:
                examples[reason].append(what)

        rows = []
        for item in items:
            sid = _posix_id(item.key)
            path = root / item.key
            try:
                point, why = exif_gps(open_image(path, name=sid, draft_side=64))
            except ImageInputError as exc:
                skip("unreadable", f"{sid}: {exc.reason}")
                continue
            if point is None:
                skip("no_gps", f"{sid}: {why}")
                continue
            rows.append(_Row(Sample(sid, point, _unverified, str(path), {"path": sid}), path))
        if not rows:
            first = next(iter(examples.values()), ["-"])[0]
            raise EmptySourceError(
                f"{root}: none of its {len(items)} photos has a usable EXIF GPS position, so none has a "
                f"truth to evaluate against (first: {first})"
            )
        super().__init__(f"exif:{root.name}", [], sources={"folder": str(root)})
        chosen = self._finish(rows, Selection(limit, sample, seed, missing), root=root, hint="")
        kept = []
        for s in chosen:  # only the selected photos pay for stripping and checking
            path = Path(s.name)
            try:
                data, method = _strip_and_check(path, s.id)
            except (ImageInputError, ValueError) as exc:
                skip("refused_after_strip", f"{s.id}: {exc}")
                log.warning("%s: refused: %s", s.id, exc)
                continue
            load = _stripped_loader(path, s.id, hashlib.sha256(data).hexdigest())
            kept.append(Sample(s.id, s.truth, load, s.name, {**s.meta, "stripped": method}))
        if not kept:
            raise EmptySourceError(
                f"{root}: every selected photo was refused: {examples['refused_after_strip'][0]}"
            )
        self.samples = tuple(kept)
        self.info.update(
            {
                "photos": len(items),
                "skipped": dict(skipped),
                "skipped_examples": examples,
                "gps_removed": True,
            }
        )


class _GPSLeftError(GeoSleuthError, ValueError):
    """The stripped bytes still carry a usable position."""


def _strip_file(path: Path, name: str) -> tuple[bytes, str]:
    from geosleuth.eval.strip import strip_gps_image
    from geosleuth.tools.image import open_image

    data = read_source(path, max_bytes=MAX_IMAGE_BYTES)
    stripped = strip_gps_image(data, open_image(data, name=name))
    return stripped.data, stripped.method


def _strip_and_check(path: Path, name: str) -> tuple[bytes, str]:
    from geosleuth.eval.strip import gps_left

    data, method = _strip_file(path, name)
    leak = gps_left(data, name)
    if leak:
        raise _GPSLeftError(f"{leak} after stripping ({method}); refusing to hand it over")
    return data, method


def _unverified() -> bytes:
    raise RuntimeError("internal: an EXIF sample was yielded before its stripped bytes were checked")


def _stripped_loader(path: Path, name: str, digest: str) -> Callable[[], bytes]:
    def load() -> bytes:
        data, _ = _strip_file(path, name)
        if hashlib.sha256(data).hexdigest() == digest:  # the very bytes checked at construction
            return data
        return _strip_and_check(path, name)[0]  # the file changed since: check again

    return load


class HFDiskDataset(Dataset):
    """A Hugging Face ``datasets`` folder written by ``save_to_disk``, read with pyarrow (the
    ``datasets`` package is not needed). Arrow files are memory-mapped: image bytes are read one
    sample at a time."""

    kind = "hf"

    def __init__(
        self,
        folder: str | Path,
        *,
        images: str | Path | None = None,
        limit: int | None = None,
        sample: int | None = None,
        seed: int = 0,
        missing: Missing = "error",
    ) -> None:
        try:
            import pyarrow as pa
        except ImportError as exc:
            raise MissingDependencyError(
                "pyarrow", "parquet", "Reading a Hugging Face dataset folder"
            ) from exc

        root = _hf_split_folder(Path(folder).expanduser())
        files = _hf_arrow_files(root)
        table = pa.concat_tables([_read_arrow(f) for f in files])
        names: dict[str, list[str]] = {n: [] for n in table.column_names}
        image_col = _hf_image_column(root, table.column_names) or find_column(
            names, (*IMAGE_COLUMNS, "jpg", "picture", "image_bytes"), root, "image"
        )
        lat_col = find_column(names, LAT_NAMES, root, "latitude")
        lon_col = find_column(names, LON_NAMES, root, "longitude")
        as_text = {
            c: ["" if v is None else str(v) for v in table.column(c).to_pylist()] for c in (lat_col, lon_col)
        }
        coords = latlon_columns(as_text, root)
        lowered = {c.lower(): c for c in table.column_names}
        id_col = next((lowered[c] for c in ID_COLUMNS if c in lowered and lowered[c] != image_col), None)
        ids = [None if v is None else str(v) for v in table.column(id_col).to_pylist()] if id_col else None
        has_bytes, paths = _hf_image_refs(table.column(image_col))
        img_root = Path(images).expanduser() if images else root
        use_paths = ids is None and all(paths) and len(set(paths)) == len(paths)
        column = table.column(image_col)
        # scalar columns (country, city, ...) travel with each sample; nested and binary ones do not
        extra = {
            c: table.column(c).to_pylist()
            for c in table.column_names
            if c not in (image_col, lat_col, lon_col, id_col) and _is_scalar(table.schema.field(c).type)
        }
        rows = []
        for i in range(table.num_rows):
            rel = paths[i]
            if ids is not None and ids[i]:
                sid = _posix_id(ids[i] or "")
            elif use_paths and rel:
                sid = _rel_id(Path(rel), img_root) if Path(rel).is_absolute() else _posix_id(rel)
            else:
                sid = f"row-{i:07d}"
            file: Path | None = None
            if not has_bytes[i]:
                if not rel:
                    raise DatasetError(
                        f"{root}: row {i} of column {image_col!r} holds neither bytes nor a path"
                    )
                file = Path(rel) if Path(rel).is_absolute() else img_root / rel
            name = rel or f"{root.name}[{i}]"
            truth = LatLon(lat=float(coords[i, 0]), lon=float(coords[i, 1]))
            load = _file_loader(file, name) if file is not None else _arrow_loader(column, i)
            meta_fields = {"row": i} | {c: v[i] for c, v in extra.items() if v[i] is not None}
            rows.append(_Row(Sample(sid, truth, load, str(file) if file else name, meta_fields), file))
        meta_files = [p for p in (root / "dataset_info.json", root / "state.json") if p.is_file()]
        super().__init__(
            f"hf:{root.name}",
            [],
            sources={"folder": str(root), "arrow_files": ", ".join(f.name for f in files)},
            meta_files=meta_files,
        )
        hint = (
            f"Rows of {root.name} without image bytes name files relative to {img_root}; "
            "pass images=... (--images) if they are elsewhere."
        )
        self.samples = tuple(
            self._finish(rows, Selection(limit, sample, seed, missing), root=img_root, hint=hint)
        )


def is_hf_folder(path: Path) -> bool:
    """A ``save_to_disk`` folder: a Dataset (arrow files with its state/info) or a DatasetDict."""
    if (path / "dataset_dict.json").is_file():
        return True
    return any(path.glob("data-*.arrow")) and (
        (path / "state.json").is_file() or (path / "dataset_info.json").is_file()
    )


def _hf_split_folder(path: Path) -> Path:
    if not path.is_dir():
        raise InputNotFoundError(f"{path}: no such folder")
    dd = path / "dataset_dict.json"
    if dd.is_file():
        try:
            splits = list(json.loads(dd.read_text(encoding="utf-8")).get("splits", []))
        except (json.JSONDecodeError, AttributeError) as exc:
            raise DatasetError(f"{dd}: not a valid dataset_dict.json ({exc})") from exc
        if len(splits) == 1:
            return path / splits[0]
        raise DatasetError(
            f"{path} holds several splits ({', '.join(splits)}); "
            f"name one, e.g. {path / (splits[0] if splits else 'test')}"
        )
    return path


def _hf_arrow_files(root: Path) -> list[Path]:
    state = root / "state.json"
    files: list[Path] = []
    if state.is_file():
        try:
            entries = json.loads(state.read_text(encoding="utf-8")).get("_data_files", [])
            files = [root / e["filename"] for e in entries]
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
            raise DatasetError(f"{state}: not a valid state.json ({exc})") from exc
    files = files or sorted(root.glob("data-*.arrow"))
    if not files:
        raise EmptySourceError(f"{root}: no data-*.arrow files; is this a folder written by save_to_disk?")
    for f in files:
        if not f.is_file():
            raise InputNotFoundError(f"{f}: listed in {state} but not on disk")
    return files


def _read_arrow(path: Path) -> Any:
    import pyarrow as pa

    source = pa.memory_map(str(path))
    try:  # save_to_disk writes the IPC stream format; accept the file format too
        return pa.ipc.open_stream(source).read_all()
    except pa.ArrowInvalid:
        source = pa.memory_map(str(path))
        try:
            return pa.ipc.open_file(source).read_all()
        except pa.ArrowInvalid as exc:
            raise DatasetError(f"{path}: not an Arrow file ({exc})") from exc


def _hf_image_column(root: Path, columns: Sequence[str]) -> str | None:
    info = root / "dataset_info.json"
    if not info.is_file():
        return None
    try:
        features = json.loads(info.read_text(encoding="utf-8")).get("features") or {}
    except (json.JSONDecodeError, AttributeError):
        return None
    for name, feature in features.items() if isinstance(features, dict) else ():
        if isinstance(feature, dict) and feature.get("_type") == "Image" and name in columns:
            return str(name)
    return None


def _is_scalar(t: Any) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
    )


def _hf_image_refs(column: Any) -> tuple[list[bool], list[str]]:
    """Per row: whether it holds image bytes, and its path ("" when none). Reads no image bytes."""
    import pyarrow as pa

    has_bytes: list[bool] = []
    paths: list[str] = []
    for chunk in column.chunks:
        t = chunk.type
        if pa.types.is_struct(t):
            parts = dict(zip([t.field(j).name for j in range(t.num_fields)], chunk.flatten(), strict=True))
            b, p = parts.get("bytes"), parts.get("path")
            n = len(chunk)
            has_bytes += b.is_valid().to_pylist() if b is not None else [False] * n
            paths += ["" if v is None else str(v) for v in p.to_pylist()] if p is not None else [""] * n
        elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
            has_bytes += chunk.is_valid().to_pylist()
            paths += [""] * len(chunk)
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            has_bytes += [False] * len(chunk)
            paths += ["" if v is None else v for v in chunk.to_pylist()]
        else:
            raise DatasetError(
                f"image column of type {t} holds neither bytes, {{bytes, path}} structs nor paths"
            )
    return has_bytes, paths


def _arrow_loader(column: Any, i: int) -> Callable[[], bytes]:
    def load() -> bytes:
        value = column[i].as_py()
        data = value.get("bytes") if isinstance(value, dict) else value
        if not isinstance(data, bytes | bytearray):
            raise DatasetError(f"row {i} of the image column holds no image bytes")
        return bytes(data)

    return load


# --- opening a spec ------------------------------------------------------------------------------

KINDS = ("im2gps3k", "im2gps", "yfcc4k", "csv", "parquet", "table", "exif", "hf")


def open_dataset(
    spec: str,
    *,
    images: Path | None = None,
    meta: Path | None = None,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    missing: Missing | None = None,
) -> Dataset:
    """Open a benchmark from a spec: ``im2gps3k:IMAGES``, ``im2gps:IMAGES``, ``yfcc4k:IMAGES``, a
    table path (``.csv``/``.tsv``/``.parquet``), a folder of geotagged photos, or a ``save_to_disk``
    folder (each also as ``csv:``, ``exif:``, ``hf:`` + path).

    ``images`` overrides where images are looked for; ``meta`` names a benchmark's metadata table.
    ``sample`` draws N with ``random.Random(seed)`` from the stable (sorted by id) order, then
    ``limit`` keeps the first N. ``missing="error"`` fails when a selected image is not on disk;
    ``"skip"`` drops the missing ones first (the selection is then drawn from the images present)
    and records how many. ``None`` takes the dataset's default: ``"skip"`` for the published
    benchmarks (a folder often holds part of one; none present is still an error), ``"error"`` for
    your own tables and folders (a missing file there is more likely a typo)."""
    if missing is not None:
        Selection(limit, sample, seed, missing).check()
    kind, target = _parse_spec(spec)
    common: dict[str, Any] = {"limit": limit, "sample": sample, "seed": seed}
    if missing is not None:
        common["missing"] = missing
    if kind in ("im2gps3k", "im2gps", "yfcc4k"):
        cls = {"im2gps3k": Im2GPS3k, "im2gps": Im2GPS, "yfcc4k": YFCC4k}[kind]
        if target is None or (target.is_file() and target.suffix.lower() in TABLE_SUFFIXES):
            # "im2gps3k:meta.csv --images DIR" names the metadata instead of the folder
            meta = meta or target
            target = images or (target.parent if target is not None else None)
            return cls(_need(target, spec, kind), meta=meta, **common)
        if images is not None:  # the spec's folder may still hold the metadata
            return cls(images, meta=meta, meta_dirs=[target, target.parent], **common)
        return cls(target, meta=meta, **common)
    if target is None:
        raise DatasetError(f"{spec!r}: name a file or folder after '{kind}:'")
    if not target.exists():
        raise InputNotFoundError(f"{target}: no such file or folder (dataset spec {spec!r})")
    if kind in ("csv", "parquet", "table") or (kind is None and target.is_file()):
        if target.suffix.lower() not in TABLE_SUFFIXES:
            raise DatasetError(
                f"{target}: a dataset file must be a table ({', '.join(TABLE_SUFFIXES)}); "
                "for a folder of photos, pass the folder"
            )
        return TableDataset(target, images=images, **common)
    if not target.is_dir():
        raise DatasetError(f"{spec!r}: {kind} datasets are folders, and {target} is a file")
    if kind == "hf" or (kind is None and is_hf_folder(target)):
        return HFDiskDataset(target, images=images, **common)
    return ExifFolderDataset(target, **common)


def _need(target: Path | None, spec: str, kind: str) -> Path:
    if target is None:
        raise DatasetError(f"{spec!r}: name the image folder, e.g. {kind}:/data/{kind} (or pass images=...)")
    return target


def _parse_spec(spec: str) -> tuple[str | None, Path | None]:
    head, sep, rest = spec.partition(":")
    key = head.strip().lower()
    if sep and len(head) > 1 and key in KINDS:
        return key, Path(rest).expanduser() if rest.strip() else None
    if sep and len(head) > 1 and head.isidentifier() and not Path(spec).expanduser().exists():
        close = difflib.get_close_matches(key, KINDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DatasetError(f"{spec!r}: unknown dataset kind {head!r} (known: {', '.join(KINDS)}){hint}")
    return None, Path(spec).expanduser()


__all__ = [
    "KINDS",
    "Dataset",
    "DatasetError",
    "ExifFolderDataset",
    "HFDiskDataset",
    "Im2GPS",
    "Im2GPS3k",
    "MetadataNotFoundError",
    "Missing",
    "MissingImagesError",
    "Selection",
    "TableDataset",
    "YFCC4k",
    "is_hf_folder",
    "open_dataset",
    "select",
]
