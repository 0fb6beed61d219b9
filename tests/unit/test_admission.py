"""Who may become the TCP server's client (tunnel.admission, pure parts) and the workers'
reports."""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import struct
import time
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simpletun.device.side import Counters
from simpletun.signals import STOP_SIGNALS
from simpletun.tunnel import workers
from simpletun.tunnel.admission import (
    ACCEPT_PAUSE,
    PENDING_DEADLINE,
    QUIET,
    QUIET_NATIVE,
    UNPROVEN_HOLD,
    ClassicProbe,
    Handshakes,
    Live,
    NativeProbe,
    decide,
    first_frame_verdict,
    plausible,
)
from simpletun.tunnel.ratelimit import LimitedLog
from simpletun.tunnel.stream import Session
from simpletun.tunnel.workers import (
    HeardBoard,
    decode_report,
    decode_worker_message,
    encode_idle,
    encode_proven,
    encode_report,
)
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
    assert not plausible(b"\x02" * 13, True)  # not even an Ethernet header


def test_plausible_real_tap_frames() -> None:
    """On tap what the device side would deliver is plausible: a real classic tap client
    sends frames that are no bare IP packet (issue 12 review)."""
    mac = b"\x02\x00\x00\x00\x00\x02"
    arp_reply = (b"\x00\x01\x08\x00\x06\x04\x00\x02" + mac + bytes(4) + mac + bytes(4))
    small = b"\xff" * 6 + mac + b"\x08\x06" + arp_reply
    tcp_ack = bytearray(ping4("10.200.0.2", "10.200.0.1", data=b""))  # a 28-byte IP packet
    padded = b"\x02" * 6 + mac + b"\x08\x00" + bytes(tcp_ack) + bytes(60 - 14 - len(tcp_ack))
    stp = (b"\x01\x80\xc2\x00\x00\x00" + mac + (38).to_bytes(2, "big") + b"\x42\x42\x03"
           + bytes(35) + bytes(60 - 52))  # 802.3 length field, LLC, a config BPDU
    lldp = b"\x01\x80\xc2\x00\x00\x0e" + mac + b"\x88\xcc" + bytes(46)
    for frame_ in (small, padded, stp, lldp):
        assert len(frame_) >= 42
        assert plausible(frame_, True), frame_.hex()
        verdict = first_frame_verdict(frame(frame_), 1518, True)
        assert verdict is not None and verdict.wire == "classic"


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


def test_decide_a_silent_seat_holds_only_until_a_proven_client_comes() -> None:
    """An idle connection seated silently (issue 12 review): a proven newcomer replaces it
    once it has held the seat UNPROVEN_HOLD seconds without delivering a packet; another
    silent one never does (before the timeout); one that delivered holds like any other."""
    idle = Live(None, "198.51.100.2:1", heard=100.0, silent=True)
    assert decide(idle, b"b" * 8, 100.0 + UNPROVEN_HOLD / 2, 40) == "refuse"
    assert decide(idle, b"b" * 8, 100.0 + UNPROVEN_HOLD, 40) == "replace"
    assert decide(idle, None, 100.0 + UNPROVEN_HOLD, 40) == "replace"  # a classic frame
    assert decide(idle, None, 100.0 + UNPROVEN_HOLD, 40, silent=True) == "refuse"
    assert decide(idle, None, 140.0, 40, silent=True) == "replace"  # past the timeout
    talking = Live(None, "192.0.2.2:1", heard=100.0, silent=True)
    talking.hear(101.0)  # it delivered a packet: a classic client like any other
    assert decide(talking, b"b" * 8, 110.0, 40) == "refuse"
    talking.hear(50.0)  # an older time changes nothing
    assert talking.heard == 101.0 and talking.since == 100.0
    proven = Live(None, "192.0.2.2:1", heard=100.0, silent=True)
    proven.prove(b"c" * 8)  # its late hello
    assert decide(proven, b"b" * 8, 110.0, 40) == "refuse"
    assert decide(proven, b"c" * 8, 110.0, 40) == "replace"


def test_busy_refusal_does_not_name_the_live_client() -> None:
    """Whoever connects hears that another client is live, not its address (issue 12
    review); the address goes to the server's log only."""
    lines: list[str] = []
    listener = socket.create_server(("127.0.0.1", 0))
    table = Handshakes(listener, HELLO, max_packet=1500, tap=False, counters=Counters(),
                       log=LimitedLog(lines.append))
    other = native.Hello(tap=False, mtu=1500, features=native.ALL_FEATURES, session=b"o" * 8)
    with listener, socket.create_connection(listener.getsockname()) as client:
        client.sendall(native.encode_hello(other))
        now = time.monotonic()
        table.handle([listener.fileno()], now)
        fd = table.fds[1]
        select.select([fd], [], [], 2)
        [ready] = table.handle([fd], now)
        table.refuse(ready, Live(b"a" * 8, "203.0.113.77:40404", heard=now))
        client.settimeout(2)
        answer = client.recv(65536)
    assert b"203.0.113.77" not in answer and b"40404" not in answer
    out = native.ClientHandshake(other).feed(answer)
    assert out is not None and out.wire == "busy" and "another client" in out.reason
    assert any("203.0.113.77:40404" in line for line in lines), lines
    table.close()


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


@pytest.mark.parametrize(("local", "quiet"), [(None, QUIET), (HELLO, QUIET_NATIVE)],
                         ids=["classic-server", "native-server"])
def test_a_silent_connection_is_offered_as_a_classic_client(local: native.Hello | None,
                                                            quiet: float) -> None:
    """The classic C client sends nothing until its device has a packet: after QUIET seconds
    of silence it is offered to the policy (which seats it only where nobody is live). A
    native server waits longer: a native client's hello leaves right after the connect."""
    table, listener = _table(local)
    with listener, socket.create_connection(listener.getsockname()) as client:
        start = time.monotonic()
        assert table.handle([listener.fileno()], start) == []  # accepted, pending
        assert table.deadline == pytest.approx(start + quiet)
        if quiet > QUIET:
            assert table.handle([], start + QUIET + 0.01) == []  # not yet
        ready = table.handle([], start + quiet + 0.01)
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


def test_a_classic_server_never_writes_a_hello_into_its_device() -> None:
    """A native client's hello on a classic server proves a client but is no packet: it
    is not among the bytes the session delivers."""
    probe = ClassicProbe(1500, False)
    out = probe.feed(native.encode_hello(HELLO) + frame(PING))
    assert out is not None and out.wire == "classic" and out.leftover == frame(PING)


def test_worker_messages_round_trip() -> None:
    assert decode_worker_message(encode_idle(3)) == ("idle", 3, None)
    assert decode_worker_message(encode_proven(4, b"s" * 8)) == ("hello", 4, b"s" * 8)
    for bad in (b"", b"idle", b"idle x", b"hello 1 zz", b"what 1", b"idle 1 2"):
        assert decode_worker_message(bad) is None


def test_heard_board_is_shared_with_a_forked_worker() -> None:
    board = HeardBoard(2)
    assert board.latest([True, True]) == 0.0
    pid = os.fork()
    if pid == 0:
        board.writer(1)(1234.5)
        os._exit(0)
    os.waitpid(pid, 0)
    assert board.latest([True, True]) == 1234.5


def test_heard_board_speaks_only_of_the_live_clients_workers() -> None:
    """A worker still holding the old client (it has not read the reset yet) must not
    make a newly seated client look heard (issue 12 review)."""
    board = HeardBoard(2)
    board.writer(0)(50.0)  # the old client's worker
    assert board.latest([False, True]) == 0.0
    board.clear()  # a new client: every slot starts again
    assert board.latest([True, True]) == 0.0


def test_workers_treat_every_stop_signal_alike() -> None:
    """SIGHUP and SIGQUIT stop a worker as Ctrl-C does and are ignored while it reports,
    like SIGINT and SIGTERM (issue 12 review)."""
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        old = workers._ignore_signals()
        assert set(old) == set(STOP_SIGNALS) == {signal.SIGINT, signal.SIGTERM,
                                                 signal.SIGHUP, signal.SIGQUIT}
        assert all(signal.getsignal(s) is workers._nothing for s in STOP_SIGNALS)
        workers._interrupt_once()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGQUIT)  # ignored now: the report is on its way
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_a_worker_gone_as_a_client_arrives_is_one_line_and_status_1() -> None:
    """The parent's hand-over to a worker whose end is gone (issue 12 review): not a
    BrokenPipeError (which the CLI takes for a closed stdout and exits 0 on)."""
    listener = socket.create_server(("127.0.0.1", 0))
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.shutdown(socket.SHUT_RD)  # it reads no more, yet its end is not closed
    pump: Any = SimpleNamespace(side=SimpleNamespace(max_packet=1500),
                                dev=SimpleNamespace(tap=False), counters=Counters(),
                                timeout=40.0, publish_every=1.0, control=None)
    lines: list[str] = []
    with listener, mine, theirs, socket.create_connection(listener.getsockname()) as client:
        client.sendall(frame(PING))  # a classic client: proven at once
        status = workers._dispatch(listener, [mine], Session(negotiate=False), pump,
                                   lines.append, HeardBoard(1))
    assert status == 1
    assert lines[-1] == "a worker process ended unexpectedly: stopping"


class _Exhausted:
    """A listener whose accept fails as it does when the process is out of descriptors."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.accepts = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def setblocking(self, _flag: bool) -> None:
        pass

    def accept(self) -> tuple[socket.socket, object]:
        self.accepts += 1
        raise OSError(errno.EMFILE, "Too many open files")


def test_a_failing_accept_rests_the_listener_instead_of_spinning() -> None:
    lines: list[str] = []
    listener = _Exhausted()
    table = Handshakes(listener, None, max_packet=1500, tap=False,  # type: ignore[arg-type]
                       counters=Counters(), log=LimitedLog(lines.append))
    with listener.sock:
        assert table.handle([listener.fileno()], 100.0) == []
        assert listener.accepts == 1
        assert listener.fileno() not in table.fds  # not watched: it would stay readable
        assert table.deadline == pytest.approx(100.0 + ACCEPT_PAUSE)
        assert len(lines) == 1 and "Too many open files" in lines[0]
        table.handle([], 100.0 + ACCEPT_PAUSE)
        assert listener.fileno() in table.fds  # watched again
