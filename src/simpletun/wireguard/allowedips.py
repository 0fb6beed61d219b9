"""Cryptokey routing: which peer's allowed IPs hold an address (longest-prefix match, IPv4 and
IPv6 apart). A packet from the device goes to ``lookup(destination)``; a packet decrypted from
a peer is accepted only if ``lookup(source)`` is that peer.

Pure and on the per-packet hot path: one dict per prefix length in use, keyed by the masked
address as an int, so a lookup costs one dict probe per distinct prefix length (longest first),
whatever the number of peers.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Generic, TypeVar

P = TypeVar("P")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

_V6_PAIR = struct.Struct(">QQ")
_unpack_v4 = struct.Struct(">I").unpack_from
_unpack_v6 = _V6_PAIR.unpack_from


class _Family(Generic[P]):
    """The tables of one address family: prefix length -> {masked address: peer}."""

    __slots__ = ("bits", "order", "tables")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.tables: dict[int, dict[int, P]] = {}
        # (mask, table), longest prefix first: what lookups walk
        self.order: list[tuple[int, dict[int, P]]] = []

    def mask(self, prefixlen: int) -> int:
        full = (1 << self.bits) - 1
        return full ^ (full >> prefixlen)

    def table(self, prefixlen: int) -> dict[int, P]:
        table = self.tables.get(prefixlen)
        if table is None:
            table = self.tables[prefixlen] = {}
            self._reorder()
        return table

    def discard(self, prefixlen: int, key: int) -> None:
        table = self.tables[prefixlen]
        del table[key]
        if not table:
            del self.tables[prefixlen]
            self._reorder()

    def _reorder(self) -> None:
        self.order = [(self.mask(length), self.tables[length])
                      for length in sorted(self.tables, reverse=True)]


class AllowedIPs(Generic[P]):
    """The allowed IPs of every peer of one interface. A prefix belongs to one peer at a time:
    inserting it for another peer moves it, as WireGuard does. Peers are told apart by
    identity (``is``), so any object can be one; ``None`` cannot."""

    __slots__ = ("_by_peer", "_v4", "_v6")

    def __init__(self) -> None:
        self._v4: _Family[P] = _Family(32)
        self._v6: _Family[P] = _Family(128)
        # id(peer) -> (peer, its networks in insertion order)
        self._by_peer: dict[int, tuple[P, dict[Network, None]]] = {}

    def insert(self, network: Network | Interface, peer: P) -> None:
        """Give ``network`` to ``peer`` (host bits masked off: 10.0.0.1/24 is 10.0.0.0/24),
        taking it from the peer that held it, if any."""
        net = _network(network)
        family = self._v4 if net.version == 4 else self._v6
        table = family.table(net.prefixlen)
        key = int(net.network_address)
        holder = table.get(key)
        if holder is peer:
            return
        if holder is not None:
            del self._by_peer[id(holder)][1][net]
            if not self._by_peer[id(holder)][1]:
                del self._by_peer[id(holder)]
        table[key] = peer
        entry = self._by_peer.get(id(peer))
        if entry is None:
            entry = self._by_peer[id(peer)] = (peer, {})
        entry[1][net] = None

    def remove(self, network: Network | Interface, peer: P) -> None:
        """Take ``network`` from ``peer``; nothing happens if another peer (or none) holds it."""
        net = _network(network)
        family = self._v4 if net.version == 4 else self._v6
        table = family.tables.get(net.prefixlen)
        key = int(net.network_address)
        if table is None or table.get(key) is not peer:
            return
        family.discard(net.prefixlen, key)
        networks = self._by_peer[id(peer)][1]
        del networks[net]
        if not networks:
            del self._by_peer[id(peer)]

    def remove_peer(self, peer: P) -> None:
        """Take every network from ``peer``."""
        entry = self._by_peer.pop(id(peer), None)
        if entry is None:
            return
        for net in entry[1]:
            family = self._v4 if net.version == 4 else self._v6
            family.discard(net.prefixlen, int(net.network_address))

    def networks(self, peer: P) -> list[Network]:
        """The networks ``peer`` holds, in the order they were given (as ``wg show`` lists
        them)."""
        entry = self._by_peer.get(id(peer))
        return list(entry[1]) if entry is not None else []

    def holder(self, network: Network | Interface) -> P | None:
        """The peer holding exactly this prefix (not a longest-prefix match), or None."""
        net = _network(network)
        family = self._v4 if net.version == 4 else self._v6
        table = family.tables.get(net.prefixlen)
        return None if table is None else table.get(int(net.network_address))

    def __len__(self) -> int:
        """How many prefixes are held, both families."""
        return sum(len(t) for f in (self._v4, self._v6) for t in f.tables.values())

    def lookup(self, address: bytes | bytearray | memoryview) -> P | None:
        """The peer whose allowed IPs hold the raw address (4 bytes IPv4, 16 bytes IPv6) by
        longest-prefix match, or None (also for any other length)."""
        size = len(address)
        if size == 4:
            order = self._v4.order
        elif size == 16:
            order = self._v6.order
        else:
            return None
        value = int.from_bytes(address, "big")
        for mask, table in order:
            peer = table.get(value & mask)
            if peer is not None:
                return peer
        return None

    def lookup_v4(self, packet: bytes | bytearray | memoryview, offset: int) -> P | None:
        """:meth:`lookup` of the IPv4 address at ``packet[offset:offset + 4]`` (16 for an IPv4
        packet's destination, 12 for its source), without slicing. The caller makes sure the
        packet is long enough (struct.error otherwise)."""
        value = _unpack_v4(packet, offset)[0]
        for mask, table in self._v4.order:
            peer = table.get(value & mask)
            if peer is not None:
                return peer
        return None

    def lookup_v6(self, packet: bytes | bytearray | memoryview, offset: int) -> P | None:
        """:meth:`lookup` of the IPv6 address at ``packet[offset:offset + 16]`` (24 for an IPv6
        packet's destination, 8 for its source)."""
        high, low = _unpack_v6(packet, offset)
        value = high << 64 | low
        for mask, table in self._v6.order:
            peer = table.get(value & mask)
            if peer is not None:
                return peer
        return None


def _network(network: Network | Interface) -> Network:
    if isinstance(network, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return network.network
    return network
