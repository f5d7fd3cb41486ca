"""Who is asking: the client's address, believing `X-Forwarded-For` only as far as our own proxies wrote it.

Each proxy appends the address it received the request from, so the header reads `client, proxy1, proxy2` and the
peer is the last proxy. Entries left of the first untrusted one may have been written by the client itself; the
client is therefore the rightmost entry that is not a trusted proxy (the same rule as nginx's `real_ip_recursive`).
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from starlette.types import Scope

Network = IPv4Network | IPv6Network


def _parse(value: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(value.strip())
    except ValueError:
        return None


def _trusted(address: IPv4Address | IPv6Address | None, proxies: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in proxies)


def client_address(scope: Scope, *, trusted_proxies: Sequence[Network] = ()) -> str | None:
    """The client's address: the peer, or, when the peer is a trusted proxy, what the proxies say it is."""
    client = scope.get("client")
    peer = str(client[0]) if client else None  # ASGI gives (host, port)
    if not trusted_proxies or not _trusted(_parse(peer or ""), trusted_proxies):
        return peer
    forwarded = [
        entry.strip()
        for name, value in scope.get("headers", [])
        if name == b"x-forwarded-for"
        for entry in value.decode("latin-1").split(",")
    ]
    client_side = peer
    for entry in reversed(forwarded):
        address = _parse(entry)
        if address is None:  # garbage from beyond our proxies: the last hop we could vouch for is the client
            return client_side
        client_side = str(address)
        if not _trusted(address, trusted_proxies):
            return client_side
    return client_side
