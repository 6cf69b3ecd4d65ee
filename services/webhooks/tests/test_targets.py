"""Private targets are refused at registration and at delivery unless an operator allows them."""

from __future__ import annotations

import pytest
from browserfleet_contracts.common import Actor
from browserfleet_contracts.webhooks import WebhookEndpointCreate
from browserfleet_core.db import Database, to_driver_url
from browserfleet_core.errors import Forbidden, Invalid
from browserfleet_core.outbox import OutboxRelay
from browserfleet_devkit.testing import rolled_back_session
from browserfleet_webhooks import registry, targets
from browserfleet_webhooks.crypto import SecretBox
from browserfleet_webhooks.dispatcher import Dispatcher
from browserfleet_webhooks.models import outbox
from browserfleet_webhooks.repository import Claimed
from browserfleet_webhooks.settings import WebhooksSettings
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

ADMIN = Actor(org_id="org-targets", user_id="u1", role="admin")
PRIVATE_URLS = [
    "http://127.0.0.1:9/hook",
    "http://localhost/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.1.2.3/hook",
    "http://192.168.0.10/hook",
    "http://100.64.0.1/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://0.0.0.0/hook",
]


@pytest.fixture
async def engine(settings: WebhooksSettings) -> AsyncEngine:
    assert settings.database_url
    return create_async_engine(to_driver_url(settings.database_url))


@pytest.mark.parametrize("url", PRIVATE_URLS)
async def test_check_refuses_private_addresses(url: str) -> None:
    with pytest.raises(targets.TargetRefused, match="non-public"):
        await targets.check(url, allow_private=False)
    # the operator's switch lets them through (tests, the embedded dev stack)
    assert (await targets.check(url, allow_private=True)).address is None


async def test_check_pins_public_literal_address() -> None:
    target = await targets.check("https://93.184.216.34/hook", allow_private=False)
    assert target.address == "93.184.216.34"


async def test_check_refuses_unresolvable_host() -> None:
    with pytest.raises(targets.TargetRefused, match="does not resolve"):
        await targets.check("http://no-such-host.invalid/hook", allow_private=False)


async def test_registration_refuses_private_target(engine: AsyncEngine, settings: WebhooksSettings) -> None:
    box = SecretBox.from_settings(settings)
    async with rolled_back_session(engine) as session:
        for url in ("http://127.0.0.1:8080/hook", "http://169.254.169.254/"):
            with pytest.raises(Invalid) as exc:
                await registry.create_endpoint(
                    session,
                    box,
                    ADMIN,
                    WebhookEndpointCreate.model_validate({"url": url}),
                    allow_private=False,
                    circuit_failures=3,
                )
            assert exc.value.field == "endpoint.url"
            assert "non-public" in exc.value.message
        assert await registry.list_endpoints(session, ADMIN, circuit_failures=3) == []


async def test_registration_requires_admin(engine: AsyncEngine, settings: WebhooksSettings) -> None:
    box = SecretBox.from_settings(settings)
    async with rolled_back_session(engine) as session:
        for role in ("user", "viewer"):
            with pytest.raises(Forbidden):
                await registry.create_endpoint(
                    session,
                    box,
                    Actor(org_id="org-targets", user_id="u2", role=role),
                    WebhookEndpointCreate.model_validate({"url": "http://127.0.0.1:9/hook"}),
                    allow_private=True,
                    circuit_failures=3,
                )


async def test_delivery_time_refuses_private_target(settings: WebhooksSettings) -> None:
    """An endpoint registered while allowed (or whose DNS changed since) is still not called."""
    strict = settings.model_copy(update={"webhook_allow_private_targets": False})
    assert settings.database_url
    db = Database(settings.database_url, "webhooks")
    dispatcher = Dispatcher(db, strict, SecretBox.from_settings(strict), OutboxRelay(db, outbox))
    try:
        claimed = Claimed(
            id="d1", event_id="e1", attempt=1, cycle_attempt=1, payload=b"{}", endpoint_id="ep1",
            org_id="org-targets", kind="endpoint", url="http://127.0.0.1:9/hook",
        )  # fmt: skip
        answer = await dispatcher._send(claimed, ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
        assert answer.status_code is None
        assert answer.latency_ms is None
        assert answer.error is not None
        assert answer.error.startswith("refused:")
    finally:
        await dispatcher.stop()
        await db.dispose()
