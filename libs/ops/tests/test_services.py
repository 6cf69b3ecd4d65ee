"""The ops package names each service's schema without importing the service: checked here against the
services themselves (tests may import them) and against the dev stack's list of database services."""

from __future__ import annotations

import importlib

from browserfleet_devkit.devstack import DB_SERVICES
from browserfleet_ops.services import SERVICES


def test_every_database_service_and_its_schema() -> None:
    assert sorted(s.name for s in SERVICES) == sorted(DB_SERVICES)
    for service in SERVICES:
        models = importlib.import_module(f"{service.package}.models")
        metadata = next(
            v.metadata
            for v in vars(models).values()
            if hasattr(v, "metadata") and getattr(v.metadata, "schema", None)
        )
        assert metadata.schema == service.schema, service.name
        assert service.migrations_dir().is_dir()
        assert service.knows(service.head())
        assert not service.knows("no-such-revision")
