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
    """An address as proxies write it: bare, `[v6]`, `v4:port` or `[v6]:port`; IPv4-mapped IPv6 as IPv4."""
    text = value.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:  # IPv4 with a port (an IPv6 address has several colons)
        text = text.split(":", 1)[0]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPv4Address | IPv6Address | None, proxies: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in proxies)


def client_address(scope: Scope, *, trusted_proxies: Sequence[Network] = ()) -> str | None:
    """The client's address: the peer, or, when the peer is a trusted proxy, what the proxies say it is."""
    client = scope.get("client")
    parsed_peer = _parse(str(client[0])) if client else None  # ASGI gives (host, port)
    peer = str(parsed_peer) if parsed_peer is not None else (str(client[0]) if client else None)
    if not trusted_proxies or not _trusted(parsed_peer, trusted_proxies):
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
