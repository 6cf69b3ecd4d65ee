"""NATS plumbing shared by every service.

* `make_broker()` builds the one FastStream broker of a service (with Prometheus and tracing middleware).
* `rpc_router()` is where a service declares its `svc.<service>.<op>` handlers: any `ServiceError` or
  validation error raised there is answered as an `ErrorBody` with the `Bf-Error` header, so a caller
  gets a precise error instead of a timeout.
* `RpcClient` is the caller's side (gateway, worker, other services).
* `ensure_streams()` declares TASKS, TASK_UPDATES, EVENTS and the artifacts object store idempotently.
"""

from __future__ import annotations

import json
import logging
from typing import Any, TypeVar

import nats
from browserfleet_contracts import subjects
from browserfleet_contracts.common import ErrorBody
from faststream.middlewares import ExceptionMiddleware
from faststream.nats import NatsBroker, NatsResponse, NatsRouter
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError
from pydantic import BaseModel, TypeAdapter, ValidationError

from .errors import ServiceError, Unavailable

log = logging.getLogger(__name__)

ERROR_HEADER = "Bf-Error"
M = TypeVar("M")


def validation_error_body(exc: ValidationError, prefix: str = "") -> ErrorBody:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    first = errors[0] if errors else {"loc": (), "msg": "invalid"}
    parts = list(first["loc"])
    if parts and parts[0] == "body":  # the handler's parameter name, not part of the caller's payload
        parts = parts[1:]
    loc = ".".join(str(p) for p in (*([prefix] if prefix else []), *parts))
    return ErrorBody(
        status=422,
        code="validation_error",
        message=f"{loc}: {first['msg']}" if loc else str(first["msg"]),
        field=loc or None,
        detail=[{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in errors],
    )


def _error_reply(body: ErrorBody) -> NatsResponse:
    return NatsResponse(body.model_dump(mode="json"), headers={ERROR_HEADER: str(body.status)})


def _rpc_error_middleware() -> ExceptionMiddleware:
    async def on_service_error(exc: ServiceError) -> NatsResponse:
        return _error_reply(exc.body())

    async def on_validation_error(exc: ValidationError) -> NatsResponse:
        return _error_reply(validation_error_body(exc))

    async def on_unexpected(exc: Exception) -> NatsResponse:
        log.exception("unhandled error in rpc handler", exc_info=exc)
        return _error_reply(ErrorBody(status=500, code="internal_error", message="internal error"))

    return ExceptionMiddleware(
        publish_handlers={
            ServiceError: on_service_error,
            ValidationError: on_validation_error,
            Exception: on_unexpected,
        }
    )


def rpc_router() -> NatsRouter:
    """Router for request/reply handlers. Only these get the error-to-reply middleware: a JetStream
    consumer must raise instead, so that its message is redelivered."""
    return NatsRouter(middlewares=[_rpc_error_middleware()])


def make_broker(url: str, *, name: str, middlewares: tuple[Any, ...] = ()) -> NatsBroker:
    from faststream.nats.prometheus import NatsPrometheusMiddleware
    from prometheus_client import REGISTRY

    from .observability import tracing_middleware

    mws: list[Any] = [NatsPrometheusMiddleware(registry=REGISTRY, app_name=name)]
    tracing = tracing_middleware()
    if tracing is not None:
        mws.append(tracing)
    return NatsBroker(
        url,
        name=name,
        middlewares=(*mws, *middlewares),
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        logger=logging.getLogger(f"browserfleet.{name}.broker"),
        log_level=logging.DEBUG,
    )


class RpcClient:
    """Typed request/reply over core NATS. Raises `ServiceError` with the callee's own error."""

    def __init__(self, nc: NatsClient, *, timeout: float = 10.0) -> None:
        self.nc = nc
        self.timeout = timeout

    async def call(
        self,
        subject: str,
        request: BaseModel | dict[str, Any],
        reply_type: type[M] | Any,
        *,
        timeout: float | None = None,
    ) -> M:
        payload = (
            request.model_dump_json().encode()
            if isinstance(request, BaseModel)
            else json.dumps(request, default=str).encode()
        )
        headers = {"content-type": "application/json"}
        from .observability import inject_trace_headers

        inject_trace_headers(headers)
        try:
            msg = await self.nc.request(subject, payload, timeout=timeout or self.timeout, headers=headers)
        except NoRespondersError as exc:
            raise Unavailable(
                f"no {subject.split('.')[1]} service is running", code="service_unavailable"
            ) from exc
        except NatsTimeout as exc:
            raise Unavailable(f"{subject} did not answer in time", code="service_timeout") from exc
        if msg.headers and ERROR_HEADER in msg.headers:
            raise ServiceError.from_body(ErrorBody.model_validate_json(msg.data))
        if isinstance(reply_type, type) and issubclass(reply_type, BaseModel):
            return reply_type.model_validate_json(msg.data)  # type: ignore[return-value]
        return _adapter(reply_type).validate_json(msg.data)  # type: ignore[no-any-return]


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(reply_type: Any) -> TypeAdapter[Any]:
    """One TypeAdapter per reply type: building one costs far more than the validation it does."""
    try:
        adapter = _ADAPTERS.get(reply_type)
    except TypeError:  # an unhashable type expression: build one each time
        return TypeAdapter(reply_type)
    if adapter is None:
        adapter = _ADAPTERS[reply_type] = TypeAdapter(reply_type)
    return adapter


async def connect(url: str, *, name: str) -> NatsClient:
    return await nats.connect(url, name=name, max_reconnect_attempts=-1, reconnect_time_wait=1)


STREAMS = (
    StreamConfig(
        name=subjects.TASKS_STREAM,
        subjects=["tasks.run.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        duplicate_window=600.0,
    ),
    StreamConfig(
        name=subjects.TASK_UPDATES_STREAM,
        subjects=["tasks.updates.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=7 * 86_400.0,
        duplicate_window=600.0,
    ),
    StreamConfig(
        name=subjects.EVENTS_STREAM,
        subjects=[subjects.EVENTS_ALL],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=7 * 86_400.0,
        duplicate_window=600.0,
        discard=DiscardPolicy.OLD,
    ),
)


async def ensure_streams(js: JetStreamContext) -> None:
    """Create or update the platform's streams and object store; safe to call from every service."""
    for config in STREAMS:
        try:
            await js.add_stream(config=config)
        except BadRequestError:
            await js.update_stream(config=config)
    try:
        await js.object_store(subjects.ARTIFACTS_BUCKET)
    except (NotFoundError, BadRequestError):
        from nats.js.api import ObjectStoreConfig

        await js.create_object_store(
            subjects.ARTIFACTS_BUCKET,
            config=ObjectStoreConfig(storage=StorageType.FILE, description="task artifacts"),
        )


async def ensure_pool_consumers(
    js: JetStreamContext, pool: str = subjects.DEFAULT_POOL, *, ack_wait: float = 30.0
) -> None:
    """One durable pull consumer per (pool, priority), shared by every worker of the pool.

    Work-queue streams forbid overlapping filters, so each priority has its own subject and consumer;
    workers poll them urgent-first. `ack_wait` is the lease: a worker extends it with in-progress acks.
    """
    from nats.js.api import AckPolicy, ConsumerConfig

    for priority in subjects.PRIORITIES:
        config = ConsumerConfig(
            durable_name=subjects.task_run_consumer(pool, priority),
            filter_subject=subjects.task_run(pool, priority),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=-1,
            max_ack_pending=10_000,
        )
        try:
            await js.add_consumer(subjects.TASKS_STREAM, config=config)
        except BadRequestError:
            log.debug("consumer %s exists with another config; keeping it", config.durable_name)
