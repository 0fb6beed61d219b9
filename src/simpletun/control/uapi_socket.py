"""The UAPI unix socket ``/var/run/wireguard/IFACE.sock``, served from the engine's own
select loop (no threads).

The loop selects on :meth:`UapiServer.fds`, calls :meth:`UapiServer.ready` for each
readable one and :meth:`UapiServer.tick` now and then; requests are answered from there,
through a :class:`Handler` (the engine). A connection may carry several requests in a row;
``wg`` sends one and closes. Text is parsed and formatted by :mod:`simpletun.control.uapi`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import time
from collections.abc import Callable
from typing import Protocol

from simpletun.control.status import Stats, format_stats
from simpletun.control.uapi import (
    DeviceSet,
    DeviceStatus,
    UapiError,
    format_errno,
    format_get,
    parse_set,
)
from simpletun.errors import BadName, ControlSocketError
from simpletun.tunnel.ratelimit import LimitedLog

DEFAULT_DIRECTORY = "/var/run/wireguard"
MAX_CONNECTIONS = 16
IDLE_TIMEOUT = 10.0  # seconds without a byte from the client
MAX_SET = 64 << 20  # a set request (wg setconf of 10,000 peers is about 2 MB)
RECV_SIZE = 64 << 10
SEND_TIMEOUT = 2.0  # for the whole answer; a client that does not read loses its connection
_OP_MAX = 16  # the operation line is "get=1\n" or "set=1\n"
_GET = b"get=1\n"
_SET = b"set=1\n"
#: simpletun's extension: the transport, wire, role, counters, drops by reason and packets
#: per peer, as key=value lines (:mod:`simpletun.control.status`)
_STATS = b"stats=1\n\n"


class Handler(Protocol):
    def uapi_get(self) -> DeviceStatus: ...

    # optional: ``uapi_stats(self) -> Stats`` answers simpletun's ``stats=1``

    def uapi_set(self, request: DeviceSet) -> None:
        """Apply a request; raise :class:`UapiError` to refuse it (EADDRINUSE for a port
        that cannot be bound, EINVAL for a value the engine cannot take...)."""
        ...


class _Conn:
    __slots__ = ("buf", "scan", "seen", "sock")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.scan = 0  # where to look next for the blank line that ends a set request
        self.seen = now  # the last time a byte came in


class UapiServer:
    """The listening socket and its client connections for interface ``interface``.

    ``log`` (optional) hears why a request was refused or a connection dropped, limited
    so that a client in a loop does not flood it. Counters: ``refused`` (requests answered
    with an errno) and ``dropped`` (connections closed for junk, size, idleness or the
    connection limit).
    """

    def __init__(self, interface: str, handler: Handler, *,
                 directory: str = DEFAULT_DIRECTORY,
                 log: Callable[[str], None] | None = None) -> None:
        if not interface or "/" in interface or interface in (".", ".."):
            raise BadName(f"{interface!r} cannot name a control socket: use an interface name")
        self.interface = interface
        self.path = os.path.join(directory, f"{interface}.sock")
        self._handler = handler
        self._log = LimitedLog(log) if log is not None else None
        self._conns: dict[int, _Conn] = {}
        self.refused = 0
        self.dropped = 0
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise ControlSocketError(
                f"cannot make {directory} for the control socket: {exc.strerror}") from None
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._bind()
            self._listener.listen(MAX_CONNECTIONS)
            self._listener.setblocking(False)
            self._ino = os.stat(self.path).st_ino
        except BaseException:
            self._listener.close()
            raise

    # -- opening ----------------------------------------------------------------------

    def _bind(self) -> None:
        old_umask = os.umask(0o077)  # the socket is the owner's only, as wireguard-go's
        try:
            try:
                self._listener.bind(self.path)
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise ControlSocketError(
                        f"cannot serve {self.path}: {exc.strerror or exc}") from None
            self._remove_stale()
            try:
                self._listener.bind(self.path)
            except OSError as exc:
                raise ControlSocketError(
                    f"cannot serve {self.path}: {exc.strerror or exc}") from None
        finally:
            os.umask(old_umask)

    def _remove_stale(self) -> None:
        """The path exists: if a process answers on it, refuse; if nobody does (a process
        that died without cleaning up), remove it."""
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlSocketError(
                f"{self.path} exists and is not a socket: remove it if nothing uses it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(self.path)
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        except OSError:
            pass  # EAGAIN (backlog full), a timeout...: someone is there
        finally:
            probe.close()
        raise ControlSocketError(
            f"interface {self.interface} is already served by another process "
            f"({self.path} answers): stop it first or choose another interface name")

    # -- the select loop's side -------------------------------------------------------

    def fileno(self) -> int:
        return self._listener.fileno()

    def fds(self) -> list[int]:
        """The listening socket and every open connection: select on these for reading."""
        if self._listener.fileno() < 0:
            return []
        return [self._listener.fileno(), *self._conns]

    def ready(self, fd: int) -> None:
        """``fd`` (one of :meth:`fds`) is readable: accept, or read and answer what is
        complete. An fd no longer ours is ignored."""
        if fd == self._listener.fileno() and fd >= 0:
            self._accept()
            return
        conn = self._conns.get(fd)
        if conn is None:
            return
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._at_eof(conn)
            return
        conn.seen = time.monotonic()
        conn.buf += data
        self._serve(conn)

    def tick(self, now: float) -> None:
        """Close connections idle for :data:`IDLE_TIMEOUT`; ``now`` is ``time.monotonic()``."""
        for conn in list(self._conns.values()):
            if now - conn.seen > IDLE_TIMEOUT:
                self._drop(conn, "idle")

    def close(self) -> None:
        """Close every connection and the listener; remove the socket path if it is still
        the one this server made."""
        for conn in list(self._conns.values()):
            self._close(conn)
        if self._listener.fileno() < 0:
            return
        self._listener.close()
        with contextlib.suppress(OSError):
            if os.lstat(self.path).st_ino == self._ino:
                os.unlink(self.path)

    def __enter__(self) -> UapiServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- connections ------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(MAX_CONNECTIONS):
            try:
                sock, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE...: the client waits in the backlog
                self._note("accept", f"control socket: accept failed: {exc.strerror}")
                return
            if len(self._conns) >= MAX_CONNECTIONS:
                sock.close()
                self.dropped += 1
                self._note("full", f"control socket: more than {MAX_CONNECTIONS} "
                                   "connections; one closed")
                continue
            sock.setblocking(False)
            self._conns[sock.fileno()] = _Conn(sock, time.monotonic())

    def _close(self, conn: _Conn) -> None:
        self._conns.pop(conn.sock.fileno(), None)
        conn.sock.close()

    def _drop(self, conn: _Conn, why: str) -> None:
        self.dropped += 1
        self._note("drop", f"control socket: connection closed ({why})")
        self._close(conn)

    def _note(self, key: str, message: str) -> None:
        if self._log is not None:
            self._log(key, message)

    def _send(self, conn: _Conn, answer: str) -> bool:
        try:
            conn.sock.settimeout(SEND_TIMEOUT)
            conn.sock.sendall(answer.encode("ascii"))
            conn.sock.setblocking(False)
        except OSError:  # gone, or not reading (timeout)
            self._close(conn)
            return False
        return True

    def _serve(self, conn: _Conn) -> None:
        """Answer every complete request at the front of the buffer."""
        buf = conn.buf
        while buf:
            head = bytes(buf[:len(_STATS)])
            if _STATS.startswith(head):
                if len(head) < len(_STATS):
                    return
                del buf[:len(_STATS)]
                if not self._send(conn, self._stats()):
                    return
                continue
            op = bytes(buf[:len(_GET)])
            if not (_GET.startswith(op) or _SET.startswith(op)):
                self._drop(conn, "not a UAPI request")
                return
            if len(op) < len(_GET):
                return
            if op == _GET:
                if len(buf) < len(_GET) + 1:
                    return
                blank = buf[len(_GET)]
                del buf[:len(_GET) + 1]
                if blank != ord("\n"):
                    answer = self._refuse(UapiError(errno.EINVAL, "text after get=1"))
                else:
                    answer = self._get()
            else:
                end = self._find_blank(conn)
                if end is None:
                    if len(buf) > MAX_SET:
                        self._send(conn, self._refuse(UapiError(
                            errno.EMSGSIZE, f"set request over {MAX_SET >> 20} MiB")))
                        self._close(conn)
                    return
                body_end, request_end = end
                body = bytes(buf[len(_SET):body_end])
                del buf[:request_end]
                conn.scan = 0
                answer = self._set(body)
            if not self._send(conn, answer):
                return

    @staticmethod
    def _find_blank(conn: _Conn) -> tuple[int, int] | None:
        """The end of the body and of the request if the blank line ending a set is in."""
        buf = conn.buf
        start = max(len(_SET) - 1, conn.scan)  # "set=1\n\n": the op's newline counts
        found = [(at + 1, at + 2) for at in (buf.find(b"\n\n", start),) if at >= 0]
        found += [(at + 1, at + 3) for at in (buf.find(b"\n\r\n", start),) if at >= 0]
        if not found:
            conn.scan = max(start, len(buf) - 2)
            return None
        return min(found)

    def _at_eof(self, conn: _Conn) -> None:
        # A set cut short by the end of the stream is applied, as wireguard-go does.
        if conn.buf.startswith(_SET):
            self._send(conn, self._set(bytes(conn.buf[len(_SET):])))
        elif conn.buf:
            self.dropped += 1
        self._close(conn)

    def _refuse(self, exc: UapiError) -> str:
        self.refused += 1
        self._note("refused", f"control socket: request refused: {exc.message}")
        return format_errno(exc.errno)

    def _get(self) -> str:
        try:
            return format_get(self._handler.uapi_get())
        except UapiError as exc:
            return self._refuse(exc)

    def _stats(self) -> str:
        stats = getattr(self._handler, "uapi_stats", None)
        return format_stats(stats() if stats is not None else Stats())

    def _set(self, body: bytes) -> str:
        try:
            self._handler.uapi_set(parse_set(body.decode("latin-1")))
        except UapiError as exc:
            return self._refuse(exc)
        return format_errno(0)
