"""The virtio_net_hdr in front of every packet of a device opened with IFF_VNET_HDR
(pure). Little-endian on x86 for a plain tun (the kernel's native order)."""

from __future__ import annotations

import struct
from typing import NamedTuple

VNET_HDR_LEN = 10
F_NEEDS_CSUM = 1
F_DATA_VALID = 2
GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_UDP_L4 = 0, 1, 3, 4, 5
GSO_ECN = 0x80
ZERO = bytes(VNET_HDR_LEN)

_HDR = struct.Struct("<BBHHHH")


class VnetHeader(NamedTuple):
    flags: int
    gso_type: int
    hdr_len: int
    gso_size: int
    csum_start: int
    csum_offset: int


def unpack(buf: bytes | bytearray | memoryview) -> VnetHeader:
    return VnetHeader(*_HDR.unpack_from(buf))


def pack(h: VnetHeader) -> bytes:
    return _HDR.pack(*h)


def check(buf: bytes | memoryview) -> str | None:
    """None if ``buf`` (header + packet) is something the kernel may be given, else why."""
    if len(buf) < VNET_HDR_LEN + 1:
        return "short"
    h = unpack(buf)
    size = len(buf) - VNET_HDR_LEN
    if h.flags & ~(F_NEEDS_CSUM | F_DATA_VALID):
        return "bad-vnet"
    if h.gso_type & ~GSO_ECN not in (GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_UDP_L4):
        return "bad-vnet"
    if h.gso_type != GSO_NONE and (h.gso_size == 0 or h.hdr_len > size):
        return "bad-vnet"
    if h.flags & F_NEEDS_CSUM and h.csum_start + h.csum_offset + 2 > size:
        return "bad-vnet"
    return None
