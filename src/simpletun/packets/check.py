"""Is this a packet the device may be given? One cheap check for everything that arrives
from the network, before it is written to the device (pure)."""

from __future__ import annotations

from .ethernet import ETH_HLEN


def check_ip(packet: bytes) -> str | None:
    """None if ``packet`` looks like one whole IPv4 or IPv6 packet, else the reason."""
    n = len(packet)
    if n < 20:
        return "short"
    version = packet[0] >> 4
    if version == 4:
        if (packet[0] & 0x0F) < 5:
            return "bad-header"
        total = (packet[2] << 8) | packet[3]
    elif version == 6:
        if n < 40:
            return "short"
        total = 40 + ((packet[4] << 8) | packet[5])
    else:
        return "not-ip"
    # a shorter IP length with trailing bytes is what the kernel itself accepts (padding)
    return None if total <= n else "truncated"


def check_frame(frame: bytes) -> str | None:
    """None if ``frame`` can be an Ethernet frame, else the reason."""
    return None if len(frame) >= ETH_HLEN else "short"


def check(packet: bytes, tap: bool) -> str | None:
    return check_frame(packet) if tap else check_ip(packet)
