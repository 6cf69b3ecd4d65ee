"""Wiring: settings -> Database, AuthService, NATS broker with the auth handlers."""

from __future__ import annotations

from dataclasses import dataclass

from browserfleet_core.db import Database
from browserfleet_core.messaging import make_broker
from faststream.nats import NatsBroker

from .handlers import AuthDeps, create_router
from .service import AuthService
from .settings import AuthSettings

SCHEMA = "auth"
# Only ever used to describe the handlers (AsyncAPI): nothing connects to it.
_DOC_NATS_URL = "nats://127.0.0.1:4222"


@dataclass
class AuthApp:
    settings: AuthSettings
    broker: NatsBroker
    db: Database | None
    service: AuthService


def build(settings: AuthSettings) -> AuthApp:
    """Everything the service needs, connected to nothing yet: the broker connects on `start()`,
    the database on first query."""
    db = (
        Database(settings.database_url, SCHEMA, pool_size=settings.db_pool_size)
        if settings.database_url
        else None
    )
    service = AuthService(
        access_token_ttl_seconds=settings.access_token_ttl_seconds,
        refresh_token_ttl_seconds=settings.refresh_token_ttl_seconds,
    )
    broker = make_broker(settings.nats_url, name=settings.service_name)
    broker.include_router(create_router(AuthDeps(service=service, db=db)))
    return AuthApp(settings=settings, broker=broker, db=db, service=service)


def create_broker(settings: AuthSettings) -> NatsBroker:
    return build(settings).broker


def asyncapi_broker() -> NatsBroker:
    """The broker with every handler registered, for `make contracts`; needs no server and no env."""
    return create_broker(AuthSettings(nats_url=_DOC_NATS_URL, database_url=None))
