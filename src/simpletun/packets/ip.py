"""IPv4 and IPv6 headers: parse what arrives, build what we answer."""

from __future__ import annotations

import struct
from typing import NamedTuple

from . import Malformed
from .checksum import checksum

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58

_V4 = struct.Struct("!BBHHHBBH4s4s")
_V6 = struct.Struct("!IHBB16s16s")
IPV4_HLEN = _V4.size  # 20
IPV6_HLEN = _V6.size  # 40
# IPv6 extension headers that are (next header, length in 8-octet units - 1) chains
_V6_EXT = {0, 43, 60, 135, 139, 140}
_V6_FRAGMENT = 44
_V6_AH = 51


class IPv4(NamedTuple):
    src: bytes
    dst: bytes
    proto: int
    ttl: int
    ident: int
    frag_offset: int  # in bytes
    more_fragments: bool
    header_len: int
    total_len: int


class IPv6(NamedTuple):
    src: bytes
    dst: bytes
    proto: int  # after the extension headers
    hop_limit: int
    payload_offset: int  # where the upper-layer header starts
    total_len: int
    fragment: bool  # a fragment header was present


def parse_ipv4(buf: bytes) -> IPv4:
    if len(buf) < IPV4_HLEN:
        raise Malformed(f"truncated IPv4 header ({len(buf)} bytes)")
    vihl, _tos, total, ident, frag, ttl, proto, _csum, src, dst = _V4.unpack_from(buf)
    if vihl >> 4 != 4:
        raise Malformed(f"IP version {vihl >> 4} in an IPv4 header")
    hlen = (vihl & 0x0F) * 4
    if hlen < IPV4_HLEN or hlen > len(buf):
        raise Malformed(f"IPv4 header length {hlen} does not fit in {len(buf)} bytes")
    if total < hlen or total > len(buf):
        raise Malformed(f"IPv4 total length {total}, but {len(buf)} bytes")
    return IPv4(src, dst, proto, ttl, ident, (frag & 0x1FFF) * 8, bool(frag & 0x2000),
                hlen, total)


def parse_ipv6(buf: bytes) -> IPv6:
    if len(buf) < IPV6_HLEN:
        raise Malformed(f"truncated IPv6 header ({len(buf)} bytes)")
    vtf, plen, nxt, hlim, src, dst = _V6.unpack_from(buf)
    if vtf >> 28 != 6:
        raise Malformed(f"IP version {vtf >> 28} in an IPv6 header")
    total = IPV6_HLEN + plen
    if total > len(buf):
        raise Malformed(f"IPv6 payload length {plen}, but {len(buf) - IPV6_HLEN} bytes")
    off, fragment = IPV6_HLEN, False
    while nxt in _V6_EXT or nxt in (_V6_FRAGMENT, _V6_AH):
        if off + 8 > total:
            raise Malformed(f"truncated IPv6 extension header {nxt}")
        if nxt == _V6_FRAGMENT:
            fragment = True
            size = 8
        elif nxt == _V6_AH:
            size = (buf[off + 1] + 2) * 4
        else:
            size = (buf[off + 1] + 1) * 8
        nxt = buf[off]
        off += size
        if off > total:
            raise Malformed("IPv6 extension header runs past the packet")
    return IPv6(src, dst, nxt, hlim, off, total, fragment)


def build_ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, *, ttl: int = 64,
               ident: int = 0) -> bytes:
    header = _V4.pack(0x45, 0, IPV4_HLEN + len(payload), ident, 0x4000, ttl, proto, 0, src, dst)
    csum = checksum(header)
    return header[:10] + csum.to_bytes(2, "big") + header[12:] + payload


def build_ipv6(src: bytes, dst: bytes, proto: int, payload: bytes, *,
               hop_limit: int = 64) -> bytes:
    return _V6.pack(6 << 28, len(payload), proto, hop_limit, src, dst) + payload
