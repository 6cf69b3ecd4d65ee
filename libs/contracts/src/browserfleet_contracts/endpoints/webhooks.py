"""The webhooks service's subjects (`svc.webhooks.*`)."""

from __future__ import annotations

from ..bus import WEBHOOKS
from ..common import Ack, ById, OrgScoped
from ..webhooks import (
    CreateEndpointRequest,
    ListDeliveriesRequest,
    ReplayFailedRequest,
    ReplayJobPublic,
    UpdateEndpointRequest,
    WebhookDeliveryDetail,
    WebhookDeliveryPublic,
    WebhookEndpointPublic,
    WebhookSecretPublic,
)
from .base import Service, _ep


class Webhooks(Service, queue=WEBHOOKS):
    CREATE_ENDPOINT = _ep(
        CreateEndpointRequest,
        WebhookEndpointPublic,
        "Register an endpoint (admins only). The reply carries the signing secret, this once.",
    )
    LIST_ENDPOINTS = _ep(
        OrgScoped,
        list[WebhookEndpointPublic],
        "The org's webhook endpoints (without their secrets), the implicit `task_url` ones included.",
    )
    GET_ENDPOINT = _ep(
        ById,
        WebhookEndpointPublic,
        "One endpoint with its health: failing since, circuit state, why it was disabled.",
    )
    UPDATE_ENDPOINT = _ep(
        UpdateEndpointRequest,
        WebhookEndpointPublic,
        "Change an endpoint's URL, events, description or enabled flag (admins); a new URL is checked like a "
        "new endpoint's. A `task_url` endpoint takes only description and enabled.",
    )
    DELETE_ENDPOINT = _ep(
        ById,
        Ack,
        "Remove a webhook endpoint and its pending deliveries.",
    )
    GET_SECRET = _ep(
        ById,
        WebhookSecretPublic,
        "An endpoint's current signing secret (admins).",
    )
    ROTATE_SECRET = _ep(
        ById,
        WebhookSecretPublic,
        "A new signing secret for an endpoint (admins); until the overlap ends deliveries carry both "
        "signatures. 409 while a previous rotation's overlap lasts.",
    )
    GET_ORG_SECRET = _ep(
        OrgScoped,
        WebhookSecretPublic,
        "The organization's secret signing deliveries to tasks' `webhook_url` (admins; made on first use).",
    )
    ROTATE_ORG_SECRET = _ep(
        OrgScoped,
        WebhookSecretPublic,
        "A new organization secret for tasks' `webhook_url` (admins), with the same overlap and 409.",
    )
    SEND_TEST = _ep(
        ById,
        WebhookDeliveryPublic,
        "Queue a `webhook.test` event to one endpoint (admins), delivered like any other; 409 if disabled.",
    )
    LIST_DELIVERIES = _ep(
        ListDeliveriesRequest,
        list[WebhookDeliveryPublic],
        "Recent deliveries, optionally of one endpoint or in one status.",
    )
    GET_DELIVERY = _ep(
        ById,
        WebhookDeliveryDetail,
        "One delivery with its payload and every attempt (time, status, latency, response excerpt).",
    )
    REPLAY_DELIVERY = _ep(
        ById,
        WebhookDeliveryPublic,
        "Send a delivery again now, whatever its status, with a fresh retry schedule (admins); "
        "409 if its endpoint is disabled.",
    )
    REPLAY_FAILED = _ep(
        ReplayFailedRequest,
        ReplayJobPublic,
        "Start a background job replaying every failed or dead delivery of an endpoint since a time "
        "(admins); 409 if the endpoint is disabled.",
    )
    GET_REPLAY_JOB = _ep(
        ById,
        ReplayJobPublic,
        "A replay job's progress.",
    )
