"""Typed errors. Each subclasses a built-in so callers can catch either, and each message names
the input, the offending value and the fix."""

from __future__ import annotations


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
