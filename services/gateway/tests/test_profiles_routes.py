"""`GET /api/v1/profiles` and `DELETE /api/v1/profiles/{name}` against the REAL vault (its broker on the test's
NATS server, its schema migrated in the test database). Tokens are signed by the test signer (auth stood in
by conftest's FakeServices for the JWKS, as everywhere in this package)."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from browserfleet_contracts.profiles import LeasedProfile
from browserfleet_core import sealing
from browserfleet_core.migrations import upgrade
from browserfleet_vault import profile_leases
from browserfleet_vault.app import create_context
from browserfleet_vault.settings import VaultSettings
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .conftest import Signer

COOKIE = "profile-cookie-Qm3v"
STATE = {"cookies": [{"name": "sid", "value": COOKIE, "domain": "a.test", "path": "/"}], "origins": []}


@pytest.fixture
async def vault(nats_url: str, database_url: str) -> AsyncIterator[VaultSettings]:
    upgrade("browserfleet_vault", database_url)
    settings = VaultSettings(
        nats_url=nats_url,
        database_url=database_url,
        vault_master_key=base64.b64encode(os.urandom(32)).decode(),
        vault_master_key_version=1,
    )
    ctx = create_context(settings)
    await ctx.broker.start()
    # its SUBs went out on its own connection: a PING round trip makes sure the server has them
    await ctx.broker.connection.flush()
    try:
        yield settings
    finally:
        await ctx.broker.stop()
        await ctx.db.dispose()


async def _stored_profile(settings: VaultSettings, org: str, name: str, *, leased: bool) -> None:
    """A profile as a worker leaves it: leased by a running task, and (unless `leased`) saved and released, the
    state sealed to the lease's save key as the real worker sends it."""
    ctx = create_context(settings)
    worker = X25519PrivateKey.generate()
    try:
        now = datetime.now(UTC)
        grant = profile_leases.ProfileGrant(
            task_id="t-1",
            org_id=org,
            worker_id="w",
            profile=name,
            lease_seconds=600,
            attempt=1,
            public_key=sealing.public_key_text(worker),
        )
        async with ctx.db.transaction() as session:
            lease = await profile_leases.acquire_profile(session, ctx.keyring, grant, now)
            if not leased:
                assert lease.lease_token is not None and lease.sealed is not None
                opened = LeasedProfile.model_validate_json(
                    sealing.open(worker, lease.sealed, grant.binding, purpose="profile_lease")
                )
                state = sealing.seal(
                    opened.save_key, json.dumps(STATE).encode(), grant.binding, purpose="profile_save"
                )
                await profile_leases.save_profile(session, ctx.keyring, grant, lease.lease_token, state, now)
    finally:
        await ctx.db.dispose()


def bearer(signer: Signer, org: str, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {signer.token(org=org, role=role)}"}


async def test_profiles_are_listed_without_state_and_deleted_by_admins_of_their_org(
    client: httpx.AsyncClient, signer: Signer, vault: VaultSettings
) -> None:
    org_a, org_b = f"org-{uuid.uuid4().hex[:8]}", f"org-{uuid.uuid4().hex[:8]}"
    await _stored_profile(vault, org_a, "crm", leased=False)
    await _stored_profile(vault, org_a, "busy", leased=True)

    listed = await client.get("/api/v1/profiles", headers=bearer(signer, org_a, "viewer"))
    assert listed.status_code == 200, listed.text
    assert COOKIE not in listed.text  # never the state
    rows = {p["name"]: p for p in listed.json()}
    assert set(rows) == {"busy", "crm"}
    assert (rows["crm"]["version"], rows["crm"]["in_use"]) == (1, False) and rows["crm"]["size"] > 0
    assert (rows["busy"]["version"], rows["busy"]["size"], rows["busy"]["in_use"]) == (0, 0, True)
    assert set(rows["crm"]) == {"name", "version", "size", "in_use", "created_at", "updated_at"}

    # another org: sees nothing, and deleting org A's profile is the 404 of a name that exists nowhere
    assert (await client.get("/api/v1/profiles", headers=bearer(signer, org_b, "admin"))).json() == []
    for name in ("crm", "nowhere"):
        resp = await client.delete(f"/api/v1/profiles/{name}", headers=bearer(signer, org_b, "admin"))
        assert resp.status_code == 404, resp.text
        assert (resp.json()["error"]["code"], resp.json()["error"]["field"]) == ("profile_not_found", "name")

    # only admins delete; a profile a running task holds is a 409
    for role in ("viewer", "user"):
        resp = await client.delete("/api/v1/profiles/crm", headers=bearer(signer, org_a, role))
        assert resp.status_code == 403, resp.text
    busy = await client.delete("/api/v1/profiles/busy", headers=bearer(signer, org_a, "admin"))
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "profile_in_use", busy.text
    bad = await client.delete("/api/v1/profiles/no%20spaces", headers=bearer(signer, org_a, "admin"))
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "path.name", bad.text

    gone = await client.delete("/api/v1/profiles/crm", headers=bearer(signer, org_a, "admin"))
    assert gone.status_code == 204, gone.text
    after = await client.get("/api/v1/profiles", headers=bearer(signer, org_a, "viewer"))
    assert [p["name"] for p in after.json()] == ["busy"]
