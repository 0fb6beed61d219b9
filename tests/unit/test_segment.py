from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simpletun.packets import Malformed
from simpletun.packets.checksum import checksum, pseudo4, pseudo6, verify
from simpletun.wire import segment

SRC4, DST4 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
SRC6, DST6 = bytes.fromhex("fd00" + "00" * 13 + "01"), bytes.fromhex("fd00" + "00" * 13 + "02")


def _tcp(payload: bytes, flags: int, seq: int = 1000, options: bytes = b"") -> bytes:
    doff = (20 + len(options)) // 4
    return struct.pack("!HHIIBBHHH", 40000, 80, seq, 7, doff << 4, flags, 65535, 0, 0) \
        + options + payload


def _super(v6: bool, payload: bytes, flags: int = 0x18, options: bytes = b"") -> bytes:
    """A super-packet as a tun device with TSO hands it over: checksum partial."""
    tcp = bytearray(_tcp(payload, flags, options=options))
    if v6:
        ip = struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + SRC6 + DST6
        pseudo = pseudo6(SRC6, DST6, 6, len(tcp))
    else:
        ip = bytearray(struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp), 0x1234, 0x4000, 64, 6,
                                   0) + SRC4 + DST4)
        struct.pack_into("!H", ip, 10, checksum(ip))
        pseudo = pseudo4(SRC4, DST4, 6, len(tcp))
    struct.pack_into("!H", tcp, 16, pseudo)  # what the kernel leaves: the pseudo-header sum
    return bytes(ip) + bytes(tcp)


def _finished(headers: bytes, chunk: bytes | memoryview) -> bytearray:
    packet = bytearray(headers + bytes(chunk))
    where = segment.partial(packet)
    assert where is not None
    segment.complete(packet, *where)
    return packet


def _tcp_valid(packet: bytes | bytearray, v6: bool) -> bool:
    start = 40 if v6 else 20
    tcp = bytes(packet[start:])
    pseudo = (pseudo6(SRC6, DST6, 6, len(tcp)) if v6 else pseudo4(SRC4, DST4, 6, len(tcp)))
    return verify(tcp, pseudo)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_cut_like_the_kernel(v6: bool) -> None:
    payload = bytes(range(256)) * 14  # 3584 bytes: 1000 + 1000 + 1000 + 584
    cut = segment.segments(memoryview(_super(v6, payload, flags=0x18 | 0x80 | 0x01)), 1000)
    assert [len(c) for _h, c in cut] == [1000, 1000, 1000, 584]
    assert b"".join(bytes(c) for _h, c in cut) == payload
    for i, (headers, chunk) in enumerate(cut):
        packet = _finished(headers, chunk)
        start = 40 if v6 else 20
        seq, = struct.unpack_from("!I", packet, start + 4)
        assert seq == 1000 + 1000 * i
        flags = packet[start + 13]
        assert bool(flags & 0x80) == (i == 0)  # CWR on the first only
        assert bool(flags & 0x09) == (i == 3)  # FIN and PSH on the last only
        if v6:
            assert struct.unpack_from("!H", packet, 4)[0] == len(packet) - 40
        else:
            assert struct.unpack_from("!HH", packet, 2) == (len(packet), 0x1234 + i)
            assert verify(packet[:20])
        assert _tcp_valid(packet, v6)


def test_options_are_copied_and_short_packets_are_one_segment() -> None:
    options = b"\x01\x01\x08\x0a" + bytes(8)  # NOP NOP timestamps
    cut = segment.segments(memoryview(_super(False, b"x" * 10, options=options)), 1000)
    assert len(cut) == 1 and cut[0][0][20 + 20:20 + 32] == options
    assert _tcp_valid(_finished(*cut[0]), False)


def test_not_tcp_is_refused() -> None:
    udp = bytearray(_super(False, b"x" * 100))
    udp[9] = 17
    with pytest.raises(Malformed):
        segment.segments(memoryview(bytes(udp)), 50)
    with pytest.raises(Malformed):
        segment.segments(memoryview(b"\x60" + bytes(10)), 50)
    assert segment.partial(b"\x45" + bytes(5)) is None
    assert segment.partial(bytes(udp)) == (20, 6)


@given(st.booleans(), st.binary(min_size=1, max_size=5000), st.integers(1, 1500))
def test_segments_reassemble_and_checksum(v6: bool, payload: bytes, mss: int) -> None:
    cut = segment.segments(memoryview(_super(v6, payload)), mss)
    assert b"".join(bytes(c) for _h, c in cut) == payload
    assert all(0 < len(c) <= mss for _h, c in cut)
    for headers, chunk in cut:
        assert _tcp_valid(_finished(headers, chunk), v6)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_segments_merge_back_into_the_super_packet(v6: bool) -> None:
    payload = bytes(range(256)) * 14
    original = _super(v6, payload, flags=0x18 | 0x80)
    cut = [memoryview(h + bytes(c)) for h, c in segment.segments(memoryview(original), 1000)]
    assert segment.runs(cut) == [(0, 4)]
    head, l4, hlen, mss, v4 = segment.merge(cut)
    assert (l4, hlen, mss, v4) == ((40, 60, 1000, False) if v6 else (20, 40, 1000, True))
    assert head + payload == original  # lengths, flags, checksums: as the kernel had them


def test_runs_break_where_segments_do_not_continue() -> None:
    def cut(seq: int, size: int, flags: int = 0x10) -> memoryview:
        tcp = _tcp(b"y" * size, flags, seq=seq)
        return memoryview(struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0)
                          + SRC4 + DST4 + tcp)
    packets = [cut(0, 100), cut(100, 100), cut(200, 50),  # a run, ended by a short one
               cut(250, 100), cut(400, 100),  # a gap in the sequence
               cut(500, 100), cut(600, 100, flags=0x18), cut(700, 100),  # PSH ends a run
               cut(800, 100, flags=0x02), cut(900, 100)]  # SYN never merges
    assert segment.runs(packets) == [(0, 3), (3, 4), (4, 7), (7, 8), (8, 9), (9, 10)]
    other = bytearray(cut(1000, 100))
    other[20:22] = b"\0\1"  # another source port: another flow
    assert segment.runs([cut(900, 100), memoryview(bytes(other))]) == [(0, 1), (1, 2)]


@given(st.booleans(), st.binary(min_size=1, max_size=20000), st.integers(200, 1500))
def test_cut_then_merged_is_the_original(v6: bool, payload: bytes, mss: int) -> None:
    original = _super(v6, payload)
    cut = [memoryview(h + bytes(c)) for h, c in segment.segments(memoryview(original), mss)]
    groups = segment.runs(cut)
    assert groups[0][0] == 0 and groups[-1][1] == len(cut)
    if len(payload) + (60 if v6 else 40) <= 65535:
        assert groups == [(0, len(cut))]
        assert segment.merge(cut).headers + payload == original
