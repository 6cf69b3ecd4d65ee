"""Errors a service raises on purpose. They cross NATS as `ErrorBody` and reach HTTP clients as-is."""

from __future__ import annotations

from typing import Any

from browserfleet_contracts.common import ErrorBody


class ServiceError(Exception):
    """A kind of error is a subclass naming its HTTP status and default code:
    `class NotFound(ServiceError, status=404, code="not_found")`."""

    status = 500
    code = "internal_error"

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status = status
        if code is not None:
            cls.code = code

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


class BadRequest(ServiceError, status=400, code="bad_request"): ...


class Unauthorized(ServiceError, status=401, code="unauthorized"): ...


class Forbidden(ServiceError, status=403, code="forbidden"): ...


class NotFound(ServiceError, status=404, code="not_found"): ...


class Conflict(ServiceError, status=409, code="conflict"): ...


class Invalid(ServiceError, status=422, code="validation_error"): ...


class RateLimited(ServiceError, status=429, code="rate_limited"): ...


class Unavailable(ServiceError, status=503, code="unavailable"): ...


# SQLSTATEs of a server that is going away or not back yet: admin_shutdown, crash_shutdown, cannot_connect_now
_SERVER_GONE = frozenset({"57P01", "57P02", "57P03"})
DATABASE_RETRY_AFTER = 2


def _lost_connection(exc: BaseException) -> bool:
    import psycopg  # lazily: only an error's way passes here
    from sqlalchemy import exc as sa

    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa.TimeoutError | sa.DisconnectionError):  # the pool: no connection to be had
        return True
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        # no SQLSTATE: the client's own failure to reach the server (refused, reset, closed); a statement
        # timeout (57014) is an OperationalError too, but the server answered it
        state = exc.sqlstate
        return state is None or state.startswith("08") or state in _SERVER_GONE
    return False


def database_unavailable(exc: BaseException) -> Unavailable | None:
    """The 503 for an exception that says the service's database cannot be reached (refused, dropped,
    shutting down, starting, pool exhausted), else None. A caller that retries later will be served: it is
    not the request's fault and not an internal error."""
    seen: BaseException | None = exc
    for _ in range(5):  # the driver's error under SQLAlchemy's (`orig`), or a handler's re-raise
        if seen is None:
            break
        if _lost_connection(seen):
            error = Unavailable(
                "the database is unavailable",
                code="database_unavailable",
                detail=[{"dependency": "database", "retry_after": DATABASE_RETRY_AFTER}],
            )
            return error
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return None
