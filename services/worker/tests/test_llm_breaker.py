"""The LLM endpoint's circuit breaker in the agent runner: real Chromium and the real loop; the LLM provider is
a local stand-in (`Provider`). An endpoint that hangs or answers 5xx opens the circuit after `failures` such
calls; then agent tasks fail at once with the cause, without calling it or loading a page; after the
cool-down one task probes it and, answered, closes it. The breaker's clock is the test's."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Literal

import pytest
from browserfleet_contracts.tasks import TaskSpec
from browserfleet_core.breaker import CircuitBreaker, breakers
from browserfleet_core.health import install, installed
from browserfleet_devkit.sites import QuietHandler
from browserfleet_devkit.testing import LoopbackHTTPServer
from browserfleet_worker.agent import AgentRunner
from browserfleet_worker.app import worker_health
from browserfleet_worker.browser import BrowserHost
from browserfleet_worker.llm import LLMClient
from browserfleet_worker.netguard import Policy, parse_networks
from browserfleet_worker.settings import WorkerSettings
from prometheus_client import REGISTRY, generate_latest

Mode = Literal["hang", "error", "refuse", "ok"]


class Provider(QuietHandler):
    """Stands in for an LLM provider's OpenAI-compatible endpoint: it hangs (until the test ends), answers
    503, answers 401, or answers a `done` tool call, as the test sets `mode`. It also serves GET /start, the
    agent's start page, counting the page loads."""

    mode: Mode = "ok"
    completions = 0
    page_loads = 0
    release = threading.Event()

    def do_GET(self) -> None:
        if self.path != "/start":  # the browser's own /favicon.ico
            self.answer(404, b"", "text/plain")
            return
        type(self).page_loads += 1
        self.answer(200, b"<title>start</title><p>start page</p>", "text/html")

    def do_POST(self) -> None:
        self.read_body()
        type(self).completions += 1
        mode = type(self).mode
        if mode == "hang":
            type(self).release.wait(30)
            return
        if mode in ("error", "refuse"):
            self.answer(503 if mode == "error" else 401, b"{}", "application/json")
            return
        call = {"id": "c1", "type": "function", "function": {"name": "done", "arguments": '{"result": "ok"}'}}
        reply = {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]}}]
        }
        self.answer(200, json.dumps(reply).encode(), "application/json")


@pytest.fixture
def provider() -> Iterator[str]:
    Provider.mode, Provider.completions, Provider.page_loads = "ok", 0, 0
    Provider.release = threading.Event()
    with LoopbackHTTPServer(Provider) as server:
        try:
            yield server.url
        finally:
            Provider.release.set()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_an_open_llm_circuit_fails_agent_tasks_fast_with_the_cause(
    browser: BrowserHost, provider: str
) -> None:
    host = provider.removeprefix("http://")
    clock = Clock()
    breaker = CircuitBreaker(f"llm:{host}", failures=2, cooldown_seconds=30, clock=clock)
    llm = LLMClient(f"{provider}/v1", "m", "sk-test", timeout_seconds=0.5, breaker=breaker)
    spec = TaskSpec.model_validate(
        {"kind": "agent", "goal": "say ok", "agent": {"max_steps": 3, "start_url": f"{provider}/start"}}
    )
    policy = Policy(allowed_networks=parse_networks(["127.0.0.1/32"]))

    async def run() -> tuple[str, str | None]:
        async with browser.context(policy) as ctx:
            out = await AgentRunner(spec, {}, llm=llm, timeout_seconds=60, policy=policy).run(ctx)
        return out.status, out.error_message

    # a 401 is an answer: the endpoint is up, the circuit stays closed
    Provider.mode = "refuse"
    for _ in range(2):
        assert await run() == ("failed", "LLM endpoint answered HTTP 401")
    assert breaker.state == "closed"

    Provider.mode = "hang"
    assert await run() == ("failed", "LLM endpoint unreachable: ReadTimeout")
    Provider.mode = "error"
    assert await run() == ("failed", "LLM endpoint answered HTTP 503")
    assert breaker.state == "open" and (Provider.completions, Provider.page_loads) == (4, 4)

    # open: the task fails at once with the cause; no call, no page load
    status, error = await run()
    assert status == "failed"
    assert error == (
        f"LLM endpoint {host} is unavailable: its last 2 call(s) failed, so tasks fail fast without calling "
        "it; retry in 30 s"
    )
    assert (Provider.completions, Provider.page_loads) == (4, 4)
    metrics = generate_latest(REGISTRY).decode()
    assert f'browserfleet_circuit_breaker_state{{breaker="llm:{host}"}} 2.0' in metrics
    # and in the worker's health (the process's breakers, where an LLMClient's own is by default)
    before = installed()
    breakers.replace(breaker)
    try:
        health = worker_health(WorkerSettings(nats_url="nats://unused.invalid:4222"), browser)
        check = (await health.evaluate()).checks["breakers"]
        assert (check.status, check.detail) == ("degraded", f"open: llm:{host}")
    finally:
        breakers.replace(CircuitBreaker(breaker.name))  # a closed one: no other test sees this one open
        if before is not None:
            install(before)

    # after the cool-down one task probes the endpoint; a failed probe opens it again
    clock.t += 30
    assert await run() == ("failed", "LLM endpoint answered HTTP 503")
    assert breaker.state == "open" and Provider.completions == 5
    assert (await run())[1] == error.replace("last 2", "last 3")
    # the endpoint is back: the next probe closes the circuit
    Provider.mode = "ok"
    clock.t += 30
    assert await run() == ("completed", None)
    assert breaker.state == "closed" and Provider.completions == 6


def test_every_client_of_one_endpoint_shares_its_breaker() -> None:
    one = LLMClient("http://llm.invalid:8000/v1", "m", "k1")
    two = LLMClient("http://llm.invalid:8000/v1", "other-model", "k2")
    other = LLMClient("http://elsewhere.invalid/v1", "m", None)
    assert one.breaker is two.breaker and one.breaker is not other.breaker
    assert one.breaker is not None and one.breaker.name == "llm:llm.invalid:8000"
