"""The TCP link of the WireGuard engine: each message behind a 2-byte big-endian length
(the framing of :mod:`simpletun.wire.classic`), one connection per peer.

:func:`server` listens and accepts many connections; :func:`client` connects (without ever
blocking the engine's loop) and reconnects with backoff. Both implement
:class:`transport.link.Link`: one epoll fd over all their sockets, so that the engine
registers one fd even though sockets come and go.

The server trusts no connection until the engine says so (:meth:`TcpServer.peers`): a
connection whose address is no peer's endpoint is *unproven*; there are at most
:data:`MAX_UNPROVEN` of those (a new one closes the oldest) and each is closed after
:data:`UNPROVEN_IDLE` seconds without a complete message.

Time is passed in: :meth:`tick` takes ``now``. Whatever happened in :meth:`receive` since
(a connection accepted, a message received) is stamped with the ``now`` of the next
:meth:`tick`, so call ``tick`` once per turn of the loop.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
from collections import Counter
from collections.abc import Sequence

from ..tunnel.backoff import Backoff
from ..wire.classic import HEADER_LEN, MAX_LENGTH, ViewDecoder, encode_header
from . import tcp
from .link import Address

#: unsent bytes on one connection above which the link is ``blocked``
HIGH_WATER = 1 << 20
#: unsent bytes on one connection above which messages are dropped ("tcp-backlog")
HARD_CAP = 8 << 20
#: connections not (yet) a peer's endpoint, at most; a new one closes the oldest
MAX_UNPROVEN = 256
#: seconds an unproven connection may go without a complete message
UNPROVEN_IDLE = 10.0
#: bytes asked of the kernel per read
READ_SIZE = 256 * 1024
#: seconds a client waits for a connection to be accepted
CONNECT_TIMEOUT = 10.0
#: buffers per sendmsg (the kernel's IOV_MAX)
IOV_MAX = 1024
ACCEPT_PER_CALL = 64
_EVENTS = 64

_IN = select.EPOLLIN
_INOUT = select.EPOLLIN | select.EPOLLOUT
_SEND_FLAGS = socket.MSG_NOSIGNAL

Buffer = bytes | bytearray | memoryview

_REASONS = {
    errno.ECONNREFUSED: "connection refused: is 'simpletun -s -t tcp' running there, on "
                        "this port?",
    errno.ENETUNREACH: "network unreachable: no route to it from this host",
    errno.EHOSTUNREACH: "host unreachable: no route to it from this host",
    errno.ETIMEDOUT: "no answer (a firewall, or a wrong address?)",
    errno.ECONNRESET: "the connection was reset",
    errno.EPIPE: "the connection was reset",
}


def _reason(err: int) -> str:
    return _REASONS.get(err) or errno.errorcode.get(err, str(err)).lower()


class _Conn:
    """One connection: its socket, its decoder, the bytes it could not send yet."""

    __slots__ = ("address", "decoder", "fd", "heavy", "out", "proven", "since", "sock",
                 "stamping")

    def __init__(self, sock: socket.socket, address: Address) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.address = address
        self.decoder = ViewDecoder()
        self.out = bytearray()
        self.heavy = False  # holds more than HIGH_WATER unsent
        self.proven = False
        self.since: float | None = None  # None: not yet stamped
        self.stamping = False  # in the list the next tick stamps


class _Base:
    """What the server and the client share: the epoll fd, writing with an out buffer,
    reading into one large reused buffer."""

    name = "TCP"

    def __init__(self) -> None:
        self.drops: Counter[str] = Counter()
        self.blocked = False
        self._ep = select.epoll()
        self._rbuf = bytearray(READ_SIZE)
        self._rview = memoryview(self._rbuf)
        self._heavy = 0

    def fileno(self) -> int:
        return self._ep.fileno()

    def show(self, address: Address) -> str:
        return show(address)

    # --- writing ------------------------------------------------------------------------

    def _write(self, conn: _Conn, bufs: list[Buffer], total: int, count: int) -> None:
        """Send ``bufs`` (``count`` whole frames, ``total`` bytes) on ``conn``, keeping what
        the kernel does not take in its out buffer, in order."""
        out = conn.out
        if out:
            # past the hard cap, or backed up while the device is still read for others
            if len(out) + total > HARD_CAP or (conn.heavy and not self.blocked):
                self.drops["tcp-backlog"] += count
                return
            for b in bufs:
                out += b
            self._weigh(conn)
            return
        try:
            sent = conn.sock.sendmsg(bufs, (), _SEND_FLAGS)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.drops["connection-lost"] += count
            self._lost(conn, exc.errno or 0)
            return
        if sent == total:
            return
        for b in bufs:  # keep the rest
            size = len(b)
            if sent >= size:
                sent -= size
                continue
            out += memoryview(b)[sent:] if sent else b
            sent = 0
        self._ep.modify(conn.fd, _INOUT)
        self._weigh(conn)

    def _send_one(self, conn: _Conn, data: Buffer) -> None:
        size = len(data)
        if not 0 < size <= MAX_LENGTH:
            if size:
                self.drops["too-large"] += 1
            return
        self._write(conn, [encode_header(size), data], HEADER_LEN + size, 1)

    def _send_frames(self, conn: _Conn, frames: Sequence[Buffer]) -> None:
        bufs: list[Buffer] = []
        total = count = 0
        for i, f in enumerate(frames):
            size = len(f)
            if not 0 < size <= MAX_LENGTH:
                if size:
                    self.drops["too-large"] += 1
                continue
            bufs.append(encode_header(size))
            bufs.append(f)
            total += HEADER_LEN + size
            count += 1
            if len(bufs) >= IOV_MAX:
                self._write(conn, bufs, total, count)
                if conn.sock.fileno() < 0:  # the connection was lost
                    self.drops["connection-lost"] += len(frames) - i - 1
                    return
                bufs, total, count = [], 0, 0
        if bufs:
            self._write(conn, bufs, total, count)

    def _flush(self, conn: _Conn) -> None:
        """Write what ``conn`` holds (its socket is writable)."""
        out = conn.out
        try:
            sent = conn.sock.send(out, _SEND_FLAGS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(conn, exc.errno or 0)
            return
        del out[:sent]
        if not out:
            self._ep.modify(conn.fd, _IN)
        self._weigh(conn)

    def _weigh(self, conn: _Conn) -> None:
        heavy = len(conn.out) > HIGH_WATER
        if heavy != conn.heavy:
            conn.heavy = heavy
            self._heavy += 1 if heavy else -1
            self._update_blocked()

    # --- reading ------------------------------------------------------------------------

    def _read(self, conn: _Conn) -> list[memoryview] | None:
        """One read of ``conn``: its complete messages, [] when it closed (it is then
        closed here), None when there was nothing to read after all."""
        try:
            n = conn.sock.recv_into(self._rbuf)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            self._lost(conn, exc.errno or 0)
            return []
        if n == 0:
            self._lost(conn, 0)
            return []
        return conn.decoder.feed(self._rview[:n])

    def _update_blocked(self) -> None:
        """Backpressure (stop reading the device) while a connection is backed up."""
        self.blocked = self._heavy > 0

    def _drop_conn(self, conn: _Conn) -> None:
        """Forget ``conn`` and close its socket."""
        if conn.heavy:
            conn.heavy = False
            self._heavy -= 1
            self._update_blocked()
        with contextlib.suppress(OSError, ValueError):  # never registered, or closed
            self._ep.unregister(conn.fd)
        conn.sock.close()
        conn.out = bytearray()

    def _lost(self, conn: _Conn, err: int) -> None:
        """``conn`` ended (``err`` 0: closed by the other end)."""
        raise NotImplementedError


class TcpServer(_Base):
    """Accepts many connections; an address is a connection's remote address."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        sock.setblocking(False)
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self._listen_fd = sock.fileno()
        self._ep.register(self._listen_fd, _IN)
        self._conns: dict[int, _Conn] = {}  # by fd
        self._by_addr: dict[Address, _Conn] = {}
        #: unproven connections, least recently active first
        self._unproven: dict[int, _Conn] = {}
        self._unstamped: list[_Conn] = []
        self._endpoints: frozenset[Address] = frozenset()
        self._ready: list[tuple[int, int]] = []
        self._next = 0
        self._polled = False  # the ready list is of this turn (see receive)

    # --- the Link protocol --------------------------------------------------------------

    def receive(self, buf: bytearray) -> tuple[list[memoryview], Address] | None:
        """Accepts what is pending, flushes what became writable, and reads one ready
        connection (each ready one in turn across calls). ``buf`` is not used: the
        messages are views into the link's own buffers."""
        while True:
            if self._next >= len(self._ready):
                if self._polled:  # this turn's ready list is done: the engine's epoll
                    self._polled = False  # says when there is more (one syscall less)
                    return None
                self._ready = self._ep.poll(0, _EVENTS)
                self._next = 0
                if not self._ready:
                    return None
                self._polled = True
            fd, events = self._ready[self._next]
            self._next += 1
            if fd == self._listen_fd:
                self._accept()
                continue
            conn = self._conns.get(fd)
            if conn is None:
                continue
            if events & select.EPOLLOUT and conn.out:
                self._flush(conn)
                if conn.sock.fileno() < 0:
                    return [], conn.address
            if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                msgs = self._read(conn)
                if msgs is None:
                    continue
                if msgs and not conn.proven:
                    self._active(conn)
                return msgs, conn.address

    def send(self, data: Buffer, address: Address) -> None:
        conn = self._by_addr.get(address)
        if conn is None:
            self.drops["no-connection"] += 1
            return
        self._send_one(conn, data)

    def send_batch(self, frames: list[bytes | memoryview], address: Address) -> None:
        conn = self._by_addr.get(address)
        if conn is None:
            self.drops["no-connection"] += len(frames)
            return
        self._send_frames(conn, frames)

    def tick(self, now: float) -> float | None:
        """Stamps what was accepted or heard from since the last tick; closes unproven
        connections silent for UNPROVEN_IDLE. Seconds until the next may be due."""
        for conn in self._unstamped:
            conn.stamping = False
            conn.since = now
        self._unstamped.clear()
        unproven = self._unproven
        while unproven:
            conn = next(iter(unproven.values()))
            if conn.since is None:  # stamped at the next tick (it came in meanwhile)
                break
            left = conn.since + UNPROVEN_IDLE - now
            if left > 0:
                return left
            self._close(conn)
        return None

    def connected(self) -> list[Address]:
        return []

    def _update_blocked(self) -> None:
        """Backpressure only while every peer's connection is backed up: one stalled peer
        must not stop the device for the others (what it cannot take beyond HIGH_WATER is
        dropped, counted ``tcp-backlog``, as a network would)."""
        peers = len(self._conns) - len(self._unproven)
        self.blocked = self._heavy > 0 and self._heavy >= max(1, peers)

    def peers(self, endpoints: frozenset[Address]) -> None:
        """Connections at ``endpoints`` are proven: past the limits on unproven ones."""
        old = self._endpoints
        self._endpoints = endpoints
        for address in old - endpoints:
            conn = self._by_addr.get(address)
            if conn is not None and conn.proven:
                conn.proven = False
                self._active(conn)
        for address in endpoints - old:
            conn = self._by_addr.get(address)
            if conn is not None and not conn.proven:
                conn.proven = True
                self._unproven.pop(conn.fd, None)
        self._update_blocked()

    def close(self) -> None:
        for conn in list(self._conns.values()):
            self._drop_conn(conn)
        self._conns.clear()
        self._by_addr.clear()
        self._unproven.clear()
        self.sock.close()
        self._ep.close()

    # --- connections --------------------------------------------------------------------

    @property
    def connections(self) -> int:
        return len(self._conns)

    @property
    def unproven(self) -> int:
        return len(self._unproven)

    def _accept(self) -> None:
        for _ in range(ACCEPT_PER_CALL):
            try:
                sock, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.drops["accept-failed"] += 1
                if exc.errno in (errno.EMFILE, errno.ENFILE) and self._unproven:
                    self._close(next(iter(self._unproven.values())))  # make room
                    continue
                return
            try:
                sock.setblocking(False)
                tcp.tune(sock)
            except OSError:  # reset before we got to it
                sock.close()
                continue
            conn = _Conn(sock, address)
            old = self._by_addr.get(address)
            if old is not None:  # the address was reused before we saw the close
                self._close(old)
            self._conns[conn.fd] = conn
            self._by_addr[address] = conn
            self._ep.register(conn.fd, _IN)
            if address in self._endpoints:
                conn.proven = True
                continue
            while self._unproven and len(self._unproven) >= MAX_UNPROVEN:
                self._close(next(iter(self._unproven.values())))
            self._active(conn)

    def _active(self, conn: _Conn) -> None:
        """An unproven ``conn`` is new or completed a message: to the back of the line, its
        time stamped at the next tick."""
        unproven = self._unproven
        unproven.pop(conn.fd, None)
        unproven[conn.fd] = conn
        conn.since = None
        if not conn.stamping:
            conn.stamping = True
            self._unstamped.append(conn)

    def _close(self, conn: _Conn) -> None:
        self._drop_conn(conn)
        self._conns.pop(conn.fd, None)
        self._unproven.pop(conn.fd, None)
        if self._by_addr.get(conn.address) is conn:
            del self._by_addr[conn.address]

    def _lost(self, conn: _Conn, err: int) -> None:
        self._close(conn)


class TcpClient(_Base):
    """One connection to the server, made and remade from :meth:`tick`.

    ``up`` says whether it is connected, ``last_error`` why the last attempt or connection
    failed (one line), ``attempts`` how many connects were started since it was last up."""

    port = 0

    def __init__(self, host: str, port: int, *, backoff: Backoff | None = None) -> None:
        super().__init__()
        found = tcp.addresses(host, port)
        if not found:
            raise tcp.TransportError(f"cannot resolve {host!r}: no address for it")
        self._family, address = found[0]
        self.server_address: Address = address
        self.backoff = backoff or Backoff(0.25, 5.0)
        self.up = False
        self.last_error = ""
        self.attempts = 0
        self._conn: _Conn | None = None
        self._connecting = False
        self._due: float | None = float("-inf")  # next attempt; None: at the next tick
        self._delay = 0.0
        self._started: float | None = None  # when the connect in progress began
        self._fresh = False

    # --- the Link protocol --------------------------------------------------------------

    def receive(self, buf: bytearray) -> tuple[list[memoryview], Address] | None:
        """The messages of one read from the server (views into the link's buffers; ``buf``
        is not used); [] when the connection closed; None when nothing is waiting."""
        conn = self._conn
        if conn is not None and not self._connecting and not conn.out:
            msgs = self._read(conn)  # connected, nothing to flush: read (EAGAIN: None)
            return None if msgs is None else (msgs, self.server_address)
        while True:
            conn = self._conn
            if conn is None:
                return None
            events = self._ep.poll(0, 1)
            if not events:
                return None
            if self._connecting:
                self._finish_connect(conn)
                continue
            ev = events[0][1]
            if ev & select.EPOLLOUT and conn.out:
                self._flush(conn)
                if self._conn is not conn:
                    return [], self.server_address
            if ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                msgs = self._read(conn)
                if msgs is None:
                    continue
                return msgs, self.server_address

    def send(self, data: Buffer, address: Address) -> None:
        conn = self._usable(address, 1)
        if conn is not None:
            self._send_one(conn, data)

    def send_batch(self, frames: list[bytes | memoryview], address: Address) -> None:
        conn = self._usable(address, len(frames))
        if conn is not None:
            self._send_frames(conn, frames)

    def tick(self, now: float) -> float | None:
        """Starts a connect when one is due, gives up on one that takes too long. Seconds
        until the next attempt (or the connect timeout); None while connected."""
        if self.up:
            return None
        if self._connecting:
            if self._started is None:
                self._started = now
            left = self._started + CONNECT_TIMEOUT - now
            if left > 0:
                return left
            self._fail(f"no answer within {CONNECT_TIMEOUT:g} s (a firewall, or a wrong "
                       "address?)")
        if self._due is None:
            self._due = now + self._delay
        if now < self._due:
            return self._due - now
        self._connect(now)
        if self.up:
            return None
        if self._connecting:
            return CONNECT_TIMEOUT
        self._due = now + self._delay  # failed at once: the retry
        return self._delay

    def connected(self) -> list[Address]:
        if self._fresh:
            self._fresh = False
            return [self.server_address]
        return []

    def peers(self, endpoints: frozenset[Address]) -> None:
        """The client's one connection is its server's: nothing to protect."""

    def close(self) -> None:
        if self._conn is not None:
            self._drop_conn(self._conn)
            self._conn = None
        self.up = self._connecting = False
        self._ep.close()

    # --- connecting ---------------------------------------------------------------------

    def _usable(self, address: Address, count: int) -> _Conn | None:
        if not self.up or self._conn is None:
            self.drops["not-connected"] += count
            return None
        if address != self.server_address:
            self.drops["no-connection"] += count
            return None
        return self._conn

    def _connect(self, now: float) -> None:
        self.attempts += 1
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            tcp.tune(sock)
        except OSError as exc:
            sock.close()
            self._conn = None
            self._fail(_reason(exc.errno or 0))
            return
        err = sock.connect_ex(self.server_address)
        conn = self._conn = _Conn(sock, self.server_address)
        if err == 0:
            self._ep.register(conn.fd, _IN)
            self._up()
        elif err in (errno.EINPROGRESS, errno.EAGAIN, errno.EINTR):
            self._ep.register(conn.fd, select.EPOLLOUT)
            self._connecting = True
            self._started = now
        else:
            self._fail(_reason(err))

    def _finish_connect(self, conn: _Conn) -> None:
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(_reason(err))
            return
        self._connecting = False
        self._ep.modify(conn.fd, _IN)
        self._up()

    def _up(self) -> None:
        self.up = True
        self._fresh = True
        self.attempts = 0
        self.last_error = ""
        self.backoff.reset()

    def _fail(self, reason: str) -> None:
        """The attempt or the connection ended: retry after the backoff."""
        if self._conn is not None:
            self._drop_conn(self._conn)
            self._conn = None
        self.up = self._connecting = False
        self._started = None
        self._fresh = False
        self.last_error = reason
        self._delay = self.backoff.next()
        self._due = None

    def _lost(self, conn: _Conn, err: int) -> None:
        self._fail(_reason(err) if err else "the server closed the connection")


def server(port: int, host: str | None = None) -> TcpServer:
    """A TCP server link on ``port`` (0: any free port, read it from ``.port``), on all
    addresses, IPv4 and IPv6, unless ``host``."""
    return TcpServer(tcp.listen(port, host))


def client(host: str, port: int) -> TcpClient:
    """A TCP client link to ``host:port``, resolved now (a TransportError if it cannot
    be); it connects from :meth:`TcpClient.tick`."""
    return TcpClient(host, port)


def show(address: Address) -> str:
    return tcp.show(address)
