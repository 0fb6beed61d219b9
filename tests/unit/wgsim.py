"""Two (or more) sans-IO WireGuard cores joined by an in-memory network with a fake clock,
for the core's unit tests."""

from __future__ import annotations

import ipaddress
import random
import struct
from dataclasses import dataclass, field

from simpletun.wireguard import keys
from simpletun.wireguard.core import WireGuard
from simpletun.wireguard.peer import Peer


def ipv4(src: str, dst: str, payload: bytes = b"x" * 20) -> bytes:
    """An IPv4 UDP-ish packet (protocol 253, experimental) with a valid header."""
    total = 20 + len(payload)
    head = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 253, 0,
                                 ipaddress.IPv4Address(src).packed,
                                 ipaddress.IPv4Address(dst).packed))
    return bytes(head) + payload


def ipv6(src: str, dst: str, payload: bytes = b"y" * 20) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), 253, 64,
                       ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + payload


@dataclass
class Node:
    name: str
    address: tuple[str, int]
    core: WireGuard
    private: bytes
    delivered: list[bytes] = field(default_factory=list)

    @property
    def public(self) -> bytes:
        return keys.public_from_private(self.private)


class Net:
    """Nodes by address; :meth:`run` moves the outboxes until the network is quiet."""

    def __init__(self, seed: int = 1) -> None:
        self.now = 1000.0
        self.nodes: dict[tuple[str, int], Node] = {}
        self.wire: list[tuple[tuple[str, int], tuple[str, int], bytes]] = []  # src, dst, msg
        self.rng = random.Random(seed)
        self.lost = 0.0  # fraction of messages lost
        self.down: set[tuple[str, int]] = set()
        #: everything ever put on the wire, in order: (time, src, dst, msg)
        self.history: list[tuple[float, tuple[str, int], tuple[str, int], bytes]] = []

    def node(self, name: str, address: tuple[str, int]) -> Node:
        private = keys.generate_private()
        core = WireGuard(mtu=1420, wall_offset=1.7e9, rng=random.Random(name))
        core.set_private_key(private)
        n = self.nodes[address] = Node(name, address, core, private)
        return n

    def link(self, a: Node, b: Node, a_allowed: str, b_allowed: str, *,
             endpoint_of_b: bool = True, endpoint_of_a: bool = False,
             psk: bytes | None = None) -> tuple[Peer, Peer]:
        """Make ``a`` and ``b`` peers: a's peer b holds ``b_allowed``, and the other way."""
        pb = a.core.add_peer(b.public)
        a.core.add_allowed(pb, ipaddress.ip_network(b_allowed))
        pa = b.core.add_peer(a.public)
        b.core.add_allowed(pa, ipaddress.ip_network(a_allowed))
        if endpoint_of_b:
            pb.endpoint = b.address
        if endpoint_of_a:
            pa.endpoint = a.address
        if psk is not None:
            a.core.set_preshared(pb, psk)
            b.core.set_preshared(pa, psk)
        return pb, pa

    def send(self, src: Node, packet: bytes) -> int:
        """``src``'s device gives ``packet``: route, seal, put on the wire."""
        peer = src.core.route(memoryview(packet))
        if peer is None:
            return 0
        slot = bytearray(16 + len(packet) + 32)
        slot[16:16 + len(packet)] = packet
        n = src.core.seal(peer, memoryview(slot), len(packet), self.now)
        if n:
            assert peer.endpoint is not None
            self.wire.append((src.address, _plain(peer.endpoint), bytes(slot[:n])))
            self.history.append((self.now, *self.wire[-1]))
        self.collect()
        return n

    def collect(self) -> None:
        for node in self.nodes.values():
            for msg, to in node.core.outbox:
                self.wire.append((node.address, _plain(to), bytes(msg)))
                self.history.append((self.now, *self.wire[-1]))
            node.core.outbox.clear()

    def deliver(self, src: tuple[str, int], dst: tuple[str, int], msg: bytes) -> None:
        node = self.nodes.get(dst)
        if node is None or dst in self.down:
            return
        into = bytearray(max(len(msg), 32))
        n = node.core.open(memoryview(msg), src, self.now, memoryview(into))
        if n:
            node.delivered.append(bytes(into[:n]))

    def run(self, limit: int = 1000) -> int:
        """Deliver until nothing is in flight; returns how many messages moved."""
        moved = 0
        self.collect()
        while self.wire and moved < limit:
            src, dst, msg = self.wire.pop(0)
            moved += 1
            if self.lost and self.rng.random() < self.lost:
                continue
            self.deliver(src, dst, msg)
            self.collect()
        return moved

    def advance(self, seconds: float, step: float = 0.5) -> None:
        """Let time pass, firing timers and moving what they send."""
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for node in self.nodes.values():
                node.core.tick(self.now)
            self.run()


def _plain(a: tuple[str, int] | tuple[str, int, int, int]) -> tuple[str, int]:
    return a[0], a[1]


# --- helpers added for the core's time-driven tests ------------------------------------------

A_ADDR = ("192.0.2.1", 51820)
B_ADDR = ("192.0.2.2", 51820)


def pair(seed: int = 1, *, psk: bytes | None = None) -> tuple[Net, Node, Node]:
    """Two nodes ``a`` (10.0.0.1, knows b's endpoint) and ``b`` (10.0.0.2), linked."""
    net = Net(seed)
    a = net.node("a", A_ADDR)
    b = net.node("b", B_ADDR)
    net.link(a, b, "10.0.0.1/32", "10.0.0.2/32", psk=psk)
    return net, a, b


def msg_type(msg: bytes) -> int:
    return msg[0]


def sent(net: Net, src: Node, kind: int, since: float = -1e18) -> list[tuple[float, bytes]]:
    """(time, message) of every message of type ``kind`` ``src`` put on the wire since
    ``since`` (keepalives are transport messages of 32 bytes)."""
    return [(t, m) for t, s, _d, m in net.history
            if s == src.address and m[0] == kind and t >= since]


def keepalives(net: Net, src: Node, since: float = -1e18) -> list[float]:
    return [t for t, m in sent(net, src, 4, since) if len(m) == 32]


A_TO_B = ipv4("10.0.0.1", "10.0.0.2", b"a" * 30)
B_TO_A = ipv4("10.0.0.2", "10.0.0.1", b"b" * 30)


def session(seed: int = 1) -> tuple[Net, Node, Node]:
    """A pair whose first handshake is done (a initiated) and one packet delivered."""
    net, a, b = pair(seed)
    net.send(a, A_TO_B)
    net.run()
    assert b.delivered == [A_TO_B]
    return net, a, b
