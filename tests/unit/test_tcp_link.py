"""The TCP link's framing: wire.classic.ViewDecoder (2-byte length, views, no copies of
whole frames)."""

from hypothesis import given
from hypothesis import strategies as st

from simpletun.wire.classic import ViewDecoder, encode


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(2, "big") + payload


def test_vectors() -> None:
    d = ViewDecoder()
    out = d.feed(b"\x00\x03abc\x00\x01x")
    assert [bytes(m) for m in out] == [b"abc", b"x"]
    assert d.pending == 0
    assert d.feed(b"\x00") == []
    assert d.pending == 1
    assert d.feed(b"\x02y") == []
    assert d.pending == 3
    assert [bytes(m) for m in d.feed(b"z\x00")] == [b"yz"]
    assert d.pending == 1
    assert [bytes(m) for m in d.feed(b"\x01q")] == [b"q"]


def test_whole_frames_are_views_into_the_chunk_not_copies() -> None:
    chunk = bytearray(encode(b"hello") + encode(b"world"))
    out = ViewDecoder().feed(memoryview(chunk))
    assert [bytes(m) for m in out] == [b"hello", b"world"]
    chunk[2:7] = b"HELLO"  # the caller reuses its buffer: the view shows it
    assert bytes(out[0]) == b"HELLO"


def test_a_split_frame_is_copied_and_survives_the_chunk() -> None:
    d = ViewDecoder()
    first = bytearray(b"\x00\x05he")
    assert d.feed(first) == []
    second = bytearray(b"llo\x00\x02ok")
    out = d.feed(second)
    first[:] = bytes(len(first))
    second[:] = bytes(len(second))
    assert bytes(out[0]) == b"hello"  # its own copy
    assert bytes(out[1]) == bytes(2)  # a view into the (now zeroed) chunk
    # the copy is kept while the next split frame is assembled
    assert d.feed(b"\x00\x03a") == []
    assert [bytes(m) for m in d.feed(b"bc")] == [b"abc"]
    assert bytes(out[0]) == b"hello"


def test_max_length_frame() -> None:
    big = bytes(range(256)) * 255 + bytes(255)  # 65535 bytes
    d = ViewDecoder()
    stream = _frame(big)
    assert d.feed(stream[:30000]) == []
    assert [bytes(m) for m in d.feed(stream[30000:])] == [big]


def test_zero_length_frames_are_skipped_and_counted() -> None:
    d = ViewDecoder()
    assert [bytes(m) for m in d.feed(b"\x00\x00\x00\x01x\x00\x00")] == [b"x"]
    assert d.empty == 2
    assert d.feed(b"\x00") == []  # a zero-length frame split across chunks
    assert d.feed(b"\x00") == []
    assert d.empty == 3
    assert d.pending == 0


frames = st.lists(st.binary(max_size=3000), max_size=20)


@given(frames, st.data())
def test_every_split_gives_the_same_messages(payloads: list[bytes], data: st.DataObject,
                                             ) -> None:
    stream = b"".join(_frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    d = ViewDecoder()
    out: list[bytes] = []
    last = 0
    for cut in [*cuts, len(stream)]:
        chunk = bytearray(stream[last:cut])
        out += [bytes(m) for m in d.feed(chunk)]
        chunk[:] = bytes(len(chunk))  # reused before the next feed: copies must not care
        last = cut
    assert out == [p for p in payloads if p]
    assert d.empty == sum(1 for p in payloads if not p)
    assert d.pending == 0
