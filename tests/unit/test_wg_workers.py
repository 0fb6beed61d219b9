"""--workers for the encrypted engine, pure parts: the kernel's steering program (run here by
a small classic-BPF interpreter) against :func:`workers.steer`, the shared send counters
across forked processes, and a leader's and a follower's cores sending on one keypair (no
counter twice, all inside the peer's replay window) and receiving each keypair in one
process only."""

from __future__ import annotations

import os
import struct

from hypothesis import given
from hypothesis import strategies as st

from simpletun.wireguard import workers
from simpletun.wireguard.core import RESERVE, WireGuard
from simpletun.wireguard.keypair import REJECT_AFTER_TIME
from simpletun.wireguard.messages import TRANSPORT
from simpletun.wireguard.shared import Table

from .wgsim import A_TO_B, B_TO_A, Net, Node, pair


def run_cbpf(code: list[tuple[int, int, int, int]], data: bytes) -> int:
    """The subset of classic BPF the steering program uses, as the kernel runs it (a load
    beyond the data aborts the program with 0)."""
    a = x = pc = 0
    while True:
        op, jt, jf, k = code[pc]
        pc += 1
        if op == 0x30:  # ld b abs
            if k >= len(data):
                return 0
            a = data[k]
        elif op == 0x15:  # jeq k
            pc += jt if a == k else jf
        elif op == 0x94:  # mod k
            a %= k
        elif op == 0x07:  # tax
            x = a
        elif op == 0x16:  # ret a
            return a
        elif op == 0x06:  # ret k
            return k
        else:
            raise AssertionError(f"unexpected opcode {op:#x} (x={x})")


@given(st.binary(max_size=64), st.integers(1, workers.MAX_WORKERS))
def test_the_kernel_program_steers_as_steer_says(data: bytes, n: int) -> None:
    assert run_cbpf(workers.program(n), data) == workers.steer(data, n)
    assert 0 <= workers.steer(data, n) < n


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.integers(1, 8))
def test_transport_messages_go_by_receiver_index_and_the_rest_to_the_leader(
        index: int, counter: int, n: int) -> None:
    message = struct.pack("<IIQ", TRANSPORT, index, counter) + bytes(16)
    assert run_cbpf(workers.program(n), message) == (index & 0xFF) % n
    for kind in (1, 2, 3):  # initiation, response, cookie reply: the leader's
        assert run_cbpf(workers.program(n), bytes([kind]) + message[1:]) == 0


def test_counters_are_handed_out_once_across_processes() -> None:
    table = Table(slots=4)
    pids, reads = [], []
    for _ in range(3):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            starts = [table.reserve(1, RESERVE) for _ in range(300)]
            os.write(w, struct.pack(f"{len(starts)}Q", *starts))
            os._exit(0)
        os.close(w)
        pids.append(pid)
        reads.append(r)
    mine = [table.reserve(1, RESERVE) for _ in range(300)]
    got = list(mine)
    for pid, r in zip(pids, reads, strict=True):
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        os.close(r)
        os.waitpid(pid, 0)
        got += struct.unpack(f"{len(data) // 8}Q", data)
    assert len(got) == 1200 and len(set(got)) == 1200  # every run once
    assert sorted(got) == [i * RESERVE for i in range(1200)]  # and no counter skipped
    assert table.reserve(0, 1) == 0  # slots are apart


def test_a_released_slot_waits_until_its_keypair_is_dead() -> None:
    table = Table(slots=2)
    a = table.allocate(100.0)
    b = table.allocate(100.0)
    table.reserve(a, 64)
    table.release(a, 100.0)
    try:
        table.allocate(100.0 + REJECT_AFTER_TIME - 1)
    except RuntimeError as exc:
        assert "keypairs alive" in str(exc)
    else:
        raise AssertionError("a slot was given again while its keypair may be in use")
    assert table.allocate(100.0 + REJECT_AFTER_TIME) == a
    assert table.reserve(a, 1) == 0  # zeroed for its new keypair
    assert b != a


def _crew(net: Net, b: Node, n: int = 2) -> list[WireGuard]:
    """Make ``b`` the leader of ``n`` workers; returns the followers' cores."""
    table = Table(slots=64)
    b.core.workers = b.core.turns = n
    b.core.table = table
    crew = []
    for i in range(1, n):
        f = WireGuard(mtu=1420)
        f.follower = True
        f.table = table
        f.turns, f.turn_of = n, i
        workers.apply(f, workers.config_message(b.core), net.now)
        crew.append(f)
    return crew


def _share(net: Net, b: Node, crew: list[WireGuard]) -> None:
    message = workers.keys_message(b.core, set(b.core.peers.values()))
    for f in crew:
        workers.apply(f, message, net.now)
    b.core.rekeyed.clear()


def _run(net: Net, b: Node, crew: list[WireGuard]) -> None:
    """Move what is in flight, ``b``'s messages to the process the kernel would steer
    them to, as the engines do: a follower's confirmations and requests go to the leader,
    whose new keys go to the followers."""
    cores = [b.core, *crew]
    net.collect()
    while net.wire:
        src, dst, msg = net.wire.pop(0)
        if dst != b.address:
            net.deliver(src, dst, msg)
        else:
            core = cores[workers.steer(msg, len(cores))]
            into = bytearray(max(len(msg), 32))
            n = core.open(memoryview(msg), src, net.now, memoryview(into))
            if n:
                b.delivered.append(bytes(into[:n]))
            for f in crew:
                for peer, index in f.confirmed.items():
                    b.core.confirm(b.core.peers[peer.public], index, net.now)
                f.confirmed.clear()
                for msg_, to in f.outbox:
                    net.wire.append((b.address, (to[0], to[1]), bytes(msg_)))
                f.outbox.clear()
        if b.core.rekeyed:
            _share(net, b, crew)
        net.collect()


def _seal(core: WireGuard, packet: bytes, now: float) -> bytes:
    peer = core.route(memoryview(packet))
    assert peer is not None
    slot = bytearray(16 + len(packet) + 32)
    slot[16:16 + len(packet)] = packet
    n = core.seal(peer, memoryview(slot), len(packet), now)
    return bytes(slot[:n])


def _open(core: WireGuard, msg: bytes, source: tuple[str, int], now: float) -> int:
    into = bytearray(len(msg))
    return core.open(memoryview(msg), source, now, memoryview(into))


def test_leader_and_follower_send_on_one_keypair_without_repeating_a_counter() -> None:
    net, a, b = pair()
    crew = _crew(net, b)
    net.send(a, A_TO_B)  # a initiates; b answers and takes the first packet
    _run(net, b, crew)
    assert b.delivered == [A_TO_B]
    f = crew[0]
    assert f.peers[a.public].keypairs.current is not None
    counters = []
    sent = []
    for i in range(400):  # both send, interleaved unevenly, some time passing
        net.now += 0.0004
        core = f if i % 3 else b.core
        msg = _seal(core, B_TO_A, net.now)
        assert msg and msg[0] == TRANSPORT
        counters.append(struct.unpack_from("<Q", msg, 8)[0])
        sent.append(msg)
    assert len(set(counters)) == len(counters)  # no nonce twice
    for msg in sent:  # the peer takes them all: inside its replay window
        assert _open(a.core, msg, b.address, net.now) == len(B_TO_A)
    assert a.core.drops == {}
    for msg in sent[:20]:  # and a replay of any is dropped
        assert _open(a.core, msg, b.address, net.now) == 0
    assert a.core.drops["replay"] == 20


def test_each_keypair_is_opened_by_the_worker_its_index_steers_to() -> None:
    net, a, b = pair()
    crew = _crew(net, b)
    net.send(a, A_TO_B)
    _run(net, b, crew)
    msg = _seal(a.core, A_TO_B, net.now)
    owner = workers.steer(msg, 2)
    cores = [b.core, crew[0]]
    assert _open(cores[owner], msg, a.address, net.now) == len(A_TO_B)
    assert _open(cores[1 - owner], msg, a.address, net.now) == 0
    assert cores[1 - owner].drops["steered-elsewhere"] == 1


def test_the_leaders_indices_take_turns_over_the_workers() -> None:
    net, a, b = pair()
    _crew(net, b, n=3)
    owners = {b.core._new_index(b.core.peers[a.public]) & 0xFF for _ in range(30)}
    assert {o % 3 for o in owners} == {0, 1, 2}


def test_a_follower_asks_for_handshakes_and_answers_none() -> None:
    net, a, b = pair()
    crew = _crew(net, b)
    f = crew[0]
    peer = f.peers[a.public]
    peer.endpoint = a.address
    assert _seal(f, B_TO_A, net.now) == b""  # no session: staged, and asked for
    assert f.wanted == {peer} and f.outbox == [] and peer.staged
    net.send(a, A_TO_B)  # a's initiation, given to the follower: not its to answer
    init = next(m for _t, _s, _d, m in net.history if m[0] == 1)
    assert _open(f, init, a.address, net.now) == 0
    assert f.drops["handshake-at-worker"] == 1 and f.outbox == []
    f.wanted.clear()
    _run(net, b, crew)  # the leader's session reaches it: what waited went out
    assert not f.wanted and not peer.staged
    assert a.delivered == [B_TO_A]


def test_the_leaders_timers_follow_what_the_followers_moved() -> None:
    net, a, b = pair()
    crew = _crew(net, b)
    net.send(a, A_TO_B)
    _run(net, b, crew)
    peer = b.core.peers[a.public]
    peer.timers.keepalive_at = None
    b.core.worked(peer, received=True, sent=False, now=net.now)
    assert peer.timers.keepalive_at is not None  # a keepalive due unless we send
    b.core.worked(peer, received=False, sent=True, now=net.now)
    assert peer.timers.keepalive_at is None and peer.timers.new_handshake_at is not None
