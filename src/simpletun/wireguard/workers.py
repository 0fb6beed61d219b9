"""``--workers N`` for the encrypted engine over UDP: N processes on one WireGuard interface,
each with a queue of the multi-queue device and a UDP socket of its own, all bound to the
same port (SO_REUSEPORT), so that the peers see one endpoint and flows spread over cores.

**Who does what.** Process 0, the *leader*, is the whole engine: handshakes, cookies,
timers, the UAPI socket, and a share of the packets. The others are *followers*
(``WireGuard.follower``): they only seal and open transport messages, on keypairs the
leader hands them (:meth:`WireGuard.shared` -> :meth:`WireGuard.install`) over a
socketpair each. A follower that needs a session asks for one (``wanted``), one that sees
the initiator use a session we answered says so (``confirmed``), and every
:data:`REPORT` seconds it reports, per peer, the bytes it moved and whether it received or
sent data, so that the leader's timers (keepalive, re-key, new handshake) run as if it
had moved the packets itself. Endpoints the leader learns (roaming) go to every follower.

**Nonces.** A keypair's counter is the nonce: it must never be sent twice, and what the
processes send on one keypair must stay close together, inside the peer's replay window
(a counter more than 8,128 behind the greatest seen is dropped). So each keypair has one
counter in shared memory (:mod:`.shared`): a process takes a run of 64 under a lock and
sends it within 1 ms, so no counter is sent twice and none lags far behind.

**Replay.** Each keypair is received by one process (below), whose window is the
keypair's: a counter is accepted once.

**Receiving.** The kernel picks the socket: a classic BPF program on the reuseport group
(SO_ATTACH_REUSEPORT_CBPF, :func:`program`) sends handshake messages (anything but a
transport message) to the leader, and a transport message to worker (receiver index's
low byte) mod n. The receiver index is ours: the leader picks its sessions' indices so
that they take turns over the workers (``WireGuard.turns``). One peer's session is thus
received by one process, in order, and many peers spread over all of them. (Spreading
one peer's messages by counter was tried: its flows reached the device out of order
through two processes, and TCP took that for loss: 4 streams, 2 workers, 750 Mbit/s with
35,000 retransmissions against 870 with 150 for one worker.) UDP GRO coalesces a flow's
datagrams before the socket is chosen, so a train that spans a re-key can reach a process
that does not own the new index: a process drops (``steered-elsewhere``) a message for an
index that is not its own, so each keypair's counters meet one window only.

**Sending.** Each process writes what it opened into the device queue of the packet's
flow (:meth:`DeviceSide.spread`), and the kernel sends that flow's packets back out of the
same queue, to the process that reads it: flows spread over the workers by hash, whatever
the peer.

"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Callable
from ipaddress import ip_network
from typing import TYPE_CHECKING, Any, Protocol

from ..signals import STOP_SIGNALS, die_with_parent
from .core import SharedKeypair, WireGuard
from .peer import Address, Peer
from .shared import Table

if TYPE_CHECKING:
    from ..device.tuntap import Device

MAX_WORKERS = 8


class Companion(Protocol):
    """What the engine's loop drives beside its device and link: a leader's or a
    follower's side of the control channels."""

    #: what the other processes dropped, by reason (a leader's sum of its followers')
    drops: Counter[str]
    #: why the tunnel stopped when a process of it ended ("" while none did)
    lost: str

    def fds(self) -> list[int]: ...
    def ready(self, fd: int, now: float) -> None: ...
    def tick(self, now: float) -> float | None: ...
    def configured(self) -> None: ...
    def summary(self, own: int) -> str: ...
    def close(self) -> None: ...

REPORT = 0.1  # seconds between a follower's reports (when it has something to say)
SO_ATTACH_REUSEPORT_CBPF = 51
_TRANSPORT = 4
_PART = 60_000  # bytes of a control message per datagram at most

# classic BPF (linux/filter.h)
_LD_B_ABS = 0x30  # A = packet[k] (a byte)
_JEQ_K = 0x15  # if A == k jump jt else jf
_MOD_K = 0x94  # A %= k
_RET_A = 0x16
_RET_K = 0x06


def program(workers: int) -> list[tuple[int, int, int, int]]:
    """The steering program for a reuseport group of ``workers`` sockets: instructions
    (code, jt, jf, k). It runs on the UDP payload: a transport message (first byte 4) goes
    to socket (receiver index's low byte: offset 4, little-endian) % workers, anything
    else to socket 0."""
    return [
        (_LD_B_ABS, 0, 0, 0),  # the message type
        (_JEQ_K, 0, 3, _TRANSPORT),  # not a transport message: the leader
        (_LD_B_ABS, 0, 0, 4),  # the receiver index's low byte
        (_MOD_K, 0, 0, workers),
        (_RET_A, 0, 0, 0),
        (_RET_K, 0, 0, 0),
    ]


def steer(message: bytes | bytearray | memoryview, workers: int) -> int:
    """What :func:`program` returns for ``message``, in Python (for tests and docs; a
    message too short for the load is the leader's, as the kernel aborts the program
    with 0)."""
    if len(message) < 5 or message[0] != _TRANSPORT:
        return 0
    return message[4] % workers


def attach_steering(sock: socket.socket, workers: int) -> None:
    """Attach :func:`program` to ``sock``'s reuseport group."""
    code = program(workers)
    filters = b"".join(struct.pack("=HBBI", *insn) for insn in code)
    buf = ctypes.create_string_buffer(filters, len(filters))
    fprog = struct.pack("@HP", len(code), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)



def reuseport_group(sock: socket.socket, workers: int) -> list[socket.socket]:
    """``workers`` UDP sockets on ``sock``'s address and port, in one reuseport group
    steered by :func:`program`; ``sock`` is closed (its port is taken over: a client's
    ephemeral one too). Socket *i* is worker *i*'s: the group's order is the order of
    binding."""
    family = sock.family
    host, port = sock.getsockname()[:2]
    v6only = (sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
              if family == socket.AF_INET6 else None)
    mark = sock.getsockopt(socket.SOL_SOCKET, socket.SO_MARK)  # a full tunnel's: kept on each
    sock.close()
    group: list[socket.socket] = []
    try:
        for _ in range(workers):
            s = socket.socket(family, socket.SOCK_DGRAM)
            group.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if v6only is not None:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
            if mark:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
            s.bind((host, port))
            s.setblocking(False)
        attach_steering(group[0], workers)
    except OSError:
        for s in group:
            s.close()
        raise
    return group


# --- the control messages (JSON; between a leader and the followers it forked) ---------------
def _hex_endpoint(endpoint: Address | None) -> list[Any] | None:
    return list(endpoint) if endpoint is not None else None


def _endpoint(value: list[Any] | None) -> Address | None:
    return tuple(value) if value is not None else None


def keys_message(core: WireGuard, publics: set[bytes]) -> dict[str, Any]:
    """The leader's keypairs (and endpoints) of the peers with these keys, for every
    follower: none for a peer that is gone (the followers drop theirs)."""
    out = []
    for public in publics:
        p = core.peers.get(public)
        shared = core.shared(p) if p is not None else []
        out.append([public.hex(), [[sk.slot, sk.local_index, sk.remote_index, sk.send.hex(),
                                    sk.receive.hex(), sk.created, sk.initiator, sk.counter,
                                    sk.generation] for sk in shared],
                    _hex_endpoint(p.endpoint) if p is not None else None])
    return {"keys": out}


def config_message(core: WireGuard) -> dict[str, Any]:
    """The leader's configuration (key, peers, their allowed IPs and endpoints)."""
    local = core.local
    return {"private": local.private.hex() if local is not None else None,
            "peers": [[p.public.hex(), [str(n) for n in core.allowed.networks(p)],
                       _hex_endpoint(p.endpoint)] for p in core.peers.values()]}


def apply(core: WireGuard, message: dict[str, Any], now: float) -> None:
    """Follower: take a leader's message."""
    if "private" in message:
        private = message["private"]
        core.set_private_key(bytes.fromhex(private) if private is not None else None)
        wanted = {bytes.fromhex(pub) for pub, _nets, _ep in message["peers"]}
        for public in [k for k in core.peers if k not in wanted]:
            core.remove_peer(public)
        for pub, networks, endpoint in message["peers"]:
            peer = core.add_peer(bytes.fromhex(pub))
            core.clear_allowed(peer)
            for n in networks:
                core.add_allowed(peer, ip_network(n))
            peer.endpoint = _endpoint(endpoint)
    for pub, shared, endpoint in message.get("keys", []):
        found = core.peers.get(bytes.fromhex(pub))
        if found is None:
            continue
        if endpoint is not None:
            found.endpoint = _endpoint(endpoint)
        core.install(found, [SharedKeypair(slot, li, ri, bytes.fromhex(s), bytes.fromhex(r),
                                           created, initiator, counter, generation)
                             for slot, li, ri, s, r, created, initiator, counter, generation
                             in shared], now)


class _Channel:
    """One end of a SOCK_SEQPACKET socketpair carrying JSON objects. An object is cut into
    parts of at most :data:`_PART` bytes (a first byte says whether more follow), so no
    message is too large for the socket, and parts the socket cannot take now wait in
    order and go with the next :meth:`flush`: nothing is dropped."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(False)
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        self._out: deque[bytes] = deque()
        self._partial = bytearray()
        self.broken = 0  # objects received that did not parse (never expected)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        for at in range(0, len(data), _PART):
            last = at + _PART >= len(data)
            self._out.append((b"\0" if last else b"\1") + data[at:at + _PART])
        self.flush()

    def flush(self) -> None:
        out = self._out
        while out:
            try:
                self.sock.send(out[0])
            except BlockingIOError:
                return
            except OSError:  # the other end is gone: its EOF says so
                out.clear()
                return
            out.popleft()

    def receive(self) -> list[dict[str, Any]] | None:
        """What is waiting; None when the other end is gone."""
        got: list[dict[str, Any]] = []
        while True:
            try:
                data = self.sock.recv(_PART + 1)
            except BlockingIOError:
                return got
            except ConnectionResetError:
                return None
            if not data:
                return None
            self._partial += data[1:]
            if data[0]:
                continue
            try:
                got.append(json.loads(self._partial))
            except ValueError:
                self.broken += 1
            self._partial.clear()


class Leader:
    """The engine's companion in process 0: hands keypairs, endpoints and configuration to
    the followers and takes their reports."""

    def __init__(self, engine: Any, channels: list[_Channel], pids: list[int]) -> None:
        self.engine = engine
        self.channels = channels
        self.pids = pids
        self.packets = [0] * (len(channels) + 1)  # per worker: packets moved (0: ours)
        self.drops: Counter[str] = Counter()  # the followers' (the core's, the device's)
        self._endpoints: dict[bytes, Address | None] = {}
        #: a follower ended: the tunnel stops, and exits non-zero
        self.lost = ""
        self._next_look = 0.0

    def fds(self) -> list[int]:
        return [c.fileno() for c in self.channels]

    def ready(self, fd: int, now: float) -> None:
        core = self.engine.core
        for i, channel in enumerate(self.channels, start=1):
            if channel.fileno() != fd:
                continue
            got = channel.receive()
            if got is None:
                self.lost = f"worker {i} ended"
                self.engine.stop(self.lost)
                return
            for report in got:
                self._report(core, i, report, now)

    def _report(self, core: WireGuard, worker: int, report: dict[str, Any],
                now: float) -> None:
        for pub, rx, tx, received, endpoint, rxp, txp in report.get("peers", []):
            peer = core.peers.get(bytes.fromhex(pub))
            if peer is None:
                continue
            peer.rx_bytes += rx
            peer.tx_bytes += tx
            peer.rx_packets += rxp
            peer.tx_packets += txp
            ep = _endpoint(endpoint)
            if ep is not None and ep != peer.endpoint:
                peer.endpoint = ep  # roaming, seen by a worker
            core.worked(peer, rx > 0, received, tx > 0, now)
        for pub, index in report.get("confirmed", []):
            peer = core.peers.get(bytes.fromhex(pub))
            if peer is not None:
                core.confirm(peer, index, now)
        for pub in report.get("wanted", []):
            peer = core.peers.get(bytes.fromhex(pub))
            if peer is not None:
                core.initiate(peer, now)
        if "packets" in report:
            self.packets[worker] = report["packets"]
        self.drops.update(report.get("drops", {}))
        self.engine._flush_outbox()

    def tick(self, now: float) -> float | None:
        """Hand over what changed: keypairs at once, endpoints (roaming seen here) at
        least every REPORT seconds."""
        core = self.engine.core
        changed = core.rekeyed
        if now >= self._next_look:
            self._next_look = now + REPORT
            ends = self._endpoints
            for public, peer in core.peers.items():
                if ends.get(public) != peer.endpoint:
                    ends[public] = peer.endpoint
                    changed.add(public)
            for public in [k for k in ends if k not in core.peers]:
                del ends[public]
        if changed:
            message = keys_message(core, changed)
            for c in self.channels:
                c.send(message)
            changed.clear()
        for c in self.channels:
            c.flush()
        return REPORT

    def configured(self) -> None:
        """The configuration changed (the UAPI): every follower takes it."""
        message = config_message(self.engine.core)
        for c in self.channels:
            c.send(message)

    def summary(self, own: int) -> str:
        self.packets[0] = own
        return "workers: " + ", ".join(f"{i}: {n} packets" for i, n in enumerate(self.packets))

    def close(self) -> None:
        for c in self.channels:
            c.sock.close()
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 2.0
        for pid in self.pids:  # each ends on SIGTERM; one that does not is killed
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(pid, os.WNOHANG) == (0, 0):
                    if time.monotonic() > deadline:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                        break
                    time.sleep(0.01)


class Follower:
    """The engine's companion in a worker: takes the leader's messages, reports."""

    #: a follower's drops go to the leader in its reports; it keeps none of its own
    drops: Counter[str] = Counter()
    lost = ""

    def __init__(self, engine: Any, channel: _Channel) -> None:
        self.engine = engine
        self.channel = channel
        self._told: dict[Peer, tuple[int, int, int, int]] = {}
        self._dropped: Counter[str] = Counter()
        self._next = 0.0

    def fds(self) -> list[int]:
        return [self.channel.fileno()]

    def ready(self, fd: int, now: float) -> None:
        got = self.channel.receive()
        if got is None:
            self.engine.stop("the leader ended")
            return
        for message in got:
            apply(self.engine.core, message, now)
        self.engine._flush_outbox()

    def tick(self, now: float) -> float | None:
        core = self.engine.core
        self.channel.flush()
        urgent = bool(core.wanted or core.confirmed)
        if now < self._next and not urgent:
            return self._next - now
        self._next = now + REPORT
        peers = []
        told = self._told
        for peer in [p for p in told if p.removed]:
            del told[peer]
        for peer in core.peers.values():
            rx0, tx0, rxp0, txp0 = told.get(peer, (0, 0, 0, 0))
            t_ = peer.timers
            received = t_.keepalive_at is not None  # set by data received (timers off)
            if peer.rx_bytes != rx0 or peer.tx_bytes != tx0 or received:
                t_.keepalive_at = None
                told[peer] = (peer.rx_bytes, peer.tx_bytes, peer.rx_packets, peer.tx_packets)
                peers.append([peer.public.hex(), peer.rx_bytes - rx0, peer.tx_bytes - tx0,
                              received, _hex_endpoint(peer.endpoint),
                              peer.rx_packets - rxp0, peer.tx_packets - txp0])
        drops = core.drops + self.engine.side.counters.drops + self.engine.link.drops
        new = drops - self._dropped
        if not peers and not urgent and not new:
            return REPORT
        self._dropped = drops
        counters = self.engine.side.counters
        self.channel.send({
            "drops": dict(new),
            "peers": peers,
            "wanted": [p.public.hex() for p in core.wanted],
            "confirmed": [[p.public.hex(), i] for p, i in core.confirmed.items()],
            "packets": counters.to_net + counters.to_dev})
        core.wanted.clear()
        core.confirmed.clear()
        return REPORT

    def configured(self) -> None:
        pass

    def summary(self, own: int) -> str:
        return ""

    def close(self) -> None:
        self.channel.sock.close()


def start(engine: Any, workers: int,
          make_engine: Callable[[int, socket.socket], Any]) -> Leader:
    """Fork ``workers - 1`` followers of ``engine`` (the leader, UDP, on a multi-queue
    device with ``workers`` queues). ``make_engine(i, sock)`` builds worker *i*'s engine
    (in the child: its queue, its socket, no UAPI). Returns the leader's companion, attached
    to ``engine``."""
    assert engine.sock is not None
    group = reuseport_group(engine.sock, workers)
    engine.use_socket(group[0])
    core: WireGuard = engine.core
    table = core.table = Table()
    core.turns = workers
    channels: list[_Channel] = []
    pids: list[int] = []
    for i in range(1, workers):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # no stop signal between the fork and the follower's own handling of it (the
        # parent's handlers would tear down the device from the child)
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:  # the follower
            code = 0
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                ours.close()
                for j, s in enumerate(group):
                    if j != i:
                        s.close()
                for c in channels:
                    c.sock.close()
                die_with_parent()
                follower = make_engine(i, group[i])
                follower.core.follower = True
                follower.core.table = table
                follower.core.turns, follower.core.turn_of = workers, i
                apply(follower.core, config_message(core), time.monotonic())
                follower.attach(Follower(follower, _Channel(theirs)))
                follower.run()
            except KeyboardInterrupt:
                pass
            except BaseException as exc:  # a worker never returns into the CLI: one line
                os.write(2, f"simpletun: worker {i} failed: {exc!r}\n".encode())
                code = 1
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        theirs.close()
        channels.append(_Channel(ours))
        pids.append(pid)
    for s in group[1:]:
        s.close()  # the followers' (each holds its own)
    leader = Leader(engine, channels, pids)
    engine.attach(leader)
    return leader


def start_engines(engine: Any, dev: Device, count: int, *, tap: bool,
                  then: Callable[[], None] | None = None) -> Leader:
    """Fork ``engine``'s followers with :func:`start`: worker *i* gets queue *i* of ``dev``
    and socket *i* of the reuseport group; each writes into the queue of the packet's flow
    (the kernel sends the flow back out there, so one peer's flows spread over the
    workers). ``then``: what each follower does first (``simpletun up``'s drop of
    privileges). A fork or socket that fails is a TransportError."""
    from ..transport.tcp import TransportError
    from .engine import Engine

    fds = [q.fileno() for q in dev.queues]

    def make(i: int, sock: socket.socket) -> Engine:
        if then is not None:
            then()
        dev.queues = [dev.queues[i]]  # this process reads its own queue
        follower = Engine(dev, tap=tap, udp_socket=sock, log=None, uapi=False)
        follower.side.spread(fds)
        return follower

    engine.side.spread(fds)
    try:
        return start(engine, count, make)
    except OSError as exc:
        raise TransportError(f"cannot start {count} workers: {exc.strerror}") from None


__all__ = ["MAX_WORKERS", "Companion", "Follower", "Leader", "apply", "attach_steering",
           "config_message", "keys_message", "program", "reuseport_group", "start",
           "start_engines", "steer"]
