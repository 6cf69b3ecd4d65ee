"""Where a webhook may be sent: never into our own network unless an operator allows it.

A customer chooses the URL, so an unchecked URL is a server-side request forgery: it could reach the
cloud metadata service, the database or an admin port on loopback. We refuse hosts that resolve to any
non-global address (loopback, private, link-local incl. 169.254.169.254, CGNAT, multicast, reserved) at
registration and again at delivery, because DNS can change in between. At delivery we also connect to
the very address we checked (the URL's host stays in the Host header and TLS SNI), so a DNS answer that
flips between the check and the connect (rebinding) cannot slip through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


class TargetRefused(Exception):
    """The URL's host is not a public address, or does not resolve."""


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class Target:
    url: str
    host: str
    # the checked address to connect to; None when private targets are allowed (no pinning needed)
    address: str | None = None


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"host {host!r} does not resolve") from exc
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise TargetRefused(f"host {host!r} does not resolve")
    return addresses


async def check(url: str, *, allow_private: bool) -> Target:
    """Resolve `url`'s host and refuse it unless every address it resolves to is public."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("URL must be http(s) with a host")
    host = parts.hostname
    if allow_private:
        return Target(url=url, host=host)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = await _resolve(host, port)
    blocked = [str(a) for a in addresses if not is_public(a)]
    if blocked:
        raise TargetRefused(f"host {host!r} resolves to a non-public address ({blocked[0]})")
    return Target(url=url, host=host, address=str(addresses[0]))
