"""The bus's door for workers: NATS's auth callout (NATS >= 2.10; docs/architecture.md "Securing the bus").

Every connection that is not one of the configured service users reaches `$SYS.REQ.USER.AUTH`, which
worker-gateway alone may read. The request is a JWT signed by the server; the token the client presented is
its credential. A live worker's key gets a user JWT, signed with the account key the server trusts
(BUS_CALLOUT_SEED), whose allow-lists are that worker's (`busauth.worker_permissions`: its id, its pool); a
usable invite code gets the registrant's (it may register and nothing else), and so does a used one whose
registration may still be repeated (its reply lost, the key not used yet); anything else, anonymous
included, is refused with the reason in the answer (the server logs it; the client sees an authorization
violation).

Revocation: a removed worker's key is refused from then on, and its open connections are cut (`kick`):
at once when `workers.revoked` is broadcast after the commit, and by a sweep every BUS_KICK_SWEEP_SECONDS
that cuts any connection of a worker that is no longer live (a missed broadcast). The user JWTs do not
expire: nats-py closes a connection for good when its JWT expires instead of reconnecting, so expiry would
turn into lost workers rather than re-authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from browserfleet_contracts import bus, subjects
from browserfleet_contracts.workers import WORKER_KEY_PREFIX, WorkerRevoked
from browserfleet_core import natsjwt
from browserfleet_core.busauth import Permissions, registrant_permissions, worker_permissions
from browserfleet_core.db import AsyncSession, utcnow
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import BusCredentials, connect
from browserfleet_core.security import hash_token
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import Counter, Histogram
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from . import invites, registration, repository
from .models import WorkerInvite
from .runtime import WorkerGatewayRuntime

log = logging.getLogger(__name__)

DECISIONS = Counter(
    "browserfleet_bus_callout_total", "Connections the auth callout decided, by outcome", ["outcome"]
)
DECISION_SECONDS = Histogram(
    "browserfleet_bus_callout_seconds",
    "Time from the server's request to the callout's answer",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2),
)
KICKS = Counter("browserfleet_bus_kicked_connections_total", "Connections of removed workers cut")

WORKER_NAME_PREFIX = "worker:"  # the connection's user name: what `kick` finds a worker's connections by
CONNZ_WAIT_SECONDS = 0.5  # every server of a cluster answers the PING; collect for this long


class CalloutSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_prefix="")

    bus_callout_seed: SecretStr | None = Field(
        default=None,
        description="the account nkey seed (`SA…`) worker identities are signed with; its public key is the "
        "`auth_callout.issuer` of the NATS configuration. Unset: no callout (an open bus)",
    )
    nats_system_password: SecretStr | None = Field(
        default=None,
        description="password of `worker-gateway-sys`, the system-account user that cuts a removed worker's "
        "connections; unset: a removed worker keeps an open connection until it reconnects",
    )
    bus_kick_sweep_seconds: float = Field(
        default=30.0, gt=0, description="how often connections of removed workers are looked for and cut"
    )


class Decision:
    def __init__(self, *, name: str = "", permissions: Permissions | None = None, error: str = "") -> None:
        self.name, self.permissions, self.error = name, permissions, error


async def decide(session: AsyncSession, token: str | None, now: datetime | None = None) -> Decision:
    """Who the presented token makes the connection, or why it is refused."""
    if not token:
        return Decision(error="no credentials: a worker connects with its key (WORKER_KEY)")
    if token.startswith(WORKER_KEY_PREFIX):
        try:
            worker = await registration.live_worker(session, token)
        except ServiceError as exc:  # unknown or removed: the reason goes back to the server
            return Decision(error=exc.message)
        return Decision(
            name=f"{WORKER_NAME_PREFIX}{worker.id}",
            permissions=worker_permissions(worker.id, worker.pool, token),
        )
    if token.startswith(invites.INVITE_PREFIX) or len(token) >= 32:
        now = now or utcnow()
        invite = await repository.invite_by_hash(session, hash_token(token))
        if invite is not None and (
            invites.status_of(invite, now) == "active" or await _may_repeat(session, invite, now)
        ):
            return Decision(name=bus.REGISTRANT, permissions=registrant_permissions(token))
        return Decision(error="the invite code is unknown, used, expired or revoked")
    return Decision(error="not a worker key or an invite code")


async def _may_repeat(session: AsyncSession, invite: WorkerInvite, now: datetime) -> bool:
    """A used (or since expired) invite whose registration's reply may have been lost: the registrant that
    reconnects (its connection dropped meanwhile) must reach `register` again to repeat it, which answers
    only the same public key (registration._repeated)."""
    if invite.revoked_at is not None:
        return False
    return await repository.awaits_repetition(session, invite.id, now - registration.REPEAT_WINDOW)


class AuthCallout:
    """Answers the server's authorization requests and cuts removed workers' connections."""

    def __init__(
        self,
        rt: WorkerGatewayRuntime,
        seed: str,
        *,
        system_password: str | None = None,
        sweep_seconds: float = 30.0,
    ) -> None:
        self.rt = rt
        self.seed = seed
        self.issuer = natsjwt.public_key(seed)
        self.system_password = system_password
        self.sweep_seconds = sweep_seconds
        self._subs: list[Subscription] = []
        self._system: NatsClient | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @classmethod
    def from_env(cls, rt: WorkerGatewayRuntime) -> AuthCallout | None:
        settings = CalloutSettings()
        if settings.bus_callout_seed is None:
            return None
        password = settings.nats_system_password
        return cls(
            rt,
            settings.bus_callout_seed.get_secret_value(),
            system_password=password.get_secret_value() if password else None,
            sweep_seconds=settings.bus_kick_sweep_seconds,
        )

    async def start(self, nc: NatsClient) -> None:
        # one queue group: each request is answered once, by any replica
        self._subs.append(await nc.subscribe(subjects.AUTH_CALLOUT, queue="callout", cb=self._on_request))
        if self.system_password is None:
            log.warning("NATS_SYSTEM_PASSWORD is unset: removed workers' open connections are not cut")
            return
        self._system = await connect(
            self.rt.settings.nats_url,
            name="worker-gateway-sys",
            credentials=BusCredentials(
                user=bus.WORKER_GATEWAY_SYSTEM,
                password=self.system_password,
                inbox_prefix=bus.inbox_prefix(bus.WORKER_GATEWAY_SYSTEM),
            ),
        )
        self._subs.append(await nc.subscribe(subjects.WORKER_REVOKED, cb=self._on_revoked))
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="bus-kick-sweep")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self._system is not None:
            with contextlib.suppress(Exception):
                await self._system.close()

    # --- the server's questions ------------------------------------------------------------------------
    async def _on_request(self, msg: Msg) -> None:
        started = time.perf_counter()
        try:
            claims = natsjwt.decode(
                msg.data.decode(), issuer_prefix=natsjwt.PREFIX_SERVER, claim_type=natsjwt.REQUEST_TYPE
            )
            request = claims["nats"]
            user_nkey, server_id = str(request["user_nkey"]), str(request["server_id"]["id"])
        except (natsjwt.InvalidJwt, KeyError, TypeError, UnicodeDecodeError) as exc:
            # nobody to answer: the server refuses the connection when its wait ends
            log.warning("ignoring a malformed authorization request: %s", exc)
            DECISIONS.labels("malformed").inc()
            return
        token = (request.get("connect_opts") or {}).get("auth_token")
        try:
            decision = await self.rt.db.run(decide, token)
        except Exception:
            log.exception("deciding a bus connection failed; refusing it")
            decision = Decision(error="worker-gateway could not check the credentials; try again")
        if decision.permissions is not None:
            perms = decision.permissions
            user = natsjwt.user_jwt(
                self.seed,
                user_nkey=user_nkey,
                account=bus.APP_ACCOUNT,
                name=decision.name,
                publish=list(perms.publish),
                subscribe=list(perms.subscribe),
                allow_responses=perms.allow_responses,
            )
            answer = natsjwt.authorization_response(
                self.seed, user_nkey=user_nkey, server_id=server_id, user_token=user
            )
            DECISIONS.labels("worker" if decision.name != bus.REGISTRANT else "registrant").inc()
        else:
            client = request.get("client_info") or {}
            log.warning("refused a bus connection from %s: %s", client.get("host", "?"), decision.error)
            answer = natsjwt.authorization_response(
                self.seed, user_nkey=user_nkey, server_id=server_id, error=decision.error
            )
            DECISIONS.labels("refused").inc()
        if msg.reply:
            await msg.respond(answer.encode())
        DECISION_SECONDS.observe(time.perf_counter() - started)

    # --- cutting removed workers off -------------------------------------------------------------------
    async def _on_revoked(self, msg: Msg) -> None:
        try:
            notice = WorkerRevoked.model_validate_json(msg.data)
        except ValueError:
            return
        await self.kick(notice.worker_id)

    async def kick(self, worker_id: str) -> int:
        """Cuts every open connection of `worker_id` on every server; returns how many."""
        return await self._kick_where(lambda name: name == f"{WORKER_NAME_PREFIX}{worker_id}")

    async def sweep(self) -> int:
        """Cuts the connections of every worker that is no longer live (removed, deregistered, unknown)."""
        connected = await self._worker_connections()
        ids = {name.removeprefix(WORKER_NAME_PREFIX) for _, _, name in connected}
        if not ids:
            return 0
        gone = await self.rt.db.run(repository.not_live_workers, sorted(ids))
        names = {f"{WORKER_NAME_PREFIX}{worker_id}" for worker_id in gone}
        return await self._kick_where(names.__contains__, connected)

    async def _sweep_loop(self) -> None:
        while True:
            try:
                cut = await self.sweep()
                if cut:
                    log.warning("cut %d connection(s) of removed workers", cut)
            except Exception:
                log.exception("looking for removed workers' connections failed; retrying")
            await asyncio.sleep(self.sweep_seconds)

    async def _kick_where(
        self, wanted: Callable[[str], bool], connected: list[tuple[str, int, str]] | None = None
    ) -> int:
        if self._system is None:
            return 0
        if connected is None:
            connected = await self._worker_connections()
        cut = 0
        for server_id, cid, name in connected:
            if not wanted(name):
                continue
            with contextlib.suppress(Exception):
                await self._system.request(
                    f"$SYS.REQ.SERVER.{server_id}.KICK", json.dumps({"cid": cid}).encode(), timeout=2
                )
                cut += 1
                log.info("cut bus connection %d of %s on %s", cid, name, server_id)
        KICKS.inc(cut)
        return cut

    async def _worker_connections(self) -> list[tuple[str, int, str]]:
        """(server id, connection id, user name) of every open worker connection, from every server."""
        assert self._system is not None
        answers = await _gather(
            self._system,
            "$SYS.REQ.SERVER.PING.CONNZ",
            {"acc": bus.APP_ACCOUNT, "auth": True, "limit": 100_000},  # open connections (the default)
        )
        found: list[tuple[str, int, str]] = []
        for answer in answers:
            if answer.get("error"):
                log.warning("listing the bus's connections failed: %s", answer["error"])
            server_id = (answer.get("server") or {}).get("id")
            for conn in (answer.get("data") or {}).get("connections") or []:
                name = str(conn.get("authorized_user") or "")
                if server_id and name.startswith(WORKER_NAME_PREFIX):
                    found.append((str(server_id), int(conn["cid"]), name))
        return found


async def _gather(nc: NatsClient, subject: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every answer to a request several servers answer (nats-py's request keeps only the first)."""
    inbox = nc.new_inbox()
    answers: list[dict[str, Any]] = []
    first = asyncio.Event()

    async def collect(msg: Msg) -> None:
        with contextlib.suppress(ValueError):
            answers.append(json.loads(msg.data))
        first.set()

    sub = await nc.subscribe(inbox, cb=collect)
    try:
        await nc.publish(subject, json.dumps(body).encode(), reply=inbox)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(first.wait(), 5)
        await asyncio.sleep(CONNZ_WAIT_SECONDS if first.is_set() else 0)
    finally:
        await sub.unsubscribe()
    return answers
