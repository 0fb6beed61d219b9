"""Ethernet II frames (with one optional 802.1Q tag) and ARP for IPv4 over Ethernet."""

from __future__ import annotations

import struct
from typing import NamedTuple

from . import Malformed

ETH_HLEN = 14
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_IPV6 = 0x86DD
BROADCAST = b"\xff" * 6

ARP_REQUEST = 1
ARP_REPLY = 2
_ARP = struct.Struct("!HHBBH6s4s6s4s")
ARP_LEN = _ARP.size  # 28


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def parse_mac(text: str) -> bytes:
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) in (1, 2) for p in parts):
        raise ValueError(f"bad MAC address {text!r}")
    return bytes(int(p, 16) for p in parts)


class Frame(NamedTuple):
    dst: bytes
    src: bytes
    ethertype: int
    vlan: int | None
    offset: int  # where the payload starts


def parse_frame(buf: bytes) -> Frame:
    if len(buf) < ETH_HLEN:
        raise Malformed(f"Ethernet frame of {len(buf)} bytes is shorter than its header")
    dst, src, ethertype = buf[0:6], buf[6:12], int.from_bytes(buf[12:14], "big")
    if ethertype == ETH_P_8021Q:
        if len(buf) < ETH_HLEN + 4:
            raise Malformed("truncated 802.1Q tag")
        vlan = int.from_bytes(buf[14:16], "big") & 0x0FFF
        return Frame(dst, src, int.from_bytes(buf[16:18], "big"), vlan, ETH_HLEN + 4)
    return Frame(dst, src, ethertype, None, ETH_HLEN)


def build_frame(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    return dst + src + ethertype.to_bytes(2, "big") + payload


class Arp(NamedTuple):
    op: int
    sha: bytes
    spa: bytes
    tha: bytes
    tpa: bytes


def parse_arp(buf: bytes) -> Arp:
    if len(buf) < ARP_LEN:
        raise Malformed(f"ARP of {len(buf)} bytes is shorter than 28")
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(buf)
    if htype != 1 or ptype != ETH_P_IP or hlen != 6 or plen != 4:
        raise Malformed(f"ARP for hardware {htype}/protocol {ptype:#06x} is not IPv4 over Ethernet")
    return Arp(op, sha, spa, tha, tpa)


def build_arp(op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> bytes:
    return _ARP.pack(1, ETH_P_IP, 6, 4, op, sha, spa, tha, tpa)
