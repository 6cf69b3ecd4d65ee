"""The client's address behind load balancers: what the sign-in limits and auth's brute-force counters key
on, and what the audit log records.

`X-Forwarded-For` is believed only as far as `TRUSTED_PROXIES` (CIDRs) reach: the request's direct peer must
be one of them, and the header is read from the right, skipping addresses of further trusted proxies; the
first address that is not one is the client. Anything to its left was written by the client and may be a
lie. With no trusted proxies (the default) or an untrusted peer, the peer is the client, whatever the header
says: anyone can send one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(values: Iterable[str]) -> list[Network]:
    """CIDRs or single addresses (`10.0.0.0/8`, `192.0.2.7`, `fd00::/8`); host bits are forgiven. Raises
    ValueError naming the first entry that is neither."""
    found: list[Network] = []
    for value in values:
        text = value.strip()
        if not text:
            continue
        try:
            found.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or CIDR") from None
    return found


def parse_address(text: str) -> Address | None:
    """An address as proxies write it: `192.0.2.1`, `192.0.2.1:5100`, `2001:db8::1`, `[2001:db8::1]:443`;
    an IPv4-mapped IPv6 address counts as its IPv4 one. None for anything else (`unknown`, garbage)."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, networks: Sequence[Network]) -> bool:
    return any(address in network for network in networks)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str | None:
    """The client's address: the right-most address of `X-Forwarded-For` (every instance of the header, in
    order) that is not a trusted proxy, when the direct `peer` is one; else the peer itself."""
    if peer is None:
        return None
    peer_address = parse_address(peer)
    if peer_address is None or not trusted or not _trusted(peer_address, trusted):
        return str(peer_address) if peer_address is not None else peer
    hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
    nearest: Address = peer_address
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            # a hop no proxy would write: stop at the last one a trusted proxy vouched for
            return str(nearest)
        if not _trusted(address, trusted):
            return str(address)
        nearest = address
    return str(nearest)  # every hop is a trusted proxy: the request started inside
