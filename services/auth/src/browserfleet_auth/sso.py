"""Single sign-on, the database side: an organization's identity-provider settings (admins), the started
sign-ins (state, nonce, PKCE verifier: spent by their callback), matching or creating the user an ID token
names, and the one-time code the browser exchanges for tokens. The protocol itself is in `oidc.py`.

Which user an ID token names: the org's user already linked to the provider's `sub`; else the org's user
with the token's email (then linked); else a new user (just in time) with the role the claim mapping gives,
or the default role. The email must be verified by the provider and in a domain the organization owns (a
domain is one organization's only), and may not belong to another organization's user.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from browserfleet_contracts.auth import normalize_email
from browserfleet_contracts.common import Actor
from browserfleet_contracts.sso import EMAIL_DOMAIN_PATTERN, SsoHandoff, SsoSettings, SsoSettingsPublic
from browserfleet_core import security
from browserfleet_core.db import AsyncSession
from browserfleet_core.errors import Conflict, Invalid, NotFound

from . import audit, mfa
from . import repository as repo
from .access import require_admin
from .config import AuthConfig
from .models import SsoConfig, SsoHandoffCode, SsoState, User
from .oidc import SsoRefused
from .users import create_user

HANDOFF_PREFIX = "sso_"
SCOPES = ["openid", "email", "profile"]
_RANK: dict[str, int] = {"viewer": 0, "user": 1, "admin": 2}


def login_path(slug: str) -> str:
    return f"/auth/sso/{slug}/login"


async def get_settings(session: AsyncSession, actor: Actor) -> SsoSettingsPublic:
    require_admin(actor)
    cfg = await repo.get_sso_config(session, actor.org_id)
    if cfg is None:
        raise NotFound("no SSO settings for this organization", code="sso_not_configured")
    return await _public(session, cfg)


async def _public(session: AsyncSession, cfg: SsoConfig) -> SsoSettingsPublic:
    org = await repo.get_organization(session, cfg.org_id)
    glass = await repo.get_user(session, cfg.break_glass_user_id) if cfg.break_glass_user_id else None
    # validated on the way out as on the way in (the columns hold only what SsoSettings accepted)
    return SsoSettingsPublic.model_validate(
        {
            "org_id": cfg.org_id,
            "issuer": cfg.issuer,
            "client_id": cfg.client_id,
            "client_secret_name": cfg.client_secret_name,
            "email_domains": await repo.sso_domains(session, cfg.org_id),
            "default_role": cfg.default_role,
            "role_claim": cfg.role_claim,
            "role_mapping": dict(cfg.role_mapping),
            "sso_only": cfg.sso_only,
            "break_glass_email": glass.email if glass is not None else None,
            "enabled": cfg.enabled,
            "login_path": login_path(org.slug if org is not None else ""),
            "updated_at": cfg.updated_at,
        }
    )


async def put_settings(
    session: AsyncSession, config: AuthConfig, actor: Actor, body: SsoSettings
) -> SsoSettingsPublic:
    """Replaces the org's settings. The caller has already checked the issuer's discovery document and
    that the vault holds the named client secret."""
    require_admin(actor)
    domains = sorted({_domain(d) for d in body.email_domains})
    taken = {d: o for d, o in (await repo.domain_owners(session, domains)).items() if o != actor.org_id}
    if taken:
        raise Conflict(
            f"email_domains: already claimed by another organization: {', '.join(sorted(taken))}",
            field="email_domains",
            code="sso_domain_taken",
        )
    glass_id: str | None = None
    if body.break_glass_email is not None:
        glass = await repo.get_user_by_email(session, body.break_glass_email)
        if glass is None or glass.org_id != actor.org_id or glass.role != "admin" or not glass.is_active:
            raise Invalid(
                "break_glass_email: must be an active admin of this organization", field="break_glass_email"
            )
        glass_id = glass.id
    elif body.sso_only:
        raise Invalid(
            "break_glass_email: SSO-only needs an admin who can still sign in with a password",
            field="break_glass_email",
        )
    cfg = await repo.get_sso_config(session, actor.org_id) or SsoConfig(
        org_id=actor.org_id, issuer="", client_id="", client_secret_name=""
    )
    cfg.issuer, cfg.client_id, cfg.client_secret_name = body.issuer, body.client_id, body.client_secret_name
    cfg.scopes, cfg.default_role, cfg.role_claim = list(SCOPES), body.default_role, body.role_claim
    cfg.role_mapping = dict(body.role_mapping)
    cfg.sso_only, cfg.break_glass_user_id, cfg.enabled = body.sso_only, glass_id, body.enabled
    cfg.updated_at = config.now()
    session.add(cfg)
    await session.flush()
    await repo.replace_sso_domains(session, actor.org_id, domains)
    detail = {"issuer": cfg.issuer, "client_id": cfg.client_id, "domains": domains, "sso_only": cfg.sso_only}
    await audit.record(
        session, config.now(), "sso.settings_updated", actor=actor, target=actor.org_id, detail=detail
    )
    return await _public(session, cfg)


def _domain(raw: str) -> str:
    """A domain spelled as the email rule spells an address's domain (case-folded, IDN in Unicode), so an ID
    token's email is compared like for like."""
    candidate = raw.strip().rstrip(".")
    try:
        domain = normalize_email(f"postmaster@{candidate}").rpartition("@")[2]
    except ValueError:
        domain = ""
    if not domain or not re.match(EMAIL_DOMAIN_PATTERN, domain.encode("idna").decode()):
        raise Invalid(f"email_domains: {raw[:100]!r} is not a domain name", field="email_domains")
    return domain


async def delete_settings(session: AsyncSession, config: AuthConfig, actor: Actor) -> None:
    require_admin(actor)
    if not await repo.delete_sso_config(session, actor.org_id):
        raise NotFound("no SSO settings for this organization", code="sso_not_configured")
    await audit.record(session, config.now(), "sso.settings_deleted", actor=actor, target=actor.org_id)


async def settings_for_slug(session: AsyncSession, slug: str) -> SsoConfig:
    """The enabled settings of the org at `slug`; one answer for no such org and no SSO (404)."""
    org = await repo.get_organization_by_slug(session, slug.strip().lower())
    cfg = await repo.get_sso_config(session, org.id) if org is not None else None
    if cfg is None or not cfg.enabled:
        raise NotFound("single sign-on is not set up for this organization", code="sso_not_configured")
    session.expunge(cfg)
    return cfg


async def remember_start(
    session: AsyncSession,
    config: AuthConfig,
    org_id: str,
    *,
    state: str,
    nonce: str,
    code_verifier: str,
    redirect_uri: str,
) -> None:
    await repo.purge_expired(session, config.now())
    expires = config.now() + timedelta(seconds=config.sso_state_ttl_seconds)
    row = SsoState(
        state_hash=security.hash_token(state),
        org_id=org_id,
        nonce=nonce,
        code_verifier=code_verifier,
        redirect_uri=redirect_uri,
        expires_at=expires,
    )
    await repo.add(session, row)


async def spend_state(
    session: AsyncSession, config: AuthConfig, state: str | None
) -> tuple[SsoState, SsoConfig]:
    """The started sign-in `state` names, deleted as it is read (committed on its own: a state is good for
    one callback whatever happens next), and its org's settings."""
    found = await repo.pop_sso_state(session, security.hash_token(state)) if state else None
    cfg = await repo.get_sso_config(session, found.org_id) if found is not None else None
    if found is None or found.expires_at <= config.now() or cfg is None or not cfg.enabled:
        raise SsoRefused(
            "unknown, used or expired SSO state: start the sign-in again",
            code="sso_state_invalid",
            status=400,
        )
    session.expunge(cfg)
    return found, cfg


async def admit_identity(
    session: AsyncSession, config: AuthConfig, cfg: SsoConfig, claims: dict[str, Any], client_ip: str | None
) -> tuple[SsoHandoff, User]:
    """The user the verified ID token names (matched, linked or created), and their one-time code."""
    subject = str(claims.get("sub") or "")
    if not subject or len(subject) > 255:
        raise SsoRefused("the ID token's sub claim is missing or too long", code="sso_id_token_invalid")
    email = _email_of(claims)
    domain = email.rpartition("@")[2]
    if domain not in await repo.sso_domains(session, cfg.org_id):
        raise SsoRefused(
            f"the email domain {domain!r} is not one of the organization's domains",
            code="sso_email_not_owned",
            status=403,
        )
    user = await repo.get_user_by_sso_subject(session, cfg.org_id, subject)
    if user is None:
        user = await _by_email(session, cfg, email, subject)
    mapped = _mapped_role(cfg, claims)
    if user is None:
        user = await create_user(
            session,
            org_id=cfg.org_id,
            email=email,
            password=None,  # this user signs in through the provider
            role=mapped or cfg.default_role,
            name=str(claims.get("name") or "")[:200],
            sso_subject=subject,
        )
        await audit.record(
            session,
            config.now(),
            "user.created",
            org_id=cfg.org_id,
            target=user.id,
            client_ip=client_ip,
            detail={"role": user.role, "via": "sso"},
        )
    elif mapped is not None and mapped != user.role and user.id != cfg.break_glass_user_id:
        await _sync_role(session, config, user, mapped)
    if not user.is_active:
        raise SsoRefused("this user is deactivated in the organization", code="user_inactive", status=403)
    user.last_login = config.now()
    session.add(user)
    amr = ["fed", *(["mfa"] if _provider_mfa(claims) else [])]
    raw = security.new_token(HANDOFF_PREFIX)
    expires = config.now() + timedelta(seconds=config.sso_handoff_ttl_seconds)
    await repo.add(
        session,
        SsoHandoffCode(code_hash=security.hash_token(raw), user_id=user.id, amr=amr, expires_at=expires),
    )
    await audit.record_own(
        session, config.now(), "login", user, client_ip=client_ip, detail={"via": "sso", "issuer": cfg.issuer}
    )
    return SsoHandoff(code=raw, expires_in=config.sso_handoff_ttl_seconds), user


def _email_of(claims: dict[str, Any]) -> str:
    raw = claims.get("email")
    if not isinstance(raw, str) or not raw:
        raise SsoRefused(
            "the ID token carries no email claim (ask for the email scope)", code="sso_email_invalid"
        )
    if claims.get("email_verified") is False:
        raise SsoRefused(
            "the identity provider has not verified this email address", code="sso_email_invalid"
        )
    try:
        return normalize_email(raw)
    except ValueError as exc:
        raise SsoRefused(f"the ID token's email: {exc}", code="sso_email_invalid") from None


async def _by_email(session: AsyncSession, cfg: SsoConfig, email: str, subject: str) -> User | None:
    user = await repo.get_user_by_email(session, email)
    if user is None:
        return None
    if user.org_id != cfg.org_id:
        raise SsoRefused(
            "this email address belongs to another organization", code="sso_email_not_owned", status=403
        )
    if user.sso_subject is not None and user.sso_subject != subject:
        raise SsoRefused(
            "this email address is linked to another identity at the provider",
            code="sso_identity_mismatch",
            status=403,
        )
    user.sso_subject = subject
    return user


def _mapped_role(cfg: SsoConfig, claims: dict[str, Any]) -> str | None:
    if not cfg.role_claim or not cfg.role_mapping:
        return None
    value = claims.get(cfg.role_claim)
    values = value if isinstance(value, list) else [value]
    roles = [cfg.role_mapping[v] for v in values if isinstance(v, str) and v in cfg.role_mapping]
    return max(roles, key=lambda r: _RANK.get(r, -1)) if roles else None


async def _sync_role(session: AsyncSession, config: AuthConfig, user: User, role: str) -> None:
    if user.role == "admin" and user.is_active:
        admins = [u for u in await repo.org_users(session, user.org_id) if u.role == "admin" and u.is_active]
        if len(admins) <= 1:
            return  # never leave the organization without an admin
    detail = {"from": user.role, "to": role, "via": "sso"}
    await audit.record(
        session, config.now(), "user.role_changed", org_id=user.org_id, target=user.id, detail=detail
    )
    user.role = role


def _provider_mfa(claims: dict[str, Any]) -> bool:
    amr = claims.get("amr")
    return isinstance(amr, list) and bool({"mfa", "otp", "hwk", "swk"} & {str(a) for a in amr})


async def exchange(session: AsyncSession, config: AuthConfig, code: str) -> mfa.SignIn:
    """The one-time code from the callback, spent: tokens, or the MFA challenge when a second factor
    applies and the provider did not assert one."""
    found = (
        await repo.pop_sso_handoff(session, security.hash_token(code))
        if code.startswith(HANDOFF_PREFIX)
        else None
    )
    user = await repo.get_user(session, found.user_id) if found is not None else None
    if found is None or found.expires_at <= config.now() or user is None or not user.is_active:
        raise SsoRefused(
            "unknown, used or expired sign-in code: start the sign-in again", code="sso_code_invalid"
        )
    return await mfa.sign_in(session, config, user, amr=list(found.amr), mfa_done="mfa" in found.amr)
