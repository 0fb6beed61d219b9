"""Who may become the TCP server's client (tunnel.admission, pure parts) and the workers'
reports."""

from __future__ import annotations

import os
import select
import socket
import struct
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simpletun.device.side import Counters
from simpletun.tunnel.admission import (
    PENDING_DEADLINE,
    QUIET,
    ClassicProbe,
    Handshakes,
    Live,
    NativeProbe,
    decide,
    first_frame_verdict,
    plausible,
)
from simpletun.tunnel.ratelimit import LimitedLog
from simpletun.tunnel.workers import decode_report, encode_report
from simpletun.wire import native

from ..packets import ping4

HELLO = native.Hello(tap=False, mtu=1500, features=native.ALL_FEATURES, session=b"s" * 8)
PING = ping4("10.200.0.2", "10.200.0.1")


def frame(packet: bytes) -> bytes:
    return struct.pack("!H", len(packet)) + packet


def test_plausible_packets() -> None:
    assert plausible(PING, False)
    assert plausible(native.encode_hello(HELLO)[2:], False)  # a native client's hello
    assert not plausible(os.urandom(84), False)
    assert not plausible(b"\x00" * 100, False)
    eth = b"\x02" * 12 + b"\x08\x00"
    assert plausible(eth + PING, True)
    assert not plausible(eth + b"\x45" + os.urandom(83), True)
    assert not plausible(b"\x02" * 12 + b"\x12\x34" + os.urandom(50), True)


def test_first_frame_verdicts() -> None:
    assert first_frame_verdict(b"\x00", 1500, False) is None  # not yet
    assert first_frame_verdict(frame(PING)[:30], 1500, False) is None
    zero = first_frame_verdict(b"\x00\x00", 1500, False)
    assert zero is not None and zero.wire == "junk"
    huge = first_frame_verdict(b"\xff\xff", 1500, False)  # decided at once, no waiting
    assert huge is not None and huge.wire == "junk" and "65535" in huge.reason
    ok = first_frame_verdict(frame(PING) + b"more", 1500, False)
    assert ok is not None and ok.wire == "classic" and ok.leftover == frame(PING) + b"more"


@given(st.binary(min_size=2, max_size=3000))
def test_random_bytes_never_make_a_client(junk: bytes) -> None:
    for probe in (ClassicProbe(1500, False), NativeProbe(HELLO, 1500, False)):
        out = None
        for i in range(0, len(junk), 700):
            out = probe.feed(junk[i:i + 700])
            if out is not None:
                break
        assert out is None or out.wire in ("junk", "refused"), out


def test_native_probe_hello_and_classic_client() -> None:
    out = NativeProbe(HELLO, 1500, False).feed(native.encode_hello(HELLO))
    assert out is not None and out.wire == "native" and out.reply
    out = NativeProbe(HELLO, 1500, False).feed(frame(PING))
    assert out is not None and out.wire == "classic" and out.leftover == frame(PING)
    probe = NativeProbe(HELLO, 1500, False)
    assert probe.feed(b"\x00") is None  # slowloris: one byte, no verdict, no waiting
    out = probe.feed(b"\x00")
    assert out is not None and out.wire == "junk"


def test_decide() -> None:
    live = Live(b"a" * 8, "192.0.2.2:1", heard=100.0)
    assert decide(None, None, 100.0, 40) == "take"
    assert decide(None, b"b" * 8, 100.0, 40) == "take"
    assert decide(live, b"a" * 8, 100.5, 40) == "replace"  # its own reconnect
    assert decide(live, b"b" * 8, 139.0, 40) == "refuse"  # another session, still live
    assert decide(live, None, 139.0, 40) == "refuse"  # a classic connection
    assert decide(live, b"b" * 8, 140.0, 40) == "replace"  # silent past the timeout
    classic = Live(None, "192.0.2.2:1", heard=100.0)
    assert decide(classic, None, 120.0, 40) == "refuse"  # no session to prove anything
    assert decide(classic, None, 141.0, 40) == "replace"


def test_busy_refusal_is_told_apart() -> None:
    machine = native.ClientHandshake(HELLO)
    out = machine.feed(native.encode_refuse(native.BUSY + "another client is live"))
    assert out is not None and out.wire == "busy" and out.reason == "another client is live"
    out = native.ClientHandshake(HELLO).feed(native.encode_refuse("no thanks"))
    assert out is not None and out.wire == "refused"


def test_reports_round_trip() -> None:
    c = Counters(3, 4, 300, 400)
    c.drops["bad-checksum"] += 2
    line = encode_report(1, c).decode()
    assert len(line) < 512 and line.endswith("\n")
    got = decode_report(line.strip())
    assert got is not None and got[0] == 1 and got[1].summary() == c.summary()
    assert decode_report("E worker 0: broke") is None
    assert decode_report("S x {}") is None
    assert decode_report("S 1 {bad json") is None


def _table(local: native.Hello | None) -> tuple[Handshakes, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    table = Handshakes(listener, local, max_packet=1500, tap=False, counters=Counters(),
                       log=LimitedLog(lambda _line: None))
    return table, listener


@pytest.mark.parametrize("local", [None, HELLO], ids=["classic-server", "native-server"])
def test_a_silent_connection_is_offered_as_a_classic_client(local: native.Hello | None) -> None:
    """The classic C client sends nothing until its device has a packet: after QUIET seconds
    of silence it is offered to the policy (which seats it only where nobody is live)."""
    table, listener = _table(local)
    with listener, socket.create_connection(listener.getsockname()) as client:
        start = time.monotonic()
        assert table.handle([listener.fileno()], start) == []  # accepted, pending
        assert table.deadline == pytest.approx(start + QUIET)
        ready = table.handle([], start + QUIET + 0.01)
        assert len(ready) == 1 and ready[0].silent and ready[0].outcome.wire == "classic"
        assert ready[0].outcome.leftover == b"" and len(table) == 0
        ready[0].sock.close()
        client.close()


def test_a_connection_that_spoke_is_not_silent_and_closes_at_its_deadline() -> None:
    table, listener = _table(None)
    with listener, socket.create_connection(listener.getsockname()) as client:
        start = time.monotonic()
        table.handle([listener.fileno()], start)
        client.sendall(b"\x00")  # half a length: neither silent nor proven
        fd = table.fds[1]
        select.select([fd], [], [], 2)
        assert table.handle([fd], start + 0.1) == []
        assert table.handle([], start + QUIET + 0.1) == []  # not offered: it spoke
        assert len(table) == 1
        assert table.handle([], start + PENDING_DEADLINE + 0.1) == [] and len(table) == 0
        assert table.counters.drops["handshake-timeout"] == 1
