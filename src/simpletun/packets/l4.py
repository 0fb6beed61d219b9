"""TCP and UDP headers, as much as a one-line description needs."""

from __future__ import annotations

import struct
from typing import NamedTuple

from . import Malformed
from .checksum import checksum

_TCP = struct.Struct("!HHIIBBH")
_UDP = struct.Struct("!HHHH")

TCP_FLAGS = ((0x01, "F"), (0x02, "S"), (0x04, "R"), (0x08, "P"), (0x20, "U"), (0x40, "E"),
             (0x80, "W"))


class Tcp(NamedTuple):
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    header_len: int


class Udp(NamedTuple):
    sport: int
    dport: int
    length: int


def parse_tcp(buf: bytes) -> Tcp:
    if len(buf) < _TCP.size:
        raise Malformed(f"truncated TCP header ({len(buf)} bytes)")
    sport, dport, seq, ack, off, flags, win = _TCP.unpack_from(buf)
    hlen = (off >> 4) * 4
    if hlen < 20 or hlen > len(buf):
        raise Malformed(f"TCP header length {hlen} does not fit in {len(buf)} bytes")
    return Tcp(sport, dport, seq, ack, flags, win, hlen)


def parse_udp(buf: bytes) -> Udp:
    if len(buf) < _UDP.size:
        raise Malformed(f"truncated UDP header ({len(buf)} bytes)")
    sport, dport, length, _ = _UDP.unpack_from(buf)
    return Udp(sport, dport, length)


def tcp_flags(flags: int) -> str:
    """tcpdump's notation: ``S``, ``S.``, ``P.``, ``.`` (ACK alone), ``F.``, ``R``..."""
    text = "".join(ch for bit, ch in TCP_FLAGS if flags & bit)
    if flags & 0x10:
        text += "."
    return text or "none"


def build_udp(sport: int, dport: int, payload: bytes, *, pseudo: int | None = None) -> bytes:
    """A UDP datagram; with ``pseudo`` (a pseudo-header partial sum) its checksum is filled
    in, else left 0 (allowed over IPv4 only)."""
    head = _UDP.pack(sport, dport, 8 + len(payload), 0)
    if pseudo is None:
        return head + payload
    csum = checksum(head + payload, pseudo) or 0xFFFF
    return head[:6] + csum.to_bytes(2, "big") + payload
