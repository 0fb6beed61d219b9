from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simpletun.packets import Malformed
from simpletun.wire import datagram
from simpletun.wire.datagram import Peer, gso_runs, parse, segments

SID = bytes(range(8))


def test_header_bytes_and_parse() -> None:
    gram = datagram.encode(datagram.DATA, SID, b"\x45abc")
    assert gram == b"\x01" + SID + b"\x45abc"
    assert parse(gram) == (datagram.DATA, SID, b"\x45abc")
    assert parse(datagram.encode(datagram.REJECT, SID)) == (datagram.REJECT, SID, b"")
    with pytest.raises(Malformed, match="shorter than the header"):
        parse(b"\x01" + SID[:7])
    with pytest.raises(Malformed, match="unknown type 9"):
        parse(b"\x09" + SID)


def test_mtu_arithmetic() -> None:
    assert datagram.UDP_OVERHEAD == {4: 37, 6: 57}
    assert datagram.DEFAULT_MTU == 1440
    assert datagram.DEFAULT_MTU + datagram.UDP_OVERHEAD[6] <= 1500


@given(st.binary(max_size=300))
def test_parse_never_crashes(data: bytes) -> None:
    try:
        kind, sid, payload = parse(data)
    except Malformed:
        return
    assert kind in datagram.TYPES and len(sid) == 8 and bytes(payload) == data[9:]


@given(st.lists(st.integers(1, 1500), max_size=80))
def test_gso_runs_cover_everything_in_valid_groups(sizes: list[int]) -> None:
    runs = gso_runs(sizes)
    assert [i for a, b in runs for i in range(a, b)] == list(range(len(sizes)))
    for a, b in runs:
        group = sizes[a:b]
        assert len(group) <= 64 and (len(group) == 1 or sum(group) <= 65000)
        assert all(s == group[0] for s in group[:-1]) and group[-1] <= group[0]


def test_gso_runs_examples() -> None:
    assert gso_runs([1400] * 5 + [600, 1400, 1400]) == [(0, 6), (6, 8)]
    assert gso_runs([100, 200, 200]) == [(0, 1), (1, 3)]


def test_segments() -> None:
    buf = memoryview(bytearray(b"aaabbbcc" + bytes(10)))
    assert [bytes(s) for s in segments(buf, 8, 3)] == [b"aaa", b"bbb", b"cc"]
    assert [bytes(s) for s in segments(buf, 8, 0)] == [b"aaabbbcc"]


def test_peer_roaming_needs_the_session() -> None:
    peer: Peer[tuple[str, int]] = Peer()
    assert peer.check(SID, ("192.0.2.2", 1)).why == "unknown-session"
    assert peer.start(SID, ("192.0.2.2", 1)) is None
    assert peer.check(SID, ("192.0.2.2", 1)).ok
    v = peer.check(SID, ("192.0.2.3", 7))  # same session, new address: roamed
    assert v.ok and v.roamed_from == ("192.0.2.2", 1) and peer.address == ("192.0.2.3", 7)
    assert not peer.check(bytes(8), ("192.0.2.3", 7)).ok  # another session: dropped
    assert peer.address == ("192.0.2.3", 7)
    assert peer.start(bytes(8), ("192.0.2.9", 1)) == SID  # a new hello replaces it
    peer.forget()
    assert not peer.check(bytes(8), ("192.0.2.9", 1)).ok
