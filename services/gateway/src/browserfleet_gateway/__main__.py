"""`browserfleet-gateway [run]`: serve the HTTP API with uvicorn on GATEWAY_HOST:GATEWAY_PORT."""

from __future__ import annotations

import json
import logging
import re
import sys

from browserfleet_contracts.worker_socket import MAX_SOCKET_FRAME_BYTES
from browserfleet_core import observability
from browserfleet_core.runner import service_main, settle_heap

from .httpguard import guarded
from .settings import GatewaySettings


class _RedactTickets(logging.Filter):
    """uvicorn logs each WebSocket's path with its query: a ticket must not reach the logs (single use and
    short-lived as it is)."""

    _ticket = re.compile(r"(ticket=)[^&\s\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(
                self._ticket.sub(r"\1<redacted>", a) if isinstance(a, str) else a for a in record.args
            )
        return True


async def _run() -> None:
    import uvicorn

    from .app import create_app, prebuild

    settings = GatewaySettings()
    observability.setup(settings)
    logging.getLogger("uvicorn.error").addFilter(_RedactTickets())
    app = create_app(settings)
    prebuild(app)  # the route table and middleware stack FastAPI would build at the first request, frozen too
    settle_heap()  # the app's routes, models and OpenAPI schemas too
    config = uvicorn.Config(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        http=guarded(
            settings.http_limits, settings.trusted_proxies
        ),  # httptools with head/body limits and timeouts
        access_log=False,  # per-request lines cost more than they tell; /metrics has the counts
        log_config=None,  # keep browserfleet_core's logging setup
        lifespan="on",
        proxy_headers=False,
        server_header=False,
        # nothing larger than a client message may be buffered (the event stream and the live view check
        # their own limit); a remote worker's frames (an artifact chunk, a result) are larger
        ws_max_size=max(settings.ws_max_message_bytes, MAX_SOCKET_FRAME_BYTES),
        ws_ping_interval=settings.ws_ping_interval_seconds,
        ws_ping_timeout=settings.ws_ping_interval_seconds,
        ws_per_message_deflate=settings.ws_per_message_deflate,
    )
    # service_main already runs us on uvloop; serve() uses the running loop.
    await uvicorn.Server(config).serve()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["openapi"]:
        from .app import openapi

        print(json.dumps(openapi(), indent=2, sort_keys=True))
        return
    service_main("gateway", run=_run, argv=args, preload=("uvicorn", "browserfleet_gateway.app"))


if __name__ == "__main__":
    main()
