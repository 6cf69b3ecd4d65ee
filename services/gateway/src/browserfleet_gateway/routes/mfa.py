"""The second factor (TOTP): completing a sign-in's challenge, enrolment (during sign-in when the
organization requires it, or any time after), step-up for sensitive actions, the organization's
requirement, and an admin's reset of a user's factor."""

from __future__ import annotations

from typing import Annotated

from browserfleet_contracts import endpoints
from browserfleet_contracts.mfa import MfaCode, MfaVerifyRequest
from fastapi import APIRouter, Depends
from starlette import status as http

from ..deps import CurrentPrincipal, Principal, SensitiveAdmin, access, public
from ..errors import API_ERRORS
from ..replies import relay_route, rpc_route

router = APIRouter(tags=["mfa"], responses=API_ERRORS)

# the caller's own second factor: every role, viewers too (it changes nothing of the organization's)
Self = Annotated[Principal, Depends(access("viewer", self_service=True, note="the caller's own factor"))]
_CHALLENGE = public("the challenge from the first factor is the credential", login=True)


relay_route(
    router,
    "POST",
    "/auth/mfa/verify",
    endpoints.Auth.MFA_VERIFY,
    _CHALLENGE,
    body=MfaVerifyRequest,
    name="verify",
    summary="Complete a sign-in's MFA challenge with a TOTP or recovery code",
)
relay_route(
    router,
    "POST",
    "/auth/mfa/enrol",
    endpoints.Auth.MFA_ENROL_CHALLENGE,
    _CHALLENGE,
    name="enrol_with_challenge",
    summary="Enrol during sign-in (the organization requires MFA): secret, QR and recovery codes, shown once",
)
rpc_route(
    router,
    "GET",
    "/auth/mfa",
    endpoints.Auth.MFA_STATUS,
    CurrentPrincipal,
    name="status",
    summary="The caller's second factor",
)
rpc_route(
    router,
    "POST",
    "/auth/mfa/totp",
    endpoints.Auth.MFA_ENROL,
    Self,
    name="enrol",
    summary="Start TOTP enrolment: secret, otpauth URI, QR (SVG) and recovery codes, shown once",
)
rpc_route(
    router,
    "POST",
    "/auth/mfa/totp/confirm",
    endpoints.Auth.MFA_CONFIRM,
    Self,
    body=MfaCode,
    name="confirm",
    summary="Confirm enrolment with a first code; answers tokens that carry the second factor",
)
rpc_route(
    router,
    "POST",
    "/auth/mfa/step-up",
    endpoints.Auth.MFA_STEP_UP,
    Self,
    body=MfaCode,
    name="step_up",
    summary="A fresh second factor for sensitive actions: new tokens",
)
rpc_route(
    router,
    "GET",
    "/admin/mfa-policy",
    endpoints.Auth.GET_MFA_POLICY,
    CurrentPrincipal,
    name="get_policy",
    summary="Whether the organization requires MFA",
)
rpc_route(
    router,
    "PUT",
    "/admin/mfa-policy",
    endpoints.Auth.UPDATE_MFA_POLICY,
    SensitiveAdmin,
    body="policy",
    name="put_policy",
    summary="Require MFA for every member (members without it enrol at their next sign-in)",
)
rpc_route(
    router,
    "DELETE",
    "/admin/users/{user_id}/mfa",
    endpoints.Auth.RESET_USER_MFA,
    SensitiveAdmin,
    status_code=http.HTTP_204_NO_CONTENT,
    name="reset_user",
    summary="Remove a user's second factor (lost device); their sessions end and they enrol again",
)
