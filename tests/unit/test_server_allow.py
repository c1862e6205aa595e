from __future__ import annotations

import ipaddress

import pytest

from hmonitor.agent.server import AllowList, parse_allow, peer_address


def test_parse_allow_accepts_lists_of_both_families() -> None:
    nets = parse_allow("10.1.2.3/32, 192.168.0.0/16,::1,fd00::/8")
    assert [str(n) for n in nets] == ["10.1.2.3/32", "192.168.0.0/16", "::1/128", "fd00::/8"]


@pytest.mark.parametrize("bad", ["", " , ", "10.0.0.0/33", "host.example"])
def test_parse_allow_rejects_bad_entries(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_allow(bad)


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("ipv4:127.0.0.1:5000", "127.0.0.1"),
        ("ipv6:[::1]:5000", "::1"),
        ("ipv6:%5B::1%5D:5000", "::1"),
        ("ipv6:%5B::ffff:10.1.2.3%5D:5000", "10.1.2.3"),  # IPv4 client on a dual-stack socket
        ("unix:/tmp/sock", None),
        ("ipv4:garbage", None),
    ],
)
def test_peer_address(peer: str, expected: str | None) -> None:
    got = peer_address(peer)
    assert got == (ipaddress.ip_address(expected) if expected else None)


def test_allow_list_decides_per_address() -> None:
    allow = AllowList(parse_allow("10.0.0.0/8,::1"))
    assert allow.allows("ipv4:10.9.8.7:1")
    assert allow.allows("ipv6:%5B::ffff:10.9.8.7%5D:1")
    assert allow.allows("ipv6:[::1]:1")
    assert not allow.allows("ipv4:11.0.0.1:1")
    assert not allow.allows("unix:/x")


@pytest.mark.parametrize(
    ("allow", "peer", "admitted"),
    [
        # IPv4-mapped entries match IPv4 clients, whichever socket family they came in on.
        ("::ffff:10.0.0.0/104", "ipv4:10.9.8.7:1", True),
        ("::ffff:10.0.0.0/104", "ipv6:%5B::ffff:10.9.8.7%5D:1", True),
        ("::ffff:10.0.0.0/104", "ipv4:11.0.0.1:1", False),
        ("::ffff:10.1.2.3", "ipv4:10.1.2.3:1", True),
        ("::/0", "ipv4:203.0.113.9:1", True),
        ("::/0", "ipv6:%5B::ffff:203.0.113.9%5D:1", True),
        ("::/0", "ipv6:%5B2001:db8::1%5D:1", True),
        # ::1 and 127.0.0.1 are different addresses.
        ("::1/128", "ipv4:127.0.0.1:1", False),
        ("::1/128", "ipv6:%5B::ffff:127.0.0.1%5D:1", False),
        ("127.0.0.1/32", "ipv6:[::1]:1", False),
        # An IPv4 entry never admits IPv6 clients.
        ("0.0.0.0/0", "ipv6:[2001:db8::1]:1", False),
    ],
)
def test_ipv6_entries_and_ipv4_clients(allow: str, peer: str, admitted: bool) -> None:
    """Issue 7 item 11: "::ffff:10.0.0.0/104" was accepted but never matched anyone."""
    assert AllowList(parse_allow(allow)).allows(peer) is admitted
