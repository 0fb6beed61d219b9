"""TCP super-packets cut into segments, and checksums left partial (pure).

With offloads on, a tun device hands over TCP super-packets of up to 64 KiB (its
virtio_net_hdr says so: GSO_TCPV4/6, the segment size) whose TCP checksum holds only the
pseudo-header sum. A datagram transport carries one packet per datagram, so
:func:`segments` cuts them the way the kernel's TCP segmentation would: every segment gets
its own IP length (and IPv4 id and header checksum), TCP sequence number and flags (FIN and
PSH on the last only, CWR on the first only).

Their TCP checksums stay **partial** (the pseudo-header sum, as the kernel left the
super-packet's): a DATA_PARTIAL datagram says so, and the receiving end writes it with a
virtio_net_hdr asking its kernel to finish the sum (NEEDS_CSUM at :func:`partial`'s place),
or, without one, finishes it itself (:func:`complete`). Neither end sums a payload in
Python.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ..packets import Malformed
from ..packets.checksum import checksum, ones_sum, verify

TCP, UDP = 6, 17
FIN, PSH, CWR = 0x01, 0x08, 0x80
CHECKSUM_AT = {TCP: 16, UDP: 6}  # where the checksum field is in the L4 header


def partial(packet: bytes | memoryview) -> tuple[int, int] | None:
    """(start, offset) of the TCP or UDP checksum of an IP packet with no IPv6 extension
    headers: where the sum starts and where it goes, relative to ``start``. None otherwise."""
    if len(packet) < 20:
        return None
    version = packet[0] >> 4
    if version == 4:
        start, proto = (packet[0] & 0x0F) * 4, packet[9]
    elif version == 6:
        start, proto = 40, packet[6]
    else:
        return None
    offset = CHECKSUM_AT.get(proto)
    if offset is None or start + offset + 2 > len(packet):
        return None
    return start, offset


def complete(packet: bytearray | memoryview, start: int, offset: int) -> None:
    """Finish a partial checksum in place: sum from ``start`` (the field holds the
    pseudo-header sum) and store the complement."""
    s = ones_sum(memoryview(packet)[start:])
    value = ~s & 0xFFFF
    if value == 0 and offset == CHECKSUM_AT[UDP]:
        value = 0xFFFF  # UDP: 0 means "no checksum"
    struct.pack_into("!H", packet, start + offset, value)


def segments(packet: memoryview, mss: int) -> list[tuple[bytes, memoryview]]:
    """Cut a TCP super-packet (IPv4, or IPv6 without extension headers) into segments of at
    most ``mss`` payload bytes: (headers, payload) each, checksums partial. Malformed if it
    is not one."""
    lay = _layout(packet)
    if lay is None or mss <= 0:
        raise Malformed("not a TCP super-packet over IPv4/IPv6")
    l4, hlen = lay
    head = bytearray(packet[:hlen])
    payload = packet[hlen:]
    v4 = head[0] >> 4 == 4
    pseudo = _pseudo(head)
    (seq,) = struct.unpack_from("!I", head, l4 + 4)
    (ident,) = struct.unpack_from("!H", head, 4) if v4 else (0,)
    flags = head[l4 + 13]
    total = len(payload)
    out: list[tuple[bytes, memoryview]] = []
    for i, at in enumerate(range(0, max(total, 1), mss)):
        chunk = payload[at:at + mss]
        if v4:
            struct.pack_into("!H", head, 4, (ident + i) & 0xFFFF)
        struct.pack_into("!I", head, l4 + 4, (seq + at) & 0xFFFFFFFF)
        f = flags
        if at + mss < total:
            f &= ~(FIN | PSH)
        if i:
            f &= ~CWR
        head[l4 + 13] = f
        _fill(head, l4, hlen, len(chunk), pseudo)
        out.append((bytes(head), chunk))
    return out


def _pseudo(head: bytes | bytearray | memoryview) -> int:
    """The pseudo-header sum of a TCP packet's addresses and protocol (no length)."""
    addresses = head[12:20] if head[0] >> 4 == 4 else head[8:40]
    return ones_sum(addresses) + TCP


def _fill(head: bytearray, l4: int, hlen: int, size: int, pseudo: int) -> None:
    """Make ``head`` the headers of a packet with ``size`` payload bytes: the IP length
    (IPv4: and header checksum) and the partial TCP checksum (``pseudo`` plus length)."""
    if head[0] >> 4 == 4:
        struct.pack_into("!H", head, 2, hlen + size)
        head[10:12] = b"\0\0"
        struct.pack_into("!H", head, 10, checksum(head[:l4]))
    else:
        struct.pack_into("!H", head, 4, hlen - 40 + size)
    s = pseudo + hlen - l4 + size
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    struct.pack_into("!H", head, l4 + 16, s)


SYN, RST, URG = 0x02, 0x04, 0x20


def _layout(packet: bytes | memoryview) -> tuple[int, int] | None:
    """(l4 start, headers length) of a TCP packet over IPv4/IPv6, or None."""
    where = partial(packet)
    if where is None:
        return None
    l4 = where[0]
    if (packet[9] if packet[0] >> 4 == 4 else packet[6]) != TCP or len(packet) < l4 + 20:
        return None
    hlen = l4 + (packet[l4 + 12] >> 4) * 4
    return (l4, hlen) if l4 + 20 <= hlen <= len(packet) else None


def _same_flow(a: bytes | memoryview, b: bytes | memoryview, l4: int, hlen: int) -> bool:
    """Whether two segments' headers agree apart from what differs between segments of one
    super-packet (lengths, IPv4 id and checksum, sequence, flags, TCP checksum)."""
    if a[0] >> 4 == 4:
        ip = a[0:2] == b[0:2] and a[6:10] == b[6:10] and a[12:l4] == b[12:l4]
    else:
        ip = a[0:4] == b[0:4] and a[6:40] == b[6:40]
    return (ip and a[l4:l4 + 4] == b[l4:l4 + 4] and a[l4 + 8:l4 + 13] == b[l4 + 8:l4 + 13]
            and a[l4 + 14:l4 + 16] == b[l4 + 14:l4 + 16] and a[l4 + 18:hlen] == b[l4 + 18:hlen])


def runs(packets: list[memoryview]) -> list[tuple[int, int]]:
    """Group consecutive TCP segments (checksums partial) that make one super-packet again:
    ``(start, end)`` index ranges, in order, covering every packet. Within a run: the same
    flow and headers, contiguous sequence numbers, all payloads the size of the first but
    the last (which may be shorter), no SYN/RST/URG, FIN and PSH only on the last, CWR only
    on the first, and at most 64 KiB in all."""
    out: list[tuple[int, int]] = []
    i, n = 0, len(packets)
    while i < n:
        first = packets[i]
        lay = _layout(first)
        end = i + 1
        if lay is not None:
            l4, hlen = lay
            flags = first[l4 + 13]
            mss = len(first) - hlen
            total = mss
            last = first
            while (end < n and mss > 0 and not flags & (SYN | RST | URG | FIN | PSH)
                   and len(last) - hlen == mss):
                b = packets[end]
                size = len(b) - hlen
                bflags = b[l4 + 13] if len(b) > l4 + 13 else 0
                if (size <= 0 or size > mss or total + size + hlen > 65535
                        or _layout(b) != lay or not _same_flow(first, b, l4, hlen)
                        or bflags & ~(PSH | FIN) != flags & ~CWR
                        or struct.unpack_from("!I", b, l4 + 4)[0]
                        != (struct.unpack_from("!I", last, l4 + 4)[0] + mss) & 0xFFFFFFFF):
                    break
                total += size
                last = b
                end += 1
                if bflags & (PSH | FIN):
                    break
        out.append((i, end))
        i = end
    return out


def checksum_ok(packet: bytes | memoryview) -> bool:
    """Whether a whole TCP segment (IPv4, or IPv6 without extension headers) carries the
    right TCP checksum: what the kernel would check, and would not once the segment is part
    of a super-packet whose checksum it is asked to fill in."""
    lay = _layout(packet)
    if lay is None:
        return False
    l4 = lay[0]
    return verify(packet[l4:], _pseudo(packet) + len(packet) - l4)


class Merged(NamedTuple):
    headers: bytes  # of the super-packet: lengths, checksums, flags of the whole
    l4: int  # where the TCP header starts
    hlen: int  # IP + TCP header length
    mss: int  # the segment size (the first segment's payload)
    v4: bool


def merge(run: list[memoryview]) -> Merged:
    """The headers of the super-packet a run of :func:`runs` makes: lengths, IPv4
    checksum, FIN/PSH of the last segment, a partial TCP checksum. The payloads follow,
    each segment's after ``hlen``."""
    first, last = run[0], run[-1]
    lay = _layout(first)
    assert lay is not None
    l4, hlen = lay
    total = sum(len(p) for p in run) - hlen * len(run)
    head = bytearray(first[:hlen])
    head[l4 + 13] |= last[l4 + 13] & (PSH | FIN)
    _fill(head, l4, hlen, total, _pseudo(head))
    return Merged(bytes(head), l4, hlen, len(first) - hlen, head[0] >> 4 == 4)
