"""The organization's policy: validation, update by admins only, the audit row, and what a worker gets.

Service tests run on real PostgreSQL (one rolled-back transaction each). The worker-key check runs over the
real NATS server against the auth handlers; `svc.workers.authenticate` is answered by a small in-test
responder standing in for worker-gateway (another service; this package must not import it).
"""

from __future__ import annotations

from typing import Any

import nats
import pytest
from browserfleet_auth import audit, org_policy, organizations, users
from browserfleet_auth.app import AuthApp
from browserfleet_auth.config import AuthConfig
from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import (
    BootstrapRequest,
    ListAuditRequest,
    OrgPolicy,
    WorkerOrgPolicyRequest,
)
from browserfleet_contracts.common import Actor
from browserfleet_contracts.workers import WorkerAuthRequest, WorkerIdentity
from browserfleet_core.errors import Forbidden, NotFound, ServiceError, Unauthorized
from browserfleet_core.messaging import ERROR_HEADER, RpcClient
from browserfleet_core.workerkeys import WorkerKeys
from nats.aio.msg import Msg
from pydantic import ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

POLICY = {
    "allowed_domains": ["example.com", "*.shop.example"],
    "allow_evaluate": True,
    "proxy": {
        "server": "http://proxy.example:3128",
        "username": "acme",
        "password": "{{ secrets.PROXY_PW }}",
    },
}


async def new_org(session: AsyncSession, name: str) -> Actor:
    org = await organizations.create_organization(session, name)
    admin = await users.create_user(
        session, org_id=org.id, email=f"admin@{org.slug}.example", password="pw-" * 6, role="admin"
    )
    return Actor(org_id=org.id, user_id=admin.id, role="admin", client_ip="203.0.113.7")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"allowed_domains": ["exa mple.com"]}, "allowed_domains"),
        ({"allowed_domains": ["x.example"] * 101}, "allowed_domains"),
        ({"proxy": {"server": "socks5://p.example:1080"}}, "proxy"),
        ({"proxy": {"server": "http://user:pw@p.example:3128"}}, "proxy"),  # no credentials in the URL
        ({"proxy": {"server": "http://p.example", "password": "plain-text"}}, "proxy"),  # vault refs only
        ({"proxy": {"server": "http://p.example", "username": "{{ secrets.bad-name }}"}}, "proxy"),
        ({"allow_evaluate": True, "surprise": 1}, "surprise"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        OrgPolicy.model_validate(body)
    assert err.value.errors()[0]["loc"][0] == field


def test_the_policy_names_the_secrets_its_proxy_uses() -> None:
    policy = OrgPolicy.model_validate(
        {
            "proxy": {
                "server": "http://p.example",
                "username": "{{ secrets.PU }}",
                "password": "{{secrets.PW}}",
            }
        }
    )
    assert policy.secret_names() == {"PU", "PW"}
    assert OrgPolicy().secret_names() == set()


async def test_admins_update_their_own_org_policy_and_it_is_audited(
    session: AsyncSession, config: AuthConfig
) -> None:
    admin = await new_org(session, "Policy Org")
    other = await new_org(session, "Policy Other")
    assert (
        await org_policy.get_org_policy(session, admin) == OrgPolicy()
    )  # the default: no restrictions added
    policy = OrgPolicy.model_validate(POLICY)
    assert await org_policy.update_org_policy(session, config, admin, policy) == policy
    viewer = admin.model_copy(update={"role": "viewer", "user_id": None})
    assert await org_policy.get_org_policy(session, viewer) == policy  # every member reads it
    assert await org_policy.get_org_policy(session, other) == OrgPolicy()  # another org is untouched
    for role in ("user", "viewer"):
        with pytest.raises(Forbidden):
            await org_policy.update_org_policy(
                session, config, admin.model_copy(update={"role": role}), OrgPolicy()
            )
    assert await org_policy.get_org_policy(session, admin) == policy
    entry = (await audit.list_audit(session, ListAuditRequest(actor=admin))).items[0]
    assert entry.action == "organization.policy_updated" and entry.target == admin.org_id
    assert (entry.actor_user_id, entry.client_ip) == (admin.user_id, "203.0.113.7")
    assert entry.detail == {
        "changed": ["allow_evaluate", "allowed_domains", "proxy"],
        "allowed_domains": ["example.com", "*.shop.example"],
        "allow_evaluate": True,
        "proxy_server": "http://proxy.example:3128",
        "proxy_secrets": ["PROXY_PW"],
    }
    relaxed = await org_policy.update_org_policy(
        session, config, admin, policy.model_copy(update={"allow_evaluate": False})
    )
    assert not relaxed.allow_evaluate
    entry = (await audit.list_audit(session, ListAuditRequest(actor=admin))).items[0]
    assert entry.detail["changed"] == ["allow_evaluate"]


async def test_a_worker_gets_the_policy_of_orgs_it_may_serve(
    session: AsyncSession, config: AuthConfig
) -> None:
    admin = await new_org(session, "Served Org")
    await org_policy.update_org_policy(session, config, admin, OrgPolicy.model_validate(POLICY))
    platform_worker = WorkerIdentity(worker_id="w1", org_id=None, name="w1", tags=[])
    own_worker = platform_worker.model_copy(update={"org_id": admin.org_id})
    foreign_worker = platform_worker.model_copy(update={"org_id": "another-org"})
    for worker in (platform_worker, own_worker):
        got = await org_policy.org_policy_for_worker(session, worker, admin.org_id)
        assert got.allowed_domains == ["example.com", "*.shop.example"]
    with pytest.raises(NotFound):  # a worker bound to another org learns nothing, not even that it exists
        await org_policy.org_policy_for_worker(session, foreign_worker, admin.org_id)
    with pytest.raises(NotFound):
        await org_policy.org_policy_for_worker(session, platform_worker, "no-such-org")


class Ticker:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def test_verified_worker_keys_are_cached_briefly() -> None:
    asked: list[str] = []

    async def lookup(key: str) -> WorkerIdentity:
        asked.append(key)
        if key != "sk_worker_good":
            raise Unauthorized("unknown worker key")
        return WorkerIdentity(worker_id="w1", org_id=None, name="w1", tags=[])

    clock = Ticker()
    keys = WorkerKeys(lookup, ttl_seconds=5, clock=clock)
    assert (await keys.verify("sk_worker_good")).worker_id == "w1"
    assert (await keys.verify("sk_worker_good")).worker_id == "w1"
    assert asked == ["sk_worker_good"]  # the second answer came from the cache
    clock.t += 5.1
    await keys.verify("sk_worker_good")
    assert asked == ["sk_worker_good"] * 2  # expired: asked again (a revoked worker is refused in time)
    for _ in range(2):  # an unknown key is never cached
        with pytest.raises(Unauthorized):
            await keys.verify("sk_worker_bad")
    assert asked.count("sk_worker_bad") == 2
    assert "sk_worker_good" not in str(keys._cache)  # only the key's hash is held


# --- over NATS: the worker-key check in front of svc.auth.org_policy ----------------------------------
async def test_org_policy_over_nats_needs_a_valid_worker_key(running: AuthApp, nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    rpc = RpcClient(nc, timeout=10)
    workers = {"sk_worker_platform": None, "sk_worker_other": "some-other-org"}
    asked: list[str] = []

    async def authenticate(msg: Msg) -> None:  # stands in for worker-gateway
        key = WorkerAuthRequest.model_validate_json(msg.data).worker_key
        asked.append(key)
        if key not in workers:
            body = Unauthorized("unknown worker key", code="invalid_worker_key").body()
            await nc.publish(msg.reply, body.model_dump_json().encode(), headers={ERROR_HEADER: "401"})
            return
        identity = WorkerIdentity(worker_id=key, org_id=workers[key], name=key, tags=[])
        await msg.respond(identity.model_dump_json().encode())

    sub = await nc.subscribe(endpoints.Workers.AUTHENTICATE.subject, cb=authenticate)
    try:
        boot = await rpc.call(endpoints.Auth.BOOTSTRAP, BootstrapRequest(org_name="Workers Org"))
        assert running.db is not None
        async with running.db.transaction() as session:
            admin = Actor(org_id=boot.org_id, user_id=None, role="admin")
            await org_policy.update_org_policy(
                session, running.runtime.config, admin, OrgPolicy.model_validate(POLICY)
            )

        def ask(key: str, org: str = boot.org_id) -> Any:
            return rpc.call(endpoints.Auth.ORG_POLICY, WorkerOrgPolicyRequest(org_id=org, worker_key=key))

        policy = await ask("sk_worker_platform")
        assert policy.proxy is not None and policy.proxy.password == "{{ secrets.PROXY_PW }}"
        assert (await ask("sk_worker_platform")) == policy
        assert asked.count("sk_worker_platform") == 1  # verified once, then cached
        for key, org, status in (
            ("sk_worker_forged", boot.org_id, 401),
            ("sk_worker_other", boot.org_id, 404),  # an org-bound worker of another org
            ("sk_worker_platform", "no-such-org", 404),
        ):
            with pytest.raises(ServiceError) as err:
                await ask(key, org)
            assert err.value.status == status, (key, err.value)
    finally:
        await sub.unsubscribe()
        await nc.close()
