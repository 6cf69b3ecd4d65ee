"""An organization's policy (allowed domains, evaluate, proxy): org admins write it, every member reads
it, and workers fetch it to enforce it on the organization's tasks."""

from __future__ import annotations

import logging
from typing import Any

from browserfleet_contracts.auth import OrgPolicy
from browserfleet_contracts.common import Actor
from browserfleet_contracts.workers import WorkerIdentity
from browserfleet_core.db import AsyncSession
from browserfleet_core.errors import NotFound

from . import audit
from . import repository as repo
from .access import require_admin
from .config import AuthConfig
from .models import Organization

log = logging.getLogger(__name__)


async def get_org_policy(session: AsyncSession, actor: Actor) -> OrgPolicy:
    return policy_of(await _organization(session, actor.org_id))


async def update_org_policy(
    session: AsyncSession, config: AuthConfig, actor: Actor, policy: OrgPolicy
) -> OrgPolicy:
    """Replaces the actor's own organization's policy (admins); the audit row records the new policy's
    shape (domains, evaluate, proxy server and the secret names it references, never a value)."""
    require_admin(actor)
    org = await _organization(session, actor.org_id)
    before = policy_of(org)
    org.policy = policy.model_dump(mode="json")
    session.add(org)
    await session.flush()
    changed = sorted(k for k in OrgPolicy.model_fields if getattr(before, k) != getattr(policy, k))
    detail = {"changed": changed, **policy_summary(policy)}
    await audit.record(
        session, config.now(), "organization.policy_updated", actor=actor, target=org.id, detail=detail
    )
    log.info("organization %s policy updated (%s)", org.id, ", ".join(changed) or "no change")
    return policy


async def org_policy_for_worker(session: AsyncSession, worker: WorkerIdentity, org_id: str) -> OrgPolicy:
    """The policy a worker must enforce for a task of `org_id`. A worker bound to another organization
    learns nothing (404, as for an organization that does not exist)."""
    if worker.org_id is not None and worker.org_id != org_id:
        raise NotFound("organization not found", code="organization_not_found")
    return policy_of(await _organization(session, org_id))


async def _organization(session: AsyncSession, org_id: str) -> Organization:
    org = await repo.get_organization(session, org_id)
    if org is None:
        raise NotFound("organization not found", code="organization_not_found")
    return org


def policy_of(org: Organization) -> OrgPolicy:
    # written only by update_org_policy from a validated OrgPolicy; `{}` (the column default) is the default
    return OrgPolicy.model_validate(org.policy or {})


def policy_summary(policy: OrgPolicy) -> dict[str, Any]:
    return {
        "allowed_domains": policy.allowed_domains,
        "allow_evaluate": policy.allow_evaluate,
        "proxy_server": policy.proxy.server if policy.proxy is not None else None,
        "proxy_secrets": sorted(policy.secret_names()),
    }
