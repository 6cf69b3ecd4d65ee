"""The vault's subjects end to end over the real NATS server and PostgreSQL.

`svc.workers.authenticate`, `svc.scheduler.claim_info` and `svc.auth.org_policy` are answered by the
stand-ins for worker-gateway, the scheduler and auth in conftest.py (other services; this package must not
import them).
"""

from __future__ import annotations

import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import OrgPolicy, WorkerOrgPolicyRequest
from browserfleet_contracts.common import Actor, OrgScoped
from browserfleet_contracts.vault import (
    CheckNamesRequest,
    CredentialCreate,
    NameRequest,
    PutCredentialRequest,
    ReleaseRequest,
)
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient
from browserfleet_devkit.testing import unique_name
from browserfleet_vault import repository
from browserfleet_vault.runtime import VaultRuntime

from .conftest import Stand, admin, put


async def test_put_list_check_delete(rpc: RpcClient) -> None:
    org = unique_name("org")
    created = await put(rpc, org, "LOGIN_PW", "s3cret-value")
    listed = await rpc.call(endpoints.Vault.LIST_CREDENTIALS, OrgScoped(actor=admin(org)))
    assert [c.id for c in listed] == [created.id]
    raw = await rpc.nc.request(
        endpoints.Vault.LIST_CREDENTIALS.subject, OrgScoped(actor=admin(org)).model_dump_json().encode()
    )
    assert b"s3cret-value" not in raw.data and b"LOGIN_PW" in raw.data
    reply = await rpc.call(
        endpoints.Vault.CHECK_NAMES, CheckNamesRequest(actor=admin(org), names=["LOGIN_PW", "NOPE"])
    )
    assert reply.missing == ["NOPE"]
    ack = await rpc.call(endpoints.Vault.DELETE_CREDENTIAL, NameRequest(actor=admin(org), name="LOGIN_PW"))
    assert ack.ok
    with pytest.raises(ServiceError) as exc:
        await rpc.call(endpoints.Vault.DELETE_CREDENTIAL, NameRequest(actor=admin(org), name="LOGIN_PW"))
    assert exc.value.status == 404


async def test_viewer_put_is_forbidden_and_bad_name_names_the_field(rpc: RpcClient) -> None:
    viewer = Actor(org_id=unique_name("org"), role="viewer")
    request = PutCredentialRequest(actor=viewer, credential=CredentialCreate(name="X", value="v"))
    with pytest.raises(ServiceError) as exc:
        await rpc.call(endpoints.Vault.PUT_CREDENTIAL, request)
    assert exc.value.status == 403
    bad = {"actor": admin("o").model_dump(), "credential": {"name": "has space", "value": "v"}}
    with pytest.raises(ServiceError) as exc:
        await rpc.call_raw(endpoints.Vault.PUT_CREDENTIAL, bad)
    assert exc.value.status == 422 and exc.value.field == "credential.name"


def _running_task(stand: Stand, org: str, worker_key: str, names: list[str]) -> tuple[str, str]:
    worker, task_id = stand.hold(org, worker_key, names)
    return worker.worker_id, task_id


async def test_release_to_the_worker_running_the_task(
    rpc: RpcClient, stand: Stand, vault: VaultRuntime
) -> None:
    org = unique_name("org")
    await put(rpc, org, "A", "value-a")
    await put(rpc, org, "B", "value-b")
    key = unique_name("sk_worker_")
    _, task_id = _running_task(stand, org, key, ["A", "B"])
    reply = await rpc.call(
        endpoints.Vault.RELEASE, ReleaseRequest(task_id=task_id, worker_key=key, names=["A", "B"])
    )
    assert stand.opened(reply, task_id) == {"A": "value-a", "B": "value-b"}
    async with vault.db.transaction() as session:
        assert await repository.count_releases(session, task_id) == 2


async def test_the_org_proxy_secrets_are_released_but_no_other_unnamed_secret(
    rpc: RpcClient, stand: Stand, vault: VaultRuntime
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
        endpoints.Vault.RELEASE, ReleaseRequest(task_id=task_id, worker_key=key, names=["A"])
    )
    assert stand.opened(only_steps, task_id) == {"A": "value-A"}
    assert len(stand.policy_asks) == asks  # names the steps cover need no policy lookup
    reply = await rpc.call(
        endpoints.Vault.RELEASE,
        ReleaseRequest(task_id=task_id, worker_key=key, names=["A", "PROXY_USER", "PROXY_PW"]),
    )
    assert stand.opened(reply, task_id) == {
        "A": "value-A",
        "PROXY_USER": "value-PROXY_USER",
        "PROXY_PW": "value-PROXY_PW",
    }
    assert stand.policy_asks[-1] == WorkerOrgPolicyRequest(org_id=org, worker_key=key)
    with pytest.raises(ServiceError) as exc:
        await rpc.call(
            endpoints.Vault.RELEASE,
            ReleaseRequest(task_id=task_id, worker_key=key, names=["PROXY_PW", "OTHER"]),
        )
    assert exc.value.status == 403 and "does not name secret(s): OTHER" in exc.value.message
    # another org's policy does not open this org's secrets: the policy asked for is the task's org's (a
    # worker of its own runs it: a key is one worker's, and the vault trusts a known key's answer a while)
    other, other_key = unique_name("org"), unique_name("sk_worker_")
    await put(rpc, other, "PROXY_PW", "other-org-value")
    _, other_task = _running_task(stand, other, other_key, [])
    with pytest.raises(ServiceError) as exc:
        await rpc.call(
            endpoints.Vault.RELEASE,
            ReleaseRequest(task_id=other_task, worker_key=other_key, names=["PROXY_PW"]),
        )
    assert exc.value.status == 403 and "does not name secret(s): PROXY_PW" in exc.value.message
    assert stand.policy_asks[-1] == WorkerOrgPolicyRequest(org_id=other, worker_key=other_key)
    # and a task that is not running asks auth nothing
    stand.claims[task_id] = stand.claims[task_id].model_copy(update={"status": "completed"})
    asks = len(stand.policy_asks)
    with pytest.raises(ServiceError) as exc:
        await rpc.call(
            endpoints.Vault.RELEASE, ReleaseRequest(task_id=task_id, worker_key=key, names=["PROXY_PW"])
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
    rpc: RpcClient, stand: Stand, vault: VaultRuntime, case: str, status: int, message: str
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
        endpoints.Vault.RELEASE.subject,
        ReleaseRequest(task_id=task_id, worker_key=key, names=names).model_dump_json().encode(),
    )
    assert b"value-a" not in raw.data and b"value-b" not in raw.data
    with pytest.raises(ServiceError) as exc:
        await rpc.call(endpoints.Vault.RELEASE, ReleaseRequest(task_id=task_id, worker_key=key, names=names))
    assert exc.value.status == status
    assert message in exc.value.message
    async with vault.db.transaction() as session:
        assert await repository.count_releases(session, task_id) == 0
