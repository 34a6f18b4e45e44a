"""Test setup: no network, no model hubs, one shared gazetteer index per machine."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SHARED_DATA = ROOT.parent / "shared" / "data"
EXIF_PHOTOS = SHARED_DATA / "exif-photos"

# Before anything imports huggingface_hub or transformers.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Building the gazetteer index takes ~15 s; share it between test runs on one machine.
os.environ.setdefault("GEOSLEUTH_CACHE_DIR", str(ROOT / ".cache" / "test-cache"))
for var in list(os.environ):
    if var.startswith("GEOSLEUTH_") and var != "GEOSLEUTH_CACHE_DIR":
        del os.environ[var]
os.environ["GEOSLEUTH_CONFIG"] = str(ROOT / "tests" / "no-config.toml")


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
