"""The Internet checksum (RFC 1071) and the IPv4/IPv6 pseudo-headers."""

from __future__ import annotations

import struct

Buffer = bytes | bytearray | memoryview


def ones_sum(data: Buffer) -> int:
    """One's complement sum of ``data`` as big-endian 16-bit words, folded to 16 bits.

    Uses 2**16 == 1 (mod 0xffff): the folded sum is the big number mod 0xffff, with
    0xffff (not 0) standing for a non-zero multiple. One C-level conversion, no loop.
    """
    if len(data) & 1:
        data = bytes(data) + b"\0"
    n = int.from_bytes(data, "big")
    r = n % 0xFFFF
    return 0xFFFF if r == 0 and n else r


def checksum(data: Buffer, initial: int = 0) -> int:
    """The 16-bit Internet checksum of ``data`` plus a partial sum ``initial``."""
    s = ones_sum(data) + initial
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def pseudo4(src: bytes, dst: bytes, proto: int, length: int) -> int:
    return ones_sum(src + dst + struct.pack("!BBH", 0, proto, length))


def pseudo6(src: bytes, dst: bytes, proto: int, length: int) -> int:
    return ones_sum(src + dst + struct.pack("!IxxxB", length, proto))


def verify(data: Buffer, initial: int = 0) -> bool:
    """True if ``data`` (with its checksum field filled in) sums to all ones."""
    return checksum(data, initial) == 0
