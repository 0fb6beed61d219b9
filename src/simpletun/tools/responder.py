"""Answer what a device's own host sends to the other addresses of its subnets (pure).

Given the device's addresses (say 10.0.0.1/24 and fd00::1/64), a packet read from the
device that is an ICMP echo request to 10.0.0.7 or fd00::9 gets an echo reply back; on a
tap device ARP requests and IPv6 neighbour solicitations for those addresses are answered
too, with this responder's MAC. The device's own addresses, the IPv4 network and
broadcast addresses and multicast are never claimed. One packet in, one reply or None out.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable

from ..packets import Malformed
from ..packets.checksum import pseudo6, verify
from ..packets.ethernet import (
    ARP_REPLY,
    ARP_REQUEST,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    build_arp,
    build_frame,
    parse_arp,
    parse_frame,
)
from ..packets.icmp import (
    ECHO6_REPLY,
    ECHO6_REQUEST,
    ECHO_REPLY,
    ECHO_REQUEST,
    NA_OVERRIDE,
    NA_SOLICITED,
    NEIGHBOR_ADVERT,
    NEIGHBOR_SOLICIT,
    build_icmp4,
    build_icmp6,
    build_na_body,
    nd_target,
)
from ..packets.ip import PROTO_ICMP, PROTO_ICMPV6, build_ipv4, build_ipv6, parse_ipv4, parse_ipv6

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

#: Locally administered, unicast: "ST" for simpletun.
DEFAULT_MAC = bytes.fromhex("025354000001")
_UNSPECIFIED6 = bytes(16)


class Responder:
    """Pure request -> reply logic; ``counts`` says how many of each kind were answered."""

    def __init__(self, addresses: Iterable[IPInterface], *, tap: bool = False,
                 mac: bytes = DEFAULT_MAC) -> None:
        self.tap = tap
        self.mac = mac
        self.counts: Counter[str] = Counter()
        self._nets: list[tuple[int, int, int, bool]] = []
        self._own: set[bytes] = set()
        self.set_addresses(addresses)

    def set_addresses(self, addresses: Iterable[IPInterface]) -> None:
        nets: list[tuple[int, int, int, bool]] = []
        own: set[bytes] = set()
        for iface in addresses:
            own.add(iface.ip.packed)
            net = iface.network
            # (version, network as int, mask as int, has network/broadcast addresses)
            nets.append((net.version, int(net.network_address), int(net.netmask),
                         net.version == 4 and net.prefixlen <= 30))
        self._nets, self._own = nets, own

    def claims(self, addr: bytes) -> bool:
        """True if ``addr`` (4 or 16 bytes) is one this responder answers for."""
        if addr in self._own:
            return False
        version = 4 if len(addr) == 4 else 6
        value = int.from_bytes(addr, "big")
        if (version == 4 and addr[0] >= 224) or (version == 6 and addr[0] == 0xFF):
            return False
        for v, network, mask, edges in self._nets:
            if v == version and value & mask == network:
                host_bits = ~mask & ((1 << (32 if v == 4 else 128)) - 1)
                return not (edges and value & host_bits in (0, host_bits))
        return False

    # --- one packet in, one reply out ----------------------------------------------
    def respond(self, packet: bytes) -> bytes | None:
        """The reply to write back into the device for ``packet``, or None."""
        try:
            if self.tap:
                return self._frame(packet)
            return self._ip(packet)
        except (Malformed, IndexError, ValueError):
            return None

    def _ip(self, packet: bytes) -> bytes | None:
        if not packet:
            return None
        version = packet[0] >> 4
        if version == 4:
            return self._echo4(packet)
        if version == 6:
            return self._echo6(packet)
        return None

    def _echo4(self, packet: bytes) -> bytes | None:
        h = parse_ipv4(packet)
        if h.proto != PROTO_ICMP or h.frag_offset or h.more_fragments or not self.claims(h.dst):
            return None
        icmp = packet[h.header_len:h.total_len]
        if len(icmp) < 8 or icmp[0] != ECHO_REQUEST or icmp[1] != 0 or not verify(icmp):
            return None
        self.counts["echo"] += 1
        return build_ipv4(h.dst, h.src, PROTO_ICMP, build_icmp4(ECHO_REPLY, 0, icmp[4:]),
                          ident=h.ident)

    def _icmp6(self, packet: bytes) -> tuple[bytes, bytes, bytes, int] | None:
        """(src, dst, ICMPv6 message, hop limit) if ``packet`` is valid ICMPv6, else None."""
        h = parse_ipv6(packet)
        if h.proto != PROTO_ICMPV6 or h.fragment:
            return None
        msg = packet[h.payload_offset:h.total_len]
        if len(msg) < 8 or not verify(msg, pseudo6(h.src, h.dst, PROTO_ICMPV6, len(msg))):
            return None
        return h.src, h.dst, msg, h.hop_limit

    def _echo6(self, packet: bytes) -> bytes | None:
        parsed = self._icmp6(packet)
        if parsed is None:
            return None
        src, dst, msg, _ = parsed
        if msg[0] != ECHO6_REQUEST or msg[1] != 0 or not self.claims(dst):
            return None
        self.counts["echo6"] += 1
        return build_ipv6(dst, src, PROTO_ICMPV6, build_icmp6(dst, src, ECHO6_REPLY, 0, msg[4:]))

    def _frame(self, frame: bytes) -> bytes | None:
        f = parse_frame(frame)
        if f.vlan is not None:
            return None
        payload = frame[f.offset:]
        if f.ethertype == ETH_P_ARP:
            reply = self._arp(payload)
        elif f.dst != self.mac and not f.dst[0] & 1:
            return None  # unicast to some other station
        elif f.ethertype == ETH_P_IP:
            reply = self._echo4(payload) if f.dst == self.mac else None
        elif f.ethertype == ETH_P_IPV6:
            reply = self._ndp(payload) or (self._echo6(payload) if f.dst == self.mac else None)
        else:
            return None
        if reply is None:
            return None
        return build_frame(f.src, self.mac, f.ethertype, reply)

    def _arp(self, payload: bytes) -> bytes | None:
        a = parse_arp(payload)
        if a.op != ARP_REQUEST or a.spa == a.tpa or not self.claims(a.tpa):
            return None
        self.counts["arp"] += 1
        return build_arp(ARP_REPLY, self.mac, a.tpa, a.sha, a.spa)

    def _ndp(self, packet: bytes) -> bytes | None:
        parsed = self._icmp6(packet)
        if parsed is None:
            return None
        src, _dst, msg, hop_limit = parsed
        if msg[0] != NEIGHBOR_SOLICIT or msg[1] != 0 or hop_limit != 255:
            return None
        target = nd_target(msg[4:])
        if src == _UNSPECIFIED6 or not self.claims(target):
            return None  # duplicate address detection, or not ours to claim
        self.counts["ndp"] += 1
        body = build_na_body(target, self.mac, NA_SOLICITED | NA_OVERRIDE)
        return build_ipv6(target, src, PROTO_ICMPV6,
                          build_icmp6(target, src, NEIGHBOR_ADVERT, 0, body), hop_limit=255)
