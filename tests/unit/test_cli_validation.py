"""What the tunnel's command line checks before it touches anything (pure parts): the SERVER
argument, the largest MTU per transport and underlay family, full-tunnel route halves."""

from __future__ import annotations

import ipaddress

import click
import pytest

from simpletun.cli._common import parse_addresses
from simpletun.device import routing
from simpletun.transport.tcp import TransportError, split_host_port
from simpletun.tunnel import mtu
from simpletun.wireguard.messages import padded


@pytest.mark.parametrize("text,expected", [
    ("192.0.2.1", ("192.0.2.1", 55555)),
    ("192.0.2.1:80", ("192.0.2.1", 80)),
    ("server.example", ("server.example", 55555)),
    ("fd00::1", ("fd00::1", 55555)),
    ("[fd00::1]", ("fd00::1", 55555)),
    ("[fd00::1]:80", ("fd00::1", 80)),
    ("fe80::1%eth0", ("fe80::1%eth0", 55555)),
])
def test_good_servers(text: str, expected: tuple[str, int]) -> None:
    assert split_host_port(text, 55555) == expected


@pytest.mark.parametrize("text,why", [
    ("[fd00::1", "'\\[' without '\\]'"),
    ("fd00::1]:80", "'\\]' without '\\['"),
    ("[fd00::1]80", "only ':PORT' may follow"),
    ("[fd00::1]:", "no port after ':'"),
    ("192.0.2.1:", "no port after ':'"),
    ("[server.example]:80", "brackets are for IPv6"),
    ("1::2::3", "neither an address nor a host name"),
    ("a host", "neither an address nor a host name"),
    ("-s", "neither an address nor a host name"),
    (":80", "no host"),
    ("192.0.2.1:99999", "bad port"),
])
def test_malformed_servers_are_refused(text: str, why: str) -> None:
    with pytest.raises(TransportError, match=why):
        split_host_port(text, 55555)


def test_an_address_needs_a_prefix_on_the_command_line() -> None:
    assert [str(a) for a in parse_addresses(("10.0.0.1/24", "fd00::1/64"))] == [
        "10.0.0.1/24", "fd00::1/64"]
    with pytest.raises(click.BadParameter, match=r"give a prefix, e\.g\. 10\.0\.0\.1/24"):
        parse_addresses(("10.0.0.1",))
    with pytest.raises(click.BadParameter, match=r"e\.g\. fd00::1/64"):
        parse_addresses(("fd00::1",))


def test_largest_mtu_per_transport_and_family() -> None:
    # UDP: 65535 - IPv4 header 20 - UDP 8 - WireGuard's header and tag 32; IPv6's payload
    # length leaves its own 40-byte header out
    assert mtu.max_mtu("udp", tap=False, family=4) == 65475
    assert mtu.max_mtu("udp", tap=False, family=6) == 65495
    # ICMP: echo header 8 + mark 6 instead of UDP's 8
    assert mtu.max_mtu("icmp", tap=False, family=4) == 65469
    assert mtu.max_mtu("icmp", tap=False, family=6) == 65489
    # a tap frame carries Ethernet (and a VLAN tag), the extension header and up to 15
    # bytes of padding on top
    assert mtu.max_mtu("udp", tap=True, family=4) == 65475 - 18 - 19
    # encrypted TCP: one message behind a 2-byte length
    assert mtu.max_mtu("tcp", tap=False) == 65535 - 32
    # the plaintext native frames carry whatever the device can hold
    assert mtu.max_mtu("tcp", tap=False, encrypted=False) == 65535
    assert mtu.max_mtu("tcp", tap=True, encrypted=False) == 65521
    # the defaults fit an outer IPv6 packet in 1500 bytes
    assert mtu.DEFAULT_MTU["udp"] == 1420 and 1420 + 40 + 8 + 32 == 1500
    icmp_default = mtu.DEFAULT_MTU["icmp"]
    assert icmp_default is not None and icmp_default + 40 + 14 + 32 <= 1500
    # a tap device's full-size frame (Ethernet, a VLAN tag, the extension header, padded
    # as the core pads a packet above the MTU) fits as well
    for transport, outer in (("udp", 40 + 8 + 32), ("icmp", 40 + 14 + 32)):
        tap_mtu = mtu.default_mtu(transport, tap=True)
        assert tap_mtu is not None
        assert padded(tap_mtu + 18 + 4, tap_mtu) + outer <= 1500, transport
    assert mtu.default_mtu("tcp", tap=True) is None


def nets(*texts: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(t) for t in texts]


def test_a_default_route_becomes_two_halves() -> None:
    assert routing.split_default(nets("0.0.0.0/0")) == nets("0.0.0.0/1", "128.0.0.0/1")
    assert routing.split_default(nets("::/0", "10.1.0.0/16", "0.0.0.0/1", "0.0.0.0/0")) == \
        nets("::/1", "8000::/1", "10.1.0.0/16", "0.0.0.0/1", "128.0.0.0/1")


def test_covering() -> None:
    routes = nets("0.0.0.0/1", "128.0.0.0/1", "fd00::/8")
    assert routing.covering(routes, "192.0.2.1") == ["128.0.0.0/1"]
    assert routing.covering(routes, "::ffff:10.0.0.1") == ["0.0.0.0/1"]
    assert routing.covering(routes, "2001:db8::1") == []
    addrs = [ipaddress.ip_interface("192.0.2.9/24")]
    assert routing.covering(addrs, "192.0.2.1") == ["192.0.2.9/24"]
    assert routing.covering(addrs, "192.0.3.1") == []
