"""Safe browsing: every connection a task's browser context makes goes through this local proxy.

Why a proxy rather than Playwright's request routing: routing does not see redirects (Chromium follows
them internally), WebSockets, or which address a hostname finally resolves to. The proxy sees every
connection, resolves the hostname itself, checks each address, and connects to the address it checked,
so a redirect to an internal host, a hostname that resolves to 169.254.169.254, and DNS rebinding are all
refused the same way.

Each task's context authenticates to the proxy with its own token (the proxy username), which selects the
task's policy: its allowed domains and its organization's (a host must satisfy both), the operator's
private-network allowance, an optional upstream proxy (itself held to the internal-address rule, so a
tenant cannot point it at the cloud metadata service), and a byte budget (a download bomb or a 50 MB page
ends there).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
import secrets
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_HEAD = 64 * 1024
CONNECT_TIMEOUT = 10.0
RESOLVE_TIMEOUT = 5.0


class Blocked(Exception):
    pass


def parse_networks(items: Iterable[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(i.strip(), strict=False) for i in items if i.strip()]


def host_matches(host: str, patterns: Iterable[str]) -> bool:
    """`example.com` allows it and its subdomains; `*.example.com` only its subdomains."""
    host = host.lower().rstrip(".")
    for raw in patterns:
        pattern = raw.lower().rstrip(".").split(":")[0]
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern or host.endswith("." + pattern):
            return True
    return False


def address_blocked(ip: IPAddress, allowed: Iterable[IPNetwork]) -> str | None:
    """Why `ip` may not be reached, or None. Anything not globally routable is internal: loopback,
    RFC 1918, link-local (cloud metadata), CGNAT, unique-local, multicast, reserved."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip.version == net.version and ip in net for net in allowed):
        return None
    if ip.is_global and not ip.is_multicast:
        return None
    if ip.is_loopback:
        kind = "loopback"
    elif ip.is_link_local:
        kind = "link-local/metadata"
    elif isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        kind = "CGNAT"
    elif ip.is_private:
        kind = "private"
    else:
        kind = "reserved"
    return f"{kind} address {ip}"


@dataclass
class Upstream:
    host: str
    port: int
    auth: str | None  # "user:password"


# on_block(host, reason, url): url is scheme://host[:port]/path of a plain-HTTP request, None for a tunnel
BlockHook = Callable[[str, str, str | None], None]


@dataclass
class Policy:
    allowed_domains: list[str] | None = None  # the task's
    org_allowed_domains: list[str] | None = None  # its organization's: a host must satisfy both lists
    allowed_networks: list[IPNetwork] = field(default_factory=list)
    upstream: Upstream | None = None
    max_bytes: int = 200 * 1024 * 1024
    on_block: BlockHook | None = None
    bytes_in: int = 0
    blocked: list[tuple[str, str]] = field(default_factory=list)
    # (host, port) -> the addresses checked for this task: its later connections there go to one of them
    # without resolving again, so a rebinding answer cannot reach it mid-task either; refusals are not kept
    # (each one is reported)
    checked: dict[tuple[str, int], list[IPAddress]] = field(default_factory=dict)

    def block(self, host: str, reason: str, url: str | None = None) -> Blocked:
        self.blocked.append((host, reason))
        if self.on_block is not None:
            try:
                self.on_block(host, reason, url)
            except Exception:  # reporting must never change what the proxy does
                log.warning("reporting a blocked request failed", exc_info=True)
        return Blocked(reason)


def upstream_from(server: str, username: str | None, password: str | None) -> Upstream:
    parts = urlsplit(server)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError("only http:// upstream proxies are supported")
    auth = f"{username}:{password or ''}" if username else None
    return Upstream(parts.hostname, parts.port or 80, auth)


async def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise Blocked(f"cannot resolve {host}: {exc}") from None
    out: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if ip not in out:
            out.append(ip)
    return out


async def check(policy: Policy, host: str, port: int, url: str | None = None) -> list[IPAddress]:
    """The addresses `host` may be reached at, or Blocked (recorded as a security event)."""
    host = host.lower().strip("[]").rstrip(".")
    if policy.allowed_domains is not None and not host_matches(host, policy.allowed_domains):
        raise policy.block(host, f"{host} is not in the task's allowed domains", url)
    if policy.org_allowed_domains is not None and not host_matches(host, policy.org_allowed_domains):
        raise policy.block(host, f"{host} is not in the organization's allowed domains", url)
    known = policy.checked.get((host, port))
    if known is not None:
        return known
    try:
        ips = await resolve(host, port)
    except Blocked as exc:
        raise policy.block(host, str(exc), url) from None
    for ip in ips:  # every address must pass: a name that resolves anywhere internal is internal
        reason = address_blocked(ip, policy.allowed_networks)
        if reason:
            raise policy.block(host, f"{host} resolves to a {reason}", url)
    policy.checked[(host, port)] = ips
    return ips


async def check_upstream(policy: Policy, upstream: Upstream) -> list[IPAddress]:
    """The upstream proxy's addresses, held to the internal-address rule like any host: a task or an org
    admin chooses the proxy, so it must not be a way to reach the worker's own network."""
    host = upstream.host.lower().strip("[]").rstrip(".")
    key = ("\0upstream " + host, upstream.port)  # no hostname contains NUL: apart from the targets'
    known = policy.checked.get(key)
    if known is not None:
        return known
    try:
        ips = await resolve(host, upstream.port)
    except Blocked as exc:
        raise policy.block(host, f"upstream proxy: {exc}") from None
    for ip in ips:
        reason = address_blocked(ip, policy.allowed_networks)
        if reason:
            raise policy.block(host, f"the upstream proxy {host} resolves to a {reason}")
    policy.checked[key] = ips
    return ips


def _query_less(target: str) -> str | None:
    """scheme://host[:port]/path of an absolute request target: no query, fragment or credentials."""
    try:
        parts = urlsplit(target)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return None
    if not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}{port}{parts.path or '/'}"


class GuardProxy:
    """An HTTP proxy on 127.0.0.1 that enforces one Policy per registered token."""

    def __init__(self) -> None:
        # token -> its policy; None while reserved for a prepared context whose task has not arrived yet
        self._policies: dict[str, Policy | None] = {}
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def register(self, policy: Policy) -> tuple[str, str]:
        """(username, password) for the context's proxy settings."""
        token = secrets.token_urlsafe(16)
        self._policies[token] = policy
        return token, "x"

    def reserve(self) -> tuple[str, str]:
        """Credentials for a context prepared before its task: every request under them is refused until
        `bind` gives them the task's policy."""
        token = secrets.token_urlsafe(16)
        self._policies[token] = None
        return token, "x"

    def bind(self, token: str, policy: Policy) -> None:
        """The policy of a reserved token; a token bound once is never rebound (one context, one task)."""
        if token not in self._policies or self._policies[token] is not None:
            raise KeyError("not a reserved, unbound proxy token")
        self._policies[token] = policy

    def unregister(self, token: str) -> None:
        self._policies.pop(token, None)

    @property
    def server(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        except Exception:
            log.debug("proxy connection failed", exc_info=True)
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = [line for line in lines[1:] if line]
        known, policy = self._policy(headers)
        if known and policy is None:  # a prepared context before its task: nothing may leave it
            writer.write(
                b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                b"Content-Length: 0\r\n\r\n"
            )
            await writer.drain()
            return
        if policy is None:
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="browserfleet"\r\nContent-Length: 0\r\n\r\n'
            )
            await writer.drain()
            return
        shown: str | None = None
        if method == "CONNECT":
            host, _, port_s = target.rpartition(":")
            port = int(port_s)
        else:
            url = urlsplit(target)
            if url.scheme != "http" or not url.hostname:
                raise ValueError("not a proxy request")
            host, port = url.hostname, url.port or 80
            shown = _query_less(target)
        try:
            ips = await check(policy, host, port, shown)
            if policy.upstream is not None:
                ips = await check_upstream(policy, policy.upstream)
        except Blocked as exc:
            body = f"blocked by browserfleet: {exc}".encode()
            writer.write(
                b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            return
        up_reader, up_writer = await self._open(policy, host, port, ips, tunnel=method == "CONNECT")
        try:
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                await writer.drain()
            else:
                kept = [
                    h for h in headers if not h.lower().startswith(("proxy-", "connection:", "keep-alive:"))
                ]
                if policy.upstream is not None:
                    first = f"{method} {target} {version}"
                    if policy.upstream.auth:
                        cred = base64.b64encode(policy.upstream.auth.encode()).decode()
                        kept.append(f"Proxy-Authorization: Basic {cred}")
                else:
                    path = urlsplit(target)
                    first = f"{method} {path.path or '/'}{'?' + path.query if path.query else ''} {version}"
                # one request per connection: the browser may reuse a proxy connection for another host
                up_writer.write(
                    ("\r\n".join([first, *kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1")
                )
                await up_writer.drain()
            await self._pipe(reader, writer, up_reader, up_writer, policy, rewrite=method != "CONNECT")
        finally:
            with contextlib.suppress(Exception):
                up_writer.close()

    def _policy(self, headers: list[str]) -> tuple[bool, Policy | None]:
        """(the credentials name a registered or reserved token, its policy)."""
        for h in headers:
            name, _, value = h.partition(":")
            if name.strip().lower() == "proxy-authorization":
                scheme, _, cred = value.strip().partition(" ")
                if scheme.lower() != "basic":
                    return False, None
                with contextlib.suppress(ValueError):
                    user = base64.b64decode(cred).decode().split(":", 1)[0]
                    return user in self._policies, self._policies.get(user)
        return False, None

    async def _open(
        self, policy: Policy, host: str, port: int, ips: list[IPAddress], *, tunnel: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """`ips` are the checked addresses of the target, or of the upstream proxy when there is one:
        connect to one we checked, never re-resolve (DNS rebinding)."""
        up = policy.upstream
        if up is None:
            return await asyncio.wait_for(asyncio.open_connection(str(ips[0]), port), CONNECT_TIMEOUT)
        r, w = await asyncio.wait_for(asyncio.open_connection(str(ips[0]), up.port), CONNECT_TIMEOUT)
        if tunnel:
            auth = ""
            if up.auth:
                auth = f"Proxy-Authorization: Basic {base64.b64encode(up.auth.encode()).decode()}\r\n"
            w.write(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n".encode())
            await w.drain()
            reply = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), CONNECT_TIMEOUT)
            status = reply.split(b" ", 2)[1] if b" " in reply else b"?"
            if status != b"200":
                w.close()
                raise OSError(f"upstream proxy refused CONNECT: {status.decode(errors='replace')}")
        return r, w

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        policy: Policy,
        *,
        rewrite: bool,
    ) -> None:
        async def upstream_to_client() -> None:
            first = rewrite
            while True:
                data = await up_reader.read(65536)
                if not data:
                    return
                if first:  # tell the browser not to reuse this connection either
                    data = data.replace(b"\r\n", b"\r\nConnection: close\r\n", 1)
                    first = False
                policy.bytes_in += len(data)
                if policy.bytes_in > policy.max_bytes:
                    raise policy.block(
                        "*", f"the task's transfer budget of {policy.max_bytes} bytes is spent"
                    )
                writer.write(data)
                await writer.drain()

        async def client_to_upstream() -> None:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                up_writer.write(data)
                await up_writer.drain()

        down = asyncio.create_task(upstream_to_client())
        up = asyncio.create_task(client_to_upstream())
        try:
            await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
            if up.done() and not down.done():  # client finished sending: wait for the answer
                await asyncio.wait({down})
        finally:
            for t in (down, up):
                t.cancel()
            await asyncio.gather(down, up, return_exceptions=True)
