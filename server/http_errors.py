"""The one table from Switchyard errors to HTTP statuses, for every REST route."""

from __future__ import annotations

from switchyard.runtimes.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    ResourceExhausted,
    SwitchyardError,
    Unavailable,
)

ERROR_HTTP_STATUS: dict[type[SwitchyardError], int] = {
    InvalidArgument: 400,
    NotFound: 404,
    PayloadTooLarge: 413,
    ResourceExhausted: 503,
    Unavailable: 503,
    DeadlineExceeded: 504,
}
INTERNAL_ERROR_MESSAGE = "internal server error; the server log has the details"


class HttpError(Exception):
    """A failure of HTTP itself, with its own status (401, 403, 405, 415)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def http_status(error: Exception) -> tuple[int, str]:
    """The status and message a client sees for an error."""
    if isinstance(error, HttpError):
        return error.status, str(error)
    for error_type in type(error).__mro__:
        if error_type in ERROR_HTTP_STATUS:
            return ERROR_HTTP_STATUS[error_type], str(error)
    if isinstance(error, SwitchyardError):
        return 500, str(error)
    return 500, INTERNAL_ERROR_MESSAGE
