"""Is this a packet the device may be given? One cheap check for everything that arrives
from the network, before it is written to the device (pure)."""

from __future__ import annotations

from .checksum import verify
from .ethernet import ETH_HLEN


def check_ip(packet: bytes | memoryview) -> str | None:
    """None if ``packet`` is exactly one IPv4 or IPv6 packet, else the reason.

    A tunnel frame carries what a tun read returned: one packet whose IP length is the
    frame length. IPv4 headers must also carry a correct checksum, so random bytes pass
    with odds of about 1 in 2**36 (IPv6, without a header checksum: 1 in 2**20).
    """
    n = len(packet)
    if n < 20:
        return "short"
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or ihl > n:
            return "bad-header"
        if (packet[2] << 8) | packet[3] != n:
            return "bad-length"
        if not verify(packet[:ihl]):
            return "bad-checksum"
        return None
    if version == 6:
        if n < 40:
            return "short"
        return None if 40 + ((packet[4] << 8) | packet[5]) == n else "bad-length"
    return "not-ip"


def check_frame(frame: bytes | memoryview) -> str | None:
    """None if ``frame`` can be an Ethernet frame, else the reason."""
    return None if len(frame) >= ETH_HLEN else "short"


def check(packet: bytes | memoryview, tap: bool) -> str | None:
    return check_frame(packet) if tap else check_ip(packet)
