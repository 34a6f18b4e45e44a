"""The error tree's one table: every class has an exit code and an HTTP status."""

import inspect

import pytest

from geosleuth import errors
from geosleuth.errors import (
    INTERNAL,
    STATUS,
    ConfigError,
    GeoSleuthError,
    ImageNotFoundError,
    ImageTooLargeError,
    InternalError,
    NotAnImageError,
    VLMServerError,
    error_class,
    error_status,
    exit_code,
    http_status,
)

CLASSES = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, GeoSleuthError) and cls.__module__ == errors.__name__
]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_error_class_has_its_own_row(cls):
    assert cls in STATUS  # a new class makes its author decide
    status = STATUS[cls]
    assert status.exit_code in (1, 2, 3)
    assert 400 <= status.http_status < 600
    assert error_class(cls.__name__) is cls  # a record's error_type leads back to its class


def test_lookup_by_instance_class_and_mro():
    assert exit_code(ImageNotFoundError("a.jpg", "no such file")) == 1
    assert http_status(ImageNotFoundError) == 404
    assert http_status(NotAnImageError) == 415 and http_status(ImageTooLargeError) == 413
    assert exit_code(ConfigError("bad")) == 2 and http_status(ConfigError) == 400
    assert http_status(VLMServerError("500 from the server")) == 502
    assert error_status(InternalError("bug")) is INTERNAL
    # not ours: a file the environment refused is not a bug, anything else is
    assert exit_code(PermissionError(13, "denied")) == 1 and http_status(FileNotFoundError) == 500
    assert error_status(KeyError("x")) is INTERNAL and exit_code(ZeroDivisionError) == 3


def test_unknown_error_type_is_internal():
    assert error_class("ZeroDivisionError") is InternalError
