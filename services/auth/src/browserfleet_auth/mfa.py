"""The second factor: TOTP (RFC 6238: 30 s steps, 6 digits, SHA-1, as every authenticator app speaks it) with
single-use recovery codes; enrolment, the sign-in challenge, step-up for sensitive actions, and the org's
requirement.

A code is accepted for the step before, at, or after now (clock drift), and only for a step later than the
last one accepted for that user: the same code twice, or an older one, is refused. Wrong codes count in the
sign-in throttle (`mfa:<user>` and the client's address), so guessing is as slow as guessing passwords.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from datetime import datetime, timedelta

import pyotp
import segno
from browserfleet_contracts.auth import TokenPair
from browserfleet_contracts.common import Actor
from browserfleet_contracts.mfa import MfaChallenge as ChallengeReply
from browserfleet_contracts.mfa import (
    MfaPolicy,
    MfaStatus,
    MfaVerifyCommand,
    TotpEnrolment,
)
from browserfleet_core import security
from browserfleet_core.db import AsyncSession, new_id
from browserfleet_core.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized

from . import audit, throttle, tokens
from . import repository as repo
from .access import require_admin
from .config import AuthConfig
from .models import MfaChallenge, RecoveryCode, TotpFactor, User

STEP_SECONDS = 30
# codes this many steps old are "expired" rather than "wrong": a clearer answer for a slow hand or a bad clock
STALE_STEPS = 10
RECOVERY_CODES = 10
CHALLENGE_PREFIX = "mfc_"
MFA_AMR = ("otp", "mfa")
# what a first factor leads to (the handlers answer it as the contract's `LoginReply`)
SignIn = TokenPair | ChallengeReply


class MfaFailed(Unauthorized):
    """A wrong, reused or expired code; the caller commits the throttle counters and the audit row."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="invalid_mfa_code", field="code")


def _step(now: datetime) -> int:
    return int(now.timestamp()) // STEP_SECONDS


def totp_code(secret: str, now: datetime) -> str:
    """The code an authenticator shows at `now` (tests and the enrolment check use it)."""
    return str(pyotp.TOTP(secret).at(now))


def _matching_step(secret: str, code: str, now: datetime, steps: range) -> int | None:
    otp = pyotp.TOTP(secret)
    current = _step(now)
    for offset in steps:
        if hmac.compare_digest(otp.generate_otp(current + offset), code):
            return current + offset
    return None


def _recovery_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()  # 80 bits, 16 characters
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


def _canonical_recovery(code: str) -> str | None:
    letters = "".join(code.split()).replace("-", "").lower()
    if len(letters) != 16 or not all(c in "abcdefghijklmnopqrstuvwxyz234567" for c in letters):
        return None
    return "-".join(letters[i : i + 4] for i in range(0, 16, 4))


async def applies(session: AsyncSession, user: User) -> bool:
    """A second factor is asked of this user: they enrolled one, or their organization requires it."""
    factor = await repo.get_totp(session, user.id)
    if factor is not None and factor.confirmed_at is not None:
        return True
    org = await repo.get_organization(session, user.org_id)
    return bool(org is not None and org.mfa_required)


async def sign_in(
    session: AsyncSession, config: AuthConfig, user: User, *, amr: list[str], mfa_done: bool = False
) -> SignIn:
    """The end of every first factor (password, SSO): tokens, or the challenge for the second factor."""
    now = config.now()
    if mfa_done or not await applies(session, user):
        return await tokens.issue(
            session, config, user, family_id=new_id(), amr=amr, mfa_at=now if mfa_done else None
        )
    await repo.purge_expired(session, now)
    raw = security.new_token(CHALLENGE_PREFIX)
    challenge = MfaChallenge(
        token_hash=security.hash_token(raw),
        user_id=user.id,
        amr=amr,
        expires_at=now + timedelta(seconds=config.mfa_challenge_ttl_seconds),
    )
    await repo.add(session, challenge)
    factor = await repo.get_totp(session, user.id)
    return ChallengeReply(
        challenge=raw,
        expires_in=config.mfa_challenge_ttl_seconds,
        enrolment_required=factor is None or factor.confirmed_at is None,
    )


async def _open_challenge(session: AsyncSession, config: AuthConfig, raw: str) -> tuple[MfaChallenge, User]:
    found = None
    if raw.startswith(CHALLENGE_PREFIX):
        found = await repo.get_challenge_for_update(session, security.hash_token(raw))
    user = await repo.get_user(session, found.user_id) if found is not None else None
    if found is None or found.used_at is not None or found.expires_at <= config.now() or user is None:
        raise Unauthorized(
            "unknown, used or expired MFA challenge: sign in again",
            code="invalid_mfa_challenge",
            field="challenge",
        )
    if not user.is_active:
        raise Unauthorized("user not found or inactive", code="invalid_principal")
    return found, user


async def check_code(
    session: AsyncSession, config: AuthConfig, user: User, code: str, *, client_ip: str | None
) -> str:
    """Which factor `code` is (`otp` or `recovery`), spending it; throttled like a password. A wrong code
    raises MfaFailed (or LoginThrottled) after counting it: the caller commits, then answers."""
    now = config.now()
    keys = [f"mfa:{user.id}"] + ([f"ip:{client_ip}"] if client_ip else [])
    wait = await throttle.wait_seconds(session, config.brute_force, keys, now)
    if wait > 0:
        await _refused(session, config, user, "mfa.throttled", "denied", client_ip)
        raise throttle.LoginThrottled(wait)
    factor = await repo.get_totp_for_update(session, user.id)
    problem = "no second factor is set up for this user"
    if factor is not None:
        problem = await _spend(session, factor, code.strip(), now)
    if problem:
        await throttle.record_failure(session, config.brute_force, keys, now)
        await _refused(session, config, user, "mfa.failed", "failure", client_ip, reason=problem)
        raise MfaFailed(problem)
    await throttle.clear_account(session, keys)
    return "otp" if code.strip().isdigit() else "recovery"


async def _spend(session: AsyncSession, factor: TotpFactor, code: str, now: datetime) -> str:
    """'' when `code` is good (and now spent), else what is wrong with it."""
    if code.isdigit():
        step = _matching_step(factor.secret, code, now, range(-1, 2))
        if step is None:
            stale = _matching_step(factor.secret, code, now, range(-STALE_STEPS, -1))
            return "code expired: enter the one your app shows now" if stale else "invalid code"
        if factor.last_step is not None and step <= factor.last_step:
            return "code already used: wait for the next one"
        factor.last_step = step
        session.add(factor)
        return ""
    canonical = _canonical_recovery(code)
    if factor.confirmed_at is None or canonical is None:
        return "invalid code"
    ok = await repo.spend_recovery_code(session, factor.user_id, security.hash_token(canonical), now)
    return "" if ok else "invalid or already used recovery code"


async def _refused(
    session: AsyncSession,
    config: AuthConfig,
    user: User,
    action: str,
    outcome: str,
    client_ip: str | None,
    **detail: str,
) -> None:
    await audit.record_own(
        session, config.now(), action, user, outcome=outcome, client_ip=client_ip, detail=detail or None
    )


async def _confirm_if_pending(session: AsyncSession, config: AuthConfig, user: User) -> None:
    factor = await repo.get_totp(session, user.id)
    if factor is not None and factor.confirmed_at is None:
        factor.confirmed_at = config.now()
        session.add(factor)
        await audit.record_own(session, config.now(), "mfa.enrolled", user)


async def verify(session: AsyncSession, config: AuthConfig, cmd: MfaVerifyCommand) -> TokenPair:
    """Completes a sign-in's challenge (and a pending enrolment, when the challenge asked for one)."""
    challenge, user = await _open_challenge(session, config, cmd.challenge)
    kind = await check_code(session, config, user, cmd.code, client_ip=cmd.client_ip)
    challenge.used_at = config.now()
    session.add(challenge)
    await _confirm_if_pending(session, config, user)
    await audit.record_own(
        session,
        config.now(),
        "login",
        user,
        client_ip=cmd.client_ip,
        detail={"amr": [*challenge.amr, *MFA_AMR], "factor": kind},
    )
    amr = [*challenge.amr, *MFA_AMR]
    return await tokens.issue(session, config, user, family_id=new_id(), amr=amr, mfa_at=config.now())


async def _enrol(session: AsyncSession, config: AuthConfig, user: User) -> TotpEnrolment:
    factor = await repo.get_totp(session, user.id)
    if factor is not None and factor.confirmed_at is not None:
        raise Conflict(
            "a second factor is already set up; an admin can reset it", code="mfa_already_enrolled"
        )
    secret = pyotp.random_base32()
    if factor is None:
        factor = TotpFactor(user_id=user.id, secret=secret, created_at=config.now())
    factor.secret, factor.last_step, factor.created_at = secret, None, config.now()
    session.add(factor)
    await repo.delete_recovery_codes(session, user.id)
    codes = [_recovery_code() for _ in range(RECOVERY_CODES)]
    await repo.add(session, *(RecoveryCode(user_id=user.id, code_hash=security.hash_token(c)) for c in codes))
    org = await repo.get_organization(session, user.org_id)
    issuer = f"{config.totp_issuer} ({org.name})" if org is not None else config.totp_issuer
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=issuer)
    svg = segno.make_qr(uri, error="m").svg_inline(scale=4)
    return TotpEnrolment(secret=secret, otpauth_uri=uri, qr_svg=svg, recovery_codes=codes)


async def enrol_with_challenge(
    session: AsyncSession, config: AuthConfig, raw_challenge: str
) -> TotpEnrolment:
    _, user = await _open_challenge(session, config, raw_challenge)
    return await _enrol(session, config, user)


async def _actor_user(session: AsyncSession, actor: Actor) -> User:
    user = await repo.get_org_user(session, actor.org_id, actor.user_id) if actor.user_id else None
    if user is None or not user.is_active:
        raise Unauthorized("user not found or inactive", code="invalid_principal")
    return user


async def enrol(session: AsyncSession, config: AuthConfig, actor: Actor) -> TotpEnrolment:
    return await _enrol(session, config, await _actor_user(session, actor))


def _code(code: str | None) -> str:
    if not code:
        raise Invalid("code: a TOTP or recovery code is required", field="code")
    return code


async def confirm(session: AsyncSession, config: AuthConfig, actor: Actor, code: str | None) -> TokenPair:
    """The first code from the app turns the pending secret on; the answer is tokens carrying it."""
    user = await _actor_user(session, actor)
    factor = await repo.get_totp(session, user.id)
    if factor is None or factor.confirmed_at is not None:
        raise Conflict("no enrolment is pending: start one first", code="mfa_not_pending")
    if not _code(code).strip().isdigit():
        raise Invalid("code: confirm with a code from the app, not a recovery code", field="code")
    await check_code(session, config, user, _code(code), client_ip=actor.client_ip)
    await _confirm_if_pending(session, config, user)
    amr = ["pwd", *MFA_AMR]
    return await tokens.issue(session, config, user, family_id=new_id(), amr=amr, mfa_at=config.now())


async def step_up(session: AsyncSession, config: AuthConfig, actor: Actor, code: str | None) -> TokenPair:
    """A fresh second factor for a signed-in user: new tokens whose `mfa_at` is now."""
    user = await _actor_user(session, actor)
    factor = await repo.get_totp(session, user.id)
    if factor is None or factor.confirmed_at is None:
        raise Conflict("no second factor is set up: enrol first", code="mfa_not_enrolled")
    await check_code(session, config, user, _code(code), client_ip=actor.client_ip)
    await audit.record(session, config.now(), "mfa.step_up", actor=actor)
    amr = ["pwd", *MFA_AMR]
    return await tokens.issue(session, config, user, family_id=new_id(), amr=amr, mfa_at=config.now())


async def status(session: AsyncSession, actor: Actor) -> MfaStatus:
    user = await _actor_user(session, actor)
    factor = await repo.get_totp(session, user.id)
    org = await repo.get_organization(session, user.org_id)
    enrolled = factor is not None and factor.confirmed_at is not None
    return MfaStatus(
        enrolled=enrolled,
        required_by_organization=bool(org is not None and org.mfa_required),
        recovery_codes_left=await repo.recovery_codes_left(session, user.id) if enrolled else 0,
    )


async def get_policy(session: AsyncSession, actor: Actor) -> MfaPolicy:
    org = await repo.get_organization(session, actor.org_id)
    if org is None:
        raise NotFound("organization not found", code="organization_not_found")
    return MfaPolicy(required=org.mfa_required)


async def update_policy(
    session: AsyncSession, config: AuthConfig, actor: Actor, policy: MfaPolicy
) -> MfaPolicy:
    require_admin(actor)
    org = await repo.get_organization(session, actor.org_id)
    if org is None:
        raise NotFound("organization not found", code="organization_not_found")
    if org.mfa_required != policy.required:
        org.mfa_required = policy.required
        session.add(org)
        detail = {"required": policy.required}
        await audit.record(
            session, config.now(), "organization.mfa_policy_updated", actor=actor, detail=detail
        )
    return MfaPolicy(required=org.mfa_required)


async def reset_user(session: AsyncSession, config: AuthConfig, actor: Actor, user_id: str) -> None:
    """An admin removes a user's factor: their sessions end and their tokens stop counting at once."""
    require_admin(actor)
    user = await repo.get_org_user(session, actor.org_id, user_id)
    if user is None:
        raise NotFound("user not found", code="user_not_found")
    if user.id == actor.user_id:
        raise Forbidden("an admin cannot reset their own second factor", code="own_mfa")
    await repo.delete_mfa(session, user.id)
    await repo.revoke_user_sessions(session, user.id, config.now())
    user.tokens_valid_after = config.now()
    session.add(user)
    await audit.record(session, config.now(), "user.mfa_reset", actor=actor, target=user.id)
