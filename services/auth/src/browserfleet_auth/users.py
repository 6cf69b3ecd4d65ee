"""Users of an organization: created by bootstrap or an operator (an org's first admin) and by the org's
admins; their role and active flag are changed by those admins. Passwords are argon2 hashes, computed on
a worker thread (tens of milliseconds and 64 MiB each: on the event loop they would stall every request)."""

from __future__ import annotations

import asyncio
import secrets

from browserfleet_contracts.auth import (
    UpdateUserRequest,
    UserCreate,
    UserCreated,
    UserDetail,
    UserPublic,
    UserState,
)
from browserfleet_contracts.common import Actor, Role
from browserfleet_core import security
from browserfleet_core.db import AsyncSession, utcnow
from browserfleet_core.errors import Conflict, Invalid, NotFound
from browserfleet_core.projection import project

from . import audit, mfa
from . import repository as repo
from .access import require_admin
from .config import AuthConfig
from .models import ROLES, User
from .validation import clean_name, normalize_email

GENERATED_PASSWORD_BYTES = 18  # token_urlsafe(18) -> 24 characters, 144 bits
# the stored "hash" of a user without a password (created at an SSO sign-in): no argon2 hash has this
# form, so every password fails against it (and costs the same dummy verification as an unknown email)
NO_PASSWORD = "!sso-only"  # noqa: S105 - a marker, not a password


def generated_password() -> str:
    """A password shown once, in the reply that created its user."""
    return secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)


async def create_user(
    session: AsyncSession,
    *,
    org_id: str,
    email: str,
    password: str | None,
    role: str = "user",
    name: str = "",
    sso_subject: str | None = None,
) -> User:
    """The checks every way of creating a user shares; who may create one is the caller's business."""
    email = normalize_email(email)
    if role not in ROLES:
        raise Invalid(f"role: must be one of {', '.join(ROLES)}", field="role")
    if password is not None and (not password or "\x00" in password or len(password) > 1024):
        raise Invalid("password: must be 1 to 1024 characters without NUL", field="password")
    if await repo.get_user_by_email(session, email) is not None:
        raise Conflict("email: a user with this email exists", field="email", code="email_taken")
    user = User(
        org_id=org_id,
        email=email,
        name=clean_name(name, field="name") if name else "",
        role=role,
        password_hash=(
            await asyncio.to_thread(security.hash_password, password) if password is not None else NO_PASSWORD
        ),
        is_active=True,
        sso_subject=sso_subject,
        created_at=utcnow(),
    )
    await repo.add(session, user)
    return user


async def list_users(session: AsyncSession, actor: Actor) -> list[UserDetail]:
    require_admin(actor)
    return [user_detail(u) for u in await repo.org_users(session, actor.org_id)]


async def invite_user(
    session: AsyncSession, config: AuthConfig, actor: Actor, body: UserCreate
) -> UserCreated:
    require_admin(actor)
    password = body.password or generated_password()
    user = await create_user(
        session, org_id=actor.org_id, email=body.email, password=password, role=body.role, name=body.name
    )
    await audit.record(
        session, config.now(), "user.created", actor=actor, target=user.id, detail={"role": user.role}
    )
    return UserCreated(**user_detail(user).model_dump(), password=None if body.password else password)


async def update_user(session: AsyncSession, config: AuthConfig, req: UpdateUserRequest) -> UserDetail:
    actor = req.actor
    require_admin(actor)
    user = await repo.get_org_user(session, actor.org_id, req.id)
    if user is None:
        raise NotFound("user not found", code="user_not_found")
    body = req.user
    losing_admin = (
        user.role == "admin"
        and user.is_active
        and ((body.role is not None and body.role != "admin") or body.is_active is False)
    )
    if losing_admin:
        admins = [u for u in await repo.org_users(session, actor.org_id) if u.role == "admin" and u.is_active]
        if len(admins) <= 1:
            raise Conflict(
                "the organization's last admin cannot be demoted or deactivated", code="last_admin"
            )
    if body.name is not None:
        user.name = clean_name(body.name, field="name") if body.name else ""
    if body.role is not None and body.role != user.role:
        change = {"from": user.role, "to": body.role}
        await audit.record(
            session, config.now(), "user.role_changed", actor=actor, target=user.id, detail=change
        )
        user.role = body.role
    if body.is_active is not None and body.is_active != user.is_active:
        user.is_active = body.is_active
        if not body.is_active:
            await repo.revoke_user_sessions(session, user.id, config.now())
            user.tokens_valid_after = config.now()  # their access tokens stop at the next request
        action = "user.reactivated" if body.is_active else "user.deactivated"
        await audit.record(session, config.now(), action, actor=actor, target=user.id)
    session.add(user)
    await session.flush()
    return user_detail(user)


async def user_state(session: AsyncSession, user_id: str, org_id: str) -> UserState:
    """What the gateway checks on a request with this user's access token; an unknown user is inactive."""
    user = await repo.get_org_user(session, org_id, user_id)
    if user is None:
        return UserState(user_id=user_id, org_id=org_id, active=False)
    after = user.tokens_valid_after
    return UserState(
        user_id=user.id,
        org_id=user.org_id,
        active=user.is_active,
        role=role_of(user),
        valid_after=after.timestamp() if after is not None else 0,
        mfa=await mfa.applies(session, user),
    )


_ROLES: dict[str, Role] = {"admin": "admin", "user": "user", "viewer": "viewer"}


def role_of(user: User) -> Role:
    return _ROLES[user.role]  # the check constraint keeps anything else out of the table


def user_public(user: User) -> UserPublic:
    return project(UserPublic, user, role=role_of(user))


def user_detail(user: User) -> UserDetail:
    return project(UserDetail, user, role=role_of(user))
