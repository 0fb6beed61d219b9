"""One line per packet, for ``simpletun dump`` and ``-d`` (pure; never raises).

    IPv4 10.0.0.1 > 10.0.0.2 ICMP echo request id 0x1c seq 3, 84 bytes
    IPv6 fd00::1.40000 > fd00::2.80 TCP [S] seq 1 win 64800, 80 bytes
    ARP who-has 10.0.0.2 tell 10.0.0.1, 42 bytes

Anything that does not parse gets a short generic line saying what is wrong with it.
"""

from __future__ import annotations

import socket
import struct

from ..packets import Malformed
from ..packets.ethernet import (
    ARP_REPLY,
    ARP_REQUEST,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    mac_str,
    parse_arp,
    parse_frame,
)
from ..packets.icmp import (
    ECHO6_REPLY,
    ECHO6_REQUEST,
    ECHO_REPLY,
    ECHO_REQUEST,
    ICMP4_NAMES,
    ICMP6_NAMES,
    NEIGHBOR_ADVERT,
    NEIGHBOR_SOLICIT,
    nd_target,
    parse_icmp,
)
from ..packets.ip import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, parse_ipv4, parse_ipv6
from ..packets.l4 import parse_tcp, parse_udp, tcp_flags

_PROTO_NAMES = {PROTO_ICMP: "ICMP", PROTO_TCP: "TCP", PROTO_UDP: "UDP", PROTO_ICMPV6: "ICMPv6",
                2: "IGMP", 4: "IPIP", 41: "IPv6-in-IPv4", 47: "GRE", 50: "ESP", 51: "AH",
                89: "OSPF", 132: "SCTP"}
_ERRORS = (Malformed, struct.error, IndexError, ValueError)


def _a4(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET, raw)


def _a6(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, raw)


def _icmp(data: bytes, names: dict[int, str], v6: bool) -> str:
    msg = parse_icmp(data)
    label = "ICMPv6" if v6 else "ICMP"
    name = names.get(msg.type, f"type {msg.type} code {msg.code}")
    if msg.type in (ECHO_REQUEST, ECHO_REPLY, ECHO6_REQUEST, ECHO6_REPLY):
        return f"{label} {name} id {msg.ident:#x} seq {msg.seq}"
    if v6 and msg.type == NEIGHBOR_SOLICIT:
        return f"{label} {name} who has {_a6(nd_target(msg.body))}"
    if v6 and msg.type == NEIGHBOR_ADVERT:
        return f"{label} {name} tgt is {_a6(nd_target(msg.body))}"
    return f"{label} {name}"


def _upper(proto: int, data: bytes, src: str, dst: str, v6: bool) -> str:
    if proto == PROTO_TCP:
        t = parse_tcp(data)
        line = f"{src}.{t.sport} > {dst}.{t.dport} TCP [{tcp_flags(t.flags)}] seq {t.seq}"
        if t.flags & 0x10:
            line += f" ack {t.ack}"
        return f"{line} win {t.window} len {len(data) - t.header_len}"
    if proto == PROTO_UDP:
        u = parse_udp(data)
        return f"{src}.{u.sport} > {dst}.{u.dport} UDP len {max(u.length - 8, 0)}"
    if proto == PROTO_ICMP and not v6:
        return f"{src} > {dst} {_icmp(data, ICMP4_NAMES, False)}"
    if proto == PROTO_ICMPV6 and v6:
        return f"{src} > {dst} {_icmp(data, ICMP6_NAMES, True)}"
    return f"{src} > {dst} {_PROTO_NAMES.get(proto, f'proto {proto}')}"


def describe_ip(packet: bytes) -> str:
    """Describe a raw IP packet (what a tun device without PI carries), without the size."""
    if not packet:
        return "empty packet"
    version = packet[0] >> 4
    try:
        if version == 4:
            h = parse_ipv4(packet)
            src, dst = _a4(h.src), _a4(h.dst)
            if h.frag_offset:
                name = _PROTO_NAMES.get(h.proto, f"proto {h.proto}")
                return f"IPv4 {src} > {dst} {name} fragment offset {h.frag_offset}"
            return "IPv4 " + _upper(h.proto, packet[h.header_len:h.total_len], src, dst, False)
        if version == 6:
            h6 = parse_ipv6(packet)
            src, dst = _a6(h6.src), _a6(h6.dst)
            return "IPv6 " + _upper(h6.proto, packet[h6.payload_offset:h6.total_len],
                                    src, dst, True)
    except _ERRORS as exc:
        return f"IPv{version} malformed: {exc}"
    return f"not IP (version {version})"


def describe_frame(frame: bytes) -> str:
    """Describe an Ethernet frame (what a tap device carries), without the size."""
    try:
        f = parse_frame(frame)
    except _ERRORS as exc:
        return f"Ethernet malformed: {exc}"
    vlan = f"vlan {f.vlan} " if f.vlan is not None else ""
    payload = frame[f.offset:]
    if f.ethertype in (ETH_P_IP, ETH_P_IPV6):
        return vlan + describe_ip(payload)
    if f.ethertype == ETH_P_ARP:
        try:
            a = parse_arp(payload)
        except _ERRORS as exc:
            return f"{vlan}ARP malformed: {exc}"
        if a.op == ARP_REQUEST:
            return f"{vlan}ARP who-has {_a4(a.tpa)} tell {_a4(a.spa)}"
        if a.op == ARP_REPLY:
            return f"{vlan}ARP {_a4(a.spa)} is-at {mac_str(a.sha)}"
        return f"{vlan}ARP op {a.op} {_a4(a.spa)} > {_a4(a.tpa)}"
    return f"{vlan}{mac_str(f.src)} > {mac_str(f.dst)} EtherType {f.ethertype:#06x}"


def describe(packet: bytes, *, tap: bool = False) -> str:
    """One line for a packet read from a tun (``tap=False``) or tap device, size included."""
    body = describe_frame(packet) if tap else describe_ip(packet)
    return f"{body}, {len(packet)} bytes"
