"""ICMP link (``--transport icmp``): raw ICMP and ICMPv6 sockets that carry WireGuard
messages in echo requests (client to server) and echo replies (server to client), for the
WireGuard engine (:class:`Server` and :class:`Client` are
:class:`~simpletun.transport.link.Link` implementations). The marks, credits and polls are
:mod:`simpletun.wire.icmp`. A server serves any number of clients, each with its own
credits and its own queue.

An address here is ``(host, identifier)``: the client's echo identifier plays the part of a
UDP port, so a client that moves to another address is seen roaming.

The server's kernel would answer every echo request itself, with the request's payload: a
second, useless reply to each tunnel packet. :func:`quiet_kernel` turns its echo replies off
(``net.ipv4.icmp_echo_ignore_all``, ``net.ipv6.icmp.echo_ignore_all``, per network
namespace) for the server's lifetime and puts the old values back on exit; meanwhile the
server answers ordinary pings itself, as the kernel would have.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import select
import signal
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..signals import STOP_SIGNALS
from ..wire import icmp
from ..wire.icmp import Credits, Poller
from . import tcp
from .link import Address
from .tcp import TransportError

if TYPE_CHECKING:
    from .link import Link

#: the addresses this link hands out: (host, echo identifier)
EchoAddress = tuple[str, int]

SOL_RAW = 255
ICMP_FILTER = 1  # linux/icmp.h: a mask of ICMPv4 types *not* to receive
ICMP6_FILTER = 1  # linux/icmpv6.h: 256 bits, a set bit blocks the type
IP_PKTINFO = 8  # linux/in.h (the socket module lacks it)
SOCKET_BUFFER = 4 * 1024 * 1024
MAX_QUEUED = 512  # messages a server holds per address while it has no request to answer
QUEUE_TOTAL = 4096  # and in all
QUEUE_AGE = icmp.LIFETIME  # and for at most this long (the client counts requests lost by then)
ECHO_SYSCTL = {4: "/proc/sys/net/ipv4/icmp_echo_ignore_all",
               6: "/proc/sys/net/ipv6/icmp/echo_ignore_all"}
STATE_DIR = "/run/simpletun"  # the echo settings a server found, until it puts them back
_PKTINFO4 = struct.Struct("@i4s4s")
_PKTINFO6 = struct.Struct("@16si")


def _raw(family: int, accept: int) -> socket.socket:
    """A non-blocking raw ICMP(v6) socket that receives only echo messages of type
    ``accept``; a one-line error without the privilege."""
    proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    try:
        sock = socket.socket(family, socket.SOCK_RAW, proto)
    except PermissionError:
        raise TransportError("the ICMP transport needs raw sockets: run it as root (or with "
                             "CAP_NET_RAW)") from None
    if family == socket.AF_INET:
        sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("@I", ~(1 << accept) & 0xFFFFFFFF))
    else:
        words = [0xFFFFFFFF] * 8
        words[accept >> 5] &= ~(1 << (accept & 31))
        sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("@8I", *words))
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
    sock.setblocking(False)
    return sock


class _Raw:
    """One raw socket of one family: sends echo messages, receives them parsed."""

    def __init__(self, family: int, accept: int) -> None:
        self.v4 = family == socket.AF_INET
        self.sock = _raw(family, accept)

    def send(self, kind: int, ident: int, seq: int, magic: bytes, backlog: int,
             payload: bytes | bytearray | memoryview, host: str,
             source: bytes | None = None) -> None:
        """One echo message; ``source`` (packed address) picks the address it leaves from.
        Errors (no route right now, a full buffer) drop it, as a network would."""
        head = icmp.head(kind, ident, seq, magic, backlog) if magic else \
            icmp.ECHO.pack(kind, 0, 0, ident, seq)
        if self.v4:
            head = icmp.seal4(head, payload)
        cmsg = [] if source is None else [self._pktinfo(source)]
        with contextlib.suppress(OSError):
            self.sock.sendmsg([head, payload], cmsg, 0, (host, 0))

    def _pktinfo(self, source: bytes) -> tuple[int, int, bytes]:
        if self.v4:
            return socket.IPPROTO_IP, IP_PKTINFO, _PKTINFO4.pack(0, source, bytes(4))
        return socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, _PKTINFO6.pack(source, 0)

    def receive(self, buf: bytearray, drops: Counter[str]
                ) -> tuple[icmp.Echo, str, bytes | None] | None:
        """One echo message: (parsed, source host, the packed address it was sent to), or
        None when nothing is waiting. Malformed ones are counted and skipped."""
        view = memoryview(buf)
        while True:
            try:
                n, anc, _flags, address = self.sock.recvmsg_into([buf], 64)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError:
                continue
            if self.v4:  # raw IPv4 sockets see the IP header
                ihl = (buf[0] & 0x0F) * 4
                if n < ihl + icmp.ECHO.size or not icmp.valid4(view[ihl:n]):
                    drops["bad-icmp"] += 1
                    continue
                return icmp.parse(view[ihl:n]), address[0], bytes(buf[16:20])
            if n < icmp.ECHO.size:
                drops["bad-icmp"] += 1
                continue
            dest = None
            for level, kind, data in anc:
                if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                    dest = bytes(data[:16])
            return icmp.parse(view[:n]), address[0], dest


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class _End:
    """What both ends have in common: one message per echo message, addresses, and the
    parts of :class:`~simpletun.transport.link.Link` that ICMP has nothing to do for."""

    name = "ICMP"
    hint = "is 'simpletun -s --transport icmp' running there, and do pings get through?"
    port = 0  # ICMP has no ports
    blocked = False  # a raw socket that cannot take more drops, as a network would

    def __init__(self) -> None:
        self.drops: Counter[str] = Counter()

    def send(self, data: bytes | bytearray | memoryview, address: Address) -> None:
        raise NotImplementedError

    def send_batch(self, frames: list[bytes | memoryview], address: Address) -> None:
        for frame in frames:
            self.send(frame, address)

    def connected(self) -> list[Address]:
        return []

    def show(self, address: Address) -> str:
        return show(address)

    def same(self, a: Address, b: Address) -> bool:
        return a == b


class Server(_End):
    """The server's end: echo requests in on ICMP and ICMPv6, replies out, one per request.

    Marked requests are credits (:class:`wire.icmp.Credits`), kept per address; one with a
    payload carries a message as well, an empty one (a poll) is a credit only. What the
    engine sends to an address with no credit at hand waits for that address's next
    request (up to MAX_QUEUED messages per address, QUEUE_TOTAL in all, for QUEUE_AGE
    seconds; beyond, they are dropped and counted ``no-icmp-credit``). Requests held for
    HOLD seconds are answered empty for the peers' endpoints (:meth:`peers`) only: nothing
    a stranger sends gets an answer the engine did not write. ``answer_pings``: the IP
    versions (4, 6) whose ordinary pings it answers, as the kernel would have.
    """

    def __init__(self, *, answer_pings: frozenset[int] = frozenset()) -> None:
        super().__init__()
        self.answer_pings = answer_pings
        self._raws: list[_Raw] = [_Raw(socket.AF_INET, icmp.ECHO_REQUEST)]
        if socket.has_ipv6:
            with contextlib.suppress(OSError):
                self._raws.append(_Raw(socket.AF_INET6, icmp.ECHO6_REQUEST))
        self._turn = 0
        self._poll = _poller([r.sock for r in self._raws])
        self.credits: Credits[Address, tuple[int, bytes | None]] = Credits()
        self._peers: frozenset[Address] = frozenset()
        # per address: (when queued, message), oldest first; never an empty deque, and
        # never while that address has credits (a request takes the oldest at once)
        self._queues: dict[Address, deque[tuple[float, bytes]]] = {}
        self._queued = 0
        self._sweep_at = 0.0

    def fileno(self) -> int:
        return self._poll.fileno()

    def close(self) -> None:
        for r in self._raws:
            r.sock.close()
        self._poll.close()

    @property
    def queued(self) -> int:
        """Messages waiting for a request, in all."""
        return self._queued

    def peers(self, endpoints: frozenset[Address]) -> None:
        """The peers' endpoints: their held requests are answered empty when they expire,
        and junk never evicts their credits."""
        self._peers = endpoints
        self.credits.protected = endpoints

    def _raw_for(self, host: str) -> _Raw:
        v4 = _family(host) == socket.AF_INET
        return next(r for r in self._raws if r.v4 == v4)

    def _reply(self, address: Address, token: tuple[int, bytes | None],
               payload: bytes | bytearray | memoryview) -> None:
        host, ident = address[0], address[1]
        raw = self._raw_for(host)
        queue = self._queues.get(address)
        raw.send(icmp.ECHO_REPLY if raw.v4 else icmp.ECHO6_REPLY, ident, token[0],
                 icmp.REPLY_MAGIC, len(queue) if queue else 0, payload, host, token[1])

    def send(self, data: bytes | bytearray | memoryview, address: Address) -> None:
        """Answer the oldest request of ``address`` with ``data``, or queue it for that
        address's next request."""
        token = None if address in self._queues else self.credits.take(address)
        if token is not None:
            self._reply(address, token, data)
        elif self._queued >= QUEUE_TOTAL or len(self._queues.get(address, ())) >= MAX_QUEUED:
            self.drops["no-icmp-credit"] += 1
        else:
            self._queues.setdefault(address, deque()).append((time.monotonic(), bytes(data)))
            self._queued += 1

    def _flush(self, address: Address) -> None:
        """Send what waits for ``address`` while it has credits."""
        queue = self._queues.get(address)
        while queue:
            token = self.credits.take(address)
            if token is None:
                return
            payload = queue.popleft()[1]
            self._queued -= 1
            if not queue:
                del self._queues[address]
            self._reply(address, token, payload)

    def receive(self, buf: bytearray) -> tuple[list[memoryview], EchoAddress] | None:
        for i in range(len(self._raws)):
            raw = self._raws[(self._turn + i) % len(self._raws)]
            got = raw.receive(buf, self.drops)
            if got is None:
                continue
            self._turn += 1
            echo, host, dest = got
            address = (host, echo.ident)
            if echo.magic is None:
                if (4 if raw.v4 else 6) in self.answer_pings:
                    raw.send(icmp.ECHO_REPLY if raw.v4 else icmp.ECHO6_REPLY, echo.ident,
                             echo.seq, b"", 0, echo.payload, host, dest)
                return [], address
            if echo.magic != icmp.REQUEST_MAGIC:
                self.drops["bad-icmp"] += 1
                return [], address
            if not self.credits.add(address, (echo.seq, dest), time.monotonic()):
                self.drops["icmp-credits-full"] += 1
            elif address in self._queues:
                self._flush(address)
            return ([echo.payload] if echo.payload else []), address
        return None

    def tick(self, now: float) -> float | None:
        """Answer the peers' requests held too long, empty (others expire silently); drop
        messages that waited too long for a request."""
        for address, token in self.credits.expired(now):
            if address in self._peers:
                self._reply(address, token, b"")
        wait = self.credits.wait(now)
        if not self._queues:
            return wait
        if now >= self._sweep_at:
            self._sweep(now)
        return self._sweep_at - now if wait is None else min(wait, self._sweep_at - now)

    def _sweep(self, now: float) -> None:
        self._sweep_at = now + QUEUE_AGE / 2
        for address, queue in list(self._queues.items()):
            while queue and queue[0][0] + QUEUE_AGE <= now:
                queue.popleft()
                self._queued -= 1
                self.drops["no-icmp-credit"] += 1
            if not queue:
                del self._queues[address]


class Client(_End):
    """The client's end: echo requests to the server, each with a message or, while
    :attr:`polling` (the engine sets it), empty polls that keep the server supplied with
    requests to answer (:class:`wire.icmp.Poller` says how many); and the server's
    replies."""

    def __init__(self, host: str) -> None:
        super().__init__()
        #: whether to keep the server supplied with polls (the engine's call)
        self.polling = False
        family, (self.host, _port) = tcp.addresses(host, 0)[0]
        self._raw = _Raw(family, icmp.ECHO_REPLY if family == socket.AF_INET
                         else icmp.ECHO6_REPLY)
        self._kind = icmp.ECHO_REQUEST if family == socket.AF_INET else icmp.ECHO6_REQUEST
        self.ident = int.from_bytes(os.urandom(2), "big")
        self.server: EchoAddress = (self.host, self.ident)
        self.poller = Poller()

    def fileno(self) -> int:
        return self._raw.sock.fileno()

    def close(self) -> None:
        self._raw.sock.close()

    def peers(self, endpoints: frozenset[Address]) -> None:
        """Nothing to do: a client's only peer is its server."""

    def send(self, data: bytes | bytearray | memoryview, address: Address) -> None:
        """One message in a request to the server (``address`` is :attr:`server`)."""
        self._request(data, poll=False)

    def _request(self, data: bytes | bytearray | memoryview, poll: bool) -> None:
        seq = self.poller.request(time.monotonic(), poll)
        self._raw.send(self._kind, self.ident, seq, icmp.REQUEST_MAGIC, 0, data, self.host)

    def receive(self, buf: bytearray) -> tuple[list[memoryview], EchoAddress] | None:
        got = self._raw.receive(buf, self.drops)
        if got is None:
            return None
        echo, host, _dest = got
        if echo.ident != self.ident or host != self.host or echo.magic != icmp.REPLY_MAGIC:
            self.drops["foreign-icmp"] += 1  # others' pings, the kernel's echo of ours
            return [], (host, echo.ident)
        carried = len(echo.payload) > 0
        self.poller.answered(echo.seq, echo.backlog, carried, time.monotonic())
        return ([echo.payload] if carried else []), self.server

    def tick(self, now: float) -> float | None:
        """Send the polls that keep the server supplied with requests to answer."""
        if not self.polling:
            self.poller.reset()
            return None
        for _ in range(self.poller.polls(now)):
            self._request(b"", poll=True)
        return self.poller.wait(now)


def show(address: Address) -> str:
    host = address[0][7:] if address[0].startswith("::ffff:") else address[0]
    return f"{host} (ICMP id {address[1]})"


def _poller(socks: list[socket.socket]) -> select.epoll:
    """One file descriptor that is readable when any of ``socks`` is."""
    poll = select.epoll()
    for s in socks:
        poll.register(s.fileno(), select.EPOLLIN)
    return poll


def quiet_kernel(families: tuple[int, ...] = (4, 6), state_dir: str = STATE_DIR
                 ) -> tuple[frozenset[int], Callable[[], None]]:
    """Turn the kernel's echo replies off in this network namespace. Returns the IP
    versions whose replies were on (the server answers their ordinary pings in the kernel's
    place) and the function that puts every setting back (call it in a ``finally``; calling
    it again does nothing).

    The settings found are kept in ``state_dir`` (one file per network namespace) until they
    are put back, so a server that was killed before it could restore them, and then
    started again, still knows them (and answers pings as the host did). The settings are
    noted there before the first is changed (a SIGKILL at any point cannot lose them), and
    the restore is also registered to run at interpreter exit, so that an interruption at
    any point (even before the caller holds the restore function) puts back what was
    changed."""
    state = echo_state(state_dir)
    try:
        with open(state) as f:
            found: dict[str, str] = json.load(f)
    except (OSError, ValueError):
        found = {}
    old: dict[str, str] = {}
    restore = _Restore(old, state)
    atexit.register(restore)

    def refused(path: str, exc: OSError) -> TransportError:
        reason = "permission denied" if exc.errno in (errno.EACCES, errno.EPERM) \
            else (exc.strerror or str(exc))
        return TransportError(f"cannot turn the kernel's echo replies off ({path}: "
                              f"{reason}): the ICMP server needs root")

    try:
        now: dict[str, str] = {}
        for family in families:
            path = ECHO_SYSCTL[family]
            try:
                with open(path) as f:
                    now[path] = f.read().strip()
            except FileNotFoundError:
                continue  # no IPv6, or a kernel without the IPv6 switch
            except OSError as exc:
                raise refused(path, exc) from None
            old[path] = found.get(path, now[path])
        with contextlib.suppress(OSError):  # noted before anything is changed, whole
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            with open(state + ".new", "w") as f:
                json.dump(old, f)
            os.replace(state + ".new", state)
        for path, value in now.items():
            if value != "1":
                try:
                    with open(path, "w") as f:
                        f.write("1")
                except OSError as exc:
                    raise refused(path, exc) from None
    except BaseException:
        restore()
        raise
    was_on = frozenset(f for f in families if old.get(ECHO_SYSCTL[f], "1") != "1")
    return was_on, restore


def echo_state(state_dir: str = STATE_DIR) -> str:
    """The file :func:`quiet_kernel` notes this network namespace's echo settings in."""
    return os.path.join(state_dir, f"icmp-echo-{os.stat('/proc/self/ns/net').st_ino}.json")


def put_back(state: str) -> None:
    """What a :func:`quiet_kernel` noted in ``state`` and could not put back itself (its
    process was killed) put back now, and the note removed; no note: nothing to do."""
    try:
        with open(state) as f:
            old: dict[str, str] = json.load(f)
    except (OSError, ValueError):
        return
    _write_back(old, state)


def _write_back(old: dict[str, str], state: str) -> None:
    for path, value in old.items():
        if value != "1":
            with contextlib.suppress(OSError), open(path, "w") as f:
                f.write(value)
    with contextlib.suppress(OSError):
        os.unlink(state)


class _Restore:
    """Puts the echo settings back, once, in the process that changed them (not in a forked
    child), with the stop signals held meanwhile so that a second Ctrl-C cannot cut it
    short (a signal that came meanwhile is delivered after)."""

    def __init__(self, old: dict[str, str], state: str) -> None:
        self.old, self.state, self.pid, self.done = old, state, os.getpid(), False

    def __call__(self) -> None:
        if self.done or os.getpid() != self.pid:
            return
        held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            self.done = True
            _write_back(self.old, self.state)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)


if TYPE_CHECKING:
    def _links(server: Server, client: Client) -> tuple[Link, Link]:
        return server, client  # both ends are links (mypy checks it)
