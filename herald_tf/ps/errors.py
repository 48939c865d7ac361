"""Errors a parameter server reports to one caller; each names the gRPC status it travels as.

The server raises them, the service turns them into a gRPC status with the message, and the
client turns that status back into the same class, so a worker catches the same type whether
the store is in-process or remote. Every error leaves the server's state unchanged.
"""

from __future__ import annotations

from herald_tf.errors import HeraldError, InvalidArgumentError


class PsError(HeraldError):
    """Base of parameter-server errors that are not plain invalid arguments."""

    grpc_code = "INTERNAL"


class FailedPreconditionError(PsError):
    """The request is well formed but conflicts with the server's state (step order, config)."""

    grpc_code = "FAILED_PRECONDITION"


class NotFoundError(PsError, LookupError):
    """Something named does not exist (a checkpoint)."""

    grpc_code = "NOT_FOUND"


class DeadlineExceededError(PsError, TimeoutError):
    """A wait (for pushes of a step, or a row version) passed its deadline."""

    grpc_code = "DEADLINE_EXCEEDED"


class UnauthenticatedError(PsError, PermissionError):
    """The caller did not present the cluster token."""

    grpc_code = "UNAUTHENTICATED"


class ResourceExhaustedError(PsError):
    """A bounded server resource (the plan mailbox) is full; the request stored nothing."""

    grpc_code = "RESOURCE_EXHAUSTED"


class UnavailableError(PsError, ConnectionError):
    """The server could not be reached (after retries, for idempotent calls)."""

    grpc_code = "UNAVAILABLE"


#: gRPC status name → error class (used by clients to rebuild the server's error).
ERROR_BY_GRPC_CODE: dict[str, type[HeraldError]] = {
    "INVALID_ARGUMENT": InvalidArgumentError,
    "OUT_OF_RANGE": InvalidArgumentError,
    "FAILED_PRECONDITION": FailedPreconditionError,
    "NOT_FOUND": NotFoundError,
    "DEADLINE_EXCEEDED": DeadlineExceededError,
    "UNAUTHENTICATED": UnauthenticatedError,
    "UNAVAILABLE": UnavailableError,
    "RESOURCE_EXHAUSTED": ResourceExhaustedError,
}


def grpc_code_of(error: BaseException) -> str:
    """The gRPC status name an error travels as."""
    if isinstance(error, PsError):
        return error.grpc_code
    if isinstance(error, InvalidArgumentError):
        return "INVALID_ARGUMENT"
    return "INTERNAL"
