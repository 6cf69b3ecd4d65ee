"""Errors a service raises on purpose. They cross NATS as `ErrorBody` and reach HTTP clients as-is."""

from __future__ import annotations

from typing import Any

from browserfleet_contracts.common import ErrorBody


class ServiceError(Exception):
    status = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        status: int | None = None,
        detail: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def body(self) -> ErrorBody:
        return ErrorBody(
            status=self.status, code=self.code, message=self.message, field=self.field, detail=self.detail
        )

    @classmethod
    def from_body(cls, body: ErrorBody) -> ServiceError:
        return cls(body.message, field=body.field, code=body.code, status=body.status, detail=body.detail)


class BadRequest(ServiceError):
    status = 400
    code = "bad_request"


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class Invalid(ServiceError):
    status = 422
    code = "validation_error"


class RateLimited(ServiceError):
    status = 429
    code = "rate_limited"


class Unavailable(ServiceError):
    status = 503
    code = "unavailable"
