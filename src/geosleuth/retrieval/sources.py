"""Where the photos of a neighbour index come from: a folder of geotagged photos, a table of
(image, lat, lon[, place fields]), or MP16-Pro's metadata layout.

Every source lists its items in a stable order (so a build can be resumed shard by shard) and says
how to open each image. Coordinates come from the table, or from EXIF when the source is a folder.
"""

from __future__ import annotations

import csv
import hashlib
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from geosleuth.errors import EmptySourceError, InputNotFoundError, TableError
from geosleuth.retrieval.tables import LAT_NAMES, LON_NAMES, find_column, read_table
from geosleuth.tools.image import IMAGE_SUFFIXES

Layout = Literal["auto", "folder", "table", "mp16"]
IMAGE_COLUMNS = ("image", "path", "file", "filename", "image_path", "img_id", "img", "photo")
PLACE_COLUMNS = ("neighbourhood", "city", "county", "state", "region", "country", "country_code", "continent")


@dataclass
class SourceItem:
    key: str
    """Stable identity: the path relative to the source, or the table's image id."""
    open_bytes: Callable[[], bytes]
    lat: float | None = None
    lon: float | None = None
    place: dict[str, str] = field(default_factory=dict)


@dataclass
class Source:
    path: Path
    layout: str
    items: list[SourceItem]
    bad_rows: list[tuple[str, str]] = field(default_factory=list)
    """(key, reason) for table rows refused before any image is opened."""

    @property
    def fingerprint(self) -> str:
        """Identifies the item list: a resumed build must see the same items in the same order."""
        h = hashlib.sha256()
        for it in self.items:
            h.update(f"{it.key}\t{it.lat}\t{it.lon}\n".encode())
        return h.hexdigest()


def open_source(path: str | Path, *, layout: Layout = "auto", images: str | Path | None = None) -> Source:
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path}: no such file or folder")
    if layout == "auto":
        if path.is_dir():
            layout = "folder"
        else:
            header = _header(path)
            layout = (
                "mp16"
                if {"img_id", "lat", "lon"} <= {h.lower() for h in header}
                and "city" in {h.lower() for h in header}
                else "table"
            )
    if layout == "folder":
        source = _folder(path)
    elif layout == "mp16":
        source = _mp16(path, Path(images) if images else path.parent)
    else:
        source = _table(path, Path(images) if images else path.parent)
    if not source.items:
        detail = f" ({len(source.bad_rows)} rows refused: {source.bad_rows[0][1]})" if source.bad_rows else ""
        raise EmptySourceError(f"{path}: no images to index in this {layout} source{detail}")
    return source


def _header(path: Path) -> list[str]:
    if path.suffix.lower() in (".parquet", ".pq"):
        return list(read_table(path))
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return next(csv.reader(fh), [])


def _file_opener(p: Path) -> Callable[[], bytes]:
    return p.read_bytes


def _folder(root: Path) -> Source:
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    items = [SourceItem(key=str(p.relative_to(root)), open_bytes=_file_opener(p)) for p in files]
    return Source(root, "folder", items)


def _table(path: Path, images: Path) -> Source:
    columns = read_table(path)
    image_col = find_column(columns, IMAGE_COLUMNS, path, "image path")
    lat_col = find_column(columns, LAT_NAMES, path, "latitude")
    lon_col = find_column(columns, LON_NAMES, path, "longitude")
    place_cols = [c for c in columns if c.lower() in PLACE_COLUMNS]
    items, bad = [], []
    for i, rel in enumerate(columns[image_col]):
        key = rel or f"row {i + 2}"
        try:
            lat, lon = float(columns[lat_col][i]), float(columns[lon_col][i])
        except ValueError:
            bad.append((key, f"row {i + 2}: lat/lon are not numbers"))
            continue
        if not rel:
            bad.append((key, f"row {i + 2}: empty image path"))
            continue
        p = Path(rel)
        p = p if p.is_absolute() else images / p
        place = {c.lower(): columns[c][i] for c in place_cols if columns[c][i]}
        items.append(SourceItem(key=rel, open_bytes=_file_opener(p), lat=lat, lon=lon, place=place))
    return Source(path, "table", items, bad)


def _mp16(path: Path, images: Path) -> Source:
    """MP16-Pro: ``MP16_Pro_places365.csv`` (IMG_ID, LAT, LON, neighbourhood, city, county, state,
    region, country, continent, ...) and the images in a folder or in ``mp-16-images.tar``. IMG_IDs
    like ``ab/cd/123.jpg`` are found as that path, or with '/' turned into '_' (the tar's names)."""
    opener = _TarImages(images) if images.is_file() and tarfile.is_tarfile(images) else None
    items, bad = [], []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        lower = [h.lower() for h in header]
        try:
            i_id, i_lat, i_lon = lower.index("img_id"), lower.index("lat"), lower.index("lon")
        except ValueError:
            raise TableError(
                f"{path}: MP16 layout needs IMG_ID, LAT and LON columns (found: {', '.join(header)})"
            ) from None
        place_idx = [(lower[j], j) for j in range(len(header)) if lower[j] in PLACE_COLUMNS]
        for rownum, row in enumerate(reader, start=2):
            if len(row) <= max(i_id, i_lat, i_lon):
                bad.append((f"row {rownum}", f"row {rownum}: too few columns"))
                continue
            img_id = row[i_id]
            try:
                lat, lon = float(row[i_lat]), float(row[i_lon])
            except ValueError:
                bad.append((img_id, f"row {rownum}: LAT/LON are not numbers"))
                continue
            place = {name: row[j] for name, j in place_idx if j < len(row) and row[j] and row[j] != "nan"}
            open_bytes = opener.opener(img_id) if opener else _mp16_file(images, img_id)
            items.append(SourceItem(key=img_id, open_bytes=open_bytes, lat=lat, lon=lon, place=place))
    return Source(path, "mp16", items, bad)


def _mp16_file(root: Path, img_id: str) -> Callable[[], bytes]:
    def read() -> bytes:
        direct = root / img_id
        if direct.exists():
            return direct.read_bytes()
        return (root / img_id.replace("/", "_")).read_bytes()

    return read


class _TarImages:
    """Images inside one tar, found by base name (MP16's tar holds ``x/y/ab_cd_123.jpg``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] | None = None

    def _index(self) -> dict[str, tarfile.TarInfo]:
        if self._members is None:
            self._tar = tarfile.open(self.path)  # noqa: SIM115 - kept open: members are read one by one
            self._members = {m.name.rsplit("/", 1)[-1]: m for m in self._tar if m.isfile()}
        return self._members

    def opener(self, img_id: str) -> Callable[[], bytes]:
        def read() -> bytes:
            members = self._index()
            name = img_id.replace("/", "_")
            member = members.get(name) or members.get(img_id.rsplit("/", 1)[-1])
            if member is None or self._tar is None:
                raise FileNotFoundError(f"{img_id} is not in {self.path}")
            fh = self._tar.extractfile(member)
            if fh is None:
                raise FileNotFoundError(f"{img_id} in {self.path} is not a regular file")
            return fh.read()

        return read


def read_image_bytes(item: SourceItem) -> bytes | str:
    """The image's bytes, or a one-line reason it cannot be read."""
    try:
        return item.open_bytes()
    except (OSError, tarfile.TarError) as exc:
        return f"cannot be read ({exc.strerror if isinstance(exc, OSError) and exc.strerror else exc})"
