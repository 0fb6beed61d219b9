"""What the WireGuard engine needs of a link: whole messages in, with the address they came
from, and messages out, in batches. A link knows its sockets and its framing only; it never
parses a message (the core does). Three links carry the same messages:

- UDP (:class:`transport.udp.Endpoint`): one message per datagram, the standard wire;
- TCP (:mod:`transport.tcp_link`): each message behind a 2-byte big-endian length, over a
  connection per peer (the client connects and reconnects; the server accepts many);
- ICMP (:mod:`transport.icmp`): one message per echo payload, behind simpletun's mark.

An address is whatever the link uses to tell peers apart: a socket address for UDP, the
connection's remote address for TCP, ``(host, echo identifier)`` for ICMP. The core keeps a
peer's latest authenticated address as its endpoint and hands it back to :meth:`send`.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

#: (host, port) or (host, port, flowinfo, scope); ICMP: (host, echo identifier)
Address = tuple[str, int] | tuple[str, int, int, int]


class Link(Protocol):
    name: str  # "UDP", "TCP", "ICMP": for status lines
    #: what the link drops, by reason (the engine adds it to the core's for `wg-drops`)
    drops: Counter[str]
    @property
    def port(self) -> int:
        """The local port users configure (UDP, TCP server), 0 where there is none."""
        ...

    @property
    def blocked(self) -> bool:
        """True while the link cannot take more (a TCP connection's send buffer is full):
        the engine stops reading the device until it clears, so the kernel queues
        (backpressure)."""
        ...

    def fileno(self) -> int:
        """One fd that is readable when :meth:`receive` may have something (or, for a link
        with many sockets, when any of them needs attention)."""
        ...

    def receive(self, buf: bytearray) -> tuple[list[memoryview], Address] | None:
        """The messages of one receive (views into ``buf`` or the link's own buffers, valid
        until the next call) and where they came from; an empty list when the receive
        carried none (a poll, a partial frame, a closed connection); None when nothing more
        is waiting."""
        ...

    def send(self, data: bytes | bytearray | memoryview, address: Address) -> None:
        """One message; errors drop it (counted where the link can tell), as a network
        would."""
        ...

    def send_batch(self, frames: list[bytes | memoryview], address: Address) -> None:
        """Several messages to one address, with as few system calls as the link allows."""
        ...

    def tick(self, now: float) -> float | None:
        """Timed work (reconnects, polls, held requests); seconds until more is due."""
        ...

    def connected(self) -> list[Address]:
        """Addresses whose connection came up since the last call (a TCP client's, to its
        server): the engine sends the peer there a keepalive, so that the other end learns
        the new connection before it has something to send. Datagram links: none."""
        ...

    def peers(self, endpoints: frozenset[Address]) -> None:
        """The peers' endpoints as the core knows them (authenticated addresses), told
        about once a second and after each handshake. A TCP server keeps those connections
        past its limits on unproven ones; an ICMP server answers held requests only there."""
        ...

    def show(self, address: Address) -> str:
        """An address as users read it."""
        ...

    def close(self) -> None: ...
