"""Packet factories for tests: real ping/ARP/NS packets as the kernel would send them."""

from __future__ import annotations

import ipaddress
import struct

from simpletun.packets.checksum import pseudo4, pseudo6
from simpletun.packets.ethernet import (
    ARP_REQUEST,
    BROADCAST,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    build_arp,
    build_frame,
)
from simpletun.packets.icmp import (
    ECHO6_REQUEST,
    ECHO_REQUEST,
    NEIGHBOR_SOLICIT,
    OPT_SOURCE_LLADDR,
    build_icmp4,
    build_icmp6,
)
from simpletun.packets.ip import PROTO_ICMP, PROTO_ICMPV6, PROTO_UDP, build_ipv4, build_ipv6
from simpletun.packets.l4 import build_udp

HOST_MAC = bytes.fromhex("0afe00000001")


def a(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def ping4(src: str, dst: str, ident: int = 0x1C, seq: int = 3, data: bytes = bytes(56)) -> bytes:
    body = struct.pack("!HH", ident, seq) + data
    return build_ipv4(a(src), a(dst), PROTO_ICMP, build_icmp4(ECHO_REQUEST, 0, body))


def ping6(src: str, dst: str, ident: int = 0x1C, seq: int = 3, data: bytes = bytes(56)) -> bytes:
    body = struct.pack("!HH", ident, seq) + data
    return build_ipv6(a(src), a(dst), PROTO_ICMPV6,
                      build_icmp6(a(src), a(dst), ECHO6_REQUEST, 0, body))


def udp4(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    seg = build_udp(sport, dport, payload,
                    pseudo=pseudo4(a(src), a(dst), PROTO_UDP, 8 + len(payload)))
    return build_ipv4(a(src), a(dst), PROTO_UDP, seg)


def udp6(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    seg = build_udp(sport, dport, payload,
                    pseudo=pseudo6(a(src), a(dst), PROTO_UDP, 8 + len(payload)))
    return build_ipv6(a(src), a(dst), PROTO_UDP, seg)


def eth(dst: bytes, payload: bytes, ethertype: int, src: bytes = HOST_MAC) -> bytes:
    return build_frame(dst, src, ethertype, payload)


def arp_request(sender: str, target: str, mac: bytes = HOST_MAC) -> bytes:
    return eth(BROADCAST, build_arp(ARP_REQUEST, mac, a(sender), bytes(6), a(target)), ETH_P_ARP,
               src=mac)


def solicited_node(target: str) -> tuple[str, bytes]:
    t = a(target)
    group = bytes.fromhex("ff0200000000000000000001ff") + t[13:]
    return str(ipaddress.IPv6Address(group)), b"\x33\x33" + group[12:]


def neighbor_solicit(src: str, target: str, mac: bytes = HOST_MAC) -> bytes:
    dst, dst_mac = solicited_node(target)
    body = bytes(4) + a(target) + bytes([OPT_SOURCE_LLADDR, 1]) + mac
    msg = build_icmp6(a(src), a(dst), NEIGHBOR_SOLICIT, 0, body)
    return eth(dst_mac, build_ipv6(a(src), a(dst), PROTO_ICMPV6, msg, hop_limit=255),
               ETH_P_IPV6, src=mac)


def ping4_frame(dst_mac: bytes, src: str, dst: str) -> bytes:
    return eth(dst_mac, ping4(src, dst), ETH_P_IP)


def ping6_frame(dst_mac: bytes, src: str, dst: str) -> bytes:
    return eth(dst_mac, ping6(src, dst), ETH_P_IPV6)
