"""Credentials changed and removed by id (the seed's `PUT`/`DELETE /admin/credentials/{id}`), over the real
NATS server and PostgreSQL: a new value is what the next release hands out, type and description change
alone, the name stays, another org's id is exactly as absent as a missing one, a viewer changes nothing, and
the database health answer."""

from __future__ import annotations

import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.common import Actor, ById, Empty, OrgScoped
from browserfleet_contracts.vault import (
    CredentialPublic,
    CredentialUpdate,
    ReleaseRequest,
    UpdateCredentialRequest,
)
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient
from browserfleet_devkit.testing import unique_name

from .conftest import Stand, admin, put


async def update(rpc: RpcClient, actor: Actor, credential_id: str, **fields: object) -> CredentialPublic:
    body = CredentialUpdate.model_validate(fields)
    request = UpdateCredentialRequest(actor=actor, id=credential_id, credential=body)
    return await rpc.call(endpoints.Vault.UPDATE_CREDENTIAL, request)


async def released(rpc: RpcClient, stand: Stand, org: str, name: str) -> str:
    key = unique_name("sk_worker_")
    _, task_id = stand.hold(org, key, [name])
    reply = await rpc.call(
        endpoints.Vault.RELEASE, ReleaseRequest(task_id=task_id, worker_key=key, names=[name])
    )
    return stand.opened(reply, task_id)[name]


async def test_update_by_id_changes_value_type_and_description(rpc: RpcClient, stand: Stand) -> None:
    org = unique_name("org")
    created = await put(rpc, org, "SITE_PW", "old-value")
    changed = await update(rpc, admin(org), created.id, value="new-value")
    assert changed.id == created.id and changed.name == "SITE_PW"
    assert changed.updated_at > created.updated_at
    assert await released(rpc, stand, org, "SITE_PW") == "new-value"
    described = await update(rpc, admin(org), created.id, type="api_key", description="the site's key")
    assert (described.type, described.description) == ("api_key", "the site's key")
    # the value is untouched by a change of type and description; the same name in the body is accepted
    assert await released(rpc, stand, org, "SITE_PW") == "new-value"
    same_name = await update(rpc, admin(org), created.id, name="SITE_PW", description=None)
    assert same_name.description is None


async def test_update_refusals_change_nothing(rpc: RpcClient) -> None:
    org, other = unique_name("org"), unique_name("org")
    created = await put(rpc, org, "KEEP", "v1")
    before = await rpc.call(endpoints.Vault.LIST_CREDENTIALS, OrgScoped(actor=admin(org)))
    cases = [
        (admin(other), created.id, {"value": "stolen"}, 404, "id"),  # another org's id
        (admin(org), unique_name("nope"), {"value": "x"}, 404, "id"),
        (Actor(org_id=org, role="viewer"), created.id, {"value": "x"}, 403, None),
        (admin(org), created.id, {"name": "RENAMED", "value": "x"}, 422, "name"),
    ]
    for actor, cid, fields, status, field in cases:
        with pytest.raises(ServiceError) as exc:
            await update(rpc, actor, cid, **fields)
        assert (exc.value.status, exc.value.field) == (status, field), (fields, exc.value)
    # a body with nothing to change, or an unknown field, is a 422 naming it
    for body, field in (({}, "credential"), ({"colour": "red"}, "credential.colour")):
        raw = {"actor": admin(org).model_dump(), "id": created.id, "credential": body}
        with pytest.raises(ServiceError) as exc:
            await rpc.call_raw(endpoints.Vault.UPDATE_CREDENTIAL, raw)
        assert exc.value.status == 422 and exc.value.field == field, exc.value
    assert await rpc.call(endpoints.Vault.LIST_CREDENTIALS, OrgScoped(actor=admin(org))) == before


async def test_delete_by_id(rpc: RpcClient) -> None:
    org, other = unique_name("org"), unique_name("org")
    created = await put(rpc, org, "GONE_SOON", "v")
    with pytest.raises(ServiceError) as exc:
        await rpc.call(endpoints.Vault.DELETE_CREDENTIAL_BY_ID, ById(actor=admin(other), id=created.id))
    assert exc.value.status == 404
    with pytest.raises(ServiceError) as exc:
        await rpc.call(
            endpoints.Vault.DELETE_CREDENTIAL_BY_ID,
            ById(actor=Actor(org_id=org, role="viewer"), id=created.id),
        )
    assert exc.value.status == 403
    assert (await rpc.call(endpoints.Vault.DELETE_CREDENTIAL_BY_ID, ById(actor=admin(org), id=created.id))).ok
    assert await rpc.call(endpoints.Vault.LIST_CREDENTIALS, OrgScoped(actor=admin(org))) == []
    with pytest.raises(ServiceError) as exc:
        await rpc.call(endpoints.Vault.DELETE_CREDENTIAL_BY_ID, ById(actor=admin(org), id=created.id))
    assert exc.value.status == 404


async def test_db_health(rpc: RpcClient) -> None:
    answer = await rpc.call(endpoints.Vault.DB_HEALTH, Empty())
    assert answer.ok and answer.detail == "SELECT 1 ok"
