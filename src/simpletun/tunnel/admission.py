"""Who may become the TCP server's client.

New connections shake hands in a small table (:class:`Handshakes`) that the server's own
select loop drives next to the live client's pump, so a slow or silent connection never
holds anything up: at most :data:`MAX_PENDING` at once (the oldest is closed to make room)
and each for at most :data:`PENDING_DEADLINE` seconds.

A connection is *proven* when it sent a valid hello (native wire) or a whole classic frame
holding a plausible packet (:func:`plausible`: one that :func:`packets.check.check` passes,
or the hello envelope a native client sends a classic server). Anything else in its first
bytes (a length of 0 or more than the device carries, a frame that is no packet) is junk:
it is dropped and counted, never promoted. A connection that stays silent for
:data:`QUIET` seconds (:data:`QUIET_NATIVE` on a native server, where a real client's hello
leaves right after the connect) is what the classic C client looks like until its device
has a packet to send: it is offered to the policy as a classic client (it can take an
empty seat, never a live client's; see :func:`decide`). Its first frame is still watched
(:meth:`stream.Pump.run`): a late native hello is answered (or the connection closed), never
written into the device. Nothing an unproven connection sends reaches the device: a
connection that sent some bytes but neither a hello nor a whole frame is closed at its
deadline.

A proven connection takes over only if nobody is live, or it carries the live client's
session id (its reconnect), or the live client has been silent past the peer timeout, or
the live client was seated silently and has not delivered a single packet in
:data:`UNPROVEN_HOLD` seconds (:func:`decide`, pure). *Heard* means a packet delivered to
the device or a keepalive, never an empty frame or junk. Otherwise it is refused (a native
client hears a :data:`native.BUSY` refusal and retries later) with one rate-limited line;
the live client's address goes to the server's log only.

What this can and cannot prove: neither wire is authenticated (encryption comes later). A
native session id is 8 random bytes that only the client and the server see, so an
attacker off the path cannot take a live native session over. The classic wire has no
session at all: a ``--classic`` server cannot tell the real client's reconnect from anybody
else's connection. Its protection is only that a live client is never displaced: a new
classic connection is refused while the live one talks, and is accepted when it has left
or been silent past the peer timeout. Anyone who can reach the port can still become the
client while none is live, and write any packet that passes the checks into the device;
an idle connection holds an empty seat only until a proven client comes (for
:data:`UNPROVEN_HOLD` seconds at least), and a classic one that delivers a packet now and
then holds it like a real client.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass, field

from ..device.side import Counters
from ..packets.check import check
from ..transport import tcp
from ..wire import native
from .ratelimit import LimitedLog

MAX_PENDING = 64  # connections shaking hands at once; the oldest goes to make room
PENDING_DEADLINE = 10.0  # seconds a connection has to prove itself
QUIET = 1.0  # seconds of silence after which a connection counts as a classic client
#: the same on a native server: a native client's hello leaves right after the connect,
#: so a slow path (a lost segment) must not make it look like a silent classic client
QUIET_NATIVE = 2.0
#: seconds a silently seated connection that delivered nothing holds the seat against a
#: proven newcomer
UNPROVEN_HOLD = 2.0
ACCEPTS_PER_WAKE = 64
ACCEPT_PAUSE = 1.0  # seconds the listener rests after accept failed (EMFILE, ENOBUFS)


def plausible(packet: bytes | memoryview, tap: bool) -> bool:
    """Could ``packet`` (one classic frame's content) come from a real peer's device? What
    the device side would deliver (:func:`check`: an IP packet on tun; on tap any Ethernet
    frame, since a real tap client sends padded frames, STP, LLDP and more), or a native
    hello envelope."""
    return native.is_handshake(packet) or check(packet, tap) is None


class ClassicProbe:
    """Sans-IO: the first bytes of a connection to a ``--classic`` server, until its first
    classic frame is whole. ``feed`` returns an Outcome (``classic``, everything received
    as leftover), ``junk`` (not a frame of a plausible packet), or None: not yet."""

    def __init__(self, max_packet: int, tap: bool) -> None:
        self.max_packet, self.tap = max_packet, tap
        self._buf = bytearray()

    def feed(self, data: bytes) -> native.Outcome | None:
        self._buf += data
        verdict = first_frame_verdict(self._buf, self.max_packet, self.tap)
        if verdict is not None and verdict.wire == "classic":
            # a native client's hello: no packet for the device (a classic server never
            # answers it; the client falls back to the classic wire)
            length = (self._buf[0] << 8) | self._buf[1]
            if native.is_handshake(memoryview(self._buf)[2:2 + length]):
                return native.Outcome("classic", leftover=bytes(self._buf[2 + length:]))
        return verdict


def first_frame_limit(max_packet: int) -> int:
    """The longest first classic frame worth waiting for: a packet the device carries, or a
    native hello (up to 200 bytes) even over a small MTU."""
    return max(max_packet, 200)


def first_frame_verdict(buf: bytes | bytearray, max_packet: int,
                        tap: bool) -> native.Outcome | None:
    """``classic`` once the first frame in ``buf`` is whole and plausible, ``junk`` as soon
    as it cannot be, None while it may still be."""
    if len(buf) < 2:
        return None
    length = (buf[0] << 8) | buf[1]
    if not 0 < length <= first_frame_limit(max_packet):
        return native.Outcome("junk", reason=f"a first frame of {length} bytes")
    if len(buf) < 2 + length:
        return None
    if not plausible(memoryview(buf)[2:2 + length], tap):
        return native.Outcome("junk", reason="a first frame that is no packet")
    return native.Outcome("classic", leftover=bytes(buf))


class NativeProbe:
    """Sans-IO: :class:`native.ServerHandshake`, with a first frame that is no hello held to
    the same proof as on a classic server."""

    def __init__(self, local: native.Hello, max_packet: int, tap: bool) -> None:
        self.machine = native.ServerHandshake(local)
        self.max_packet, self.tap = max_packet, tap
        self._head = bytearray()

    def feed(self, data: bytes) -> native.Outcome | None:
        if len(self._head) < 2:
            self._head += data[:2 - len(self._head)]
            early = first_frame_verdict(self._head, self.max_packet, self.tap)
            if early is not None and early.wire == "junk":
                return early
        outcome = self.machine.feed(data)
        if outcome is not None and outcome.wire == "classic":
            return first_frame_verdict(outcome.leftover, self.max_packet, self.tap)
        return outcome


# --- the policy (pure) -----------------------------------------------------------------

@dataclass
class Live:
    """The client being served: its session id (None on the classic wire), its address,
    when it was last heard (a packet delivered or a keepalive; at first, when it was
    seated), and whether it was seated silently (it proved nothing)."""

    session: bytes | None
    peer: str
    heard: float
    silent: bool = False
    since: float = field(init=False)  # when it was seated

    def __post_init__(self) -> None:
        self.since = self.heard

    def hear(self, when: float) -> None:
        """The live client was heard at ``when`` (earlier times change nothing)."""
        if when > self.heard:
            self.heard = when

    def prove(self, session: bytes | None) -> None:
        """A silently seated client spoke: it is a client like any other now."""
        self.session, self.silent = session, False


def decide(live: Live | None, session: bytes | None, now: float, timeout: float, *,
           silent: bool = False, hold: float = UNPROVEN_HOLD) -> str:
    """``take`` (nobody is live), ``replace`` (the live client's own reconnect, the live
    client silent for ``timeout`` seconds, or, for a proven newcomer (not ``silent``), a
    live client seated silently that has delivered nothing for ``hold`` seconds), or
    ``refuse``."""
    if live is None:
        return "take"
    if session is not None and session == live.session:
        return "replace"
    if now - live.heard >= timeout:
        return "replace"
    if not silent and live.silent and live.heard <= live.since and now - live.since >= hold:
        return "replace"
    return "refuse"


# --- the table ---------------------------------------------------------------------------

@dataclass
class Ready:
    """A proven connection, waiting for the policy's word."""

    sock: socket.socket
    peer: str
    outcome: native.Outcome
    silent: bool = False  # it sent nothing at all (a classic client with nothing to send)

    @property
    def session(self) -> bytes | None:
        return self.outcome.hello.session if self.outcome.hello is not None else None


@dataclass
class _Pending:
    sock: socket.socket
    peer: str
    deadline: float
    probe: NativeProbe | ClassicProbe
    quiet_until: float | None  # None once it has sent something

    @property
    def due(self) -> float:
        return self.deadline if self.quiet_until is None else self.quiet_until


class Handshakes:
    """The connections shaking hands, driven by the caller's select loop: watch
    :attr:`fds` (the listener's and the pending connections') and call :meth:`handle` with
    those readable, or once :attr:`deadline` (monotonic) has passed."""

    def __init__(self, listener: socket.socket, local: native.Hello | None, *,
                 max_packet: int, tap: bool, counters: Counters, log: LimitedLog,
                 limit: int = MAX_PENDING, deadline: float = PENDING_DEADLINE,
                 quiet: float | None = None) -> None:
        self.listener = listener
        listener.setblocking(False)
        self.local, self.max_packet, self.tap = local, max_packet, tap
        self.counters, self.log = counters, log
        self.limit, self.seconds = limit, deadline
        self.quiet = quiet if quiet is not None else QUIET if local is None else QUIET_NATIVE
        self._pending: dict[int, _Pending] = {}  # in arrival order
        self._paused_until: float | None = None  # the listener rests (accept failed)
        self.fds: list[int] = [listener.fileno()]
        self.deadline = float("inf")

    def __len__(self) -> int:
        return len(self._pending)

    def _changed(self) -> None:
        paused = self._paused_until is not None
        self.fds = [*self._pending] if paused else [self.listener.fileno(), *self._pending]
        self.deadline = min((p.due for p in self._pending.values()),
                            default=float("inf"))
        if self._paused_until is not None:
            self.deadline = min(self.deadline, self._paused_until)

    def wait(self, now: float) -> float | None:
        return None if self.deadline == float("inf") else max(0.0, self.deadline - now)

    def handle(self, readable: list[int], now: float) -> list[Ready]:
        ready: list[Ready] = []
        if self._paused_until is not None and self._paused_until <= now:
            self._paused_until = None  # the listener is watched again (see _accept)
        for fd in readable:
            if fd == self.listener.fileno():
                self._accept(now)
            elif (pending := self._pending.get(fd)) is not None:
                got = self._read(pending)
                if got is not None:
                    ready.append(got)
        for fd, p in list(self._pending.items()):
            if p.quiet_until is not None and p.quiet_until <= now:
                del self._pending[fd]
                ready.append(Ready(p.sock, p.peer, native.Outcome("classic"), silent=True))
            elif p.deadline <= now:
                self._drop(fd, "handshake-timeout", "timeout",
                           f"closed connection {p.peer}: it sent neither a hello nor a "
                           f"whole packet within {self.seconds:g} s")
        self._changed()
        return ready

    def _accept(self, now: float) -> None:
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                conn, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: leave it in the backlog for now
                # the listener stays readable: stop watching it for a while, or the loop
                # would spin on it at full CPU until a descriptor frees
                self._paused_until = now + ACCEPT_PAUSE
                self.log("accept", f"cannot accept a connection: {exc.strerror or exc}; "
                                   f"trying again in {ACCEPT_PAUSE:g} s")
                return
            try:
                tcp.tune(conn)
                conn.setblocking(False)
            except OSError:
                conn.close()
                continue
            if len(self._pending) >= self.limit:
                oldest = next(iter(self._pending))
                self._drop(oldest, "handshake-evicted", "evicted",
                           f"closed connection {self._pending[oldest].peer}: "
                           f"{self.limit} connections were shaking hands, it was the oldest")
            probe: NativeProbe | ClassicProbe = (
                ClassicProbe(self.max_packet, self.tap) if self.local is None
                else NativeProbe(self.local, self.max_packet, self.tap))
            self._pending[conn.fileno()] = _Pending(conn, tcp.show(addr), now + self.seconds,
                                                    probe, now + self.quiet)

    def _read(self, p: _Pending) -> Ready | None:
        fd = p.sock.fileno()
        try:
            data = p.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            data = b""
        if not data:
            self._drop(fd, "handshake-left", "left",
                       f"connection {p.peer} left during the handshake")
            return None
        p.quiet_until = None
        outcome = p.probe.feed(data)
        if outcome is None:
            return None
        if outcome.wire == "junk":
            self._drop(fd, "junk-connection", "junk",
                       f"dropped connection {p.peer}: its first bytes are neither a hello "
                       f"nor a packet ({outcome.reason})")
            return None
        if outcome.wire == "refused":
            send_quietly(p.sock, outcome.reply)
            self._drop(fd, "refused-connection", "refused",
                       f"refused client {p.peer}: {outcome.reason}")
            return None
        del self._pending[fd]
        return Ready(p.sock, p.peer, outcome)

    def _drop(self, fd: int, counter: str, key: str, line: str) -> None:
        p = self._pending.pop(fd)
        p.sock.close()
        self.counters.drops[counter] += 1
        self.log(key, line)

    def refuse(self, ready: Ready, live: Live) -> None:
        """Turn a proven connection away: a live client holds the tunnel."""
        if ready.outcome.wire == "native":  # who the live client is stays in our log
            send_quietly(ready.sock, native.encode_refuse(_BUSY_REASON))
        ready.sock.close()
        self.counters.drops["refused-connection"] += 1
        self.log("busy", f"refused client {ready.peer}: {live.peer} is the live client and "
                         "this is not its session")

    def admit(self, ready: Ready) -> socket.socket:
        """The connection of a client the policy took, with the server's answer sent."""
        send_quietly(ready.sock, ready.outcome.reply)
        return ready.sock

    def close(self) -> None:
        for p in self._pending.values():
            p.sock.close()
        self._pending.clear()
        self._changed()


_BUSY_REASON = (f"{native.BUSY}the server serves another client that is live; it takes a "
                "new one when that one leaves or falls silent")


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """A short answer on a fresh connection (its send buffer is empty): it fits at once, or
    the peer has gone and the pump will notice."""
    if data:
        with contextlib.suppress(OSError):
            sock.send(data)
