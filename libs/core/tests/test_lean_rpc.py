"""LeanResponder / LeanRpc on the real (embedded) NATS server: replies and errors reach `RpcClient.call`
exactly as from an `rpc_router()` subscriber (byte for byte: the same handler is served both ways and the
raw replies compared), the concurrency limit holds, `stop()` waits for the requests in hand, and the
Prometheus families FastStream fills are filled for lean subjects too.

WAIT_CAP only stops a hang; no test asserts on speed."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from browserfleet_contracts.endpoints import Endpoint
from browserfleet_core.errors import NotFound, ServiceError, Unavailable
from browserfleet_core.lean import LeanResponder, LeanRpc
from browserfleet_core.messaging import ERROR_HEADER, RpcClient, make_broker, rpc_router
from nats.aio.client import Client as NatsClient
from prometheus_client import REGISTRY
from pydantic import BaseModel, Field

WAIT_CAP = 30.0


class Nested(BaseModel):
    n: int


class EchoRequest(BaseModel):
    name: str = Field(min_length=1)
    count: int = 1
    nested: Nested | None = None


class EchoReply(BaseModel):
    greeting: str
    count: int
    tags: list[str] = []


def subject(op: str, reply: Any = EchoReply) -> Endpoint[EchoRequest, Any]:
    """A fresh endpoint of a test service, so tests never answer each other's requests."""
    return Endpoint("leantest", f"svc.leantest{secrets.token_hex(3)}.{op}", EchoRequest, reply)


async def echo(body: EchoRequest) -> EchoReply:
    if body.name == "missing":
        raise NotFound("no such name", field="name")
    if body.name == "boom":
        raise RuntimeError("secret internal detail")
    return EchoReply(greeting=f"hello {body.name}", count=body.count, tags=["a", "é"])


async def echo_list(body: EchoRequest) -> list[EchoReply]:
    return [EchoReply(greeting=body.name, count=i) for i in range(body.count)]


@pytest.fixture
async def serve(nc: NatsClient) -> AsyncIterator[Callable[..., Awaitable[LeanResponder]]]:
    started: list[LeanResponder] = []

    async def start(
        endpoint: Endpoint[EchoRequest, Any], handler: Callable[[Any], Awaitable[Any]], **kw: Any
    ) -> LeanResponder:
        kw.setdefault("app_name", "leantest")
        responder = LeanResponder(nc, endpoint, handler, **kw)
        await responder.start()
        await nc.flush()
        started.append(responder)
        return responder

    yield start
    for responder in started:
        await responder.stop()


async def test_reply_round_trips_through_rpc_client(nc: NatsClient, serve: Any) -> None:
    subj = subject("echo")
    await serve(subj, echo)
    reply = await RpcClient(nc).call(subj, EchoRequest(name="ada", count=3))
    assert reply == EchoReply(greeting="hello ada", count=3, tags=["a", "é"])


async def test_list_reply_round_trips(nc: NatsClient, serve: Any) -> None:
    subj = subject("list", list[EchoReply])
    await serve(subj, echo_list)
    reply = await RpcClient(nc).call_raw(subj, {"name": "x", "count": 2})
    assert reply == [EchoReply(greeting="x", count=0), EchoReply(greeting="x", count=1)]


async def test_service_error_arrives_as_itself(nc: NatsClient, serve: Any) -> None:
    subj = subject("echo")
    await serve(subj, echo)
    with pytest.raises(ServiceError) as caught:
        await RpcClient(nc).call(subj, EchoRequest(name="missing"))
    assert (caught.value.status, caught.value.code, caught.value.field) == (404, "not_found", "name")
    assert caught.value.message == "no such name"


async def test_malformed_request_is_422_naming_the_field(nc: NatsClient, serve: Any) -> None:
    subj = subject("echo")
    await serve(subj, echo)
    with pytest.raises(ServiceError) as caught:
        await RpcClient(nc).call_raw(subj, {"name": "ada", "nested": {"n": "many"}})
    assert (caught.value.status, caught.value.field) == (422, "nested.n")
    assert caught.value.message.startswith("nested.n: ")
    with pytest.raises(ServiceError) as caught:
        await RpcClient(nc).call_raw(subj, {"count": 1})
    assert (caught.value.status, caught.value.field) == (422, "name")


async def test_unexpected_exception_is_500_and_logged(
    nc: NatsClient, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    subj = subject("echo")
    await serve(subj, echo)
    with (
        caplog.at_level(logging.ERROR, logger="browserfleet_core.messaging"),
        pytest.raises(ServiceError) as caught,
    ):
        await RpcClient(nc).call(subj, EchoRequest(name="boom"))
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        500,
        "internal_error",
        "internal error",
    )
    assert "secret" not in caught.value.message
    assert any(r.exc_info and "secret internal detail" in str(r.exc_info[1]) for r in caplog.records)


async def test_replies_are_byte_identical_to_rpc_router(nats_url: str, nc: NatsClient, serve: Any) -> None:
    """The same handler under FastStream (make_broker + rpc_router) and lean: every reply, error replies
    included, carries the same bytes and the same `Bf-Error` header."""
    fs_subject, lean_subject = subject("fs"), subject("lean")
    broker = make_broker(nats_url, name="leantest-fs")
    router = rpc_router()

    @router.handle(fs_subject)
    async def fs_echo(body: EchoRequest) -> EchoReply:
        return await echo(body)

    broker.include_router(router)
    await broker.start()
    await broker.connection.flush()
    await serve(lean_subject, echo)
    try:
        payloads = [
            {"name": "ada", "count": 2},
            {"name": "missing"},
            {"name": "boom"},
            {"name": "ada", "nested": {"n": "many"}},
            {"count": "x"},
        ]
        for payload in payloads:
            data = json.dumps(payload).encode()
            via_fs = await nc.request(fs_subject.subject, data, timeout=WAIT_CAP)
            via_lean = await nc.request(lean_subject.subject, data, timeout=WAIT_CAP)
            assert via_lean.data == via_fs.data, payload
            fs_error = (via_fs.headers or {}).get(ERROR_HEADER)
            assert (via_lean.headers or {}).get(ERROR_HEADER) == fs_error, payload
            assert (via_lean.headers or {}).get("content-type") == "application/json"
    finally:
        await broker.stop()


async def test_concurrency_limit_is_respected(nc: NatsClient, serve: Any) -> None:
    subj = subject("slow")
    release = asyncio.Event()
    running = 0
    peak = 0

    async def slow(body: EchoRequest) -> EchoReply:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        return EchoReply(greeting=body.name, count=body.count)

    responder = await serve(subj, slow, max_concurrency=3)
    client = RpcClient(nc, timeout=WAIT_CAP)
    calls = [asyncio.create_task(client.call(subj, EchoRequest(name="x", count=i))) for i in range(8)]
    sub = responder._sub
    assert sub is not None
    # wait until every request has reached this process: without the limit all of them would now run
    for _ in range(int(WAIT_CAP / 0.01)):
        if sub.delivered == 8 and running >= 3:
            break
        await asyncio.sleep(0.01)
    for _ in range(20):
        await asyncio.sleep(0)
    assert (running, peak, responder.in_flight) == (3, 3, 3)
    release.set()
    replies = await asyncio.gather(*calls)
    assert sorted(r.count for r in replies) == list(range(8))
    assert peak == 3


async def test_stop_waits_for_requests_in_hand(nc: NatsClient) -> None:
    subj = subject("stop")
    release = asyncio.Event()
    entered = asyncio.Event()

    answered = False

    async def slow(body: EchoRequest) -> EchoReply:
        nonlocal answered
        entered.set()
        await release.wait()
        answered = True
        return EchoReply(greeting="done", count=1)

    responder = LeanResponder(nc, subj, slow)
    await responder.start()
    await nc.flush()
    client = RpcClient(nc, timeout=WAIT_CAP)
    call = asyncio.create_task(client.call(subj, EchoRequest(name="x")))
    async with asyncio.timeout(WAIT_CAP):
        await entered.wait()
    stopping = asyncio.create_task(responder.stop())
    # (a stop that did not wait would be done long before this; a slow machine can only hide that)
    done, _ = await asyncio.wait({stopping}, timeout=0.3)
    assert not done  # the request in hand is still running
    release.set()
    async with asyncio.timeout(WAIT_CAP):
        await stopping
        assert answered  # stop() returned only after the request in hand was done
        assert (await call).greeting == "done"
    assert responder.in_flight == 0
    with pytest.raises(Unavailable):  # nothing serves the subject any more
        await client.call(subj, EchoRequest(name="x"))


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_land_in_faststream_families(nc: NatsClient, serve: Any) -> None:
    subj = subject("metrics")
    await serve(subj, echo, app_name="leanmetrics")
    labels = {"app_name": "leanmetrics", "broker": "nats", "handler": subj.subject}
    client = RpcClient(nc)
    await client.call(subj, EchoRequest(name="ok"))
    with pytest.raises(ServiceError):
        await client.call(subj, EchoRequest(name="missing"))
    with pytest.raises(ServiceError):
        await client.call(subj, EchoRequest(name="boom"))
    processed = "faststream_received_processed_messages_total"
    assert sample("faststream_received_messages_total", **labels) == 3
    assert (
        sample(processed, **labels, status="acked") == 2
    )  # a ServiceError is an answer, as under FastStream
    assert sample(processed, **labels, status="error") == 1
    assert (
        sample(
            "faststream_received_processed_messages_exceptions_total", **labels, exception_type="RuntimeError"
        )
        == 1
    )
    assert sample("faststream_received_processed_messages_duration_seconds_count", **labels) == 3
    assert sample("faststream_received_messages_in_process", **labels) == 0


async def test_lean_rpc_serves_its_routes_and_documents_them(nc: NatsClient) -> None:
    subj = subject("echo")
    lean = LeanRpc(max_concurrency=2, app_name="leantest")
    lean.route(subj)(echo)
    await lean.start(nc)
    try:
        reply = await RpcClient(nc).call(subj, EchoRequest(name="ada"))
        assert reply.greeting == "hello ada"
    finally:
        await lean.stop()
    # documented exactly as the same route on an rpc_router() subscriber
    assert _asyncapi(lean.doc_router()) == _asyncapi(_rpc_declaration(subj))


def _rpc_declaration(subj: Endpoint[EchoRequest, Any]) -> Any:
    """The same endpoint declared by hand on a FastStream subscriber."""
    router = rpc_router()

    @router.subscriber(subj.subject, queue="leantest", title=subj.title)
    async def declared(body: EchoRequest) -> EchoReply:
        return await echo(body)

    return router


def _asyncapi(router: Any) -> dict[str, Any]:
    from faststream.nats import NatsBroker
    from faststream.specification import AsyncAPI

    broker = NatsBroker("nats://nowhere:4222")
    broker.include_router(router)
    spec = AsyncAPI(broker, title="t", version="0").to_specification().to_jsonable()
    assert isinstance(spec, dict)
    assert spec["channels"]  # something was declared
    return spec


async def test_tracing_path_answers(nc: NatsClient, serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With tracing on, each request runs in a consumer span joined to the caller's headers (the global
    provider here is OpenTelemetry's no-op one: this checks the path answers, not what is exported)."""
    from browserfleet_core import observability

    monkeypatch.setattr(observability, "_tracing_enabled", True)
    subj = subject("traced")
    await serve(subj, echo)
    assert (await RpcClient(nc).call(subj, EchoRequest(name="t"))).greeting == "hello t"
    with pytest.raises(ServiceError) as caught:
        await RpcClient(nc).call(subj, EchoRequest(name="missing"))
    assert caught.value.status == 404
