"""Each bus identity's NATS permissions, derived from the contracts, and the server configuration built on them.

Nothing here names a subject of its own: a service may request the endpoints whose `callers` name it, serve
(subscribe, then answer through `allow_responses`) the endpoints of its queue, use its own reply inbox, and
publish / subscribe what `browserfleet_contracts.bus.GRANTS` lists for it. Workers get the same from
`worker_permissions` in the user JWT worker-gateway's auth callout issues; a connection holding only an invite
code may register and nothing else. Services use the JetStream API (`$JS.API.>`: declaring streams, their
durable consumers, the object store) and acknowledge the streams they consume: the trade-off
docs/architecture.md "Securing the bus" describes. Workers get no JetStream API beyond pulling their pool.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from browserfleet_contracts import bus, endpoints

JS_API: tuple[str, ...] = ("$JS.API.>", "$JS.FC.>")
SYSTEM_REQUESTS: tuple[str, ...] = ("$SYS.REQ.SERVER.PING.CONNZ", "$SYS.REQ.SERVER.*.KICK")


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = True

    def allows_publish(self, subject: str) -> bool:
        return any(matches(pattern, subject) for pattern in self.publish)

    def allows_subscribe(self, subject: str) -> bool:
        return any(matches(pattern, subject) for pattern in self.subscribe)

    def as_config(self) -> dict[str, object]:
        return {
            "publish": {"allow": list(self.publish)},
            "subscribe": {"allow": list(self.subscribe)},
            "allow_responses": self.allow_responses,
        }


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, a final `>` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(have) > i
        if i >= len(have) or (part != "*" and part != have[i]):
            return False
    return len(have) == len(want)


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def callable_by(identity: str) -> tuple[str, ...]:
    """The endpoint subjects `identity` may request."""
    return tuple(ep.subject for ep in endpoints.all_endpoints() if identity in ep.callers)


def served_by(identity: str) -> tuple[str, ...]:
    return tuple(ep.subject for ep in endpoints.all_endpoints() if ep.queue == identity)


def service_permissions(identity: str) -> Permissions:
    if identity == bus.ADMIN:
        return Permissions(publish=(">",), subscribe=(">",))
    if identity == bus.WORKER_GATEWAY_SYSTEM:
        return Permissions(publish=SYSTEM_REQUESTS, subscribe=(f"{bus.inbox_prefix(identity)}.>",))
    if identity not in bus.GRANTS:
        raise KeyError(f"{identity!r} is not a service identity")
    grant = bus.GRANTS[identity]
    return Permissions(
        publish=_unique(
            [
                *callable_by(identity),
                *grant.publish,
                *JS_API,
                *(f"$JS.ACK.{stream}.>" for stream in grant.streams),
            ]
        ),
        subscribe=_unique([f"{bus.inbox_prefix(identity)}.>", *served_by(identity), *grant.subscribe]),
    )


def worker_permissions(worker_id: str, pool: str, worker_key: str) -> Permissions:
    grant = bus.worker_grant(worker_id, pool)
    return Permissions(
        publish=_unique([*callable_by(bus.WORKER), *grant.publish]),
        subscribe=_unique([f"{bus.worker_inbox_prefix(worker_key)}.>", *grant.subscribe]),
    )


def registrant_permissions(invite_code: str) -> Permissions:
    return Permissions(
        publish=callable_by(bus.REGISTRANT),
        subscribe=(f"{bus.registrant_inbox_prefix(invite_code)}.>",),
        allow_responses=False,
    )


# --- the server configuration ------------------------------------------------------------------------------
STATIC_USERS: tuple[str, ...] = (*bus.SERVICES, bus.ADMIN)


@dataclass
class ServerConfig:
    """What `render` needs. `passwords`: one per static user (services, `admin` where it exists, and
    `worker-gateway-sys`); a service absent from it cannot connect. `issuer`: the public account nkey whose
    seed worker-gateway signs worker identities with."""

    passwords: Mapping[str, str]
    issuer: str
    host: str = "0.0.0.0"
    port: int = 4222
    store_dir: str | None = None
    max_payload: str = "8MB"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    extra: list[str] = field(default_factory=list)


def _q(value: object) -> str:
    return json.dumps(value)


def _user(name: str, password: str) -> str:
    perms = service_permissions(name).as_config()
    return f"{{user: {_q(name)}, password: {_q(password)}, permissions: {json.dumps(perms)}}}"


def render(config: ServerConfig, *, auth_only: bool = False) -> str:
    """The nats-server configuration: every static user with its allow-lists in the platform account, the
    system account user worker-gateway kicks revoked workers with, and the auth callout for everyone else
    (workers): anonymous connections reach the callout too, which refuses them."""
    app = [_user(u, config.passwords[u]) for u in STATIC_USERS if u in config.passwords]
    system = [_user(u, config.passwords[u]) for u in (bus.WORKER_GATEWAY_SYSTEM,) if u in config.passwords]
    auth_users = [u for u in (*STATIC_USERS, bus.WORKER_GATEWAY_SYSTEM) if u in config.passwords]
    server = [
        f"listen: {_q(f'{config.host}:{config.port}')}",
        f"max_payload: {config.max_payload}",
        "jetstream {" + (f" store_dir: {_q(config.store_dir)}" if config.store_dir else "") + " }",
    ]
    lines = [
        *([] if auth_only else server),
        "accounts {",
        f"  {bus.APP_ACCOUNT} {{",
        "    jetstream: enabled",
        "    users: [",
        *(f"      {u}" for u in app),
        "    ]",
        "  }",
        f"  {bus.SYSTEM_ACCOUNT} {{ users: [ {' '.join(system)} ] }}",
        "}",
        f"system_account: {bus.SYSTEM_ACCOUNT}",
        "authorization {",
        "  auth_callout {",
        f"    issuer: {_q(config.issuer)}",
        f"    account: {bus.APP_ACCOUNT}",
        f"    auth_users: {json.dumps(auth_users)}",
        "  }",
        "}",
    ]
    if auth_only:  # to be included in a configuration that owns the rest (Kubernetes: the NATS chart's)
        return "\n".join(lines) + "\n"
    if config.tls_cert and config.tls_key:
        tls = [f"cert_file: {_q(str(config.tls_cert))}", f"key_file: {_q(str(config.tls_key))}"]
        if config.tls_ca:
            tls.append(f"ca_file: {_q(str(config.tls_ca))}")
        lines.extend(["tls {", *(f"  {entry}" for entry in tls), "}"])
    lines.extend(config.extra)
    return "\n".join(lines) + "\n"


# --- the command line: what Compose and Kubernetes render the server configuration with ---------------------
def _env_name(user: str) -> str:
    return "NATS_PASSWORD_" + user.upper().replace("-", "_")


def config_from_env(env: Mapping[str, str]) -> ServerConfig:
    """The server configuration from the environment: NATS_PASSWORD_<USER> for each static user that may
    connect (GATEWAY, AUTH, SCHEDULER, VAULT, WEBHOOKS, WORKER_GATEWAY, WORKER_GATEWAY_SYS; ADMIN only where
    a privileged user is wanted), BUS_CALLOUT_SEED (or BUS_CALLOUT_ISSUER, its public key), and optionally
    NATS_LISTEN (host:port), NATS_STORE_DIR, NATS_MAX_PAYLOAD, NATS_TLS_CERT_FILE / NATS_TLS_KEY_FILE /
    NATS_TLS_CA_FILE (the server's certificate; the CA file makes it ask clients for theirs)."""
    from . import natsjwt

    passwords = {
        u: env[_env_name(u)] for u in (*STATIC_USERS, bus.WORKER_GATEWAY_SYSTEM) if env.get(_env_name(u))
    }
    missing = [_env_name(u) for u in (*bus.SERVICES, bus.WORKER_GATEWAY_SYSTEM) if u not in passwords]
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)}")
    issuer = env.get("BUS_CALLOUT_ISSUER") or (
        natsjwt.public_key(env["BUS_CALLOUT_SEED"]) if env.get("BUS_CALLOUT_SEED") else ""
    )
    if not issuer:
        raise SystemExit("missing: BUS_CALLOUT_SEED (or BUS_CALLOUT_ISSUER)")
    host, _, port = env.get("NATS_LISTEN", "0.0.0.0:4222").rpartition(":")

    def path(name: str) -> Path | None:
        return Path(env[name]) if env.get(name) else None

    return ServerConfig(
        passwords=passwords,
        issuer=issuer,
        host=host or "0.0.0.0",
        port=int(port),
        store_dir=env.get("NATS_STORE_DIR") or None,
        max_payload=env.get("NATS_MAX_PAYLOAD", "8MB"),
        tls_cert=path("NATS_TLS_CERT_FILE"),
        tls_key=path("NATS_TLS_KEY_FILE"),
        tls_ca=path("NATS_TLS_CA_FILE"),
    )


def new_secrets() -> dict[str, str]:
    """A fresh set of the variables `config_from_env` reads (for a `.env` file or a Kubernetes Secret)."""
    import secrets

    from . import natsjwt

    found = {_env_name(u): secrets.token_urlsafe(24) for u in (*bus.SERVICES, bus.WORKER_GATEWAY_SYSTEM)}
    found["BUS_CALLOUT_SEED"] = natsjwt.new_seed()
    return found


def main(argv: list[str] | None = None) -> None:
    """`python -m browserfleet_core.busauth render [--out FILE]` writes the server configuration from the
    environment (0600: it holds the passwords); `secrets` prints fresh NATS_PASSWORD_* and BUS_CALLOUT_SEED
    lines."""
    import argparse
    import os
    import sys

    parser = argparse.ArgumentParser(prog="python -m browserfleet_core.busauth")
    sub = parser.add_subparsers(dest="command", required=True)
    render_cmd = sub.add_parser("render", help="the nats-server configuration, from the environment")
    render_cmd.add_argument("--out", help="file to write (default: standard output)")
    render_cmd.add_argument(
        "--auth-only", action="store_true", help="accounts and authorization only, for an `include`"
    )
    sub.add_parser("secrets", help="fresh passwords and callout key, as KEY=value lines")
    args = parser.parse_args(argv)
    if args.command == "secrets":
        sys.stdout.write("".join(f"{k}={v}\n" for k, v in new_secrets().items()))
        return
    text = render(config_from_env(os.environ), auth_only=args.auth_only)
    if not args.out:
        sys.stdout.write(text)
        return
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
