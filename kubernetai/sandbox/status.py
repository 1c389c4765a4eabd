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
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict[str, Any]:
        return status_body(self.code, self.message, reason=self.reason, details=self.details)


def status_body(code: int, message: str, *, reason: str | None = None,
                details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, "Unknown"),
    }
    if details:
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
