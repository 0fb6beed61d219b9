"""The largest overlay MTU each transport can carry, per underlay family, and the default
one (pure).

An IP packet is at most 65,535 bytes: IPv4's total length counts its 20-byte header, IPv6's
payload length does not count its 40. The encrypted transports put one overlay packet (a
tap frame: plus its Ethernet header, one VLAN tag and the 4-byte extension header, padded
by up to 15 bytes) in a WireGuard transport message (16-byte header and 16-byte tag), in a
UDP datagram (8-byte header) or an ICMP echo (8-byte echo header + 6-byte mark); over TCP
each message has a 2-byte length, so at most 65,535 bytes. A larger packet could not be
sent: it would vanish. The plaintext native TCP wire carries any packet the device can hold.
"""

from __future__ import annotations

from ..device.side import ETH_OVERHEAD
from ..packets.ethernet import ETH_HLEN
from ..wire import icmp as icmp_wire
from ..wire import native

#: the most an IP packet can carry behind its own header, per family
IP_PAYLOAD_MAX = {4: 65535 - 20, 6: 65535}
UDP_HEADER = 8
WG_OVERHEAD = 32  # a WireGuard transport message's header and tag
TCP_MESSAGE_MAX = 65535  # a 2-byte length
#: a tap frame's extension header and the padding it may get (beyond the MTU)
TAP_EXTRA = 4 + 15
#: the kernel's own maximum per device kind (a tap frame's Ethernet header counts)
DEVICE_MAX = {False: 65535, True: 65535 - ETH_HLEN}
MIN_MTU = 68
TRANSPORTS = ("tcp", "udp", "icmp")
#: the MTU a new device gets when --mtu is not given (None: the device's own): an outer
#: IPv6 packet of at most 1500 bytes, as WireGuard's 1420 (UDP: 1500 - 40 - 8 - 32)
DEFAULT_MTU: dict[str, int | None] = {"tcp": None, "udp": 1420,
                                      "icmp": icmp_wire.DEFAULT_MTU}


#: a tap device's default is this much smaller: its frames carry an Ethernet header (and
#: maybe a VLAN tag), the extension header and up to 15 bytes of padding on top
TAP_LESS = 44


def default_mtu(transport: str, *, tap: bool) -> int | None:
    """The MTU a new device gets without --mtu (None: the device's own): the outer packet
    of a full-size packet or frame fits 1500 bytes over IPv6."""
    base = DEFAULT_MTU[transport]
    return base - TAP_LESS if base is not None and tap else base


def max_mtu(transport: str, *, tap: bool, family: int = 4, encrypted: bool = True) -> int:
    """The largest MTU that ``transport`` carries over an IPv4 (``family=4``) or IPv6
    underlay for a tun (or ``tap``) device; ``encrypted`` False: the plaintext native TCP
    wire."""
    extra = ETH_OVERHEAD if tap else 0  # a tap frame's Ethernet header and one VLAN tag
    wg = WG_OVERHEAD + (TAP_EXTRA if tap else 0)
    if transport == "tcp":
        carried = (TCP_MESSAGE_MAX - wg if encrypted else
                   native.MAX_PAYLOAD - native.VNET_HDR_LEN) - extra
    elif transport == "udp":
        carried = IP_PAYLOAD_MAX[family] - UDP_HEADER - wg - extra
    elif transport == "icmp":
        carried = IP_PAYLOAD_MAX[family] - icmp_wire.HEAD_LEN - wg - extra
    else:
        raise ValueError(f"unknown transport {transport!r}: one of {', '.join(TRANSPORTS)}")
    return min(carried, DEVICE_MAX[tap])
