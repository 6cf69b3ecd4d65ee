"""One platform for the seed-API walk and the SDK/CLI tests, started as `make dev` starts it (devstack: the
authenticated NATS, every service as its own process, one real Chromium worker), and two stand-ins for
third parties on 127.0.0.1: a customer's website (one page with a price on it) and a customer's webhook
receiver (the walking skeleton's)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from browserfleet_devkit.devstack import Platform
from browserfleet_devkit.sites import OnePageSite

from ..admin import admin_login
from ..e2e.sites import WebhookReceiver
from ..platforms import NO_RATE_LIMITS, own_platform

PAGE = b"""<!doctype html><html><head><title>Seed shop</title></head><body>
<h1 id="price">42.00</h1><a id="next" href="/slow">next</a></body></html>"""


@dataclass
class Running:
    platform: Platform
    site: OnePageSite
    receiver: WebhookReceiver
    lines: list[str]

    @property
    def url(self) -> str:
        return self.platform.gateway_url

    def admin_login(self) -> dict[str, Any]:
        return admin_login(self.platform)


@pytest.fixture(scope="session")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    lines: list[str] = []
    with (
        OnePageSite(PAGE) as site,
        WebhookReceiver() as receiver,
        own_platform(
            "bf_seed",
            tmp_path_factory.mktemp("seed-home"),
            output=lines.append,
            # a registered pool is routed to within a second (the walk's HTTP worker has its own pool)
            env={**NO_RATE_LIMITS, "POOL_REGISTRY_SECONDS": "1"},
        ) as platform,
    ):
        yield Running(platform, site, receiver, lines)
