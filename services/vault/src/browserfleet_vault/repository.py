"""Every query of the vault. Credential queries are always scoped by org."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from browserfleet_core.db import AsyncSession, new_id, utcnow
from browserfleet_core.org_events import delete_org_rows
from sqlalchemy import delete, func
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from .models import Credential, DataKey, Profile, Release, VaultBase

R = TypeVar("R")


def _for_update(stmt: SelectOfScalar[R]) -> SelectOfScalar[R]:
    """The rows read locked until the transaction ends, and read afresh rather than from the session."""
    return stmt.with_for_update().execution_options(populate_existing=True)


# tables without an org_id column, which purge_org does not reach (the tests pin this list)
NOT_ORG_SCOPED: frozenset[str] = frozenset()


async def get_data_key(session: AsyncSession, org_id: str, version: int) -> DataKey | None:
    stmt = select(DataKey).where(DataKey.org_id == org_id, DataKey.master_key_version == version)
    return (await session.exec(stmt)).first()


async def get_data_keys(session: AsyncSession, ids: Sequence[str]) -> dict[str, DataKey]:
    if not ids:
        return {}
    stmt = select(DataKey).where(col(DataKey.id).in_(ids))
    return {key.id: key for key in (await session.exec(stmt)).all()}


async def insert_data_key_if_absent(
    session: AsyncSession, org_id: str, wrapped_key: bytes, version: int
) -> None:
    """Two first writes for one org race here; the unique key lets exactly one data key win."""
    await session.exec(
        insert(DataKey)
        .values(
            id=new_id(),
            org_id=org_id,
            wrapped_key=wrapped_key,
            master_key_version=version,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(constraint="uq_data_keys_org_version")
    )


async def upsert_credential(
    session: AsyncSession,
    *,
    org_id: str,
    name: str,
    type_: str,
    description: str | None,
    ciphertext: bytes,
    nonce: bytes,
    data_key_id: str,
) -> Credential:
    """Insert or replace by (org, name) in one statement, so concurrent puts of one name cannot collide."""
    now = utcnow()
    stmt = insert(Credential).values(
        id=new_id(),
        org_id=org_id,
        name=name,
        type=type_,
        description=description,
        ciphertext=ciphertext,
        nonce=nonce,
        data_key_id=data_key_id,
        created_at=now,
        updated_at=now,
    )
    upsert = stmt.on_conflict_do_update(
        constraint="uq_credentials_org_name",
        set_={
            "type": stmt.excluded.type,
            "description": stmt.excluded.description,
            "ciphertext": stmt.excluded.ciphertext,
            "nonce": stmt.excluded.nonce,
            "data_key_id": stmt.excluded.data_key_id,
            "updated_at": stmt.excluded.updated_at,
        },
    ).returning(col(Credential.id))
    credential_id = (await session.exec(upsert)).scalar_one()
    credential = await session.get(Credential, credential_id, populate_existing=True)
    assert credential is not None
    return credential


async def list_credentials(session: AsyncSession, org_id: str) -> list[tuple[Credential, int]]:
    """Each credential with the master-key version of its data key."""
    stmt = (
        select(Credential, DataKey.master_key_version)
        .join(DataKey, col(DataKey.id) == col(Credential.data_key_id))
        .where(Credential.org_id == org_id)
        .order_by(col(Credential.name))
    )
    return [(credential, int(version)) for credential, version in (await session.exec(stmt)).all()]


async def get_credentials(session: AsyncSession, org_id: str, names: Sequence[str]) -> list[Credential]:
    if not names:
        return []
    stmt = select(Credential).where(Credential.org_id == org_id, col(Credential.name).in_(names))
    return list((await session.exec(stmt)).all())


async def existing_names(session: AsyncSession, org_id: str, names: Sequence[str]) -> set[str]:
    if not names:
        return set()
    stmt = select(Credential.name).where(Credential.org_id == org_id, col(Credential.name).in_(names))
    return set((await session.exec(stmt)).all())


async def lock_credential(session: AsyncSession, org_id: str, credential_id: str) -> Credential | None:
    stmt = select(Credential).where(Credential.org_id == org_id, Credential.id == credential_id)
    return (await session.exec(_for_update(stmt))).first()


async def save_credential(session: AsyncSession, credential: Credential) -> None:
    session.add(credential)
    await session.flush()


async def delete_credential(session: AsyncSession, org_id: str, name: str) -> bool:
    stmt = (
        delete(Credential)
        .where(col(Credential.org_id) == org_id, col(Credential.name) == name)
        .returning(col(Credential.id))
    )
    return (await session.exec(stmt)).first() is not None


async def add_releases(
    session: AsyncSession, *, task_id: str, worker_id: str, org_id: str, names: Sequence[str], at: datetime
) -> None:
    session.add_all(
        Release(task_id=task_id, worker_id=worker_id, org_id=org_id, credential_name=name, released_at=at)
        for name in names
    )
    await session.flush()


async def count_releases(session: AsyncSession, task_id: str) -> int:
    stmt = select(func.count()).select_from(Release).where(Release.task_id == task_id)
    return int((await session.exec(stmt)).one())


# --- profiles --------------------------------------------------------------------------------------------
async def lock_profile(session: AsyncSession, org_id: str, name: str) -> Profile:
    """The profile row, created empty on first use, locked FOR UPDATE until the transaction ends: every
    lease decision on one profile is serialised by this row lock."""
    now = utcnow()
    await session.exec(
        insert(Profile)
        .values(id=new_id(), org_id=org_id, name=name, version=0, created_at=now, updated_at=now)
        .on_conflict_do_nothing(constraint="uq_profiles_org_name")
    )
    stmt = select(Profile).where(Profile.org_id == org_id, Profile.name == name)
    return (await session.exec(_for_update(stmt))).one()


async def list_profiles(session: AsyncSession, org_id: str) -> list[Profile]:
    stmt = select(Profile).where(Profile.org_id == org_id).order_by(Profile.name)
    return list((await session.exec(stmt)).all())


async def lock_existing_profile(session: AsyncSession, org_id: str, name: str) -> Profile | None:
    """The profile row locked FOR UPDATE (a lease decision waits for the delete), or None; never creates it."""
    stmt = select(Profile).where(Profile.org_id == org_id, Profile.name == name)
    return (await session.exec(_for_update(stmt))).first()


async def delete_profile_row(session: AsyncSession, profile: Profile) -> None:
    await session.delete(profile)
    await session.flush()


async def get_profile(session: AsyncSession, org_id: str, name: str) -> Profile | None:
    stmt = select(Profile).where(Profile.org_id == org_id, Profile.name == name)
    return (await session.exec(stmt)).first()


async def save_profile(session: AsyncSession, profile: Profile) -> None:
    session.add(profile)
    await session.flush()


async def purge_org(session: AsyncSession, org_id: str) -> dict[str, int]:
    """Every row of the organization, from every table with an `org_id` (rows removed per table)."""
    return await delete_org_rows(session, VaultBase.metadata, org_id)
