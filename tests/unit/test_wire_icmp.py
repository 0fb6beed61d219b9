from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simpletun.packets import Malformed
from simpletun.wire import icmp
from simpletun.wire.icmp import Credits, Poller, later_or_same, parse
from simpletun.wireguard import messages

from .test_checksum import reference as _reference_checksum


def test_request_bytes() -> None:
    head = icmp.head(icmp.ECHO_REQUEST, 0x1234, 7, icmp.REQUEST_MAGIC)
    assert head == bytes.fromhex("0800 0000 1234 0007") + b"STq\x01\x00\x00"
    gram = messages.TRANSPORT_HEADER.pack(messages.TRANSPORT, 7, 0) + bytes(messages.TAG_LEN)
    sealed = icmp.seal4(head, gram)
    assert sealed[:2] == b"\x08\x00" and sealed[4:] == head[4:]
    assert int.from_bytes(sealed[2:4], "big") == _reference_checksum(head + gram)
    assert icmp.valid4(sealed + gram)
    assert not icmp.valid4(sealed + gram[:-1] + b"\x01")


def test_reply_carries_the_backlog() -> None:
    head = icmp.head(icmp.ECHO6_REPLY, 1, 2, icmp.REPLY_MAGIC, backlog=70000)
    echo = parse(memoryview(head + b"data"))
    assert echo == (icmp.ECHO6_REPLY, 1, 2, icmp.REPLY_MAGIC, 0xFFFF, b"data")


def test_ordinary_ping_is_not_ours() -> None:
    ping = bytes.fromhex("0800f7ff00010002") + b"abcdefghijklmnop"
    echo = parse(memoryview(ping))
    assert echo.magic is None and (echo.ident, echo.seq) == (1, 2)
    assert bytes(echo.payload) == b"abcdefghijklmnop"
    assert parse(memoryview(ping[:10])).magic is None
    with pytest.raises(Malformed, match="shorter than an echo header"):
        parse(memoryview(ping[:7]))


def test_mtu_arithmetic() -> None:
    assert icmp.MESSAGE_OVERHEAD == 32  # a transport message: 16-byte header, 16-byte tag
    assert icmp.ICMP_OVERHEAD == {4: 20 + 14 + 32, 6: 40 + 14 + 32}
    assert icmp.DEFAULT_MTU == 1408 and icmp.DEFAULT_MTU % 16 == 0
    assert icmp.DEFAULT_MTU + icmp.ICMP_OVERHEAD[6] <= 1500 < \
        icmp.DEFAULT_MTU + 16 + icmp.ICMP_OVERHEAD[6]


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.booleans(), st.binary(max_size=300))
def test_seal4_matches_the_reference(ident: int, seq: int, reply: bool, payload: bytes) -> None:
    kind, magic = ((icmp.ECHO_REPLY, icmp.REPLY_MAGIC) if reply
                   else (icmp.ECHO_REQUEST, icmp.REQUEST_MAGIC))
    head = icmp.head(kind, ident, seq, magic)
    sealed = icmp.seal4(head, payload)
    assert icmp.valid4(sealed + payload)
    assert _reference_checksum(sealed + payload) == 0
    echo = parse(memoryview(sealed + payload))
    assert (echo.type, echo.ident, echo.seq, echo.magic) == (kind, ident, seq, magic)
    assert bytes(echo.payload) == payload


@given(st.binary(max_size=100))
def test_parse_never_crashes(data: bytes) -> None:
    try:
        echo = parse(memoryview(data))
    except Malformed:
        assert len(data) < 8
        return
    assert echo.magic in (None, icmp.REQUEST_MAGIC, icmp.REPLY_MAGIC)


def test_sequence_order_wraps() -> None:
    assert later_or_same(5, 5) and later_or_same(6, 5) and not later_or_same(5, 6)
    assert later_or_same(2, 0xFFFE) and not later_or_same(0xFFFE, 2)


def test_credits_oldest_first_per_address_and_expiry() -> None:
    c: Credits[str, int] = Credits(hold=2.0, cap=3)
    for seq in range(5):
        c.add("a", seq, now=float(seq))  # the cap keeps the newest 3
    c.add("b", 100, now=0.0)
    assert c.count("a") == 3
    assert c.take("a") == 2 and c.take("a") == 3
    assert c.wait(now=4.0) == 0.0  # b's, added at 0, is due at 2
    assert c.expired(now=5.0) == [("b", 100)]
    assert c.wait(now=5.0) == 1.0  # a's 4, added at 4
    assert c.expired(now=6.0) == [("a", 4)]
    assert c.take("a") is None and c.take("nobody") is None and c.wait(now=6.0) is None


def test_credits_junk_addresses_cannot_evict_a_peer() -> None:
    c: Credits[str, int] = Credits(addresses=3)
    c.protected = frozenset({"peer1", "peer2"})
    c.add("peer1", 1, now=0.0)
    c.add("peer2", 2, now=0.0)
    c.add("stranger", 3, now=0.0)
    for i in range(50):
        assert c.add(f"junk{i}", i, now=float(i))
    assert c.senders == 3 and c.count("stranger") == 0  # the unprotected went first
    assert c.take("peer1") == 1 and c.take("peer2") == 2
    assert c.take("junk49") == 49 and c.count("junk48") == 0


def test_credits_evict_the_least_recently_supplied_address() -> None:
    c: Credits[str, int] = Credits(addresses=2)
    c.add("a", 1, now=0.0)
    c.add("b", 2, now=1.0)
    c.add("a", 3, now=2.0)  # a supplied since b
    c.add("c", 4, now=3.0)
    assert (c.count("a"), c.count("b"), c.count("c")) == (2, 0, 1)


def test_credits_when_every_address_is_a_peer_new_ones_are_refused() -> None:
    c: Credits[str, int] = Credits(addresses=2)
    c.protected = frozenset({"p", "q"})
    assert c.add("p", 1, now=0.0) and c.add("q", 2, now=0.0)
    assert not c.add("junk", 3, now=0.0)
    assert c.senders == 2 and c.held == 2


def test_credits_total_bound_evicts_others_then_the_oldest_request() -> None:
    c: Credits[str, int] = Credits(cap=100, total=4)
    for i in range(3):
        c.add("junk", i, now=0.0)
    c.protected = frozenset({"peer", "peer2"})
    for i in range(4):
        assert c.add("peer", 10 + i, now=1.0 + i)
    assert c.count("junk") == 0 and c.held == 4  # junk made room for the peer
    assert c.add("peer", 14, now=5.0)  # nobody else to evict: the oldest request goes
    assert c.held == 4 and c.count("peer") == 4
    assert c.add("peer2", 20, now=6.0)  # a peer with none gets one: another's oldest went
    assert c.held == 4 and c.count("peer") == 3 and c.count("peer2") == 1
    assert c.take("peer") == 12 and c.take("peer2") == 20


def test_credits_an_emptied_address_is_not_kept() -> None:
    c: Credits[str, int] = Credits(hold=1.0)
    c.add("a", 1, now=0.0)
    c.add("b", 2, now=0.5)
    assert c.take("a") == 1 and c.senders == 1
    assert c.expired(now=1.5) == [("b", 2)] and c.senders == 0 and c.held == 0
    assert c.wait(now=1.5) is None


def test_credits_a_flood_of_addresses_stays_bounded() -> None:
    c: Credits[tuple[str, int], int] = Credits(hold=2.0, addresses=64, total=512)
    c.protected = frozenset({("peer", 1)})
    c.add(("peer", 1), 0, now=0.0)
    for i in range(20000):
        now = i * 0.001
        c.add((f"10.0.{i % 251}.{i % 7}", i), i, now)
        if i % 500 == 0:
            c.take(("peer", 1))
            c.add(("peer", 1), i, now)
            c.expired(now)
        assert c.senders <= 64 and c.held <= 512
        assert len(c._due) <= 2 * c.senders + 65  # the expiry heap is compacted
    assert c.count(("peer", 1)) == 1


class _Model:
    """Credits the slow, obvious way: lists, scans."""

    def __init__(self, hold: float, cap: int, addresses: int, total: int) -> None:
        self.hold, self.cap, self.addresses, self.total = hold, cap, addresses, total
        self.protected: frozenset[int] = frozenset()
        self.order: list[int] = []  # least recently supplied first
        self.held: dict[int, list[tuple[float, int]]] = {}

    def count_all(self) -> int:
        return sum(len(q) for q in self.held.values())

    def evict(self, keep: int) -> bool:
        for _ in range(len(self.order)):
            victim = self.order.pop(0)
            if victim == keep or victim in self.protected:
                self.order.append(victim)
                continue
            del self.held[victim]
            return True
        return False

    def add(self, a: int, token: int, now: float) -> bool:
        if a in self.held:
            self.order.remove(a)
            self.order.append(a)
        elif len(self.held) >= self.addresses and not self.evict(a):
            return False
        q = self.held.get(a, [])
        if len(q) >= self.cap:
            q.pop(0)
        elif self.count_all() >= self.total and not self.evict(a):
            oldest = min(self.held, key=lambda b: self.held[b][0][0])  # times are distinct
            self.held[oldest].pop(0)
            self.drop_empty(oldest)
            q = self.held.get(a, [])
        if a not in self.held:
            self.held[a] = q
            self.order.append(a)
        q.append((now, token))
        return True

    def drop_empty(self, a: int) -> None:
        if not self.held[a]:
            del self.held[a]
            self.order.remove(a)

    def take(self, a: int) -> int | None:
        if a not in self.held:
            return None
        token = self.held[a].pop(0)[1]
        self.drop_empty(a)
        return token

    def expired(self, now: float) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for a in list(self.held):
            q = self.held[a]
            while q and q[0][0] + self.hold <= now:
                out.setdefault(a, []).append(q.pop(0)[1])
            self.drop_empty(a)
        return out

    def wait(self, now: float) -> float | None:
        firsts = [q[0][0] for q in self.held.values()]
        return max(0.0, min(firsts) + self.hold - now) if firsts else None


_OPS = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 7), st.floats(0.001, 0.7)),  # distinct times
    st.tuples(st.just("take"), st.integers(0, 7), st.just(0.0)),
    st.tuples(st.just("expire"), st.just(0), st.floats(0, 1.5)),
    st.tuples(st.just("protect"), st.integers(0, 255), st.just(0.0)),
)


@given(st.lists(_OPS, max_size=150), st.integers(1, 4), st.integers(1, 5), st.integers(1, 12))
def test_credits_match_the_obvious_model(ops: list[tuple[str, int, float]], cap: int,
                                         addresses: int, total: int) -> None:
    c: Credits[int, int] = Credits(hold=1.0, cap=cap, addresses=addresses, total=total)
    m = _Model(1.0, cap, addresses, total)
    now, token = 0.0, 0
    for op, arg, dt in ops:
        now += dt
        if op == "add":
            token += 1
            assert c.add(arg, token, now) == m.add(arg, token, now)
        elif op == "take":
            assert c.take(arg) == m.take(arg)
        elif op == "expire":
            got: dict[int, list[int]] = {}
            for a, t in c.expired(now):
                got.setdefault(a, []).append(t)
            assert got == m.expired(now)
        else:  # a set of addresses (bits of arg) becomes the peers
            c.protected = m.protected = frozenset(a for a in range(8) if arg >> a & 1)
        assert c.wait(now) == m.wait(now)
        assert c.held == m.count_all() <= total and c.senders == len(m.held) <= addresses
        assert all(c.count(a) == len(m.held.get(a, ())) <= cap for a in range(8))

def test_poller_keeps_the_low_water_mark_when_idle() -> None:
    p = Poller(low=4, high=16, lifetime=5.0)
    assert p.polls(now=0.0) == 4
    seqs = [p.request(0.0) for _ in range(4)]
    assert p.outstanding == 4 and p.polls(now=0.1) == 0
    p.answered(seqs[1], backlog=0, carried=False, now=2.0)  # settles 0 and 1
    assert p.outstanding == 2 and p.polls(now=2.0) == 2


def test_poller_replaces_data_replies_and_grows_with_the_backlog() -> None:
    p = Poller(low=4, high=16, lifetime=5.0)
    seqs = [p.request(0.0) for _ in range(4)]
    p.answered(seqs[0], backlog=0, carried=True, now=0.1)
    p.answered(seqs[1], backlog=0, carried=True, now=0.1)
    assert p.polls(now=0.1) == 2  # one per data reply
    for _ in range(2):
        p.request(0.1)
    p.answered(seqs[2], backlog=10, carried=True, now=0.2)  # the server waits with 10
    assert p.outstanding == 3
    assert p.polls(now=0.2) == 4 + 10 - 3
    for _ in range(11):
        p.request(0.2)
    p.answered(seqs[3], backlog=40, carried=True, now=0.3)
    assert p.polls(now=0.3) == 16 - p.outstanding  # never above high


def test_poller_counts_silent_requests_lost() -> None:
    p = Poller(low=2, high=8, lifetime=5.0)
    for _ in range(2):
        p.request(10.0)
    assert p.polls(now=14.0) == 0 and p.wait(now=14.0) == 1.0
    assert p.polls(now=15.0) == 2  # nothing heard for the lifetime: all lost
    p.reset()
    assert p.outstanding == 0 and p.wait(now=15.0) is None


@given(st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.integers(0, 50)), max_size=200))
def test_poller_stays_within_bounds(steps: list[tuple[int, bool, int]]) -> None:
    p = Poller(low=4, high=64, lifetime=5.0)
    now = 0.0
    sent: list[int] = []
    for skip, carried, backlog in steps:
        now += 0.01
        for _ in range(p.polls(now)):
            sent.append(p.request(now))
        assert p.outstanding <= 64
        if len(sent) > skip:  # answer one, maybe after losing some
            p.answered(sent[skip], backlog, carried, now)
            del sent[:skip + 1]
        assert p.outstanding >= 0


def test_poller_sends_no_polls_for_replies_its_data_already_paid_for() -> None:
    p = Poller(low=2, high=64, lifetime=5.0)
    seqs = [p.request(0.0) for _ in range(10)]  # an upload: data requests
    assert p.polls(now=0.0) == 0
    for seq in seqs[:4]:  # the server answers some of them with its ACKs
        p.answered(seq, backlog=0, carried=True, now=0.1)
    for _ in range(3):
        p.request(0.1)  # more data, sent in the same wake-up
    assert p.polls(now=0.1) == 1  # 4 data replies, 3 of them replaced by data requests
    p.request(0.2, poll=True)
    p.answered(seqs[9], backlog=0, carried=True, now=0.3)
    assert p.polls(now=0.3) == 1
