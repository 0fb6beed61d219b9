"""One peer as the core holds it: its configuration (public key, pre-shared key,
endpoint, persistent keepalive; its allowed IPs live in the core's table), its handshake,
keypairs, timers, packets waiting for a session, and its counters. Pure data; the
behaviour is :mod:`.core`'s."""

from __future__ import annotations

from . import noise
from .cookie import Stamper
from .keypair import Keypairs
from .timers import Timers

STAGED_LIMIT = 128  # packets held for a peer while its handshake runs (wireguard-go's)

#: a socket address as the socket module gives it: (host, port) or (host, port, flow, scope)
Address = tuple[str, int] | tuple[str, int, int, int]


class Staged(list[bytes]):
    """Packets waiting for a session, the oldest dropped beyond :data:`STAGED_LIMIT` (as a
    ``deque(maxlen=...)`` would). A list, not a deque: an empty deque holds a 64-slot
    block (about 0.8 KiB) from the start, and most of a server's peers never stage
    anything, so with 10,000 peers that was a sixth of the memory per configured peer."""

    __slots__ = ()

    def append(self, packet: bytes) -> None:
        if len(self) >= STAGED_LIMIT:
            del self[0]
        super().append(packet)


class Peer:
    __slots__ = ("endpoint", "handshake", "heap_at", "keypairs", "last_handshake",
                 "last_initiation_consumed", "last_initiation_sent", "persistent", "public",
                 "removed", "rx_bytes", "rx_packets", "staged", "stamper", "timers",
                 "tx_bytes", "tx_packets")

    def __init__(self, public: bytes) -> None:
        self.public = public
        self.handshake = noise.Handshake(public)
        self.stamper = Stamper(public)
        self.keypairs = Keypairs()
        self.timers = Timers()
        self.endpoint: Address | None = None
        self.persistent = 0  # persistent keepalive interval, seconds (0: off)
        self.staged = Staged()
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.rx_packets = 0  # transport messages authenticated (keepalives too)
        self.tx_packets = 0  # transport messages sealed (keepalives too)
        self.last_handshake: float | None = None  # when the last handshake completed
        self.last_initiation_sent = -1e18
        self.last_initiation_consumed = -1e18
        self.heap_at: float | None = None  # the core's timer heap holds us at this time
        self.removed = False

    @property
    def preshared(self) -> bytes:
        return self.handshake.preshared

    def __repr__(self) -> str:
        return f"Peer({self.public.hex()[:8]}…)"
