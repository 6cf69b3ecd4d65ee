"""The model's side of an agent task: the tools it may call, and the client for any OpenAI-compatible
chat-completions endpoint, behind a circuit breaker (`browserfleet_core.breaker`, one per endpoint host,
shared by every task of the worker): after `LLMClient.breaker_failures` calls in a row that time out, cannot
connect or get a 5xx or 429, tasks fail at once with the cause ("circuit open ... retry in N s") instead of each
waiting out LLM_TIMEOUT_SECONDS on a browser slot; after the cool-down one call probes the endpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from browserfleet_core.breaker import CircuitBreaker, CircuitOpen, breakers


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


_INDEX = {"type": "integer", "description": "element index from the observation"}
TOOLS = [
    _tool("navigate", "Open a URL", {"url": {"type": "string"}}, ["url"]),
    _tool("click", "Click an element", {"index": _INDEX}, ["index"]),
    _tool(
        "type",
        "Type text into an input (replacing its value); submit presses Enter afterwards",
        {"index": _INDEX, "text": {"type": "string"}, "submit": {"type": "boolean"}},
        ["index", "text"],
    ),
    _tool(
        "select",
        "Choose an option of a <select>",
        {"index": _INDEX, "value": {"type": "string"}},
        ["index", "value"],
    ),
    _tool(
        "scroll", "Scroll the page", {"direction": {"type": "string", "enum": ["up", "down"]}}, ["direction"]
    ),
    _tool(
        "extract",
        "Record a named value you read on the page",
        {"name": {"type": "string"}, "value": {}},
        ["name", "value"],
    ),
    _tool("wait", "Wait for the page to change", {"seconds": {"type": "number", "maximum": 10}}, ["seconds"]),
    _tool(
        "done", "The goal is reached", {"result": {"description": "the answer or data asked for"}}, ["result"]
    ),
    _tool("fail", "The goal cannot be reached", {"reason": {"type": "string"}}, ["reason"]),
]


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0

    def cost(self, input_price: float, output_price: float) -> float:
        return round((self.prompt_tokens * input_price + self.completion_tokens * output_price) / 1e6, 6)


class LLMError(Exception):
    pass


@dataclass
class LLMClient:
    """POST {base_url}/chat/completions with tools; nothing provider-specific."""

    base_url: str
    model: str
    api_key: str | None
    timeout_seconds: float = 60.0
    sent: list[dict[str, Any]] = field(default_factory=list)  # every request body, for audits and tests
    # the endpoint's breaker: by default the process's, named llm:<host>, so every task of the worker shares it
    breaker: CircuitBreaker | None = None
    breaker_failures: int = 5
    breaker_cooldown_seconds: float = 30.0

    def __post_init__(self) -> None:
        self.host = urlsplit(self.base_url).netloc or self.base_url
        if self.breaker is None:
            self.breaker = breakers.get(
                f"llm:{self.host}",
                failures=self.breaker_failures,
                cooldown_seconds=self.breaker_cooldown_seconds,
            )

    def unavailable(self) -> str | None:
        """Why a task should not start on this endpoint now (its circuit is open), without taking a probe's
        turn; None when a call may go."""
        assert self.breaker is not None
        wait = self.breaker.retry_after()
        if wait <= 0:
            return None
        return self._open_message(
            CircuitOpen(self.breaker.name, wait, self.breaker.snapshot().consecutive_failures)
        )

    def _open_message(self, exc: CircuitOpen) -> str:
        return (
            f"LLM endpoint {self.host} is unavailable: its last {exc.failures} call(s) failed, so tasks fail "
            f"fast without calling it; retry in {exc.retry_after} s"
        )

    async def complete(
        self, messages: list[dict[str, Any]], usage: Usage, model: str | None = None
    ) -> dict[str, Any]:
        breaker = self.breaker
        assert breaker is not None
        try:
            breaker.check()
        except CircuitOpen as exc:
            raise LLMError(self._open_message(exc)) from None
        try:
            message = await self._post(messages, usage, model)
        except _EndpointDown as exc:
            breaker.failure()
            raise LLMError(str(exc)) from None
        except LLMError:
            breaker.success()  # it answered, if not what we wanted: it is up
            raise
        except BaseException:
            breaker.release()  # cancelled: says nothing of the endpoint
            raise
        breaker.success()
        return message

    async def _post(self, messages: list[dict[str, Any]], usage: Usage, model: str | None) -> dict[str, Any]:
        body = {"model": model or self.model, "messages": messages, "tools": TOOLS, "tool_choice": "auto"}
        self.sent.append(json.loads(json.dumps(body)))
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            async with httpx.AsyncClient(timeout=self.timeout_seconds) as client:
                response = await client.post(f"{self.base_url}/chat/completions", json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise _EndpointDown(f"LLM endpoint unreachable: {type(exc).__name__}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise _EndpointDown(f"LLM endpoint answered HTTP {response.status_code}")
        if response.status_code >= 400:
            raise LLMError(f"LLM endpoint answered HTTP {response.status_code}")
        try:
            data = response.json()
            message: dict[str, Any] = data["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise LLMError("LLM endpoint answered something that is not a chat completion") from None
        u = data.get("usage") or {}
        usage.prompt_tokens += int(u.get("prompt_tokens") or 0)
        usage.completion_tokens += int(u.get("completion_tokens") or 0)
        usage.calls += 1
        return message


class _EndpointDown(LLMError):
    """A failure that counts against the endpoint's breaker: no answer in time, no connection, a 5xx or 429
    (a 4xx says the endpoint is up and refused this request)."""
