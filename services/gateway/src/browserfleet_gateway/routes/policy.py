"""The organization's policy: what every task of the org is held to (allowed domains, evaluate, proxy)."""

from __future__ import annotations

from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import OrgPolicy, UpdateOrgPolicyRequest
from browserfleet_core.errors import Invalid
from fastapi import APIRouter

from .. import intake
from ..deps import CurrentPrincipal, RpcDep, SensitiveAdmin
from ..errors import API_ERRORS
from ..replies import rpc_route

router = APIRouter(prefix="/api/v1/org/policy", tags=["organization"], responses=API_ERRORS)


rpc_route(
    router,
    "GET",
    "",
    endpoints.Auth.GET_ORG_POLICY,
    CurrentPrincipal,
    name="get_org_policy",
    summary="The organization's policy: allowed domains, evaluate, proxy",
)


@router.put(
    "",
    response_model=OrgPolicy,
    summary="Replace the organization's policy (admins); workers apply it to the next tasks within seconds",
)
async def put_org_policy(body: OrgPolicy, principal: SensitiveAdmin, rpc: RpcDep) -> OrgPolicy:
    # like a task's references: every secret the proxy names must exist in the vault
    missing = await intake.missing_secrets(rpc, principal.actor, body.secret_names())
    if missing:
        raise Invalid(f"proxy: unknown secret(s): {', '.join(missing)}", field="proxy", code="unknown_secret")
    request = UpdateOrgPolicyRequest(actor=principal.actor, policy=body)
    return await rpc.call(endpoints.Auth.UPDATE_ORG_POLICY, request)
