"""The largest overlay MTU each transport can carry, per underlay family (pure).

An IP packet is at most 65,535 bytes: IPv4's total length counts its 20-byte header, IPv6's
payload length does not count its 40. A datagram transport puts one overlay packet (a tap
frame: plus its Ethernet header and one VLAN tag) behind the 9-byte datagram header, in a
UDP datagram (8-byte header) or an ICMP echo (8-byte echo header + 6-byte mark). A larger
packet could not be sent: it would vanish. TCP's native frames carry any packet the device
can hold.
"""

from __future__ import annotations

from ..device.side import ETH_OVERHEAD
from ..packets.ethernet import ETH_HLEN
from ..wire import datagram, native
from ..wire import icmp as icmp_wire

#: the most an IP packet can carry behind its own header, per family
IP_PAYLOAD_MAX = {4: 65535 - 20, 6: 65535}
UDP_HEADER = 8
#: the kernel's own maximum per device kind (a tap frame's Ethernet header counts)
DEVICE_MAX = {False: 65535, True: 65535 - ETH_HLEN}
MIN_MTU = 68
TRANSPORTS = ("tcp", "udp", "icmp")


def max_mtu(transport: str, *, tap: bool, family: int = 4) -> int:
    """The largest MTU that ``transport`` carries over an IPv4 (``family=4``) or IPv6
    underlay for a tun (or ``tap``) device."""
    extra = ETH_OVERHEAD if tap else 0  # a tap frame's Ethernet header and one VLAN tag
    if transport == "tcp":
        carried = native.MAX_PAYLOAD - native.VNET_HDR_LEN - extra
    elif transport == "udp":
        carried = IP_PAYLOAD_MAX[family] - UDP_HEADER - datagram.HEADER_LEN - extra
    elif transport == "icmp":
        carried = IP_PAYLOAD_MAX[family] - icmp_wire.HEAD_LEN - datagram.HEADER_LEN - extra
    else:
        raise ValueError(f"unknown transport {transport!r}: one of {', '.join(TRANSPORTS)}")
    return min(carried, DEVICE_MAX[tap])
