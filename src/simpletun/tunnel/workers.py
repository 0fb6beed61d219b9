"""``--workers N``: one process per queue of a multi-queue device, each with its own
connection, so that flows spread over cores (the kernel steers each flow to one queue).

Client: the parent connects and shakes hands for queue 0 first; the server's hello says how
many queues it serves (a classic server: one). The parent closes the queues the session will
not use (the kernel stops steering to them) and forks one worker per remaining queue. Worker
0 takes the connection already made; the others connect with the same session id and their
queue number, and each then runs :func:`stream.run_client` on its own.

Server: the parent accepts and shakes hands, then passes the connection (SCM_RIGHTS over a
socketpair) to the worker that owns the queue the hello names; a classic client goes to
queue 0. A client with a new session id replaces the old one: every worker drops its
connection. A worker without a connection detaches its queue so that the kernel steers
nothing to it, and attaches it again when a connection arrives.

Each worker has its own counters and prints its own lines, prefixed with its queue.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..device.tuntap import Device
from ..errors import SimpletunError
from ..transport import tcp
from . import stream
from .backoff import Backoff
from .stream import Ended, Log, Pump, Session, Wire, accept_client, wire_of

MAX_WORKERS = 8
_PR_SET_PDEATHSIG = 1


def default_workers() -> int:
    """One worker per CPU, at most MAX_WORKERS."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))


# --- the message from the server parent to a worker (sans-IO) ------------------------------

_ASSIGN, _RESET = 1, 2
_HEAD = struct.Struct("!BBH")  # message kind, wire flags, length of the peer's name
_NATIVE, _VNET, _KEEPALIVE = 1, 2, 4


@dataclass(frozen=True)
class Assignment:
    """A connection for a worker (the descriptor travels beside it), or a reset: a new
    client (``peer``) replaces the current one."""

    reset: bool
    wire: Wire = stream.CLASSIC
    peer: str = ""
    leftover: bytes = b""


def encode_assignment(a: Assignment) -> bytes:
    peer = a.peer.encode()
    if a.reset:
        return _HEAD.pack(_RESET, 0, len(peer)) + peer
    flags = ((_NATIVE if a.wire.native else 0) | (_VNET if a.wire.vnet else 0)
             | (_KEEPALIVE if a.wire.keepalive else 0))
    return _HEAD.pack(_ASSIGN, flags, len(peer)) + peer + a.leftover


def decode_assignment(data: bytes) -> Assignment:
    kind, flags, plen = _HEAD.unpack_from(data)
    peer = data[_HEAD.size:_HEAD.size + plen].decode()
    if kind == _RESET:
        return Assignment(reset=True, peer=peer)
    wire = Wire(native=bool(flags & _NATIVE), vnet=bool(flags & _VNET),
                keepalive=bool(flags & _KEEPALIVE))
    return Assignment(reset=False, wire=wire, peer=peer, leftover=data[_HEAD.size + plen:])


# --- processes ----------------------------------------------------------------------------

def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM this process when its parent dies (no orphaned workers)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class Pool:
    pids: list[int]
    errors: int  # read end of a pipe: each failing worker writes its one line here


def spawn(count: int, body: Callable[[int], None]) -> Pool:
    """Fork ``count`` workers running ``body(index)``. A worker's SimpletunError becomes its
    exit status and a line for the parent to print (once, however many workers fail);
    Ctrl-C or SIGTERM ends it with status 0."""
    read_fd, write_fd = os.pipe()
    pids = []
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            status, line = 0, ""
            try:
                _die_with_parent()
                body(index)
            except SimpletunError as exc:
                status, line = exc.exit_code, str(exc)
            except KeyboardInterrupt:
                status = 0
            except BaseException as exc:  # still one line, never a traceback
                status, line = 1, f"worker {index}: {type(exc).__name__}: {exc}"
            finally:
                if line:  # one write below PIPE_BUF: lines never interleave
                    os.write(write_fd, (line.replace("\n", " ")[:500] + "\n").encode())
                sys.stderr.flush()
                os._exit(status)
        pids.append(pid)
    os.close(write_fd)
    return Pool(pids, read_fd)


def wait(pool: Pool) -> int:
    """Wait for every worker. The first to fail ends the others at once and quietly, and its
    line is printed; its status is returned. Ctrl-C or SIGTERM here is passed on to the
    workers, which say what they moved."""
    status = 0
    alive = set(pool.pids)
    try:
        while alive:
            pid, raw = os.wait()
            alive.discard(pid)
            code = os.waitstatus_to_exitcode(raw)
            if code != 0 and status == 0:
                status = code if code > 0 else 1
                stop(alive, signal.SIGKILL)
    except KeyboardInterrupt:
        stop(alive)
        for pid in alive:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    with os.fdopen(pool.errors, "rb") as errors:
        lines = errors.read().decode(errors="replace").splitlines()
    if lines:
        print(f"simpletun: {lines[0]}", file=sys.stderr, flush=True)
    return status


def stop(pids: set[int] | list[int], sig: int = signal.SIGTERM) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@contextlib.contextmanager
def _summary_on_exit(pump: Pump) -> Iterator[None]:
    """A worker stopped by Ctrl-C or SIGTERM says what it moved, as a lone tunnel does."""
    try:
        yield
    except KeyboardInterrupt:
        pump.log(f"shutting down: {pump.counters.summary()}")
        raise


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
          make_pump: Callable[[Device, str], Pump], session: Session, log: Log) -> int:
    """Accept clients and hand each connection to the worker of its queue (``pump``: the
    parent's, for the hello; ``make_pump`` makes each worker's); returns the exit status (a
    worker failed) or raises KeyboardInterrupt."""
    count = len(dev.queues)
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(count)]

    def worker(index: int) -> None:
        listener.close()
        for i, (mine, theirs) in enumerate(pairs):
            mine.close()
            if i != index:
                theirs.close()
        queue_dev = only_queue(dev, index)
        pump = make_pump(queue_dev, f"queue {index}: ")
        with _summary_on_exit(pump):
            _serve_queue(queue_dev, pairs[index][1], pump)

    pool = spawn(count, worker)
    ctrls = [mine for mine, theirs in pairs]
    for _mine, theirs in pairs:
        theirs.close()
    try:
        return _dispatch(listener, ctrls, session, pump, log)
    finally:  # signal first: each worker then says what it moved, before its ctrl closes
        stop(pool.pids)
        wait(pool)
        for c in ctrls:
            c.close()


def _dispatch(listener: socket.socket, ctrls: list[socket.socket], session: Session,
              pump: Pump, log: Log) -> int:
    """The parent's loop: accept, shake hands, pass on. Returns 1 if a worker died."""
    count = len(ctrls)
    local = session.hello(pump.side) if session.negotiate else None
    current: bytes | None = None
    watch = [listener, *ctrls]
    while True:
        readable, _, _ = select.select(watch, [], [])
        if any(c in readable for c in ctrls):  # a worker's end closed: it died
            log("a worker process ended unexpectedly: stopping")
            return 1
        conn, addr = listener.accept()
        peer = tcp.show(addr)
        outcome = accept_client(conn, peer, local, session.timeout, log)
        if outcome is None:
            continue
        hello = outcome.hello
        queue = hello.queue if hello is not None else 0
        if queue >= count:  # the client learnt from our hello that this queue stays idle
            conn.close()
            continue
        sid = hello.session if hello is not None else None
        if sid is None or sid != current:  # a new client: every worker drops the old one
            for c in ctrls:
                c.send(encode_assignment(Assignment(reset=True, peer=peer)))
            current = sid
        wire = wire_of(outcome)
        log(f"client {peer} connected ({wire.describe()}) on queue {queue} of {count}")
        msg = encode_assignment(Assignment(reset=False, wire=wire, peer=peer,
                                           leftover=outcome.leftover))
        socket.send_fds(ctrls[queue], [msg], [conn.fileno()])
        conn.close()


def _serve_queue(dev: Device, ctrl: socket.socket, pump: Pump) -> None:
    """A server worker: pump whatever connection the parent hands over, until the parent
    goes away. The queue is detached while there is no connection."""
    attached = True
    conn: socket.socket | None = None
    peer = ""
    before = pump.counters.snapshot()

    def drop(reason: str) -> None:
        nonlocal conn
        if conn is not None:
            conn.close()
            conn = None
            pump.log(f"client {peer} disconnected: {reason} "
                     f"({pump.counters.since(before).summary()})")

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
        conn = socket.socket(fileno=fds[0])
        peer = assignment.peer
        if not attached:
            stream.set_queue_attached(dev, True)
            attached = True
        before = pump.counters.snapshot()
        ended: Ended = pump.run(conn, peer, assignment.wire, assignment.leftover,
                                extra=(ctrl,))
        if ended.wake is None:
            drop(ended.reason)


# --- client -------------------------------------------------------------------------------

def run_clients(dev: Device, host: str, port: int, pump: Pump,
                make_pump: Callable[[Device, str], Pump], session: Session, *,
                reconnect: bool, log: Log) -> int:
    """Connect queue 0 (``pump``: the parent's), then run one client worker per queue the
    session uses. Returns the exit status, or raises KeyboardInterrupt."""
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
            pump.side.wait_discarding(delay)
    count = min(stream.queues_agreed(outcome), len(dev.queues))
    if count < len(dev.queues):
        log(f"the server serves {count} queue(s): using {count} of {len(dev.queues)}")
        keep_queues(dev, count)

    def worker(index: int) -> None:
        queue_dev = only_queue(dev, index)
        pump = make_pump(queue_dev, f"queue {index}: ")
        mine = Session(negotiate=session.negotiate, features=session.features,
                       session_id=session.session_id, timeout=session.timeout,
                       queue=index, queues=count)
        if index != 0:
            sock.close()
        with _summary_on_exit(pump):
            stream.run_client(queue_dev, host, port, pump, reconnect=reconnect, session=mine,
                              first=(sock, outcome) if index == 0 else None)

    pool = spawn(count, worker)
    sock.close()
    return wait(pool)
