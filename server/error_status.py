"""The one table from errors to what a client sees: a gRPC status and an HTTP status.

Both OIP ingresses and the Recommend ingress answer through it, so an error class means the
same thing on every protocol. Anything outside the table reaches the client as a generic
message (INTERNAL / 500); the ingress logs its traceback. HttpError is the exception: a
failure of HTTP itself (401, 403, 405, 415), which exists on the REST side only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from types import MappingProxyType

import grpc

from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.errors import (
    AuthThrottled,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ModelLoadError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ResourceExhausted,
    SwitchyardError,
    Unauthenticated,
    Unavailable,
)
from switchyard.server.client_paths import client_message


@dataclass(frozen=True, slots=True)
class ErrorStatus:
    grpc: grpc.StatusCode
    http: int


# One row per error class; a subclass answers like its nearest listed base.
ERROR_STATUS: Mapping[type[SwitchyardError], ErrorStatus] = MappingProxyType(
    {
        InvalidArgument: ErrorStatus(grpc.StatusCode.INVALID_ARGUMENT, 400),
        NotFound: ErrorStatus(grpc.StatusCode.NOT_FOUND, 404),
        PayloadTooLarge: ErrorStatus(grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
        ResourceExhausted: ErrorStatus(grpc.StatusCode.RESOURCE_EXHAUSTED, 503),
        AuthThrottled: ErrorStatus(grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        Unavailable: ErrorStatus(grpc.StatusCode.UNAVAILABLE, 503),
        DeadlineExceeded: ErrorStatus(grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        Unauthenticated: ErrorStatus(grpc.StatusCode.UNAUTHENTICATED, 401),
        PermissionDenied: ErrorStatus(grpc.StatusCode.PERMISSION_DENIED, 403),
        FailedPrecondition: ErrorStatus(grpc.StatusCode.FAILED_PRECONDITION, 409),
        # A load that failed: the files or the config must change before it can work.
        # 400 as Triton's REST repository API answers it.
        ModelLoadError: ErrorStatus(grpc.StatusCode.FAILED_PRECONDITION, 400),
    }
)
INTERNAL = ErrorStatus(grpc.StatusCode.INTERNAL, 500)
INTERNAL_ERROR_MESSAGE = "internal server error; the server log has the details"
# A 503 (at capacity, not ready) is worth retrying: in this many seconds (RFC 9110 10.2.3).
RETRY_AFTER_S = 1
RETRY_AFTER = ((b"retry-after", str(RETRY_AFTER_S).encode()),)


def error_status(error: Exception) -> tuple[ErrorStatus, str]:
    """The statuses and the message a client sees for `error`. Our own errors keep their
    message (written for the caller); anything else gets the generic one."""
    # The one boundary to clients: no absolute server paths in what they read (the log that
    # recorded the error keeps them); errors about files lose any absolute path.
    files = isinstance(error, ModelLoadError | FailedPrecondition)
    for error_type in type(error).__mro__:
        status = ERROR_STATUS.get(error_type)
        if status is not None:
            return status, client_message(str(error), any_path=files)
    if isinstance(error, SwitchyardError):
        return INTERNAL, client_message(str(error), any_path=True)
    return INTERNAL, INTERNAL_ERROR_MESSAGE


def grpc_status(error: Exception) -> tuple[grpc.StatusCode, str]:
    status, message = error_status(error)
    return status.grpc, message


class HttpError(Exception):
    """A failure of HTTP itself, with its own status and any headers it must carry."""

    def __init__(
        self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers

    @property
    def code(self) -> str:
        """The metrics label, as SwitchyardError.code: the status's name in snake case
        (415: unsupported_media_type)."""
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            return f"http_{self.status}"
        return "_".join(re.findall(r"[a-z0-9]+", phrase.lower()))


def http_status(error: Exception) -> tuple[int, str, tuple[tuple[bytes, bytes], ...]]:
    """The HTTP status, message and extra headers a client sees for `error`."""
    if isinstance(error, HttpError):
        return error.status, str(error), error.headers
    status, message = error_status(error)
    if isinstance(error, AuthThrottled):
        return status.http, message, ((b"retry-after", str(error.retry_after_s).encode()),)
    return status.http, message, RETRY_AFTER if status.http == 503 else ()


def require_method(method: str, *allowed: str) -> None:
    """405 with the `Allow` header (RFC 9110) unless `method` is one of `allowed`."""
    if method not in allowed:
        names = ", ".join(allowed)
        raise HttpError(
            405,
            f"method {client_text(method)} is not allowed here; use {names}",
            ((b"allow", names.encode()),),
        )
