"""`hotreads` serves `GET /api/v1/tasks/{id}` (and `/admin/tasks/{id}`) without FastAPI's routing and
dependency solving: every answer must be the one FastAPI's own route gives, refusals included. Each case is
asked of a gateway with the hot path and of one without it, and the answers compared."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from browserfleet_gateway.app import create_app
from browserfleet_gateway.hotreads import HotReads
from browserfleet_gateway.settings import GatewaySettings
from fastapi import FastAPI
from nats.aio.client import Client as NatsClient

from .conftest import FakeServices, Signer, gateway_settings, serving

# what differs between two answers to the same request whichever path served it
_PER_CALL = {"x-request-id", "ratelimit-remaining", "ratelimit-reset"}


def _without_hot_path(app: FastAPI) -> FastAPI:
    app.user_middleware = [m for m in app.user_middleware if m.cls is not HotReads]
    return app


@contextlib.asynccontextmanager
async def _pair(settings: GatewaySettings, nc: NatsClient) -> AsyncIterator[tuple[Any, Any, list[str]]]:
    """A gateway with the hot path, one without, and the ids the hot one's calls relayed (`call_json`)."""
    hot_app = create_app(settings, nc=nc)
    async with (
        serving(hot_app) as hot,
        serving(_without_hot_path(create_app(settings, nc=nc))) as plain,
    ):
        relayed: list[str] = []
        rpc = hot_app.state.gateway.rpc
        call_json = rpc.call_json

        async def spy(endpoint: Any, request: Any, **kw: Any) -> bytes:
            relayed.append(request.task_id)
            return bytes(await call_json(endpoint, request, **kw))

        rpc.call_json = spy
        yield hot, plain, relayed


def _answer(resp: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    body = resp.json() if resp.content else None
    headers = {k: v for k, v in resp.headers.items() if k not in _PER_CALL}
    headers.pop("content-length", None)  # the same JSON, spaced by another serialiser
    return resp.status_code, body, headers


async def test_hot_read_answers_as_the_route_does(
    nats_url: str, gateway_nc: NatsClient, signer: Signer, services: FakeServices
) -> None:
    settings = gateway_settings(nats_url, rate_limit_per_second=1000, rate_limit_burst=1000)
    user = f"u-{uuid.uuid4().hex[:8]}"
    own = {"Authorization": f"Bearer {signer.token(sub=user, org='org-a', role='viewer')}"}
    async with _pair(settings, gateway_nc) as (hot, plain, relayed):
        created = await plain.post(
            "/api/v1/tasks",
            json={"goal": "g"},
            headers={"Authorization": f"Bearer {signer.token(sub=user, org='org-a')}"},
        )
        task_id = created.json()["id"]
        cases: list[tuple[str, str, dict[str, str]]] = [
            ("GET", f"/api/v1/tasks/{task_id}", own),
            ("GET", f"/admin/tasks/{task_id}", own),
            ("GET", f"/api/v1/tasks/{task_id}?x=1", own),
            ("GET", f"/api/v1/tasks/{task_id}", {"Authorization": f"Bearer {signer.token(org='org-b')}"}),
            ("GET", f"/api/v1/tasks/{uuid.uuid4()}", own),
            ("GET", "/api/v1/tasks/not-an-id", own),
            ("GET", f"/api/v1/tasks/{task_id}", {}),
            ("GET", f"/api/v1/tasks/{task_id}", {"Authorization": "Basic dTpw"}),
            ("GET", f"/api/v1/tasks/{task_id}", {"Authorization": "Bearer "}),
            ("GET", f"/api/v1/tasks/{task_id}", {"Authorization": "Bearer not.a.token"}),
            ("GET", f"/api/v1/tasks/{task_id}", {"Authorization": f"bearer {signer.token(sub=user)}"}),
            ("GET", f"/api/v1/tasks/{'x' * 65}", own),
            ("GET", f"/api/v1/tasks/{'x' * 64}", own),
            ("HEAD", f"/api/v1/tasks/{task_id}", own),
            ("GET", f"/api/v1/tasks/{task_id}/", own),
        ]
        for method, path, headers in cases:
            expected = _answer(await plain.request(method, path, headers=headers))
            got = _answer(await hot.request(method, path, headers=headers))
            assert got == expected, (method, path)
        last = await hot.get(f"/api/v1/tasks/{task_id}", headers=own)
        assert last.status_code == 200 and last.headers["ratelimit-limit"] == "1000"
    # the hot path answered the GETs it should, and left the 422 (too long an id), HEAD and `/` to FastAPI
    assert task_id in relayed and "x" * 64 in relayed and "x" * 65 not in relayed
    # both paths, the query string, org-b's refusal, a lowercase "bearer", the last one
    assert relayed.count(task_id) == 6


async def test_hot_read_rate_limit_is_the_routes(
    nats_url: str, gateway_nc: NatsClient, signer: Signer, services: FakeServices
) -> None:
    settings = gateway_settings(nats_url, rate_limit_per_second=0.01, rate_limit_burst=2)
    async with _pair(settings, gateway_nc) as (hot, plain, relayed):
        answers = {}
        for name, client in (("hot", hot), ("plain", plain)):
            token = signer.token(sub=f"u-{uuid.uuid4().hex[:8]}", org="org-a")
            got = [
                await client.get(
                    f"/api/v1/tasks/{uuid.uuid4()}", headers={"Authorization": f"Bearer {token}"}
                )
                for _ in range(3)
            ]
            answers[name] = [_answer(r) for r in got]
            assert [r.status_code for r in got] == [404, 404, 429]
            assert got[2].headers["retry-after"] and got[2].headers["ratelimit-limit"]
    assert answers["hot"] == answers["plain"]
    assert len(relayed) == 2


def test_no_other_get_route_sits_beside_a_hot_read() -> None:
    """`HotReads` answers every `GET <prefix><one segment>`: a static route declared beside a hot read (say
    `/api/v1/tasks/stats`) would be served as a task id. The app's own routes must leave that space to it."""
    from browserfleet_gateway import hotreads
    from fastapi.routing import APIRoute

    app = create_app(gateway_settings("nats://127.0.0.1:1"))  # routes only: nothing connects
    assert hotreads.READS, "no hot read declared"
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        assert route.methods is not None, route.path  # FastAPI gives every APIRoute its methods
        if "GET" not in route.methods:
            continue
        head = route.path.rpartition("/")[0]
        read = hotreads.READS.get(head + "/")
        if read is not None:
            assert route.path == read.route.path, (
                f"{route.path} is shadowed by the hot read {read.route.path}"
            )
