"""--workers for the encrypted engine, pure parts: the kernel's steering program (run here by
a small classic-BPF interpreter) against :func:`workers.steer`, the shared send counters
across forked processes, and a leader's and a follower's cores sending on one keypair (no
counter twice, all inside the peer's replay window) and receiving each keypair in one
process only."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from simpletun.wireguard import workers
from simpletun.wireguard.core import RESERVE, WireGuard
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
    got_slot = table.allocate()
    assert got_slot is not None
    slot, gen = got_slot
    pids, reads = [], []
    for _ in range(3):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            starts = [table.reserve(slot, gen, RESERVE) for _ in range(300)]
            os.write(w, struct.pack(f"{len(starts)}Q", *starts))
            os._exit(0)
        os.close(w)
        pids.append(pid)
        reads.append(r)
    mine = [table.reserve(slot, gen, RESERVE) for _ in range(300)]
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
    other = table.allocate()
    assert other is not None and table.reserve(*other, 1) == 0  # slots are apart


def test_a_released_slot_takes_no_more_counters_for_its_old_keypair() -> None:
    table = Table(slots=2)
    a, b = table.allocate(), table.allocate()
    assert a is not None and b is not None and a[0] != b[0]
    assert table.allocate() is None  # full: None, never an exception
    table.reserve(*a, 64)
    table.release(a[0])
    assert table.reserve(*a, 1) == -1  # a process still holding it gets nothing
    again = table.allocate()
    assert again is not None and again[0] == a[0] and again[1] != a[1]
    assert table.reserve(*again, 1) == 0  # the new keypair counts from 0
    assert table.reserve(*a, 1) == -1


def test_a_full_table_refuses_the_session_and_counts_it() -> None:
    net, a, b = pair()
    crew = _crew(net, b)
    assert b.core.table is not None
    while b.core.table.allocate() is not None:
        pass
    net.send(a, A_TO_B)
    _run(net, b, crew)
    assert b.core.drops["no-counter-slot"] >= 1
    assert b.core.peers[a.public].keypairs.all() == [] and b.delivered == []


def _crew(net: Net, b: Node, n: int = 2) -> list[WireGuard]:
    """Make ``b`` the leader of ``n`` workers; returns the followers' cores."""
    table = Table(slots=64)
    b.core.turns = n
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
    message = workers.keys_message(b.core, set(b.core.peers))
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
    t_ = peer.timers
    t_.keepalive_at = None
    b.core.worked(peer, heard=True, received=True, sent=False, now=net.now)
    assert t_.keepalive_at is not None  # a keepalive due unless we send
    b.core.worked(peer, heard=False, received=False, sent=True, now=net.now)
    assert t_.keepalive_at is None and t_.new_handshake_at is not None
    # data both ways in one report: nothing to fear, no keepalive owed
    b.core.worked(peer, heard=True, received=True, sent=True, now=net.now)
    assert t_.new_handshake_at is None and t_.keepalive_at is None
    # a follower moving data both ways: the leader never starts a handshake for it
    for _ in range(60):
        net.now += 0.5
        b.core.worked(peer, heard=True, received=True, sent=True, now=net.now)
        b.core.tick(net.now)
    assert [m for m in b.core.outbox if m[0][0] == 1] == []


def test_peers_replaced_at_once_end_the_followers_sessions() -> None:
    net, a, b = pair()
    crew = _crew(net, b)
    net.send(a, A_TO_B)
    _run(net, b, crew)
    f = crew[0]
    assert f.peers[a.public].keypairs.current is not None
    # wg setconf: every peer removed and the same key added again, in one request
    b.core.remove_all_peers()
    b.core.add_allowed(b.core.add_peer(a.public), ipaddress.ip_network("10.0.0.1/32"))
    for msg in (workers.config_message(b.core), workers.keys_message(b.core, b.core.rekeyed)):
        workers.apply(f, msg, net.now)
    assert f.peers[a.public].keypairs.all() == []
    assert _seal(f, B_TO_A, net.now) == b""  # no session left to send on


def test_a_control_message_of_any_size_arrives_whole_and_in_order() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sender, receiver = workers._Channel(left), workers._Channel(right)
    try:
        big = {"keys": [["ab" * 32, [], None]] * 20000}  # about 1.5 MB of JSON
        for i in range(3):
            sender.send({"n": i, **big})
        got: list[dict[str, object]] = []
        while len(got) < 3:  # the receiver reads as its loop would, the sender flushes
            got += receiver.receive() or []
            sender.flush()
        assert [m["n"] for m in got] == [0, 1, 2] and got[2]["keys"] == big["keys"]
        assert receiver.broken == 0
    finally:
        left.close()
        right.close()
