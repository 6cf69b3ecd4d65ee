"""`browserfleet-gateway [run]`: serve the HTTP API with uvicorn on GATEWAY_HOST:GATEWAY_PORT."""

from __future__ import annotations

import json
import sys

from browserfleet_core import observability
from browserfleet_core.runner import service_main

from .settings import GatewaySettings


async def _run() -> None:
    import uvicorn

    from .app import create_app

    settings = GatewaySettings()
    observability.setup(settings)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        http="httptools",
        access_log=False,  # per-request lines cost more than they tell; /metrics has the counts
        log_config=None,  # keep browserfleet_core's logging setup
        lifespan="on",
        proxy_headers=False,
        server_header=False,
    )
    # service_main already runs us on uvloop; serve() uses the running loop.
    await uvicorn.Server(config).serve()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["openapi"]:
        from .app import openapi

        print(json.dumps(openapi(), indent=2, sort_keys=True))
        return
    service_main("gateway", run=_run, argv=args)


if __name__ == "__main__":
    main()
