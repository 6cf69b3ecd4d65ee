"""`Endpoint`: one request/reply subject with the model it takes, the type it answers, the queue that serves
it and the bus identities that may call it. Every service's declarations (`endpoints.<service>`) are built
with `_ep`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from ..bus import DEFAULT_CALLERS, SERVICES
from ..common import DbHealth, Empty
from ..health import HealthReport

Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep")


@dataclass(frozen=True)
class Endpoint(Generic[Req, Rep]):
    """One request/reply subject: what it takes, what it answers, which service's queue serves it, and which
    bus identities (`browserfleet_contracts.bus`) may call it: the server refuses anyone else's request
    (`browserfleet_core.busauth` derives the allow-lists from these)."""

    queue: str
    subject: str
    request: type[Req]
    reply: type[Rep]
    description: str = ""
    callers: tuple[str, ...] = DEFAULT_CALLERS

    @property
    def title(self) -> str:
        """`<service>.<op>`: the subject without its `svc.` prefix (AsyncAPI channel and metrics name)."""
        return self.subject.removeprefix("svc.")

    def __str__(self) -> str:
        return self.subject


class Service:
    """One service's declarations. A subclass names the queue group that serves it (its bus identity) and the
    subject token, when that is not the queue (`class Workers(Service, queue=WORKER_GATEWAY, token="workers")`);
    each endpoint it declares is served by that queue under `svc.<token>.<attribute name, lower case>`, so the
    subject of `Scheduler.GET_TASK` is `svc.scheduler.get_task` and no subject is spelled out by hand. Every
    service answers `HEALTH` (`_health`), so that one is declared here for all of them."""

    QUEUE: ClassVar[str]
    HEALTH: ClassVar[Endpoint[Empty, HealthReport]]

    def __init_subclass__(cls, *, queue: str, token: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.QUEUE = queue
        cls.HEALTH = _health()
        for name, value in list(vars(cls).items()):
            if isinstance(value, Endpoint):
                subject = f"svc.{token or queue}.{name.lower()}"
                setattr(cls, name, dataclasses.replace(value, queue=queue, subject=subject))


def _ep(
    request: type[Req],
    reply: type[Rep],
    description: str,
    *,
    callers: tuple[str, ...] = DEFAULT_CALLERS,
) -> Endpoint[Req, Rep]:
    """`callers` defaults to the gateway alone: only it establishes an org-scoped request's `Actor`. The queue
    and subject are the declaring `Service`'s."""
    return Endpoint("", "", request, reply, description, callers)


def _health() -> Endpoint[Empty, HealthReport]:
    """`svc.<token>.health`: the service's own checks (database, NATS, its consumers' lag), without those of
    the services it calls (each of them answers for itself: asking them in turn could go round in a circle).
    Any service may ask (one it depends on reports it in its own health); workers may not (it names errors)."""
    return _ep(
        Empty,
        HealthReport,
        "The service's health: healthy, degraded or unhealthy, one check per dependency (its own only).",
        callers=SERVICES,
    )


def _db_health(owner: str) -> Endpoint[Empty, DbHealth]:
    """`svc.<token>.db_health` of a service with a database of its own (`GET /health/db` asks it)."""
    return _ep(Empty, DbHealth, f"`SELECT 1` through the {owner}'s database pool (`GET /health/db`).")
