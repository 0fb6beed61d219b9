"""capture.run's loop, driven with a fake device: a reply is shown and recorded before it
is written, so whoever waits for the reply (ping, then the self-check counting lines) can
never see fewer reply lines than replies delivered."""

from __future__ import annotations

import io
import ipaddress
import os

import pytest

from simpletun.tools import capture, pcap
from simpletun.tools.describe import describe
from simpletun.tools.responder import Responder

from .vectors import TUN_PING4, TUN_TCP_SYN

Event = tuple[str, str]


class FakeDevice:
    """A tun device with no headers whose reads come from a list; select() sees it ready
    through a pipe holding one byte per packet."""

    tap = False
    pi = False
    vnet_hdr_size: int | None = None
    header_len = 0

    def __init__(self, packets: list[bytes], events: list[Event]) -> None:
        self.packets = list(packets)
        self.events = events
        self._r, self._w = os.pipe()
        os.write(self._w, b"x" * len(packets))

    def fileno(self) -> int:
        return self._r

    def read_into(self, buf: bytearray | memoryview) -> int:
        os.read(self._r, 1)
        packet = self.packets.pop(0)
        buf[:len(packet)] = packet
        return len(packet)

    def write(self, packet: bytes | bytearray | memoryview) -> int:
        self.events.append(("write", describe(bytes(packet), tap=False)))
        return len(packet)

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


class Lines(io.StringIO):
    def __init__(self, events: list[Event]) -> None:
        super().__init__()
        self.events = events

    def write(self, s: str) -> int:
        self.events.append(("line", s.rstrip("\n")))
        return len(s)


class Records(io.BytesIO):
    def __init__(self, events: list[Event]) -> None:
        super().__init__()
        self.events = events

    def write(self, b: object) -> int:
        data = bytes(b)  # type: ignore[call-overload]
        if len(data) > 24:  # a record, not the file header
            self.events.append(("pcap", describe(data[16:], tap=False)))
        return len(data)


def test_reply_is_shown_and_recorded_before_it_is_written() -> None:
    events: list[Event] = []
    dev = FakeDevice([TUN_PING4, TUN_TCP_SYN, TUN_PING4], events)
    responder = Responder([ipaddress.ip_interface("10.0.0.1/24"),
                           ipaddress.ip_interface("fd00::1/64")])
    try:
        stats = capture.run(dev, out=Lines(events),
                            pcap=pcap.PcapWriter(Records(events), pcap.LINKTYPE_RAW),
                            responder=responder, count=3)
    finally:
        dev.close()
    assert stats.read == 3 and stats.answered == 2
    request = describe(TUN_PING4, tap=False)
    reply = next(text for kind, text in events if kind == "write")
    assert "echo reply" in reply
    syn = describe(TUN_TCP_SYN, tap=False)
    assert events == [
        ("line", request), ("pcap", request),
        ("line", reply), ("pcap", reply), ("write", reply),
        ("line", syn), ("pcap", syn),
        ("line", request), ("pcap", request),
        ("line", reply), ("pcap", reply), ("write", reply),
    ]


def test_a_responder_needs_a_device_to_write_into() -> None:
    class ReadOnly:
        tap = False
        header_len = 0

        def fileno(self) -> int:
            return 0

        def read_into(self, buf: bytearray | memoryview) -> int:
            return 0

    with pytest.raises(TypeError):
        capture.run(ReadOnly(), responder=Responder([]), count=1)
