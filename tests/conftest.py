"""Test setup: no network, no model hubs, one shared gazetteer index per machine."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from geosleuth.testing.http import free_port  # noqa: F401 (the tests import it from here)

if TYPE_CHECKING:
    from geosleuth.testing.browser import Chromium, PageReport
    from geosleuth.testing.searxng_server import FakeSearxngServer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SHARED_DATA = ROOT.parent / "shared" / "data"
EXIF_PHOTOS = SHARED_DATA / "exif-photos"

# Before anything imports huggingface_hub or transformers.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Building the gazetteer index takes ~15 s; share it between test runs on one machine.
os.environ.setdefault("GEOSLEUTH_CACHE_DIR", str(ROOT / ".cache" / "test-cache"))
# A local copy of Leaflet (the npm tarball's package/dist) for the online map's browser test;
# .ci/run fetches it from the npm registry into .cache/.
LEAFLET_DIR = Path(
    os.environ.get("GEOSLEUTH_LEAFLET_DIR")
    or ROOT / ".cache" / "leaflet" / "leaflet-1.9.4" / "package" / "dist"
)
for var in list(os.environ):
    # GEOSLEUTH_CHROMIUM names a program (geosleuth.testing.browser), GEOSLEUTH_LEAFLET_DIR a
    # folder of test data, not settings: they stay.
    kept = ("GEOSLEUTH_CACHE_DIR", "GEOSLEUTH_CHROMIUM", "GEOSLEUTH_LEAFLET_DIR")
    if var.startswith("GEOSLEUTH_") and var not in kept:
        del os.environ[var]
os.environ["GEOSLEUTH_CONFIG"] = str(ROOT / "tests" / "no-config.toml")

try:  # property-based tests (tests/test_fuzz.py): the same examples every run, no database on disk
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "geosleuth",
        derandomize=True,
        database=None,
        deadline=2000,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "geosleuth"))
except ImportError:  # the dev extra is not installed: test_fuzz.py skips
    pass


_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: object) -> None:
    host = address[0] if isinstance(address, tuple) else address
    if (
        isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1"))
    ) or self.family == socket.AF_UNIX:
        return _real_connect(self, address)  # type: ignore[arg-type]
    raise OSError(f"tests may not open network connections (tried {address!r})")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)


@pytest.fixture(autouse=True)
def _progress_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command run with -q turns progress off for its process; in tests every command shares one."""
    import geosleuth.progress

    monkeypatch.setattr(geosleuth.progress, "_enabled", True)


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return Path(os.environ["GEOSLEUTH_CACHE_DIR"])


@pytest.fixture(scope="session")
def gazetteer(cache_dir: Path):  # type: ignore[no-untyped-def]
    from geosleuth.gazetteer import Gazetteer

    return Gazetteer(cache_dir)


@pytest.fixture(scope="session")
def settings(cache_dir: Path):  # type: ignore[no-untyped-def]
    from geosleuth.config import load_settings

    return load_settings(cache_dir=cache_dir)


@pytest.fixture(scope="session")
def locator(settings, gazetteer):  # type: ignore[no-untyped-def]
    from geosleuth.agents.pipeline import Locator, build_deps

    return Locator(deps=build_deps(settings, gazetteer=gazetteer))


@pytest.fixture(scope="session")
def exif_locator(settings, gazetteer):  # type: ignore[no-untyped-def]
    """Metadata only: fast, for tests about EXIF."""
    from geosleuth.agents.pipeline import Locator, build_deps

    return Locator(deps=build_deps(settings.with_overrides(ocr={"engine": "none"}), gazetteer=gazetteer))


def fixture(name: str) -> Path:
    path = FIXTURES / name
    assert path.exists(), f"missing fixture {path}; regenerate with: python tests/data.py"
    return path


def requires_shared_data() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not (EXIF_PHOTOS / "exif-samples" / "gps_index.csv").exists(),
        reason=f"reference photos not found at {EXIF_PHOTOS} (they live beside the repository, see README)",
    )


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    from geosleuth.testing import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    from geosleuth.testing import build_tiny_siglip

    return build_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"))


# --- shared fakes for planner and agent-tool tests ---------------------------------------------------

BERLIN = (52.5163, 13.3777)
KOENIGSTRASSE = (52.5186, 13.4081)  # a point on the street named on the Berlin sign


@pytest.fixture(scope="module")
def fake_vlm():  # type: ignore[no-untyped-def]
    """A scripted OpenAI-compatible VLM server (reset per test by `vlm_server`)."""
    from geosleuth.testing.openai_server import FakeOpenAIServer

    with FakeOpenAIServer(model="tiny-vlm") as srv:
        yield srv


@pytest.fixture
def fake_osm():  # type: ignore[no-untyped-def]
    """Nominatim + Overpass with Berlin (two of them) and the street on the Berlin sign."""
    from geosleuth.testing.osm_server import CannedFeature, CannedPlace, FakeOSMServer

    places = [CannedPlace("Berlin", 52.52, 13.405, "DE"), CannedPlace("Berlin", 44.47, -71.18, "US")]
    features = [CannedFeature("Königstraße", {"highway": "residential"}, *KOENIGSTRASSE)]
    with FakeOSMServer(places=places, features=features) as srv:
        yield srv


def online_tools(osm, tmp_path: Path, **tools) -> dict:  # type: ignore[no-untyped-def]
    """Settings overrides that point the network tools at a fake OSM server, without waits."""
    return {
        "offline": False,
        "cache_dir": str(tmp_path / "cache"),
        "tools": {
            "nominatim_url": osm.nominatim_url,
            "overpass_url": osm.overpass_url,
            "min_interval_s": 0.0,
            "timeout_s": 2.0,
            "retries": 0,
            **tools,
        },
    }


def make_locator(settings, gazetteer, **overrides):  # type: ignore[no-untyped-def]
    from geosleuth.agents.pipeline import Locator, build_deps

    return Locator(deps=build_deps(settings.with_overrides(**overrides), gazetteer=gazetteer))


# Pages the fake SearXNG instance knows: (title, url, content, engines, published, score).
WEB_PAGES: list[tuple[Any, ...]] = [
    (
        "Boulangerie Dupont - Lyon 3e",
        "https://example.org/boulangerie-dupont-lyon",
        "Artisan bakery at 12 rue Paul Bert, 69003 Lyon, France. Open since 1962.",
        ("duckduckgo", "wikipedia"),
        "2023-04-01T09:30:00",
        3.5,
    ),
    (
        "Boulangerie Dupont (Montreal)",
        "https://example.ca/dupont-montreal",
        "Bakery on rue Saint-Denis, Montreal, Quebec.",
        ("qwant",),
        None,
        1.25,
    ),
    (
        "Rua Augusta, Lisbon",
        "https://example.pt/rua-augusta",
        "Pedestrian street in Baixa, Lisbon, Portugal.",
        ("wikipedia",),
        None,
        2.0,
    ),
]


@pytest.fixture
def searxng_server() -> Iterator[FakeSearxngServer]:
    """A fake SearXNG instance (JSON format on) that knows WEB_PAGES."""
    from geosleuth.testing.searxng_server import CannedResult, FakeSearxngServer

    with FakeSearxngServer(results=[CannedResult(*page) for page in WEB_PAGES]) as srv:
        yield srv


# --- a real browser (geosleuth.testing.browser) ------------------------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that drives Chromium is a `browser` test without saying so: `-m "not browser"` works.
    for item in items:
        if "chromium" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    """One headless system Chromium per test module (launching it is the slow part). Skips, naming
    what to install, when Chromium or Playwright is absent."""
    from geosleuth.testing.browser import Chromium, unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"no real browser: {reason}")
    with Chromium() as browser:
        yield browser


@pytest.fixture
def browser_page(chromium: Chromium) -> Iterator[Callable[..., PageReport]]:
    """Open pages offline in the module's Chromium: ``report = browser_page(Path("r.html"))`` or
    ``browser_page("<p>html</p>", width=800)``. Each page closes when the test ends."""
    with ExitStack() as stack:
        yield lambda target, **options: stack.enter_context(chromium.open(target, **options))


# --- databases for the service's storage (geosleuth.service.storage) --------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server in a temp dir, started once per session (skips, naming what to
    install, when its programs or psycopg are absent)."""
    from geosleuth.testing.postgres import TempPostgres, unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"no PostgreSQL server: {reason}")
    with TempPostgres() as pg:
        yield pg.url


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database for each test: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "service.sqlite3")
    import psycopg

    base: str = request.getfixturevalue("postgres_url")
    name = f"t_{os.getpid()}_{abs(hash(request.node.nodeid)) % 10**9}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return base.rsplit("/", 1)[0] + "/" + name
