"""API errors and the `Status` objects kube-apiserver answers them with.

Clients decide what to do from the Status `reason` and `code` (the Python client raises
ApiException with the body, kubectl prints the message, an informer re-lists on 410
Expired), so the sandbox builds them exactly the way the real server does.
"""

from __future__ import annotations

from typing import Any

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """An error the API server reports to the client as an HTTP status plus a Status body."""

    def __init__(self, code: int, message: str, *, reason: str | None = None,
                 details: dict[str, Any] | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details
        self.metadata = metadata

    def status(self) -> dict[str, Any]:
        return status_body(self.code, self.message, reason=self.reason, details=self.details,
                           metadata=self.metadata)

    @property
    def retry_after(self) -> int | None:
        """kube-apiserver sends a Retry-After header whenever details.retryAfterSeconds > 0."""
        seconds = (self.details or {}).get("retryAfterSeconds")
        return seconds if isinstance(seconds, int) and seconds > 0 else None


def status_body(code: int, message: str, *, reason: str | None = None,
                details: dict[str, Any] | None = None,
                metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": metadata or {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, "Unknown"),
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def not_found(plural: str, name: str, group: str = "") -> ApiError:
    what = f"{plural}.{group}" if group else plural
    return ApiError(404, f'{what} "{name}" not found',
                    details={"name": name, "group": group, "kind": plural} if group
                    else {"name": name, "kind": plural})


def already_exists(plural: str, name: str, group: str = "") -> ApiError:
    what = f"{plural}.{group}" if group else plural
    details = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return ApiError(409, f'{what} "{name}" already exists', reason="AlreadyExists",
                    details=details)


def too_old(requested: int, oldest: int) -> ApiError:
    """The 410 a watch from a resourceVersion older than the kept history gets."""
    return ApiError(410, f"too old resource version: {requested} ({oldest})")


def too_large(requested: int, current: int, retry_after: int) -> ApiError:
    """A read at a resourceVersion the server has not reached (apiserver storage/errors.go).

    The watch cache answers it after waiting 3 s, suggesting a retry after 1 s; the etcd path
    (an exact or paginated legacy list, a continue token) answers at once with no retry
    suggestion, so `details` then carries only the cause. Clients recognise the error by the
    ResourceVersionTooLarge cause (client-go's reflector then re-lists from "").
    """
    details: dict[str, Any] = {"causes": [{"reason": "ResourceVersionTooLarge",
                                           "message": "Too large resource version"}]}
    if retry_after > 0:
        details["retryAfterSeconds"] = retry_after
    return ApiError(504, f"Timeout: Too large resource version: {requested}, current: {current}",
                    reason="Timeout", details=details)


# The messages of the etcd3 store (apiserver storage/etcd3/errors.go).
LIST_TOO_OLD = "The resourceVersion for the provided list is too old."
CONTINUE_TOO_OLD = ("The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter.")
CONTINUE_INCONSISTENT = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted between "
    "the time the first chunk was returned and now may show up in the list.")


def continue_expired(inconsistent_token: str) -> ApiError:
    """The 410 for a continue token whose snapshot was compacted, as the etcd3 store sends it.

    metadata.continue carries a token that goes on from the same key at the latest
    resourceVersion, for clients willing to accept an inconsistent list.
    """
    return ApiError(410, CONTINUE_INCONSISTENT, metadata={"continue": inconsistent_token})


def too_many_requests(retry_after: int) -> ApiError:
    """429 as apierrors.NewTooManyRequests builds it; the Retry-After header follows."""
    return ApiError(429, "Too many requests, please try again later.",
                    details={"retryAfterSeconds": retry_after} if retry_after > 0 else {})
