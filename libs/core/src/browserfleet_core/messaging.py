"""NATS plumbing shared by every service.

* `make_broker()` builds the one FastStream broker of a service (with Prometheus and tracing middleware).
* `rpc_router()` is where a service serves its endpoints (`browserfleet_contracts.endpoints`): any
  `ServiceError` or validation error raised there is answered as an `ErrorBody` with the `Bf-Error` header,
  so a caller gets a precise error instead of a timeout.
* `RpcClient.call(endpoint, request)` is the caller's side (gateway, worker, other services).

Hot endpoints are served by `browserfleet_core.lean`; streams, the artifacts bucket and the pool consumers
are declared by `browserfleet_core.streams`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from browserfleet_contracts import bus
from browserfleet_contracts.common import ErrorBody
from browserfleet_contracts.endpoints import Endpoint, Rep, Req
from faststream.middlewares import ExceptionMiddleware
from faststream.nats import NatsBroker, NatsResponse, NatsRouter
from nats.aio.client import PING_PROTO
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import INBOX_PREFIX as DEFAULT_JS_INBOX
from pydantic import BaseModel, TypeAdapter, ValidationError

from .errors import ServiceError, Unavailable, database_unavailable
from .settings import BusSettings

log = logging.getLogger(__name__)


ERROR_HEADER = "Bf-Error"
# A request sent just as a service starts (or restarts) was seen to get "no responders" although the
# service's SUBs were already flushed on its own connection (about 1 start in 5; the retry always got
# through): a caller asks again after these pauses before it answers 503 "no service is running".
NO_RESPONDERS_BACKOFF: tuple[float | None, ...] = (0.05, 0.15, None)


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


def rpc_error_body(exc: Exception) -> ErrorBody:
    """What an rpc handler's exception is answered with (the `rpc_router` middleware and `LeanResponder`
    both use this): a `ServiceError` as itself, a validation error as 422 naming the field, a database that
    cannot be reached as 503 `database_unavailable`, anything else as 500 "internal error" (logged with its
    traceback; the caller learns nothing of it)."""
    if isinstance(exc, ServiceError):
        return exc.body()
    if isinstance(exc, ValidationError):
        return validation_error_body(exc)
    if (unavailable := database_unavailable(exc)) is not None:  # the caller may retry: 503, not 500
        log.warning("rpc handler could not reach its database: %s", exc)
        return unavailable.body()
    log.exception("unhandled error in rpc handler", exc_info=exc)
    return ErrorBody(status=500, code="internal_error", message="internal error")


def _error_reply(body: ErrorBody) -> NatsResponse:
    return NatsResponse(body.model_dump(mode="json"), headers={ERROR_HEADER: str(body.status)})


def _rpc_error_middleware() -> ExceptionMiddleware:
    async def on_error(exc: Exception) -> NatsResponse:
        return _error_reply(rpc_error_body(exc))

    return ExceptionMiddleware(
        publish_handlers={ServiceError: on_error, ValidationError: on_error, Exception: on_error}
    )


Handler = Callable[[Req], Awaitable[Rep]]


class RpcRouter(NatsRouter):
    """Router for request/reply handlers, each registered against its `Endpoint` declaration. Only these get
    the error-to-reply middleware: a JetStream consumer must raise instead, so that its message is
    redelivered.

        rpc = rpc_router(max_workers=16)

        @rpc.handle(endpoints.Scheduler.LIST_TASKS)
        async def list_tasks(body: ListTasksRequest) -> Page[TaskPublic]:
            return await db.run(service.list_tasks, body)

    The handler's request and reply types are the endpoint's (mypy checks the handler against them; at run
    time FastStream parses `endpoint.request` and documents `endpoint.reply`, whatever the annotations say).
    """

    def __init__(self, *, max_workers: int = 1) -> None:
        super().__init__(middlewares=[_rpc_error_middleware()])
        # a core subscriber handles one request at a time unless given workers
        self.max_workers = max_workers

    def handle(
        self, endpoint: Endpoint[Req, Rep], *, max_workers: int | None = None
    ) -> Callable[[Handler[Req, Rep]], Handler[Req, Rep]]:
        def register(handler: Handler[Req, Rep]) -> Handler[Req, Rep]:
            _annotate(handler, endpoint)
            self.subscriber(
                endpoint.subject,
                queue=endpoint.queue,
                max_workers=max_workers or self.max_workers,
                title=endpoint.title,
                description=endpoint.description or None,
            )(handler)
            return handler

        return register

    def serve(
        self, endpoint: Endpoint[Req, Rep], call: Handler[Req, Rep], *, max_workers: int | None = None
    ) -> None:
        """`handle` for a handler that is one call, so that its types are the endpoint's alone (mypy infers
        the lambda's parameter from the endpoint): `rpc.serve(ep, lambda body: db.run(service.get, body.id))`.
        """

        async def handler(body: Req) -> Rep:
            return await call(body)

        # what FastStream's logs name the handler by
        handler.__name__ = handler.__qualname__ = endpoint.subject.rsplit(".", 1)[-1]
        self.handle(endpoint, max_workers=max_workers)(handler)


def _annotate(handler: Callable[..., Any], endpoint: Endpoint[Any, Any]) -> None:
    """Give the handler's one parameter and its return the endpoint's types, so that what FastStream
    parses and documents is the declaration, never a hand-written annotation that drifted from it."""
    import inspect

    params = list(inspect.signature(handler).parameters)
    if len(params) != 1:
        raise TypeError(f"the handler of {endpoint.subject} must take exactly one parameter (the request)")
    handler.__annotations__ = {params[0]: endpoint.request, "return": endpoint.reply}


def rpc_router(*, max_workers: int = 1) -> RpcRouter:
    return RpcRouter(max_workers=max_workers)


def make_broker(
    url: str, *, name: str, middlewares: tuple[Any, ...] = (), credentials: BusCredentials | None = None
) -> NatsBroker:
    """The service's broker; it authenticates with `credentials`, by default those of the environment
    (NATS_USER / NATS_PASSWORD / NATS_TLS_*), and takes its replies under that identity's own inbox."""
    from faststream.nats.prometheus import NatsPrometheusMiddleware
    from prometheus_client import REGISTRY

    from .observability import tracing_middleware

    mws: list[Any] = [NatsPrometheusMiddleware(registry=REGISTRY, app_name=name)]
    tracing = tracing_middleware()
    if tracing is not None:
        mws.append(tracing)
    creds = credentials if credentials is not None else BusCredentials.from_env()
    return _Broker(
        url,
        name=name,
        middlewares=(*mws, *middlewares),
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        logger=logging.getLogger(f"browserfleet.{name}.broker"),
        log_level=logging.DEBUG,
        **creds.broker_options(url),
    )


class _Broker(NatsBroker):
    """FastStream hands its pull subscriptions nats-py's fixed `_INBOX.` prefix; an identity may read only
    its own inbox (`bus.inbox_prefix`), so before starting they are left to take the connection's. Its
    connection is a `CoalescingClient`."""

    async def _connect(self) -> NatsClient:
        connection = CoalescingClient()
        await connection.connect(**self._connection_kwargs)
        self.config.connect(connection)
        return connection

    async def start(self) -> None:
        for subscriber in self.subscribers:
            options = getattr(subscriber, "extra_options", None)
            if isinstance(options, dict) and options.get("inbox_prefix") == DEFAULT_JS_INBOX:
                del options["inbox_prefix"]
        await super().start()


class RpcClient:
    """Typed request/reply over core NATS. Raises `ServiceError` with the callee's own error."""

    def __init__(self, nc: NatsClient, *, timeout: float = 10.0) -> None:
        self.nc = nc
        self.timeout = timeout

    async def call(self, endpoint: Endpoint[Req, Rep], request: Req, *, timeout: float | None = None) -> Rep:
        """Send `request` on the endpoint's subject and parse the reply as the endpoint's reply type."""
        return await self._send(endpoint, request.model_dump_json().encode(), timeout)

    async def call_raw(
        self, endpoint: Endpoint[Any, Rep], body: Mapping[str, Any], *, timeout: float | None = None
    ) -> Rep:
        """Send an untyped body: for what must reach the server unvalidated (tests of its validation)."""
        return await self._send(endpoint, json.dumps(body, default=str).encode(), timeout)

    async def call_json(
        self, endpoint: Endpoint[Req, Any], request: Req, *, timeout: float | None = None
    ) -> bytes:
        """`call`, answering the reply's JSON as it came once it has validated as the endpoint's reply type:
        for a caller that only relays it (the gateway's hot reads), which saves parsing it into a model and
        serialising it back."""
        data = await self._exchange(endpoint, request.model_dump_json().encode(), timeout)
        _parse(endpoint, data)
        return data

    async def _send(self, endpoint: Endpoint[Any, Rep], payload: bytes, timeout: float | None) -> Rep:
        return _parse(endpoint, await self._exchange(endpoint, payload, timeout))

    async def _exchange(self, endpoint: Endpoint[Any, Any], payload: bytes, timeout: float | None) -> bytes:
        """The reply's bytes; the callee's error raised as its `ServiceError`."""
        headers = {"content-type": "application/json"}
        from .observability import inject_trace_headers

        inject_trace_headers(headers)
        subject = endpoint.subject
        try:
            for pause in NO_RESPONDERS_BACKOFF:
                try:
                    msg = await self.nc.request(
                        subject, payload, timeout=timeout or self.timeout, headers=headers
                    )
                    break
                except NoRespondersError:
                    if pause is None:
                        raise
                    await asyncio.sleep(pause)
        except NoRespondersError as exc:
            raise Unavailable(f"no {endpoint.queue} service is running", code="service_unavailable") from exc
        except NatsTimeout as exc:
            raise Unavailable(f"{subject} did not answer in time", code="service_timeout") from exc
        if msg.headers and ERROR_HEADER in msg.headers:
            raise ServiceError.from_body(ErrorBody.model_validate_json(msg.data))
        data: bytes = msg.data
        return data


def _parse(endpoint: Endpoint[Any, Rep], data: bytes) -> Rep:
    reply_type: Any = endpoint.reply
    if isinstance(reply_type, type) and issubclass(reply_type, BaseModel):
        return reply_type.model_validate_json(data)  # type: ignore[return-value]
    return reply_adapter(reply_type).validate_json(data)  # type: ignore[no-any-return]


class BrokerRpc:
    """The `RpcClient` on a broker's own connection, made when first asked for: a service builds what calls
    other services before its broker has connected. Called before then it raises (no connection yet);
    `connected()` answers None instead, for a health check that may run that early."""

    def __init__(self, broker: NatsBroker, *, timeout: float) -> None:
        self._broker = broker
        self._timeout = timeout
        self._client: RpcClient | None = None

    def __call__(self) -> RpcClient:
        if self._client is None:
            self._client = RpcClient(self._broker.connection, timeout=self._timeout)
        return self._client

    def connected(self) -> RpcClient | None:
        return self() if self._broker._connection is not None else None


_REPLY_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def reply_adapter(reply_type: Any) -> TypeAdapter[Any]:
    """One TypeAdapter per reply type: building one costs far more than the validation it does."""
    try:
        adapter = _REPLY_ADAPTERS.get(reply_type)
    except TypeError:  # an unhashable type expression: build one each time
        return TypeAdapter(reply_type)
    if adapter is None:
        adapter = _REPLY_ADAPTERS[reply_type] = TypeAdapter(reply_type)
    return adapter


async def connect(
    url: str, *, name: str, credentials: BusCredentials | None = None, **options: Any
) -> NatsClient:
    """A plain nats-py client, authenticated like `make_broker` (the environment's identity by default)."""
    creds = credentials if credentials is not None else BusCredentials.from_env()
    kwargs: dict[str, Any] = {"max_reconnect_attempts": -1, "reconnect_time_wait": 1}
    kwargs.update(creds.options(url))
    kwargs.update(options)
    nc = CoalescingClient()
    await nc.connect(url, name=name, **kwargs)
    return nc


# A flush waits at most this many turns of the event loop for more commands to join its write, and stops
# waiting once this much is pending (nats-py's own limit, pending_size, forces a flush far above it), or once
# the command that woke it has waited `COALESCE_SECONDS`.
COALESCE_TURNS = 4
COALESCE_BYTES = 64 * 1024
COALESCE_SECONDS = 0.0002


class CoalescingClient(NatsClient):
    """nats-py's client, with two changes to how its commands reach the socket.

    * A flush gathers more: nats-py's flusher writes what is pending as soon as it is woken, one write
      syscall (and a wake-up of the server's reader) per flush, and under load that is about one per
      message. This one first lets the event loop turn while commands keep arriving (up to
      `COALESCE_TURNS` turns or `COALESCE_BYTES`), then writes them all at once. The wait is also capped in
      time: once the command that woke the flusher has waited `COALESCE_SECONDS` it is written with
      whatever joined it. In a busy process one turn of the loop can take milliseconds (the scheduler's at
      200 tasks/s: p50 ~4 ms on a loaded 2-core VM), and every request, reply and dispatch waited up to
      four of them per hop; such long turns gather many commands anyway. Idle, a message waits one loop
      turn longer (microseconds); nothing is reordered, dropped or written twice: commands still go out
      in the order they were queued, from the same pending buffer, by the same one task.
    * `flush()` means what it says: nats-py writes its PING straight to the socket, ahead of commands
      still pending, so the PONG could come back before a SUB or PUB queued just before it had reached
      the server. Here the PING joins the pending buffer behind them.

    Both replace private methods of nats-py's `Client` (`_flusher`, `_send_ping`; `_flush_pending` is
    wrapped to note when the flusher was woken); tests pin what they rely on, and
    `libs/core/tests/test_coalescing_client.py` fails if nats-py changes under them.
    """

    _kicked_at = 0.0  # when a command last woke the flusher (its queue was empty)

    async def _flush_pending(self, force_flush: bool = False) -> Any:
        if self._flush_queue is not None and self._flush_queue.empty():
            self._kicked_at = time.monotonic()
        return await super()._flush_pending(force_flush)

    async def _send_ping(self, future: asyncio.Future[Any] | None = None) -> None:
        if future is None:
            future = asyncio.get_running_loop().create_future()
        self._pongs.append(future)
        await self._send_command(PING_PROTO)
        await self._flush_pending()

    async def _flusher(self) -> None:
        assert self._flush_queue is not None, "Client.connect must be called first"
        while True:
            if not self.is_connected or self.is_connecting:
                break
            future: asyncio.Future[Any] = await self._flush_queue.get()
            try:
                await self._gather_pending()
                if self._pending_data_size > 0:
                    self._transport.writelines(self._pending[:])  # type: ignore[union-attr]
                    self._pending = []
                    self._pending_data_size = 0
                    await self._transport.drain()  # type: ignore[union-attr]
            except OSError as e:
                await self._error_cb(e)
                await self._process_op_err(e)
                break
            except (asyncio.CancelledError, RuntimeError, AttributeError):
                break  # cancelled by a reconnect or close (what is pending stays for the next connection)
            finally:
                if not future.done():
                    future.set_result(None)

    async def _gather_pending(self) -> None:
        """Let the loop turn while more commands keep joining the pending buffer, within the time cap."""
        size = self._pending_data_size
        deadline = self._kicked_at + COALESCE_SECONDS
        for _ in range(COALESCE_TURNS):
            if size == 0 or size >= COALESCE_BYTES or time.monotonic() >= deadline:
                return
            await asyncio.sleep(0)
            if self._pending_data_size == size:
                return
            size = self._pending_data_size


@dataclass(frozen=True)
class BusCredentials:
    """Who a connection is on the bus: a service's user and password, or a worker's key (or a registering
    worker's invite code) as the token the auth callout checks; the reply inbox prefix that identity alone
    may read; and the TLS files for `tls://` servers. Empty: anonymous (only an open server lets it in)."""

    user: str | None = None
    password: str | None = None
    token: str | None = None
    inbox_prefix: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @classmethod
    def from_settings(cls, settings: BusSettings) -> BusCredentials:
        user = settings.nats_user or None
        return cls(
            user=user,
            password=settings.nats_password.get_secret_value() if settings.nats_password else None,
            inbox_prefix=bus.inbox_prefix(user) if user else None,
            tls_ca=settings.nats_tls_ca,
            tls_cert=settings.nats_tls_cert,
            tls_key=settings.nats_tls_key,
        )

    @classmethod
    def from_env(cls) -> BusCredentials:
        return cls.from_settings(BusSettings())

    @classmethod
    def worker(cls, worker_key: str, settings: BusSettings | None = None) -> BusCredentials:
        """A worker's: its key is the token, its inbox is derived from the key (bus.worker_inbox_prefix)."""
        tls = cls.from_settings(settings or BusSettings())
        return replace(
            tls, user=None, password=None, token=worker_key, inbox_prefix=bus.worker_inbox_prefix(worker_key)
        )

    @classmethod
    def registrant(cls, invite_code: str, settings: BusSettings | None = None) -> BusCredentials:
        tls = cls.from_settings(settings or BusSettings())
        return replace(
            tls,
            user=None,
            password=None,
            token=invite_code,
            inbox_prefix=bus.registrant_inbox_prefix(invite_code),
        )

    def broker_options(self, url: str = "") -> dict[str, Any]:
        """FastStream `NatsBroker` keyword arguments (it takes credentials as a `security` object)."""
        from faststream.nats import NatsSecurity, NatsToken, NatsUserPassword

        opts = self.options(url)
        tls = opts.get("tls")
        found: dict[str, Any] = {}
        if self.user:
            found["security"] = NatsUserPassword(self.user, self.password or "", ssl_context=tls)
        elif self.token:
            found["security"] = NatsToken(self.token, ssl_context=tls)
        elif tls is not None:
            found["security"] = NatsSecurity(ssl_context=tls)
        if self.inbox_prefix:
            found["inbox_prefix"] = self.inbox_prefix
        return found

    def options(self, url: str = "") -> dict[str, Any]:
        """nats-py `connect` keyword arguments."""
        opts: dict[str, Any] = {}
        if self.user:
            opts["user"], opts["password"] = self.user, self.password or ""
        if self.token:
            opts["token"] = self.token
        if self.inbox_prefix:
            opts["inbox_prefix"] = self.inbox_prefix
        if self.tls_ca or self.tls_cert or url.startswith("tls://"):
            context = ssl.create_default_context(cafile=str(self.tls_ca) if self.tls_ca else None)
            if self.tls_cert and self.tls_key:
                context.load_cert_chain(str(self.tls_cert), str(self.tls_key))
            opts["tls"] = context
        return opts
