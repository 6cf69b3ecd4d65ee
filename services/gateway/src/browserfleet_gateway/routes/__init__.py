"""HTTP routes, one module per resource. Each route authenticates, builds the contract request with the
caller's `Actor`, makes one or two RPC calls and returns the contract reply; no business logic lives here.
Every route declares who may call it (`access(...)` or `public(...)`; a test walks the route table).

Route modules never import each other: what two of them share lives outside this package (`intake` for task
submission and schedules, `artifacts` for which artifact a download serves, `deps` for who is calling,
`replies` for a change answered 204 and `rpc_route`, the declaration of a route that is one call and nothing
else).
"""

from __future__ import annotations

from fastapi import APIRouter

from . import (
    api_keys,
    artifacts,
    audit,
    auth,
    credentials,
    events,
    health,
    live,
    logs,
    mfa,
    organizations,
    policy,
    profiles,
    schedules,
    sso,
    tasks,
    users,
    webhooks,
    worker_results,
    worker_socket,
    workers,
)

ROUTERS: tuple[APIRouter, ...] = (
    auth.router,
    sso.router,
    mfa.router,
    tasks.api_router,
    artifacts.router,
    tasks.admin_router,
    logs.router,
    events.router,
    live.router,
    schedules.router,
    credentials.router,
    credentials.admin_router,
    profiles.router,
    webhooks.router,
    workers.admin_router,
    workers.router,
    worker_results.router,
    worker_socket.router,
    api_keys.router,
    users.router,
    audit.router,
    policy.router,
    organizations.router,
    health.router,
)
