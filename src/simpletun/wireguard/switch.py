"""A learning switch's forwarding table for Ethernet frames over WireGuard, pure.

Over tap devices the WireGuard engine carries whole Ethernet frames (a simpletun extension),
so a server with several tap peers must forward between them like a learning switch. The
ports are the peers (any type, compared by identity) and :data:`DEVICE`, the server's own
tap device. :meth:`Switch.learn` remembers which port a source MAC was last seen on;
:meth:`Switch.forward` says where a frame goes: to one port, to every port but the one it
came from (:data:`FLOOD`: broadcast, multicast, unknown or aged-out destinations), or
nowhere (:data:`DROP`, ``None``: the destination sits on the port the frame came from).

Time is passed in (monotonic seconds, never decreasing); nothing here reads a clock, sends
or logs. An entry ages out :data:`AGING` seconds after its MAC was last seen as a source
(as Linux bridges). The table is an ordered dict kept in order of last sight, so aging is
checked on lookup, :meth:`Switch.sweep` removes what aged out in O(removed) (the engine
calls it from its housekeeping, not per frame), and beyond :data:`MAX_ENTRIES` a new MAC
evicts the entry seen longest ago: memory stays bounded under a flood of random source MACs.

What it does NOT do: no spanning tree (a loop between peers is the configuration's
problem), no VLAN awareness (802.1Q-tagged frames are switched by MAC like any other, one
table for all VLANs), no static entries, no per-port limits or filtering (which peer may
use which MAC is not checked: any authenticated peer can claim any source MAC). Source MACs
with the I/G bit set (multicast, broadcast) and the all-zero MAC are never learned.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Final, Generic, TypeAlias, TypeVar

AGING: Final = 300.0  # seconds an entry lives after its MAC was last seen, as Linux bridges
MAX_ENTRIES: Final = 16384  # beyond this a new MAC evicts the entry seen longest ago
ETH_HLEN: Final = 14  # destination, source, ethertype

_ZERO_MAC: Final = bytes(6)

P = TypeVar("P")

Frame: TypeAlias = bytes | bytearray | memoryview


class Device(enum.Enum):
    """The type of :data:`DEVICE`."""

    DEVICE = "device"

    def __repr__(self) -> str:
        return "DEVICE"


class Flood(enum.Enum):
    """The type of :data:`FLOOD`."""

    FLOOD = "flood"

    def __repr__(self) -> str:
        return "FLOOD"


DEVICE: Final = Device.DEVICE  # the port that is the server's own tap device
FLOOD: Final = Flood.FLOOD  # a decision: to every port but the one the frame came from
DROP: Final = None  # a decision: nowhere


def format_mac(mac: bytes) -> str:
    """``aa:bb:cc:dd:ee:ff``."""
    return mac.hex(":")


class _Entry(Generic[P]):
    __slots__ = ("port", "seen")

    def __init__(self, port: P | Device, seen: float) -> None:
        self.port = port
        self.seen = seen


class Switch(Generic[P]):
    """The forwarding table of one tap server: MAC -> port, learned from source addresses.

    A decision is the port itself (a peer or :data:`DEVICE`), :data:`FLOOD`, or ``None``
    (:data:`DROP`). Counters: ``moves`` (a live MAC seen on another port than the one it was
    learned on), ``hairpins`` (unicast frames whose destination sits on the port they came
    from, dropped), ``evictions`` (live entries pushed out by a new MAC when full).
    """

    __slots__ = ("_table", "aging", "evictions", "hairpins", "max_entries", "moves")

    def __init__(self, *, aging: float = AGING, max_entries: int = MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self.aging = aging
        self.max_entries = max_entries
        # in order of last sight (oldest first): refreshing an entry moves it to the end
        self._table: OrderedDict[bytes, _Entry[P]] = OrderedDict()
        self.moves = 0
        self.hairpins = 0
        self.evictions = 0

    def __len__(self) -> int:
        """Entries held, aged-out ones not yet swept included (the memory in use)."""
        return len(self._table)

    def learn(self, frame: Frame, port: P | Device, now: float) -> None:
        """The frame's source MAC is on ``port`` as of ``now``."""
        if len(frame) < ETH_HLEN or frame[6] & 1:
            return
        mac = bytes(frame[6:12])
        table = self._table
        entry = table.get(mac)
        if entry is not None:
            if entry.port is not port:
                if now - entry.seen < self.aging:
                    self.moves += 1
                entry.port = port
            if entry.seen != now:
                entry.seen = now
                table.move_to_end(mac)
            return
        if mac == _ZERO_MAC:
            return
        if len(table) >= self.max_entries:
            _, oldest = table.popitem(last=False)
            if now - oldest.seen < self.aging:
                self.evictions += 1
        table[mac] = _Entry(port, now)

    def forward(self, frame: Frame, from_port: P | Device, now: float) -> P | Device | Flood | None:
        """Where a frame that came in on ``from_port`` goes: a port, FLOOD or None (drop)."""
        if len(frame) < ETH_HLEN:
            return None
        if frame[0] & 1:  # broadcast or multicast destination
            return FLOOD
        entry = self._table.get(bytes(frame[0:6]))
        if entry is None or now - entry.seen >= self.aging:
            return FLOOD
        port = entry.port
        if port is from_port:
            self.hairpins += 1
            return None
        return port

    def handle(self, frame: Frame, from_port: P | Device, now: float) -> P | Device | Flood | None:
        """:meth:`learn` then :meth:`forward`: what the engine does with every frame."""
        self.learn(frame, from_port, now)
        return self.forward(frame, from_port, now)

    def sweep(self, now: float) -> int:
        """Remove the entries that aged out; how many. Costs O(removed): the oldest are first."""
        table, aging, removed = self._table, self.aging, 0
        while table:
            mac = next(iter(table))
            if now - table[mac].seen < aging:
                break
            del table[mac]
            removed += 1
        return removed

    def forget_port(self, port: P | Device) -> None:
        """The port is gone (a removed peer): forget every MAC learned on it."""
        table = self._table
        for mac in [mac for mac, entry in table.items() if entry.port is port]:
            del table[mac]

    def entries(self, now: float) -> list[tuple[str, P | Device, float]]:
        """The live entries as (``aa:bb:cc:dd:ee:ff``, port, age in seconds), oldest first."""
        aging = self.aging
        return [
            (format_mac(mac), entry.port, now - entry.seen)
            for mac, entry in self._table.items()
            if now - entry.seen < aging
        ]
