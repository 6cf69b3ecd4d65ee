"""Organizations: the first one made by bootstrap, every other one by a platform operator (who also
renames and deletes them). To anyone but an operator an organization id names nothing: 404, never 403."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from browserfleet_contracts import subjects
from browserfleet_contracts.auth import (
    BootstrapReply,
    OrganizationCreate,
    OrganizationCreated,
    OrganizationDetail,
    OrganizationPublic,
    UpdateOrganizationRequest,
)
from browserfleet_contracts.common import Actor
from browserfleet_contracts.events import EventEnvelope, EventType, org_event_id
from browserfleet_core.db import AsyncSession, utcnow
from browserfleet_core.errors import Conflict, Forbidden, Invalid, NotFound
from browserfleet_core.outbox import OutboxRelay
from browserfleet_core.projection import project

from . import audit
from . import repository as repo
from .config import AuthConfig
from .models import PLANS, Organization, User
from .users import create_user, generated_password
from .validation import check_settings, clean_name, normalize_email, normalize_slug, slugify

log = logging.getLogger(__name__)

_BOOTSTRAP_LOCK = "auth:bootstrap"


async def bootstrap(
    session: AsyncSession, *, org_name: str, admin_email: str, password: str | None = None
) -> BootstrapReply:
    """First start: one organization and its admin, with a generated password returned once (or the
    operator's `password`, never echoed back: `browserfleet-auth bootstrap` in production).

    Concurrent callers are serialised by an advisory lock, so exactly one of them creates anything.
    """
    org_name = clean_name(org_name, field="org_name")
    admin_email = normalize_email(admin_email, field="admin_email")
    await repo.advisory_xact_lock(session, _BOOTSTRAP_LOCK)
    existing = await repo.first_organization(session)
    if existing is not None:
        admin = await repo.first_admin(session, existing.id)
        return BootstrapReply(created=False, org_id=existing.id, admin_email=admin.email if admin else "")
    org = await create_organization(session, org_name)
    generated = password is None
    password = generated_password() if password is None else password
    admin = await create_user(
        session, org_id=org.id, email=admin_email, password=password, role="admin", name="Administrator"
    )
    # The first organization's first admin operates the platform (creates and removes organizations).
    admin.platform_operator = True
    session.add(admin)
    log.info("bootstrapped organization %s with admin %s", org.id, admin.id)
    return BootstrapReply(
        created=True, org_id=org.id, admin_email=admin.email, password=password if generated else None
    )


async def create_organization(session: AsyncSession, name: str, *, plan: str = "free") -> Organization:
    """An organization under a free slug derived from its name (bootstrap's; an operator's goes through
    `create_org`, which takes the slug asked for or refuses)."""
    name = clean_name(name, field="name")
    if plan not in PLANS:
        raise Invalid(f"plan: must be one of {', '.join(PLANS)}", field="plan")
    base = slugify(name) or "org"
    slug = base
    while await repo.slug_taken(session, slug):
        slug = f"{base[:54]}-{secrets.token_hex(4)}"
    org = Organization(name=name, slug=slug, plan=plan, settings={}, created_at=utcnow())
    await repo.add(session, org)
    return org


async def _require_operator(session: AsyncSession, actor: Actor) -> User:
    user = await repo.get_org_user(session, actor.org_id, actor.user_id) if actor.user_id else None
    if user is None or not user.is_active or not user.platform_operator:
        raise Forbidden("this needs the platform operator role", code="platform_operator_required")
    return user


async def _operator_org(session: AsyncSession, actor: Actor, org_id: str) -> Organization:
    user = await repo.get_org_user(session, actor.org_id, actor.user_id) if actor.user_id else None
    org = await repo.get_organization(session, org_id)
    if user is None or not user.platform_operator or not user.is_active or org is None:
        raise NotFound("organization not found", code="organization_not_found")
    return org


async def list_organizations(session: AsyncSession, actor: Actor) -> list[OrganizationDetail]:
    await _require_operator(session, actor)
    return [org_detail(o) for o in await repo.list_organizations(session)]


async def create_org(
    session: AsyncSession, config: AuthConfig, actor: Actor, body: OrganizationCreate
) -> OrganizationCreated:
    await _require_operator(session, actor)
    name = clean_name(body.name, field="name")
    slug = normalize_slug(body.slug) if body.slug is not None else (slugify(name) or "org")
    if await repo.slug_taken(session, slug):
        raise Conflict("slug: an organization with this slug exists", field="slug", code="slug_taken")
    org = Organization(
        name=name, slug=slug, plan=body.plan, settings=check_settings(body.settings), created_at=config.now()
    )
    await repo.add(session, org)
    await audit.record(
        session, config.now(), "organization.created", actor=actor, target=org.id, detail={"slug": slug}
    )
    created = OrganizationCreated(**org_detail(org).model_dump())
    if body.admin_email:
        password = generated_password()
        admin = await create_user(
            session, org_id=org.id, email=body.admin_email, password=password, role="admin"
        )
        created.admin_email, created.admin_password = admin.email, password
    return created


async def update_org(
    session: AsyncSession, config: AuthConfig, req: UpdateOrganizationRequest
) -> OrganizationDetail:
    org = await _operator_org(session, req.actor, req.id)
    body = req.organization
    changed: dict[str, Any] = {}
    if body.name is not None:
        org.name = changed["name"] = clean_name(body.name, field="name")
    if body.slug is not None:
        slug = normalize_slug(body.slug)
        if slug != org.slug:
            if await repo.slug_taken(session, slug):
                raise Conflict("slug: an organization with this slug exists", field="slug", code="slug_taken")
            org.slug = changed["slug"] = slug
    if body.plan is not None and body.plan != org.plan:
        org.plan = changed["plan"] = body.plan
    if body.settings is not None:
        org.settings = check_settings(body.settings)
        changed["settings"] = True
    session.add(org)
    await session.flush()
    await audit.record(
        session, config.now(), "organization.updated", actor=req.actor, target=org.id, detail=changed
    )
    return org_detail(org)


async def delete_org(
    session: AsyncSession, config: AuthConfig, outbox: OutboxRelay, actor: Actor, org_id: str
) -> None:
    """Removes the organization, its users, their sessions and its keys, and tells every service (an
    `organization.deleted` event through the outbox, in this same transaction)."""
    org = await _operator_org(session, actor, org_id)
    if org.id == actor.org_id:
        raise Conflict("an operator cannot delete their own organization", code="own_organization")
    await repo.delete_organization(session, org.id)
    deleted = EventType.ORGANIZATION_DELETED
    event = EventEnvelope(
        id=org_event_id(org.id, deleted),
        type=deleted,
        org_id=org.id,
        occurred_at=config.now(),
        data={"organization_id": org.id, "slug": org.slug},
    )
    await outbox.enqueue(session, subjects.event(org.id, deleted), event, msg_id=event.id)
    # the audit action is the event's own name: one fact, one spelling
    await audit.record(
        session, config.now(), deleted.value, actor=actor, target=org.id, detail={"slug": org.slug}
    )


def org_public(org: Organization) -> OrganizationPublic:
    return project(OrganizationPublic, org)


def org_detail(org: Organization) -> OrganizationDetail:
    return project(OrganizationDetail, org)
