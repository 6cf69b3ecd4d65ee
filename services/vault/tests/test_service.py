"""Vault logic against the real PostgreSQL schema, each test rolled back."""

from __future__ import annotations

import base64

import pytest
from browserfleet_contracts.common import Actor
from browserfleet_contracts.tasks import ClaimInfo
from browserfleet_contracts.vault import CredentialCreate
from browserfleet_core.errors import Forbidden, NotFound
from browserfleet_devkit.testing import unique_name
from browserfleet_vault import repository, service
from browserfleet_vault.crypto import Keyring
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from .conftest import WorkerKeyPair

VALUE = "correct horse battery staple"
W1 = WorkerKeyPair("w1")


def release_grant(task_id: str, org: str, names: list[str]) -> service.ReleaseGrant:
    return service.ReleaseGrant(
        task_id=task_id, org_id=org, worker_id="w1", names=names, attempt=1, public_key=W1.public_key
    )


def actor(org: str, role: str = "admin") -> Actor:
    return Actor(org_id=org, user_id="u1", role=role)


async def test_put_and_list_never_return_the_value(session: AsyncSession, keyring: Keyring) -> None:
    org = unique_name("org")
    created = await service.put_credential(
        session, keyring, actor(org), CredentialCreate(name="SITE_PW", value=VALUE)
    )
    assert created.name == "SITE_PW" and created.key_version == 1
    listed = await service.list_credentials(session, actor(org, "viewer"))
    assert [c.name for c in listed] == ["SITE_PW"]
    for dumped in (created.model_dump_json(), *(c.model_dump_json() for c in listed)):
        assert VALUE not in dumped and "value" not in dumped


async def test_put_upserts_by_name(session: AsyncSession, keyring: Keyring) -> None:
    org = unique_name("org")
    first = await service.put_credential(
        session, keyring, actor(org), CredentialCreate(name="TOKEN", value="one")
    )
    second = await service.put_credential(
        session, keyring, actor(org, "user"), CredentialCreate(name="TOKEN", value="two", type="token")
    )
    assert second.id == first.id and second.type == "token"
    assert len(await service.list_credentials(session, actor(org))) == 1
    grant = release_grant("t1", org, ["TOKEN"])
    assert W1.release(await service.release(session, keyring, grant), "t1") == {"TOKEN": "two"}


async def test_viewer_cannot_write(session: AsyncSession, keyring: Keyring) -> None:
    org = unique_name("org")
    with pytest.raises(Forbidden):
        await service.put_credential(
            session, keyring, actor(org, "viewer"), CredentialCreate(name="X", value="v")
        )
    await service.put_credential(session, keyring, actor(org), CredentialCreate(name="X", value="v"))
    with pytest.raises(Forbidden):
        await service.delete_credential(session, actor(org, "viewer"), "X")


async def test_orgs_are_isolated(session: AsyncSession, keyring: Keyring) -> None:
    org_a, org_b = unique_name("org"), unique_name("org")
    await service.put_credential(session, keyring, actor(org_a), CredentialCreate(name="SHARED", value="a"))
    assert await service.list_credentials(session, actor(org_b)) == []
    assert await service.check_names(session, actor(org_b), ["SHARED"]) == ["SHARED"]
    with pytest.raises(NotFound):
        await service.delete_credential(session, actor(org_b), "SHARED")
    await service.delete_credential(session, actor(org_a), "SHARED")
    with pytest.raises(NotFound):
        await service.delete_credential(session, actor(org_a), "SHARED")


async def test_check_names(session: AsyncSession, keyring: Keyring) -> None:
    org = unique_name("org")
    for name in ("A", "B"):
        await service.put_credential(session, keyring, actor(org), CredentialCreate(name=name, value="v"))
    assert await service.check_names(session, actor(org), ["A", "C", "B", "D", "C"]) == ["C", "D"]
    assert await service.check_names(session, actor(org), []) == []


async def test_database_holds_no_master_key_or_plaintext(
    session: AsyncSession, keyring: Keyring, master_key: bytes
) -> None:
    org = unique_name("org")
    await service.put_credential(session, keyring, actor(org), CredentialCreate(name="DB_PW", value=VALUE))
    data_key = await repository.get_data_key(session, org, keyring.current_version)
    assert data_key is not None
    assert data_key.wrapped_key != master_key
    assert len(data_key.wrapped_key) == 12 + 32 + 16  # nonce, wrapped data key, tag: not a raw key
    needles = [master_key, base64.b64encode(master_key), master_key.hex().encode(), VALUE.encode()]
    for table in ("data_keys", "credentials"):
        query = text(f"SELECT * FROM vault.{table} WHERE org_id = :o")  # noqa: S608  (fixed table names)
        # sqlmodel's exec runs any statement (and flushes the session first); its overloads name only
        # select and update/delete
        rows = (await session.exec(query.bindparams(o=org))).all()  # type: ignore[call-overload]
        assert rows
        for row in rows:
            for column in row:
                raw = column if isinstance(column, bytes) else str(column).encode()
                assert not any(needle in raw for needle in needles), table


A_VALUE, B_VALUE = "value-of-A-3kq9Z", "value-of-B-7wm2X"


async def test_release_decrypts_and_records(session: AsyncSession, keyring: Keyring) -> None:
    org = unique_name("org")
    await service.put_credential(session, keyring, actor(org), CredentialCreate(name="A", value=A_VALUE))
    await service.put_credential(session, keyring, actor(org), CredentialCreate(name="B", value=B_VALUE))
    grant = release_grant(unique_name("task"), org, ["A", "B"])
    reply = await service.release(session, keyring, grant)
    assert W1.release(reply, grant.task_id) == {"A": A_VALUE, "B": B_VALUE}
    # long values: a short one could turn up by chance in the base64url ciphertext
    assert not any(v in reply.model_dump_json() for v in (A_VALUE, B_VALUE))
    assert await repository.count_releases(session, grant.task_id) == 2
    missing = release_grant(grant.task_id, org, ["A", "GONE"])
    with pytest.raises(NotFound, match="GONE"):
        await service.release(session, keyring, missing)


def _claim(**overrides: object) -> ClaimInfo:
    data: dict[str, object] = {
        "task_id": "t1",
        "org_id": "o1",
        "status": "running",
        "attempt": 1,
        "worker_id": "w1",
        "secret_names": ["A", "B"],
    }
    data.update(overrides)
    return ClaimInfo.model_validate(data)


def test_authorize_rule() -> None:
    me = W1.identity()
    granted = service.authorize(me, _claim(attempt=3), ["A", "A"], attempt=3)
    assert (granted.names, granted.attempt, granted.public_key) == (["A"], 3, W1.public_key)
    assert granted.binding == b"t1:3:w1"
    with pytest.raises(Forbidden, match="runs attempt 3, not 2") as exc:
        service.authorize(me, _claim(attempt=3), ["A"], attempt=2)
    assert exc.value.field == "attempt"
    with pytest.raises(Forbidden, match="assigned, not running"):
        service.authorize(me, _claim(status="assigned"), ["A"])
    with pytest.raises(Forbidden, match="not claimed by this worker"):
        service.authorize(me, _claim(worker_id="w2"), ["A"])
    with pytest.raises(Forbidden, match="not claimed by this worker"):
        service.authorize(me, _claim(worker_id=None), ["A"])
    with pytest.raises(Forbidden, match=r"does not name secret.*: C"):
        service.authorize(me, _claim(), ["A", "C"])
    org_worker = W1.identity("o2")
    with pytest.raises(Forbidden, match="another organization"):
        service.authorize(org_worker, _claim(), ["A"])
    # a worker that registered no public key is given nothing it could read: no release at all
    keyless = me.model_copy(update={"public_key": None})
    with pytest.raises(Forbidden, match="no registered public key") as exc:
        service.authorize(keyless, _claim(), ["A"])
    assert exc.value.code == "public_key_missing"


async def test_sso_secret_goes_to_auth_only_and_only_admins_write_it(
    session: AsyncSession, keyring: Keyring
) -> None:
    org = unique_name("org")
    idp = CredentialCreate(name="IDP_SECRET", value="s3cret", type="sso_secret")
    for role in ("user", "viewer"):
        with pytest.raises(Forbidden):
            await service.put_credential(session, keyring, actor(org, role), idp)
    await service.put_credential(session, keyring, actor(org), idp)
    await service.put_credential(session, keyring, actor(org), CredentialCreate(name="SITE_PW", value=VALUE))
    # a user can neither overwrite it with another type nor delete it
    with pytest.raises(Forbidden):
        await service.put_credential(
            session, keyring, actor(org, "user"), CredentialCreate(name="IDP_SECRET", value="x")
        )
    with pytest.raises(Forbidden):
        await service.delete_credential(session, actor(org, "user"), "IDP_SECRET")
    assert await service.release_sso_secret(session, keyring, org, "IDP_SECRET") == "s3cret"
    # the SSO subject reads no other type, and no other org's secret
    with pytest.raises(NotFound):
        await service.release_sso_secret(session, keyring, org, "SITE_PW")
    with pytest.raises(NotFound):
        await service.release_sso_secret(session, keyring, unique_name("org"), "IDP_SECRET")
    # a task cannot name it, and a worker is never given it
    assert await service.check_names(session, actor(org, "user"), ["IDP_SECRET", "SITE_PW"]) == ["IDP_SECRET"]
    grant = release_grant(unique_name("task"), org, ["IDP_SECRET"])
    with pytest.raises(NotFound, match="IDP_SECRET"):
        await service.release(session, keyring, grant)
