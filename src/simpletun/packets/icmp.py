"""ICMP (v4) and ICMPv6 messages: echo, neighbour discovery, and names for the rest."""

from __future__ import annotations

import struct
from typing import NamedTuple

from . import Malformed
from .checksum import checksum, pseudo6
from .ip import PROTO_ICMPV6

ECHO_REPLY = 0
ECHO_REQUEST = 8
ECHO6_REQUEST = 128
ECHO6_REPLY = 129
ROUTER_SOLICIT = 133
ROUTER_ADVERT = 134
NEIGHBOR_SOLICIT = 135
NEIGHBOR_ADVERT = 136

NA_ROUTER = 0x80000000
NA_SOLICITED = 0x40000000
NA_OVERRIDE = 0x20000000
OPT_SOURCE_LLADDR = 1
OPT_TARGET_LLADDR = 2

ICMP4_NAMES = {
    0: "echo reply", 3: "destination unreachable", 4: "source quench", 5: "redirect",
    8: "echo request", 11: "time exceeded", 12: "parameter problem", 13: "timestamp request",
    14: "timestamp reply",
}
ICMP6_NAMES = {
    1: "destination unreachable", 2: "packet too big", 3: "time exceeded",
    4: "parameter problem", 128: "echo request", 129: "echo reply",
    130: "multicast listener query", 131: "multicast listener report",
    132: "multicast listener done", 133: "router solicitation", 134: "router advertisement",
    135: "neighbor solicitation", 136: "neighbor advertisement", 137: "redirect",
    143: "multicast listener report v2",
}

_HDR = struct.Struct("!BBHHH")


class Icmp(NamedTuple):
    type: int
    code: int
    ident: int  # echo only (0 otherwise)
    seq: int  # echo only
    body: bytes  # everything after the 4-byte type/code/checksum


def parse_icmp(buf: bytes) -> Icmp:
    if len(buf) < 4:
        raise Malformed(f"truncated ICMP header ({len(buf)} bytes)")
    icmp_type, code = buf[0], buf[1]
    ident = seq = 0
    if icmp_type in (ECHO_REQUEST, ECHO_REPLY, ECHO6_REQUEST, ECHO6_REPLY):
        if len(buf) < 8:
            raise Malformed(f"truncated ICMP echo ({len(buf)} bytes)")
        ident, seq = struct.unpack_from("!HH", buf, 4)
    return Icmp(icmp_type, code, ident, seq, bytes(buf[4:]))


def build_icmp4(icmp_type: int, code: int, body: bytes) -> bytes:
    msg = bytes([icmp_type, code, 0, 0]) + body
    return msg[:2] + checksum(msg).to_bytes(2, "big") + msg[4:]


def build_icmp6(src: bytes, dst: bytes, icmp_type: int, code: int, body: bytes) -> bytes:
    msg = bytes([icmp_type, code, 0, 0]) + body
    csum = checksum(msg, pseudo6(src, dst, PROTO_ICMPV6, len(msg)))
    return msg[:2] + csum.to_bytes(2, "big") + msg[4:]


def nd_target(body: bytes) -> bytes:
    """The target address of a neighbour solicitation/advertisement body."""
    if len(body) < 20:
        raise Malformed("truncated neighbor discovery message")
    return body[4:20]


def nd_options(body: bytes) -> dict[int, bytes]:
    """Neighbour discovery options (after reserved + target) by type."""
    opts: dict[int, bytes] = {}
    off = 20
    while off + 2 <= len(body):
        kind, units = body[off], body[off + 1]
        if units == 0:
            raise Malformed("neighbor discovery option of length 0")
        end = off + units * 8
        if end > len(body):
            raise Malformed("neighbor discovery option runs past the message")
        opts.setdefault(kind, body[off + 2:end])
        off = end
    return opts


def build_na_body(target: bytes, mac: bytes, flags: int) -> bytes:
    return flags.to_bytes(4, "big") + target + bytes([OPT_TARGET_LLADDR, 1]) + mac
