"""Vault logic against the real PostgreSQL schema, each test rolled back."""

from __future__ import annotations

import base64

import pytest
from browserfleet_contracts.common import Actor
from browserfleet_contracts.tasks import ClaimInfo
from browserfleet_contracts.vault import CredentialCreate
from browserfleet_contracts.workers import WorkerIdentity
from browserfleet_core.errors import Forbidden, NotFound
from browserfleet_core.testing import unique_name
from browserfleet_vault import repository, service
from browserfleet_vault.crypto import Keyring
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

VALUE = "correct horse battery staple"


def actor(org: str, role: str = "admin") -> Actor:
    return Actor(org_id=org, user_id="u1", role=role)  # type: ignore[arg-type]


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
    grant = service.ReleaseGrant(task_id="t1", org_id=org, worker_id="w1", names=["TOKEN"])
    assert await service.release(session, keyring, grant) == {"TOKEN": "two"}


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
        rows = (await session.exec(query.bindparams(o=org))).all()
        assert rows
        for row in rows:
            for column in row:
                raw = column if isinstance(column, bytes) else str(column).encode()
                assert not any(needle in raw for needle in needles), table


async def test_release_decrypts_and_records(session: AsyncSession, keyring: Keyring) -> None:
    org = unique_name("org")
    await service.put_credential(session, keyring, actor(org), CredentialCreate(name="A", value="va"))
    await service.put_credential(session, keyring, actor(org), CredentialCreate(name="B", value="vb"))
    grant = service.ReleaseGrant(task_id=unique_name("task"), org_id=org, worker_id="w1", names=["A", "B"])
    assert await service.release(session, keyring, grant) == {"A": "va", "B": "vb"}
    assert await repository.count_releases(session, grant.task_id) == 2
    missing = service.ReleaseGrant(task_id=grant.task_id, org_id=org, worker_id="w1", names=["A", "GONE"])
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
    me = WorkerIdentity(worker_id="w1", org_id=None, name="w", tags=[])
    assert service.authorize(me, _claim(), ["A", "A"]).names == ["A"]
    with pytest.raises(Forbidden, match="assigned, not running"):
        service.authorize(me, _claim(status="assigned"), ["A"])
    with pytest.raises(Forbidden, match="not claimed by this worker"):
        service.authorize(me, _claim(worker_id="w2"), ["A"])
    with pytest.raises(Forbidden, match="not claimed by this worker"):
        service.authorize(me, _claim(worker_id=None), ["A"])
    with pytest.raises(Forbidden, match=r"does not name secret.*: C"):
        service.authorize(me, _claim(), ["A", "C"])
    org_worker = WorkerIdentity(worker_id="w1", org_id="o2", name="w", tags=[])
    with pytest.raises(Forbidden, match="another organization"):
        service.authorize(org_worker, _claim(), ["A"])
