"""WireGuard's timers (whitepaper section 6): the pure Timers class, and the core driven
through hours of simulated time by wgsim's fake clock: rekey after time with traffic
flowing, reject after time, handshake retries and giving up, passive and persistent
keepalives, key zeroing."""

from __future__ import annotations

import itertools

import pytest

from simpletun.wireguard import timers
from simpletun.wireguard.keypair import REJECT_AFTER_TIME, REKEY_AFTER_TIME, Keypair
from simpletun.wireguard.messages import INITIATION, TRANSPORT
from simpletun.wireguard.timers import (
    GIVE_UP,
    KEEPALIVE,
    KEEPALIVE_TIMEOUT,
    MAX_HANDSHAKE_ATTEMPTS,
    NEW_HANDSHAKE,
    PERSISTENT,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER,
    RETRANSMIT,
    ZERO_AFTER,
    ZERO_KEYS,
    Timers,
)

from .wgsim import A_TO_B, B_TO_A, Node, keepalives, pair, sent
from .wgsim import session as _session


def _current(node: Node, other: Node) -> Keypair:
    kp = node.core.peers[other.public].keypairs.current
    assert kp is not None
    return kp


def _live_keypairs(node: Node) -> list[Keypair]:
    return [v for v in node.core.indices.values() if isinstance(v, Keypair)]


# --- the Timers class alone -------------------------------------------------------------------

def test_constants() -> None:
    assert (REKEY_AFTER_TIME, REJECT_AFTER_TIME) == (120.0, 180.0)
    assert (REKEY_TIMEOUT, KEEPALIVE_TIMEOUT, timers.REKEY_ATTEMPT_TIME) == (5.0, 10.0, 90.0)
    assert MAX_HANDSHAKE_ATTEMPTS == 18
    assert ZERO_AFTER == 540.0


def test_timers_events() -> None:
    t = Timers()
    assert t.earliest() is None and t.expired(1e9) == []
    t.data_sent(100.0, 0.5)
    assert t.new_handshake_at == pytest.approx(115.0 + 0.5 * REKEY_TIMEOUT_JITTER)
    t.data_sent(101.0, 0.0)  # already armed: not pushed later
    assert t.new_handshake_at == pytest.approx(115.0 + 0.5 * REKEY_TIMEOUT_JITTER)
    t.authenticated_received()
    assert t.new_handshake_at is None
    t.data_received(100.0)
    t.data_received(101.0)
    assert t.keepalive_at == 110.0 and t.need_another_keepalive
    assert t.expired(109.9) == []
    assert t.expired(110.0) == [KEEPALIVE]
    assert t.keepalive_at == 120.0  # another one was needed
    assert t.expired(120.0) == [KEEPALIVE] and t.keepalive_at is None
    t.data_received(130.0)
    t.authenticated_sent()  # we sent something: no keepalive needed
    assert t.keepalive_at is None
    t.traversal(130.0, 25)
    t.session_derived(130.0)
    assert t.earliest() == 155.0
    assert t.expired(155.0) == [PERSISTENT]
    assert t.expired(130.0 + ZERO_AFTER) == [ZERO_KEYS]
    t.data_sent(0.0, 0.0)
    assert t.expired(15.0) == [NEW_HANDSHAKE]
    t.traversal(1.0, 0)  # persistent keepalive off: nothing armed
    assert t.persistent_at is None
    t.data_received(1.0)
    t.stop()
    assert t.earliest() is None


def test_timers_retransmit_then_give_up() -> None:
    t = Timers()
    now = 0.0
    t.handshake_initiated(now, 1.0)
    assert t.retransmit_at == REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER
    fired: list[str] = []
    while t.retransmit_at is not None:
        now = t.retransmit_at
        fired += t.expired(now)
        if fired[-1] == RETRANSMIT:
            t.handshake_initiated(now, 0.0)
    assert fired == [RETRANSMIT] * (MAX_HANDSHAKE_ATTEMPTS + 1) + [GIVE_UP]  # as wireguard-go
    assert t.zero_at == now + ZERO_AFTER  # giving up schedules the zeroing
    t.handshake_complete()
    assert t.attempts == 0


# --- the core through simulated time ---------------------------------------------------------

def test_handshake_then_data_both_ways_for_an_hour() -> None:
    net, a, b = _session()
    for _ in range(3600 // 20):
        net.send(a, A_TO_B)
        net.send(b, B_TO_A)
        net.run()
        net.advance(20, step=5)
    assert len(b.delivered) == 1 + 180 and set(b.delivered) == {A_TO_B}
    assert len(a.delivered) == 180 and set(a.delivered) == {B_TO_A}
    assert not a.core.drops and not b.core.drops
    # re-keyed all along: the session in use is never older than REJECT_AFTER_TIME
    assert net.now - _current(a, b).created < REJECT_AFTER_TIME


def test_rekey_after_time_while_traffic_flows() -> None:
    net, a, b = _session()
    first = _current(a, b)
    created = first.created
    sessions = {first.local_index}
    while net.now < created + 400:
        net.send(a, A_TO_B)
        net.send(b, B_TO_A)
        net.run()
        cur = _current(a, b)
        sessions.add(cur.local_index)
        net.advance(1, step=0.5)
    # the initiator re-keyed about every 120 s, never lost a packet
    assert len(sessions) == 4
    inits = [t - created for t, _m in sent(net, a, INITIATION)]
    gaps = [y - x for x, y in itertools.pairwise(inits)]
    assert inits[0] <= 0 and len(gaps) == 3
    assert all(REKEY_AFTER_TIME < g <= REKEY_AFTER_TIME + 1.5 for g in gaps), gaps
    assert not sent(net, b, INITIATION)
    assert len(b.delivered) == len(a.delivered) + 1
    assert not a.core.drops and not b.core.drops


def test_previous_keypair_still_accepted_for_a_moment() -> None:
    net, a, b = _session()
    old = _current(a, b)
    net.advance(REKEY_AFTER_TIME + 1)
    # b seals on the current (old) session; before it arrives, a re-keys
    slot = bytearray(16 + len(B_TO_A) + 32)
    slot[16:16 + len(B_TO_A)] = B_TO_A
    n = b.core.seal(b.core.peers[a.public], memoryview(slot), len(B_TO_A), net.now)
    in_flight = bytes(slot[:n])
    net.send(a, A_TO_B)  # too old: a initiates a new handshake (and sends on the old one)
    net.run()
    assert _current(a, b) is not old
    assert a.core.peers[b.public].keypairs.previous is old
    before = len(a.delivered)
    net.deliver(b.address, a.address, in_flight)
    assert a.delivered[before:] == [B_TO_A]
    # and b already sends on the new session
    net.send(b, B_TO_A)
    net.run()
    assert _current(b, a).local_index == _current(a, b).remote_index


def test_rekey_knob_for_tests() -> None:
    net, a, b = _session()
    a.core.rekey_after_time = 10.0
    old = _current(a, b)
    net.advance(11)
    net.send(a, A_TO_B)
    net.run()
    assert _current(a, b) is not old


def test_reject_after_time_when_the_peer_is_gone() -> None:
    """b vanishes; a keeps sending: nothing goes out on the session once it is 180 s old,
    packets are staged and handshakes attempted instead."""
    net, a, b = _session()
    kp = _current(a, b)
    net.down.add(b.address)
    while net.now < kp.created + 250:
        net.send(a, A_TO_B)
        net.advance(1, step=0.5)
    data = sent(net, a, TRANSPORT)
    assert data and max(t for t, _m in data) < kp.created + REJECT_AFTER_TIME
    assert any(t > kp.created + 170 for t, _m in data)  # it was used until then
    assert a.core.peers[b.public].staged  # the packets wait for a session
    assert sent(net, a, INITIATION, since=kp.created + REJECT_AFTER_TIME)
    # b comes back: the staged packets go through on a new session
    net.down.clear()
    b.delivered.clear()
    net.advance(10, step=0.5)
    assert b.delivered and set(b.delivered) == {A_TO_B}
    assert _current(a, b) is not kp


def test_reject_after_time_on_receive() -> None:
    net, a, b = _session()
    kp = _current(b, a)  # b is the responder: it never re-keys by time itself
    net.advance(REJECT_AFTER_TIME - 1, step=10)
    slot = bytearray(16 + len(B_TO_A) + 32)
    slot[16:16 + len(B_TO_A)] = B_TO_A
    n = b.core.seal(b.core.peers[a.public], memoryview(slot), len(B_TO_A), net.now)
    assert n and _current(b, a) is kp
    net.now += 2  # it arrives when the session is too old
    before = len(a.delivered)
    net.deliver(b.address, a.address, bytes(slot[:n]))
    assert len(a.delivered) == before
    assert a.core.drops["expired-keypair"] == 1


def test_handshake_retries_then_gives_up() -> None:
    net, a, b = pair()
    net.down.add(b.address)
    t0 = net.now
    net.send(a, A_TO_B)
    net.send(a, A_TO_B)
    assert len(a.core.peers[b.public].staged) == 2
    net.advance(REKEY_TIMEOUT * 25, step=0.05)
    inits = [t for t, _m in sent(net, a, INITIATION)]
    assert inits[0] == t0
    assert len(inits) == 2 + MAX_HANDSHAKE_ATTEMPTS  # 20 in all, as wireguard-go sends
    gaps = [y - x for x, y in itertools.pairwise(inits)]
    assert all(REKEY_TIMEOUT <= g <= REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER + 0.051 for g in gaps)
    assert len({round(g, 2) for g in gaps}) > 3  # jittered, not a fixed period
    assert inits[-1] - t0 >= timers.REKEY_ATTEMPT_TIME
    peer = a.core.peers[b.public]
    assert not peer.staged  # given up: the staged packets are dropped
    # silent afterwards, until new traffic
    net.advance(300, step=5)
    assert len(sent(net, a, INITIATION)) == len(inits)
    net.down.clear()
    net.send(a, A_TO_B)
    net.run()
    assert b.delivered == [A_TO_B]


def test_handshake_retries_deliver_when_the_peer_returns() -> None:
    net, a, b = pair()
    net.down.add(b.address)
    net.send(a, A_TO_B)
    net.advance(20, step=0.5)
    assert len(sent(net, a, INITIATION)) == 4
    net.down.clear()
    net.advance(6, step=0.5)
    assert b.delivered == [A_TO_B]


def test_passive_keepalive() -> None:
    net, a, b = _session()
    t0 = net.now
    net.advance(KEEPALIVE_TIMEOUT - 0.5, step=0.25)
    assert keepalives(net, b, t0) == []
    net.advance(1, step=0.25)
    assert keepalives(net, b, t0) == [pytest.approx(t0 + KEEPALIVE_TIMEOUT, abs=0.26)]
    net.advance(20, step=1)
    assert len(keepalives(net, b, t0)) == 1  # one answer, not a stream
    # data going back instead of the keepalive: no keepalive (all before the re-key)
    t1 = net.now
    net.send(a, A_TO_B)
    net.run()
    net.advance(5)
    net.send(b, B_TO_A)
    net.run()
    net.advance(30)
    assert keepalives(net, b, t1) == []
    assert keepalives(net, a, t1) == [pytest.approx(t1 + 5 + KEEPALIVE_TIMEOUT, abs=0.51)]


def test_no_reply_to_data_starts_a_new_handshake() -> None:
    """Data sent and nothing back for KEEPALIVE + REKEY_TIMEOUT: a new handshake."""
    net, a, b = _session()
    net.advance(30)
    net.down.add(b.address)
    t0 = net.now
    net.send(a, A_TO_B)
    net.advance(KEEPALIVE_TIMEOUT + REKEY_TIMEOUT - 0.5, step=0.25)
    assert not sent(net, a, INITIATION, since=t0)
    net.advance(1, step=0.25)
    assert len(sent(net, a, INITIATION, since=t0)) == 1


@pytest.mark.parametrize("interval", [7, 25])
def test_persistent_keepalive_configured_first(interval: int) -> None:
    net, a, b = pair()
    a.core.set_persistent(a.core.peers[b.public], interval, net.now)  # sends one at once
    net.run()
    t0 = net.now
    net.advance(200, step=0.5)
    ka = sorted(set(keepalives(net, a, t0)))  # (a re-key adds one at the same time)
    gaps = [y - x for x, y in itertools.pairwise(ka)]
    assert len(ka) >= 200 // interval - 1
    assert all(interval - 0.01 <= g <= interval + 0.51 for g in gaps), gaps
    # off again: no more
    a.core.set_persistent(a.core.peers[b.public], 0, net.now)
    t1 = net.now + 0.01
    net.advance(100, step=0.5)
    assert keepalives(net, a, t1) == []


def test_persistent_keepalive_defers_to_traffic() -> None:
    net, a, b = pair()
    a.core.set_persistent(a.core.peers[b.public], 25, net.now)
    net.run()
    net.advance(1)
    t0 = net.now
    for _ in range(10):  # a sends data every 10 s: no keepalive needed
        net.send(a, A_TO_B)
        net.advance(10, step=0.5)
    assert keepalives(net, a, t0) == []


def test_persistent_keepalive_turned_on_for_a_live_session() -> None:
    """Regression (fixed in 65a5906): turned on mid-session, with only the 540 s zeroing
    queued, the keepalives must keep coming every interval, not once."""
    net, a, b = _session()
    net.advance(30)
    t0 = net.now
    a.core.set_persistent(a.core.peers[b.public], 25, net.now)
    net.collect()
    net.advance(100, step=0.5)
    assert len(keepalives(net, a, t0)) >= 4


def test_keys_zeroed_after_540_s_without_a_handshake() -> None:
    net, a, b = _session()
    kp_a, kp_b = _current(a, b), _current(b, a)
    net.advance(ZERO_AFTER - 20, step=10)
    assert kp_a.send is not None and _live_keypairs(a) and _live_keypairs(b)
    net.advance(25, step=1)
    for node, kp in ((a, kp_a), (b, kp_b)):
        assert kp.send is None and kp.receive is None
        assert _live_keypairs(node) == []
        assert node.core.indices == {}
        assert node.core.peers[(b if node is a else a).public].keypairs.all() == []
    # a new packet makes a new session
    net.send(a, A_TO_B)
    net.run()
    assert b.delivered == [A_TO_B, A_TO_B]


def test_zeroing_after_giving_up() -> None:
    net, a, b = _session()
    kp = _current(a, b)
    net.down.add(b.address)
    net.send(a, A_TO_B)
    net.advance(ZERO_AFTER + 10, step=5)
    assert kp.send is None and _live_keypairs(a) == []


def test_hours_of_idle_time_stay_quiet() -> None:
    """Idle peers without persistent keepalive say nothing for hours once keys are gone."""
    net, a, b = _session()
    net.advance(ZERO_AFTER + 20, step=10)
    n = len(net.history)
    net.advance(3 * 3600, step=60)
    assert len(net.history) == n
    assert a.core.tick(net.now) is None and b.core.tick(net.now) is None


def test_keep_key_fresh_on_receive() -> None:
    """The initiator that only receives re-keys once its session is older than
    REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT (165 s), once per session."""
    net, a, b = _session()
    a.core.rekey_after_time = 1e9  # a's own sends never re-key: only receiving does
    kp = _current(a, b)
    while net.now < kp.created + 200:
        net.send(b, B_TO_A)
        net.advance(0.5, step=0.5)
    inits = [t - kp.created for t, _m in sent(net, a, INITIATION, since=kp.created + 1)]
    fresh = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
    assert len(inits) == 1 and fresh < inits[0] <= fresh + 0.5, inits
    assert _current(a, b) is not kp
    assert len(a.delivered) == 400 and not a.core.drops
