import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simpletun.packets.checksum import pseudo6, verify
from simpletun.packets.ethernet import ARP_REPLY, ETH_P_ARP, parse_arp, parse_frame
from simpletun.packets.icmp import NA_OVERRIDE, NA_SOLICITED, OPT_TARGET_LLADDR, nd_options
from simpletun.packets.ip import parse_ipv4, parse_ipv6
from simpletun.tools.responder import DEFAULT_MAC, Responder

from ..packets import (
    HOST_MAC,
    a,
    arp_request,
    neighbor_solicit,
    ping4,
    ping4_frame,
    ping6,
    ping6_frame,
)
from .vectors import TAP_ARP_WHO_HAS, TAP_DAD_NS, TAP_MAC, TUN_PING4, TUN_PING6, TUN_TCP_SYN

ADDRS = [ipaddress.ip_interface("10.0.0.1/24"), ipaddress.ip_interface("fd00::1/64")]


def tun() -> Responder:
    return Responder(ADDRS)


def tap() -> Responder:
    return Responder(ADDRS, tap=True)


def check_echo4_reply(request: bytes, reply: bytes) -> None:
    rq, rp = parse_ipv4(request), parse_ipv4(reply)
    assert (rp.src, rp.dst) == (rq.dst, rq.src)
    assert verify(reply[:20])
    icmp = reply[20:]
    assert icmp[0] == 0 and icmp[1] == 0 and verify(icmp)
    assert icmp[4:] == request[rq.header_len + 4:]  # id, seq and data echoed


def check_echo6_reply(request: bytes, reply: bytes) -> None:
    rq, rp = parse_ipv6(request), parse_ipv6(reply)
    assert (rp.src, rp.dst) == (rq.dst, rq.src)
    msg = reply[40:]
    assert msg[0] == 129 and verify(msg, pseudo6(rp.src, rp.dst, 58, len(msg)))
    assert msg[4:] == request[40 + 4:]


def test_echo_reply_to_kernel_ping4() -> None:
    reply = tun().respond(TUN_PING4)
    assert reply is not None
    check_echo4_reply(TUN_PING4, reply)
    # byte vector: the reply the kernel's ping accepted in the end-to-end test
    assert reply.hex() == (
        "4500002cffbc40004001271 20a0000020a0000010000cd800dc30001a595056b000000006eba0b0000000000"
        .replace(" ", "")
    )


def test_echo_reply_to_kernel_ping6() -> None:
    reply = tun().respond(TUN_PING6)
    assert reply is not None
    check_echo6_reply(TUN_PING6, reply)


@pytest.mark.parametrize("dst", ["10.0.0.2", "10.0.0.254", "10.0.0.100"])
def test_answers_any_other_address_of_the_subnet(dst: str) -> None:
    assert tun().respond(ping4("10.0.0.1", dst)) is not None


@pytest.mark.parametrize("dst", [
    "10.0.0.1",  # the device's own address: the kernel answers that itself
    "10.0.0.0", "10.0.0.255",  # network and broadcast
    "10.0.1.2",  # another subnet
    "224.0.0.1",
])
def test_leaves_alone(dst: str) -> None:
    assert tun().respond(ping4("10.0.0.1", dst)) is None


def test_ignores_non_echo_and_bad_checksums() -> None:
    r = tun()
    assert r.respond(TUN_TCP_SYN) is None
    bad = bytearray(TUN_PING4)
    bad[-1] ^= 0xFF
    assert r.respond(bytes(bad)) is None
    reply = r.respond(TUN_PING4)
    assert reply is not None and r.respond(reply) is None  # never answers a reply
    assert r.respond(ping6("fd00::1", "fd00::1")) is None
    assert r.respond(ping6("fd00::1", "fd01::2")) is None
    assert r.counts == {"echo": 1}


def test_fragments_are_not_answered() -> None:
    frag = bytearray(ping4("10.0.0.1", "10.0.0.2"))
    frag[6] |= 0x20  # more fragments
    assert tun().respond(bytes(frag)) is None


def test_address_changes_apply() -> None:
    r = tun()
    r.set_addresses([ipaddress.ip_interface("192.168.7.1/30")])
    assert r.respond(ping4("10.0.0.1", "10.0.0.2")) is None
    assert r.respond(ping4("192.168.7.1", "192.168.7.2")) is not None
    assert r.respond(ping4("192.168.7.1", "192.168.7.3")) is None  # broadcast of the /30


def test_point_to_point_31_has_no_broadcast() -> None:
    r = Responder([ipaddress.ip_interface("10.9.9.0/31")])
    assert r.respond(ping4("10.9.9.0", "10.9.9.1")) is not None


def test_arp_reply_to_kernel_request() -> None:
    r = tap()
    reply = r.respond(TAP_ARP_WHO_HAS)
    assert reply is not None
    f = parse_frame(reply)
    assert (f.dst, f.src, f.ethertype) == (TAP_MAC, DEFAULT_MAC, ETH_P_ARP)
    arp = parse_arp(reply[14:])
    assert arp.op == ARP_REPLY
    assert (arp.sha, arp.spa) == (DEFAULT_MAC, a("10.0.0.2"))
    assert (arp.tha, arp.tpa) == (TAP_MAC, a("10.0.0.1"))


def test_arp_for_own_address_or_gratuitous_is_ignored() -> None:
    r = tap()
    assert r.respond(arp_request("10.0.0.2", "10.0.0.1")) is None
    assert r.respond(arp_request("10.0.0.5", "10.0.0.5")) is None


def test_neighbor_advertisement() -> None:
    reply = tap().respond(neighbor_solicit("fd00::1", "fd00::2"))
    assert reply is not None
    f = parse_frame(reply)
    assert (f.dst, f.src) == (HOST_MAC, DEFAULT_MAC)
    ip = parse_ipv6(reply[14:])
    assert (ip.src, ip.dst, ip.hop_limit) == (a("fd00::2"), a("fd00::1"), 255)
    msg = reply[14 + 40:]
    assert msg[0] == 136 and verify(msg, pseudo6(ip.src, ip.dst, 58, len(msg)))
    (flags,) = struct.unpack_from("!I", msg, 4)
    assert flags == NA_SOLICITED | NA_OVERRIDE
    assert msg[8:24] == a("fd00::2")
    assert nd_options(msg[4:])[OPT_TARGET_LLADDR] == DEFAULT_MAC


def test_duplicate_address_detection_is_never_answered() -> None:
    assert tap().respond(TAP_DAD_NS) is None


def test_echo_on_tap_only_to_our_mac() -> None:
    r = tap()
    reply = r.respond(ping4_frame(DEFAULT_MAC, "10.0.0.1", "10.0.0.2"))
    assert reply is not None
    assert parse_frame(reply).dst == HOST_MAC
    check_echo4_reply(ping4("10.0.0.1", "10.0.0.2"), reply[14:])
    assert r.respond(ping4_frame(b"\x02" * 6, "10.0.0.1", "10.0.0.2")) is None
    reply6 = r.respond(ping6_frame(DEFAULT_MAC, "fd00::1", "fd00::3"))
    assert reply6 is not None
    check_echo6_reply(ping6("fd00::1", "fd00::3"), reply6[14:])
    assert r.counts == {"echo": 1, "echo6": 1}


@given(st.binary(max_size=300), st.booleans())
def test_any_bytes_in_reply_or_none_out(data: bytes, is_tap: bool) -> None:
    out = Responder(ADDRS, tap=is_tap).respond(data)
    assert out is None or isinstance(out, bytes)


@given(st.sampled_from([TUN_PING4, TUN_PING6]), st.integers(0, 70), st.binary(min_size=1, max_size=3))
def test_corrupted_requests_never_raise_and_replies_are_valid(base: bytes, pos: int,
                                                              junk: bytes) -> None:
    pos %= len(base)
    mutated = base[:pos] + junk + base[pos + len(junk):]
    out = tun().respond(mutated)
    if out is not None:  # whatever we answer must itself be a well-formed reply
        if out[0] >> 4 == 4:
            assert verify(out[:20]) and verify(out[20:])
        else:
            ip = parse_ipv6(out)
            assert verify(out[40:], pseudo6(ip.src, ip.dst, 58, len(out) - 40))
