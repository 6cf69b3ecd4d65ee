"""Running one claimed task: its organization's policy, the secrets it names (released sealed to this process,
opened, masked, forgotten),
its profile, a runner (steps or agent) with its network policy in a fresh browser context, cancellable; and
the worker's task metrics. No TASKS message handling in here (attempt.py does that)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import OrgPolicy
from browserfleet_contracts.profiles import LeasedProfile, ProfileLease
from browserfleet_contracts.tasks import TaskDispatch, TaskLogLine
from browserfleet_contracts.vault import ReleaseReply, ReleaseRequest
from browserfleet_core.errors import ServiceError
from playwright.async_api import BrowserContext
from playwright.async_api import Error as PlaywrightError
from prometheus_client import Counter, Gauge, Histogram

from . import orgpolicy, profiles, unsealing
from .agent import AgentRunner
from .artifacts import read_artifact
from .browser import BrowserHost, Prepared
from .liveview import LiveView
from .llm import LLMClient
from .netguard import Policy, parse_networks, upstream_from
from .orgpolicy import SecurityEvents, block_kind
from .runtime import WorkerRuntime
from .secret_values import Masker, SecretUnavailable, render
from .settings import WorkerSettings
from .steps import StepsOutcome, StepsRunner

log = logging.getLogger(__name__)
security_log = logging.getLogger("browserfleet.security")

CANCELLED = "cancelled while running"

TASKS = Counter(
    "browserfleet_worker_tasks_total", "Tasks run by this worker, by outcome", ["kind", "outcome"]
)
TASK_SECONDS = Histogram(
    "browserfleet_worker_task_seconds", "Task duration", buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)
)
LAUNCH_SECONDS = Gauge("browserfleet_worker_browser_launch_seconds", "Last browser launch time")
CONTEXT_SECONDS = Gauge("browserfleet_worker_context_seconds", "Last browser context creation time")
BROWSER_LAUNCHES = Gauge("browserfleet_worker_browser_launches", "Browser launches (incl. recycles, crashes)")
SLOTS_BUSY = Gauge("browserfleet_worker_slots_busy", "Browser contexts open now")
BLOCKED = Counter("browserfleet_worker_blocked_requests_total", "Requests refused by safe browsing", ["kind"])


class TaskRefused(Exception):
    """The task cannot run as configured (no LLM endpoint, a bad proxy); fails it with this message."""


class Runner(Protocol):
    index: int

    async def run(self, context: BrowserContext) -> StepsOutcome: ...

    async def partial_result(self) -> dict[str, Any]: ...

    def masked(self, outcome: StepsOutcome) -> StepsOutcome: ...


def build_policy(
    settings: WorkerSettings,
    task: TaskDispatch,
    values: Mapping[str, str],
    org: OrgPolicy | None = None,
    events: SecurityEvents | None = None,
) -> Policy:
    """The task's network policy merged with its organization's (README "Safe browsing"): a host must be in
    both allowed-domain lists when both are set; the task's proxy wins, else the organization's."""
    spec = task.spec
    org = org or OrgPolicy()

    def on_block(host: str, reason: str, url: str | None) -> None:
        kind = block_kind(reason)
        BLOCKED.labels("address" if kind == "dns" else kind).inc()
        # a security event: structured, searchable, never carrying a secret (hosts and reasons only)
        security_log.warning(
            "security event: blocked request of task %s to %s: %s",
            task.task_id,
            host,
            reason,
            extra={"event": "security.blocked", "task_id": task.task_id, "org_id": task.org_id},
        )
        if events is not None:
            events.blocked(host, reason, url, kind)

    policy = Policy(
        allowed_domains=list(spec.allowed_domains) if spec.allowed_domains is not None else None,
        org_allowed_domains=list(org.allowed_domains) if org.allowed_domains is not None else None,
        allowed_networks=parse_networks(settings.browser_allow_networks),
        max_bytes=int(settings.task_transfer_mb * 1024 * 1024),
        on_block=on_block,
    )
    proxy, whose = (spec.proxy, "proxy") if spec.proxy is not None else (org.proxy, "organization proxy")
    if proxy is not None:
        try:
            policy.upstream = upstream_from(
                render(proxy.server, values),
                render(proxy.username, values) if proxy.username else None,
                render(proxy.password, values) if proxy.password else None,
            )
        except (ValueError, SecretUnavailable) as exc:
            raise TaskRefused(f"{whose}: {exc}") from None
    return policy


def allow_evaluate(settings: WorkerSettings, org: OrgPolicy | None) -> bool:
    """`evaluate` runs when the operator allows it for every org (ALLOW_EVALUATE) or the org's policy does."""
    return settings.allow_evaluate or (org is not None and org.allow_evaluate)


def build_runner(
    settings: WorkerSettings,
    task: TaskDispatch,
    values: Mapping[str, str],
    org: OrgPolicy | None = None,
    events: SecurityEvents | None = None,
) -> tuple[Runner, Policy]:
    policy = build_policy(settings, task, values, org, events)
    if task.spec.kind == "agent":
        base_url, model, key = settings.llm_endpoint()
        if key is None and settings.llm_base_url is None:
            raise TaskRefused(
                "agent tasks need an LLM endpoint: set LLM_BASE_URL/LLM_API_KEY, OPENAI_API_KEY or DEEPSEEK_API_KEY"
            )
        llm = LLMClient(base_url, model, key, timeout_seconds=settings.llm_timeout_seconds)
        agent = AgentRunner(
            task.spec,
            values,
            llm=llm,
            timeout_seconds=task.timeout_seconds,
            policy=policy,
            prices=(settings.llm_input_price_per_mtok, settings.llm_output_price_per_mtok),
        )
        return agent, policy
    steps = StepsRunner(
        task.spec,
        values,
        timeout_seconds=task.timeout_seconds,
        policy=policy,
        allow_evaluate=allow_evaluate(settings, org),
        max_download_bytes=int(settings.max_download_mb * 1024 * 1024),
        trace_on_failure=settings.trace_recording(task.attempt) != "off",
        trace_on_success=settings.trace_recording(task.attempt) == "on",
        trace_screenshots=settings.trace_screenshots,
        trace_snapshots=settings.trace_snapshots,
    )
    return steps, policy


def record_outcome(browser: BrowserHost, outcome: StepsOutcome, kind: str = "task") -> None:
    TASKS.labels(kind, outcome.status).inc()
    TASK_SECONDS.observe(outcome.execution_time_seconds)
    LAUNCH_SECONDS.set(browser.last_launch_seconds)
    CONTEXT_SECONDS.set(browser.last_context_seconds)
    BROWSER_LAUNCHES.set(browser.launches)
    SLOTS_BUSY.set(browser.active)


async def execute(
    rt: WorkerRuntime,
    task: TaskDispatch,
    cancelled: asyncio.Event | None = None,
    live: LiveView | None = None,
    prepared: Prepared | None = None,
) -> StepsOutcome:
    """Release the secrets, run the steps in a fresh context (shown to `live`'s viewers; `prepared` for it when
    given), forget the secrets."""
    started = time.monotonic()
    cancelled = cancelled or asyncio.Event()
    if cancelled.is_set():
        return StepsOutcome(status="failed", result={}, error_message=CANCELLED)
    try:  # the organization's restrictions apply to every task: no policy, no run
        org = await rt.org_policies.get(task.org_id)
    except orgpolicy.OrgPolicyUnavailable as exc:
        return StepsOutcome(status="failed", result={}, error_message=str(exc))
    names = orgpolicy.secret_names(task, org)
    values: dict[str, str] = {}
    if names:
        try:
            request = ReleaseRequest(
                task_id=task.task_id,
                worker_key=rt.identity.worker_key,
                names=sorted(names),
                attempt=task.attempt,
                public_key=unsealing.public_key(rt.identity),
            )
            reply: ReleaseReply = await rt.rpc.call(endpoints.Vault.RELEASE, request)
            released = unsealing.open_release(rt.identity, task, reply)
        except ServiceError as exc:
            return StepsOutcome(
                status="failed", result={}, error_message=f"secrets not released: {exc.message}"
            )
        except unsealing.SealError as exc:
            return StepsOutcome(status="failed", result={}, error_message=f"secrets not opened: {exc}")
        missing = sorted(names - released.keys())
        if missing:
            return StepsOutcome(
                status="failed", result={}, error_message=f"secrets not released: {', '.join(missing)}"
            )
        values = {name: released[name] for name in names}
        released.clear()
    held = rt.masks.register(values.values())
    events = orgpolicy.SecurityEvents(rt.js, task, values, worker_id=rt.identity.worker_id or "")
    lease: ProfileLease | None = None
    leased: LeasedProfile | None = None
    saved_state: dict[str, Any] | None = None
    waited_line: TaskLogLine | None = None
    try:
        settings = rt.settings
        agent = task.spec.agent
        if task.spec.kind == "agent" and agent is not None and agent.api_key_secret:
            settings = settings.with_llm_api_key(values[agent.api_key_secret])  # the org's key
        runner, policy = build_runner(settings, task, values, org, events)
        if isinstance(runner, StepsRunner):
            runner.artifact_reader = functools.partial(read_artifact, rt.rpc, rt.identity.worker_key, task)
            if live is not None and live.takes_input:
                runner.handoff = live.handoff
        if task.spec.profile is not None:
            lease, waited = await profiles.acquire(
                rt.rpc,
                task_id=task.task_id,
                worker_key=rt.identity.worker_key,
                profile=task.spec.profile,
                wait_seconds=min(rt.settings.profile_wait_seconds, float(task.timeout_seconds)),
                cancelled=cancelled,
                attempt=task.attempt,
                public_key=unsealing.public_key(rt.identity),
            )
            try:
                leased = unsealing.open_lease(rt.identity, task, lease)
            except unsealing.SealError as exc:
                raise profiles.ProfileUnavailable(f"profile {lease.profile} not opened: {exc}") from None
            if waited >= profiles.FIRST_POLL_SECONDS:
                waited_line = TaskLogLine(
                    message=f"waited {waited:.1f} s for profile {task.spec.profile} (held by another task)"
                )
            saved_state = {}
        outcome = await _run_cancellable(
            rt.browser,
            runner,
            cancelled,
            policy,
            storage_state=leased.state if leased is not None else None,
            keep_state=saved_state,
            live=live,
            prepared=prepared,
        )
        if waited_line is not None:
            outcome.logs.insert(0, waited_line)
        if lease is not None and leased is not None:
            outcome = await _finish_profile(rt, task, lease, leased, outcome, saved_state or None)
            lease = None
    except profiles.ProfileCancelled:
        outcome = StepsOutcome(status="failed", result={}, error_message=CANCELLED)
    except (TaskRefused, profiles.ProfileUnavailable) as exc:
        outcome = StepsOutcome(
            status="failed", result={}, error_message=Masker(values.values()).text(str(exc))
        )
    except Exception as exc:
        log.exception("running %s failed unexpectedly", task.task_id)
        message = f"worker error: {type(exc).__name__}: {exc}"
        outcome = StepsOutcome(
            status="failed",
            result={},
            error_message=Masker(values.values()).text(message)[:500],
            # Playwright failing outside the steps (opening the context, a dead browser) is the worker's
            retryable=isinstance(exc, PlaywrightError),
        )
    finally:
        if lease is not None:  # failed, cancelled or shut down before the end: keep the stored state
            await profiles.release_quietly(
                rt.rpc, task_id=task.task_id, worker_key=rt.identity.worker_key, lease=lease
            )
        await events.close()
        rt.masks.release(held)
        values.clear()
    outcome.execution_time_seconds = round(time.monotonic() - started, 3)
    record_outcome(rt.browser, outcome)
    with contextlib.suppress(Exception):
        await rt.browser.recycle_if_due(
            after_tasks=rt.settings.recycle_after_tasks, memory_mb=rt.settings.recycle_memory_mb
        )
    return outcome


async def _finish_profile(
    rt: WorkerRuntime,
    task: TaskDispatch,
    lease: ProfileLease,
    leased: LeasedProfile,
    outcome: StepsOutcome,
    state: dict[str, Any] | None,
) -> StepsOutcome:
    """After success the context's storage state goes back to the vault, sealed to the lease's key;
    otherwise only the lease ends."""
    keep = state if outcome.status == "completed" else None
    try:
        sealed = unsealing.seal_state(rt.identity, task, leased, keep) if keep is not None else None
    except (unsealing.SealError, ValueError) as exc:  # e.g. a state too large for a box
        await profiles.release_quietly(
            rt.rpc, task_id=task.task_id, worker_key=rt.identity.worker_key, lease=lease
        )
        outcome.status = "failed"
        outcome.error_message = f"profile {lease.profile} not saved: {exc}"
        return outcome
    try:
        reply = await profiles.save(
            rt.rpc,
            task_id=task.task_id,
            worker_key=rt.identity.worker_key,
            lease=lease,
            sealed_state=sealed,
            attempt=task.attempt,
        )
    except ServiceError as exc:
        if keep is None:
            log.warning("ending the lease on profile %s failed: %s", lease.profile, exc.message)
            return outcome
        # the session the next task relies on was not stored: say so rather than report success
        outcome.status = "failed"
        outcome.error_message = f"profile {lease.profile} not saved: {exc.message}"
        return outcome
    if reply.saved:
        outcome.logs.append(TaskLogLine(message=f"profile {lease.profile} saved (version {reply.version})"))
    return outcome


async def _run_cancellable(
    browser: BrowserHost,
    runner: Runner,
    cancelled: asyncio.Event,
    policy: Policy | None = None,
    *,
    storage_state: dict[str, Any] | None = None,
    keep_state: dict[str, Any] | None = None,
    live: LiveView | None = None,
    prepared: Prepared | None = None,
) -> StepsOutcome:
    """Runs the steps in a fresh context (loaded with `storage_state`) until they finish or `cancelled`
    is set. After a success, the context's storage state is copied into `keep_state` when given."""
    async with browser.context(
        policy, accept_downloads=True, storage_state=storage_state, prepared=prepared
    ) as ctx:
        if live is not None:
            live.attach(ctx)
        run = asyncio.create_task(runner.run(ctx))
        signal = asyncio.create_task(cancelled.wait())
        try:
            await asyncio.wait({run, signal}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # also on our own cancellation (shutdown out of grace): nothing may outlive the context
            signal.cancel()
            if not run.done():
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
        if not run.cancelled():
            try:
                outcome = run.result()
            except PlaywrightError as exc:  # the runner could not even start: a browser problem
                message = f"browser error: {exc}".split("\n")[0][:500]
                outcome = runner.masked(StepsOutcome(status="failed", result={}, error_message=message))
            if outcome.status == "failed":
                fault = await browser.fault(ctx)
                if fault is not None:  # not the steps' doing: the scheduler may run it again
                    outcome.retryable = True
                    outcome.error_message = f"{fault} (retryable): {outcome.error_message or 'failed'}"
            if keep_state is not None and outcome.status == "completed":
                try:
                    keep_state.update(await asyncio.wait_for(ctx.storage_state(), 10))
                except Exception as exc:
                    outcome.status = "failed"
                    outcome.error_message = f"reading the profile's storage state failed: {exc}"[:500]
            return outcome
        return runner.masked(
            StepsOutcome(
                status="failed",
                result=await runner.partial_result(),
                error_message=CANCELLED,
                error_step=runner.index,
            )
        )
