"""The bus-permissions matrix, generated from the contracts and checked against the real NATS of a running
platform (docs/architecture.md "Securing the bus").

For every identity (each service, the system-account user, an org worker, a platform worker, a registrant,
and nobody) and every subject of the universe below (every endpoint, every subject any identity is granted,
each identity's inbox, other workers' subjects, the callout and system subjects, wildcard subscriptions),
the identity publishes and subscribes, and the server's answer must be the one its allow-lists
(`busauth`, derived from `endpoints` callers/queues and `bus.GRANTS`) say.

How a refusal is seen: the server answers a forbidden PUB or SUB with a permissions-violation -ERR, which
nats-py hands to the error callback. It usually comes before the PONG of the next flush, but not always
(measured: about one in twenty), so an expected refusal is waited for (bounded) and an allowed subject's
refusal arriving late is looked for once more at the end. What is allowed must really flow: `admin`,
subscribed to `>`, receives each allowed publication (and none of the forbidden ones), and a subscription
that was allowed receives what admin then publishes on it (a forbidden one receives nothing). Messages from
one connection reach another in order, so a marker sent after a probe says when the probe, if it was going
to arrive, has arrived: no waiting on a clock for an absence.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterable

import pytest
from browserfleet_contracts import bus, endpoints, subjects
from browserfleet_contracts.events import EventType
from browserfleet_core.busauth import (
    Permissions,
    registrant_permissions,
    service_permissions,
    worker_permissions,
)
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from .conftest import Bus, Registered, refused

pytestmark = pytest.mark.e2e

_ids = itertools.count()
SENTINEL_WAIT = 30.0  # hang protection only: a sentinel always arrives
REFUSAL_WAIT = 10.0  # the same for a refusal the server owes
PROBE_TRIES = 3
# an allowed subscription's tries wait longer each time: a publication right after a new subscription misses
# it now and then (see `subscribed`), and on a loaded machine three immediate tries all missed once (CI, the
# worker-gateway's svc.workers.health); a refused one is judged by the server's refusal, its tries stay quick
ALLOWED_PROBE_PAUSES = (0.0, 0.05, 0.2, 0.5, 1.0)


def instantiate(pattern: str) -> str:
    """A literal subject a permission pattern covers (`*` and `>` filled in)."""
    return ".".join({"*": "t1", ">": "t1.t2"}.get(token, token) for token in pattern.split("."))


def universe(workers: Iterable[Registered]) -> list[str]:
    found: list[str] = [ep.subject for ep in endpoints.all_endpoints()]
    grants = [*bus.GRANTS.values(), *(bus.worker_grant(w.worker_id, w.pool) for w in workers)]
    for grant in grants:
        found += [instantiate(p) for p in (*grant.publish, *grant.subscribe)]
    found += [f"{bus.inbox_prefix(i)}.x" for i in (*bus.SERVICES, bus.WORKER_GATEWAY_SYSTEM, bus.ADMIN)]
    found += [f"{bus.worker_inbox_prefix(w.key)}.x" for w in workers]
    found += [subjects.event("o1", t.value) for t in EventType]
    found += [
        subjects.AUTH_CALLOUT,
        "$SYS.REQ.SERVER.PING.CONNZ",
        "$SYS.REQ.SERVER.t1.KICK",
        "$JS.API.STREAM.INFO.TASKS",
        "$JS.API.STREAM.DELETE.TASKS",
        "$JS.API.CONSUMER.CREATE.OBJ_artifacts.t1",
        "$JS.API.CONSUMER.MSG.NEXT.TASKS.pool-elsewhere-normal",
        "$JS.ACK.TASKS.pool-elsewhere-normal.1.1.1.1.1",
        f"$O.{subjects.ARTIFACTS_BUCKET}.M.t1",
        subjects.task_update("someone-else", "t1"),
        subjects.task_run("elsewhere", "normal"),
        subjects.live_frames("t1", "someone-else"),
        "_INBOX.t1",
    ]
    return sorted(set(found))


# wildcard subscriptions: none is allowed to anyone but admin, save an identity's own inbox
WIDE = [
    ">",
    "svc.>",
    "events.>",
    "tasks.>",
    "tasks.updates.>",
    "_INBOX.>",
    "_INBOX_gateway.>",
    "$SYS.>",
    "$O.>",
]


class Probe:
    """One identity's connection with its refusals recorded, checked against `admin` reading `>`. `sentinel`:
    a subject the identity may publish (None for the system-account user, whose traffic admin's account
    does not see: its checks rest on the refusals alone)."""

    def __init__(self, nc: NatsClient, admin: NatsClient, inbox: str, sentinel: str | None) -> None:
        self.nc, self.admin, self.inbox, self.sentinel = nc, admin, inbox, sentinel
        self.errors: list[str] = []
        self.changed = asyncio.Event()
        self.seen: set[bytes] = set()
        self.ends: dict[bytes, asyncio.Event] = {}

    async def on_error(self, exc: Exception) -> None:
        self.errors.append(str(exc).lower())  # nats-py lowercases the server's message, subject included
        self.changed.set()

    async def open(self) -> None:
        async def on_admin(msg: Msg) -> None:
            self.seen.add(msg.data)
            if msg.data in self.ends:
                self.ends[msg.data].set()

        async def on_end(msg: Msg) -> None:
            if msg.data in self.ends:
                self.ends[msg.data].set()

        await self.admin.subscribe(">", cb=on_admin)
        await self.admin.flush()
        # one subscription for the end markers: re-subscribing a subject at this pace loses a message now
        # and then in nats-py, which would look like a refusal
        await self.nc.subscribe(f"{self.inbox}.end", cb=on_end)
        await self.nc.flush()

    def refusal(self, what: str, subject: str) -> bool:
        return any(what in e and f'"{subject.lower()}"' in e for e in self.errors)

    async def refused(self, what: str, subject: str, expect: bool) -> bool:
        """Whether the server refused. The -ERR may come after the PONG of a flush (measured: ~5 % of the
        time), so an expected refusal is waited for (a bound, not a speed check); an unexpected one that
        comes late is caught by `late_refusals` at the end."""
        if not expect:
            return self.refusal(what, subject)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REFUSAL_WAIT):
                while not self.refusal(what, subject):
                    self.changed.clear()
                    await self.changed.wait()
        return self.refusal(what, subject)

    async def _end(self, publisher: NatsClient, subject: str) -> None:
        token = f"end-{next(_ids)}".encode()
        self.ends[token] = asyncio.Event()
        await publisher.publish(subject, token)
        await publisher.flush()
        await asyncio.wait_for(self.ends[token].wait(), SENTINEL_WAIT)

    async def published(self, subject: str, allowed: bool) -> tuple[bool, bool | None]:
        """(refused by the server, seen by admin — None when admin cannot see this identity)."""
        token = f"probe-{next(_ids)}".encode()
        await self.nc.publish(subject, token)
        await self.nc.flush()
        if self.sentinel is not None:
            await self._end(self.nc, self.sentinel)
        seen = (token in self.seen) if self.sentinel is not None else None
        # what admin saw was not refused: no refusal to wait for
        return await self.refused("publish", subject, expect=not allowed and not seen), seen

    async def subscribed(self, subject: str, allowed: bool, literal: bool = True) -> tuple[bool, bool | None]:
        """(refused by the server, received what admin then published there — None as above)."""
        token = f"probe-{next(_ids)}".encode()
        # no callback: nats-py queues a message on its subscription as it reads it, so once the end marker
        # (read after it) is handled, the probe is in the queue if it came (callbacks of two subscriptions
        # run in tasks of their own, in no order)
        sub = await self.nc.subscribe(subject)
        await self.nc.flush()
        received: bool | None = None
        # admin publishing into JetStream's and the system's own subjects has side effects there (a stray
        # ack, an API call): those subscriptions are judged by the server's refusal alone
        if self.sentinel is not None and not subject.startswith("$"):
            # a publication right after a new subscription misses it now and then (measured: ~2 % on one
            # nats-server, every connection in order): a few tries, each told complete by its marker; a
            # refused subscription receives none of them
            pauses = ALLOWED_PROBE_PAUSES if allowed else (0.0,) * PROBE_TRIES
            for pause in pauses:
                await asyncio.sleep(pause)
                await self.admin.publish(subject if literal else instantiate(subject), token)
                await self._end(self.admin, f"{self.inbox}.end")
                if sub.pending_msgs:
                    break
            received = sub.pending_msgs > 0
        refusal = await self.refused("subscription", subject, expect=not allowed and not received)
        await sub.unsubscribe()
        return refusal, received

    async def late_refusals(self, allowed: list[tuple[str, str]]) -> list[str]:
        await self.nc.flush()
        if self.sentinel is not None:
            await self._end(self.nc, self.sentinel)
        return [f"{what} {subject} refused late" for what, subject in allowed if self.refusal(what, subject)]


def expected(who: str, workers: dict[str, Registered], invite: str) -> Permissions:
    if who in workers:
        w = workers[who]
        return worker_permissions(w.worker_id, w.pool, w.key)
    if who == bus.REGISTRANT:
        return registrant_permissions(invite)
    return service_permissions(who)


async def open_probe(
    bus_: Bus, who: str, admin: NatsClient, workers: dict[str, Registered], invite: str
) -> Probe:
    sentinel: str | None
    if who in workers:
        w = workers[who]
        inbox, sentinel = bus.worker_inbox_prefix(w.key), subjects.task_update(w.worker_id, "sentinel")
    elif who == bus.REGISTRANT:
        inbox, sentinel = bus.registrant_inbox_prefix(invite), endpoints.Workers.REGISTER.subject
    else:
        inbox = bus.inbox_prefix(who)
        sentinel = None if who == bus.WORKER_GATEWAY_SYSTEM else "$JS.API.SENTINEL"
    probe = Probe(admin, admin, inbox, sentinel)  # the connection is set below, with the error callback
    if who in workers:
        probe.nc = await bus_.as_worker(workers[who].key, error_cb=probe.on_error)
    elif who == bus.REGISTRANT:
        probe.nc = await bus_.as_registrant(invite, error_cb=probe.on_error)
    else:
        probe.nc = await bus_.as_service(who, error_cb=probe.on_error)
    await probe.open()
    return probe


IDENTITIES = [*bus.SERVICES, bus.WORKER_GATEWAY_SYSTEM, "org-worker", "platform-worker", bus.REGISTRANT]


@pytest.mark.parametrize("who", IDENTITIES)
async def test_each_identity_may_do_exactly_what_the_contracts_say(
    who: str,
    bus_platform: Bus,
    admin: NatsClient,
    org_worker: Registered,
    platform_worker: Registered,
    invite_code: str,
) -> None:
    workers = {"org-worker": org_worker, "platform-worker": platform_worker}
    perms = expected(who, workers, invite_code)
    probe = await open_probe(bus_platform, who, admin, workers, invite_code)

    def judge(what: str, subject: str, allowed: bool, refusal: bool, flowed: bool | None) -> None:
        if allowed and (refusal or flowed is False):
            wrong.append(f"may {what} {subject} but refused={refusal} flowed={flowed}")
        if not allowed and (not refusal or flowed):
            wrong.append(f"may not {what} {subject} but refused={refusal} flowed={flowed}")

    wrong: list[str] = []
    allowed: list[tuple[str, str]] = []
    try:
        for subject in universe(workers.values()):
            may = perms.allows_publish(subject)
            judge("publish", subject, may, *await probe.published(subject, may))
            allowed += [("publish", subject)] if may else []
            may = perms.allows_subscribe(subject)
            judge("subscribe", subject, may, *await probe.subscribed(subject, may))
            allowed += [("subscription", subject)] if may else []
        for pattern in WIDE:
            may = perms.allows_subscribe(pattern)
            judge("subscribe", pattern, may, *await probe.subscribed(pattern, may, literal=False))
        wrong += await probe.late_refusals(allowed)
    finally:
        await probe.nc.close()
    assert not wrong, f"{who}:\n" + "\n".join(wrong)


async def test_workers_and_registrants_hold_only_their_own(
    bus_platform: Bus, org_worker: Registered, platform_worker: Registered
) -> None:
    """What the issue names, independently of how busauth derives it: a worker claims, releases, beats and
    reports under its own id and pulls its own pool only; it cannot assert an organization's actor, publish
    events, report for another worker, pull another pool, or read any reply but its own."""
    for me, other in ((org_worker, platform_worker), (platform_worker, org_worker)):
        perms = worker_permissions(me.worker_id, me.pool, me.key)
        for subject in (
            endpoints.Scheduler.CLAIM.subject,
            endpoints.Vault.RELEASE.subject,
            endpoints.Workers.HEARTBEAT.subject,
            endpoints.Auth.ORG_POLICY.subject,
            endpoints.Workers.COMMIT_ARTIFACT.subject,
            subjects.task_update(me.worker_id, "t1"),
            f"$JS.API.CONSUMER.MSG.NEXT.TASKS.{subjects.task_run_consumer(me.pool, 'urgent')}",
        ):
            assert perms.allows_publish(subject), subject
        org_scoped = [ep.subject for ep in endpoints.all_endpoints() if "actor" in ep.request.model_fields]
        for subject in (
            *org_scoped,
            subjects.task_update(other.worker_id, "t1"),
            subjects.event("o1", EventType.SECURITY_REQUEST_BLOCKED),
            subjects.event("o1", EventType.TASK_COMPLETED),
            f"$JS.API.CONSUMER.MSG.NEXT.TASKS.{subjects.task_run_consumer(other.pool, 'urgent')}",
            "$JS.API.STREAM.INFO.TASKS",
            f"$O.{subjects.ARTIFACTS_BUCKET}.M.t1",
            subjects.WORKER_REVOKED,
        ):
            assert not perms.allows_publish(subject), subject
        for subject in (
            f"{bus.inbox_prefix(bus.VAULT)}.x",
            f"{bus.inbox_prefix(bus.GATEWAY)}.x",
            f"{bus.worker_inbox_prefix(other.key)}.x",
            subjects.AUTH_CALLOUT,
            endpoints.Auth.LOGIN.subject,
            subjects.task_run(other.pool, "normal"),
            subjects.worker_drain(other.worker_id),
        ):
            assert not perms.allows_subscribe(subject), subject
    registrant = registrant_permissions("inv_x")
    assert registrant.publish == (endpoints.Workers.REGISTER.subject,)
    assert registrant.subscribe == (f"{bus.registrant_inbox_prefix('inv_x')}.>",)


def test_only_the_gateway_asserts_an_organizations_actor() -> None:
    """Every endpoint that takes an `Actor` is callable by the gateway, and by another identity only where
    this list says why (the vault reads a task's spec, in the claim's org, for a profile lease)."""
    reviewed = {(bus.VAULT, endpoints.Scheduler.GET_TASK.subject)}
    for ep in endpoints.all_endpoints():
        if "actor" not in ep.request.model_fields:
            continue
        for caller in ep.callers:
            assert caller == bus.GATEWAY or (caller, ep.subject) in reviewed, (caller, ep.subject)
    assert {
        who for who in bus.SERVICES if service_permissions(who).allows_subscribe(subjects.AUTH_CALLOUT)
    } == {bus.WORKER_GATEWAY}


async def test_nobody_comes_in_without_credentials(bus_platform: Bus, org_worker: Registered) -> None:
    url = bus_platform.url
    assert "authorization violation" in (await refused(url)).lower()
    assert "authorization violation" in (await refused(url, token="sk_worker_" + "x" * 40)).lower()
    assert "authorization violation" in (await refused(url, token="inv_" + "x" * 40)).lower()
    assert "authorization violation" in (await refused(url, user=bus.GATEWAY, password="wrong")).lower()
    # a worker cannot pass for a service by naming it
    assert (
        "authorization violation" in (await refused(url, user=bus.SCHEDULER, password=org_worker.key)).lower()
    )
