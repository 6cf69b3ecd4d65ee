"""Every request/reply subject, declared once with its request and reply types.

An `Endpoint` pairs a `svc.<service>.<op>` subject with the model it takes and the type it answers, and the
queue group of the service that serves it. Callers (`RpcClient.call`), servers (`rpc_router().handle`,
`LeanRpc.route`), the AsyncAPI document and the bus permission lists all read these declarations, so a caller
cannot send a subject the wrong body or read its reply as the wrong type, and nothing spells a subject twice.

The declarations live in one module per service (`endpoints.auth`, `endpoints.scheduler`, ...); this package
re-exports them, so `endpoints.Webhooks.CREATE_ENDPOINT` reads the same wherever it was declared.
"""

from __future__ import annotations

from typing import Any, Final

from .auth import Auth
from .base import Endpoint, Rep, Req
from .scheduler import Scheduler
from .vault import Vault
from .webhooks import Webhooks
from .workers import Workers

__all__ = [
    "SERVICES",
    "Auth",
    "Endpoint",
    "Rep",
    "Req",
    "Scheduler",
    "Vault",
    "Webhooks",
    "Workers",
    "all_endpoints",
    "by_subject",
]

SERVICES: Final = (Auth, Scheduler, Vault, Webhooks, Workers)


def all_endpoints() -> tuple[Endpoint[Any, Any], ...]:
    """Every declared endpoint, in declaration order."""
    return tuple(
        value for service in SERVICES for value in vars(service).values() if isinstance(value, Endpoint)
    )


def by_subject(subject: str) -> Endpoint[Any, Any]:
    """The endpoint declared for `subject` (KeyError if none)."""
    for endpoint in all_endpoints():
        if endpoint.subject == subject:
            return endpoint
    raise KeyError(subject)
