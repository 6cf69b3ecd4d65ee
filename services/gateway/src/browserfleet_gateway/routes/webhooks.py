"""Webhooks: the organization's endpoints (admins), their delivery log, replays and secrets; the event catalog;
and the organization's secret for tasks' `webhook_url` (its settings, admins)."""

from __future__ import annotations

from typing import Annotated

from browserfleet_contracts import endpoints
from browserfleet_contracts.catalog import EventTypeInfo, event_types
from browserfleet_contracts.common import ById, OrgScoped
from browserfleet_contracts.webhooks import (
    CreateEndpointRequest,
    DeliveryStatus,
    ListDeliveriesRequest,
    ReplayFailedCreate,
    ReplayFailedRequest,
    ReplayJobPublic,
    UpdateEndpointRequest,
    WebhookDeliveryDetail,
    WebhookDeliveryPublic,
    WebhookEndpointCreate,
    WebhookEndpointPublic,
    WebhookEndpointUpdate,
    WebhookSecretPublic,
)
from fastapi import APIRouter, Depends, Query, Response
from starlette import status as http

from ..deps import IdPath, Principal, RpcDep, access, public
from ..errors import API_ERRORS
from ..replies import no_content, no_content_route

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


@admin_router.post(
    "",
    response_model=WebhookEndpointPublic,
    status_code=http.HTTP_201_CREATED,
    summary="Add a webhook endpoint; the signing secret is shown in this answer",
)
async def create_webhook(
    body: WebhookEndpointCreate, principal: WebhooksAdmin, rpc: RpcDep
) -> WebhookEndpointPublic:
    request = CreateEndpointRequest(actor=principal.actor, endpoint=body)
    return await rpc.call(endpoints.Webhooks.CREATE_ENDPOINT, request)


@admin_router.get("", response_model=list[WebhookEndpointPublic], summary="List webhook endpoints")
async def list_webhooks(principal: WebhooksAdmin, rpc: RpcDep) -> list[WebhookEndpointPublic]:
    return await rpc.call(endpoints.Webhooks.LIST_ENDPOINTS, OrgScoped(actor=principal.actor))


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


@admin_router.get(
    "/deliveries/{delivery_id}",
    response_model=WebhookDeliveryDetail,
    summary="One delivery: its payload and every attempt (time, status, latency, response excerpt)",
)
async def get_delivery(delivery_id: IdPath, principal: WebhooksAdmin, rpc: RpcDep) -> WebhookDeliveryDetail:
    return await rpc.call(endpoints.Webhooks.GET_DELIVERY, ById(actor=principal.actor, id=delivery_id))


@admin_router.post(
    "/deliveries/{delivery_id}/replay",
    response_model=WebhookDeliveryPublic,
    status_code=http.HTTP_202_ACCEPTED,
    summary="Send a delivery again now with a fresh retry schedule (409 if its endpoint is disabled)",
)
async def replay_delivery(
    delivery_id: IdPath, principal: WebhooksAdmin, rpc: RpcDep
) -> WebhookDeliveryPublic:
    return await rpc.call(endpoints.Webhooks.REPLAY_DELIVERY, ById(actor=principal.actor, id=delivery_id))


@admin_router.get("/replays/{job_id}", response_model=ReplayJobPublic, summary="A replay job's progress")
async def get_replay_job(job_id: IdPath, principal: WebhooksAdmin, rpc: RpcDep) -> ReplayJobPublic:
    return await rpc.call(endpoints.Webhooks.GET_REPLAY_JOB, ById(actor=principal.actor, id=job_id))


@admin_router.get(
    "/{endpoint_id}",
    response_model=WebhookEndpointPublic,
    summary="One endpoint with its health (circuit, failing since, why it was disabled)",
)
async def get_webhook(endpoint_id: IdPath, principal: WebhooksAdmin, rpc: RpcDep) -> WebhookEndpointPublic:
    return await rpc.call(endpoints.Webhooks.GET_ENDPOINT, ById(actor=principal.actor, id=endpoint_id))


@admin_router.patch(
    "/{endpoint_id}",
    response_model=WebhookEndpointPublic,
    summary="Change an endpoint's url, events, description or enabled flag",
)
async def update_webhook(
    endpoint_id: IdPath, body: WebhookEndpointUpdate, principal: WebhooksAdmin, rpc: RpcDep
) -> WebhookEndpointPublic:
    request = UpdateEndpointRequest(actor=principal.actor, id=endpoint_id, endpoint=body)
    return await rpc.call(endpoints.Webhooks.UPDATE_ENDPOINT, request)


@no_content_route(admin_router, "/{endpoint_id}", summary="Remove a webhook endpoint")
async def delete_webhook(endpoint_id: IdPath, principal: WebhooksAdmin, rpc: RpcDep) -> Response:
    return await no_content(
        rpc, endpoints.Webhooks.DELETE_ENDPOINT, ById(actor=principal.actor, id=endpoint_id)
    )


@admin_router.get("/{endpoint_id}/secret", response_model=WebhookSecretPublic, summary="An endpoint's secret")
async def get_webhook_secret(
    endpoint_id: IdPath, principal: WebhookSecretsAdmin, rpc: RpcDep
) -> WebhookSecretPublic:
    return await rpc.call(endpoints.Webhooks.GET_SECRET, ById(actor=principal.actor, id=endpoint_id))


@admin_router.post(
    "/{endpoint_id}/secret/rotate",
    response_model=WebhookSecretPublic,
    summary="A new signing secret; the previous one keeps signing until the overlap ends (409 inside one)",
)
async def rotate_webhook_secret(
    endpoint_id: IdPath, principal: WebhookSecretsAdmin, rpc: RpcDep
) -> WebhookSecretPublic:
    return await rpc.call(endpoints.Webhooks.ROTATE_SECRET, ById(actor=principal.actor, id=endpoint_id))


@admin_router.post(
    "/{endpoint_id}/test",
    response_model=WebhookDeliveryPublic,
    status_code=http.HTTP_202_ACCEPTED,
    summary="Send a webhook.test event to this endpoint (409 if it is disabled)",
)
async def send_test_event(
    endpoint_id: IdPath, principal: WebhooksAdmin, rpc: RpcDep
) -> WebhookDeliveryPublic:
    return await rpc.call(endpoints.Webhooks.SEND_TEST, ById(actor=principal.actor, id=endpoint_id))


@admin_router.post(
    "/{endpoint_id}/replay",
    response_model=ReplayJobPublic,
    status_code=http.HTTP_202_ACCEPTED,
    summary="Replay every failed delivery of this endpoint since a time, as a background job",
)
async def replay_failed(
    endpoint_id: IdPath, body: ReplayFailedCreate, principal: WebhooksAdmin, rpc: RpcDep
) -> ReplayJobPublic:
    request = ReplayFailedRequest(actor=principal.actor, endpoint_id=endpoint_id, replay=body)
    return await rpc.call(endpoints.Webhooks.REPLAY_FAILED, request)


@org_router.get(
    "",
    response_model=WebhookSecretPublic,
    summary="The organization's secret signing deliveries to tasks' webhook_url (admins)",
)
async def get_org_webhook_secret(principal: WebhookSecretsAdmin, rpc: RpcDep) -> WebhookSecretPublic:
    return await rpc.call(endpoints.Webhooks.GET_ORG_SECRET, OrgScoped(actor=principal.actor))


@org_router.post(
    "/rotate",
    response_model=WebhookSecretPublic,
    summary="A new organization secret for tasks' webhook_url, with an overlap (409 inside one)",
)
async def rotate_org_webhook_secret(principal: WebhookSecretsAdmin, rpc: RpcDep) -> WebhookSecretPublic:
    return await rpc.call(endpoints.Webhooks.ROTATE_ORG_SECRET, OrgScoped(actor=principal.actor))


# one router for routes/__init__.py: the three above keep their own prefixes and tags
router = APIRouter()
router.include_router(api_router)
router.include_router(admin_router)
router.include_router(org_router)
