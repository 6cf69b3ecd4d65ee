"""The second factor (TOTP): completing a sign-in's challenge, enrolment (during sign-in when the
organization requires it, or any time after), step-up for sensitive actions, the organization's
requirement, and an admin's reset of a user's factor."""

from __future__ import annotations

from typing import Annotated

from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import TokenPair
from browserfleet_contracts.mfa import (
    MfaCode,
    MfaEnrolRequest,
    MfaVerifyCommand,
    MfaVerifyRequest,
    TotpEnrolment,
    UserMfaRequest,
)
from fastapi import APIRouter, Depends, Request
from starlette import status as http

from ..deps import CurrentPrincipal, Principal, RpcDep, SensitiveAdmin, access, client_ip, public
from ..errors import API_ERRORS
from ..replies import rpc_route

router = APIRouter(tags=["mfa"], responses=API_ERRORS)

# the caller's own second factor: every role, viewers too (it changes nothing of the organization's)
Self = Annotated[Principal, Depends(access("viewer", self_service=True, note="the caller's own factor"))]


@router.post(
    "/auth/mfa/verify",
    response_model=TokenPair,
    summary="Complete a sign-in's MFA challenge with a TOTP or recovery code",
    dependencies=[Depends(public("the challenge from the first factor is the credential", login=True))],
)
async def verify(body: MfaVerifyRequest, request: Request, rpc: RpcDep) -> TokenPair:
    command = MfaVerifyCommand(**body.model_dump(), client_ip=client_ip(request))
    return await rpc.call(endpoints.Auth.MFA_VERIFY, command)


@router.post(
    "/auth/mfa/enrol",
    response_model=TotpEnrolment,
    summary="Enrol during sign-in (the organization requires MFA): secret, QR and recovery codes, shown once",
    dependencies=[Depends(public("the challenge from the first factor is the credential", login=True))],
)
async def enrol_with_challenge(body: MfaEnrolRequest, rpc: RpcDep) -> TotpEnrolment:
    return await rpc.call(endpoints.Auth.MFA_ENROL_CHALLENGE, body)


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


@router.post(
    "/auth/mfa/totp/confirm",
    response_model=TokenPair,
    summary="Confirm enrolment with a first code; answers tokens that carry the second factor",
)
async def confirm(body: MfaCode, principal: Self, rpc: RpcDep) -> TokenPair:
    return await rpc.call(endpoints.Auth.MFA_CONFIRM, UserMfaRequest(actor=principal.actor, code=body.code))


@router.post(
    "/auth/mfa/step-up",
    response_model=TokenPair,
    summary="A fresh second factor for sensitive actions: new tokens",
)
async def step_up(body: MfaCode, principal: Self, rpc: RpcDep) -> TokenPair:
    return await rpc.call(endpoints.Auth.MFA_STEP_UP, UserMfaRequest(actor=principal.actor, code=body.code))


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
