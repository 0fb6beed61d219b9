"""WireGuard messages inside ICMP echo messages (``--transport icmp``), pure (sans-IO).

Each WireGuard message (:mod:`simpletun.wireguard.messages`) rides in the payload of one
ICMP echo message, after a 6-byte mark::

    echo header (8: type, code, checksum, identifier, sequence)
    mark (6: magic, 4 bytes; backlog, 2 bytes)
    message (a transport message: 16-byte header + packet + 16-byte tag), or nothing

Client to server the messages are echo requests (magic ``STq\\x01``), server to client echo
replies (``STr\\x01``). An echo without the mark is an ordinary ping and is left alone; the
kernel's own reply to one of our requests echoes the *request's* mark, so a client never
mistakes it for the server's.

A server may only answer requests it got (that is what gets a reply through firewalls and
NAT): every request is a **credit** for one reply. The client keeps enough requests
outstanding: each carries a message of its own or, when it has nothing to send, nothing
at all (a **poll**: the mark alone). :class:`Credits` is the server's side: the requests
it holds, oldest first, answered with data, or answered empty after :data:`HOLD` seconds
so the client knows them used (the server does that for its authenticated peers only).
:class:`Poller` is the client's: which requests are outstanding and how many polls to
send. A reply's backlog field says how many messages the server holds for that client for
want of credits; the client sends that many more polls.

A server has many clients (peers, and strangers whose requests carry a handshake): the
credits of each are kept apart, with bounds on addresses and on requests held in all, so
that junk cannot grow them; what goes first is the least recently supplied address that is
not protected (the server protects its peers' endpoints).
"""

from __future__ import annotations

import heapq
import itertools
import struct
from collections import OrderedDict, deque
from typing import Generic, NamedTuple, TypeVar

from ..packets import Malformed
from ..packets.checksum import ones_sum
from ..wireguard.messages import TRANSPORT_MIN_LEN

ECHO_REPLY, ECHO_REQUEST = 0, 8
ECHO6_REQUEST, ECHO6_REPLY = 128, 129
REQUEST_MAGIC = b"STq\x01"
REPLY_MAGIC = b"STr\x01"
ECHO = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
MARK = struct.Struct("!4sH")  # magic, backlog
HEAD_LEN = ECHO.size + MARK.size  # 14

#: what a WireGuard transport message adds to the packet it carries: header (16) + tag (16)
MESSAGE_OVERHEAD = TRANSPORT_MIN_LEN
#: outer overhead per packet: IP header + ICMP echo header + mark + message overhead
ICMP_OVERHEAD = {4: 20 + HEAD_LEN + MESSAGE_OVERHEAD, 6: 40 + HEAD_LEN + MESSAGE_OVERHEAD}
#: the default overlay MTU: an outer packet fits a 1500-byte path over IPv4 and IPv6
#: (a multiple of 16, which WireGuard pads packets to)
DEFAULT_MTU = (1500 - ICMP_OVERHEAD[6]) // 16 * 16  # 1408

HOLD = 2.0  # a server answers a request it could not use for data empty after this long
LIFETIME = HOLD + 2.0  # a client that hears nothing this long counts its requests lost
LOW_WATER = 4  # requests a client keeps outstanding when idle
HIGH_WATER = 512  # and at most, polls included
CAP = 1024  # requests a server holds per client (the oldest go first)
ADDRESSES = 4096  # client addresses a server holds requests of
TOTAL = 65536  # requests a server holds in all


def head(kind: int, ident: int, seq: int, magic: bytes, backlog: int = 0) -> bytes:
    """Echo header (checksum 0) and mark: what goes before a datagram."""
    return ECHO.pack(kind, 0, 0, ident, seq) + MARK.pack(magic, min(backlog, 0xFFFF))


def seal4(head: bytes, payload: bytes | bytearray | memoryview = b"") -> bytes:
    """``head`` with the ICMPv4 checksum over head and payload filled in (``head`` is of even
    length, so the two sums add). ICMPv6 needs none: the kernel fills it in."""
    s = ones_sum(head) + ones_sum(payload)
    s = (s & 0xFFFF) + (s >> 16)
    return head[:2] + struct.pack("!H", ~s & 0xFFFF) + head[4:]


def valid4(message: bytes | memoryview) -> bool:
    """Whether an ICMPv4 message's checksum is right."""
    return ones_sum(message) == 0xFFFF


class Echo(NamedTuple):
    type: int
    ident: int
    seq: int
    magic: bytes | None  # REQUEST_MAGIC / REPLY_MAGIC, or None for an ordinary ping
    backlog: int
    payload: memoryview  # after the mark (ours) or the echo header (an ordinary ping)


def parse(message: memoryview) -> Echo:
    """An ICMP(v6) echo message; Malformed if too short to be one."""
    if len(message) < ECHO.size:
        raise Malformed(f"ICMP message of {len(message)} bytes, shorter than an echo header")
    kind, _code, _sum, ident, seq = ECHO.unpack_from(message)
    if len(message) >= HEAD_LEN:
        magic, backlog = MARK.unpack_from(message, ECHO.size)
        if magic in (REQUEST_MAGIC, REPLY_MAGIC):
            return Echo(kind, ident, seq, magic, backlog, message[HEAD_LEN:])
    return Echo(kind, ident, seq, None, 0, message[ECHO.size:])


def later_or_same(a: int, b: int) -> bool:
    """Whether 16-bit sequence ``a`` is ``b`` or comes after it (modulo wrap-around)."""
    return (a - b) & 0xFFFF < 0x8000


A = TypeVar("A")
T = TypeVar("T")


class Credits(Generic[A, T]):
    """Server side: the requests each client address sent that have not been answered,
    oldest first. ``T`` is whatever answering one needs (its sequence number, the address it
    was sent to).

    Bounded whatever arrives: at most ``cap`` requests per address (its oldest go first),
    ``addresses`` addresses and ``total`` requests in all. Beyond those, the address least
    recently supplied goes, all its requests with it, unless it is in :attr:`protected`
    (the server's authenticated peers): junk never evicts a peer. When only peers hold
    requests and there are ``total`` of them, the oldest request goes (it would soon be
    answered empty anyway). Every operation costs
    O(1) amortized (O(log n) for expiry), so a flood of new addresses cannot make it slow.
    """

    def __init__(self, *, hold: float = HOLD, cap: int = CAP, addresses: int = ADDRESSES,
                 total: int = TOTAL) -> None:
        self.hold, self.cap, self.addresses, self.total = hold, cap, addresses, total
        #: addresses never evicted (the server's peers)
        self.protected: frozenset[A] = frozenset()
        # least recently supplied first; an address with nothing held is not kept
        self._held: OrderedDict[A, deque[tuple[float, T]]] = OrderedDict()
        # (time, tie, address): a heap with, for each address, an entry no later than its
        # oldest request (stale ones are skipped or renewed when they come up)
        self._due: list[tuple[float, int, A]] = []
        self._tie = itertools.count()
        self._count = 0

    @property
    def held(self) -> int:
        """Requests held, in all."""
        return self._count

    @property
    def senders(self) -> int:
        """Addresses with requests held."""
        return len(self._held)

    def add(self, address: A, token: T, now: float) -> bool:
        """Hold a request; False when it cannot be (there are ``addresses`` addresses
        already, all protected)."""
        held = self._held.get(address)
        if held is not None:
            self._held.move_to_end(address)
        elif len(self._held) >= self.addresses and not self._evict(address):
            return False
        if held is not None and len(held) >= self.cap:
            held.popleft()
            self._count -= 1
        elif self._count >= self.total and not self._evict(address):
            self._drop_oldest()  # only peers (and this address) hold any: the oldest goes
            held = self._held.get(address)
        if not held:
            held = self._held[address] = deque()
            heapq.heappush(self._due, (now, next(self._tie), address))
        held.append((now, token))
        self._count += 1
        if len(self._due) > 2 * len(self._held) + 64:
            self._compact()
        return True

    def _drop_oldest(self) -> None:
        first = self._first()
        if first is not None:
            held = self._held[first[1]]
            held.popleft()
            self._count -= 1
            if not held:
                del self._held[first[1]]

    def _evict(self, keep: A) -> bool:
        """Drop the least recently supplied address that is neither protected nor ``keep``
        (those met on the way go to the back); False if there is none."""
        for _ in range(len(self._held)):
            victim = next(iter(self._held))
            if victim == keep or victim in self.protected:
                self._held.move_to_end(victim)
                continue
            self._count -= len(self._held.pop(victim))
            return True
        return False

    def _compact(self) -> None:
        self._due = [(q[0][0], next(self._tie), a) for a, q in self._held.items()]
        heapq.heapify(self._due)

    def take(self, address: A) -> T | None:
        """The oldest request of ``address`` to answer, or None if it has none."""
        held = self._held.get(address)
        if not held:
            return None
        token = held.popleft()[1]
        self._count -= 1
        if not held:
            del self._held[address]
        return token

    def count(self, address: A) -> int:
        held = self._held.get(address)
        return len(held) if held else 0

    def _first(self) -> tuple[float, A] | None:
        """The oldest request's time and address, the stale heap entries before it gone."""
        due = self._due
        while due:
            when, _tie, address = due[0]
            held = self._held.get(address)
            if held and held[0][0] <= when:
                return when, address
            heapq.heappop(due)
            if held:  # its oldest was taken or dropped: renew the entry
                heapq.heappush(due, (held[0][0], next(self._tie), address))
        return None

    def expired(self, now: float) -> list[tuple[A, T]]:
        """The requests held for ``hold`` seconds, oldest first: answer them (or not)."""
        out: list[tuple[A, T]] = []
        while (first := self._first()) is not None and first[0] + self.hold <= now:
            address = first[1]
            held = self._held[address]
            while held and held[0][0] + self.hold <= now:
                out.append((address, held.popleft()[1]))
                self._count -= 1
            if not held:
                del self._held[address]
        return out

    def wait(self, now: float) -> float | None:
        """Seconds until a request expires (None: none held)."""
        first = self._first()
        return None if first is None else max(0.0, first[0] + self.hold - now)

class Poller:
    """Client side: which requests are outstanding (the server holds them or they are on
    the way) and how many polls keep the server supplied.

    The server answers requests oldest first, so a reply for sequence *s* settles every
    request up to *s*: the ones before it were answered (or lost) already. Nothing heard
    for ``lifetime`` seconds settles them all (the server restarted, or the path lost them).
    """

    def __init__(self, *, low: int = LOW_WATER, high: int = HIGH_WATER,
                 lifetime: float = LIFETIME) -> None:
        self.low, self.high, self.lifetime = low, high, lifetime
        self._out: deque[int] = deque()  # sequence numbers (16-bit), oldest first
        self._next = 0
        self._demand = 0  # data replies since the last polls, less data requests sent
        self._backlog = 0
        self._since = 0.0  # when the last answer came (or the first request went)

    @property
    def outstanding(self) -> int:
        return len(self._out)

    def request(self, now: float, poll: bool = False) -> int:
        """A request leaves (a poll, or one with data, which supplies the server as well):
        its sequence number."""
        if not poll:
            self._demand -= 1
        seq = self._next
        self._next = (seq + 1) & 0xFFFF
        if not self._out:
            self._since = now
        self._out.append(seq)
        return seq

    def answered(self, seq: int, backlog: int, carried: bool, now: float) -> None:
        """A reply to request ``seq`` came, with data or empty, and the server's backlog."""
        out = self._out
        while out and later_or_same(seq, out[0]):
            out.popleft()
        self._since = now
        self._backlog = backlog
        if carried:
            self._demand += 1

    def polls(self, now: float) -> int:
        """How many polls to send now."""
        if self._out and now - self._since >= self.lifetime:
            self._out.clear()
        # every data reply is replaced by a request, unless data requests did it already
        n = max(self.low + self._backlog - len(self._out), self._demand)
        self._demand = self._backlog = 0
        return max(0, min(n, self.high - len(self._out)))

    def wait(self, now: float) -> float | None:
        """Seconds until outstanding requests count as lost (None: none outstanding)."""
        return max(0.0, self._since + self.lifetime - now) if self._out else None

    def reset(self) -> None:
        """The session ended: nothing is outstanding any more."""
        self._out.clear()
        self._demand = self._backlog = 0
