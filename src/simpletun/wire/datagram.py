"""The native wire over datagrams (UDP, and ICMP payloads): one packet per datagram, each
with a 9-byte header, plus the pure logic of who the server's peer is (pure, sans-IO).

Header: type (1 byte: the native frame types, plus HELLO, REJECT and BUSY), session id
(8 bytes, chosen by the client in its hello). Payload: DATA one packet, KEEPALIVE, REJECT
and BUSY nothing,
DATA_PARTIAL one packet whose TCP/UDP checksum holds only the pseudo-header sum (a segment
of a super-packet, :mod:`wire.segment`; sent only when the hellos agreed FEATURE_VNET),
CLOSE a UTF-8 reason, HELLO a native handshake message (:func:`native.encode_hello` /
``encode_refuse``: the client's hello, the server's answer or refusal).

The session id is what lets the server follow a client whose address changes (roaming) and
what it drops datagrams by when they belong to no session it knows. It is not secret: real
authentication comes with encryption. REJECT tells a client that the server does not know
its session (the server restarted): the client shakes hands again at once.

While a client is live, a hello with another session id does not take its place
(:meth:`Peer.admit`): only the live session itself (its reconnect, or its roam) may shake
hands again, and a new session gets in once the live one has been silent for the peer
timeout. Until then the server answers BUSY, so that the client can say why and try again
later. No answer to a datagram is ever longer than the datagram (:func:`refusal` cuts a
refusal's reason to fit): the server never amplifies what a forged source address sends.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..packets import Malformed
from . import native

HELLO, REJECT, DATA_PARTIAL, BUSY = 5, 6, 7, 8
DATA, KEEPALIVE, CLOSE = native.DATA, native.KEEPALIVE, native.CLOSE
TYPES = {DATA, KEEPALIVE, CLOSE, HELLO, REJECT, DATA_PARTIAL, BUSY}
HEADER = struct.Struct("!B8s")
HEADER_LEN = HEADER.size  # 9

#: outer overhead per packet: IP header + UDP header + this header
UDP_OVERHEAD = {4: 20 + 8 + HEADER_LEN, 6: 40 + 8 + HEADER_LEN}
#: the default overlay MTU: an outer packet fits a 1500-byte path over IPv4 and IPv6
DEFAULT_MTU = 1500 - UDP_OVERHEAD[6] - 3  # 1440


def header(kind: int, session: bytes) -> bytes:
    return HEADER.pack(kind, session)


def encode(kind: int, session: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, session) + payload


def parse(datagram: bytes | memoryview) -> tuple[int, bytes, bytes | memoryview]:
    """(type, session, payload); Malformed if it is not one of ours."""
    if len(datagram) < HEADER_LEN:
        raise Malformed(f"datagram of {len(datagram)} bytes, shorter than the header")
    kind = datagram[0]
    if kind not in TYPES:
        raise Malformed(f"datagram of unknown type {kind}")
    return kind, bytes(datagram[1:HEADER_LEN]), datagram[HEADER_LEN:]


def refusal(session: bytes, reason: str, limit: int) -> bytes | None:
    """A HELLO datagram refusing ``session`` with ``reason``, the reason cut so that the
    whole is at most ``limit`` bytes (the size of the hello it answers); None when not even
    a refusal without a reason fits."""
    room = limit - len(encode(HELLO, session, native.encode_refuse("")))
    if room < 0:
        return None
    cut = reason.encode()[:room].decode(errors="ignore")
    return encode(HELLO, session, native.encode_refuse(cut))


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


A = TypeVar("A")

#: what :meth:`Peer.admit` says of a hello
NEW, RENEWED, REPLACED, REFUSED = "new", "renewed", "replaced", "refused"


@dataclass
class Verdict(Generic[A]):
    ok: bool
    roamed_from: A | None = None
    why: str = ""


class Peer(Generic[A]):
    """The server's idea of its client: a session id and the address it last came from."""

    def __init__(self) -> None:
        self.session: bytes | None = None
        self.address: A | None = None

    def admit(self, session: bytes, address: A, *, silence: float, takeover: float) -> str:
        """A valid hello for ``session`` came from ``address``; ``silence``: seconds since
        the live session (if any) was last heard. Returns NEW (no session was live), RENEWED
        (the live session again, maybe from a new address), REPLACED (the live session had
        been silent for ``takeover`` seconds: this one takes its place) or REFUSED (another
        session is live: nothing changes)."""
        if self.session is None:
            outcome = NEW
        elif session == self.session:
            outcome = RENEWED
        elif silence >= takeover:
            outcome = REPLACED
        else:
            return REFUSED
        self.session, self.address = session, address
        return outcome

    def check(self, session: bytes, address: A) -> Verdict[A]:
        """May a datagram with this session id from this address reach the device? A known
        session from a new address is the client roaming: the address is updated."""
        if self.session is None or session != self.session:
            return Verdict(False, why="unknown-session")
        if address != self.address:
            old, self.address = self.address, address
            return Verdict(True, roamed_from=old)
        return Verdict(True)

    def forget(self) -> None:
        self.session = self.address = None
