"""The tunnel: the only code that touches both the device and the network.

A packet read from the device (:meth:`Device.read_into`) is framed by :mod:`wire.classic`
and leaves through one ``sendmsg`` per batch; bytes received from the socket go through
:class:`wire.classic.Decoder` and :func:`packets.check.check` before one
:meth:`Device.write` per packet. Nothing from the network reaches the device unchecked;
what is refused is counted in ``Counters.drops`` by reason.

:func:`serve` (server) and :func:`run_client` (client) wrap the :class:`Pump` in the
connection life cycle: accept/replace/forget clients, connect/reconnect with backoff.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .backoff import Backoff
from .errors import PacketRejected
from .packets.check import check
from .transport import tcp
from .tuntap import READ_SIZE, Device
from .wire.classic import HEADER_LEN, Decoder

BATCH = 32  # packets read from the device per sendmsg at most
RECV_SIZE = 256 * 1024

Log = Callable[[str], None]


@dataclass
class Counters:
    to_net: int = 0  # packets device -> network
    to_dev: int = 0  # packets network -> device
    bytes_to_net: int = 0
    bytes_to_dev: int = 0
    drops: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        drops = ", ".join(f"{n} {k}" for k, n in sorted(self.drops.items()))
        return (f"{self.to_net} packets sent, {self.to_dev} received"
                + (f", dropped {drops}" if drops else ""))


@dataclass
class Ended:
    reason: str
    error: bool = False  # the peer misbehaved (as opposed to leaving)
    wake: socket.socket | None = None  # an extra socket that became readable


class Pump:
    """Moves packets between one device and one connected TCP socket, classic framing."""

    def __init__(self, dev: Device, *, max_packet: int, counters: Counters, log: Log,
                 debug: Log | None = None) -> None:
        self.dev = dev
        self.max_packet = max_packet
        self.counters = counters
        self.log = log
        self.debug = debug
        self._slots = [bytearray(HEADER_LEN + READ_SIZE) for _ in range(BATCH)]
        self._views = [memoryview(s) for s in self._slots]
        self._rbuf = bytearray(RECV_SIZE)
        self._rview = memoryview(self._rbuf)

    def run(self, sock: socket.socket, peer: str,
            extra: tuple[socket.socket, ...] = ()) -> Ended:
        """Pump until the peer leaves, misbehaves, or one of ``extra`` is readable."""
        dev, counters, debug = self.dev, self.counters, self.debug
        tap = dev.tap
        decoder = Decoder(self.max_packet)
        sock.setblocking(False)
        dev.set_blocking(False)
        pending = b""  # bytes accepted from the device but not yet taken by the socket
        dev_fd, sock_fd = dev.fileno(), sock.fileno()
        extra_fds = {s.fileno(): s for s in extra}
        name = dev.name
        while True:
            # while the socket is backed up, leave packets in the device queue (backpressure)
            rlist = [sock_fd, *extra_fds] if pending else [sock_fd, dev_fd, *extra_fds]
            readable, writable, _ = select.select(rlist, [sock_fd] if pending else [], [])
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
                    packets = decoder.feed(self._rview[:n])
                    if decoder.empty:
                        counters.drops["empty"] += decoder.empty
                        decoder.empty = 0
                    for packet in packets:
                        why = check(packet, tap)
                        if why is not None:
                            counters.drops[why] += 1
                            continue
                        try:
                            dev.write(packet)
                        except PacketRejected:
                            counters.drops["rejected"] += 1
                            continue
                        counters.to_dev += 1
                        counters.bytes_to_dev += len(packet)
                        if debug is not None:
                            debug(f"NET2TAP {counters.to_dev}: read {len(packet) + HEADER_LEN} "
                                  f"bytes from the network, wrote {len(packet)} to {name}")
                    if decoder.error is not None:
                        counters.drops["oversized"] += 1
                        return Ended(f"{peer} sent a {decoder.error}: refusing it and closing "
                                     f"the connection (is the peer's MTU larger than {name}'s?)",
                                     error=True)
                elif fd == dev_fd:
                    left = self._from_device(sock)
                    if left is None:
                        return Ended("connection lost while sending")
                    pending = left
                else:
                    return Ended("another socket is ready", wake=extra_fds[fd])

    def _from_device(self, sock: socket.socket) -> bytes | None:
        """Drain up to BATCH packets and send them framed with one sendmsg; returns what the
        socket did not take (b"" normally), or None if the connection failed."""
        dev, counters, debug = self.dev, self.counters, self.debug
        frames: list[memoryview] = []
        total = 0
        for view in self._views[:BATCH]:
            try:
                n = dev.read_into(view[HEADER_LEN:])
            except BlockingIOError:
                break
            view[0] = n >> 8
            view[1] = n & 0xFF
            frames.append(view[:HEADER_LEN + n])
            total += HEADER_LEN + n
            counters.to_net += 1
            counters.bytes_to_net += n
            if debug is not None:
                debug(f"TAP2NET {counters.to_net}: read {n} bytes from {dev.name}, sending "
                      f"{n + HEADER_LEN} to the network")
        if not frames:
            return b""
        try:
            sent = sock.sendmsg(frames)
        except BlockingIOError:
            sent = 0
        except OSError:
            return None
        if sent == total:
            return b""
        return b"".join(frames)[sent:]


def _reason(exc: OSError) -> str:
    return {
        errno.ECONNRESET: "connection reset by the peer",
        errno.ETIMEDOUT: "the peer stopped answering (timed out)",
        errno.EPIPE: "the peer closed the connection",
        errno.EHOSTUNREACH: "the peer's host became unreachable",
    }.get(exc.errno or 0, exc.strerror or str(exc))


def _discard(dev: Device, counters: Counters) -> None:
    """Read and drop what the device holds while there is no peer to send it to."""
    dev.set_blocking(False)
    while True:
        try:
            dev.read()
        except BlockingIOError:
            return
        counters.drops["no-peer"] += 1


def serve(dev: Device, listener: socket.socket, pump: Pump, *, once: bool = False) -> None:
    """Serve one client at a time forever (or, with ``once``, the first one only). A new
    client replaces the current one: a client that reconnects wins over its stale self."""
    log, counters = pump.log, pump.counters
    dev_fd, listen_fd = dev.fileno(), listener.fileno()
    while True:
        readable, _, _ = select.select([listen_fd, dev_fd], [], [])
        if dev_fd in readable:
            _discard(dev, counters)
        if listen_fd not in readable:
            continue
        conn, addr = listener.accept()
        tcp.tune(conn)
        peer = tcp.show(addr)
        log(f"client {peer} connected")
        before = Counters(counters.to_net, counters.to_dev, drops=Counter(counters.drops))
        while True:
            ended = pump.run(conn, peer, extra=(listener,))
            if ended.wake is not listener:
                break
            new, new_addr = listener.accept()
            tcp.tune(new)
            log(f"client {tcp.show(new_addr)} connected, replacing {peer}")
            conn.close()
            conn, peer = new, tcp.show(new_addr)
        conn.close()
        session = Counters(counters.to_net - before.to_net, counters.to_dev - before.to_dev,
                           drops=counters.drops - before.drops)
        log(f"client {peer} disconnected: {ended.reason} ({session.summary()})")
        if once:
            return


def run_client(dev: Device, host: str, port: int, pump: Pump, *, reconnect: bool,
               backoff: Backoff | None = None, connect_timeout: float = 10.0) -> None:
    """Connect and pump; when the server goes away, exit with PeerGone, or with
    ``reconnect`` try again after a backoff (draining the device meanwhile)."""
    log = pump.log
    backoff = backoff or Backoff()
    server = tcp.show((host, port))
    while True:
        try:
            sock = tcp.connect(host, port, timeout=connect_timeout)
        except tcp.TransportError as exc:
            if not reconnect:
                raise
            delay = backoff.next()
            log(f"{exc}; retrying in {delay:.1f} s")
            _wait(dev, pump.counters, delay)
            continue
        backoff.reset()
        log(f"connected to {server}")
        with sock:
            ended = pump.run(sock, server)
        if not reconnect:
            raise tcp.PeerGone(f"server {server} went away: {ended.reason}; use --reconnect "
                               "to keep trying")
        delay = backoff.next()
        log(f"disconnected from {server}: {ended.reason}; reconnecting in {delay:.1f} s")
        _wait(dev, pump.counters, delay)


def _wait(dev: Device, counters: Counters, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    fd = dev.fileno()
    while (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            _discard(dev, counters)
