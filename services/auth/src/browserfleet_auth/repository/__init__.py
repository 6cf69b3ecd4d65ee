"""Every query of the auth service."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from browserfleet_contracts.auth import ListAuditRequest
from sqlalchemy import ColumnElement, Table, case, delete, func, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from ..models import (
    ApiKey,
    AuditLog,
    LoginThrottle,
    MfaChallenge,
    Organization,
    RecoveryCode,
    RefreshSession,
    SigningKey,
    SsoConfig,
    SsoDomain,
    SsoHandoffCode,
    SsoState,
    TotpFactor,
    User,
)


async def advisory_xact_lock(session: AsyncSession, name: str) -> None:
    """Serialise a check-then-insert across replicas until the surrounding transaction ends."""
    await session.exec(select(func.pg_advisory_xact_lock(func.hashtext(name))))


Row = (
    Organization
    | User
    | RefreshSession
    | SigningKey
    | ApiKey
    | AuditLog
    | LoginThrottle
    | TotpFactor
    | RecoveryCode
    | MfaChallenge
    | SsoConfig
    | SsoDomain
    | SsoState
    | SsoHandoffCode
)


async def add(session: AsyncSession, *rows: Row) -> None:
    session.add_all(rows)
    await session.flush()


# --- organizations ---------------------------------------------------------------------------------
async def get_organization(session: AsyncSession, org_id: str) -> Organization | None:
    return await session.get(Organization, org_id)


async def first_organization(session: AsyncSession) -> Organization | None:
    stmt = select(Organization).order_by(col(Organization.created_at), col(Organization.id)).limit(1)
    return (await session.exec(stmt)).first()


async def slug_taken(session: AsyncSession, slug: str) -> bool:
    stmt = select(Organization.id).where(Organization.slug == slug)
    return (await session.exec(stmt)).first() is not None


async def get_organization_by_slug(session: AsyncSession, slug: str) -> Organization | None:
    return (await session.exec(select(Organization).where(Organization.slug == slug))).first()


async def list_organizations(session: AsyncSession) -> Sequence[Organization]:
    stmt = select(Organization).order_by(col(Organization.created_at), col(Organization.id))
    return (await session.exec(stmt)).all()


async def delete_organization(session: AsyncSession, org_id: str) -> None:
    """Users, their sessions and the org's API keys go with it (ON DELETE CASCADE)."""
    await session.exec(delete(Organization).where(col(Organization.id) == org_id))


# --- users -----------------------------------------------------------------------------------------
async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    return (await session.exec(select(User).where(User.email == email))).first()


async def get_user(session: AsyncSession, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def get_org_user(session: AsyncSession, org_id: str, user_id: str) -> User | None:
    stmt = select(User).where(User.id == user_id, User.org_id == org_id)
    return (await session.exec(stmt)).first()


async def get_user_by_sso_subject(session: AsyncSession, org_id: str, subject: str) -> User | None:
    stmt = select(User).where(User.org_id == org_id, User.sso_subject == subject)
    return (await session.exec(stmt)).first()


async def first_admin(session: AsyncSession, org_id: str) -> User | None:
    stmt = (
        select(User)
        .where(User.org_id == org_id, User.role == "admin")
        .order_by(col(User.created_at), col(User.id))
        .limit(1)
    )
    return (await session.exec(stmt)).first()


async def org_users(session: AsyncSession, org_id: str) -> Sequence[User]:
    stmt = select(User).where(User.org_id == org_id).order_by(col(User.created_at), col(User.id))
    return (await session.exec(stmt)).all()


async def revoke_user_sessions(session: AsyncSession, user_id: str, now: datetime) -> int:
    return await _revoke_sessions(session, col(RefreshSession.user_id) == user_id, now)


# --- refresh sessions ------------------------------------------------------------------------------
async def get_refresh_session_for_update(session: AsyncSession, token_hash: str) -> RefreshSession | None:
    """Row-locked, so two concurrent uses of one token are serialised and the second sees it spent."""
    stmt = select(RefreshSession).where(RefreshSession.token_hash == token_hash).with_for_update()
    return (await session.exec(stmt)).first()


async def get_refresh_session(session: AsyncSession, token_hash: str) -> RefreshSession | None:
    return (await session.exec(select(RefreshSession).where(RefreshSession.token_hash == token_hash))).first()


async def revoke_family(session: AsyncSession, family_id: str, now: datetime) -> int:
    return await _revoke_sessions(session, col(RefreshSession.family_id) == family_id, now)


async def _revoke_sessions(session: AsyncSession, which: ColumnElement[bool], now: datetime) -> int:
    """Revoke the refresh sessions `which` selects that are not revoked yet; returns how many it revoked."""
    stmt = (
        update(RefreshSession)
        .where(which, col(RefreshSession.revoked_at).is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session="fetch")
    )
    result = await session.exec(stmt)
    return int(result.rowcount or 0)


async def family_sessions(session: AsyncSession, family_id: str) -> Sequence[RefreshSession]:
    stmt = (
        select(RefreshSession)
        .where(RefreshSession.family_id == family_id)
        .order_by(col(RefreshSession.created_at))
    )
    return (await session.exec(stmt)).all()


# --- signing keys ----------------------------------------------------------------------------------
async def current_signing_key(session: AsyncSession) -> SigningKey | None:
    stmt = (
        select(SigningKey)
        .where(col(SigningKey.retired_at).is_(None))
        .order_by(col(SigningKey.created_at).desc(), col(SigningKey.kid))
        .limit(1)
    )
    return (await session.exec(stmt)).first()


async def published_signing_keys(session: AsyncSession, retired_after: datetime) -> Sequence[SigningKey]:
    """Active keys, and retired ones that may still have signed an unexpired token."""
    stmt = (
        select(SigningKey)
        .where(or_(col(SigningKey.retired_at).is_(None), col(SigningKey.retired_at) > retired_after))
        .order_by(col(SigningKey.created_at).desc())
    )
    return (await session.exec(stmt)).all()


async def retire_signing_keys(session: AsyncSession, now: datetime) -> None:
    stmt = (
        update(SigningKey)
        .where(col(SigningKey.retired_at).is_(None))
        .values(retired_at=now)
        .execution_options(synchronize_session="fetch")
    )
    await session.exec(stmt)


# --- API keys --------------------------------------------------------------------------------------
async def get_api_key_by_hash(session: AsyncSession, key_hash: str) -> ApiKey | None:
    return (await session.exec(select(ApiKey).where(ApiKey.key_hash == key_hash))).first()


async def get_org_api_key(session: AsyncSession, org_id: str, key_id: str) -> ApiKey | None:
    stmt = select(ApiKey).where(ApiKey.id == key_id, ApiKey.org_id == org_id)
    return (await session.exec(stmt)).first()


async def org_api_keys(session: AsyncSession, org_id: str) -> Sequence[ApiKey]:
    stmt = select(ApiKey).where(ApiKey.org_id == org_id).order_by(col(ApiKey.created_at), col(ApiKey.id))
    return (await session.exec(stmt)).all()


async def touch_api_key(session: AsyncSession, key_id: str, now: datetime) -> None:
    stmt = (
        update(ApiKey)
        .where(col(ApiKey.id) == key_id)
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.exec(stmt)


# --- audit log -------------------------------------------------------------------------------------
async def list_audit(
    session: AsyncSession, filters: ListAuditRequest, *, before_id: int | None, limit: int
) -> Sequence[AuditLog]:
    """The actor's organization's entries that match the request's filters, newest first; `before_id` is
    the keyset cursor."""
    stmt = select(AuditLog).where(AuditLog.org_id == filters.actor.org_id)
    if filters.action:
        stmt = stmt.where(AuditLog.action == filters.action)
    if filters.outcome:
        stmt = stmt.where(AuditLog.outcome == filters.outcome)
    if actor_id := filters.actor_id:
        stmt = stmt.where(
            or_(col(AuditLog.actor_user_id) == actor_id, col(AuditLog.actor_api_key_id) == actor_id)
        )
    if filters.target:
        stmt = stmt.where(AuditLog.target == filters.target)
    if filters.request_id:
        stmt = stmt.where(AuditLog.request_id == filters.request_id)
    if filters.since is not None:
        stmt = stmt.where(col(AuditLog.at) >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(col(AuditLog.at) < filters.until)
    if before_id is not None:
        stmt = stmt.where(col(AuditLog.id) < before_id)
    stmt = stmt.order_by(col(AuditLog.id).desc()).limit(limit)
    return (await session.exec(stmt)).all()


_AUDIT: Table = AuditLog.__table__  # type: ignore[attr-defined]


def _of_request(org_id: str | None, request_id: str) -> ColumnElement[bool]:
    """The entries of one gateway call (an org's request id), found by the request id: the organization is
    compared with IS NOT DISTINCT FROM, which no index serves, as in the batch writer's statements
    (audit_batch). With `org_id = ...` a plan kept by the prepared statement could probe the org_id index and
    read every entry of the organization for each call; this way only the (request_id, org_id, id) index
    offers itself."""
    return (_AUDIT.c.request_id == request_id) & _AUDIT.c.org_id.is_not_distinct_from(org_id)


def audit_of_request_statement(org_id: str | None, request_id: str) -> SelectOfScalar[AuditLog]:
    """`audit_of_request`'s query (its SQL is checked by the plan tests)."""
    return (
        select(AuditLog)
        .where(_of_request(org_id, request_id))
        .order_by(col(AuditLog.id))
        .limit(1)
        .with_for_update()
    )


async def audit_of_request(session: AsyncSession, org_id: str | None, request_id: str) -> AuditLog | None:
    """The entry the gateway opened for the call `request_id` (its first one), locked for the update."""
    return (await session.exec(audit_of_request_statement(org_id, request_id))).first()


async def audit_of_event(session: AsyncSession, org_id: str, action: str, event_id: str) -> bool:
    """Whether the audit log already records the event `event_id` (kept in the row's detail)."""
    stmt = select(AuditLog.id).where(
        AuditLog.org_id == org_id,
        AuditLog.action == action,
        col(AuditLog.detail)["event_id"].as_string() == event_id,
    )
    return (await session.exec(stmt.limit(1))).first() is not None


# --- login throttle --------------------------------------------------------------------------------
async def get_throttles_for_update(session: AsyncSession, keys: list[str]) -> dict[str, LoginThrottle]:
    stmt = (
        select(LoginThrottle)
        .where(col(LoginThrottle.key).in_(keys))
        .with_for_update()
        .execution_options(populate_existing=True)  # counters are bumped by upserts, not through the ORM
    )
    return {row.key: row for row in (await session.exec(stmt)).all()}


async def clear_throttle(session: AsyncSession, key: str) -> None:
    await session.exec(delete(LoginThrottle).where(col(LoginThrottle.key) == key))


async def add_login_failure(
    session: AsyncSession,
    key: str,
    now: datetime,
    *,
    window_start: datetime,
    lock_after: int,
    locked_until: datetime,
) -> None:
    """One more failure for `key` (a fresh count once the last failure left the window); locks the key when
    the count reaches `lock_after`. An upsert, so concurrent first failures on two replicas both count."""
    from sqlalchemy.dialects.postgresql import insert

    t = LoginThrottle.__table__  # type: ignore[attr-defined]
    failures = case((t.c.last_failure_at < window_start, 1), else_=t.c.failures + 1)
    stmt = (
        insert(t)
        .values(key=key, failures=1, last_failure_at=now, locked_until=None)
        .on_conflict_do_update(
            index_elements=["key"],
            set_={
                "failures": failures,
                "last_failure_at": now,
                "locked_until": case((failures >= lock_after, locked_until), else_=t.c.locked_until),
            },
        )
    )
    await session.exec(stmt)


# --- MFA -------------------------------------------------------------------------------------------
async def get_totp_for_update(session: AsyncSession, user_id: str) -> TotpFactor | None:
    """Row-locked: two codes checked at once for one user are serialised, so one step is accepted once."""
    stmt = (
        select(TotpFactor)
        .where(TotpFactor.user_id == user_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.exec(stmt)).first()


async def get_totp(session: AsyncSession, user_id: str) -> TotpFactor | None:
    return await session.get(TotpFactor, user_id)


async def delete_mfa(session: AsyncSession, user_id: str) -> None:
    """The user's factor, recovery codes and open challenges."""
    for table in (TotpFactor, RecoveryCode, MfaChallenge):
        await session.exec(delete(table).where(col(table.user_id) == user_id))


async def delete_recovery_codes(session: AsyncSession, user_id: str) -> None:
    await session.exec(delete(RecoveryCode).where(col(RecoveryCode.user_id) == user_id))


async def spend_recovery_code(session: AsyncSession, user_id: str, code_hash: str, now: datetime) -> bool:
    """Marks an unused code of this user used; False if there is none (unknown, another's, or spent)."""
    stmt = (
        update(RecoveryCode)
        .where(
            col(RecoveryCode.user_id) == user_id,
            col(RecoveryCode.code_hash) == code_hash,
            col(RecoveryCode.used_at).is_(None),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool((await session.exec(stmt)).rowcount)


async def recovery_codes_left(session: AsyncSession, user_id: str) -> int:
    stmt = select(func.count()).where(RecoveryCode.user_id == user_id, col(RecoveryCode.used_at).is_(None))
    return int((await session.exec(stmt)).one())


async def get_challenge_for_update(session: AsyncSession, token_hash: str) -> MfaChallenge | None:
    stmt = select(MfaChallenge).where(MfaChallenge.token_hash == token_hash).with_for_update()
    return (await session.exec(stmt)).first()


async def purge_expired(session: AsyncSession, now: datetime) -> None:
    """Sign-in leftovers past their time (challenges, OIDC states, hand-off codes): cheap, run on insert."""
    for table in (MfaChallenge, SsoState, SsoHandoffCode):
        await session.exec(delete(table).where(col(table.expires_at) < now))


# --- SSO -------------------------------------------------------------------------------------------
async def get_sso_config(session: AsyncSession, org_id: str) -> SsoConfig | None:
    return await session.get(SsoConfig, org_id)


async def delete_sso_config(session: AsyncSession, org_id: str) -> bool:
    await session.exec(delete(SsoDomain).where(col(SsoDomain.org_id) == org_id))
    result = await session.exec(delete(SsoConfig).where(col(SsoConfig.org_id) == org_id))
    return bool(result.rowcount)


async def sso_domains(session: AsyncSession, org_id: str) -> list[str]:
    stmt = select(SsoDomain.domain).where(SsoDomain.org_id == org_id).order_by(col(SsoDomain.domain))
    return list((await session.exec(stmt)).all())


async def domain_owners(session: AsyncSession, domains: list[str]) -> dict[str, str]:
    stmt = select(SsoDomain).where(col(SsoDomain.domain).in_(domains))
    return {d.domain: d.org_id for d in (await session.exec(stmt)).all()}


async def replace_sso_domains(session: AsyncSession, org_id: str, domains: list[str]) -> None:
    await session.exec(delete(SsoDomain).where(col(SsoDomain.org_id) == org_id))
    session.add_all([SsoDomain(domain=d, org_id=org_id) for d in domains])
    await session.flush()


async def pop_sso_state(session: AsyncSession, state_hash: str) -> SsoState | None:
    """The started sign-in, deleted as it is read: a state is good for one callback."""
    stmt = delete(SsoState).where(col(SsoState.state_hash) == state_hash).returning(SsoState)
    return (await session.exec(stmt)).scalars().first()


async def pop_sso_handoff(session: AsyncSession, code_hash: str) -> SsoHandoffCode | None:
    stmt = delete(SsoHandoffCode).where(col(SsoHandoffCode.code_hash) == code_hash).returning(SsoHandoffCode)
    return (await session.exec(stmt)).scalars().first()
