"""The agent runner: the loop, the tools and the browser are real; the model is a local stand-in."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from browserfleet_contracts.tasks import TaskSpec
from browserfleet_worker.agent import AgentRunner, LLMClient
from browserfleet_worker.browser import BrowserHost
from browserfleet_worker.netguard import Policy, parse_networks


class ScriptedModel(BaseHTTPRequestHandler):
    """Stands in for a real LLM provider: an OpenAI-compatible `/v1/chat/completions` endpoint that answers
    from a scripted policy (log in, read the orders, visit the echo page, report) instead of a model.
    Every raw request body is recorded so a test can audit what a provider would have seen."""

    recorded: list[bytes] = []
    site = ""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).recorded.append(raw)
        body = json.loads(raw)
        assert self.path == "/v1/chat/completions"
        assert self.headers.get("Authorization") == "Bearer sk-test"
        name, args = self.decide(body["messages"][-1]["content"], body["messages"])
        reply = {
            "id": "cmpl-1",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": f"call_{len(self.recorded)}",
                                "type": "function",
                                "function": {"name": name, "arguments": json.dumps(args)},
                            }
                        ],
                    },
                }
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def decide(self, observation: str, messages: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        url = re.search(r"URL: (\S+)", observation)
        here = url.group(1) if url else ""

        def index(marker: str) -> int | None:
            m = re.search(rf"\[(\d+)\] [^\n]*{re.escape(marker)}", observation)
            return int(m.group(1)) if m else None

        if "/login" in here:
            user = index("id=user")
            if user is not None and 'value="ada"' not in observation:
                return "type", {"index": user, "text": "ada"}
            if "value=(filled)" not in observation:
                return "type", {"index": index("id=password"), "text": "{{ secrets.PASSWORD }}"}
            return "click", {"index": index("id=go")}
        if "/orders" in here:
            return "navigate", {"url": f"{self.site}/echo?q={{{{ secrets.PASSWORD }}}}"}
        if "/echo" in here:
            echoed = re.search(r"You typed: (.+?)(?: Elements| Text|$)", observation)
            return "done", {
                "result": {"echoed": echoed.group(1).strip() if echoed else None, "logged_in": True}
            }
        return "navigate", {"url": f"{self.site}/login"}


@pytest.fixture
def model(site: str) -> Iterator[str]:
    ScriptedModel.recorded = []
    ScriptedModel.site = site
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedModel)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


async def test_agent_logs_in_with_a_placeholder_and_never_shows_the_secret(
    browser: BrowserHost, site: str, model: str, password: str
) -> None:
    spec = TaskSpec.model_validate(
        {
            "kind": "agent",
            "goal": "Log in to the orders site as ada with {{ secrets.PASSWORD }} and report what the echo page shows",
            "agent": {"max_steps": 10},
            "result_schema": {"type": "object", "required": ["echoed", "logged_in"]},
        }
    )
    policy = Policy(allowed_networks=parse_networks(["127.0.0.1/32"]))
    llm = LLMClient(model, "scripted-1", "sk-test")
    async with browser.context(policy) as ctx:
        runner = AgentRunner(
            spec, {"PASSWORD": password}, llm=llm, timeout_seconds=60, policy=policy, prices=(2.0, 8.0)
        )
        out = await runner.run(ctx)

    assert out.status == "completed", out.error_message
    # the page printed the password; the model saw (and reported) only the placeholder, the result masks it
    assert out.result["result"] == {"echoed": "{{ secrets.PASSWORD }}", "logged_in": True}
    usage = out.result["usage"]
    assert usage["llm_calls"] == len(ScriptedModel.recorded) >= 5
    assert usage["prompt_tokens"] == 100 * usage["llm_calls"]
    assert usage["cost_usd"] == pytest.approx((100 * 2.0 + 10 * 8.0) * usage["llm_calls"] / 1e6)
    # the recorded conversation: no prompt ever contained the secret, in any encoding
    from urllib.parse import quote, quote_plus

    for raw in ScriptedModel.recorded:
        for form in (password, quote(password, safe=""), quote_plus(password)):
            assert form.encode() not in raw
            assert json.dumps(form)[1:-1].encode() not in raw
    assert any(b"You typed: {{ secrets.PASSWORD }}" in raw for raw in ScriptedModel.recorded)
    assert json.dumps(out.result).find(password) == -1


async def test_agent_stops_at_max_steps_and_reports_a_dead_endpoint(
    browser: BrowserHost, site: str, model: str
) -> None:
    spec = TaskSpec.model_validate({"kind": "agent", "goal": "wander", "agent": {"max_steps": 1}})
    async with browser.context(Policy(allowed_networks=parse_networks(["127.0.0.1/32"]))) as ctx:
        out = await AgentRunner(spec, {}, llm=LLMClient(model, "m", "sk-test"), timeout_seconds=30).run(ctx)
    assert (out.status, out.error_message) == ("failed", "the agent did not finish within 1 steps")

    async with browser.context() as ctx:
        dead = await AgentRunner(
            spec, {}, llm=LLMClient("http://127.0.0.1:1/v1", "m", None), timeout_seconds=30
        ).run(ctx)
    assert (dead.status, dead.error_message) == ("failed", "LLM endpoint unreachable: ConnectError")
