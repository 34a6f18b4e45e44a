"""The report's offline basemap: the geodata, the projection, and the SVG it draws.

Land and sea are checked on the SVG path data itself, parsed back and tested point by point
(even-odd), so these tests prove the drawn artefact, not an intermediate."""

from __future__ import annotations

import importlib.util
import re
import struct
import threading
import time
import zipfile
from pathlib import Path

import pytest

from geosleuth.errors import BasemapDataError, MissingDependencyError, exit_code
from geosleuth.geo import haversine_km
from geosleuth.report import basemap as bm
from geosleuth.report.basemap import (
    WORLD,
    circle_path,
    load_basemap,
    point_xy,
    read_basemap,
    view_box,
    view_box_attr,
)
from geosleuth.schemas import LatLon

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec(bm.DATA_PACKAGE) is None,
    reason=f"the basemap's geodata is not installed: pip install 'geosleuth[{bm.EXTRA}]'",
)

PARIS = LatLon(lat=48.8566, lon=2.3522)
TOKYO = LatLon(lat=35.6895, lon=139.6917)
SYDNEY = LatLon(lat=-33.8688, lon=151.2093)
LAND = {
    "paris": PARIS,
    "tokyo": TOKYO,
    "sydney": SYDNEY,
    "nairobi": LatLon(lat=-1.2864, lon=36.8172),
    "maseru (lesotho, inside south africa)": LatLon(lat=-29.31, lon=27.48),
    "manaus": LatLon(lat=-3.119, lon=-60.0217),
}
SEA = {
    "gulf of guinea": LatLon(lat=0, lon=-30),
    "mid atlantic": LatLon(lat=45, lon=-30),
    "caspian sea": LatLon(lat=42.0, lon=50.5),
    "tasman sea": LatLon(lat=-40, lon=160),
    "central pacific": LatLon(lat=0, lon=-150),
}

_TOKEN = re.compile(r"[MmLlZz]|-?(?:\d+\.?\d*|\.\d+)")


def parse_path(d: str) -> list[list[tuple[float, float]]]:
    """Subpaths of SVG path data made of M/m, L/l and Z/z (with implicit repeats), absolute points."""
    tokens = _TOKEN.findall(d)
    assert "".join(tokens).replace(" ", "") == re.sub(r"[\s,]", "", d)  # nothing else in the data
    paths: list[list[tuple[float, float]]] = []
    i, cmd, x, y = 0, "", 0.0, 0.0
    while i < len(tokens):
        t = tokens[i]
        if t in "MmLlZz":
            cmd = t
            i += 1
            if t in "Zz":
                x, y = paths[-1][0]
            continue
        dx, dy = float(t), float(tokens[i + 1])
        i += 2
        if cmd in "Mm":
            x, y = (x + dx, y + dy) if cmd == "m" and paths else (dx, dy)
            x, y = round(x, 6), round(y, 6)  # relative steps add up float error
            paths.append([(x, y)])
            cmd = "l" if cmd == "m" else "L"  # coordinates after a move are lines
        else:
            x, y = (x + dx, y + dy) if cmd == "l" else (dx, dy)
            x, y = round(x, 6), round(y, 6)
            paths[-1].append((x, y))
    return paths


def inside_even_odd(rings: list[list[tuple[float, float]]], x: float, y: float) -> bool:
    crossings = 0
    for ring in rings:
        for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1], strict=True):
            if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                crossings += 1
    return crossings % 2 == 1


def attribute(svg: str, cls: str, name: str) -> str:
    match = re.search(rf'<path class="{cls}"[^>]* {name}="([^"]*)"', svg)
    assert match, f"no {name} on the {cls} path"
    return match.group(1)


@pytest.fixture(scope="module")
def basemap() -> bm.Basemap:
    return load_basemap()


@pytest.fixture(scope="module")
def world_land(basemap: bm.Basemap) -> list[list[tuple[float, float]]]:
    return parse_path(basemap.land_path())


# --- the data -----------------------------------------------------------------------------------


def test_loads_with_its_provenance(basemap: bm.Basemap) -> None:
    source = basemap.source
    assert source.package == bm.DATA_DISTRIBUTION
    assert source.package_version
    assert source.scale == "1:10m"
    assert re.fullmatch(r"\d+\.\d+\.\d+", source.dataset_version)  # from the zip's VERSION.txt
    assert "public domain" in source.licence
    assert source.file.endswith(bm.DATA_FILE)


def test_world_svg_is_one_group_of_bounded_size(basemap: bm.Basemap) -> None:
    svg = basemap.svg_group()
    assert svg.startswith('<g class="basemap">') and svg.endswith("</g>")
    assert re.findall(r'<path class="(\w+)"', svg) == ["land", "borders"]
    assert re.search(r'<path class="land" fill-rule="evenodd"', svg)
    assert "style" not in svg
    land, borders = attribute(svg, "land", "d"), attribute(svg, "borders", "d")
    assert len(land) > 100_000 and len(borders) > 10_000
    assert len(svg) <= 400_000
    assert not re.search(r"\.\d{3}", svg)  # at most 2 decimals
    assert land == basemap.land_path() and borders == basemap.borders_path()


def test_world_covers_the_world(world_land: list[list[tuple[float, float]]]) -> None:
    xs = [x for ring in world_land for x, _ in ring]
    ys = [y for ring in world_land for _, y in ring]
    assert min(xs) == -180 and max(xs) == 180
    assert min(ys) > -84 and max(ys) == 90  # north to Greenland's tip, south to the pole (Antarctica)
    assert len(world_land) > 1000  # continents and islands


@pytest.mark.parametrize("name", LAND)
def test_known_places_are_on_land(world_land: list[list[tuple[float, float]]], name: str) -> None:
    assert inside_even_odd(world_land, *point_xy(LAND[name]))


@pytest.mark.parametrize("name", SEA)
def test_open_sea_is_not_land(world_land: list[list[tuple[float, float]]], name: str) -> None:
    assert not inside_even_odd(world_land, *point_xy(SEA[name]))


def test_borders_are_shared_edges_not_coasts(basemap: bm.Basemap) -> None:
    lines = parse_path(basemap.borders_path())
    points = [p for line in lines for p in line]
    # France, Andorra and Spain meet around 42.5N 1.5E.
    assert any(abs(x - 1.5) < 0.3 and abs(y + 42.5) < 0.3 for x, y in points)
    # Australia's mainland has no land border, and no border crosses the open Atlantic.
    assert not any(114 < x < 153 and 11 < y < 39 for x, y in points)
    assert not any(-40 < x < -20 and -40 < y < 40 for x, y in points)
    assert all(len(line) >= 2 for line in lines)


def test_a_view_adds_detail_inside_it(basemap: bm.Basemap) -> None:
    view = view_box([LatLon(lat=48.4, lon=-4.5)], 60)  # Brest: a ragged coast
    x0, y0, w, h = view

    def inside(rings: list[list[tuple[float, float]]]) -> int:
        return sum(1 for r in rings for x, y in r if x0 <= x <= x0 + w and y0 <= y <= y0 + h)

    world = parse_path(basemap.land_path())
    detail = parse_path(basemap.land_path(view))
    assert inside(detail) > 3 * inside(world)
    assert len(basemap.svg_group(view)) < len(basemap.svg_group()) + 100_000
    for place in (PARIS, SYDNEY, TOKYO):
        assert inside_even_odd(parse_path(basemap.land_path(view_box([place]))), *point_xy(place))
    assert basemap.land_path(WORLD) == basemap.land_path()
    with pytest.raises(ValueError, match="view"):
        basemap.land_path((0, 0, 0, 1))


# --- the projection -----------------------------------------------------------------------------


def contains(view: tuple[float, float, float, float], point: LatLon) -> bool:
    x, y = point_xy(point)
    return view[0] <= x <= view[0] + view[2] and view[1] <= y <= view[1] + view[3]


def test_point_xy_is_plate_carree() -> None:
    assert point_xy(PARIS) == (2.3522, -48.8566)


def test_view_of_one_point_is_small_and_holds_it() -> None:
    view = view_box([PARIS])
    assert contains(view, PARIS)
    assert view[2] == pytest.approx(0.2) and view[3] == pytest.approx(0.2)
    assert view_box([PARIS], min_size_deg=1.0)[2] == pytest.approx(1.0)


def test_view_of_two_cities_holds_both_with_a_margin() -> None:
    view = view_box([PARIS, TOKYO])
    assert contains(view, PARIS) and contains(view, TOKYO)
    assert view[2] == pytest.approx((TOKYO.lon - PARIS.lon) * 1.2)
    assert view[0] < PARIS.lon and view[0] + view[2] > TOKYO.lon


def test_view_holds_circles_wider_in_x_at_high_latitude() -> None:
    view = view_box([PARIS], 500)
    r_deg = 500 / 111.2
    assert view[3] == pytest.approx(2 * r_deg * 1.2, rel=0.02)
    assert view[2] > 1.4 * view[3]  # cos(48.9°) = 0.66
    per_point = view_box([PARIS, TOKYO], [10, 2000])
    assert per_point[1] + per_point[3] > -TOKYO.lat + 2000 / 111.2
    with pytest.raises(ValueError, match="radii_km"):
        view_box([PARIS, TOKYO], [10])
    with pytest.raises(ValueError, match="radii_km"):
        view_box([PARIS], -1)


def test_views_across_the_antimeridian_and_the_poles_are_valid() -> None:
    fiji, samoa = LatLon(lat=-17.7, lon=178.1), LatLon(lat=-13.8, lon=-172.1)
    for view in (
        view_box([fiji, samoa]),
        view_box([fiji], 800),  # the circle crosses ±180
        view_box([LatLon(lat=89.5, lon=10)], 300),  # and this one the pole
        view_box([LatLon(lat=-90, lon=0), LatLon(lat=90, lon=0)]),
    ):
        x, y, w, h = view
        assert 0 < w <= 360 and 0 < h <= 180
        assert x >= -180 and x + w <= 180 + 1e-9 and y >= -90 and y + h <= 90 + 1e-9
    assert view_box([fiji, samoa])[2] == 360  # plate carrée cannot show the short way in one piece
    assert contains(view_box([fiji, samoa]), fiji) and contains(view_box([fiji, samoa]), samoa)
    assert view_box(None) == WORLD == view_box([])
    assert view_box_attr(WORLD) == "-180 -90 360 180"


def test_circle_is_geodesic_and_wider_in_x_away_from_the_equator() -> None:
    def bbox(d: str) -> tuple[float, float]:
        points = [p for ring in parse_path(d) for p in ring]
        xs, ys = [x for x, _ in points], [y for _, y in points]
        return max(xs) - min(xs), max(ys) - min(ys)

    w60, h60 = bbox(circle_path(LatLon(lat=60, lon=10), 300))
    assert w60 == pytest.approx(2 * h60, rel=0.05)  # 1 / cos(60°)
    w0, h0 = bbox(circle_path(LatLon(lat=0, lon=10), 300))
    assert w0 == pytest.approx(h0, rel=0.02)
    (ring,) = parse_path(circle_path(PARIS, 500, n=32))
    assert len(ring) == 32
    distances = [float(haversine_km(-y, x, PARIS.lat, PARIS.lon)) for x, y in ring]
    assert distances == pytest.approx([500.0] * 32, abs=0.5)


def test_circles_across_the_antimeridian_and_around_a_pole() -> None:
    east, west = parse_path(circle_path(LatLon(lat=-17.7, lon=178.1), 800))
    assert max(x for x, _ in east) > 180 and min(x for x, _ in west) < -180  # drawn on both sides
    (polar,) = parse_path(circle_path(LatLon(lat=85, lon=0), 1000))
    xs = [x for x, _ in polar]
    assert min(xs) == -180 and max(xs) == 180 and min(y for _, y in polar) == -90  # closes at the pole
    assert inside_even_odd([polar], 0, -89.9) and not inside_even_odd([polar], 0, -60)
    with pytest.raises(ValueError, match="radius_km"):
        circle_path(PARIS, 0)


# --- loading once, and failing clearly ----------------------------------------------------------


def test_loaded_once_per_process_and_then_free(basemap: bm.Basemap) -> None:
    assert load_basemap() is basemap
    start = time.perf_counter()
    for _ in range(100):
        load_basemap()
    assert (time.perf_counter() - start) / 100 < 0.001


def test_first_callers_in_threads_share_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = []
    real = bm.read_basemap

    def counted() -> bm.Basemap:
        reads.append(1)
        return real()

    monkeypatch.setattr(bm, "read_basemap", counted)
    bm._load_cached.cache_clear()
    results: list[bm.Basemap] = []
    threads = [threading.Thread(target=lambda: results.append(load_basemap())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reads) == 1 and len(results) == 4 and all(r is results[0] for r in results)


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match=r"geosleuth\[report\]") as info:
        read_basemap()
    assert info.value.package == bm.DATA_DISTRIBUTION and exit_code(info.value) == 2


# --- a tiny shapefile, written here, for the topology and the error paths -----------------------


def write_shp(path: Path, polygons: list[list[list[tuple[float, float]]]], shape_type: int = 5) -> Path:
    """A minimal .shp: one Polygon record per entry, each a list of closed rings."""
    records = b""
    for number, rings in enumerate(polygons, start=1):
        points = [p for ring in rings for p in ring]
        starts, n = [], 0
        for ring in rings:
            starts.append(n)
            n += len(ring)
        content = struct.pack("<i4d2i", shape_type, 0, 0, 0, 0, len(rings), len(points))
        content += struct.pack(f"<{len(starts)}i", *starts)
        content += b"".join(struct.pack("<2d", *p) for p in points)
        records += struct.pack(">2i", number, len(content) // 2) + content
    header = struct.pack(">7i", 9994, 0, 0, 0, 0, 0, (100 + len(records)) // 2)
    header += struct.pack("<2i4d4d", 1000, 5, -180, -90, 180, 90, 0, 0, 0, 0)
    path.write_bytes(header + records)
    return path


def square(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x0, y1), (x1, y1), (x1, y0), (x0, y0)]  # clockwise, as shapefiles store outer rings


def test_land_is_the_union_and_borders_the_shared_edges(tmp_path: Path) -> None:
    # Two neighbours sharing the edge lon = 1 (B's points run the other way along it, with one
    # more vertex at its end), and an island.
    a = [square(0, 0, 1, 1)]
    b = [[(1, 0), (1, 1), (2, 1), (2, 0), (1, 0)]]
    island = [square(5, 5, 5.5, 5.5)]
    path = write_shp(tmp_path / "countries.shp", [a, b, island])
    m = read_basemap(path, tolerance_deg=0.01)
    assert m.source.file == str(path)
    land = parse_path(m.land_path())
    assert len(land) == 2  # A and B as one ring, and the island
    assert sorted(len(r) for r in land) == [4, 6]  # the union keeps the shared edge's two ends
    assert inside_even_odd(land, 0.5, -0.5) and inside_even_odd(land, 1.5, -0.5)
    assert inside_even_odd(land, 5.2, -5.2) and not inside_even_odd(land, 3, -0.5)
    borders = parse_path(m.borders_path())
    assert [sorted(line) for line in borders] == [[(1.0, -1.0), (1.0, 0.0)]]  # drawn once


def test_zipped_data_and_its_version_are_read(tmp_path: Path) -> None:
    shp = write_shp(tmp_path / "x.shp", [[square(0, 0, 10, 10)]])
    archive = tmp_path / "x.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(shp, "x.shp")
        z.writestr("x.VERSION.txt", "9.9.9\n")
    m = read_basemap(archive)
    assert m.source.dataset_version == "9.9.9"
    assert parse_path(m.land_path()) == [[(0, 0), (0, -10), (10, -10), (10, 0)]]


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("garbage.shp", b"not a shapefile", "no shapefile header"),
        ("truncated.shp", None, "runs past the end"),
        ("points.shp", None, "shape type 1"),
        ("latlon.shp", None, "not longitude/latitude"),
        ("empty.zip", b"", "not a readable zip"),
        ("missing.shp", None, "no such file"),
    ],
)
def test_unreadable_data_is_a_typed_error(
    tmp_path: Path, name: str, data: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if data is not None:
        path.write_bytes(data)
    elif name == "truncated.shp":
        write_shp(path, [[square(0, 0, 1, 1)]])
        path.write_bytes(path.read_bytes()[:-20])
    elif name == "points.shp":
        write_shp(path, [[square(0, 0, 1, 1)]], shape_type=1)
    elif name == "latlon.shp":
        write_shp(path, [[square(500_000, 0, 600_000, 100_000)]])  # projected metres, not degrees
    with pytest.raises(BasemapDataError, match=message) as info:
        read_basemap(path)
    assert isinstance(info.value, ValueError) and exit_code(info.value) == 2
    assert "reinstall" in str(info.value)


def test_with_aspect_grows_a_strip_or_a_ribbon_into_a_readable_view():
    from geosleuth.report.basemap import with_aspect

    strip = view_box([LatLon(lat=52.0, lon=10.0), LatLon(lat=-26.0, lon=28.0)])  # Europe to South Africa
    assert strip[2] / strip[3] < 1
    x, _, w, h = with_aspect(strip)
    assert w / h == pytest.approx(1.25) and h == pytest.approx(strip[3])
    assert x + w / 2 == pytest.approx(strip[0] + strip[2] / 2)  # about the same centre
    ribbon = view_box([LatLon(lat=48.0, lon=-4.0), LatLon(lat=35.7, lon=139.7)], 50)  # Brest to Tokyo
    _, _, w, h = with_aspect(ribbon)
    assert w / h == pytest.approx(2.2) and w == pytest.approx(ribbon[2])
    assert with_aspect((-180.0, -90.0, 360.0, 180.0)) == (-180.0, -90.0, 360.0, 180.0)  # the world fits
    tall = with_aspect((-10.0, -90.0, 20.0, 180.0))  # cannot grow past the poles: it widens
    assert tall[3] == 180.0 and tall[2] == pytest.approx(225.0)
