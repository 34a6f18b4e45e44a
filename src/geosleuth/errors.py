"""Typed errors. Each subclasses a built-in so callers can catch either, and each message names
the input, the offending value and the fix.

What an error means to the person or program that asked is decided once, at the end of this file:
:data:`STATUS` maps each class to a process exit code and an HTTP status. The CLI exits with
:func:`exit_code`, an HTTP service answers with :func:`http_status`; neither decides on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

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


class BasemapDataError(GeoSleuthError, ValueError):
    """The geodata a report's map is drawn from is missing, truncated or not what was expected (a
    broken install or an unexpected package version); the message names the file and the fix."""


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


# --- other inputs: tables, folders, datasets ---------------------------------------------------


class InputNotFoundError(GeoSleuthError, FileNotFoundError):
    """A file or folder named as an input (a table, a folder of photos, a dataset) does not exist."""


class TableError(GeoSleuthError, ValueError):
    """A table the user brought cannot be used: a column is missing or a value is not a number."""


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
        where = f" ({url})" if url else ""
        super().__init__(f"{service}{where} is unavailable: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # survive pickling between processes
        return (type(self), (self.service, self.url, self.reason, self.status, self.attempts))


class ToolMisconfiguredError(ToolUnavailableError):
    """The service answered, but in a way only a settings change can fix (a SearXNG instance without
    its JSON format, a URL that serves a web page): retrying cannot help; ``reason`` names the change."""


class ToolQueryError(GeoSleuthError, ValueError):
    """A tool was called with an argument it cannot use (empty name, radius out of range, ...)."""


class UnknownToolError(GeoSleuthError, KeyError):
    """No agent tool has that name (the message lists the known ones)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BudgetExceededError(GeoSleuthError, RuntimeError):
    """A run would go over one of its budgets (``budgets.max_vlm_calls``, ``max_tool_calls``,
    ``max_seconds``). The planner then ends with the best answer so far and says which budget."""

    _WHAT: ClassVar[dict[str, str]] = {
        "max_vlm_calls": "the VLM-request budget ({limit:.0f})",
        "max_tool_calls": "the tool-call budget ({limit:.0f})",
        "max_seconds": "the time budget ({limit:.0f} s)",
    }

    def __init__(
        self, budget: str, limit: float, used: float, unit: str = "", *, what: str | None = None
    ) -> None:
        self.budget = budget
        self.limit = limit
        self.used = used
        self.what = what
        super().__init__(self.message(budget, limit, used))

    @classmethod
    def message(cls, budget: str, limit: float, used: float) -> str:
        text = cls._WHAT.get(budget, budget + " ({limit})").format(limit=limit) + " is spent"
        if budget == "max_seconds":
            return text + f" after {used:.1f} s: the answer is the best so far"
        return text + f" (budgets.{budget})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.budget, self.limit, self.used))


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

    def __init__(
        self,
        dataset: str,
        missing: Sequence[str],
        selected: int,
        where: str,
        hint: str,
        *,
        suggest_skip: bool = True,
    ) -> None:
        self.dataset = dataset
        self.missing = list(missing)
        shown = ", ".join(self.missing[:SHOW_MISSING]) + (", ..." if len(self.missing) > SHOW_MISSING else "")
        # with none present, evaluating "the images that are there" would evaluate nothing
        skip = (
            " Or pass missing='skip' (--skip-missing) to evaluate the images that are there; the count "
            "is recorded with the results."
            if suggest_skip
            else ""
        )
        super().__init__(
            f"{dataset}: {len(self.missing)} of {selected} images are missing from {where} "
            f"(first: {shown}). {hint}{skip}"
        )


class StripError(GeoSleuthError, ValueError):
    """The photo's GPS could not be removed (no pixels to re-encode, metadata too big for JPEG)."""


# --- the HTTP service (geosleuth.service) -------------------------------------------------------


class RequestError(GeoSleuthError, ValueError):
    """An HTTP request the service cannot use: a missing field, a file path, a bad parameter."""


class UploadTooLargeError(ImageInputError):
    """An upload or a fetched body is larger than ``serve.max_upload_mb``."""


class URLRefusedError(GeoSleuthError, ValueError):
    """A photo URL the service will not fetch: not http(s), an address that is loopback, private,
    link-local, multicast or reserved (before or after a redirect), or too many redirects."""


class URLFetchError(GeoSleuthError, ConnectionError):
    """A photo URL could not be fetched: refused, timed out, or answered with an error status."""


class UnknownIdError(GeoSleuthError, KeyError):
    """No stored prediction, job or chat session has that id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class AuthenticationError(GeoSleuthError, ValueError):
    """A request without a valid API key (``Authorization: Bearer <key>``) where keys are required."""


class RateLimitedError(GeoSleuthError, RuntimeError):
    """An API key (or client) sent more requests than ``serve.rate_limit_per_minute`` allows;
    ``retry_after`` is the seconds until the next one is accepted."""

    def __init__(self, message: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.retry_after))


class ServiceBusyError(GeoSleuthError, RuntimeError):
    """The service's queue is full (``serve.queue_size``): try again shortly."""


# --- bugs ---------------------------------------------------------------------------------------


class InternalError(GeoSleuthError, RuntimeError):
    """An unexpected exception (a bug), wrapped so that a batch can go on. Please report it."""


# --- what each error means to the caller: one table ---------------------------------------------

EXIT_OK = 0
EXIT_INPUT = 1  # an input could not be used (one line on stderr per input)
EXIT_USAGE = 2  # bad usage or settings (including a missing optional part the settings ask for)
EXIT_INTERNAL = 3  # a bug
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


@dataclass(frozen=True)
class ErrorStatus:
    """How one kind of error is reported: the CLI's exit code and an HTTP service's status."""

    exit_code: int
    http_status: int


INTERNAL = ErrorStatus(EXIT_INTERNAL, 500)

# Exit codes follow the README (1 an input, 2 usage or settings, 3 a bug). HTTP statuses take the
# caller's side: 4xx when what the caller sent is at fault (404 missing, 413 too large, 415 not a
# format we read, 422 readable but unusable, 400 bad options), 5xx when the server is (500 its own
# files or a bug, 501 a part not installed, 502 the VLM behind it failed, 503 a model, engine or
# network tool it cannot reach). Every GeoSleuthError class has its own row (a test checks), so a
# new class makes its author decide; the lookup walks the class's MRO to the first listed class.
STATUS: Mapping[type[BaseException], ErrorStatus] = {
    GeoSleuthError: ErrorStatus(EXIT_INPUT, 400),
    # input images
    ImageInputError: ErrorStatus(EXIT_INPUT, 422),
    ImageNotFoundError: ErrorStatus(EXIT_INPUT, 404),
    NotAFileError: ErrorStatus(EXIT_INPUT, 422),
    EmptyImageError: ErrorStatus(EXIT_INPUT, 422),
    NotAnImageError: ErrorStatus(EXIT_INPUT, 415),
    UnsupportedFormatError: ErrorStatus(EXIT_INPUT, 415),
    CorruptImageError: ErrorStatus(EXIT_INPUT, 422),
    ImageTooLargeError: ErrorStatus(EXIT_INPUT, 413),
    # settings and optional parts
    ConfigError: ErrorStatus(EXIT_USAGE, 400),
    MissingDependencyError: ErrorStatus(EXIT_USAGE, 501),
    EngineUnavailableError: ErrorStatus(EXIT_USAGE, 503),
    BasemapDataError: ErrorStatus(EXIT_USAGE, 500),
    WeightsNotFoundError: ErrorStatus(EXIT_USAGE, 503),
    PromptTemplateError: ErrorStatus(EXIT_USAGE, 500),
    UnknownMetricError: ErrorStatus(EXIT_USAGE, 400),
    ToolQueryError: ErrorStatus(EXIT_USAGE, 422),
    # other inputs: indexes, tables, folders, datasets
    IndexError_: ErrorStatus(EXIT_INPUT, 422),
    EmptySourceError: ErrorStatus(EXIT_INPUT, 422),
    InputNotFoundError: ErrorStatus(EXIT_INPUT, 404),
    TableError: ErrorStatus(EXIT_INPUT, 422),
    DatasetError: ErrorStatus(EXIT_INPUT, 422),
    MetadataNotFoundError: ErrorStatus(EXIT_INPUT, 404),
    MissingImagesError: ErrorStatus(EXIT_INPUT, 404),
    StripError: ErrorStatus(EXIT_INPUT, 422),
    # services behind geosleuth: the VLM server, the OpenStreetMap tools
    VLMError: ErrorStatus(EXIT_INPUT, 502),
    VLMConnectionError: ErrorStatus(EXIT_INPUT, 502),
    VLMServerError: ErrorStatus(EXIT_INPUT, 502),
    VLMRequestRejectedError: ErrorStatus(EXIT_INPUT, 502),
    VLMTruncatedError: ErrorStatus(EXIT_INPUT, 502),
    VLMUnusableOutputError: ErrorStatus(EXIT_INPUT, 502),
    ToolUnavailableError: ErrorStatus(EXIT_INPUT, 503),
    ToolMisconfiguredError: ErrorStatus(EXIT_USAGE, 502),
    # agent tools: an unknown name is the caller's mistake; a spent budget is a limit reached
    UnknownToolError: ErrorStatus(EXIT_USAGE, 404),
    BudgetExceededError: ErrorStatus(EXIT_INPUT, 429),
    # the HTTP service: what the caller sent (400-429), or the service is full (503)
    RequestError: ErrorStatus(EXIT_USAGE, 400),
    UploadTooLargeError: ErrorStatus(EXIT_INPUT, 413),
    URLRefusedError: ErrorStatus(EXIT_INPUT, 400),
    URLFetchError: ErrorStatus(EXIT_INPUT, 502),
    UnknownIdError: ErrorStatus(EXIT_INPUT, 404),
    AuthenticationError: ErrorStatus(EXIT_USAGE, 401),
    RateLimitedError: ErrorStatus(EXIT_INPUT, 429),
    ServiceBusyError: ErrorStatus(EXIT_INPUT, 503),
    # bugs
    InternalError: INTERNAL,
    # Not ours: a file that could not be read or written (permissions, a full disk) is the
    # environment, not a bug. Every other exception is one: INTERNAL.
    OSError: ErrorStatus(EXIT_INPUT, 500),
}


def error_status(error: BaseException | type[BaseException]) -> ErrorStatus:
    """The :class:`ErrorStatus` of an exception or exception class (:data:`INTERNAL` if unlisted)."""
    cls = error if isinstance(error, type) else type(error)
    for klass in cls.__mro__:
        if klass in STATUS:
            return STATUS[klass]
    return INTERNAL


def exit_code(error: BaseException | type[BaseException]) -> int:
    """The process exit code for an exception: 1 an input, 2 usage or settings, 3 a bug."""
    return error_status(error).exit_code


def http_status(error: BaseException | type[BaseException]) -> int:
    """The HTTP status an API answers with for an exception (see :data:`STATUS`)."""
    return error_status(error).http_status


def error_class(name: str) -> type[GeoSleuthError]:
    """The GeoSleuthError subclass called ``name`` (a record's ``error_type``); :class:`InternalError`
    for a name that is not one (an unexpected exception's class)."""
    todo: list[type[GeoSleuthError]] = [GeoSleuthError]
    while todo:
        cls = todo.pop()
        if cls.__name__ == name:
            return cls
        todo.extend(cls.__subclasses__())
    return InternalError
