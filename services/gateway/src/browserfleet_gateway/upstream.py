"""Calls from the gateway to the services, each service behind its own circuit breaker.

A service that is not running (no responder) or does not answer within RPC_TIMEOUT_SECONDS is answered
503 with `Retry-After`, its name in the message and `detail: [{"dependency", "retry_after"}]`. After
SERVICE_BREAKER_FAILURES calls in a row that got no answer in time its circuit opens: calls fail at once
(503 `circuit_open`) for SERVICE_BREAKER_COOLDOWN_SECONDS instead of each holding a request, a connection
and a task for the whole timeout; then one call probes it, and its answer closes the circuit again (or
reopens it). An answer of any kind, an error included (a 404, a 409, a 500), proves the service is there
and counts as a success. "No responders" counts neither way: NATS says it at once, so nothing piles up,
and opening the circuit on it would only stretch a rolling restart's second without a replica into a
cool-down."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from browserfleet_contracts.endpoints import Endpoint, Rep, Req
from browserfleet_core.breaker import Breakers, CircuitBreaker, CircuitOpen
from browserfleet_core.errors import ServiceError, Unavailable
from browserfleet_core.messaging import RpcClient
from nats.aio.client import Client as NatsClient

_T = TypeVar("_T")

# what RpcClient raises itself when nobody answered (a callee's own 503 travels as its ErrorBody instead)
_NO_ANSWER = {"service_unavailable": "is not running", "service_timeout": "did not answer in time"}


class DependencyUnavailable(Unavailable):
    """503 naming the service, with how long to wait (`Retry-After`)."""

    def __init__(self, service: str, code: str, retry_after: float, message: str) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        self.dependency = service
        super().__init__(
            f"{message}; retry in {self.retry_after} s",
            code=code,
            detail=[{"dependency": service, "retry_after": self.retry_after}],
        )


def _retry_after(exc: ServiceError) -> float:
    for item in exc.detail or []:
        if isinstance(item.get("retry_after"), int | float):
            return float(item["retry_after"])
    return 1.0


def breaker_name(service: str) -> str:
    return f"service:{service}"


class GuardedRpc(RpcClient):
    """An `RpcClient` whose calls pass each callee's breaker (one per service queue, in `board`)."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        timeout: float,
        board: Breakers,
        failures: int = 5,
        cooldown_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(nc, timeout=timeout)
        self.board = board
        self.failures = failures
        self.cooldown_seconds = cooldown_seconds
        self.clock = clock

    def breaker(self, service: str) -> CircuitBreaker:
        return self.board.get(
            breaker_name(service),
            failures=self.failures,
            cooldown_seconds=self.cooldown_seconds,
            clock=self.clock,
        )

    async def call(self, endpoint: Endpoint[Req, Rep], request: Req, *, timeout: float | None = None) -> Rep:
        return await self._guarded(
            endpoint, lambda: super(GuardedRpc, self).call(endpoint, request, timeout=timeout)
        )

    async def call_json(
        self, endpoint: Endpoint[Req, Any], request: Req, *, timeout: float | None = None
    ) -> bytes:
        return await self._guarded(
            endpoint, lambda: super(GuardedRpc, self).call_json(endpoint, request, timeout=timeout)
        )

    async def call_raw(
        self, endpoint: Endpoint[Any, Rep], body: Mapping[str, Any], *, timeout: float | None = None
    ) -> Rep:
        return await self._guarded(
            endpoint, lambda: super(GuardedRpc, self).call_raw(endpoint, body, timeout=timeout)
        )

    async def _guarded(self, endpoint: Endpoint[Any, Any], send: Callable[[], Awaitable[_T]]) -> _T:
        service = endpoint.queue
        breaker = self.breaker(service)
        try:
            breaker.check()
        except CircuitOpen as exc:
            raise DependencyUnavailable(
                service,
                "circuit_open",
                exc.retry_after,
                f"the {service} service is unavailable: {exc.failures} calls in a row failed, so calls to it "
                "fail fast for now",
            ) from None
        try:
            reply = await send()
        except Unavailable as exc:
            if type(exc) is Unavailable and exc.code in _NO_ANSWER:
                if exc.code == "service_timeout":
                    breaker.failure()
                else:
                    breaker.release()  # a probe that found no replica hands its turn on
                raise DependencyUnavailable(
                    service,
                    exc.code,
                    breaker.retry_after() or 1,
                    f"the {service} service {_NO_ANSWER[exc.code]}",
                ) from exc
            breaker.success()
            raise
        except ServiceError as exc:
            breaker.success()
            if exc.status == 503 and exc.code == "database_unavailable":
                # the service answered but cannot reach its database: name which one, and when to retry
                raise DependencyUnavailable(
                    f"{service} database",
                    exc.code,
                    _retry_after(exc),
                    f"the {service} service's database is unavailable",
                ) from exc
            raise
        except (asyncio.CancelledError, Exception):
            breaker.release()  # the caller went away, or the reply did not parse: says nothing of the service
            raise
        breaker.success()
        return reply
