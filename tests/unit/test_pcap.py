import io
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simpletun.tools import pcap

from .vectors import TUN_PING4


def test_header_bytes() -> None:
    hdr = pcap.file_header(pcap.LINKTYPE_RAW)
    assert len(hdr) == 24
    assert struct.unpack("<IHHiIII", hdr) == (0xA1B2C3D4, 2, 4, 0, 0, 262144, 101)


def test_record_bytes() -> None:
    rec = pcap.record(TUN_PING4, 1700000000.25)
    assert struct.unpack_from("<IIII", rec) == (1700000000, 250000, 44, 44)
    assert rec[16:] == TUN_PING4


def test_writer_and_reader() -> None:
    buf = io.BytesIO()
    w = pcap.PcapWriter(buf, pcap.LINKTYPE_ETHERNET)
    w.write(b"frame-1", 1.5)
    w.write(b"frame-two", 2.0)
    cap = pcap.parse(buf.getvalue())
    assert cap.linktype == pcap.LINKTYPE_ETHERNET
    assert [r.data for r in cap.records] == [b"frame-1", b"frame-two"]
    assert cap.records[0].timestamp == pytest.approx(1.5)
    assert w.count == 2


def test_reads_big_endian_nanosecond_files() -> None:
    blob = struct.pack(">IHHiIII", pcap.MAGIC_NS, 2, 4, 0, 0, 65535, 1)
    blob += struct.pack(">IIII", 10, 500_000_000, 3, 3) + b"abc"
    cap = pcap.parse(blob)
    assert cap.records[0].timestamp == pytest.approx(10.5)
    assert cap.records[0].data == b"abc"


@pytest.mark.parametrize("blob,msg", [
    (b"", "too short"),
    (b"\x00" * 24, "bad magic"),
    (pcap.file_header(1) + b"\x00" * 8, "truncated record header"),
    (pcap.file_header(1) + struct.pack("<IIII", 0, 0, 9, 9) + b"abc", "truncated record data"),
])
def test_broken_files(blob: bytes, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        pcap.parse(blob)


@given(st.lists(st.tuples(st.binary(max_size=100), st.integers(0, 2**31 - 1),
                          st.integers(0, 999_999)), max_size=10))
def test_round_trip(packets: list[tuple[bytes, int, int]]) -> None:
    blob = pcap.file_header(pcap.LINKTYPE_RAW) + b"".join(
        pcap.record(data, sec + usec / 1e6) for data, sec, usec in packets)
    cap = pcap.parse(blob)
    assert [r.data for r in cap.records] == [p[0] for p in packets]
    assert [r.orig_len for r in cap.records] == [len(p[0]) for p in packets]
