"""The one error tree of Switchyard.

Every layer raises these; each ingress maps them to its wire status in one table
(server/grpc_ingress.py, server/rest_ingress.py). Messages are written for the caller:
they say what was wrong and, where it helps, what was expected. Anything that is not a
SwitchyardError reaches a client only as a generic internal error. `code` is the
transport-neutral name used in metrics labels and logs.
"""

from __future__ import annotations


class SwitchyardError(Exception):
    """Base of all errors whose message is safe and useful to show a caller."""

    code = "internal"


class InvalidArgument(SwitchyardError):
    """The request is malformed or does not fit the model (name, datatype, shape, size)."""

    code = "invalid_argument"


class UnknownOutput(InvalidArgument):
    """The request asks for outputs the model does not have (a caller naming outputs can
    fix that; the Recommend pipeline, which names its score output from the config, tells
    it apart as a fault of the config)."""


class NotFound(SwitchyardError):
    """The named model, version or route does not exist."""

    code = "not_found"


class PayloadTooLarge(SwitchyardError):
    """The request is larger than the configured maximum request size."""

    code = "payload_too_large"


class ResourceExhausted(SwitchyardError):
    """The server is at capacity (a full queue); the caller may retry later."""

    code = "resource_exhausted"


class Overloaded(ResourceExhausted):
    """Refused at the door because a capacity bound is reached; `reason` names the bound
    (the `reason` label of switchyard_shed_requests_total). The caller may retry later."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[type[Overloaded], tuple[str, str]]:
        # Pickled where a Ray variant's refusal crosses to the ingress: the default pickle
        # calls the class with the message alone, and the unpickling TypeError became a 500.
        return type(self), (self.args[0], self.reason)


class AuthThrottled(ResourceExhausted):
    """Too many failed authentications from the caller's address; refused unchecked until
    `retry_after_s` passes (429 with Retry-After on HTTP)."""

    code = "throttled"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[type[AuthThrottled], tuple[str, int]]:
        return type(self), (self.args[0], self.retry_after_s)  # as Overloaded's


class Unavailable(SwitchyardError):
    """A dependency or the model is not ready; the caller may retry later."""

    code = "unavailable"


class DeadlineExceeded(SwitchyardError):
    """The request's deadline passed before it could be answered."""

    code = "deadline_exceeded"


class Unauthenticated(SwitchyardError):
    """A protected call came without credentials."""

    code = "unauthenticated"


class PermissionDenied(SwitchyardError):
    """A protected call came with credentials that do not allow it."""

    code = "permission_denied"


class FailedPrecondition(SwitchyardError):
    """The request cannot be done in the current state (a model still routed to, model
    control turned off); it needs another change first, not a retry."""

    code = "failed_precondition"


class ModelLoadError(SwitchyardError):
    """A model could not be loaded: a missing or invalid file, or bad runtime options."""

    code = "model_load_error"
