import struct

from hypothesis import given
from hypothesis import strategies as st

from simpletun.tools.describe import describe, describe_ip

from ..packets import arp_request, neighbor_solicit, ping4, ping6, udp4, udp6
from .vectors import (
    TAP_ARP_WHO_HAS,
    TAP_DAD_NS,
    TAP_MLD2_REPORT,
    TUN_PING4,
    TUN_PING6,
    TUN_ROUTER_SOLICIT,
    TUN_TCP_SYN,
)


def test_issue_example_line() -> None:
    assert describe(ping4("10.0.0.1", "10.0.0.2", ident=0x1C, seq=3)) == (
        "IPv4 10.0.0.1 > 10.0.0.2 ICMP echo request id 0x1c seq 3, 84 bytes"
    )


def test_kernel_tun_packets() -> None:
    assert describe(TUN_PING4) == "IPv4 10.0.0.1 > 10.0.0.2 ICMP echo request id 0xdc3 seq 1, 44 bytes"
    assert describe(TUN_PING6) == "IPv6 fd00::1 > fd00::2 ICMPv6 echo request id 0xdc4 seq 1, 64 bytes"
    assert describe(TUN_TCP_SYN) == (
        "IPv4 10.0.0.1.58668 > 10.0.0.2.80 TCP [S] seq 12725862 win 64240 len 0, 60 bytes"
    )
    assert describe(TUN_ROUTER_SOLICIT).startswith(
        "IPv6 fe80::fafe:6b23:4181:9205 > ff02::2 ICMPv6 router solicitation"
    )


def test_kernel_tap_frames() -> None:
    assert describe(TAP_ARP_WHO_HAS, tap=True) == "ARP who-has 10.0.0.2 tell 10.0.0.1, 42 bytes"
    assert describe(TAP_DAD_NS, tap=True) == (
        "IPv6 :: > ff02::1:ff00:1 ICMPv6 neighbor solicitation who has fd00::1, 86 bytes"
    )
    # MLD reports start with a hop-by-hop extension header
    assert "ICMPv6 multicast listener report v2" in describe(TAP_MLD2_REPORT, tap=True)


def test_built_packets() -> None:
    assert describe_ip(udp4("10.0.0.1", "10.0.0.2", 1234, 53, b"x" * 10)) == (
        "IPv4 10.0.0.1.1234 > 10.0.0.2.53 UDP len 10"
    )
    assert describe_ip(udp6("fd00::1", "fd00::2", 1, 2, b"")) == "IPv6 fd00::1.1 > fd00::2.2 UDP len 0"
    assert describe_ip(ping6("fd00::1", "fd00::2", seq=9)).endswith("echo request id 0x1c seq 9")
    assert describe(arp_request("10.0.0.1", "10.0.0.9"), tap=True).startswith(
        "ARP who-has 10.0.0.9 tell 10.0.0.1")
    assert "neighbor solicitation who has fd00::7" in describe(
        neighbor_solicit("fd00::1", "fd00::7"), tap=True)


def test_tcp_flags_and_ack() -> None:
    syn_ack = bytearray(TUN_TCP_SYN)
    syn_ack[33] = 0x12  # SYN+ACK
    struct.pack_into("!I", syn_ack, 28, 99)
    assert "TCP [S.] seq 12725862 ack 99 win" in describe(bytes(syn_ack))


def test_generic_and_malformed_lines() -> None:
    assert describe(b"") == "empty packet, 0 bytes"
    assert describe(b"\x00" * 20) == "not IP (version 0), 20 bytes"
    assert describe(TUN_PING4[:12]) == "IPv4 malformed: truncated IPv4 header (12 bytes), 12 bytes"
    assert describe(TUN_TCP_SYN[:30]).startswith("IPv4 malformed: IPv4 total length 60")
    gre = bytearray(TUN_PING4)
    gre[9] = 47
    assert describe(bytes(gre)) == "IPv4 10.0.0.1 > 10.0.0.2 GRE, 44 bytes"
    assert describe(b"\x01\x02", tap=True).startswith("Ethernet malformed")
    lldp = b"\x01\x80\xc2\x00\x00\x0e" + b"\x02" * 6 + b"\x88\xcc" + bytes(46)
    assert describe(lldp, tap=True) == (
        "02:02:02:02:02:02 > 01:80:c2:00:00:0e EtherType 0x88cc, 60 bytes")
    assert describe(TAP_ARP_WHO_HAS[:20], tap=True).startswith("ARP malformed")


def _check_line(line: str, size: int) -> None:
    assert isinstance(line, str)
    assert "\n" not in line
    assert line.endswith(f", {size} bytes")


@given(st.binary(max_size=200))
def test_any_bytes_give_one_line_tun(data: bytes) -> None:
    _check_line(describe(data), len(data))


@given(st.binary(max_size=200))
def test_any_bytes_give_one_line_tap(data: bytes) -> None:
    _check_line(describe(data, tap=True), len(data))


@given(st.sampled_from([TUN_PING4, TUN_PING6, TUN_TCP_SYN, TUN_ROUTER_SOLICIT]),
       st.integers(0, 80), st.binary(min_size=1, max_size=4))
def test_corrupted_kernel_packets_never_raise(base: bytes, pos: int, junk: bytes) -> None:
    """Real packets cut short or with bytes overwritten anywhere."""
    pos %= len(base)
    mutated = base[:pos] + junk + base[pos + len(junk):]
    _check_line(describe(mutated), len(mutated))
    _check_line(describe(base[:pos]), pos)


@given(st.sampled_from([TAP_ARP_WHO_HAS, TAP_DAD_NS, TAP_MLD2_REPORT]),
       st.integers(0, 120), st.binary(min_size=1, max_size=4))
def test_corrupted_kernel_frames_never_raise(base: bytes, pos: int, junk: bytes) -> None:
    pos %= len(base)
    mutated = base[:pos] + junk + base[pos + len(junk):]
    _check_line(describe(mutated, tap=True), len(mutated))
