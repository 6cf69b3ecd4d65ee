"""The vault's subjects end to end over the real NATS server and PostgreSQL.

`svc.workers.authenticate`, `svc.scheduler.claim_info` and `svc.auth.org_policy` are answered by small
in-test responders standing in for worker-gateway, the scheduler and auth (other services; this package must
not import them).
They are ordinary NATS subscribers that reply with the real contract models.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import nats
import pytest
from browserfleet_contracts import subjects
from browserfleet_contracts.auth import OrgPolicy, WorkerOrgPolicyRequest
from browserfleet_contracts.common import Ack, Actor, OrgScoped
from browserfleet_contracts.tasks import ClaimInfo, ClaimInfoRequest
from browserfleet_contracts.vault import (
    CheckNamesReply,
    CheckNamesRequest,
    CredentialCreate,
    CredentialPublic,
    NameRequest,
    PutCredentialRequest,
    ReleaseReply,
    ReleaseRequest,
)
from browserfleet_contracts.workers import WorkerAuthRequest, WorkerIdentity
from browserfleet_core.errors import NotFound, ServiceError, Unauthorized
from browserfleet_core.messaging import ERROR_HEADER, RpcClient
from browserfleet_core.testing import unique_name
from browserfleet_vault import repository
from browserfleet_vault.app import VaultContext, create_context
from browserfleet_vault.settings import VaultSettings
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg


@dataclass
class Stand:
    """State of the stand-in worker-gateway, scheduler and auth."""

    workers: dict[str, WorkerIdentity] = field(default_factory=dict)
    claims: dict[str, ClaimInfo] = field(default_factory=dict)
    policies: dict[str, OrgPolicy] = field(default_factory=dict)
    policy_asks: list[WorkerOrgPolicyRequest] = field(default_factory=list)


@pytest.fixture(scope="module")
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


@pytest.fixture(scope="module")
async def stand(nc: NatsClient) -> AsyncIterator[Stand]:
    state = Stand()

    async def authenticate(msg: Msg) -> None:
        key = WorkerAuthRequest.model_validate_json(msg.data).worker_key
        identity = state.workers.get(key)
        if identity is None:
            body = Unauthorized("unknown worker key").body()
            await nc.publish(msg.reply, body.model_dump_json().encode(), headers={ERROR_HEADER: "401"})
        else:
            await msg.respond(identity.model_dump_json().encode())

    async def claim_info(msg: Msg) -> None:
        task_id = ClaimInfoRequest.model_validate_json(msg.data).task_id
        claim = state.claims.get(task_id)
        if claim is None:
            body = NotFound(f"task {task_id} not found").body()
            await nc.publish(msg.reply, body.model_dump_json().encode(), headers={ERROR_HEADER: "404"})
        else:
            await msg.respond(claim.model_dump_json().encode())

    async def org_policy(msg: Msg) -> None:
        req = WorkerOrgPolicyRequest.model_validate_json(msg.data)
        state.policy_asks.append(req)
        if req.worker_key not in state.workers:
            body = Unauthorized("unknown worker key").body()
            await nc.publish(msg.reply, body.model_dump_json().encode(), headers={ERROR_HEADER: "401"})
            return
        await msg.respond(state.policies.get(req.org_id, OrgPolicy()).model_dump_json().encode())

    subs = [
        await nc.subscribe(subjects.Workers.AUTHENTICATE, queue="stand-in", cb=authenticate),
        await nc.subscribe(subjects.Scheduler.CLAIM_INFO, queue="stand-in", cb=claim_info),
        await nc.subscribe(subjects.Auth.ORG_POLICY, queue="stand-in", cb=org_policy),
    ]
    yield state
    for sub in subs:
        await sub.unsubscribe()


@pytest.fixture(scope="module")
async def vault(vault_settings: VaultSettings, vault_migrated: str) -> AsyncIterator[VaultContext]:
    ctx = create_context(vault_settings)
    await ctx.broker.start()
    # its SUBs went out on its own connection: a PING round trip makes sure the server has them
    await ctx.broker.connection.flush()
    yield ctx
    await ctx.broker.stop()
    await ctx.db.dispose()


@pytest.fixture
def rpc(nc: NatsClient, vault: VaultContext, stand: Stand) -> RpcClient:
    return RpcClient(nc, timeout=5)


def admin(org: str) -> Actor:
    return Actor(org_id=org, user_id="u1", role="admin")


async def put(rpc: RpcClient, org: str, name: str, value: str) -> CredentialPublic:
    request = PutCredentialRequest(actor=admin(org), credential=CredentialCreate(name=name, value=value))
    return await rpc.call(subjects.Vault.PUT_CREDENTIAL, request, CredentialPublic)


async def test_put_list_check_delete(rpc: RpcClient) -> None:
    org = unique_name("org")
    created = await put(rpc, org, "LOGIN_PW", "s3cret-value")
    listed = await rpc.call(
        subjects.Vault.LIST_CREDENTIALS, OrgScoped(actor=admin(org)), list[CredentialPublic]
    )
    assert [c.id for c in listed] == [created.id]
    raw = await rpc.nc.request(
        subjects.Vault.LIST_CREDENTIALS, OrgScoped(actor=admin(org)).model_dump_json().encode()
    )
    assert b"s3cret-value" not in raw.data and b"LOGIN_PW" in raw.data
    reply = await rpc.call(
        subjects.Vault.CHECK_NAMES,
        CheckNamesRequest(actor=admin(org), names=["LOGIN_PW", "NOPE"]),
        CheckNamesReply,
    )
    assert reply.missing == ["NOPE"]
    ack = await rpc.call(
        subjects.Vault.DELETE_CREDENTIAL, NameRequest(actor=admin(org), name="LOGIN_PW"), Ack
    )
    assert ack.ok
    with pytest.raises(ServiceError) as exc:
        await rpc.call(subjects.Vault.DELETE_CREDENTIAL, NameRequest(actor=admin(org), name="LOGIN_PW"), Ack)
    assert exc.value.status == 404


async def test_viewer_put_is_forbidden_and_bad_name_names_the_field(rpc: RpcClient) -> None:
    viewer = Actor(org_id=unique_name("org"), role="viewer")
    request = PutCredentialRequest(actor=viewer, credential=CredentialCreate(name="X", value="v"))
    with pytest.raises(ServiceError) as exc:
        await rpc.call(subjects.Vault.PUT_CREDENTIAL, request, CredentialPublic)
    assert exc.value.status == 403
    bad = {"actor": admin("o").model_dump(), "credential": {"name": "has space", "value": "v"}}
    with pytest.raises(ServiceError) as exc:
        await rpc.call(subjects.Vault.PUT_CREDENTIAL, bad, CredentialPublic)
    assert exc.value.status == 422 and exc.value.field == "credential.name"


def _running_task(stand: Stand, org: str, worker_key: str, names: list[str]) -> tuple[str, str]:
    worker_id, task_id = unique_name("w"), unique_name("task")
    stand.workers[worker_key] = WorkerIdentity(worker_id=worker_id, org_id=None, name="w", tags=[])
    stand.claims[task_id] = ClaimInfo(
        task_id=task_id, org_id=org, status="running", attempt=1, worker_id=worker_id, secret_names=names
    )
    return worker_id, task_id


async def test_release_to_the_worker_running_the_task(
    rpc: RpcClient, stand: Stand, vault: VaultContext
) -> None:
    org = unique_name("org")
    await put(rpc, org, "A", "value-a")
    await put(rpc, org, "B", "value-b")
    key = unique_name("sk_worker_")
    _, task_id = _running_task(stand, org, key, ["A", "B"])
    reply = await rpc.call(
        subjects.Vault.RELEASE,
        ReleaseRequest(task_id=task_id, worker_key=key, names=["A", "B"]),
        ReleaseReply,
    )
    assert reply.values == {"A": "value-a", "B": "value-b"}
    async with vault.db.transaction() as session:
        assert await repository.count_releases(session, task_id) == 2


async def test_the_org_proxy_secrets_are_released_but_no_other_unnamed_secret(
    rpc: RpcClient, stand: Stand, vault: VaultContext
) -> None:
    """A task's worker may get the secrets its organization's policy names (the org proxy's credentials,
    set by an org admin) besides those its steps name; anything else stays refused."""
    org = unique_name("org")
    for name in ("A", "PROXY_USER", "PROXY_PW", "OTHER"):
        await put(rpc, org, name, f"value-{name}")
    stand.policies[org] = OrgPolicy.model_validate(
        {
            "proxy": {
                "server": "http://proxy.example:3128",
                "username": "{{ secrets.PROXY_USER }}",
                "password": "{{ secrets.PROXY_PW }}",
            }
        }
    )
    key = unique_name("sk_worker_")
    _, task_id = _running_task(stand, org, key, ["A"])
    asks = len(stand.policy_asks)
    only_steps = await rpc.call(
        subjects.Vault.RELEASE, ReleaseRequest(task_id=task_id, worker_key=key, names=["A"]), ReleaseReply
    )
    assert only_steps.values == {"A": "value-A"}
    assert len(stand.policy_asks) == asks  # names the steps cover need no policy lookup
    reply = await rpc.call(
        subjects.Vault.RELEASE,
        ReleaseRequest(task_id=task_id, worker_key=key, names=["A", "PROXY_USER", "PROXY_PW"]),
        ReleaseReply,
    )
    assert reply.values == {"A": "value-A", "PROXY_USER": "value-PROXY_USER", "PROXY_PW": "value-PROXY_PW"}
    assert stand.policy_asks[-1] == WorkerOrgPolicyRequest(org_id=org, worker_key=key)
    with pytest.raises(ServiceError) as exc:
        await rpc.call(
            subjects.Vault.RELEASE,
            ReleaseRequest(task_id=task_id, worker_key=key, names=["PROXY_PW", "OTHER"]),
            ReleaseReply,
        )
    assert exc.value.status == 403 and "does not name secret(s): OTHER" in exc.value.message
    # another org's policy does not open this org's secrets: the policy asked for is the task's org's (a
    # worker of its own runs it: a key is one worker's, and the vault trusts a known key's answer a while)
    other, other_key = unique_name("org"), unique_name("sk_worker_")
    await put(rpc, other, "PROXY_PW", "other-org-value")
    _, other_task = _running_task(stand, other, other_key, [])
    with pytest.raises(ServiceError) as exc:
        await rpc.call(
            subjects.Vault.RELEASE,
            ReleaseRequest(task_id=other_task, worker_key=other_key, names=["PROXY_PW"]),
            ReleaseReply,
        )
    assert exc.value.status == 403 and "does not name secret(s): PROXY_PW" in exc.value.message
    assert stand.policy_asks[-1] == WorkerOrgPolicyRequest(org_id=other, worker_key=other_key)
    # and a task that is not running asks auth nothing
    stand.claims[task_id] = stand.claims[task_id].model_copy(update={"status": "completed"})
    asks = len(stand.policy_asks)
    with pytest.raises(ServiceError) as exc:
        await rpc.call(
            subjects.Vault.RELEASE,
            ReleaseRequest(task_id=task_id, worker_key=key, names=["PROXY_PW"]),
            ReleaseReply,
        )
    assert exc.value.status == 403 and len(stand.policy_asks) == asks


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("not running", 403, "not running"),
        ("other worker", 403, "not claimed by this worker"),
        ("unnamed secret", 403, "does not name secret(s): B"),
        ("unknown key", 401, "unknown worker key"),
        ("unknown task", 404, "not found"),
    ],
)
async def test_release_refused(
    rpc: RpcClient, stand: Stand, vault: VaultContext, case: str, status: int, message: str
) -> None:
    org = unique_name("org")
    await put(rpc, org, "A", "value-a")
    await put(rpc, org, "B", "value-b")
    key = unique_name("sk_worker_")
    _, task_id = _running_task(stand, org, key, ["A"])
    names = ["A"]
    if case == "not running":
        stand.claims[task_id] = stand.claims[task_id].model_copy(update={"status": "completed"})
    elif case == "other worker":
        stand.claims[task_id] = stand.claims[task_id].model_copy(update={"worker_id": "someone-else"})
    elif case == "unnamed secret":
        names = ["A", "B"]
    elif case == "unknown key":
        key = "sk_worker_unknown"
    elif case == "unknown task":
        task_id = "no-such-task"
    raw = await rpc.nc.request(
        subjects.Vault.RELEASE,
        ReleaseRequest(task_id=task_id, worker_key=key, names=names).model_dump_json().encode(),
    )
    assert b"value-a" not in raw.data and b"value-b" not in raw.data
    with pytest.raises(ServiceError) as exc:
        await rpc.call(
            subjects.Vault.RELEASE, ReleaseRequest(task_id=task_id, worker_key=key, names=names), ReleaseReply
        )
    assert exc.value.status == status
    assert message in exc.value.message
    async with vault.db.transaction() as session:
        assert await repository.count_releases(session, task_id) == 0
