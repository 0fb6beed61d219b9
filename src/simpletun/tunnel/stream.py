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

from ..device.side import BATCH, DeviceSide, Log
from ..device.tuntap import READ_SIZE, Device
from ..errors import HandshakeFailed
from ..transport import tcp
from ..wire import classic, native
from .backoff import Backoff
from .liveness import DEAD, KEEPALIVE, Liveness

KEEPALIVE_INTERVAL = 10.0
DEAD_PEER_TIMEOUT = 40.0
RECV_SIZE = 256 * 1024
HEAD_ROOM = native.HEADER_LEN  # the largest frame header
HANDSHAKE_TIMEOUT = 1.0


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
        self._vhs = [bytearray(10) for _ in range(BATCH)]
        self._rbuf = bytearray(RECV_SIZE)
        self._rview = memoryview(self._rbuf)

    # --- the loop -------------------------------------------------------------------
    def run(self, sock: socket.socket, peer: str, wire: Wire = CLASSIC, leftover: bytes = b"",
            extra: tuple[socket.socket, ...] = ()) -> Ended:
        """Pump until the peer leaves, misbehaves, or one of ``extra`` is readable."""
        self.side.set_offloads(wire.vnet)
        sock.setblocking(False)
        self.dev.set_blocking(False)
        deliver = self._native_receiver(wire) if wire.native else self._classic_receiver()
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
        while True:
            # while the socket is backed up, leave packets in the device queue (backpressure)
            rlist = [sock_fd, *extra_fds] if pending else [sock_fd, dev_fd, *extra_fds]
            readable, writable, _ = select.select(rlist, [sock_fd] if pending else [], [],
                                                  wait)
            if live is not None:  # one clock read per wake-up, not per packet
                now = time.monotonic()
                if sock_fd in readable:
                    live.received(now)
                if dev_fd in readable or writable:
                    live.sent(now)
                due = live.due(now)
                if due == DEAD:
                    return Ended(f"nothing heard from the peer for {live.silence(now):.0f} s "
                                 "(dead-peer timeout)")
                if due == KEEPALIVE:
                    pending += _KEEPALIVE_FRAME
                    writable = [sock_fd]
                    live.sent(now)
                wait = live.wait(now)
            if writable:
                try:
                    sent = sock.send(pending)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    return Ended(_reason(exc))
                pending = pending[sent:]
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
                else:
                    return Ended("another socket is ready", wake=extra_fds[fd])

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
                elif kind == native.CLOSE:
                    return Ended(f"the peer closed: {bytes(payload).decode(errors='replace')}")
                elif kind != native.KEEPALIVE:
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


def _reason(exc: OSError) -> str:
    return {
        errno.ECONNRESET: "connection reset by the peer",
        errno.ETIMEDOUT: "the peer stopped answering (timed out)",
        errno.EPIPE: "the peer closed the connection",
        errno.EHOSTUNREACH: "the peer's host became unreachable",
    }.get(exc.errno or 0, exc.strerror or str(exc))


def _handshake(sock: socket.socket, machine: native.ClientHandshake | native.ServerHandshake,
               timeout: float) -> native.Outcome:
    """Run a handshake state machine over ``sock`` until it decides or ``timeout``."""
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
    return machine.timed_out()


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


def accept_client(conn: socket.socket, peer: str, local: native.Hello | None,
                  timeout: float, log: Log) -> native.Outcome | None:
    """Tune a new connection and shake hands (``local`` None: classic only). The outcome, or
    None when the client was refused or left (logged, connection closed)."""
    tcp.tune(conn)
    if local is None:
        return native.Outcome("classic")
    try:
        outcome = _handshake(conn, native.ServerHandshake(local), timeout)
        if outcome.reply:
            conn.sendall(outcome.reply)
    except (tcp.PeerGone, OSError) as exc:
        log(f"client {peer} left during the handshake: {exc}")
        conn.close()
        return None
    if outcome.wire == "refused":
        log(f"refused client {peer}: {outcome.reason}")
        conn.close()
        return None
    return outcome


def serve(dev: Device, listener: socket.socket, pump: Pump, *, once: bool = False,
          session: Session | None = None) -> None:
    """Serve one client at a time forever (or, with ``once``, the first one only). A new
    client replaces the current one: a client that reconnects wins over its stale self."""
    session = session or Session()
    log, counters = pump.log, pump.counters
    local = session.hello(pump.side) if session.negotiate else None
    dev_fd, listen_fd = dev.fileno(), listener.fileno()
    conn: socket.socket | None = None
    addr: tuple[str, int] = ("", 0)
    while True:
        if conn is None:
            readable, _, _ = select.select([listen_fd, dev_fd], [], [])
            if dev_fd in readable:
                pump.side.discard()
            if listen_fd not in readable:
                continue
            conn, addr = listener.accept()
        peer = tcp.show(addr)
        outcome = accept_client(conn, peer, local, session.timeout, log)
        if outcome is None:
            conn = None
            continue
        wire = wire_of(outcome)
        log(f"client {peer} connected ({wire.describe()})")
        before = counters.snapshot()
        ended = pump.run(conn, peer, wire, outcome.leftover, extra=(listener,))
        if ended.wake is listener:
            new, new_addr = listener.accept()
            log(f"client {peer} disconnected: replaced by client {tcp.show(new_addr)} "
                f"({counters.since(before).summary()})")
            conn.close()
            conn, addr = new, new_addr
            continue
        conn.close()
        conn = None
        log(f"client {peer} disconnected: {ended.reason} ({counters.since(before).summary()})")
        if once:
            return


def connect(host: str, port: int, local: native.Hello | None, *, connect_timeout: float,
            handshake_timeout: float) -> tuple[socket.socket, native.Outcome]:
    """Connect and shake hands (``local`` None: classic only); TransportError on failure,
    HandshakeFailed if the server refuses."""
    sock = tcp.connect(host, port, timeout=connect_timeout)
    outcome = native.Outcome("classic")
    try:
        if local is not None:
            machine = native.ClientHandshake(local)
            sock.sendall(machine.start())
            outcome = _handshake(sock, machine, handshake_timeout)
    except OSError as exc:
        sock.close()
        raise tcp.PeerGone(f"connection lost during the handshake: {_reason(exc)}") from None
    except BaseException:
        sock.close()
        raise
    if outcome.wire == "refused":
        sock.close()
        raise HandshakeFailed(f"server {tcp.show((host, port))} refused: {outcome.reason}")
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
    while True:
        if first is not None:
            (sock, outcome), first = first, None
        else:
            try:
                sock, outcome = connect(host, port, local, connect_timeout=connect_timeout,
                                        handshake_timeout=session.timeout)
            except tcp.TransportError as exc:
                if not reconnect:
                    raise
                delay = backoff.next()
                log(f"{exc}; retrying in {delay:.1f} s")
                _pause(pump.side, delay)
                continue
        if session.queue >= queues_agreed(outcome):
            sock.close()
            log(f"queue {session.queue} stays idle: the server serves {queues_agreed(outcome)}")
            return
        backoff.reset()
        wire = wire_of(outcome)
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
        _pause(pump.side, delay)


def set_queue_attached(dev: Device, on: bool) -> None:
    """On a worker's multi-queue device: let the kernel steer flows to this queue, or (while
    it has no connection) stop it, so that they go to queues that can carry them."""
    if dev.multi_queue:
        with contextlib.suppress(OSError):  # EINVAL: already in that state
            dev.queues[0].attach() if on else dev.queues[0].detach()


def _pause(side: DeviceSide, seconds: float) -> None:
    """Wait between connections: a worker's queue is detached meanwhile (a detached queue
    cannot be polled); a lone device is drained."""
    if side.dev.multi_queue:
        side.discard()
        set_queue_attached(side.dev, False)
        time.sleep(seconds)
    else:
        side.wait_discarding(seconds)
