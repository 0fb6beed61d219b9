"""The attacker's builders and capture readers for the TCP and ICMP links
(simpletun.lab.wgattack): frames as the TCP link reads them, marked echo requests as the
ICMP server parses them, and TCP segments and echo messages read back from capture
records."""

from __future__ import annotations

import ipaddress
import struct

from simpletun.lab import wgattack
from simpletun.packets import ethernet, ip
from simpletun.tools.pcap import Record
from simpletun.wire import icmp

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
A4, B4 = ipaddress.IPv4Address("192.0.2.1"), ipaddress.IPv4Address("192.0.2.2")
A6, B6 = ipaddress.IPv6Address("fd00::1"), ipaddress.IPv6Address("fd00::2")


def test_tcp_frames_read_back_as_the_link_reads_them() -> None:
    msgs = [b"\x01" * 148, b"x", b"\x04" + bytes(40)]
    stream = wgattack.tcp_frame(*msgs)
    assert stream[:2] == b"\x00\x94" and len(stream) == sum(2 + len(m) for m in msgs)
    assert wgattack.tcp_messages(stream) == msgs
    # an empty frame is skipped; a frame left incomplete is never read
    assert wgattack.tcp_messages(b"\0\0" + stream + b"\x00\x10abc") == msgs


def test_marked_requests_parse_as_the_icmp_server_parses_them() -> None:
    req = wgattack.marked_request(0x4141, 7, b"message")
    assert icmp.valid4(req)
    echo = icmp.parse(memoryview(req))
    assert (echo.type, echo.ident, echo.seq, echo.magic, bytes(echo.payload)) == (
        icmp.ECHO_REQUEST, 0x4141, 7, icmp.REQUEST_MAGIC, b"message")
    assert not icmp.valid4(wgattack.marked_request(0x4141, 7, b"message", checksum=False))
    poll = icmp.parse(memoryview(wgattack.marked_request(1, 2, b"")))
    assert poll.magic == icmp.REQUEST_MAGIC and bytes(poll.payload) == b""
    v6 = wgattack.marked_request(1, 2, b"m", v6=True)
    assert v6[0] == icmp.ECHO6_REQUEST and v6[2:4] == b"\0\0"  # the kernel sums ICMPv6
    assert icmp.parse(memoryview(v6)).magic == icmp.REQUEST_MAGIC


def _record(packet: bytes, v6: bool = False) -> Record:
    frame = ethernet.build_frame(MAC_B, MAC_A, 0x86DD if v6 else 0x0800, packet)
    return Record(1.5, frame, len(frame))


def test_echoes_read_back_from_a_capture() -> None:
    req = wgattack.marked_request(9, 3, b"hello")
    reply = icmp.seal4(icmp.head(icmp.ECHO_REPLY, 9, 3, icmp.REPLY_MAGIC), b"hi") + b"hi"
    v6 = wgattack.marked_request(5, 1, b"six", v6=True)
    records = [
        _record(ip.build_ipv4(A4.packed, B4.packed, 1, req)),
        _record(ip.build_ipv4(B4.packed, A4.packed, 1, reply)),
        _record(ip.build_ipv6(A6.packed, B6.packed, 58, v6), v6=True),
        _record(ip.build_ipv4(A4.packed, B4.packed, 1, b"\x03\x01" + bytes(30))),  # no echo
        _record(ip.build_ipv4(A4.packed, B4.packed, 17, bytes(12))),  # UDP
        Record(0.0, b"\xff" * 10, 10),  # not even Ethernet
    ]
    got = wgattack.echoes(records)
    assert [(e.src, e.dst, e.type, e.ident, e.seq, e.request) for e in got] == [
        ("192.0.2.1", "192.0.2.2", 8, 9, 3, True),
        ("192.0.2.2", "192.0.2.1", 0, 9, 3, False),
        ("fd00::1", "fd00::2", 128, 5, 1, True)]
    assert (got[0].mark, got[0].message) == (icmp.REQUEST_MAGIC, b"hello")
    assert (got[1].mark, got[1].message) == (icmp.REPLY_MAGIC, b"hi")
    assert got[2].message == b"six" and got[0].time == 1.5


def test_tcp_segments_read_back_from_a_capture() -> None:
    payload = wgattack.tcp_frame(b"abc")
    # sport, dport, seq, ack, data offset (6 words: 4 bytes of options), flags, window
    header = struct.pack("!HHIIBBHHH", 40000, 55555, 1234, 1, 6 << 4, 0x18, 100, 0, 0)
    seg = header + b"\x01\x01\x01\x01" + payload
    records = [_record(ip.build_ipv4(A4.packed, B4.packed, 6, seg)),
               _record(ip.build_ipv6(A6.packed, B6.packed, 6, seg), v6=True),
               _record(ip.build_ipv4(A4.packed, B4.packed, 6, b"short"))]
    got = wgattack.tcp_segments(records)
    assert [(s.src, s.dst, s.sport, s.dport, s.seq, s.flags, s.payload) for s in got] == [
        ("192.0.2.1", "192.0.2.2", 40000, 55555, 1234, 0x18, payload),
        ("fd00::1", "fd00::2", 40000, 55555, 1234, 0x18, payload)]
    assert wgattack.tcp_messages(got[0].payload) == [b"abc"]
