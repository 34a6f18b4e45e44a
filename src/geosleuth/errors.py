"""Typed errors. Each subclasses a built-in so callers can catch either, and each message names
the input, the offending value and the fix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SHOW_MISSING = 5  # missing files named in a MissingImagesError message


class GeoSleuthError(Exception):
    """Base class of every error geosleuth raises on purpose."""


# --- input images -------------------------------------------------------------------------------


class ImageInputError(GeoSleuthError, ValueError):
    """An input could not be used as a photo. ``source`` names it (a path, ``<stdin>`` or ``<bytes>``)."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        self.reason = message
        super().__init__(f"{source}: {message}")


class ImageNotFoundError(ImageInputError, FileNotFoundError):
    """The path does not exist."""


class NotAFileError(ImageInputError, IsADirectoryError):
    """The path is a directory (or another non-regular file) where an image file was expected."""


class EmptyImageError(ImageInputError):
    """The file has zero bytes."""


class NotAnImageError(ImageInputError):
    """The bytes are not an image in any format we can identify."""


class UnsupportedFormatError(ImageInputError):
    """A recognised format that geosleuth cannot decode (PDF, SVG, camera RAW, ...)."""


class CorruptImageError(ImageInputError):
    """The file claims to be an image but is truncated or damaged."""


class ImageTooLargeError(ImageInputError):
    """The image declares more pixels than the configured limit (a decompression bomb, or a huge scan)."""


# --- configuration and optional parts -----------------------------------------------------------


class ConfigError(GeoSleuthError, ValueError):
    """Settings could not be read or are invalid."""


class MissingDependencyError(GeoSleuthError, ImportError):
    """An optional dependency is not installed. The message names the extra that provides it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{purpose} needs the Python package {package!r}, which is not installed. "
            f"Install it with: pip install 'geosleuth[{extra}]'"
        )


class EngineUnavailableError(GeoSleuthError, RuntimeError):
    """A configured engine (OCR, language ID, ...) cannot run here; the message says how to enable it."""


# --- models and indexes -------------------------------------------------------------------------


class WeightsNotFoundError(GeoSleuthError, FileNotFoundError):
    """Model weights are not on this machine. The message says what to download and where."""

    def __init__(self, what: str, message: str) -> None:
        self.what = what
        super().__init__(f"{what}: {message}")


class IndexError_(GeoSleuthError, ValueError):
    """A neighbour index cannot be used: corrupt, truncated, or built by another encoder."""


class EmptySourceError(GeoSleuthError, ValueError):
    """A source (folder, table, gallery) holds nothing usable."""


# --- VLM reasoning ------------------------------------------------------------------------------


class PromptTemplateError(GeoSleuthError, ValueError):
    """A prompt template is missing, has a syntax error, or was rendered without one of its variables."""


class VLMError(GeoSleuthError, RuntimeError):
    """A VLM request or answer could not be used. Subclasses say which way it failed."""


class VLMConnectionError(VLMError, ConnectionError):
    """The server could not be reached (refused, dropped, timed out), retries included."""


class VLMServerError(VLMError):
    """The server answered with an error status (5xx, or 429 after every retry)."""


class VLMRequestRejectedError(VLMError):
    """The server refused the request as invalid (4xx other than 429): wrong model, too many images..."""


class VLMTruncatedError(VLMError):
    """The answer stopped at the token limit (``finish_reason == "length"``); raise max_tokens."""


class VLMUnusableOutputError(VLMError):
    """The answer holds no usable coordinates (no JSON, no coordinates, or out of range)."""


# --- network tools ------------------------------------------------------------------------------


class ToolUnavailableError(GeoSleuthError, ConnectionError):
    """A network tool could not answer: offline mode, network down, or an error after every retry.

    ``reason`` is one line; ``status`` is the last HTTP status the service answered with (None when
    no answer came) and ``attempts`` the requests made (None when none was tried)."""

    def __init__(
        self, service: str, url: str, reason: str, status: int | None = None, attempts: int | None = None
    ) -> None:
        self.service = service
        self.url = url
        self.reason = reason
        self.status = status
        self.attempts = attempts
        super().__init__(f"{service} ({url}) is unavailable: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # survive pickling between processes
        return (type(self), (self.service, self.url, self.reason, self.status, self.attempts))


class ToolMisconfiguredError(ToolUnavailableError):
    """The service answered, but in a way only a settings change can fix (a SearXNG instance without
    its JSON format, a URL that serves a web page): retrying cannot help; ``reason`` names the change."""


class ToolQueryError(GeoSleuthError, ValueError):
    """A tool was called with an argument it cannot use (empty name, radius out of range, ...)."""


# --- evaluation ---------------------------------------------------------------------------------


class UnknownMetricError(GeoSleuthError, KeyError):
    """A metric name that is not registered; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class DatasetError(GeoSleuthError, ValueError):
    """A dataset spec or its metadata cannot be used (unknown kind, duplicate ids, bad option)."""


class MetadataNotFoundError(GeoSleuthError, FileNotFoundError):
    """A benchmark's metadata table is not where it was looked for; the message says where to get it."""


class MissingImagesError(GeoSleuthError, FileNotFoundError):
    """Images the dataset lists are not on disk. ``missing`` holds their names (all of them)."""

    def __init__(self, dataset: str, missing: Sequence[str], selected: int, where: str, hint: str) -> None:
        self.dataset = dataset
        self.missing = list(missing)
        shown = ", ".join(self.missing[:SHOW_MISSING]) + (", ..." if len(self.missing) > SHOW_MISSING else "")
        super().__init__(
            f"{dataset}: {len(self.missing)} of {selected} images are missing from {where} "
            f"(first: {shown}). {hint} Or pass missing='skip' (--skip-missing) to evaluate the images "
            "that are there; the count is recorded with the results."
        )


class StripError(GeoSleuthError, ValueError):
    """The photo's GPS could not be removed (no pixels to re-encode, metadata too big for JPEG)."""
