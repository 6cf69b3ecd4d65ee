"""Rate limits shared by every gateway replica (the NATS KV bucket `rate_limits` on the test's real NATS), and
the client address behind a load balancer (TRUSTED_PROXIES): two replicas, each its own NATS connection and
app, answer one principal's and one address's requests together, never each its own share. FakeServices
stand in for the services (conftest). Every test limits keys of its own (a fresh user, fresh addresses):
the bucket outlives a test. The rates are so slow (one token per 1,000 s) that no token comes back while a
test runs: no clock is involved."""

from __future__ import annotations

import ipaddress
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from browserfleet_contracts import endpoints
from browserfleet_core.messaging import connect
from browserfleet_gateway.app import create_app
from browserfleet_gateway.clientaddr import client_address, parse_networks
from browserfleet_gateway.settings import GatewaySettings

from .conftest import FakeServices, Signer

SLOW = 0.001  # one token per 1,000 s
PROXY = "10.0.0.5"  # the load balancer, inside TRUSTED_PROXIES
Replica = Callable[[str], httpx.AsyncClient]


def fresh_address() -> str:
    """An address no other test (nor an earlier run on the same NATS) limited: 2001:db8::/32 is for docs."""
    return str(ipaddress.ip_address(f"2001:db8:{uuid.uuid4().hex[:4]}::{uuid.uuid4().hex[:4]}"))  # canonical


@pytest.fixture
async def replicas(nats_url: str, services: FakeServices) -> AsyncIterator[Callable[..., Any]]:
    """`await replicas(n, **settings)`: n gateway replicas; each is a function of the client's (peer's)
    address giving an httpx client that connects from it."""
    async with AsyncExitStack() as stack:

        async def make(n: int, **overrides: Any) -> list[Replica]:
            made: list[Replica] = []
            for i in range(n):
                settings = GatewaySettings(
                    nats_url=nats_url, database_url=None, rpc_timeout_seconds=5, **overrides
                )
                nc = await connect(nats_url, name=f"gw-limits-{i}")
                stack.push_async_callback(nc.close)
                app = create_app(settings, nc=nc)
                await stack.enter_async_context(app.router.lifespan_context(app))

                def from_peer(peer: str, app: Any = app) -> httpx.AsyncClient:
                    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
                    return httpx.AsyncClient(transport=transport, base_url="http://gw.test")

                made.append(from_peer)
            return made

        yield make


@pytest.mark.parametrize("store", ["nats", "local"])
async def test_two_replicas_share_one_principals_limit(
    replicas: Callable[..., Any], signer: Signer, store: str
) -> None:
    one, two = await replicas(
        2, rate_limit_store=store, rate_limit_per_second=SLOW, rate_limit_burst=4, login_rate_per_second=0
    )
    token = {"Authorization": f"Bearer {signer.token(sub=f'u-{uuid.uuid4().hex[:8]}')}"}
    codes = []
    for i in range(8):  # alternately through each replica, as a load balancer spreads them
        async with (one if i % 2 == 0 else two)("127.0.0.1") as client:
            codes.append((await client.get("/api/v1/tasks", headers=token)).status_code)
    if store == "nats":
        assert codes == [200] * 4 + [429] * 4  # the burst of 4, once for both replicas
    else:
        assert codes == [200] * 8  # RATE_LIMIT_STORE=local: each replica its own 4, so twice the rate


async def test_the_second_replica_refuses_with_the_first_ones_headers(
    replicas: Callable[..., Any], signer: Signer
) -> None:
    one, two = await replicas(2, rate_limit_per_second=SLOW, rate_limit_burst=2, login_rate_per_second=0)
    token = {"Authorization": f"Bearer {signer.token(sub=f'u-{uuid.uuid4().hex[:8]}')}"}
    async with one("127.0.0.1") as a, two("127.0.0.1") as b:
        began = time.monotonic()
        first = await a.get("/api/v1/tasks", headers=token)
        assert first.headers["RateLimit-Limit"] == "2" and first.headers["RateLimit-Remaining"] == "1"
        assert (await b.get("/api/v1/tasks", headers=token)).headers["RateLimit-Remaining"] == "0"
        refused = await a.get("/api/v1/tasks", headers=token)
        waited = time.monotonic() - began
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    # the next token is 1,000 s after the first call; a loaded machine may take seconds between the calls
    assert int(refused.headers["Retry-After"]) >= 1000 - math.ceil(waited) - 1, (refused.headers, waited)


async def login(client: httpx.AsyncClient, forwarded_for: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    resp = await client.post(
        "/auth/login", json={"email": "a@example.com", "password": "wrong"}, headers=headers
    )
    return resp.status_code


def login_addresses(services: FakeServices) -> list[str | None]:
    """The client address each login that reached auth carried (what auth's brute-force counters key on)."""
    return [p.get("client_ip") for s, p in services.calls if s == endpoints.Auth.LOGIN.subject]


async def test_login_throttle_behind_a_load_balancer(
    replicas: Callable[..., Any], services: FakeServices
) -> None:
    one, two = await replicas(
        2, login_rate_per_second=SLOW, login_burst=2, trusted_proxies=["10.0.0.0/8"], rate_limit_per_second=0
    )
    attacker, victim = fresh_address(), fresh_address()
    async with one(PROXY) as a, two(PROXY) as b:
        # the attacker's guesses through both replicas count against one bucket: its own address's
        assert [await login(a, attacker), await login(b, attacker)] == [401, 401]
        assert [await login(a, attacker), await login(b, attacker)] == [429, 429]
        # every other client behind the same load balancer still signs in (before: one bucket for all)
        assert await login(b, victim) == 401
        # a client-written hop left of the one the proxy appended is not believed
        assert await login(a, f"{victim}, {attacker}") == 429
    assert login_addresses(services) == [attacker, attacker, victim]


async def test_a_spoofed_forwarded_for_from_an_untrusted_address_is_ignored(
    replicas: Callable[..., Any], services: FakeServices
) -> None:
    (gateway,) = await replicas(
        1, login_rate_per_second=SLOW, login_burst=2, trusted_proxies=["10.0.0.0/8"], rate_limit_per_second=0
    )
    direct, victim = fresh_address(), fresh_address()
    async with gateway(direct) as spoofer, gateway(PROXY) as through_lb:
        # a client that reaches the gateway directly names the victim's address: its own bucket is charged,
        # and auth is told its own address
        assert [await login(spoofer, victim), await login(spoofer, victim)] == [401, 401]
        # nor does a new made-up address each time get it past its limit
        assert await login(spoofer, fresh_address()) == 429
        assert await login(spoofer, f"{PROXY}, {fresh_address()}") == 429
        # the victim, behind the load balancer, was never charged
        assert [await login(through_lb, victim), await login(through_lb, victim)] == [401, 401]
    assert login_addresses(services) == [direct, direct, victim, victim]


async def test_without_trusted_proxies_the_header_is_never_believed(
    replicas: Callable[..., Any], services: FakeServices
) -> None:
    (gateway,) = await replicas(1, login_rate_per_second=SLOW, login_burst=1, rate_limit_per_second=0)
    peer = fresh_address()
    async with gateway(peer) as client:
        assert await login(client, fresh_address()) == 401
        assert await login(client, fresh_address()) == 429
    assert login_addresses(services) == [peer]


def test_client_address_reads_forwarded_for_from_the_right() -> None:
    trusted = parse_networks(["10.0.0.0/8", "fd00::/8"])
    # through two trusted proxies: the first untrusted hop from the right is the client
    assert client_address("10.0.0.5", ["198.51.100.1, 203.0.113.9, 10.1.1.1"], trusted) == "203.0.113.9"
    # the header given twice counts as one list, in order
    assert client_address("10.0.0.5", ["198.51.100.1", "203.0.113.9"], trusted) == "203.0.113.9"
    # ports, brackets, IPv4-mapped IPv6
    assert client_address("10.0.0.5", ["203.0.113.9:5100"], trusted) == "203.0.113.9"
    assert client_address("10.0.0.5", ["[2001:db8::1]:443"], trusted) == "2001:db8::1"
    assert client_address("::ffff:10.0.0.5", ["203.0.113.9"], trusted) == "203.0.113.9"
    # garbage stops at the last hop a trusted proxy vouched for
    assert client_address("10.0.0.5", ["203.0.113.9, unknown"], trusted) == "10.0.0.5"
    # every hop trusted: the request started inside
    assert client_address("10.0.0.5", ["10.2.2.2"], trusted) == "10.2.2.2"
    # an untrusted peer, or no trusted proxies: the peer, whatever the header says
    assert client_address("203.0.113.50", ["198.51.100.1"], trusted) == "203.0.113.50"
    assert client_address("10.0.0.5", ["198.51.100.1"], []) == "10.0.0.5"
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300' is not an IP address or CIDR"):
        parse_networks(["10.0.0.300"])


def test_trusted_proxies_setting_parses_and_names_a_bad_entry() -> None:
    ok = GatewaySettings(nats_url="nats://unused.invalid:4222", trusted_proxies="10.0.0.0/8, fd00::/8")
    assert [str(n) for n in ok.trusted_proxies] == ["10.0.0.0/8", "fd00::/8"]
    with pytest.raises(ValueError, match="'ingress' is not an IP address or CIDR"):
        GatewaySettings(nats_url="nats://unused.invalid:4222", trusted_proxies="10.0.0.0/8,ingress")
