"""The classic pcap capture format (what tcpdump -w writes and Wireshark opens).

Pure codec: :func:`file_header` and :func:`record` build bytes, :func:`parse` reads them
back; :class:`PcapWriter` is the thin file wrapper. Time stamps are passed in, never read.
"""

from __future__ import annotations

import struct
from typing import BinaryIO, NamedTuple

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # raw IPv4/IPv6, what a tun device carries
MAGIC = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
SNAPLEN = 262144

_FILE = struct.Struct("=IHHiIII")
_REC = struct.Struct("=IIII")


class Record(NamedTuple):
    timestamp: float
    data: bytes
    orig_len: int


class Capture(NamedTuple):
    linktype: int
    snaplen: int
    records: list[Record]


def file_header(linktype: int, snaplen: int = SNAPLEN) -> bytes:
    return _FILE.pack(MAGIC, 2, 4, 0, 0, snaplen, linktype)


def record(data: bytes, timestamp: float, snaplen: int = SNAPLEN) -> bytes:
    sec = int(timestamp)
    usec = min(round((timestamp - sec) * 1_000_000), 999_999)
    kept = data[:snaplen]
    return _REC.pack(sec, usec, len(kept), len(data)) + kept


def parse(blob: bytes) -> Capture:
    """Read a whole capture (either byte order, µs or ns stamps); ValueError if broken."""
    if len(blob) < _FILE.size:
        raise ValueError("too short for a pcap file header")
    for order in ("<", ">"):
        magic = struct.unpack_from(order + "I", blob)[0]
        if magic in (MAGIC, MAGIC_NS):
            break
    else:
        raise ValueError("not a pcap file (bad magic)")
    scale = 1e-9 if magic == MAGIC_NS else 1e-6
    _m, _maj, _min, _tz, _sig, snaplen, linktype = struct.unpack_from(order + "IHHiIII", blob)
    rec = struct.Struct(order + "IIII")
    records: list[Record] = []
    off = _FILE.size
    while off < len(blob):
        if off + rec.size > len(blob):
            raise ValueError(f"truncated record header at byte {off}")
        sec, frac, incl, orig = rec.unpack_from(blob, off)
        off += rec.size
        if off + incl > len(blob):
            raise ValueError(f"truncated record data at byte {off}")
        records.append(Record(sec + frac * scale, blob[off:off + incl], orig))
        off += incl
    return Capture(linktype, snaplen, records)


def read(path: str) -> Capture:
    with open(path, "rb") as f:
        return parse(f.read())


class PcapWriter:
    """Append packets to a pcap file; flushes each record so a capture can be read live."""

    def __init__(self, target: str | BinaryIO, linktype: int) -> None:
        self._own = isinstance(target, str)
        self._f: BinaryIO = open(target, "wb") if isinstance(target, str) else target  # noqa: SIM115
        self._f.write(file_header(linktype))
        self._f.flush()
        self.count = 0

    def write(self, data: bytes, timestamp: float) -> None:
        self._f.write(record(data, timestamp))
        self._f.flush()
        self.count += 1

    def close(self) -> None:
        if self._own:
            self._f.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
