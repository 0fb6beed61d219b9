from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simpletun.packets import Malformed
from simpletun.wire import datagram, native
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
    assert peer.admit(SID, ("192.0.2.2", 1), silence=0, takeover=40) == datagram.NEW
    assert peer.check(SID, ("192.0.2.2", 1)).ok
    v = peer.check(SID, ("192.0.2.3", 7))  # same session, new address: roamed
    assert v.ok and v.roamed_from == ("192.0.2.2", 1) and peer.address == ("192.0.2.3", 7)
    assert not peer.check(bytes(8), ("192.0.2.3", 7)).ok  # another session: dropped
    assert peer.address == ("192.0.2.3", 7)
    peer.forget()
    assert not peer.check(SID, ("192.0.2.3", 7)).ok


OTHER = bytes(8)


def test_a_live_session_is_not_displaced_by_another_hello() -> None:
    peer: Peer[tuple[str, int]] = Peer()
    assert peer.admit(SID, ("192.0.2.2", 1), silence=0, takeover=40) == datagram.NEW
    # another session while the live one was heard recently: refused, nothing changes
    assert peer.admit(OTHER, ("192.0.2.9", 1), silence=39.9, takeover=40) == datagram.REFUSED
    assert peer.session == SID and peer.address == ("192.0.2.2", 1)
    assert peer.check(SID, ("192.0.2.2", 1)).ok and not peer.check(OTHER, ("192.0.2.9", 1)).ok
    # the live session itself may shake hands again, from anywhere (reconnect, roam)
    assert peer.admit(SID, ("192.0.2.3", 5), silence=1, takeover=40) == datagram.RENEWED
    assert peer.address == ("192.0.2.3", 5)
    # once the live session has been silent for the takeover time, a new one replaces it
    assert peer.admit(OTHER, ("192.0.2.9", 1), silence=40, takeover=40) == datagram.REPLACED
    assert peer.session == OTHER and peer.address == ("192.0.2.9", 1)
    assert not peer.check(SID, ("192.0.2.3", 5)).ok
    peer.forget()
    assert peer.admit(SID, ("192.0.2.2", 1), silence=0, takeover=40) == datagram.NEW


def test_busy_is_a_bare_header() -> None:
    assert datagram.encode(datagram.BUSY, SID) == b"\x08" + SID
    assert parse(b"\x08" + SID) == (datagram.BUSY, SID, b"")


@given(st.text(max_size=300), st.integers(0, 200))
def test_a_refusal_is_never_longer_than_its_limit(reason: str, limit: int) -> None:
    answer = datagram.refusal(SID, reason, limit)
    bare = len(datagram.encode(datagram.HELLO, SID, native.encode_refuse("")))
    if limit < bare:
        assert answer is None
        return
    assert answer is not None and len(answer) <= limit
    kind, sid, payload = parse(answer)
    said = native.decode_handshake(bytes(payload)[2:])
    assert kind == datagram.HELLO and sid == SID and isinstance(said, str)
    assert reason.startswith(said)


def test_a_refusal_keeps_what_fits() -> None:
    hello = datagram.encode(datagram.HELLO, SID, native.encode_hello(
        native.Hello(tap=False, mtu=1400, features=0, session=SID)))
    answer = datagram.refusal(SID, "peer speaks simpletun protocol version 2", len(hello))
    assert answer is not None and len(answer) == len(hello)
    said = native.decode_handshake(bytes(parse(answer)[2])[2:])
    assert said == "peer speaks simpletun protocol version 2"[:len(hello) - 62]
