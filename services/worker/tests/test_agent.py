"""The agent runner: the loop, the tools and the browser are real; the model is a local stand-in."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.tasks import TaskSpec
from browserfleet_devkit.sites import QuietHandler
from browserfleet_devkit.testing import LoopbackHTTPServer
from browserfleet_worker.agent import AgentRunner
from browserfleet_worker.browser import BrowserHost
from browserfleet_worker.llm import LLMClient
from browserfleet_worker.netguard import Policy, parse_networks


class ScriptedModel(QuietHandler):
    """Stands in for a real LLM provider: an OpenAI-compatible `/v1/chat/completions` endpoint that answers
    from a scripted policy (log in, read the orders, visit the echo page, report) instead of a model.
    Every raw request body and Authorization header is recorded so a test can audit what a provider would
    have seen; a request without the expected bearer token is refused as a provider would (HTTP 401)."""

    recorded: list[bytes] = []
    authorizations: list[str | None] = []
    expected_auth = "Bearer sk-test"
    site = ""

    def do_POST(self) -> None:
        raw = self.read_body()
        type(self).recorded.append(raw)
        type(self).authorizations.append(self.headers.get("Authorization"))
        body = json.loads(raw)
        assert self.path == "/v1/chat/completions"
        if self.headers.get("Authorization") != type(self).expected_auth:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
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
        self.answer(200, json.dumps(reply).encode(), "application/json")

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
    ScriptedModel.authorizations = []
    ScriptedModel.expected_auth = "Bearer sk-test"
    ScriptedModel.site = site
    with LoopbackHTTPServer(ScriptedModel) as server:
        yield f"{server.url}/v1"


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


ORG_KEY = "sk-org-from-vault-7Qx2pLm"


async def test_agent_uses_the_org_llm_key_from_the_vault_and_never_shows_it(
    nats_url: str,
    browser: BrowserHost,
    site: str,
    model: str,
    password: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`agent.api_key_secret` names an org credential: the worker asks the vault (stood in on its real
    subject) for it with the task's other secrets, sends it as the bearer token instead of its own key, and
    the value appears nowhere: not in the prompts, the result, the logs, nor offered to the model."""
    import asyncio
    import logging

    import nats
    from browserfleet_contracts.tasks import TaskDispatch
    from browserfleet_contracts.vault import ReleaseRequest
    from browserfleet_worker.execution import execute
    from browserfleet_worker.presence import Identity
    from browserfleet_worker.runtime import WorkerRuntime
    from browserfleet_worker.settings import WorkerSettings
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from nats.aio.msg import Msg

    from .vault_stand import sealed_release

    caplog.set_level(logging.DEBUG)
    ScriptedModel.expected_auth = f"Bearer {ORG_KEY}"
    released: list[ReleaseRequest] = []
    nc = await nats.connect(nats_url)

    async def release(msg: Msg) -> None:  # stands in for the vault (another service)
        req = ReleaseRequest.model_validate_json(msg.data)
        released.append(req)
        values = {"PASSWORD": password, "ORG_LLM_KEY": ORG_KEY}
        await msg.respond(sealed_release(req, {n: values[n] for n in req.names}, "w-agent"))

    sub = await nc.subscribe(endpoints.Vault.RELEASE.subject, cb=release)
    settings = WorkerSettings(
        nats_url=nats_url,
        worker_key="sk_worker_agent",
        llm_base_url=model,
        llm_model="scripted-1",
        llm_api_key="sk-worker-own-key",  # the org's key wins over the worker's
        browser_allow_networks=["127.0.0.1/32"],
        trace_on_failure=False,
    )
    task = TaskDispatch(
        task_id="agent-org-key",
        org_id="org-1",
        attempt=1,
        priority="normal",
        timeout_seconds=60,
        spec=TaskSpec.model_validate(
            {
                "kind": "agent",
                "goal": "Log in as ada with {{ secrets.PASSWORD }} and report what the echo page shows",
                "agent": {"max_steps": 10, "api_key_secret": "ORG_LLM_KEY"},
            }
        ),
    )
    try:
        rt = WorkerRuntime.create(
            settings,
            nc,
            browser,
            Identity("sk_worker_agent", "w-agent", "default", X25519PrivateKey.generate()),
        )
        out = await asyncio.wait_for(execute(rt, task), 90)
    finally:
        await sub.unsubscribe()
        await nc.close()

    assert out.status == "completed", out.error_message
    assert [sorted(r.names) for r in released] == [["ORG_LLM_KEY", "PASSWORD"]]
    # every call to the provider carried the vault's value, never the worker's own key
    assert ScriptedModel.authorizations
    assert set(ScriptedModel.authorizations) == {f"Bearer {ORG_KEY}"}
    for raw in ScriptedModel.recorded:
        assert ORG_KEY.encode() not in raw
        assert b"ORG_LLM_KEY" not in raw  # not even offered to the model as a placeholder to type
    dumped = json.dumps(
        {"result": out.result, "error": out.error_message, "logs": [str(x) for x in out.logs]}
    )
    assert ORG_KEY not in dumped and password not in dumped
    assert ORG_KEY not in caplog.text


async def test_the_model_cannot_type_the_org_llm_key_into_a_page(
    browser: BrowserHost, site: str, model: str
) -> None:
    """A hostile page asking the model to type `{{ secrets.ORG_LLM_KEY }}` gets nothing: the key is not a
    typeable secret of the task (unless the task names it in `secrets` or the goal on purpose)."""
    spec = TaskSpec.model_validate(
        {"kind": "agent", "goal": "wander", "agent": {"max_steps": 1, "api_key_secret": "ORG_LLM_KEY"}}
    )
    runner = AgentRunner(spec, {"ORG_LLM_KEY": ORG_KEY}, llm=LLMClient(model, "m", ORG_KEY))
    async with browser.context(Policy(allowed_networks=parse_networks(["127.0.0.1/32"]))) as ctx:
        page = await ctx.new_page()
        await page.goto(f"{site}/login")
        await page.evaluate("() => document.querySelector('#user').setAttribute('data-bf-idx', '0')")
        said = await runner._act(page, "type", {"index": 0, "text": "{{ secrets.ORG_LLM_KEY }}"})
        assert said == "error: secret ORG_LLM_KEY was not released to this task"
        assert await page.input_value("#user") == ""
    named = TaskSpec.model_validate(
        {"kind": "agent", "goal": "g", "secrets": ["ORG_LLM_KEY"], "agent": {"api_key_secret": "ORG_LLM_KEY"}}
    )
    assert "ORG_LLM_KEY" in AgentRunner(named, {"ORG_LLM_KEY": ORG_KEY}, llm=runner.llm)._typeable


def test_the_org_llm_key_is_a_secret_the_task_names() -> None:
    spec = TaskSpec.model_validate(
        {
            "kind": "agent",
            "goal": "g",
            "agent": {"api_key_secret": "ORG_LLM_KEY", "start_url": "https://x.test/{{ secrets.TOKEN }}"},
        }
    )
    assert spec.secret_names() == {"ORG_LLM_KEY", "TOKEN"}
    with pytest.raises(ValueError, match="api_key_secret"):
        TaskSpec.model_validate({"kind": "agent", "goal": "g", "agent": {"api_key_secret": "not a name"}})
