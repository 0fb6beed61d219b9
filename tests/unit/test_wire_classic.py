"""The classic wire: 2-byte big-endian length, then the packet."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simpletun.wire.classic import Decoder, FrameTooLarge, encode, encode_header

from .vectors import TUN_PING4, TUN_PING6


def test_vectors() -> None:
    assert encode(b"\x45abc") == b"\x00\x04\x45abc"
    assert encode(TUN_PING4)[:2] == b"\x00\x2c"  # 44 bytes
    assert encode_header(1500) == b"\x05\xdc"
    assert encode_header(65535) == b"\xff\xff"
    for bad in (0, 65536, -1):
        with pytest.raises(ValueError):
            encode_header(bad)


def test_decoder_whole_split_and_joined() -> None:
    d = Decoder()
    stream = encode(TUN_PING4) + encode(TUN_PING6)
    assert d.feed(stream) == [TUN_PING4, TUN_PING6]
    assert d.pending == 0
    assert d.feed(stream[:1]) == []
    assert d.feed(stream[1:2]) == []
    assert d.feed(stream[2:10]) == []
    assert d.pending == 10
    assert d.feed(stream[10:]) == [TUN_PING4, TUN_PING6]


def test_zero_length_frames_are_skipped_and_counted() -> None:
    d = Decoder()
    assert d.feed(b"\x00\x00" + encode(b"x") + b"\x00\x00") == [b"x"]
    assert d.empty == 2


def test_oversized_frame_is_refused() -> None:
    d = Decoder(max_packet=1500)
    assert d.feed(encode(bytes(1500))) == [bytes(1500)]
    assert d.error is None
    # the frames before the bad length in the same chunk still come out
    assert d.feed(encode(b"before") + b"\x05\xdd" + b"junk") == [b"before"]  # 1501
    assert d.error is not None
    assert (d.error.length, d.error.limit) == (1501, 1500)
    assert "frame of 1501 bytes, more than the 1500 this side can carry" in str(d.error)
    with pytest.raises(FrameTooLarge):  # the stream is over
        d.feed(encode(b"after"))


def test_memoryview_input() -> None:
    buf = bytearray(encode(b"hello") + b"\x00")
    assert Decoder().feed(memoryview(buf)[:7]) == [b"hello"]


packets = st.lists(st.binary(min_size=1, max_size=1600), max_size=20)


@given(packets, st.data())
def test_every_chunking_gives_the_same_packets(pkts: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode(p) for p in pkts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    d = Decoder(max_packet=1600)
    out: list[bytes] = []
    last = 0
    for cut in [*cuts, len(stream)]:
        out += d.feed(stream[last:cut])
        last = cut
    assert out == pkts
    assert d.pending == 0


@given(st.binary(max_size=5000), st.integers(1, 3000))
def test_any_bytes_give_packets_within_the_limit(junk: bytes, limit: int) -> None:
    d = Decoder(max_packet=limit)
    out = d.feed(junk)
    assert all(0 < len(p) <= limit for p in out)
    assert d.error is None or d.error.length > limit
