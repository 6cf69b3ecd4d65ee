"""Worker settings, read from the environment."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from browserfleet_contracts import subjects
from browserfleet_core.settings import ServiceSettings
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

TraceMode = Literal["retain-on-failure", "on", "on-first-retry", "off"]


class WorkerSettings(ServiceSettings):
    service_name: str = "worker"
    worker_key: str | None = Field(default=None, description="sk_worker_... key; wins over everything else")
    worker_invite_code: str | None = Field(
        default=None,
        description="an invite, traded for a worker identity at start: a pool invite gives every replica an "
        "identity of its own (removed again on a clean shutdown); with WORKER_STATE_DIR, a one-time "
        "invite's key is saved there and reused by restarts",
    )
    gateway_url: str | None = Field(
        default=None,
        pattern=r"^(https?|wss?)://",
        description="the platform's public URL: join as a remote worker over its WebSocket (`/workers/ws`), "
        "registering with WORKER_INVITE_CODE over HTTP; NATS_URL is not used then",
    )
    nats_url: str = Field(
        default="",
        description="NATS server with JetStream, >= 2.10 (e.g. nats://127.0.0.1:4222); required unless "
        "GATEWAY_URL makes this a remote worker",
    )
    worker_name: str = Field(default_factory=socket.gethostname)
    # NoDecode: operators write WORKER_TAGS=gpu,eu-west, not a JSON list
    worker_tags: Annotated[list[str], NoDecode] = Field(default_factory=list)
    worker_slots: int = Field(default=2, ge=1, le=64, description="tasks run at once (one context each)")
    worker_state_dir: Path | None = Field(
        default=None,
        description="where a key obtained from an invite is saved (0600), so a restart keeps the identity; "
        "unset (pool replicas), the identity lasts one run",
    )
    browser_executable: str | None = Field(
        default=None, description="Chromium binary to use instead of autodetect"
    )
    headless: bool = True
    browser_sandbox: bool | None = Field(
        default=None,
        description="Chromium's sandbox; unset = on unless running as root (containers without a seccomp "
        "profile that allows user namespaces need BROWSER_SANDBOX=false)",
    )
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    bus_refused_grace_seconds: float = Field(
        default=180.0,
        gt=0,
        description="how long NATS may refuse the worker's key before it concludes the key is gone and exits "
        "non-zero; a refusal right after NATS restarted is worker-gateway's auth callout not being back yet",
    )
    log_ship_seconds: float = Field(
        default=1.0, gt=0, description="how often running tasks send new log lines"
    )
    lease_extend_seconds: float = Field(
        default=10.0, gt=0, description="in-progress ack interval (< ack_wait)"
    )
    pool: str = subjects.DEFAULT_POOL
    shutdown_grace_seconds: float = Field(default=60.0, ge=0, description="how long SIGTERM waits for tasks")
    org_policy_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="how long a worker reuses an organization's policy; a change reaches new tasks within this",
    )
    profile_wait_seconds: float = Field(
        default=60.0,
        ge=0,
        description="how long a task waits for a profile another task is using before it fails",
    )

    # --- safe browsing and limits ---
    browser_allow_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CIDRs the browser may reach although internal (loopback, private, link-local, CGNAT); "
        "e.g. 127.0.0.1/32 for pages served on this machine. Empty = every internal address is blocked.",
    )
    allow_evaluate: bool = Field(
        default=False, description="allow `evaluate` steps (JavaScript) for all orgs"
    )
    max_download_mb: float = Field(default=50, gt=0, description="largest download a task may store")
    task_transfer_mb: float = Field(default=500, gt=0, description="bytes a task's browser may receive")
    trace_on_failure: bool = Field(
        default=True,
        description="store a Playwright trace when a task fails (off: TRACE_MODE=off; TRACE_MODE wins when set)",
    )
    trace_mode: TraceMode | None = Field(
        default=None,
        description="which steps tasks record a Playwright trace and keep it, in Playwright Test's words: "
        "retain-on-failure (every task records, a failed one keeps it: the default, TRACE_ON_FAILURE), on "
        "(every task keeps it, successes too), on-first-retry (only a task's second attempt records, and keeps "
        "it: first attempts cost nothing), off (none records). Unset: retain-on-failure, or off with "
        "TRACE_ON_FAILURE=false",
    )
    trace_screenshots: bool = Field(
        default=False,
        description=(
            "record the screencast (a screenshot per frame) in failure traces; off, a trace keeps the DOM "
            "snapshot of every action and the failure's last screenshot is stored on its own "
            "(the screencast costs ~60-110 ms per task on 2 cores)"
        ),
    )
    trace_snapshots: bool | Literal["failure"] = Field(
        default="failure",
        description=(
            "failure (the default): no DOM snapshot while the steps run; a failed task's trace gets the page as "
            "the failure left it (its DOM, before and after the failure screenshot) and the network log of the "
            "whole task (recorded beside the trace by Playwright's HAR recorder: requests, headers, status, "
            "failures; no bodies, no timings), but no earlier action's DOM. true: a DOM snapshot before and "
            "after every action, and the network log with bodies, in traces. false: a trace keeps every action "
            "with its timing and error and the console, and the failure's last screenshot is stored on its own. "
            "The trace runs on every task (whether it fails is known only at its end): per-action snapshots cost "
            "~30-90 ms of Chromium and driver CPU per 4-step task on 2 cores, which failure and false save on "
            "every task that does not fail"
        ),
    )
    browser_warm_contexts: int = Field(
        default=0,
        ge=0,
        le=64,
        description="fresh contexts (each with a blank page) kept ready for the next tasks; each is used by "
        "one task only, its network refused until the task's policy is bound. Off by default: with the "
        "system Chromium a task's first navigation leaves the prepared renderer for a new one, so it cost "
        "memory and CPU without shortening tasks",
    )
    recycle_after_tasks: int = Field(
        default=200, ge=0, description="restart the browser after K tasks (0: never)"
    )
    recycle_memory_mb: float | None = Field(default=None, gt=0, description="restart above this RSS")

    # --- the live view (only while someone watches; frames are never stored) ---
    live_view_enabled: bool = Field(
        default=True, description="let authorised viewers watch a running task's browser (screencast)"
    )
    live_view_max_fps: float = Field(
        default=5.0, gt=0, le=30, description="live-view frames per second, at most"
    )
    live_view_max_width: int = Field(
        default=1280, ge=160, le=3840, description="live-view frame width, at most"
    )
    live_view_max_height: int = Field(
        default=960, ge=120, le=2160, description="live-view frame height, at most"
    )
    live_view_jpeg_quality: int = Field(default=60, ge=10, le=100, description="live-view JPEG quality")
    live_view_input_enabled: bool = Field(
        default=True,
        description="let a watching person who may change the task (user role, tasks:write) use mouse and keyboard",
    )

    # --- the agent runner: any OpenAI-compatible chat-completions endpoint ---
    llm_base_url: str | None = Field(default=None, description="e.g. https://api.openai.com/v1")
    llm_model: str | None = None
    llm_api_key: SecretStr | None = None
    openai_api_key: SecretStr | None = None
    deepseek_api_key: SecretStr | None = None
    llm_timeout_seconds: float = Field(default=60, gt=0)
    llm_input_price_per_mtok: float = Field(default=0.0, ge=0, description="USD per 1M prompt tokens")
    llm_output_price_per_mtok: float = Field(default=0.0, ge=0, description="USD per 1M completion tokens")

    @model_validator(mode="after")
    def _a_way_in(self) -> WorkerSettings:
        if not self.nats_url and self.gateway_url is None:
            raise ValueError("set NATS_URL (an in-cluster worker) or GATEWAY_URL (a remote worker)")
        return self

    @field_validator("worker_tags", "browser_allow_networks", mode="before")
    @classmethod
    def _split_tags(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [t.strip() for t in v.split(",") if t.strip()]
        return v

    @field_validator("browser_allow_networks")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for item in v:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP network (e.g. 127.0.0.1/32)") from None
        return v

    def trace_recording(self, attempt: int) -> TraceMode:
        """The trace mode for a steps task's `attempt`: off when it records nothing, retain-on-failure when it
        records and keeps a failure's, on when it records and keeps whatever the outcome."""
        mode = self.trace_mode or ("retain-on-failure" if self.trace_on_failure else "off")
        if mode == "on-first-retry":
            return "on" if attempt == 2 else "off"
        return mode

    def with_llm_api_key(self, key: str) -> WorkerSettings:
        """These settings with `key` (an org credential from the vault) as the LLM API key: the endpoint and
        model stay what the worker's settings choose, only the bearer token changes."""
        base, model, _ = self.llm_endpoint()
        return self.model_copy(
            update={"llm_base_url": base, "llm_model": model, "llm_api_key": SecretStr(key)}
        )

    def llm_endpoint(self) -> tuple[str, str, str | None]:
        """(base URL, model, API key): LLM_* first; else OPENAI_API_KEY for OpenAI, DEEPSEEK_API_KEY for
        DeepSeek, as the deployment guide lists them."""
        key = self.llm_api_key or self.openai_api_key
        base, model = "https://api.openai.com/v1", "gpt-4o-mini"
        if key is None and self.deepseek_api_key is not None:
            key = self.deepseek_api_key
            base, model = "https://api.deepseek.com/v1", "deepseek-chat"
        return (
            (self.llm_base_url or base).rstrip("/"),
            self.llm_model or model,
            key.get_secret_value() if key is not None else None,
        )
