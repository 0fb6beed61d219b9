"""The 4-byte packet-information (PI) header a tun/tap device puts in front of every
packet unless it was opened with ``IFF_NO_PI`` (pure; no I/O).

Layout: 2 bytes flags (``TUN_PKT_STRIP`` = the packet was truncated by a short read
buffer), then 2 bytes EtherType, both big-endian.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

PI_LEN = 4
TUN_PKT_STRIP = 0x0001
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD

_PI = struct.Struct("!HH")


class PacketInfo(NamedTuple):
    flags: int
    proto: int

    @property
    def truncated(self) -> bool:
        return bool(self.flags & TUN_PKT_STRIP)


def unpack_pi(buf: bytes | bytearray | memoryview) -> PacketInfo:
    """Parse the PI header at the start of ``buf``; ValueError if it is shorter than 4."""
    if len(buf) < PI_LEN:
        raise ValueError(f"packet of {len(buf)} bytes is too short for a PI header")
    flags, proto = _PI.unpack_from(buf)
    return PacketInfo(flags, proto)


def pack_pi(proto: int, flags: int = 0) -> bytes:
    return _PI.pack(flags, proto)


def proto_of_ip(packet: bytes | bytearray | memoryview) -> int:
    """EtherType for a raw IP packet, from its version nibble (0 if neither 4 nor 6)."""
    if not packet:
        return 0
    version = packet[0] >> 4
    return ETH_P_IP if version == 4 else ETH_P_IPV6 if version == 6 else 0


def add_pi(packet: bytes, proto: int | None = None) -> bytes:
    """``packet`` with a PI header in front; for a tun packet the EtherType is guessed."""
    return pack_pi(proto_of_ip(packet) if proto is None else proto) + packet


def strip_pi(buf: bytes) -> tuple[PacketInfo, bytes]:
    return unpack_pi(buf), buf[PI_LEN:]
