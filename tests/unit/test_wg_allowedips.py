"""Cryptokey routing (simpletun.wireguard.allowedips): longest-prefix match per family, prefixes
moving between peers, removal; checked against a brute-force reference."""

from __future__ import annotations

import ipaddress
import timeit
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simpletun.wireguard.allowedips import AllowedIPs, Network


@dataclass(eq=True)  # eq=True makes it unhashable: peers are told apart by identity
class Peer:
    name: str
    extra: list[int] = field(default_factory=list)


A, B, C = Peer("a"), Peer("b"), Peer("c")


def net(text: str) -> Network:
    return ipaddress.ip_network(text, strict=False)


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def v4_packet(src: str, dst: str) -> bytes:
    return bytes(12) + ip(src) + ip(dst) + b"payload"


def v6_packet(src: str, dst: str) -> bytes:
    return bytes(8) + ip(src) + ip(dst) + b"payload"


def lookups(table: AllowedIPs[Peer], address: str) -> Peer | None:
    """All the ways to ask, which must agree: raw bytes, memoryview, in a packet (dst, src)."""
    raw = ip(address)
    found = table.lookup(raw)
    assert table.lookup(memoryview(bytearray(raw))) is found
    if len(raw) == 4:
        packet = v4_packet(address, address)
        assert table.lookup_v4(packet, 16) is found
        assert table.lookup_v4(memoryview(packet), 12) is found
    else:
        packet = v6_packet(address, address)
        assert table.lookup_v6(packet, 24) is found
        assert table.lookup_v6(memoryview(packet), 8) is found
    return found


def test_longest_prefix_wins() -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    t.insert(net("10.0.0.0/8"), A)
    t.insert(net("10.1.0.0/16"), B)
    t.insert(net("10.1.2.3/32"), C)
    assert lookups(t, "10.1.2.3") is C
    assert lookups(t, "10.1.2.4") is B
    assert lookups(t, "10.1.255.255") is B
    assert lookups(t, "10.2.0.0") is A
    assert lookups(t, "11.0.0.0") is None
    t.insert(net("fd00::/8"), A)
    t.insert(net("fd00:1::/32"), B)
    t.insert(net("fd00:1::5/128"), C)
    assert lookups(t, "fd00:1::5") is C
    assert lookups(t, "fd00:1::6") is B
    assert lookups(t, "fdff::1") is A
    assert lookups(t, "fe80::1") is None


def test_zero_prefix_catches_all() -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    t.insert(net("0.0.0.0/0"), A)
    t.insert(net("10.0.0.2/32"), B)
    for address in ("0.0.0.0", "255.255.255.255", "10.0.0.1", "10.0.0.3", "192.0.2.1"):
        assert lookups(t, address) is A
    assert lookups(t, "10.0.0.2") is B
    assert lookups(t, "::1") is None  # IPv4's /0 says nothing about IPv6
    t.insert(net("::/0"), C)
    assert lookups(t, "::1") is C
    assert lookups(t, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") is C


def test_families_are_apart() -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    t.insert(net("10.0.0.0/8"), A)
    # ::a00:0 has the same int value as 10.0.0.0, and ::/8 spans it: neither may cross over
    t.insert(net("::ffff:0:0/96"), B)
    assert lookups(t, "::a00:1") is None
    assert lookups(t, "::ffff:10.0.0.1") is B
    assert lookups(t, "10.0.0.1") is A
    t.remove_peer(A)
    assert lookups(t, "10.0.0.1") is None


def test_other_lengths_are_no_address() -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    t.insert(net("0.0.0.0/0"), A)
    t.insert(net("::/0"), A)
    for raw in (b"", b"\x00" * 3, b"\x00" * 5, b"\x00" * 15, b"\x00" * 17):
        assert t.lookup(raw) is None


def test_host_bits_are_masked_off() -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    t.insert(ipaddress.ip_interface("10.0.0.1/24"), A)
    t.insert(ipaddress.ip_interface("fd00::1:2/112"), A)
    assert t.networks(A) == [net("10.0.0.0/24"), net("fd00::1:0/112")]
    assert lookups(t, "10.0.0.200") is A and lookups(t, "fd00::1:ffff") is A
    assert t.holder(net("10.0.0.0/24")) is A
    assert t.holder(ipaddress.ip_interface("10.0.0.77/24")) is A


def test_a_prefix_moves_to_the_last_peer_given_it() -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    t.insert(net("10.0.0.0/24"), A)
    t.insert(net("10.0.1.0/24"), A)
    t.insert(net("10.0.2.0/24"), A)
    t.insert(net("10.0.1.0/24"), B)
    assert lookups(t, "10.0.1.1") is B
    assert t.networks(A) == [net("10.0.0.0/24"), net("10.0.2.0/24")]
    assert t.networks(B) == [net("10.0.1.0/24")]
    # given again to its holder: nothing changes, not even the order
    t.insert(net("10.0.0.0/24"), A)
    assert t.networks(A) == [net("10.0.0.0/24"), net("10.0.2.0/24")]
    assert len(t) == 3


def test_networks_in_insertion_order() -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    order = ["fd00::/64", "10.0.0.2/32", "0.0.0.0/0", "10.9.0.0/16", "::/0"]
    for text in order:
        t.insert(net(text), A)
    assert [str(n) for n in t.networks(A)] == order
    assert t.networks(B) == []


def test_remove_peer() -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    t.insert(net("10.0.0.0/8"), A)
    t.insert(net("10.1.0.0/16"), B)
    t.insert(net("fd00::/8"), B)
    t.remove_peer(B)
    assert lookups(t, "10.1.0.1") is A
    assert lookups(t, "fd00::1") is None
    assert t.networks(B) == [] and len(t) == 1
    t.remove_peer(B)  # again: nothing to do
    t.remove_peer(C)
    t.remove_peer(A)
    assert len(t) == 0 and lookups(t, "10.0.0.1") is None


def test_remove_only_what_that_peer_holds() -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    t.insert(net("10.0.0.0/24"), A)
    t.insert(net("10.0.1.0/24"), B)
    t.remove(net("10.0.1.0/24"), A)  # held by B: a no-op
    t.remove(net("10.0.5.0/24"), A)  # held by nobody
    t.remove(net("10.0.0.0/25"), A)  # a different prefix
    assert lookups(t, "10.0.1.1") is B and lookups(t, "10.0.0.1") is A
    t.remove(ipaddress.ip_interface("10.0.0.9/24"), A)
    assert lookups(t, "10.0.0.1") is None and t.networks(A) == []
    assert t.networks(B) == [net("10.0.1.0/24")]


def test_equal_peers_are_still_different_peers() -> None:
    twin1, twin2 = Peer("twin"), Peer("twin")
    t: AllowedIPs[Peer] = AllowedIPs()
    t.insert(net("10.0.0.1/32"), twin1)
    t.remove(net("10.0.0.1/32"), twin2)
    assert lookups(t, "10.0.0.1") is twin1
    t.insert(net("10.0.0.1/32"), twin2)
    assert lookups(t, "10.0.0.1") is twin2 and t.networks(twin1) == []


# --- against a brute-force reference --------------------------------------------------------

class Reference:
    """A list of (network, peer); lookup is a linear scan for the longest matching prefix."""

    def __init__(self) -> None:
        self.held: dict[Network, Peer] = {}
        self.order: list[tuple[Network, Peer]] = []

    def insert(self, network: Network, peer: Peer) -> None:
        if self.held.get(network) is peer:
            return
        self.held[network] = peer
        self.order = [(n, p) for n, p in self.order if n != network] + [(network, peer)]

    def remove(self, network: Network, peer: Peer) -> None:
        if self.held.get(network) is peer:
            del self.held[network]
            self.order = [(n, p) for n, p in self.order if n != network]

    def remove_peer(self, peer: Peer) -> None:
        for n in [n for n, p in self.held.items() if p is peer]:
            self.remove(n, peer)

    def networks(self, peer: Peer) -> list[Network]:
        return [n for n, p in self.order if p is peer]

    def lookup(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Peer | None:
        best: tuple[int, Peer] | None = None
        for n, p in self.held.items():
            if n.version == address.version and address in n and (
                    best is None or n.prefixlen > best[0]):
                best = (n.prefixlen, p)
        return None if best is None else best[1]


PEERS = [Peer(f"p{i}") for i in range(4)]
# few distinct bits so that prefixes nest and lookups hit
V4_BASES = [0x0A000000, 0x0A000100, 0x0A010000, 0xC0A80000, 0xFFFFFFFF, 0]
V6_BASES = [0xFD << 120, (0xFD << 120) | (1 << 64), (0xFD << 120) | 5, (1 << 128) - 1, 0]


@st.composite
def networks(draw: st.DrawFn) -> Network:
    if draw(st.booleans()):
        base = draw(st.sampled_from(V4_BASES)) ^ draw(st.integers(0, 7))
        length = draw(st.sampled_from([0, 1, 8, 16, 23, 24, 29, 30, 31, 32]) | st.integers(0, 32))
        return ipaddress.IPv4Network((base, length), strict=False)
    base = draw(st.sampled_from(V6_BASES)) ^ draw(st.integers(0, 7))
    length = draw(st.sampled_from([0, 1, 8, 48, 64, 125, 126, 127, 128]) | st.integers(0, 128))
    return ipaddress.IPv6Network((base, length), strict=False)


operations = st.lists(st.tuples(st.sampled_from(["insert", "insert", "insert", "remove",
                                                 "remove_peer"]),
                                networks(), st.sampled_from(PEERS)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(operations, st.lists(networks(), max_size=10))
def test_against_brute_force(ops: list[tuple[str, Network, Peer]],
                             probes: list[Network]) -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    ref = Reference()
    for op, network, peer in ops:
        if op == "remove_peer":
            t.remove_peer(peer)
            ref.remove_peer(peer)
        else:
            getattr(t, op)(network, peer)
            getattr(ref, op)(network, peer)
    for peer in PEERS:
        assert t.networks(peer) == ref.networks(peer)
    assert len(t) == len(ref.held)
    for network in [n for _, n, _ in ops] + probes:
        for address in (network.network_address, network.broadcast_address,
                        network.network_address + 1 if network.num_addresses > 1
                        else network.network_address):
            assert lookups(t, str(address)) is ref.lookup(address), address
        assert t.holder(network) is ref.held.get(network)


# --- cost independent of the peer count (printed, not asserted) ------------------------------

def build(count: int) -> tuple[AllowedIPs[Peer], list[Peer]]:
    t: AllowedIPs[Peer] = AllowedIPs()
    peers = [Peer(str(i)) for i in range(count)]
    for i, p in enumerate(peers):
        t.insert(ipaddress.IPv4Network((0x0A000000 + i + 1, 32)), p)
        t.insert(ipaddress.IPv6Network(((0xFD << 120) + i + 1, 128)), p)
    t.insert(net("192.168.0.0/24"), peers[0])
    t.insert(net("172.16.0.0/16"), peers[1])
    t.insert(net("0.0.0.0/0"), peers[2])
    t.insert(net("fd01::/64"), peers[0])
    t.insert(net("::/0"), peers[2])
    return t, peers


def measure(t: AllowedIPs[Peer], packet4: memoryview, packet6: memoryview,
            miss4: bytes) -> list[tuple[str, float]]:
    """Nanoseconds per lookup, the best of three runs."""
    number = 20_000
    out = []
    for name, stmt in (("lookup_v4 (dst /32)", lambda: t.lookup_v4(packet4, 16)),
                       ("lookup_v4 (miss: /0)", lambda: t.lookup_v4(miss4, 16)),
                       ("lookup_v6 (dst /128)", lambda: t.lookup_v6(packet6, 24)),
                       ("lookup(bytes v4)", lambda: t.lookup(packet4[16:20]))):
        out.append((name, min(timeit.repeat(stmt, number=number, repeat=3)) / number * 1e9))
    return out


def test_lookup_cost_does_not_grow_with_peers(capsys: pytest.CaptureFixture[str]) -> None:
    rows = []
    for count in (10, 10_000):
        t, peers = build(count)
        last = peers[-1]
        packet4 = memoryview(v4_packet("192.0.2.1", str(ipaddress.IPv4Address(0x0A000000 + count))))
        packet6 = memoryview(v6_packet("fd02::1", str(ipaddress.IPv6Address((0xFD << 120) + count))))
        miss4 = v4_packet("192.0.2.1", "198.51.100.1")
        # correct at every size (the timings themselves are only printed)
        assert t.lookup_v4(packet4, 16) is last and t.lookup_v6(packet6, 24) is last
        assert t.lookup(packet4[16:20]) is last and t.lookup(packet6[24:40]) is last
        assert t.lookup_v4(miss4, 16) is peers[2] and t.lookup_v4(packet4, 12) is peers[2]
        assert len(t) == 2 * count + 5
        rows += [f"{count:>6} peers  {name:<22} {ns:6.0f} ns"
                 for name, ns in measure(t, packet4, packet6, miss4)]
    with capsys.disabled():
        print("\nallowed IPs lookup cost:\n" + "\n".join(rows))
