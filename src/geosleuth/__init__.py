"""geosleuth: where was this photo taken? Evidence first, then retrieval and VLM reasoning, verified.

The package imports nothing heavy at import time; ``geosleuth.locate`` loads its stages on first use.

    >>> import geosleuth
    >>> prediction = geosleuth.locate("photo.jpg")          # doctest: +SKIP
    >>> prediction.best.point, prediction.confidence_level   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Locator", "Settings", "__version__", "alocate", "load_settings", "locate"]

try:
    from importlib.metadata import version as _version

    __version__ = _version("geosleuth")
except Exception:  # pragma: no cover - source tree without an install
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from geosleuth.agents.pipeline import Locator, alocate, locate
    from geosleuth.config import Settings, load_settings


def __getattr__(name: str) -> Any:
    if name in ("locate", "alocate", "Locator"):
        from geosleuth.agents import pipeline

        return getattr(pipeline, name)
    if name in ("Settings", "load_settings"):
        from geosleuth import config

        return getattr(config, name)
    raise AttributeError(f"module 'geosleuth' has no attribute {name!r}")
