"""The agent runner: an LLM loop over Playwright against any OpenAI-compatible chat-completions endpoint.

observe (URL, title, indexed interactive elements, visible text) → ask the model for one tool call →
act → repeat, until `done`/`fail`, max steps, or the task's timeout.

Secrets reach the model only as placeholders (`{{ secrets.NAME }}`): the model types the placeholder, the
runner substitutes the value when the action runs, and any secret value seen on the page is turned back
into its placeholder before the page text goes to the model.

The model's tools and the endpoint's client (behind a circuit breaker) are in llm.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any, Literal

from browserfleet_contracts.secret_refs import SECRET_REF, secret_refs
from browserfleet_contracts.tasks import TaskLogLine, TaskSpec
from playwright.async_api import BrowserContext, Page
from playwright.async_api import Error as PlaywrightError

from .artifact_guard import withhold
from .browser import task_page
from .llm import LLMClient, LLMError, Usage
from .netguard import Policy
from .secret_forms import SecretScanner
from .secret_values import Masker, SecretUnavailable, Substitution, render, variants
from .steps import Artifact, StepsOutcome, schema_errors
from .steps.outcome import where

log = logging.getLogger(__name__)

MAX_ELEMENTS = 150
MAX_TEXT_CHARS = 4_000
ACTION_TIMEOUT_MS = 10_000
# set on an element the agent typed a secret into: screenshots mask it (indices change every turn)
MASK_ATTR = "data-bf-masked"

SYSTEM_PROMPT = """You operate a web browser to achieve the user's goal.
Each turn you get an observation: the URL, the title, the interactive elements as `[index] description`,
and the visible text. Answer with exactly one tool call. Use element indices from the latest observation.
Secrets appear only as placeholders like {{ secrets.NAME }}; type the placeholder itself, never guess a value.
Call `done` with the result when the goal is reached, or `fail` with the reason when it cannot be."""


_OBSERVE_JS = """(max) => {
  const sel = 'a[href], button, input, select, textarea, [role=button], [role=link], [role=checkbox],'
            + ' [role=tab], [role=menuitem], [onclick], [contenteditable=true]';
  document.querySelectorAll('[data-bf-idx]').forEach(e => e.removeAttribute('data-bf-idx'));
  const out = [];
  for (const el of document.querySelectorAll(sel)) {
    if (out.length >= max) break;
    const r = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    if (r.width === 0 || r.height === 0 || style.visibility === 'hidden' || style.display === 'none') continue;
    if (el.type === 'hidden') continue;
    el.setAttribute('data-bf-idx', String(out.length));
    const label = (el.getAttribute('aria-label') || el.getAttribute('placeholder') || el.innerText
                   || el.getAttribute('title') || el.getAttribute('alt') || '').trim().replace(/\\s+/g, ' ');
    const parts = [el.tagName.toLowerCase()];
    for (const a of ['type', 'name', 'id', 'href', 'role']) {
      const v = el.getAttribute(a); if (v) parts.push(`${a}=${v.slice(0, 80)}`);
    }
    if (label) parts.push(JSON.stringify(label.slice(0, 80)));
    if ((el.tagName === 'INPUT' || el.tagName === 'TEXTAREA') && el.type !== 'password' && el.value)
      parts.push(`value=${JSON.stringify(el.value.slice(0, 80))}`);
    if (el.type === 'password' && el.value) parts.push('value=(filled)');
    if (el.tagName === 'SELECT')
      parts.push('options=' + JSON.stringify(Array.from(el.options).slice(0, 20).map(o => o.value)));
    out.push(`[${out.length}] ` + parts.join(' '));
  }
  return out;
}"""


def placeholder(name: str) -> str:
    return "{{ secrets." + name + " }}"


class Placeholders(Substitution):
    """Turns secret values back into `{{ secrets.NAME }}` (also URL-encoded forms), longest first."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__((v, placeholder(name)) for name, value in values.items() for v in variants(value))

    def deep(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {k: self.deep(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.deep(v) for v in obj]
        return obj


class AgentRunner:
    def __init__(
        self,
        spec: TaskSpec,
        secrets: Mapping[str, str] | None,
        *,
        llm: LLMClient,
        timeout_seconds: float | None = None,
        policy: Policy | None = None,
        prices: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        self.spec = spec
        self._secrets = dict(secrets or {})
        self._mask = Masker(self._secrets.values())
        self._scanner = SecretScanner(self._secrets)
        self._placeholders = Placeholders(self._secrets)
        # what the model may type: every released secret but the org's LLM key (masked and turned back into
        # its placeholder like the rest, but never typed into a page unless the task names it on purpose)
        self._typeable = {n: v for n, v in self._secrets.items() if n not in _hidden_from_model(spec)}
        self.llm = llm
        self.timeout_seconds = timeout_seconds
        self.policy = policy
        self.prices = prices
        self.options = spec.agent
        self.max_steps = spec.agent.max_steps if spec.agent else 25
        self.extracted: dict[str, Any] = {}
        self.artifacts: list[Artifact] = []
        self.logs: list[TaskLogLine] = []
        self.usage = Usage()
        self.answer: Any = None
        self.index = 0
        self._page: Page | None = None

    async def run(self, context: BrowserContext) -> StepsOutcome:
        started = time.monotonic()
        down = self.llm.unavailable()
        if down is not None:  # an open circuit costs the task no page load, no screenshot, no wait
            self._log("error", down)
            return StepsOutcome(
                status="failed",
                result=await self.partial_result(),
                error_message=down,
                error_step=0,
                artifacts=[],
                logs=self.logs,
                execution_time_seconds=round(time.monotonic() - started, 3),
            )
        error: str | None = None
        timed_out = False
        self._page = await task_page(context)
        try:
            async with asyncio.timeout(self.timeout_seconds):
                error = await self._loop(self._page)
        except TimeoutError:
            error = f"timed out after {self.timeout_seconds:g} s"
            timed_out = True
        if error is None and self.spec.result_schema is not None:
            error = schema_errors(self.spec.result_schema, self._mask.deep(self.answer))
        if error is not None and self._page is not None and not self._page.is_closed():
            try:
                mask = [self._page.locator(f"[{MASK_ATTR}]")]
                shot = await asyncio.wait_for(self._page.screenshot(type="png", timeout=5_000, mask=mask), 10)
                self.artifacts.append(Artifact("failure.png", "image/png", shot))
            except (PlaywrightError, TimeoutError):
                pass
        # what the platform stores carries no secret value (README "Secrets and artifacts")
        self.artifacts, notes = await asyncio.to_thread(withhold, self.artifacts, self._scanner)
        for note in notes:
            self._log("warning", note)
        outcome = StepsOutcome(
            status="timed_out" if timed_out else "failed" if error else "completed",
            result=await self.partial_result(),
            error_message=error,
            error_step=self.index if error else None,
            artifacts=self.artifacts,
            logs=self.logs,
            execution_time_seconds=round(time.monotonic() - started, 3),
        )
        return self.masked(outcome)

    def masked(self, outcome: StepsOutcome) -> StepsOutcome:
        return outcome.masked(self._mask)

    async def partial_result(self) -> dict[str, Any]:
        url, title = await where(self._page)
        model = (self.options.model if self.options else None) or self.llm.model
        return {
            "result": self.answer,
            "extracted": self.extracted,
            "steps": self.index,
            "url": url,
            "title": title,
            "usage": {
                "model": model,
                "llm_calls": self.usage.calls,
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
                "total_tokens": self.usage.prompt_tokens + self.usage.completion_tokens,
                "cost_usd": self.usage.cost(*self.prices),
            },
        }

    def _goal_message(self) -> str:
        goal = self.spec.goal or ""
        parts = [f"Goal: {goal}"]
        names = sorted(self._typeable)
        if names:
            parts.append("Secrets you may type: " + ", ".join(placeholder(n) for n in names))
        if self.spec.result_schema is not None:
            parts.append(
                "The `done` result must match this JSON Schema: " + json.dumps(self.spec.result_schema)
            )
        return self._placeholders.text("\n".join(parts))

    async def _loop(self, page: Page) -> str | None:
        if self.options and self.options.start_url:
            try:
                await page.goto(render(self.options.start_url, self._typeable), timeout=30_000)
            except PlaywrightError as exc:
                self._log("warning", f"start_url: {str(exc).splitlines()[0]}")
        history: list[dict[str, Any]] = []
        model = self.options.model if self.options else None
        for step in range(self.max_steps):
            self.index = step
            observation = self._placeholders.text(await self._observe(page))
            messages = [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": self._goal_message()},
                *history,
                {
                    "role": "user",
                    "content": f"Observation (step {step + 1} of {self.max_steps}):\n{observation}",
                },
            ]
            try:
                message = await self.llm.complete(messages, self.usage, model)
            except LLMError as exc:
                return str(exc)
            calls = message.get("tool_calls") or []
            if not calls:
                history.append(
                    {
                        "role": "assistant",
                        "content": self._placeholders.text(str(message.get("content") or "")),
                    }
                )
                history.append({"role": "user", "content": "Answer with a tool call."})
                continue
            call = calls[0]
            name = str(call.get("function", {}).get("name", ""))
            try:
                args = json.loads(call.get("function", {}).get("arguments") or "{}")
                if not isinstance(args, dict):
                    raise ValueError
            except ValueError:
                args = None
            history.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call.get("id", f"call_{step}"),
                            "type": "function",
                            "function": call.get("function", {}),
                        }
                    ],
                }
            )
            if args is None:
                outcome = "error: arguments are not a JSON object"
            elif name == "done":
                self.answer = self._placeholders.deep(args.get("result"))
                self._log("info", f"done after {step + 1} step(s)")
                self.index = step + 1
                return None
            elif name == "fail":
                reason = self._mask.text(str(args.get("reason") or "no reason given"))[:500]
                return f"the agent gave up: {reason}"
            else:
                outcome = await self._act(page, name, args)
            self._log("info", f"{name} {self._placeholders.text(json.dumps(args))[:200]} -> {outcome[:200]}")
            history.append(
                {
                    "role": "tool",
                    "tool_call_id": call.get("id", f"call_{step}"),
                    "content": self._placeholders.text(outcome),
                }
            )
        self.index = self.max_steps
        return f"the agent did not finish within {self.max_steps} steps"

    async def _observe(self, page: Page) -> str:
        try:
            elements = await asyncio.wait_for(page.evaluate(_OBSERVE_JS, MAX_ELEMENTS), 10)
            text = await asyncio.wait_for(
                page.evaluate("() => document.body ? document.body.innerText : ''"), 10
            )
            title = await asyncio.wait_for(page.title(), 5)
        except (PlaywrightError, TimeoutError) as exc:
            return f"URL: {page.url}\n(the page could not be read: {str(exc).splitlines()[0][:200]})"
        text = " ".join(str(text).split())[:MAX_TEXT_CHARS]
        return f"URL: {page.url}\nTitle: {title}\nElements:\n" + "\n".join(elements) + f"\nText: {text}"

    async def _act(self, page: Page, name: str, args: dict[str, Any]) -> str:
        try:
            if name == "navigate":
                await page.goto(render(str(args["url"]), self._typeable), timeout=30_000)
                if self.policy is not None and self.policy.blocked and self.policy.blocked[-1][0] in page.url:
                    return f"blocked: {self.policy.blocked[-1][1]}"
            elif name in ("click", "type", "select"):
                loc = page.locator(f'[data-bf-idx="{int(args["index"])}"]').first
                if name == "click":
                    await loc.click(timeout=ACTION_TIMEOUT_MS)
                elif name == "type":
                    if SECRET_REF.search(str(args.get("text", ""))):
                        await loc.evaluate(
                            f"e => e.setAttribute('{MASK_ATTR}', '')", timeout=ACTION_TIMEOUT_MS
                        )
                    await loc.fill(
                        render(str(args.get("text", "")), self._typeable), timeout=ACTION_TIMEOUT_MS
                    )
                    if args.get("submit"):
                        await loc.press("Enter", timeout=ACTION_TIMEOUT_MS)
                else:
                    await loc.select_option(
                        render(str(args["value"]), self._typeable), timeout=ACTION_TIMEOUT_MS
                    )
                await _settle(page)
            elif name == "scroll":
                dy = -600 if args.get("direction") == "up" else 600
                await page.evaluate("(dy) => window.scrollBy(0, dy)", dy)
            elif name == "extract":
                self.extracted[str(args["name"])[:64]] = self._placeholders.deep(args.get("value"))
            elif name == "wait":
                await asyncio.sleep(min(max(float(args.get("seconds", 1)), 0), 10))
            else:
                return f"error: unknown tool {name!r}"
        except (KeyError, ValueError, TypeError):
            return "error: missing or invalid arguments"
        except SecretUnavailable as exc:
            return f"error: {exc}"
        except PlaywrightError as exc:
            return "error: " + str(exc).split("Call log:")[0].strip().splitlines()[0][:300]
        return "ok"

    def _log(self, level: Literal["info", "warning", "error"], message: str) -> None:
        self.logs.append(TaskLogLine(level=level, message=self._mask.text(message), step=self.index))


def _hidden_from_model(spec: TaskSpec) -> set[str]:
    """The org's LLM key (`agent.api_key_secret`) unless the task also names it as a secret to type."""
    key = spec.agent.api_key_secret if spec.agent is not None else None
    if key is None or key in spec.secrets or key in secret_refs(spec.goal or ""):
        return set()
    return {key}


async def _settle(page: Page) -> None:
    """After an action: give a navigation it started a moment to land."""
    with contextlib.suppress(PlaywrightError):
        await page.wait_for_load_state("load", timeout=5_000)
