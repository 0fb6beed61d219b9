"""The native wire: handshake messages and state machines, frames, vnet headers."""

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simpletun.device import vnet
from simpletun.packets.check import check_ip
from simpletun.wire import classic, native
from simpletun.wire.native import (
    ClientHandshake,
    Decoder,
    FrameError,
    HandshakeError,
    Hello,
    ServerHandshake,
    agree,
    decode_handshake,
    encode_frame,
    encode_hello,
    encode_refuse,
    frame_header,
)

from .vectors import TUN_PING4

SESSION = bytes(range(8))
CLIENT = Hello(tap=False, mtu=1500, features=native.ALL_FEATURES, session=SESSION, queue=3,
               queues=4)
SERVER = Hello(tap=False, mtu=1500, features=native.FEATURE_KEEPALIVE, session=bytes(8))


def test_hello_bytes() -> None:
    wire = encode_hello(CLIENT)
    # a classic frame holding an IPv6 packet ::1 -> ::1, next header 253, hop limit 0
    assert wire[:2] == (len(wire) - 2).to_bytes(2, "big")
    ip = wire[2:]
    assert ip[0] >> 4 == 6 and ip[6] == 253 and ip[7] == 0
    assert ip[8:40] == (bytes(15) + b"\x01") * 2
    assert ip[40:].hex() == ("73696d706c6574756e" "01" "01" "05dc" "00000003"
                             "0001020304050607" "0003" "0004")
    assert check_ip(ip) is None  # a classic peer's device accepts it (and the kernel drops it)
    assert decode_handshake(ip) == CLIENT


def test_refuse_and_non_handshake_packets() -> None:
    assert decode_handshake(encode_refuse("no thanks")[2:]) == "no thanks"
    assert decode_handshake(TUN_PING4) is None
    bad_version = bytearray(encode_hello(CLIENT)[2:])
    bad_version[40 + 9] = 9
    with pytest.raises(HandshakeError, match="protocol version 9, this side 1"):
        decode_handshake(bytes(bad_version))


def test_agree() -> None:
    agreed = agree(SERVER, CLIENT)
    assert agreed.features == native.FEATURE_KEEPALIVE  # the intersection
    assert (agreed.session, agreed.queue, agreed.queues) == (SESSION, 3, 1)  # fewer queues
    with pytest.raises(HandshakeError, match="peer is tap, this side is tun: use -a on both sides"):
        agree(SERVER, Hello(tap=True, mtu=1500, features=0, session=SESSION))
    with pytest.raises(HandshakeError, match="peer is tun, this side is tap: use -a"):
        agree(Hello(tap=True, mtu=1500, features=0, session=SESSION), CLIENT)
    with pytest.raises(HandshakeError, match="peer's MTU is 1400, this side's 1500"):
        agree(SERVER, Hello(tap=False, mtu=1400, features=0, session=SESSION))


def _split_feed(machine: ClientHandshake | ServerHandshake, data: bytes,
                cut: int) -> native.Outcome | None:
    """Feed in two pieces; bytes after a decision belong to the session (in the tunnel the
    pump reads them), so they are added to the leftover here."""
    out = machine.feed(data[:cut])
    if out is not None:
        return dataclasses.replace(out, leftover=out.leftover + data[cut:])
    return machine.feed(data[cut:])


@given(st.integers(0, 120))
def test_native_handshake_at_any_split(cut: int) -> None:
    client = ClientHandshake(CLIENT)
    server = ServerHandshake(SERVER)
    first_data = encode_frame(native.DATA, TUN_PING4)
    s_out = _split_feed(server, client.start() + first_data, cut)
    assert s_out is not None and s_out.wire == "native"
    assert s_out.leftover == first_data  # the session's first frame is kept
    assert s_out.hello is not None and s_out.hello.features == native.FEATURE_KEEPALIVE
    c_out = _split_feed(client, s_out.reply + b"more", cut % (len(s_out.reply) + 1))
    assert c_out is not None and c_out.wire == "native"
    assert c_out.hello is not None and c_out.hello.features == native.FEATURE_KEEPALIVE
    assert c_out.leftover == b"more"


def test_classic_server_means_classic() -> None:
    client = ClientHandshake(CLIENT)
    frame = classic.encode(TUN_PING4)
    out = client.feed(frame[:5])
    assert out is None
    out = client.feed(frame[5:])
    assert out is not None and out.wire == "classic" and out.leftover == frame
    silent = ClientHandshake(CLIENT)
    assert silent.timed_out().wire == "classic"


def test_classic_client_means_classic() -> None:
    server = ServerHandshake(SERVER)
    stream = classic.encode(TUN_PING4) + classic.encode(TUN_PING4)
    out = server.feed(stream)
    assert out is not None and out.wire == "classic" and out.leftover == stream
    assert out.reply == b""  # a classic client must never get handshake bytes
    oversized = ServerHandshake(SERVER).feed(b"\xff\xff")
    assert oversized is None or oversized.wire == "classic"


def test_mismatch_is_refused_with_the_reason_on_each_side() -> None:
    tap_client = Hello(tap=True, mtu=1500, features=0, session=SESSION)
    server = ServerHandshake(SERVER)
    out = server.feed(encode_hello(tap_client))
    assert out is not None and out.wire == "refused"
    assert out.reason == "peer is tap, this side is tun: use -a on both sides"
    client_view = ClientHandshake(tap_client).feed(out.reply)
    assert client_view is not None and client_view.wire == "refused"
    assert client_view.reason == "peer is tun, this side is tap: use -a on both sides"


def test_other_version_is_refused_by_the_server() -> None:
    hello = bytearray(encode_hello(CLIENT))
    hello[2 + 40 + 9] = 2
    out = ServerHandshake(SERVER).feed(bytes(hello))
    assert out is not None and out.wire == "refused" and "version 2" in out.reason
    client_view = ClientHandshake(CLIENT).feed(out.reply)
    assert client_view is not None and client_view.reason == out.reason


def test_frames() -> None:
    assert frame_header(native.DATA, 84) == b"\x01\x00\x00\x54"
    assert frame_header(native.DATA_VNET, 65545) == b"\x02\x01\x00\x09"
    assert encode_frame(native.KEEPALIVE) == b"\x03\x00\x00\x00"
    with pytest.raises(ValueError):
        frame_header(9, 1)
    with pytest.raises(ValueError):
        frame_header(native.DATA, native.MAX_PAYLOAD + 1)


def test_decoder_stops_at_a_bad_header_but_keeps_what_came_before() -> None:
    d = Decoder()
    out = d.feed(encode_frame(native.DATA, b"ok") + b"\x09\x00\x00\x01x")
    assert out == [(native.DATA, b"ok")]
    assert d.error is not None and "type 9" in str(d.error)
    with pytest.raises(FrameError):
        d.feed(b"")
    big = Decoder(max_payload=100)
    assert big.feed(b"\x01\x00\x00\x65") == []
    assert big.error is not None


frames = st.lists(st.tuples(st.sampled_from([native.DATA, native.DATA_VNET, native.KEEPALIVE,
                                             native.CLOSE]),
                            st.binary(max_size=3000)), max_size=15)


@given(frames, st.data())
def test_every_chunking_gives_the_same_frames(items: list[tuple[int, bytes]],
                                              data: st.DataObject) -> None:
    stream = b"".join(encode_frame(k, p) for k, p in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    d = Decoder()
    out: list[tuple[int, bytes]] = []
    last = 0
    for cut in [*cuts, len(stream)]:
        out += d.feed(stream[last:cut])
        last = cut
    assert out == items and d.pending == 0


@given(st.binary(max_size=3000))
def test_any_bytes_never_raise_on_first_feed(junk: bytes) -> None:
    d = Decoder()
    out = d.feed(junk)
    assert all(k in native.FRAME_TYPES for k, _ in out)


@given(st.binary(max_size=300))
def test_handshakes_never_raise_on_junk(junk: bytes) -> None:
    for machine in (ClientHandshake(CLIENT), ServerHandshake(SERVER)):
        out = machine.feed(junk)
        assert out is None or out.wire in ("classic", "refused", "native")


def test_vnet_header() -> None:
    h = vnet.VnetHeader(vnet.F_NEEDS_CSUM, vnet.GSO_TCPV4, 66, 1448, 34, 16)
    raw = vnet.pack(h)
    assert raw == bytes.fromhex("0101" "4200" "a805" "2200" "1000")  # little-endian
    assert vnet.unpack(raw) == h
    packet = bytes(3000)
    assert vnet.check(raw + packet) is None
    assert vnet.check(vnet.ZERO + b"\x45") is None
    assert vnet.check(vnet.pack(h._replace(flags=0x10)) + packet) == "bad-vnet"
    assert vnet.check(vnet.pack(h._replace(gso_type=7)) + packet) == "bad-vnet"
    assert vnet.check(vnet.pack(h._replace(gso_size=0)) + packet) == "bad-vnet"
    assert vnet.check(vnet.pack(h._replace(csum_start=2999)) + packet) == "bad-vnet"
    assert vnet.check(b"\x00" * 5) == "short"
