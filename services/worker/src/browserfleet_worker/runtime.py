"""The worker's runtime object: what running a task needs (settings, NATS, the browser, the worker's identity,
its RPC client, the secret masks and the organizations' policies), built once at start."""

from __future__ import annotations

from dataclasses import dataclass

from browserfleet_core.messaging import RpcClient
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from .browser import BrowserHost
from .orgpolicy import OrgPolicies
from .presence import Identity
from .secret_values import MaskRegistry
from .settings import WorkerSettings


@dataclass
class WorkerRuntime:
    settings: WorkerSettings
    nc: NatsClient
    js: JetStreamContext
    browser: BrowserHost
    identity: Identity
    rpc: RpcClient
    masks: MaskRegistry
    org_policies: OrgPolicies

    @classmethod
    def create(
        cls, settings: WorkerSettings, nc: NatsClient, browser: BrowserHost, identity: Identity
    ) -> WorkerRuntime:
        rpc = RpcClient(nc, timeout=settings.rpc_timeout_seconds)
        return cls(
            settings=settings,
            nc=nc,
            js=nc.jetstream(),
            browser=browser,
            identity=identity,
            rpc=rpc,
            masks=MaskRegistry(),
            org_policies=OrgPolicies(rpc, identity.worker_key, ttl_seconds=settings.org_policy_cache_seconds),
        )
