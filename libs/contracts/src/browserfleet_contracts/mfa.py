"""Second factor (TOTP, RFC 6238) and the sign-in that may need it: a password or SSO sign-in answers with
tokens, or with a challenge that `POST /auth/mfa/verify` completes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, RootModel

from .auth import TokenPair
from .common import ById, Contract, OrgScoped

# a TOTP code (6 digits) or a recovery code (`xxxx-xxxx-xxxx-xxxx`); checked by auth, which names the field
CODE_MAX_LENGTH = 64


class MfaChallenge(BaseModel):
    """The first factor was accepted and a second one is due: send `challenge` with a code to
    `POST /auth/mfa/verify` within `expires_in` seconds. `enrolment_required`: the organization requires
    MFA and this user has none yet; `POST /auth/mfa/enrol` with the challenge first."""

    mfa_required: Literal[True] = True
    challenge: str
    expires_in: int
    enrolment_required: bool = False


class LoginReply(RootModel[TokenPair | MfaChallenge]):
    """What a sign-in answers: tokens, or the challenge that leads to them (the JSON is one or the other)."""


class SignedInUser(BaseModel):
    """Who signed in, in the seed's shape (`organization` is the organization's name), with ids beside it."""

    id: str
    name: str
    email: str
    role: str
    organization: str = Field(description="the organization's name")
    organization_id: str
    organization_slug: str


class SignedIn(TokenPair):
    """Tokens and who they belong to: `POST /auth/login`'s answer when no second factor is due."""

    user: SignedInUser


class LoginAnswer(RootModel[SignedIn | MfaChallenge]):
    """`POST /auth/login` over HTTP: tokens with the user, or the MFA challenge unchanged."""


class MfaVerifyRequest(Contract):
    challenge: str = Field(min_length=1, max_length=200)
    code: str = Field(min_length=1, max_length=CODE_MAX_LENGTH, description="a TOTP code or a recovery code")


class MfaVerifyCommand(MfaVerifyRequest):
    client_ip: str | None = None


class MfaEnrolRequest(Contract):
    """Enrol during sign-in (the org requires MFA, the user has none): the challenge is the credential."""

    challenge: str = Field(min_length=1, max_length=200)


class TotpEnrolment(BaseModel):
    """Shown once. Add the secret to an authenticator app (scan `qr_svg` or open `otpauth_uri`), then
    confirm with a first code; keep the recovery codes (each works once, instead of a code)."""

    secret: str
    otpauth_uri: str
    qr_svg: str = Field(description="the otpauth URI as a QR code, an SVG document")
    recovery_codes: list[str]


class MfaCode(Contract):
    code: str = Field(min_length=1, max_length=CODE_MAX_LENGTH, description="a TOTP code or a recovery code")


class UserMfaRequest(OrgScoped):
    """A signed-in user's own MFA operation (enrol, confirm, step up); `code` where one is needed."""

    code: str | None = Field(default=None, min_length=1, max_length=CODE_MAX_LENGTH)


class MfaStatus(BaseModel):
    enrolled: bool
    required_by_organization: bool
    recovery_codes_left: int


class MfaPolicy(Contract):
    required: bool = Field(
        default=False,
        description="every member must sign in with a second factor (enrolling at next sign-in)",
    )


class UpdateMfaPolicyRequest(OrgScoped):
    policy: MfaPolicy


class ResetUserMfaRequest(ById):
    """An admin removes a user's second factor (lost device and recovery codes); they enrol again."""
