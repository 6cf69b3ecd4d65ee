"""Gateway settings, read from the environment (GATEWAY_HOST, GATEWAY_PORT, CORS_ORIGINS, ...)."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any, Literal

from browserfleet_core.settings import ServiceSettings, env_list
from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from .clientaddr import parse_networks
from .httpguard import HttpLimits


class GatewaySettings(ServiceSettings):
    service_name: str = "gateway"
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=0, le=65_535)
    max_body_bytes: int = Field(default=1_048_576, ge=1, description="larger request bodies get 413")
    http_limits: HttpLimits = Field(default_factory=HttpLimits, description="hostile HTTP limits (JSON)")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated origins allowed by CORS; empty disables CORS",
    )
    jwks_min_refresh_seconds: float = Field(
        default=5.0, ge=0, description="an unknown key id refetches the JWKS at most this often"
    )
    rate_limit_per_second: float = Field(
        default=10.0, ge=0, description="sustained requests per second per principal; 0 disables"
    )
    rate_limit_burst: int = Field(default=20, ge=1, description="requests a principal may make at once")
    api_key_rate_per_second: float = Field(
        default=10.0, ge=0, description="sustained requests per second per API key (burst: twice that)"
    )
    rate_limit_plans: dict[str, float] = Field(
        default_factory=dict,
        description='per-plan API key rate, JSON, e.g. {"pro": 50, "enterprise": 200}; others use the default',
    )
    login_rate_per_second: float = Field(
        default=0.2, ge=0, description="login attempts per second per client address; 0 disables"
    )
    login_burst: int = Field(default=5, ge=1, description="login attempts a client address may make at once")
    rate_limit_store: Literal["nats", "local"] = Field(
        default="nats",
        description="nats: every replica shares the limits (NATS KV bucket rate_limits); local: each replica "
        "limits on its own, so N replicas allow N times the rate",
    )
    rate_limit_store_timeout_seconds: float = Field(
        default=0.5,
        gt=0,
        description="a rate-limit decision waits this long for the shared bucket, then the replica limits alone",
    )
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list,
        description="comma-separated CIDRs of the load balancers / ingress in front of the gateway: only a "
        "request from one of them has its client address taken from X-Forwarded-For (the right-most address "
        "that is not a trusted proxy); empty: the peer address is the client, whatever the header says",
    )
    service_breaker_failures: int = Field(
        default=5,
        ge=1,
        description="a service that leaves this many calls in a row without an answer within "
        "RPC_TIMEOUT_SECONDS is failed fast (503, Retry-After) for the cool-down",
    )
    service_breaker_cooldown_seconds: float = Field(
        default=10.0, gt=0, description="how long a failing service's calls fail fast before one probe passes"
    )
    api_key_cache_seconds: float = Field(
        default=1.0, ge=0, description="how long a verified API key is trusted before auth is asked again"
    )
    user_state_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="how long a user's live state (active, role, MFA) is trusted without a change notice",
    )
    mfa_recent_seconds: int = Field(
        default=900, ge=30, description="a sensitive action needs a second factor at most this old"
    )
    sso_redirect_path: str = Field(
        default="/",
        pattern=r"^/([^/\\\s]\S*)?$",
        description="where the dashboard receives a finished SSO sign-in (a path on this site: never `//host`)",
    )
    public_url: str | None = Field(
        default=None,
        description="the gateway's public base URL (https://fleet.example.com): the SSO callback registered "
        "at identity providers is <public_url>/auth/sso/callback; unset = the request's own base URL",
    )
    # --- WebSockets (the event stream, docs/websocket.md) ---
    ws_auth_timeout_seconds: float = Field(
        default=10.0, gt=0, description="a socket without a credential must send AUTH within this (else 4408)"
    )
    ws_idle_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="a socket that sends nothing (not even PING) this long is closed (4408)",
    )
    ws_hub_idle_seconds: float = Field(
        default=30.0,
        ge=0,
        description="the gateway stops reading EVENTS this long after its last event-stream subscription ended",
    )
    ws_send_queue: int = Field(
        default=1000, ge=1, description="events queued for one socket before it is dropped as slow (4008)"
    )
    ws_resume_buffer: int = Field(
        default=10_000,
        ge=1,
        description="live events held for a socket while its replay catches up (else 4008)",
    )
    ws_max_message_bytes: int = Field(
        default=16_384, ge=1024, description="largest message a client may send (larger: close 1009)"
    )
    ws_messages_per_second: float = Field(
        default=10.0, ge=0, description="client messages per second per socket"
    )
    ws_messages_burst: int = Field(default=20, ge=1)
    ws_subscribes_per_second: float = Field(default=1.0, ge=0, description="SUBSCRIBEs per second per socket")
    ws_subscribes_burst: int = Field(default=5, ge=1)
    ws_max_violations: int = Field(
        default=10, ge=1, description="rate-limited messages a socket may send before it is closed (4429)"
    )
    ws_ticket_seconds: int = Field(default=30, ge=1, le=120, description="lifetime of a WebSocket ticket")
    ws_close_grace_seconds: float = Field(
        default=5.0,
        gt=0,
        description="how long a close frame may wait behind unread messages; then the connection is cut",
    )
    ws_max_connections: int = Field(
        default=20_000, ge=1, description="event-stream sockets per gateway process (more: close 1013)"
    )
    ws_max_connections_per_principal: int = Field(
        default=100, ge=0, description="event-stream sockets per user or API key per gateway (0: no limit)"
    )
    ws_ping_interval_seconds: float = Field(
        default=20.0, gt=0, description="protocol pings to every socket; no pong within as long closes it"
    )
    ws_per_message_deflate: bool = Field(
        default=True, description="offer permessage-deflate (smaller frames; about 40 KiB more per socket)"
    )
    dashboard_dir: Path | None = Field(
        default=None,
        description="the built dashboard (ui/dist: index.html and assets/); default: ui/dist of this checkout",
    )

    # --- the live view of a running task (docs/liveview.md) ---
    live_view_queue_frames: int = Field(
        default=3, ge=1, le=100, description="frames held for a slow live viewer; older ones are dropped"
    )
    live_view_start_timeout_seconds: float = Field(
        default=5.0, gt=0, description="how long the worker running a task may take to start its screencast"
    )
    live_view_max_viewers: int = Field(
        default=200, ge=0, description="live-view sockets per gateway process (more: close 1013)"
    )
    live_view_inputs_per_second: float = Field(
        default=60.0, ge=0, description="takeover input messages per second per socket (mouse moves included)"
    )
    live_view_inputs_burst: int = Field(default=120, ge=1)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, v: Any) -> Any:
        v = env_list(v)
        if isinstance(v, list | tuple):
            return parse_networks(str(item) for item in v)
        return v

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return env_list(v)
