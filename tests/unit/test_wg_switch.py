"""The tap server's learning switch (wireguard.switch.Switch): byte-vector cases, and with
hypothesis, random frames from random ports checked decision by decision against a
reference model (a dict mac -> (port, last seen)), and the memory bound under a flood of
random source MACs."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simpletun.wireguard.switch import (
    AGING,
    DEVICE,
    DROP,
    FLOOD,
    MAX_ENTRIES,
    Device,
    Flood,
    Switch,
)

BROADCAST = bytes.fromhex("ffffffffffff")
MCAST4 = bytes.fromhex("01005e000001")  # IPv4 all-hosts
MCAST6 = bytes.fromhex("333300000001")  # IPv6 all-nodes
ZERO = bytes(6)
A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
C = bytes.fromhex("0a0b0c0d0e0f")
IPV4 = b"\x08\x00"


class Peer:
    """A port: compared by identity, as the engine's peers are."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def eth(dst: bytes, src: bytes, ethertype: bytes = IPV4, payload: bytes = bytes(46)) -> bytes:
    return dst + src + ethertype + payload


P1, P2, P3 = Peer("p1"), Peer("p2"), Peer("p3")


def test_constants() -> None:
    assert AGING == 300.0
    assert MAX_ENTRIES == 16384
    assert DROP is None


def test_broadcast_and_multicast_flood_even_when_learned_nowhere() -> None:
    sw: Switch[Peer] = Switch()
    for dst in (BROADCAST, MCAST4, MCAST6):
        assert sw.handle(eth(dst, A), P1, 0.0) is FLOOD
        assert sw.handle(eth(dst, B), DEVICE, 0.0) is FLOOD
    assert sw.hairpins == 0


def test_unknown_unicast_floods() -> None:
    sw: Switch[Peer] = Switch()
    assert sw.forward(eth(B, A), P1, 0.0) is FLOOD
    sw.learn(eth(B, A), P1, 0.0)  # learning A says nothing about B
    assert sw.forward(eth(B, A), P1, 0.0) is FLOOD


def test_learned_unicast_goes_to_its_port_both_ways() -> None:
    sw: Switch[Peer] = Switch()
    assert sw.handle(eth(B, A), P1, 0.0) is FLOOD  # B unknown yet
    assert sw.handle(eth(A, B), DEVICE, 1.0) is P1  # the device answers: A is on p1
    assert sw.handle(eth(B, A), P1, 2.0) is DEVICE
    assert sw.handle(eth(A, C), P2, 3.0) is P1  # peer to peer through the server
    assert sw.handle(eth(C, A), P1, 4.0) is P2
    assert sw.moves == sw.hairpins == 0


def test_hairpin_drops_and_counts() -> None:
    sw: Switch[Peer] = Switch()
    sw.learn(eth(BROADCAST, A), P1, 0.0)
    sw.learn(eth(BROADCAST, B), P1, 0.0)  # two hosts behind the same peer
    assert sw.handle(eth(B, A), P1, 1.0) is DROP
    assert sw.forward(eth(A, B), P1, 1.0) is None
    assert sw.hairpins == 2
    assert sw.forward(eth(A, B), P2, 1.0) is P1  # from elsewhere it goes there


def test_aging_floods_again_after_300_seconds() -> None:
    sw: Switch[Peer] = Switch()
    sw.learn(eth(BROADCAST, A), P1, 1000.0)
    assert sw.forward(eth(A, B), DEVICE, 1000.0 + AGING - 0.5) is P1
    assert sw.forward(eth(A, B), DEVICE, 1000.0 + AGING) is FLOOD
    assert sw.entries(1000.0 + AGING) == []
    # seen again: learned again, and the aging runs from the new sighting
    sw.learn(eth(BROADCAST, A), P1, 1000.0 + AGING + 1)
    assert sw.forward(eth(A, B), DEVICE, 1000.0 + 2 * AGING) is P1
    assert sw.forward(eth(A, B), DEVICE, 1000.0 + 2 * AGING + 1) is FLOOD


def test_traffic_keeps_an_entry_alive() -> None:
    sw: Switch[Peer] = Switch()
    for t in range(0, 1000, 100):
        sw.learn(eth(B, A), P1, float(t))
        assert sw.forward(eth(A, B), DEVICE, t + AGING - 1) is P1
    # receiving frames for A does not refresh it: only A's own frames do
    assert sw.forward(eth(A, B), DEVICE, 900 + AGING) is FLOOD


def test_a_mac_moves_to_another_port() -> None:
    sw: Switch[Peer] = Switch()
    sw.learn(eth(BROADCAST, A), P1, 0.0)
    assert sw.forward(eth(A, B), DEVICE, 1.0) is P1
    sw.learn(eth(BROADCAST, A), P2, 2.0)
    assert sw.moves == 1
    assert sw.forward(eth(A, B), DEVICE, 2.0) is P2
    assert sw.forward(eth(A, B), P2, 2.0) is DROP  # now a hairpin on p2
    assert sw.forward(eth(A, B), P1, 2.0) is P2
    sw.learn(eth(BROADCAST, A), P2, 3.0)  # same port again: not a move
    assert sw.moves == 1
    # an aged-out entry showing up elsewhere is a new sighting, not a move
    sw.learn(eth(BROADCAST, A), DEVICE, 3.0 + AGING)
    assert sw.moves == 1
    assert sw.forward(eth(A, B), P1, 3.0 + AGING) is DEVICE
    assert len(sw) == 1


def test_multicast_broadcast_and_zero_sources_are_never_learned() -> None:
    sw: Switch[Peer] = Switch()
    for src in (BROADCAST, MCAST4, MCAST6, bytes.fromhex("030000000001"), ZERO):
        sw.learn(eth(A, src), P1, 0.0)
    assert len(sw) == 0
    assert sw.forward(eth(ZERO, B), P2, 0.0) is FLOOD


def test_vlan_tagged_frames_are_switched_by_mac() -> None:
    sw: Switch[Peer] = Switch()
    tag = b"\x81\x00\x00\x64"  # 802.1Q, VLAN 100
    sw.learn(eth(B, A, tag + IPV4), P1, 0.0)
    assert sw.forward(eth(A, B, tag + IPV4), P2, 0.0) is P1
    assert sw.forward(eth(A, B, b"\x81\x00\x00\x65" + IPV4), P2, 0.0) is P1  # any VLAN
    assert sw.forward(eth(A, B), P2, 0.0) is P1  # or none


def test_short_frames_drop_and_teach_nothing() -> None:
    sw: Switch[Peer] = Switch()
    sw.learn(eth(BROADCAST, A), P1, 0.0)
    for n in (0, 1, 6, 12, 13):
        frame = eth(A, B)[:n]
        assert sw.forward(frame, P2, 0.0) is DROP
        assert sw.handle(frame, P2, 0.0) is DROP
    assert len(sw) == 1
    assert sw.hairpins == 0
    assert sw.handle(eth(A, B, payload=b""), P2, 0.0) is P1  # 14 bytes is a frame


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview, "slice"])
def test_any_buffer(kind: object) -> None:
    sw: Switch[Peer] = Switch()

    def make(frame: bytes) -> bytes | bytearray | memoryview:
        if kind == "slice":  # a view into a larger receive buffer, as the engine has
            return memoryview(bytearray(16) + frame)[16:]
        assert callable(kind)
        result: bytes | bytearray | memoryview = kind(frame)
        return result

    sw.learn(make(eth(BROADCAST, A)), P1, 0.0)
    assert sw.forward(make(eth(A, B)), P2, 0.0) is P1
    assert sw.handle(make(eth(A, B)), DEVICE, 0.0) is P1
    assert sw.forward(make(eth(B, A)), P1, 0.0) is DEVICE


def test_forget_port() -> None:
    sw: Switch[Peer] = Switch()
    sw.learn(eth(BROADCAST, A), P1, 0.0)
    sw.learn(eth(BROADCAST, C), P1, 0.0)
    sw.learn(eth(BROADCAST, B), P2, 0.0)
    sw.forget_port(P1)
    assert sw.forward(eth(A, B), P2, 1.0) is FLOOD
    assert sw.forward(eth(C, B), P2, 1.0) is FLOOD
    assert sw.forward(eth(B, A), DEVICE, 1.0) is P2
    assert len(sw) == 1
    sw.learn(eth(BROADCAST, A), P3, 2.0)  # relearned elsewhere: not a move
    assert sw.moves == 0


def test_sweep_removes_only_what_aged_out() -> None:
    sw: Switch[Peer] = Switch()
    sw.learn(eth(BROADCAST, A), P1, 0.0)
    sw.learn(eth(BROADCAST, B), P2, 10.0)
    sw.learn(eth(BROADCAST, C), DEVICE, 20.0)
    sw.learn(eth(BROADCAST, A), P1, 30.0)  # refreshed: now the youngest
    assert sw.sweep(AGING + 9) == 0
    assert sw.sweep(AGING + 20) == 2  # B and C
    assert len(sw) == 1
    assert sw.forward(eth(A, B), DEVICE, AGING + 20) is P1
    assert sw.sweep(AGING + 30) == 1
    assert len(sw) == 0
    assert sw.sweep(10_000.0) == 0


def test_entries() -> None:
    sw: Switch[Peer] = Switch()
    sw.learn(eth(BROADCAST, A), P1, 0.0)
    sw.learn(eth(BROADCAST, C), DEVICE, 5.0)
    assert sw.entries(10.0) == [("02:00:00:00:00:01", P1, 10.0), ("0a:0b:0c:0d:0e:0f", DEVICE, 5.0)]
    assert sw.entries(AGING + 1) == [("0a:0b:0c:0d:0e:0f", DEVICE, AGING - 4)]


def test_full_table_evicts_the_entry_seen_longest_ago() -> None:
    sw: Switch[Peer] = Switch(max_entries=2)
    sw.learn(eth(BROADCAST, A), P1, 0.0)
    sw.learn(eth(BROADCAST, B), P2, 1.0)
    sw.learn(eth(BROADCAST, A), P1, 2.0)  # A seen again: B is now the oldest
    sw.learn(eth(BROADCAST, C), P3, 3.0)
    assert len(sw) == 2
    assert sw.evictions == 1
    assert sw.forward(eth(A, C), P3, 3.0) is P1
    assert sw.forward(eth(B, C), P3, 3.0) is FLOOD
    assert sw.forward(eth(C, A), P1, 3.0) is P3
    # an aged-out entry pushed out is not counted as an eviction
    sw.learn(eth(BROADCAST, B), P2, 2.0 + AGING)
    assert sw.evictions == 1


def test_frames_of_one_instant_leave_in_the_order_first_seen() -> None:
    # a batch shares one time: seeing A again at the same instant does not make it younger
    # than B (the table only reorders when the time moves)
    sw: Switch[Peer] = Switch(max_entries=2)
    sw.learn(eth(BROADCAST, A), P1, 5.0)
    sw.learn(eth(BROADCAST, B), P2, 5.0)
    sw.learn(eth(BROADCAST, A), P1, 5.0)
    assert [mac for mac, _, _ in sw.entries(5.0)] == ["02:00:00:00:00:01", "02:00:00:00:00:02"]
    sw.learn(eth(BROADCAST, C), P3, 5.0)
    assert sw.forward(eth(A, C), P3, 5.0) is FLOOD
    assert sw.forward(eth(B, C), P3, 5.0) is P2


def test_bad_capacity() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        Switch(max_entries=0)


def test_memory_bound_at_the_default_size() -> None:
    sw: Switch[Peer] = Switch()
    macs = [b"\x02" + i.to_bytes(5, "big") for i in range(MAX_ENTRIES + 1000)]
    for i, mac in enumerate(macs):
        sw.learn(eth(BROADCAST, mac), P1, i / 1000)
    assert len(sw) == MAX_ENTRIES
    assert sw.evictions == 1000
    assert sw.forward(eth(macs[999], A), P2, 20.0) is FLOOD  # the oldest went
    assert sw.forward(eth(macs[1000], A), P2, 20.0) is P1
    assert sw.forward(eth(macs[-1], A), P2, 20.0) is P1


# -- the reference model ------------------------------------------------------------------


@dataclass
class Reference:
    """mac -> (port, last seen, order of that sighting); evicts the least recently seen (the
    first seen at that time when several were); decides as a learning switch does."""

    max_entries: int
    table: dict[bytes, tuple[object, float, int]] = field(default_factory=dict)
    tick: int = 0
    moves: int = 0
    hairpins: int = 0
    evictions: int = 0

    def learn(self, frame: bytes, port: object, now: float) -> None:
        src = frame[6:12]
        if len(frame) < 14 or src[0] & 1 or src == ZERO:
            return
        self.tick += 1
        old = self.table.get(src)
        if old is None:
            if len(self.table) >= self.max_entries:
                oldest = min(self.table, key=lambda m: self.table[m][1:])
                if now - self.table[oldest][1] < AGING:
                    self.evictions += 1
                del self.table[oldest]
            self.table[src] = (port, now, self.tick)
            return
        old_port, seen, order = old
        if old_port is not port and now - seen < AGING:
            self.moves += 1
        self.table[src] = (port, now, order if seen == now else self.tick)

    def forward(self, frame: bytes, from_port: object, now: float) -> object:
        if len(frame) < 14:
            return None
        dst = frame[0:6]
        if dst[0] & 1:
            return FLOOD
        entry = self.table.get(dst)
        if entry is None or now - entry[1] >= AGING:
            return FLOOD
        if entry[0] is from_port:
            self.hairpins += 1
            return None
        return entry[0]

    def sweep(self, now: float) -> int:
        old = [mac for mac, (_, seen, _) in self.table.items() if now - seen >= AGING]
        for mac in old:
            del self.table[mac]
        return len(old)

    def forget_port(self, port: object) -> None:
        self.table = {m: e for m, e in self.table.items() if e[0] is not port}

    def entries(self, now: float) -> list[tuple[str, object, float]]:
        live = sorted((e[1:], m, e[0]) for m, e in self.table.items() if now - e[1] < AGING)
        return [(m.hex(":"), port, now - seen) for (seen, _), m, port in live]


POOL = [A, B, C, BROADCAST, MCAST4, ZERO, bytes.fromhex("020000000003"),
        bytes.fromhex("020000000004"), bytes.fromhex("020000000005")]  # fmt: skip
PORTS: list[object] = [P1, P2, P3, DEVICE]
# time steps: often none (several frames in one batch share a time), sometimes past the aging
STEPS = st.one_of(
    st.just(0.0),
    st.sampled_from([0.25, 1.0, 50.0, AGING - 1, AGING, AGING + 1]),
    st.floats(0, 2 * AGING),
)
# one op: (what, destination, source, port, time step, frame length); mostly frames
OPS = st.tuples(
    st.sampled_from(["learn", "forward", "handle", "handle", "handle", "sweep", "forget"]),
    st.sampled_from(POOL),
    st.sampled_from(POOL),
    st.integers(0, len(PORTS) - 1),
    STEPS,
    st.sampled_from([14, 14, 60, 13]),
)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6), st.lists(OPS, max_size=80))
def test_agrees_with_the_reference_model(
    max_entries: int, ops: list[tuple[str, bytes, bytes, int, float, int]]
) -> None:
    sw: Switch[object] = Switch(max_entries=max_entries)
    ref = Reference(max_entries)
    now = 1000.0
    for kind, dst, src, p, dt, n in ops:
        now += dt
        frame, port = eth(dst, src)[:n], PORTS[p]
        if kind == "sweep":
            assert sw.sweep(now) == ref.sweep(now)
        elif kind == "forget":
            sw.forget_port(port)
            ref.forget_port(port)
        elif kind == "learn":
            sw.learn(memoryview(frame), port, now)
            ref.learn(frame, port, now)
        else:
            if kind == "handle":
                ref.learn(frame, port, now)
                got = sw.handle(memoryview(frame), port, now)
            else:
                got = sw.forward(memoryview(frame), port, now)
            assert got is ref.forward(frame, port, now), (kind, frame[:12].hex(), port, now)
        assert (sw.moves, sw.hairpins, sw.evictions) == (ref.moves, ref.hairpins, ref.evictions)
        assert len(sw) == len(ref.table) <= max_entries
        assert sw.entries(now) == ref.entries(now)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 64), st.lists(st.binary(min_size=6, max_size=6), min_size=1, max_size=400))
def test_memory_bound_with_random_source_macs(max_entries: int, macs: list[bytes]) -> None:
    sw: Switch[object] = Switch(max_entries=max_entries)
    for i, mac in enumerate(macs):
        sw.learn(eth(BROADCAST, mac), PORTS[i % len(PORTS)], i * 0.001)
        assert len(sw) <= max_entries
    learnable = [m for m in macs if not m[0] & 1 and m != ZERO]
    assert len(sw) == min(max_entries, len(set(learnable)))
    if learnable:  # the last one learned is always kept, on the port it came from
        last = max(i for i, m in enumerate(macs) if m == learnable[-1])
        now = len(macs) * 0.001
        assert sw.forward(eth(learnable[-1], A), object(), now) is PORTS[last % len(PORTS)]


def test_decisions_are_typed_sentinels() -> None:
    assert isinstance(DEVICE, Device) and isinstance(FLOOD, Flood)
    assert repr(DEVICE) == "DEVICE" and repr(FLOOD) == "FLOOD"
