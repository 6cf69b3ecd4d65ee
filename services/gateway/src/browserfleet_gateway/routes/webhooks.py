"""Webhooks: the organization's endpoints (admins), their delivery log, replays and secrets; the event catalog;
and the organization's secret for tasks' `webhook_url` (its settings, admins)."""

from __future__ import annotations

from typing import Annotated

from browserfleet_contracts import endpoints
from browserfleet_contracts.catalog import EventTypeInfo, event_types
from browserfleet_contracts.webhooks import DeliveryStatus, ListDeliveriesRequest, WebhookDeliveryPublic
from fastapi import APIRouter, Depends, Query
from starlette import status as http

from ..deps import Principal, RpcDep, access, public
from ..errors import API_ERRORS
from ..replies import rpc_route

WebhooksAdmin = Annotated[Principal, Depends(access("admin", scope="webhooks:admin"))]
# reading or replacing a signing secret: a recent second factor too, when one applies to the admin
WebhookSecretsAdmin = Annotated[Principal, Depends(access("admin", scope="webhooks:admin", recent_mfa=True))]

admin_router = APIRouter(prefix="/admin/webhooks", tags=["admin"], responses=API_ERRORS)
api_router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"], responses=API_ERRORS)
org_router = APIRouter(prefix="/api/v1/org/webhook-secret", tags=["organization"], responses=API_ERRORS)


@api_router.get(
    "/event-types",
    response_model=list[EventTypeInfo],
    response_model_by_alias=True,
    summary="The event catalog: every event type with the JSON Schema of its data",
    dependencies=[Depends(public("the event catalog is documentation, like the OpenAPI document"))],
)
async def list_event_types() -> list[EventTypeInfo]:
    return event_types()


rpc_route(
    admin_router,
    "POST",
    "",
    endpoints.Webhooks.CREATE_ENDPOINT,
    WebhooksAdmin,
    body="endpoint",
    status_code=http.HTTP_201_CREATED,
    name="create_webhook",
    summary="Add a webhook endpoint; the signing secret is shown in this answer",
)
rpc_route(
    admin_router,
    "GET",
    "",
    endpoints.Webhooks.LIST_ENDPOINTS,
    WebhooksAdmin,
    name="list_webhooks",
    summary="List webhook endpoints",
)


# the literal paths come before /{endpoint_id}, which would otherwise take "deliveries" and "replays" as ids
@admin_router.get(
    "/deliveries", response_model=list[WebhookDeliveryPublic], summary="The webhook delivery log"
)
async def list_deliveries(
    principal: WebhooksAdmin,
    rpc: RpcDep,
    endpoint_id: Annotated[str | None, Query(max_length=64)] = None,
    status: DeliveryStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[WebhookDeliveryPublic]:
    request = ListDeliveriesRequest(
        actor=principal.actor, endpoint_id=endpoint_id, status=status, limit=limit
    )
    return await rpc.call(endpoints.Webhooks.LIST_DELIVERIES, request)


rpc_route(
    admin_router,
    "GET",
    "/deliveries/{delivery_id}",
    endpoints.Webhooks.GET_DELIVERY,
    WebhooksAdmin,
    name="get_delivery",
    summary="One delivery: its payload and every attempt (time, status, latency, response excerpt)",
)
rpc_route(
    admin_router,
    "POST",
    "/deliveries/{delivery_id}/replay",
    endpoints.Webhooks.REPLAY_DELIVERY,
    WebhooksAdmin,
    status_code=http.HTTP_202_ACCEPTED,
    name="replay_delivery",
    summary="Send a delivery again now with a fresh retry schedule (409 if its endpoint is disabled)",
)
rpc_route(
    admin_router,
    "GET",
    "/replays/{job_id}",
    endpoints.Webhooks.GET_REPLAY_JOB,
    WebhooksAdmin,
    name="get_replay_job",
    summary="A replay job's progress",
)
rpc_route(
    admin_router,
    "GET",
    "/{endpoint_id}",
    endpoints.Webhooks.GET_ENDPOINT,
    WebhooksAdmin,
    name="get_webhook",
    summary="One endpoint with its health (circuit, failing since, why it was disabled)",
)
rpc_route(
    admin_router,
    "PATCH",
    "/{endpoint_id}",
    endpoints.Webhooks.UPDATE_ENDPOINT,
    WebhooksAdmin,
    body="endpoint",
    name="update_webhook",
    summary="Change an endpoint's url, events, description or enabled flag",
)
rpc_route(
    admin_router,
    "DELETE",
    "/{endpoint_id}",
    endpoints.Webhooks.DELETE_ENDPOINT,
    WebhooksAdmin,
    status_code=http.HTTP_204_NO_CONTENT,
    name="delete_webhook",
    summary="Remove a webhook endpoint",
)
rpc_route(
    admin_router,
    "GET",
    "/{endpoint_id}/secret",
    endpoints.Webhooks.GET_SECRET,
    WebhookSecretsAdmin,
    name="get_webhook_secret",
    summary="An endpoint's secret",
)
rpc_route(
    admin_router,
    "POST",
    "/{endpoint_id}/secret/rotate",
    endpoints.Webhooks.ROTATE_SECRET,
    WebhookSecretsAdmin,
    name="rotate_webhook_secret",
    summary="A new signing secret; the previous one keeps signing until the overlap ends (409 inside one)",
)
rpc_route(
    admin_router,
    "POST",
    "/{endpoint_id}/test",
    endpoints.Webhooks.SEND_TEST,
    WebhooksAdmin,
    status_code=http.HTTP_202_ACCEPTED,
    name="send_test_event",
    summary="Send a webhook.test event to this endpoint (409 if it is disabled)",
)
rpc_route(
    admin_router,
    "POST",
    "/{endpoint_id}/replay",
    endpoints.Webhooks.REPLAY_FAILED,
    WebhooksAdmin,
    body="replay",
    status_code=http.HTTP_202_ACCEPTED,
    name="replay_failed",
    summary="Replay every failed delivery of this endpoint since a time, as a background job",
)
rpc_route(
    org_router,
    "GET",
    "",
    endpoints.Webhooks.GET_ORG_SECRET,
    WebhookSecretsAdmin,
    name="get_org_webhook_secret",
    summary="The organization's secret signing deliveries to tasks' webhook_url (admins)",
)
rpc_route(
    org_router,
    "POST",
    "/rotate",
    endpoints.Webhooks.ROTATE_ORG_SECRET,
    WebhookSecretsAdmin,
    name="rotate_org_webhook_secret",
    summary="A new organization secret for tasks' webhook_url, with an overlap (409 inside one)",
)

# one router for routes/__init__.py: the three above keep their own prefixes and tags
router = APIRouter()
router.include_router(api_router)
router.include_router(admin_router)
router.include_router(org_router)
