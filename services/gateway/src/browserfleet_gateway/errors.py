"""One error shape for every HTTP error: `{"error": ErrorBody}`.

Services raise `ServiceError`s that cross NATS intact (`RpcClient.call` re-raises them), so a vault 409 or a
scheduler 404 reaches the client with the callee's own status, code and field.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from browserfleet_contracts.common import ErrorBody
from browserfleet_core.errors import ServiceError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


class ErrorResponse(BaseModel):
    """What every non-2xx answer carries (documented in OpenAPI)."""

    error: ErrorBody


def error_json(body: ErrorBody, headers: dict[str, str] | None = None) -> JSONResponse:
    hdrs = dict(headers or {})
    if body.status == 401:
        hdrs.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse({"error": body.model_dump(mode="json")}, status_code=body.status, headers=hdrs)


def error_for_status(status: int, message: str | None = None, *, field: str | None = None) -> ErrorBody:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
    return ErrorBody(
        status=status,
        code=_CODES.get(status, "internal_error" if status >= 500 else "error"),
        message=message or phrase.lower(),
        field=field,
    )


def validation_body(errors: list[dict[str, Any]] | Any) -> ErrorBody:
    """422 naming the first offending field as a dotted path of the caller's payload."""
    errs = list(errors)
    first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
    parts = [str(p) for p in first.get("loc", ())]
    if parts and parts[0] == "body":  # FastAPI's marker for "the JSON body", not part of the payload
        parts = parts[1:]
    field = ".".join(parts) or None
    msg = str(first.get("msg", "invalid"))
    return ErrorBody(
        status=422,
        code="validation_error",
        message=f"{field}: {msg}" if field else msg,
        field=field,
        detail=[
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg")), "type": str(e.get("type"))}
            for e in errs
        ],
    )


async def _on_service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return service_error_response(exc)


def service_error_response(exc: ServiceError) -> JSONResponse:
    """A service's (or the gateway's own) error as the client gets it: also for a route that answers
    without FastAPI's exception handlers (`hotreads`)."""
    headers = {}
    if exc.status == 429:
        headers["Retry-After"] = str(getattr(exc, "retry_after", 1))
        headers.update(getattr(exc, "headers", None) or {})  # RateLimit-* from the gateway's own limiter
    if exc.status == 503:
        # a dependency that is down or slow (upstream.DependencyUnavailable says for how long); a client
        # that retries at once only adds to the pile
        headers["Retry-After"] = str(getattr(exc, "retry_after", 1))
    if exc.status >= 500:
        log.warning("upstream error %s %s: %s", exc.status, exc.code, exc.message)
    return error_json(exc.body(), headers)


async def _on_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_json(validation_body(exc.errors()))


async def _on_http_exception(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else None
    return error_json(error_for_status(exc.status_code, message), dict(exc.headers or {}))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _on_service_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    # Anything else is answered as a bare 500 by `middleware.EdgeMiddleware`, which logs the traceback.


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A router's documented error answers (OpenAPI `responses`): each status with the ErrorResponse body."""
    return {status: {"model": ErrorResponse} for status in statuses}


# What most routes document: every error a call that passes authentication on to a service can answer.
API_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)
