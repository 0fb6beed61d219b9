"""The tunnel over a TCP stream: the pump between the device side and one connection.

Device to network: :meth:`Pump._from_device` reads up to BATCH packets
(:meth:`DeviceSide.read_batch`), each into a slot with room in front for its frame header,
and sends them all with one ``sendmsg``. Network to device: bytes from the socket go
through the session's decoder (:mod:`wire.classic` or :mod:`wire.native`) to
:meth:`DeviceSide.deliver`, which checks every packet before it is written. Nothing from the
network reaches the device unchecked; refusals are counted by reason.

A device opened with vnet_hdr carries a 10-byte virtio_net_hdr on every packet. When both
peers agree to FEATURE_VNET, offloads are switched on and the header and whole TCP/UDP
super-packets (up to 64 KiB) travel in DATA_VNET frames, so one system call moves dozens of
packets. Otherwise offloads are off, the header is stripped on the way out and a zero
header put back on the way in (what a classic peer, or an old one, needs).

:func:`serve` (server) and :func:`run_client` (client) wrap the pump in the connection life
cycle: handshake, accept/replace/forget clients, connect/reconnect with backoff.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..device.side import BATCH, Counters, DeviceSide, Log
from ..device.tuntap import READ_SIZE, Device
from ..device.vnet import VNET_HDR_LEN
from ..errors import HandshakeFailed
from ..transport import tcp
from ..wire import classic, native
from . import admission
from .backoff import Backoff
from .liveness import DEAD, KEEPALIVE, Liveness
from .ratelimit import LimitedLog

KEEPALIVE_INTERVAL = 10.0
DEAD_PEER_TIMEOUT = 40.0
RECV_SIZE = 256 * 1024
HEAD_ROOM = native.HEADER_LEN  # the largest frame header
#: how long a client waits for the server's answer to its hello on a fresh connection
#: before it takes the server for a classic one (which never answers)
HANDSHAKE_TIMEOUT = 5.0
#: how long a native server sends nothing to a silently seated connection before its first
#: frame: past a late native client's own hello deadline (HANDSHAKE_TIMEOUT from its
#: connect, which was admission.QUIET_NATIVE before the seat), so that a classic frame can
#: never make it conclude that the server is classic
SILENT_HOLD = HANDSHAKE_TIMEOUT - admission.QUIET_NATIVE + 1.0


@dataclass(frozen=True)
class Wire:
    """How one session frames packets."""

    native: bool
    vnet: bool = False  # DATA_VNET frames, offloads on
    keepalive: bool = False  # both send KEEPALIVE frames when idle and watch for silence

    def describe(self) -> str:
        if not self.native:
            return "classic wire"
        return "native wire, offloads on" if self.vnet else "native wire"


CLASSIC = Wire(native=False)


@dataclass
class Ended:
    reason: str
    error: bool = False  # the peer misbehaved (as opposed to leaving)
    wake: socket.socket | None = None  # an extra socket that became readable
    successor: admission.Ready | None = None  # a client that takes over
    #: a silently seated client sent its hello late: the native session to go on with on
    #: the same connection, once the caller has sent ``switch.reply`` (nothing was sent to
    #: it yet)
    switch: native.Outcome | None = None


class Sidecar(Protocol):
    """What a caller's loop drives inside :meth:`Pump.run` (e.g. handshakes): file
    descriptors to watch and a deadline (monotonic; inf: none). ``handle`` gets those
    readable (or none, when the deadline passed) and may end the pump."""

    @property
    def fds(self) -> list[int]: ...

    @property
    def deadline(self) -> float: ...

    def handle(self, readable: list[int], now: float) -> Ended | None: ...


class Control(Protocol):
    """A control socket the tunnel's loop serves (:class:`control.uapi_socket.UapiServer`):
    its fds are watched beside the tunnel's, never a thread."""

    def fds(self) -> list[int]: ...

    def ready(self, fd: int) -> None: ...

    def tick(self, now: float) -> None: ...


#: how often a loop wakes to close idle control connections while any is open
CONTROL_TICK = 1.0
#: how often at most a pump reports its counters (:attr:`Pump.report`)
REPORT_EVERY = 1.0


class Pump:
    """Moves packets between one device (its :class:`DeviceSide`) and one connected TCP
    socket."""

    def __init__(self, side: DeviceSide, *, log: Log,
                 keepalive: float | None = KEEPALIVE_INTERVAL,
                 timeout: float | None = DEAD_PEER_TIMEOUT) -> None:
        self.side = side
        self.dev = side.dev
        self.counters = side.counters
        self.log = log
        #: seconds between keepalives when idle, and of silence before the peer is dead
        #: (sessions that agreed on FEATURE_KEEPALIVE; None: off)
        self.keepalive, self.timeout = keepalive, timeout
        self._slots = [bytearray(HEAD_ROOM + READ_SIZE) for _ in range(BATCH)]
        self._views = [memoryview(s) for s in self._slots]
        # where the vnet_hdr goes when it does not travel along (offloads off)
        self._vhs = [bytearray(VNET_HDR_LEN) for _ in range(BATCH)]
        self._rbuf = bytearray(RECV_SIZE)
        self._rview = memoryview(self._rbuf)
        #: when the peer of the current (or last) connection was last heard (monotonic; 0:
        #: not yet): a packet delivered to the device or a keepalive, never an empty frame,
        #: junk or any readable byte
        self.heard = 0.0
        self._first_frame_seen = True  # see _first_frame_watch
        #: keepalive frames received (with ``counters.to_dev``: what counts as heard)
        self.keepalives = 0
        #: called with :attr:`heard` when it changes, at most every :attr:`publish_every`
        #: seconds (a worker tells its parent this way)
        self.publish: Callable[[float], None] | None = None
        self.publish_every = min(1.0, (timeout or DEAD_PEER_TIMEOUT) / 4)
        #: the control socket served from this pump's loop (and the server's, between
        #: clients); None: none
        self.control: Control | None = None
        #: who the pump is connected to now: (peer, wire, since: UNIX time); None between
        #: connections (what the control socket's stats=1 says)
        self.connection: tuple[str, Wire, float] | None = None
        #: called with :attr:`counters` at most every :data:`REPORT_EVERY` seconds while
        #: the pump runs, and when a run ends (a worker tells its parent this way)
        self.report: Callable[[Counters], None] | None = None
        #: in a workers' parent: its workers' counters, summed (what its control socket
        #: adds to its own)
        self.shared: Callable[[], Counters] | None = None

    # --- the loop -------------------------------------------------------------------
    def run(self, sock: socket.socket, peer: str, wire: Wire = CLASSIC, leftover: bytes = b"",
            extra: tuple[socket.socket, ...] = (), sidecar: Sidecar | None = None, *,
            silent: bool = False, local: native.Hello | None = None) -> Ended:
        """See :meth:`_run`; :attr:`connection` says who the pump serves meanwhile."""
        self.connection = (peer, wire, time.time())
        try:
            return self._run(sock, peer, wire, leftover, extra, sidecar, silent=silent,
                             local=local)
        finally:
            self.connection = None
            if self.report is not None:
                self.report(self.counters)

    def _run(self, sock: socket.socket, peer: str, wire: Wire, leftover: bytes,
             extra: tuple[socket.socket, ...], sidecar: Sidecar | None, *,
             silent: bool, local: native.Hello | None) -> Ended:
        """Pump until the peer leaves, misbehaves, one of ``extra`` is readable, or
        ``sidecar`` (what else the caller's loop drives meanwhile, e.g. handshakes) ends
        it. :attr:`heard` is when the peer was last heard. ``silent``: the connection was
        seated before it said a word, so its first frame may still be a native hello: it
        never reaches the device; with ``local`` (a native server's hello) it ends the run
        with :attr:`Ended.switch` if nothing was sent to the peer yet, else the connection
        is closed so that the client connects again."""
        self.side.set_offloads(wire.vnet)
        sock.setblocking(False)
        self.dev.set_blocking(False)
        counters = self.counters
        deliver = self._native_receiver(wire) if wire.native else self._classic_receiver()
        hold_until = 0.0
        if silent and not wire.native:
            deliver = self._first_frame_watch(deliver, sock, local)
            if local is not None:
                hold_until = time.monotonic() + SILENT_HOLD
        self.heard = 0.0
        publish, every = self.publish, self.publish_every
        published = -every
        heard_mark = counters.to_dev + self.keepalives  # changes when the peer is heard
        if leftover:
            ended = deliver(leftover, peer)
            if ended is not None:
                return ended
        dev_fd, sock_fd = self.dev.fileno(), sock.fileno()
        extra_fds = {s.fileno(): s for s in extra}
        pending = b""  # bytes accepted from the device but not yet taken by the socket
        live = (Liveness(time.monotonic(), interval=self.keepalive, timeout=self.timeout)
                if wire.keepalive else None)
        wait: float | None = None
        side_fds: list[int] = []
        control = self.control
        ctl_fds: list[int] = []
        report = self.report
        now = time.monotonic()
        reported, reported_mark = now, -1
        while True:
            if report is not None and now - reported >= REPORT_EVERY:
                reported, reported_mark = now, counters.to_net + counters.to_dev
                report(counters)
            # the peer was heard (one comparison per wake-up, no clock read per packet)
            if counters.to_dev + self.keepalives != heard_mark:
                heard_mark = counters.to_dev + self.keepalives
                self.heard = now
                if publish is not None and now - published >= every:
                    published = now
                    publish(now)
            if live is not None:
                due = live.due(now)
                if due == DEAD:
                    return Ended(f"nothing heard from the peer for {live.silence(now):.0f} s "
                                 "(dead-peer timeout)")
                if due == KEEPALIVE:  # sent as soon as the socket takes it
                    pending += _KEEPALIVE_FRAME
                    live.sent(now)
                wait = live.wait(now)
            if sidecar is not None:
                side_fds = sidecar.fds
                if sidecar.deadline != _NEVER:
                    side_wait = max(0.0, sidecar.deadline - now)
                    wait = side_wait if wait is None else min(wait, side_wait)
            if hold_until:  # a silent seat on a native server: nothing to it yet
                if now < hold_until and not self._first_frame_seen:
                    wait = hold_until - now if wait is None else min(wait, hold_until - now)
                else:
                    hold_until = 0.0
            if report is not None and counters.to_net + counters.to_dev != reported_mark:
                # moved since the last report: wake in time for the next one
                wait = REPORT_EVERY if wait is None else min(wait, REPORT_EVERY)
            if control is not None:
                ctl_fds = control.fds()
                if len(ctl_fds) > 1:  # connections open: wake to close idle ones
                    control.tick(now)
                    wait = CONTROL_TICK if wait is None else min(wait, CONTROL_TICK)
            # while the socket is backed up (or the seat is held), leave packets in the
            # device queue (backpressure)
            rlist = [sock_fd, *extra_fds, *side_fds, *ctl_fds] if pending or hold_until else \
                [sock_fd, dev_fd, *extra_fds, *side_fds, *ctl_fds]
            readable, writable, _ = select.select(rlist, [sock_fd] if pending else [], [],
                                                  wait)
            now = time.monotonic()  # one clock read per wake-up, not per packet
            wait = None
            if live is not None:
                if sock_fd in readable:  # any bytes: the peer is alive (whether or not
                    live.received(now)   # the device took what it sent)
                if dev_fd in readable or writable:
                    live.sent(now)
            if writable:
                try:
                    sent = sock.send(pending)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    return Ended(_reason(exc))
                pending = pending[sent:]
            woken: list[int] = []
            for fd in readable:
                if fd == sock_fd:
                    try:
                        n = sock.recv_into(self._rbuf)
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        return Ended(_reason(exc))
                    if n == 0:
                        return Ended("closed by the peer")
                    ended = deliver(self._rview[:n], peer)
                    if ended is not None:
                        return ended
                elif fd == dev_fd:
                    left = self._from_device(sock, wire)
                    if left is None:
                        return Ended("connection lost while sending")
                    pending = left
                elif fd in extra_fds:
                    return Ended("another socket is ready", wake=extra_fds[fd])
                elif control is not None and fd in ctl_fds:
                    control.ready(fd)
                else:
                    woken.append(fd)
            if sidecar is not None and (woken or now >= sidecar.deadline):
                if counters.to_dev + self.keepalives != heard_mark:
                    self.heard = now  # what the sidecar's policy reads
                ended = sidecar.handle(woken, now)
                if ended is not None:
                    return ended

    def _first_frame_watch(self, deliver: Callable[[bytes | memoryview, str], Ended | None],
                           sock: socket.socket, local: native.Hello | None,
                           ) -> Callable[[bytes | memoryview, str], Ended | None]:
        """``deliver`` (classic), except for the first frame: a native hello there (sent
        late by a native client seated as a silent classic one) is no packet for the
        device."""
        buf = bytearray()
        watching = True
        self._first_frame_seen = False
        limit = admission.first_frame_limit(self.side.max_packet)
        sent_before = self.counters.to_net

        def watch(data: bytes | memoryview, peer: str) -> Ended | None:
            nonlocal watching
            if not watching:
                return deliver(data, peer)
            buf.extend(data)
            if len(buf) < 2:
                return None
            length = (buf[0] << 8) | buf[1]
            whole = 0 < length <= limit
            if whole and len(buf) < 2 + length:
                return None  # the first frame is not whole yet
            watching = False
            self._first_frame_seen = True
            if not (whole and native.is_handshake(memoryview(buf)[2:2 + length])):
                return deliver(bytes(buf), peer)
            if local is None:  # a classic server: it never answers hellos
                self.counters.drops["handshake"] += 1
                rest = bytes(buf[2 + length:])
                return deliver(rest, peer) if rest else None
            outcome = native.ServerHandshake(local).feed(bytes(buf))
            if outcome is not None and outcome.wire == "native":
                if self.counters.to_net != sent_before:
                    return Ended(f"{peer} sent its hello late, after packets went to it on "
                                 "the classic wire: closing, so that it connects again",
                                 error=True)
                return Ended(f"{peer} sent its hello late", switch=outcome)
            if outcome is not None:
                admission.send_quietly(sock, outcome.reply)  # a mismatch: it says why
            return Ended(f"refused client {peer}: "
                         f"{outcome.reason if outcome is not None else 'a bad hello'}",
                         error=True)

        return watch

    # --- network -> device ------------------------------------------------------------
    def _classic_receiver(self) -> Callable[[bytes | memoryview, str], Ended | None]:
        side = self.side
        decoder = classic.Decoder(side.max_packet)
        counters, name = self.counters, self.dev.name

        def deliver(data: bytes | memoryview, peer: str) -> Ended | None:
            for packet in decoder.feed(data):
                side.deliver(packet, False)
            if decoder.empty:
                counters.drops["empty"] += decoder.empty
                decoder.empty = 0
            if decoder.error is not None:
                counters.drops["oversized"] += 1
                return Ended(f"{peer} sent a {decoder.error}: refusing it and closing the "
                             f"connection (is the peer's MTU larger than {name}'s?)", error=True)
            return None

        return deliver

    def _native_receiver(self, wire: Wire) -> Callable[[bytes | memoryview, str], Ended | None]:
        decoder = native.Decoder(native.MAX_PAYLOAD)
        side, counters = self.side, self.counters

        def deliver(data: bytes | memoryview, peer: str) -> Ended | None:
            # payloads are views into the receive buffer: used here, before the next recv
            for kind, payload in decoder.feed_views(data):
                if kind == native.DATA:
                    if len(payload) > side.max_packet:
                        counters.drops["oversized"] += 1
                    else:
                        side.deliver(payload, False)
                elif kind == native.DATA_VNET and wire.vnet:
                    side.deliver(payload, True)
                elif kind == native.KEEPALIVE:
                    self.keepalives += 1
                elif kind == native.CLOSE:
                    return Ended(f"the peer closed: {bytes(payload).decode(errors='replace')}")
                else:
                    counters.drops["unexpected-frame"] += 1
            if decoder.error is not None:
                counters.drops["bad-frame"] += 1
                return Ended(f"{peer} sent a bad {decoder.error}: closing the connection",
                             error=True)
            return None

        return deliver

    # --- device -> network ------------------------------------------------------------
    def _from_device(self, sock: socket.socket, wire: Wire) -> bytes | None:
        """Drain up to BATCH packets and send them framed with one sendmsg; returns what the
        socket did not take (b"" normally), or None if the connection failed."""
        hlen = native.HEADER_LEN if wire.native else classic.HEADER_LEN
        # the vnet_hdr travels in line with offloads on; otherwise it is read aside
        count = self.side.read_batch(self._views, HEAD_ROOM,
                                     None if wire.vnet else self._vhs, framing=hlen)
        if not count:
            return b""
        native_kind = native.DATA_VNET if wire.vnet else native.DATA
        h = HEAD_ROOM - hlen
        frames: list[memoryview] = []
        total = 0
        for view, size in zip(self._views[:count], self.side.sizes, strict=False):
            if wire.native:
                view[h] = native_kind
                view[h + 1] = size >> 16
                view[h + 2] = (size >> 8) & 0xFF
                view[h + 3] = size & 0xFF
            else:
                view[h] = size >> 8
                view[h + 1] = size & 0xFF
            frames.append(view[h:HEAD_ROOM + size])
            total += hlen + size
        try:
            sent = sock.sendmsg(frames)
        except BlockingIOError:
            sent = 0
        except OSError:
            return None
        if sent == total:
            return b""
        return b"".join(frames)[sent:]


_KEEPALIVE_FRAME = native.encode_frame(native.KEEPALIVE)
_NEVER = float("inf")


def _reason(exc: OSError) -> str:
    return {
        errno.ECONNRESET: "connection reset by the peer",
        errno.ETIMEDOUT: "the peer stopped answering (timed out)",
        errno.EPIPE: "the peer closed the connection",
        errno.EHOSTUNREACH: "the peer's host became unreachable",
    }.get(exc.errno or 0, exc.strerror or str(exc))


def _handshake(sock: socket.socket, machine: native.ClientHandshake,
               timeout: float) -> native.Outcome | None:
    """Run the client's handshake over ``sock`` until it decides; None after ``timeout``
    seconds of waiting for the server's answer."""
    sock.setblocking(True)
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            break
        try:
            data = sock.recv(65536)
        except OSError as exc:
            raise tcp.PeerGone(f"connection lost during the handshake: {_reason(exc)}") from None
        if not data:
            raise tcp.PeerGone("the peer closed the connection during the handshake")
        outcome = machine.feed(data)
        if outcome is not None:
            return outcome
    return None


@dataclass
class Session:
    """What this side announces in the handshake."""

    negotiate: bool = True  # False: classic wire only, no handshake (--classic)
    features: int = native.ALL_FEATURES
    session_id: bytes = field(default_factory=lambda: os.urandom(8))
    timeout: float = HANDSHAKE_TIMEOUT
    queue: int = 0  # which of this side's queues (workers) the connection serves
    queues: int = 1

    def hello(self, side: DeviceSide) -> native.Hello:
        features = self.features if side.offloads else self.features & ~native.FEATURE_VNET
        return native.Hello(tap=side.dev.tap, mtu=side.mtu, features=features,
                            session=self.session_id, queue=self.queue, queues=self.queues)


def wire_of(outcome: native.Outcome) -> Wire:
    if outcome.wire != "native" or outcome.hello is None:
        return CLASSIC
    features = outcome.hello.features
    return Wire(native=True, vnet=bool(features & native.FEATURE_VNET),
                keepalive=bool(features & native.FEATURE_KEEPALIVE))


class Gate:
    """The server's handshakes (:class:`admission.Handshakes`) and who may take over from
    the live client (:func:`admission.decide`): the sidecar of the pump, and what the
    server's loop watches while no client is live."""

    def __init__(self, listener: socket.socket, local: native.Hello | None, pump: Pump,
                 log: LimitedLog) -> None:
        self.pump = pump
        self.table = admission.Handshakes(listener, local, max_packet=pump.side.max_packet,
                                          tap=pump.dev.tap, counters=pump.counters, log=log)
        self.live: admission.Live | None = None
        #: silence after which a live client may be replaced
        self.timeout = pump.timeout or DEAD_PEER_TIMEOUT

    @property
    def fds(self) -> list[int]:
        return self.table.fds

    @property
    def deadline(self) -> float:
        return self.table.deadline

    def next_client(self, readable: list[int], now: float) -> admission.Ready | None:
        """Shake hands on; the connection that takes over, if any (the others refused)."""
        winner: admission.Ready | None = None
        for ready in self.table.handle(readable, now):
            live = self.live
            if live is not None:
                live.hear(self.pump.heard)
            if admission.decide(live, ready.session, now, self.timeout,
                                silent=ready.silent) == "refuse":
                assert live is not None
                self.table.refuse(ready, live)
                continue
            if winner is not None:
                winner.sock.close()
            winner = ready
            self.live = admission.Live(ready.session, ready.peer, now, silent=ready.silent)
        return winner

    def handle(self, readable: list[int], now: float) -> Ended | None:
        successor = self.next_client(readable, now)
        if successor is None:
            return None
        return Ended(f"replaced by client {successor.peer}", successor=successor)


def server_logs(log: Log) -> tuple[LimitedLog, Log]:
    """The two logs of a server: network-caused lines rate-limited per kind, and client
    sessions (connected/disconnected), limited more loosely."""
    sessions = LimitedLog(log, burst=20, interval=10.0)
    return LimitedLog(log), lambda line: sessions("session", line)


def serve(dev: Device, listener: socket.socket, pump: Pump, *, once: bool = False,
          session: Session | None = None) -> None:
    """Serve one client at a time forever (or, with ``once``, the first one only). New
    connections shake hands beside the live client's pump; one takes over only if it is
    the live client's reconnect or the live client has gone silent (see admission)."""
    session = session or Session()
    counters = pump.counters
    limited, log = server_logs(pump.log)
    local = session.hello(pump.side) if session.negotiate else None
    gate = Gate(listener, local, pump, limited)
    dev_fd = dev.fileno()
    ready: admission.Ready | None = None
    try:
        while True:
            if ready is None:
                gate.live = None
                now = time.monotonic()
                wait = gate.table.wait(now)
                ctl_fds = control_fds(pump.control, now)
                if len(ctl_fds) > 1:
                    wait = CONTROL_TICK if wait is None else min(wait, CONTROL_TICK)
                readable, _, _ = select.select([dev_fd, *gate.fds, *ctl_fds], [], [], wait)
                if dev_fd in readable:
                    pump.side.discard()
                ready = gate.next_client(
                    [fd for fd in readable if fd != dev_fd and not
                     control_ready(pump.control, fd, ctl_fds)], time.monotonic())
                if ready is None:
                    continue
            conn = gate.table.admit(ready)
            peer, outcome = ready.peer, ready.outcome
            wire = wire_of(outcome)
            log(f"client {peer} connected ({wire.describe()})")
            before = counters.snapshot()
            with conn:
                ended = pump.run(conn, peer, wire, outcome.leftover, sidecar=gate,
                                 silent=ready.silent, local=local)
                if ended.switch is not None and gate.live is not None:
                    late = ended.switch
                    assert late.hello is not None
                    gate.live.prove(late.hello.session)
                    admission.send_quietly(conn, late.reply)
                    wire = wire_of(late)
                    log(f"client {peer} sent its hello late: now on the {wire.describe()}")
                    ended = pump.run(conn, peer, wire, late.leftover, sidecar=gate)
            log(f"client {peer} disconnected: {ended.reason} "
                f"({counters.since(before).summary()})")
            ready = ended.successor
            if ready is None and once:
                return
    finally:
        gate.table.close()


def connect(host: str, port: int, local: native.Hello | None, *, connect_timeout: float,
            handshake_timeout: float, fallback: bool = True,
            ) -> tuple[socket.socket, native.Outcome]:
    """Connect and shake hands (``local`` None: classic only); TransportError on failure
    (ServerBusy when the server serves another client), HandshakeFailed if the server
    refuses. The classic wire is taken only on classic frames from the server, or, with
    ``fallback``, when it leaves the hello unanswered for ``handshake_timeout`` seconds
    (without: a TransportError, to retry)."""
    sock = tcp.connect(host, port, timeout=connect_timeout)
    outcome: native.Outcome | None = native.Outcome("classic")
    server = tcp.show((host, port))
    try:
        if local is not None:
            machine = native.ClientHandshake(local)
            sock.sendall(machine.start())
            outcome = _handshake(sock, machine, handshake_timeout)
            if outcome is None and fallback:
                outcome = machine.timed_out()
    except OSError as exc:
        sock.close()
        raise tcp.PeerGone(f"connection lost during the handshake: {_reason(exc)}") from None
    except BaseException:
        sock.close()
        raise
    if outcome is None:
        sock.close()
        raise tcp.PeerGone(f"server {server} did not answer the hello within "
                           f"{handshake_timeout:g} s")
    if outcome.wire == "busy":
        sock.close()
        raise tcp.ServerBusy(f"server {server} is busy: {outcome.reason}")
    if outcome.wire == "refused":
        sock.close()
        raise HandshakeFailed(f"server {server} refused: {outcome.reason}")
    return sock, outcome


def queues_agreed(outcome: native.Outcome) -> int:
    """How many queues (connections) a session uses: one on the classic wire."""
    return outcome.hello.queues if outcome.hello is not None else 1


def run_client(dev: Device, host: str, port: int, pump: Pump, *, reconnect: bool,
               backoff: Backoff | None = None, connect_timeout: float = 10.0,
               session: Session | None = None,
               first: tuple[socket.socket, native.Outcome] | None = None) -> None:
    """Connect, shake hands and pump; when the server goes away, exit with PeerGone, or with
    ``reconnect`` try again after a backoff (draining the device meanwhile). ``first``: a
    connection already made. A worker whose queue the server does not serve returns."""
    session = session or Session()
    log = pump.log
    backoff = backoff or Backoff()
    server = tcp.show((host, port))
    local = session.hello(pump.side) if session.negotiate else None
    where = f" on queue {session.queue}" if session.queues > 1 else ""
    # a server that spoke the native wire once is never taken for a classic one when it
    # is slow to answer later (a worker's queue past 0 exists only on the native wire)
    native_seen = session.queue > 0
    while True:
        if first is not None:
            (sock, outcome), first = first, None
        else:
            try:
                sock, outcome = connect(host, port, local, connect_timeout=connect_timeout,
                                        handshake_timeout=session.timeout,
                                        fallback=not native_seen)
            except tcp.TransportError as exc:
                if not reconnect:
                    raise
                delay = backoff.next()
                log(f"{exc}; retrying in {delay:.1f} s")
                _pause(pump.side, delay, pump.control)
                continue
        if session.queue >= queues_agreed(outcome):
            sock.close()
            log(f"queue {session.queue} stays idle: the server serves {queues_agreed(outcome)}")
            return
        backoff.reset()
        wire = wire_of(outcome)
        native_seen = native_seen or wire.native
        log(f"connected to {server} ({wire.describe()}){where}")
        set_queue_attached(dev, True)
        with sock:
            ended = pump.run(sock, server, wire, outcome.leftover)
        if not reconnect:
            raise tcp.PeerGone(f"server {server} went away: {ended.reason}; use --reconnect "
                               "to keep trying")
        delay = backoff.next()
        log(f"disconnected from {server}{where}: {ended.reason}; reconnecting in "
            f"{delay:.1f} s")
        _pause(pump.side, delay, pump.control)


def set_queue_attached(dev: Device, on: bool) -> None:
    """On a worker's multi-queue device: let the kernel steer flows to this queue, or (while
    it has no connection) stop it, so that they go to queues that can carry them."""
    if dev.multi_queue:
        with contextlib.suppress(OSError):  # EINVAL: already in that state
            dev.queues[0].attach() if on else dev.queues[0].detach()


def control_fds(control: Control | None, now: float) -> list[int]:
    """For a loop other than the pump's: the control socket's fds to watch (idle
    connections closed first)."""
    if control is None:
        return []
    control.tick(now)
    return control.fds()


def control_ready(control: Control | None, fd: int, fds: list[int]) -> bool:
    """Serve ``fd`` (readable) if it is one of the control socket's ``fds``; say whether
    it was."""
    if control is None or fd not in fds:
        return False
    control.ready(fd)
    return True


def wait_serving(side: DeviceSide, seconds: float, control: Control | None, *,
                 discard: bool = True) -> None:
    """Sleep ``seconds`` serving the control socket; with ``discard`` the device is
    drained meanwhile (a detached queue cannot be polled: then not)."""
    deadline = time.monotonic() + seconds
    dev_fd = side.dev.fileno()
    while (left := deadline - time.monotonic()) > 0:
        ctl = control_fds(control, time.monotonic())
        fds = [*ctl, dev_fd] if discard else ctl
        if len(ctl) > 1:
            left = min(left, CONTROL_TICK)
        if not fds:
            time.sleep(left)
            continue
        for fd in select.select(fds, [], [], left)[0]:
            if fd == dev_fd:
                side.discard()
            else:
                control_ready(control, fd, ctl)


def _pause(side: DeviceSide, seconds: float, control: Control | None = None) -> None:
    """Wait between connections: a worker's queue is detached meanwhile (a detached queue
    cannot be polled); a lone device is drained. The control socket is served."""
    if side.dev.multi_queue:
        side.discard()
        set_queue_attached(side.dev, False)
        wait_serving(side, seconds, control, discard=False)
    else:
        wait_serving(side, seconds, control)
