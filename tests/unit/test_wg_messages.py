"""WireGuard messages: byte layouts, the ``kind`` gate, padding; and hypothesis fuzzing of
every parser entry (``messages.kind``, the parse_* functions, ``WireGuard.open`` with any
bytes from any source, the cookie Checker/Stamper): a value or a counted drop, never an
exception, never a delivery, never an answer."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simpletun.wireguard import cookie, keys, messages
from simpletun.wireguard.core import WireGuard
from simpletun.wireguard.keypair import Keypair
from simpletun.wireguard.messages import (
    COOKIE_REPLY,
    INITIATION,
    RESPONSE,
    TRANSPORT,
    TRANSPORT_MAX_LEN,
)

from .wgsim import A_ADDR, Net, Node, ipv4, pair

B32 = st.binary(min_size=32, max_size=32)
B16 = st.binary(min_size=16, max_size=16)
U32 = st.integers(0, 2**32 - 1)


# --- layouts ---------------------------------------------------------------------------------

def test_sizes() -> None:
    assert messages.INITIATION_LEN == 148
    assert messages.RESPONSE_LEN == 92
    assert messages.COOKIE_REPLY_LEN == 64
    assert messages.TRANSPORT_HEADER_LEN == 16
    assert messages.TRANSPORT_MIN_LEN == 32


def test_initiation_layout() -> None:
    m = messages.Initiation(0x04030201, b"E" * 32, b"S" * 48, b"T" * 28, b"1" * 16, b"2" * 16)
    raw = bytes(messages.initiation(m))
    assert len(raw) == 148
    assert raw[:8] == b"\x01\0\0\0\x01\x02\x03\x04"
    assert raw[8:40] == b"E" * 32 and raw[40:88] == b"S" * 48 and raw[88:116] == b"T" * 28
    assert raw[116:132] == b"1" * 16 and raw[132:148] == b"2" * 16
    assert messages.parse_initiation(raw) == m
    assert messages.kind(raw) == INITIATION


def test_response_layout() -> None:
    m = messages.Response(0x04030201, 0x0D0C0B0A, b"E" * 32, b"X" * 16, b"1" * 16, b"2" * 16)
    raw = bytes(messages.response(m))
    assert len(raw) == 92
    assert raw[:12] == b"\x02\0\0\0\x01\x02\x03\x04\x0a\x0b\x0c\x0d"
    assert raw[12:44] == b"E" * 32 and raw[44:60] == b"X" * 16
    assert raw[60:76] == b"1" * 16 and raw[76:92] == b"2" * 16
    assert messages.parse_response(raw) == m
    assert messages.kind(raw) == RESPONSE


def test_cookie_reply_layout() -> None:
    m = messages.CookieReply(0x04030201, bytes(range(24)), b"C" * 32)
    raw = messages.cookie_reply(m)
    assert len(raw) == 64
    assert raw[:8] == b"\x03\0\0\0\x01\x02\x03\x04"
    assert raw[8:32] == bytes(range(24)) and raw[32:] == b"C" * 32
    assert messages.parse_cookie_reply(raw) == m
    assert messages.kind(raw) == COOKIE_REPLY


def test_transport_layout_from_the_core() -> None:
    net, a, b = pair()
    packet = ipv4("10.0.0.1", "10.0.0.2", b"z" * 21)  # 41 bytes: padded to 48
    net.send(a, packet)
    net.run()
    net.send(a, packet)
    _t, _s, _d, msg = net.history[-1]
    assert len(msg) == 16 + 48 + 16
    t, receiver, counter = struct.unpack_from("<IIQ", msg)
    assert msg[:4] == b"\x04\0\0\0" and t == TRANSPORT
    kp = a.core.peers[b.public].keypairs.current
    assert kp is not None and receiver == kp.remote_index
    assert counter == 1  # the second message on this session (the first came before)
    assert messages.TRANSPORT_HEADER.unpack(msg[:16]) == (4, receiver, 1)
    # the first went out (staged) when the session was made: counter 0, same size
    first = next(m for _t, s, _d, m in net.history if s == a.address and m[0] == TRANSPORT)
    assert len(first) == 80 and messages.TRANSPORT_HEADER.unpack(first[:16])[2] == 0
    # a keepalive is 32 bytes
    a.core.send_keepalive(a.core.peers[b.public], net.now)
    net.collect()
    assert len(net.history[-1][3]) == 32


# --- kind() ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "want"), [
    (b"", "runt"), (b"\x01\0\0", "runt"),
    (b"\x00\0\0\0" + bytes(144), "bad-type"), (b"\x05\0\0\0" + bytes(144), "bad-type"),
    (b"\x01\x01\0\0" + bytes(144), "bad-type"), (b"\x04\0\0\x01" + bytes(28), "bad-type"),
    (b"\x01\0\0\0" + bytes(143), "bad-size"), (b"\x01\0\0\0" + bytes(145), "bad-size"),
    (b"\x02\0\0\0" + bytes(87), "bad-size"), (b"\x02\0\0\0" + bytes(144), "bad-size"),
    (b"\x03\0\0\0" + bytes(61), "bad-size"), (b"\x03\0\0\0" + bytes(88), "bad-size"),
    (b"\x04\0\0\0" + bytes(27), "bad-size"), (b"\x04\0\0\0", "bad-size"),
    (b"\x04\0\0\0" + bytes(TRANSPORT_MAX_LEN - 3), "oversized"),
    (b"\x01\0\0\0" + bytes(144), INITIATION), (b"\x02\0\0\0" + bytes(88), RESPONSE),
    (b"\x03\0\0\0" + bytes(60), COOKIE_REPLY), (b"\x04\0\0\0" + bytes(28), TRANSPORT),
    (b"\x04\0\0\0" + bytes(TRANSPORT_MAX_LEN - 4), TRANSPORT),
])
def test_kind(data: bytes, want: int | str) -> None:
    assert messages.kind(data) == want
    assert messages.kind(bytearray(data)) == want
    assert messages.kind(memoryview(data)) == want


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_kind_never_raises(data: bytes) -> None:
    k = messages.kind(data)
    assert k in (1, 2, 3, 4, "runt", "bad-type", "bad-size", "oversized")
    if isinstance(k, int):
        assert data[0] == k and data[1:4] == b"\0\0\0"


# --- parsers on well-sized data --------------------------------------------------------------

@given(st.binary(min_size=148, max_size=148))
def test_parse_initiation_any_bytes(data: bytes) -> None:
    m = messages.parse_initiation(data)
    assert bytes(messages.initiation(m))[4:] == data[4:]


@given(st.binary(min_size=92, max_size=92))
def test_parse_response_any_bytes(data: bytes) -> None:
    m = messages.parse_response(memoryview(data))
    assert bytes(messages.response(m))[4:] == data[4:]


@given(st.binary(min_size=64, max_size=64))
def test_parse_cookie_reply_any_bytes(data: bytes) -> None:
    m = messages.parse_cookie_reply(bytearray(data))
    assert messages.cookie_reply(m)[4:] == data[4:]


@given(st.builds(messages.Initiation, U32, B32, st.binary(min_size=48, max_size=48),
                 st.binary(min_size=28, max_size=28), B16, B16))
def test_initiation_roundtrip(m: messages.Initiation) -> None:
    assert messages.parse_initiation(messages.initiation(m)) == m


# --- padding ---------------------------------------------------------------------------------

def test_padded_examples() -> None:
    assert messages.padded(0, 1420) == 0  # a keepalive stays empty
    assert messages.padded(1, 1420) == 16
    assert messages.padded(16, 1420) == 16
    assert messages.padded(17, 1420) == 32
    assert messages.padded(1419, 1420) == 1420  # never beyond the MTU
    assert messages.padded(1420, 1420) == 1420
    assert messages.padded(1417, 0) == 1424  # no MTU: just the multiple of 16
    # above the MTU (a GSO super-packet), the last segment's remainder is padded
    assert messages.padded(1420 + 5, 1420) == 1420 + 16


@given(st.integers(0, 65535), st.integers(0, 9000))
def test_padded_rules(size: int, mtu: int) -> None:
    p = messages.padded(size, mtu)
    assert p >= size and p - size < 16
    if mtu == 0 or size <= mtu:
        if mtu == 0 or (size + 15) // 16 * 16 <= mtu:
            assert p % 16 == 0
        else:
            assert p == mtu
    if mtu and size <= mtu:
        assert p <= mtu


# --- the core's open() with anything ---------------------------------------------------------

_PAIR: tuple[Net, Node, Node] | None = None


def _pair() -> tuple[Net, Node, Node]:
    """One pair with a live session (b responder, confirmed) and a handshake of b's
    pending, shared by the fuzz tests."""
    global _PAIR
    if _PAIR is None:
        net, a, b = pair(seed=7)
        net.send(a, ipv4("10.0.0.1", "10.0.0.2"))
        net.run()
        assert len(b.delivered) == 1
        # and a handshake of b's own pending, so responses can reach consume_response
        # (b just answered a's initiation: like wireguard-go, it waits REKEY_TIMEOUT first)
        net.now += 5.1
        b.core.initiate(b.core.peers[a.public], net.now)
        assert len(b.core.outbox) == 1
        b.core.outbox.clear()
        _PAIR = (net, a, b)
    return _PAIR


_ADDRS = st.one_of(
    st.tuples(st.sampled_from(["192.0.2.1", "192.0.2.66", "203.0.113.9"]),
              st.integers(0, 65535)),
    st.tuples(st.sampled_from(["2001:db8::1", "::ffff:192.0.2.1", "fe80::1"]),
              st.integers(0, 65535), st.just(0), st.integers(0, 3)))


@st.composite
def well_typed(draw: st.DrawFn) -> bytes:
    """A message of a valid type and size with random content; sometimes with an index
    the core knows and a valid mac1, so deeper code runs."""
    _net, _a, b = _pair()
    t = draw(st.sampled_from([INITIATION, RESPONSE, COOKIE_REPLY, TRANSPORT]))
    size = {INITIATION: 148, RESPONSE: 92, COOKIE_REPLY: 64}.get(t) or draw(
        st.integers(32, 1600))
    body = bytearray(draw(st.binary(min_size=size - 4, max_size=size - 4)))
    msg = bytearray(struct.pack("<I", t)) + body
    known = list(b.core.indices)
    if t != INITIATION and known and draw(st.booleans()):
        at = 8 if t == RESPONSE else 4
        struct.pack_into("<I", msg, at, draw(st.sampled_from(known)))
    if t in (INITIATION, RESPONSE) and draw(st.booleans()):
        cookie.Stamper(b.public).stamp(msg, 0.0)  # a valid mac1 (mac2 maybe zero)
    if t in (INITIATION, RESPONSE) and draw(st.booleans()):
        struct.pack_into("<32s", msg, 8 if t == INITIATION else 12,
                         draw(st.sampled_from([bytes(32), (1).to_bytes(32, "little")])))
        cookie.Stamper(b.public).stamp(msg, 0.0)  # low-order ephemeral, valid mac1
    return bytes(msg)


_NOW: list[float] = []


def _fuzz_open(data: bytes, source: tuple[str, int] | tuple[str, int, int, int]) -> None:
    net, a, b = _pair()
    core = b.core
    if not _NOW:  # close to the session's start, so known indices reach the AEAD
        _NOW.append(net.now)
    # 100 per second at most: never under load (256), the session far from 180 s
    _NOW[0] += 0.01
    peer = core.peers[a.public]
    endpoint, rx = peer.endpoint, peer.rx_bytes
    before = sum(core.drops.values())
    into = bytearray(max(len(data), 32))
    n = core.open(memoryview(data), source, _NOW[0], memoryview(into))
    assert type(n) is int and n == 0
    assert sum(core.drops.values()) == before + 1, core.drops
    assert core.outbox == []  # no answer to anything unauthenticated
    assert peer.endpoint == endpoint and peer.rx_bytes == rx


@given(st.binary(max_size=400), _ADDRS)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_open_any_bytes(data: bytes, source: tuple[str, int]) -> None:
    _fuzz_open(data, source)


@given(well_typed(), _ADDRS)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_open_well_typed_random_messages(data: bytes, source: tuple[str, int]) -> None:
    _fuzz_open(data, source)


def test_open_counts_each_reason() -> None:
    _net, a, b = _pair()
    core = b.core
    core.drops.clear()
    kp = core.peers[a.public].keypairs.current
    assert isinstance(kp, Keypair)
    stamped = bytearray(148)
    stamped[0] = 1
    cookie.Stamper(b.public).stamp(stamped, 0.0)
    cases: list[tuple[bytes, str]] = [
        (b"\x01", "runt"),
        (b"\x09\0\0\0" + bytes(40), "bad-type"),
        (b"\x01\0\0\0" + bytes(10), "bad-size"),
        (b"\x04\0\0\0" + bytes(TRANSPORT_MAX_LEN), "oversized"),
        (b"\x01\0\0\0" + bytes(144), "bad-mac1"),
        (bytes(stamped), "bad-ephemeral"),  # an all-zero ephemeral: low order
        (struct.pack("<IIQ", 4, 0xDEAD, 0) + bytes(16), "unknown-index"),
        (struct.pack("<IIQ", 4, kp.local_index, 0) + bytes(16), "bad-tag"),
        (messages.cookie_reply(messages.CookieReply(kp.local_index, bytes(24), bytes(32))),
         "bad-cookie-reply"),
    ]
    for data, reason in cases:
        into = bytearray(max(len(data), 32))
        assert core.open(memoryview(data), A_ADDR, kp.created + 1, memoryview(into)) == 0
        assert core.drops[reason] == 1, (reason, core.drops)
    assert sum(core.drops.values()) == len(cases)
    assert core.outbox == []


def test_open_without_a_private_key_counts() -> None:
    core = WireGuard()
    data = bytearray(148)
    data[0] = 1
    into = bytearray(148)
    assert core.open(memoryview(bytes(data)), A_ADDR, 1.0, memoryview(into)) == 0
    assert core.drops == {"no-private-key": 1}


# --- Checker / Stamper -----------------------------------------------------------------------

_PUB = keys.public_from_private(keys.generate_private())


@given(st.sampled_from([92, 148]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
       st.binary(max_size=40), st.floats(-1e9, 1e9))
@settings(max_examples=200, deadline=None)
def test_checker_random_input(msg: bytes, source: bytes, now: float) -> None:
    checker = cookie.Checker(_PUB)
    assert checker.mac1_ok(msg) is False or msg[-32:-16] == _stamped(msg)[-32:-16]
    assert checker.mac2_ok(msg, source, now) in (True, False)
    reply = checker.reply(msg, 5, source, now)
    assert messages.kind(reply) == COOKIE_REPLY
    assert messages.parse_cookie_reply(reply).receiver == 5
    # random mac2 never passes, even once a secret exists
    assert not checker.mac2_ok(msg, source, now)


def _stamped(msg: bytes) -> bytes:
    m = bytearray(msg)
    cookie.Stamper(_PUB).stamp(m, 0.0)
    return bytes(m)


@given(st.sampled_from([92, 148]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
       st.builds(messages.CookieReply, U32, st.binary(min_size=24, max_size=24), B32))
@settings(max_examples=200, deadline=None)
def test_stamper_random_input(msg: bytes, reply: messages.CookieReply) -> None:
    stamper = cookie.Stamper(_PUB)
    assert not stamper.take(reply, 0.0)  # nothing stamped yet
    m = bytearray(msg)
    stamper.stamp(m, 0.0)
    assert cookie.Checker(_PUB).mac1_ok(m)
    assert bytes(m[-16:]) == bytes(16)  # no cookie: mac2 zero
    assert not stamper.take(reply, 0.0)  # forged
    stamper.stamp(m, 1.0)
    assert bytes(m[-16:]) == bytes(16)


def test_cookie_roundtrip_and_expiry() -> None:
    checker, stamper = cookie.Checker(_PUB), cookie.Stamper(_PUB)
    msg = bytearray(148)
    msg[0] = 1
    stamper.stamp(msg, 0.0)
    where = b"192.0.2.1\x00\x01"
    assert not checker.mac2_ok(msg, where, 0.0)
    assert stamper.take(messages.parse_cookie_reply(checker.reply(msg, 1, where, 0.0)), 0.0)
    stamper.stamp(msg, 1.0)
    assert checker.mac2_ok(msg, where, 1.0)
    assert not checker.mac2_ok(msg, b"192.0.2.9\x00\x01", 1.0)  # another address
    assert not checker.mac2_ok(msg, where, 1.0 + cookie.COOKIE_REFRESH + 1)  # secret rotated
    stamper.stamp(msg, cookie.COOKIE_REFRESH + 1)
    assert bytes(msg[-16:]) == bytes(16)  # the cookie expired on our side too
