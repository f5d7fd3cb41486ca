"""The client's address behind reverse proxies: the rightmost X-Forwarded-For entry that is not a trusted proxy."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from api.client import client_address

PROXIES = [ip_network("10.0.0.0/8"), ip_network("fd00::/8")]


def scope(peer: str, *forwarded: str) -> dict[str, object]:
    return {"client": (peer, 1234), "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded]}


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.5", ["1.2.3.4"], "203.0.113.5"),  # not from a proxy: the header is the client's own words
        ("10.0.0.2", ["198.51.100.7"], "198.51.100.7"),
        ("10.0.0.2", ["6.6.6.6, 198.51.100.7"], "198.51.100.7"),  # the client wrote 6.6.6.6
        ("10.0.0.2", ["6.6.6.6, 198.51.100.7, 10.1.1.1"], "198.51.100.7"),  # two proxies
        ("10.0.0.2", ["6.6.6.6", "198.51.100.7"], "198.51.100.7"),  # one header line per proxy
        ("10.0.0.2", ["not-an-address, 10.3.3.3"], "10.3.3.3"),  # garbage: the last hop we can vouch for
        ("10.0.0.2", [], "10.0.0.2"),
        ("10.0.0.2", ["10.4.4.4"], "10.4.4.4"),  # proxies all the way: the leftmost
        ("fd00::1", ["2001:db8::5"], "2001:db8::5"),
        ("::ffff:10.0.0.2", ["198.51.100.7"], "198.51.100.7"),  # a dual-stack listener's view of an IPv4 proxy
        ("10.0.0.2", ["198.51.100.7:51234"], "198.51.100.7"),  # proxies that append the port
        ("10.0.0.2", ["[2001:db8::5]:443"], "2001:db8::5"),
        ("::ffff:203.0.113.5", ["1.2.3.4"], "203.0.113.5"),  # untrusted peer, reported as IPv4
    ],
)
def test_client_is_the_rightmost_untrusted_entry(peer: str, forwarded: list[str], expected: str) -> None:
    assert client_address(scope(peer, *forwarded), trusted_proxies=PROXIES) == expected


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address(scope("10.0.0.2", "198.51.100.7")) == "10.0.0.2"
