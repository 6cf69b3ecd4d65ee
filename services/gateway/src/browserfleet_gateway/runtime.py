"""The gateway's runtime object: what the app's lifespan connects and every request reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from browserfleet_core.breaker import Breakers
from browserfleet_core.messaging import RpcClient
from browserfleet_core.security import JwksVerifier
from nats.aio.client import Client as NatsClient

from .keycache import ApiKeyCache
from .ratelimit import Limiter
from .settings import GatewaySettings
from .userstate import UserStateCache

if TYPE_CHECKING:  # the event stream's modules read this one
    from .eventstream.service import EventStream
    from .liveview import LiveHub


@dataclass
class GatewayState:
    """Everything a request needs, set up by the app's lifespan (nothing is connected before it runs)."""

    settings: GatewaySettings
    nc: NatsClient | None = None
    rpc: RpcClient | None = None
    verifier: JwksVerifier | None = None
    limiter: Limiter | None = None
    login_limiter: Limiter | None = None
    api_keys: ApiKeyCache | None = None
    users: UserStateCache | None = None
    events: EventStream | None = None
    live: LiveHub | None = None
    # this gateway's circuit breakers: one per service it calls, and the rate-limit bucket's
    breakers: Breakers = field(default_factory=Breakers)
    # the services without their breakers: readiness probes report on a service, they never trip its breaker
    probe_rpc: RpcClient | None = None
