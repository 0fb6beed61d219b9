from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simpletun.packets import Malformed
from simpletun.wire import datagram, icmp
from simpletun.wire.icmp import Credits, Poller, later_or_same, parse

from .test_checksum import reference as _reference_checksum


def test_request_bytes() -> None:
    head = icmp.head(icmp.ECHO_REQUEST, 0x1234, 7, icmp.REQUEST_MAGIC)
    assert head == bytes.fromhex("0800 0000 1234 0007") + b"STq\x01\x00\x00"
    gram = datagram.encode(datagram.KEEPALIVE, bytes(8))
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
    assert icmp.ICMP_OVERHEAD == {4: 43, 6: 63}
    assert icmp.DEFAULT_MTU == 1432
    assert icmp.DEFAULT_MTU + icmp.ICMP_OVERHEAD[6] <= 1500


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


def test_credits_junk_addresses_cannot_evict_the_client() -> None:
    c: Credits[str, int] = Credits(addresses=2)
    c.add("client", 1, now=0.0)
    assert c.take("client") == 1  # the client is the one answered
    c.add("client", 2, now=0.0)
    for i in range(50):
        c.add(f"junk{i}", i, now=float(i))
    assert c.take("client") == 2


def test_credits_an_answer_to_a_stranger_keeps_the_client_protected() -> None:
    c: Credits[str, int] = Credits(addresses=2)
    c.add("client", 1, now=0.0)
    assert c.take("client") == 1
    c.add("client", 2, now=0.0)
    c.add("junk", 7, now=1.0)
    assert c.take("junk", keep_last=True) == 7  # a REJECT or BUSY to a stranger
    for i in range(50):
        c.add(f"junk{i}", i, now=2.0 + i)
    assert c.take("client") == 2  # still never evicted


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
