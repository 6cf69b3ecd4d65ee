"""Generates the committed contracts: `proto/asyncapi.yaml` (from every service's FastStream broker) and
`proto/openapi.json` (from the gateway). `make contracts` writes them; a test fails when they drift.

Brokers and the gateway app are built without connecting anywhere, so this runs on any machine.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

from browserfleet_core.settings import ServiceSettings

from .devstack import DB_SERVICES, module_of

PLACEHOLDER_ENV: dict[str, Any] = {
    "nats_url": "nats://nats:4222",
    "database_url": "postgresql://browserfleet@postgres/browserfleet",
}
ROOT = Path(__file__).resolve().parents[4]


def _settings_for(package: str) -> ServiceSettings:
    module = importlib.import_module(f"{package}.settings")
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if (
            issubclass(cls, ServiceSettings)
            and cls is not ServiceSettings
            and cls.__module__ == module.__name__
        ):
            extra: dict[str, Any] = {}
            if "vault_master_key" in cls.model_fields:
                extra["vault_master_key"] = "A" * 43 + "="  # shape only; never used to encrypt
            return cls.model_validate({**PLACEHOLDER_ENV, **extra})
    raise LookupError(f"{package}.settings defines no ServiceSettings subclass")


def _broker(service: str) -> Any:
    package = module_of(service)
    app = importlib.import_module(f"{package}.app")
    return app.create_broker(_settings_for(package))


def asyncapi_yaml() -> str:
    from faststream.specification import AsyncAPI

    brokers = [_broker(s) for s in DB_SERVICES]
    spec = AsyncAPI(
        *brokers,
        title="browserfleet",
        version="0.1.0",
        description="Request/reply subjects (svc.<service>.<op>) and JetStream consumers of every service.",
    )
    import yaml

    # FastStream emits channels in registration order, which import order can change: sort for stable diffs
    document = yaml.safe_load(spec.to_specification().to_yaml())
    return str(yaml.safe_dump(document, sort_keys=True, allow_unicode=True, width=100))


def openapi_json() -> str:
    gateway = importlib.import_module("browserfleet_gateway.app")
    app = gateway.create_app(_settings_for("browserfleet_gateway"))
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


def expected() -> dict[Path, str]:
    return {
        ROOT / "proto" / "asyncapi.yaml": asyncapi_yaml(),
        ROOT / "proto" / "openapi.json": openapi_json(),
    }


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    drift = []
    for path, content in expected().items():
        current = path.read_text() if path.exists() else None
        if current != content:
            drift.append(path)
            if command == "write":
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
    for path in drift:
        print(f"{'wrote' if command == 'write' else 'drifted'}: {path.relative_to(ROOT)}")
    return 1 if drift and command != "write" else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
