"""UDP underlay: a bound socket (dual-stack server, or a client socket for the server's
family), batched sends with UDP GSO and batched receives with UDP GRO where the kernel has
them. One WireGuard message per datagram; the loop is :mod:`simpletun.wireguard.engine`."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from collections import Counter

from . import tcp
from .link import Address

SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h: GSO segment size (sendmsg cmsg / sockopt)
UDP_GRO = 104  # linux/udp.h: receive coalesced datagrams, segment size in a cmsg
_INT = struct.Struct("@i")
_U16 = struct.Struct("@H")
SOCKET_BUFFER = 4 * 1024 * 1024



def _tune(sock: socket.socket, gro: bool) -> bool:
    """Big buffers, and GRO on if ``gro``; returns whether GRO is on."""
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
    if not gro:
        return False
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        return True
    except OSError:
        return False


class Endpoint:
    """A UDP socket with batched I/O. ``gso``/``gro`` say what the kernel allowed.
    ``SIMPLETUN_UDP_NO_GSO=1`` / ``SIMPLETUN_UDP_NO_GRO=1`` in the environment switch them
    off, to measure what they bring."""

    name = "UDP"
    hint = "is 'simpletun -s --transport udp' running there, on this port?"

    blocked = False  # a datagram socket drops what it cannot take: never backpressure

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.drops: Counter[str] = Counter()  # nothing is counted here
        self.polling: bytes | None = None  # polls are ICMP's
        self.gro = _tune(sock, gro=not os.environ.get("SIMPLETUN_UDP_NO_GRO"))
        # switched off by the first send that the kernel refuses
        self.gso = not os.environ.get("SIMPLETUN_UDP_NO_GSO")

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def send_batch(self, frames: list[bytes | memoryview], address: Address) -> None:
        """Send datagrams, grouping same-size runs into one GSO sendmsg each. Errors
        (e.g. no route right now) drop the datagrams, as a network would."""
        sock = self.sock
        if self.gso and len(frames) > 1:
            for start, end in gso_runs([len(f) for f in frames]):
                run = frames[start:end]
                try:
                    if len(run) == 1:
                        sock.sendto(run[0], address)
                    else:
                        sock.sendmsg(run, [(SOL_UDP, UDP_SEGMENT, _U16.pack(len(run[0])))],
                                     0, address)
                except BlockingIOError:
                    return
                except OSError as exc:
                    if exc.errno in (errno.EIO, errno.EINVAL, errno.EOPNOTSUPP):
                        self.gso = False  # no GSO here: one datagram per sendto from now
                        self.send_batch(run, address)
                    elif exc.errno == errno.EMSGSIZE:  # larger than the path: GSO will
                        self._one_by_one(run, address)  # not, the kernel fragments one
                    continue
            return
        self._one_by_one(frames, address)

    def _one_by_one(self, frames: list[bytes | memoryview], address: Address) -> None:
        sock = self.sock
        for f in frames:
            try:
                sock.sendto(f, address)
            except BlockingIOError:
                return
            except OSError:
                self.drops["send-failed"] += 1

    def send(self, data: bytes | bytearray | memoryview, address: Address) -> None:
        try:  # noqa: SIM105 (suppress() costs three calls more per packet)
            self.sock.sendto(data, address)
        except OSError:  # no route now, a full buffer: dropped, as a network would
            pass

    def receive(self, buf: bytearray) -> tuple[list[memoryview], Address] | None:
        """One receive: the datagrams (several when GRO coalesced them) and their source,
        or None when nothing is waiting. Views into ``buf``: used before the next call."""
        try:
            n, ancdata, _flags, address = self.sock.recvmsg_into([buf], 64)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:  # e.g. ICMP port unreachable reported on the socket: try again later
            return [], ("", 0)
        return segments(memoryview(buf), n, gro_size(ancdata)), address


    def tick(self, now: float) -> float | None:
        """Nothing to do on a timer over UDP."""
        return None

    def connected(self) -> list[Address]:
        return []  # no connections over UDP

    def peers(self, endpoints: frozenset[Address]) -> None:
        """Nothing to keep: a UDP socket holds no state per peer."""

    def show(self, address: Address) -> str:
        return tcp.show(address)

    def same(self, a: Address, b: Address) -> bool:
        return same(a, b)


def gro_size(ancdata: list[tuple[int, int, bytes]]) -> int:
    """The segment size of a GRO receive (from its UDP_GRO cmsg); 0 for one datagram (the
    kernel adds the cmsg only to coalesced receives)."""
    for level, kind, data in ancdata:
        if level == SOL_UDP and kind == UDP_GRO:
            return int((_INT.unpack(data[:_INT.size]) if len(data) >= _INT.size
                        else _U16.unpack(data[:2]))[0])
    return 0


def server(port: int, host: str | None = None) -> Endpoint:
    """A UDP socket on ``port`` for all addresses, IPv4 and IPv6 (or ``host``)."""
    sock = tcp.listen(port, host, kind=socket.SOCK_DGRAM)
    sock.setblocking(False)
    return Endpoint(sock)


def client(host: str, port: int) -> tuple[Endpoint, Address]:
    """A UDP socket for talking to ``host:port`` (not connected: the server's replies are
    matched by address) and the server's address."""
    family, address = tcp.addresses(host, port)[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return Endpoint(sock), address


def same(a: Address, b: Address) -> bool:
    """Whether two socket addresses are one peer (IPv4-mapped IPv6 is IPv4)."""
    return _plain(a) == _plain(b)


def _plain(a: Address) -> Address:
    host = a[0][7:] if a[0].startswith("::ffff:") else a[0]
    return host, a[1]


def segments(buf: memoryview, size: int, segment: int) -> list[memoryview]:
    """Split what one GRO receive returned (``size`` bytes of datagrams, each ``segment``
    long but the last) into the datagrams."""
    if segment <= 0 or segment >= size:
        return [buf[:size]]
    return [buf[i:min(i + segment, size)] for i in range(0, size, segment)]


def gso_runs(sizes: list[int], limit: int = 64, max_bytes: int = 65000) -> list[tuple[int, int]]:
    """Group consecutive datagrams for UDP GSO: runs ``(start, end)`` in which all have the
    same size except that the last may be shorter, at most ``limit`` datagrams and
    ``max_bytes`` in all. Each run leaves in one sendmsg."""
    runs: list[tuple[int, int]] = []
    start = 0
    while start < len(sizes):
        size = sizes[start]
        end, total = start + 1, size
        while (end < len(sizes) and end - start < limit and total + sizes[end] <= max_bytes
               and sizes[end] <= size):
            total += sizes[end]
            end += 1
            if sizes[end - 1] < size:  # a shorter one ends the run
                break
        runs.append((start, end))
        start = end
    return runs
