"""``--workers N``: one process per queue of a multi-queue device, each with its own
connection, so that flows spread over cores (the kernel steers each flow to one queue).

Client: the parent connects and shakes hands for queue 0 first; the server's hello says how
many queues it serves (a classic server: one). The parent closes the queues the session will
not use (the kernel stops steering to them) and forks one worker per remaining queue. Worker
0 takes the connection already made; the others connect with the same session id and their
queue number, and each then runs :func:`stream.run_client` on its own.

Server: the parent accepts and shakes hands, then passes the connection (SCM_RIGHTS over a
socketpair) to the worker that owns the queue the hello names; a classic client goes to
queue 0. A client with a new session id replaces the old one (under the rules of
:func:`admission.decide`): every worker drops its connection. Each worker publishes when
its client was last heard into a shared page (one float per queue, written at most about
once a second), so that the parent can tell a live client from a silent one. A worker
without a connection detaches its queue so that the kernel steers nothing to it, and
attaches it again when a connection arrives.

Each worker has its own counters and prints its own lines, prefixed with its queue. When
it ends it writes its counters into a pipe the parent reads once every worker is gone; the
parent then prints the summary: one line per worker and a total.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import mmap
import os
import select
import signal
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..device.side import Counters
from ..device.tuntap import Device
from ..errors import SimpletunError
from ..signals import STOP_SIGNALS, die_with_parent
from ..transport import tcp
from ..wire import native
from . import admission, stream
from .backoff import Backoff
from .ratelimit import Log
from .stream import Ended, Pump, Session, Wire, wire_of

MAX_WORKERS = 8


def default_workers() -> int:
    """One worker per CPU, at most MAX_WORKERS."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))


# --- the message from the server parent to a worker (sans-IO) ------------------------------

_ASSIGN, _RESET = 1, 2
_HEAD = struct.Struct("!BBH")  # message kind, wire flags, length of the peer's name
_NATIVE, _VNET, _KEEPALIVE, _SILENT = 1, 2, 4, 8


@dataclass(frozen=True)
class Assignment:
    """A connection for a worker (the descriptor travels beside it), or a reset: a new
    client (``peer``) replaces the current one. ``silent``: it was seated before it said a
    word (its first frame may still be a late native hello)."""

    reset: bool
    wire: Wire = stream.CLASSIC
    peer: str = ""
    leftover: bytes = b""
    silent: bool = False


def encode_assignment(a: Assignment) -> bytes:
    peer = a.peer.encode()
    if a.reset:
        return _HEAD.pack(_RESET, 0, len(peer)) + peer
    flags = ((_NATIVE if a.wire.native else 0) | (_VNET if a.wire.vnet else 0)
             | (_KEEPALIVE if a.wire.keepalive else 0) | (_SILENT if a.silent else 0))
    return _HEAD.pack(_ASSIGN, flags, len(peer)) + peer + a.leftover


def decode_assignment(data: bytes) -> Assignment:
    kind, flags, plen = _HEAD.unpack_from(data)
    peer = data[_HEAD.size:_HEAD.size + plen].decode()
    if kind == _RESET:
        return Assignment(reset=True, peer=peer)
    wire = Wire(native=bool(flags & _NATIVE), vnet=bool(flags & _VNET),
                keepalive=bool(flags & _KEEPALIVE))
    return Assignment(reset=False, wire=wire, peer=peer, leftover=data[_HEAD.size + plen:],
                      silent=bool(flags & _SILENT))


# --- what a worker tells the parent (sans-IO) ---------------------------------------------

def encode_idle(received: int) -> bytes:
    """The worker dropped the ``received``-th connection it was handed."""
    return f"idle {received}".encode()


def encode_proven(received: int, session: bytes) -> bytes:
    """The ``received``-th connection, seated silently, sent a late hello of ``session``."""
    return f"hello {received} {session.hex()}".encode()


def decode_worker_message(msg: bytes) -> tuple[str, int, bytes | None] | None:
    """``(kind, received, session)`` of a worker's message (kind ``idle`` or ``hello``),
    None if it is neither."""
    parts = msg.decode(errors="replace").split()
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    if parts[0] == "idle" and len(parts) == 2:
        return "idle", int(parts[1]), None
    if parts[0] == "hello" and len(parts) == 3:
        try:
            return "hello", int(parts[1]), bytes.fromhex(parts[2])
        except ValueError:
            return None
    return None


class HeardBoard:
    """When each worker's client was last heard (monotonic seconds): one float per queue in
    an anonymous shared page made before the fork. A worker writes its own slot (an
    aligned 8-byte store: never torn), the parent reads them all."""

    def __init__(self, count: int) -> None:
        self._map = mmap.mmap(-1, max(8 * count, mmap.PAGESIZE))
        self._slots = (ctypes.c_double * count).from_buffer(self._map)

    def writer(self, index: int) -> Callable[[float], None]:
        slots = self._slots

        def write(when: float) -> None:
            slots[index] = when

        return write

    def latest(self, among: list[bool]) -> float:
        """The latest time any worker ``among`` says (those serving the live client)."""
        return max((t for t, on in zip(self._slots, among, strict=True) if on), default=0.0)

    def clear(self) -> None:
        """A new client: what the workers heard of the old one says nothing of it."""
        for i in range(len(self._slots)):
            self._slots[i] = 0.0


class CounterBoard:
    """Each worker's counters, for the parent's control socket while they run: one slot per
    worker in an anonymous shared mapping made before the fork, holding its report line
    (:func:`encode_report`) behind a sequence number (odd while it is being written, so
    that the parent never reads a half-written one: a seqlock). A worker writes at most
    once a second (:attr:`stream.Pump.report`); the parent reads at each request."""

    SLOT = 4096
    _SEQ = struct.Struct("<QI")  # sequence number, length of the line

    def __init__(self, count: int) -> None:
        self.count = count
        self._map = mmap.mmap(-1, max(self.SLOT * count, mmap.PAGESIZE))

    def writer(self, index: int) -> Callable[[Counters], None]:
        m, base, seq = self._map, index * self.SLOT, 0
        room = self.SLOT - self._SEQ.size

        def write(counters: Counters) -> None:
            nonlocal seq
            line = encode_report(index, counters)
            if len(line) > room:  # many drop reasons: the largest ones
                small = Counters(counters.to_net, counters.to_dev, counters.bytes_to_net,
                                 counters.bytes_to_dev, Counter(dict(
                                     counters.drops.most_common(10))))
                line = encode_report(index, small)[:room]
            seq += 1
            self._SEQ.pack_into(m, base, seq, 0)  # odd: being written
            m[base + self._SEQ.size:base + self._SEQ.size + len(line)] = line
            seq += 1
            self._SEQ.pack_into(m, base, seq, len(line))

        return write

    def _slot(self, index: int) -> Counters | None:
        m, base = self._map, index * self.SLOT
        for _ in range(100):
            seq, size = self._SEQ.unpack_from(m, base)
            if seq & 1:
                continue
            line = bytes(m[base + self._SEQ.size:base + self._SEQ.size + size])
            if self._SEQ.unpack_from(m, base)[0] != seq:
                continue
            got = decode_report(line.decode(errors="replace").strip()) if seq else None
            return got[1] if got is not None else None
        return None

    def total(self) -> Counters:
        """Every worker's counters, summed (those not written yet count nothing)."""
        total = Counters()
        for i in range(self.count):
            counters = self._slot(i)
            if counters is not None:
                total.add(counters)
        return total


# --- processes ----------------------------------------------------------------------------

def _interrupt_once() -> None:
    """In a worker: the first stop signal (:data:`STOP_SIGNALS`: Ctrl-C, SIGTERM, SIGHUP,
    SIGQUIT) raises KeyboardInterrupt, later ones are ignored (Ctrl-C reaches the worker,
    then the parent's SIGTERM follows: the second must not cut the worker's report short).
    A signal the process ignores (SIGHUP under nohup) stays ignored."""
    def handler(_signo: int, _frame: object) -> None:
        _ignore_signals()
        raise KeyboardInterrupt

    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) != signal.SIG_IGN:
            signal.signal(sig, handler)


def _nothing(_signo: int, _frame: object) -> None:
    """A handler that ignores the signal. (SIG_IGN set while a signal is pending makes
    Python raise OSError "ignored due to race condition"; this never raises.)"""


def _ignore_signals() -> dict[int, object]:
    """The stop signals (:data:`STOP_SIGNALS`) ignored from now on; returns the handlers
    they had."""
    return {sig: signal.signal(sig, _nothing) for sig in STOP_SIGNALS}


def _restore_signals(old: dict[int, object]) -> None:
    for sig, handler in old.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]


@dataclass
class Report:
    """What a worker tells the parent when it ends: its counters (set by the body)."""

    counters: Counters | None = None


def encode_report(index: int, counters: Counters) -> bytes:
    """One line for the reports pipe (well below PIPE_BUF: lines never interleave)."""
    body = {"to_net": counters.to_net, "to_dev": counters.to_dev,
            "bytes_to_net": counters.bytes_to_net, "bytes_to_dev": counters.bytes_to_dev,
            "drops": dict(counters.drops.most_common(40))}
    return f"S {index} {json.dumps(body, separators=(',', ':'))}\n".encode()


def decode_report(line: str) -> tuple[int, Counters] | None:
    """A report line (``S index json``) as the worker's index and counters, else None."""
    kind, _, rest = line.partition(" ")
    index, _, body = rest.partition(" ")
    if kind != "S" or not index.isdigit():
        return None
    try:
        d = json.loads(body)
        return int(index), Counters(int(d["to_net"]), int(d["to_dev"]),
                                    int(d["bytes_to_net"]), int(d["bytes_to_dev"]),
                                    Counter({str(k): int(v) for k, v in d["drops"].items()}))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


@dataclass
class Pool:
    pids: list[int]
    reports: int  # read end of a pipe: each worker writes its counters and failure here


def spawn(count: int, body: Callable[[int, Report], None]) -> Pool:
    """Fork ``count`` workers running ``body(index, report)``. When a worker ends it writes
    its counters (``report``) for the parent's summary; its SimpletunError becomes its exit
    status and a line for the parent to print (once, however many workers fail); Ctrl-C or
    SIGTERM ends it with status 0."""
    read_fd, write_fd = os.pipe()
    pids = []
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _interrupt_once()
            status, line = 0, ""
            report = Report()
            try:
                die_with_parent()
                body(index, report)
            except SimpletunError as exc:
                status, line = exc.exit_code, str(exc)
            except KeyboardInterrupt:
                status = 0
            except BaseException as exc:  # still one line, never a traceback
                status, line = 1, f"worker {index}: {type(exc).__name__}: {exc}"
            finally:
                while True:  # a signal may land here too: then ignore them again
                    try:
                        _ignore_signals()
                        break
                    except KeyboardInterrupt:
                        continue
                out = encode_report(index, report.counters) if report.counters else b""
                if line:  # one write below PIPE_BUF: lines never interleave
                    out += ("E " + line.replace("\n", " ")[:500] + "\n").encode()
                with contextlib.suppress(OSError):
                    os.write(write_fd, out)
                sys.stderr.flush()
                os._exit(status)
        pids.append(pid)
    os.close(write_fd)
    return Pool(pids, read_fd)


STOP_GRACE = 5.0  # seconds stopped workers have to report before they are killed


def wait(pool: Pool, log: Log, *, stopping: bool = False,
         parent: Counters | None = None) -> int:
    """Wait for every worker, then print the summary: each worker's line and a total (and
    the first failure's line last). The first worker to fail ends the others (they still
    report); Ctrl-C or SIGTERM here is passed on to the workers. ``stopping``: the workers
    are being stopped (the lines say "shutting down"); ``parent``: the parent's own counts
    (e.g. connections refused), added to the total. Returns the failure's status."""
    status = 0
    alive = set(pool.pids)
    try:
        while alive:
            pid, raw = os.wait()
            alive.discard(pid)
            code = os.waitstatus_to_exitcode(raw)
            if code != 0 and status == 0:
                status = code if code > 0 else 1
                stop(alive)
    except KeyboardInterrupt:
        stopping = True
    # from here on nothing may cut the summary short: a second Ctrl-C is ignored
    old = _ignore_signals()
    try:
        _reap(alive)
        with os.fdopen(pool.reports, "rb") as reports:
            lines = reports.read().decode(errors="replace").splitlines()
        _summary(len(pool.pids), lines, log, stopping=stopping, parent=parent)
        failures = [x[2:] for x in lines if x.startswith("E ")]
        if failures:
            print(f"simpletun: {failures[0]}", file=sys.stderr, flush=True)
    finally:
        _restore_signals(old)
    return status


def _reap(alive: set[int]) -> None:
    """Stop the workers still running and wait for them (killing those that do not end
    within STOP_GRACE)."""
    stop(alive)
    deadline = time.monotonic() + STOP_GRACE
    while alive:
        for pid in list(alive):
            with contextlib.suppress(ChildProcessError):
                done, _raw = os.waitpid(pid, os.WNOHANG)
                if not done:
                    continue
            alive.discard(pid)
        if alive and time.monotonic() > deadline:
            stop(alive, signal.SIGKILL)
            deadline = float("inf")
        if alive:
            time.sleep(0.02)


def _summary(count: int, lines: list[str], log: Log, *, stopping: bool,
             parent: Counters | None) -> None:
    word = "shutting down" if stopping else "done"
    reports = dict(r for x in lines if (r := decode_report(x)) is not None)
    total = Counters()
    if parent is not None:
        total.drops.update(parent.drops)
    for index in range(count):
        counters = reports.get(index)
        if counters is None:
            log(f"queue {index}: {word}: no report (the worker was killed)")
            continue
        total.add(counters)
        log(f"queue {index}: {word}: {counters.summary()}")
    log(f"{word}: total of {count} worker{'s' if count != 1 else ''}: {total.summary()}")


def stop(pids: set[int] | list[int], sig: int = signal.SIGTERM) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def only_queue(dev: Device, index: int) -> Device:
    """In a worker: a Device over queue ``index`` alone; this process's copies of the other
    queues are closed (the other processes keep theirs)."""
    for i, q in enumerate(dev.queues):
        if i != index:
            q.close()
    return Device(dev.name, [dev.queues[index]], tap=dev.tap, pi=dev.pi,
                  multi_queue=dev.multi_queue, vnet_hdr_size=dev.vnet_hdr_size)


def keep_queues(dev: Device, count: int) -> None:
    """Close the queues past ``count``: the kernel stops steering flows to them."""
    for q in dev.queues[count:]:
        q.close()
    del dev.queues[count:]


# --- server -------------------------------------------------------------------------------

def serve(dev: Device, listener: socket.socket, pump: Pump,
          make_pump: Callable[[Device, str], Pump], session: Session, log: Log, *,
          forked: Callable[[], None] | None = None) -> int:
    """Accept clients and hand each connection to the worker of its queue (``pump``: the
    parent's, for the hello; ``make_pump`` makes each worker's); returns the exit status (a
    worker failed) or raises KeyboardInterrupt, after the summary in either case.
    ``forked``: called in the parent once the workers are forked (what starts threads
    waits for it)."""
    count = len(dev.queues)
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(count)]
    board = HeardBoard(count)
    counts = CounterBoard(count)
    pump.shared = counts.total
    local = session.hello(pump.side) if session.negotiate else None

    def worker(index: int, report: Report) -> None:
        listener.close()
        for i, (mine, theirs) in enumerate(pairs):
            mine.close()
            if i != index:
                theirs.close()
        queue_dev = only_queue(dev, index)
        pump = make_pump(queue_dev, f"queue {index}: ")
        pump.publish = board.writer(index)
        pump.report = counts.writer(index)
        report.counters = pump.counters
        _serve_queue(queue_dev, pairs[index][1], pump, index=index, local=local)

    pool = spawn(count, worker)
    if forked is not None:
        forked()
    ctrls = [mine for mine, theirs in pairs]
    for _mine, theirs in pairs:
        theirs.close()
    try:
        return _dispatch(listener, ctrls, session, pump, log, board)
    finally:  # the workers report what they moved, the summary comes out whole
        with _uninterrupted():
            stop(pool.pids)
            wait(pool, log, stopping=True, parent=pump.counters)
            for c in ctrls:
                c.close()


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Ctrl-C and SIGTERM ignored meanwhile (the summary is on its way)."""
    old = _ignore_signals()
    try:
        yield
    finally:
        _restore_signals(old)


def _dispatch(listener: socket.socket, ctrls: list[socket.socket], session: Session,
              pump: Pump, log: Log, board: HeardBoard) -> int:
    """The parent's loop: shake hands with new connections (all at once, see admission),
    pass each proven one to its worker. A new session takes over when no worker serves the
    current one any more (each says when it dropped its connection), or as
    :func:`admission.decide` allows (the live client silent past the peer timeout, by the
    workers' ``board``): then every worker drops the old one. Returns 1 if a worker died."""
    count = len(ctrls)
    local = session.hello(pump.side) if session.negotiate else None
    limited, session_log = stream.server_logs(log)
    table = admission.Handshakes(listener, local, max_packet=pump.side.max_packet,
                                 tap=pump.dev.tap, counters=pump.counters, log=limited)
    # the board lags by up to publish_every: never take a live client for silent early
    timeout = (pump.timeout or stream.DEAD_PEER_TIMEOUT) + pump.publish_every
    queue_of = {c.fileno(): i for i, c in enumerate(ctrls)}
    assigned = [0] * count  # connections handed to each worker
    busy = [False] * count  # the worker holds the last connection it was handed
    live: admission.Live | None = None
    #: the (queue, connection number) a silently seated live client was handed as: only
    #: that connection's late hello proves it (not a stale one from an earlier seat)
    silent_seat: tuple[int, int] | None = None
    control = pump.control
    try:
        while True:
            wait = table.wait(time.monotonic())
            ctl = stream.control_fds(control, time.monotonic())
            if len(ctl) > 1:  # connections open: wake to close idle ones
                wait = stream.CONTROL_TICK if wait is None else min(wait, stream.CONTROL_TICK)
            readable, _, _ = select.select([*queue_of, *table.fds, *ctl], [], [], wait)
            now = time.monotonic()
            readable = [fd for fd in readable if not stream.control_ready(control, fd, ctl)]
            for fd in readable:
                if fd not in queue_of:
                    continue
                i = queue_of[fd]
                try:
                    msg = ctrls[i].recv(64)
                except OSError:
                    msg = b""
                if not msg:  # a worker's end closed: it died
                    log("a worker process ended unexpectedly: stopping")
                    return 1
                said = decode_worker_message(msg)
                if said is None or said[1] != assigned[i]:
                    continue  # about a connection it no longer holds
                if said[0] == "idle":
                    busy[i] = False
                elif live is not None and busy[i] and silent_seat == (i, said[1]):
                    live.prove(said[2])  # the silently seated client's late hello
                    silent_seat = None
            if not any(busy):
                live = None
                pump.connection = None
            for ready in table.handle([fd for fd in readable if fd not in queue_of], now):
                hello = ready.outcome.hello
                queue = hello.queue if hello is not None else 0
                if queue >= count:  # the client learnt from our hello that it stays idle
                    ready.sock.close()
                    continue
                if live is not None:
                    live.hear(board.latest(busy))
                verdict = admission.decide(live, ready.session, now, timeout,
                                           silent=ready.silent)
                if verdict == "refuse":
                    assert live is not None
                    table.refuse(ready, live)
                    continue
                try:
                    if live is None or ready.session is None or ready.session != live.session:
                        for c in ctrls:  # a new client: every worker drops the old one
                            c.send(encode_assignment(Assignment(reset=True, peer=ready.peer)))
                        busy = [False] * count
                        board.clear()
                        live = admission.Live(ready.session, ready.peer, now,
                                              silent=ready.silent)
                        silent_seat = (queue, assigned[queue] + 1) if ready.silent else None
                    conn = table.admit(ready)
                    wire = wire_of(ready.outcome)
                    session_log(f"client {ready.peer} connected ({wire.describe()}) on queue "
                                f"{queue} of {count}")
                    msg = encode_assignment(Assignment(
                        reset=False, wire=wire, peer=ready.peer,
                        leftover=ready.outcome.leftover, silent=ready.silent))
                    socket.send_fds(ctrls[queue], [msg], [conn.fileno()])
                    if pump.connection is None or pump.connection[0] != ready.peer:
                        pump.connection = (ready.peer, wire, time.time())
                except OSError:  # a worker's end closed as the client came
                    ready.sock.close()
                    log("a worker process ended unexpectedly: stopping")
                    return 1
                conn.close()
                assigned[queue] += 1
                busy[queue] = True
    finally:
        table.close()


def _serve_queue(dev: Device, ctrl: socket.socket, pump: Pump, *, index: int = 0,
                 local: native.Hello | None = None) -> None:
    """A server worker (of queue ``index``): pump whatever connection the parent hands
    over, until the parent goes away, and tell the parent when the connection ends, or
    when a silently seated client's late hello (answered with ``local``, the server's
    hello) makes it a native session. The queue is detached while there is no
    connection."""
    attached = True
    conn: socket.socket | None = None
    peer = ""
    received = 0  # connections handed over so far
    before = pump.counters.snapshot()
    _limited, session_log = stream.server_logs(pump.log)  # a reconnect loop cannot flood

    def drop(reason: str) -> None:
        nonlocal conn
        if conn is not None:
            conn.close()
            conn = None
            session_log(f"client {peer} disconnected: {reason} "
                     f"({pump.counters.since(before).summary()})")
            with contextlib.suppress(OSError):
                ctrl.send(encode_idle(received))

    while True:
        if conn is None and attached and dev.multi_queue:
            pump.side.discard()
            stream.set_queue_attached(dev, False)  # must not be polled now: wait on ctrl
            attached = False
        if conn is None:
            select.select([ctrl], [], [])
        msg, fds, _flags, _addr = socket.recv_fds(ctrl, 256 * 1024, 1)
        if not msg:
            drop("the server is stopping")
            return
        assignment = decode_assignment(msg)
        if assignment.reset:
            drop(f"replaced by client {assignment.peer}")
            continue
        drop(f"replaced by {assignment.peer}, a new connection of the same client")
        received += 1
        conn = socket.socket(fileno=fds[0])
        peer = assignment.peer
        if not attached:
            stream.set_queue_attached(dev, True)
            attached = True
        before = pump.counters.snapshot()
        ended: Ended = pump.run(conn, peer, assignment.wire, assignment.leftover,
                                extra=(ctrl,), silent=assignment.silent, local=local)
        late = ended.switch
        if late is not None and late.hello is not None:
            if late.hello.queue != index:
                drop(f"its late hello is for queue {late.hello.queue}")
                continue
            # the parent first (it must know the session before the client's other
            # connections can come), then the answer
            with contextlib.suppress(OSError):
                ctrl.send(encode_proven(received, late.hello.session))
            admission.send_quietly(conn, late.reply)
            wire = wire_of(late)
            session_log(f"client {peer} sent its hello late: now on the {wire.describe()}")
            ended = pump.run(conn, peer, wire, late.leftover, extra=(ctrl,))
        if ended.wake is None:
            drop(ended.reason)


# --- client -------------------------------------------------------------------------------

def run_clients(dev: Device, host: str, port: int, pump: Pump,
                make_pump: Callable[[Device, str], Pump], session: Session, *,
                reconnect: bool, log: Log, forked: Callable[[], None] | None = None) -> int:
    """Connect queue 0 (``pump``: the parent's), then run one client worker per queue the
    session uses. Returns the exit status, or raises KeyboardInterrupt. ``forked``: called
    in the parent once the workers are forked."""
    local = session.hello(pump.side) if session.negotiate else None
    backoff = Backoff()
    while True:
        try:
            sock, outcome = stream.connect(host, port, local, connect_timeout=10.0,
                                           handshake_timeout=session.timeout)
            break
        except tcp.TransportError as exc:
            if not reconnect:
                raise
            delay = backoff.next()
            log(f"{exc}; retrying in {delay:.1f} s")
            stream.wait_serving(pump.side, delay, pump.control)
    count = min(stream.queues_agreed(outcome), len(dev.queues))
    if count < len(dev.queues):
        log(f"the server serves {count} queue(s): using {count} of {len(dev.queues)}")
        keep_queues(dev, count)

    counts = CounterBoard(count)
    pump.shared = counts.total
    server = tcp.show((host, port))

    def worker(index: int, report: Report) -> None:
        queue_dev = only_queue(dev, index)
        pump = make_pump(queue_dev, f"queue {index}: ")
        pump.report = counts.writer(index)
        report.counters = pump.counters
        mine = Session(negotiate=session.negotiate, features=session.features,
                       session_id=session.session_id, timeout=session.timeout,
                       queue=index, queues=count)
        if index != 0:
            sock.close()
        stream.run_client(queue_dev, host, port, pump, reconnect=reconnect, session=mine,
                          first=(sock, outcome) if index == 0 else None)

    pool = spawn(count, worker)
    sock.close()
    if forked is not None:
        forked()
    # the workers reconnect on their own: the parent says the server and the first wire
    pump.connection = (server, wire_of(outcome), time.time())
    if pump.control is not None:
        try:
            _serve_control(pool, pump.control)
        except KeyboardInterrupt:
            stop(pool.pids)
            return wait(pool, log, stopping=True)
    return wait(pool, log)


def _serve_control(pool: Pool, control: stream.Control) -> None:
    """Serve the control socket until a worker ends (then :func:`wait` takes over)."""
    pidfds = []
    try:
        for pid in pool.pids:
            with contextlib.suppress(OSError):  # gone already: wait() reaps it
                pidfds.append(os.pidfd_open(pid))
        if len(pidfds) < len(pool.pids):
            return
        while True:
            ctl = stream.control_fds(control, time.monotonic())
            wait = stream.CONTROL_TICK if len(ctl) > 1 else None
            readable, _, _ = select.select([*pidfds, *ctl], [], [], wait)
            if any(fd in pidfds for fd in readable):
                return
            for fd in readable:
                stream.control_ready(control, fd, ctl)
    finally:
        for fd in pidfds:
            os.close(fd)
