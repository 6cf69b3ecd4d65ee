"""Organization deletion: the vault consumes `organization.deleted` from EVENTS (real NATS, real PostgreSQL)
and removes that org's credentials, data keys, browser profiles and release records, once; other orgs stay."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.common import Actor
from browserfleet_contracts.vault import CredentialCreate
from browserfleet_core.org_events import durable_name
from browserfleet_core.streams import ensure_streams
from browserfleet_devkit.testing import publish_org_deleted_twice, unique_name, wait_consumed
from browserfleet_vault import crypto, service
from browserfleet_vault.app import create_service
from browserfleet_vault.models import Credential, DataKey, Profile, Release, VaultBase
from browserfleet_vault.repository import NOT_ORG_SCOPED, purge_org
from browserfleet_vault.runtime import VaultRuntime
from browserfleet_vault.settings import VaultSettings
from nats.aio.client import Client as NatsClient
from sqlmodel import col, func, select

from .conftest import answering


def test_every_table_is_org_scoped_or_named() -> None:
    """A new vault table must carry org_id (then deletion covers it) or be named here on purpose."""
    unscoped = {t.name for t in VaultBase.metadata.sorted_tables if "org_id" not in t.c}
    assert unscoped == NOT_ORG_SCOPED


@pytest.fixture(scope="module")
async def vault(vault_settings: VaultSettings, migrated: str) -> AsyncIterator[VaultRuntime]:
    """Wired like `app.run`: the rpc router plus the organization-deletion consumer on EVENTS."""
    ctx = create_service(vault_settings)
    await ctx.broker.connect()
    await ensure_streams(ctx.broker.connection.jetstream())
    await ctx.broker.start()
    await answering(vault_settings.nats_url)
    yield ctx
    await ctx.broker.stop()
    await ctx.db.dispose()


@pytest.fixture(scope="module")
async def nc(nats_url: str, vault: VaultRuntime) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


TABLES = (Credential, DataKey, Profile, Release)


async def _seed(ctx: VaultRuntime, org_id: str) -> None:
    """Two credentials and a saved profile under the org's data key, and one release record."""
    actor = Actor(org_id=org_id, user_id="u1", role="admin")
    async with ctx.db.transaction() as s:
        for name in ("LOGIN_USER", "LOGIN_PASSWORD"):
            body = CredentialCreate(name=name, value="hunter2")
            await service.put_credential(s, ctx.keyring, actor, body)
        data_key, key = await service.current_data_key(s, ctx.keyring, org_id)
        nonce, ciphertext = crypto.encrypt_profile(key, org_id, "shop", b'{"cookies":[]}')
        s.add(
            Profile(org_id=org_id, name="shop", ciphertext=ciphertext, nonce=nonce, data_key_id=data_key.id)
        )
        s.add(Release(task_id="t1", worker_id="w1", credential_name="LOGIN_USER", org_id=org_id))


async def _counts(ctx: VaultRuntime, org_id: str) -> dict[str, int]:
    async with ctx.db.transaction() as s:
        return {
            t.__tablename__: (await s.exec(select(func.count()).where(col(t.org_id) == org_id))).one()
            for t in TABLES
        }


async def test_organization_deleted_removes_credentials_keys_and_profiles_once(
    vault: VaultRuntime, nc: NatsClient
) -> None:
    gone, kept = unique_name("org"), unique_name("org")
    await _seed(vault, gone)
    await _seed(vault, kept)
    seeded = {"credentials": 2, "data_keys": 1, "profiles": 1, "releases": 1}
    assert await _counts(vault, gone) == seeded

    js = nc.jetstream()
    seq = await publish_org_deleted_twice(js, gone)
    await wait_consumed(js, subjects.EVENTS_STREAM, durable_name(endpoints.Vault.QUEUE), seq)

    assert await _counts(vault, gone) == dict.fromkeys(seeded, 0)
    assert await _counts(vault, kept) == seeded, "another organization is untouched"
    async with vault.db.transaction() as s:
        assert set((await purge_org(s, gone)).values()) == {0}, "a third delivery removes nothing"
