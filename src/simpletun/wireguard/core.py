"""The WireGuard device as a sans-IO state machine: our identity, the peers, the index
table, cookies and load, cryptokey routing, and every timer. Bytes and the time go in;
packets for the device, messages for the network (:attr:`WireGuard.outbox`) and drop
counts (:attr:`WireGuard.drops`) come out. No sockets, no fds: :mod:`.engine` does the I/O.

The data path is two calls the engine makes per packet, both into its own buffers:
:meth:`WireGuard.open` (a datagram in, the checked inner packet decrypted into a buffer)
and :meth:`WireGuard.seal` (a packet read from the device, sealed in place behind room
left for the transport header). Everything else (handshakes, cookies, keepalives, timers)
is rare and may allocate."""

from __future__ import annotations

import heapq
import random
import secrets
import struct
from collections import Counter, deque
from typing import NamedTuple

from cryptography.exceptions import InvalidTag

from ..tunnel.ratelimit import AnswerLimiter
from . import crypto, keys, messages, noise, timers
from .allowedips import AllowedIPs, Network
from .cookie import Checker
from .keypair import REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES, REKEY_AFTER_TIME, Keypair
from .messages import (
    COOKIE_REPLY,
    EXT_FRAME,
    EXT_HEADER,
    EXT_LEN,
    EXT_SUPER,
    INITIATION,
    TRANSPORT,
    TRANSPORT_HEADER,
)
from .peer import Address, Peer
from .replay import REJECT_AFTER_MESSAGES
from .shared import Table

HANDSHAKE_RATE = 1 / 50  # at most 50 initiations per second consumed from one peer
LOAD_WINDOW = 1.0  # handshake messages are counted per this window...
#: ...and more than this many in one puts us under load for a window. A responder's
#: handshake costs about 230 us here (some 4,000 a second on one core): the threshold is
#: half that, so cookies begin while the handshakes still keep up (``simpletun load
#: --rate 0``: 1,000 peers at once through in 0.3 s, not 37 s at the former 256)
LOAD_THRESHOLD = 2048
#: keep-key-fresh on receive: the initiator re-keys when its session is this old
REKEY_ON_RECEIVE = REJECT_AFTER_TIME - timers.KEEPALIVE_TIMEOUT - timers.REKEY_TIMEOUT

_ZEROS = bytes(16)
_TRANSPORT_MAX = messages.TRANSPORT_MAX_LEN - 32
_NONCE_PAD = b"\0\0\0\0"
_U16 = struct.Struct("!H")
_VNET_LEN = 10  # the virtio_net_hdr in front of an EXT_SUPER packet
RESERVE = 64  # counters a worker takes from the shared table at a time (one batch)...
RESERVE_TIME = 0.001  # ...and sends for 1 ms at most (the others' keep the window moving)
EVENTS = 64  # handshake events kept for the engine's status lines at most

#: what :attr:`WireGuard.events` reports: a session with a peer began (handshake done)...
HANDSHAKE = "handshake"
#: ...an initiation with a key that is not a configured peer...
UNKNOWN_PEER = "unknown-peer"
#: ...a handshake message for another public key than ours (mac1 does not match)
NOT_FOR_US = "not-for-us"


class WireGuard:
    """One WireGuard interface. ``wall_offset`` turns the caller's clock into UNIX time
    (for initiation timestamps and handshake times shown to users); ``random`` gives the
    timers' jitter (seeded in tests)."""

    def __init__(self, *, mtu: int = 1420, wall_offset: float = 0.0,
                 rng: random.Random | None = None, tap: bool = False,
                 extensions: bool = False) -> None:
        self.mtu = mtu
        #: tap: the plaintexts are Ethernet frames (EXT_FRAME); an IP packet is dropped
        self.tap = tap
        #: accept EXT_SUPER messages (super-packets between simpletun peers)
        self.extensions = extensions or tap
        #: the peer of the last message :meth:`open` returned a packet for
        self.last_peer: Peer | None = None
        #: (what, source, peer) of rare handshake events, for status lines (bounded: the
        #: oldest go); the engine drains it
        self.events: deque[tuple[str, Address, Peer | None]] = deque(maxlen=EVENTS)
        self.wall_offset = wall_offset
        self.random = rng or random.Random()
        self.local: noise.Local | None = None
        self.checker: Checker | None = None
        self.peers: dict[bytes, Peer] = {}
        self.allowed: AllowedIPs[Peer] = AllowedIPs()
        #: local index -> the keypair, or the peer whose handshake holds it
        self.indices: dict[int, Keypair | Peer] = {}
        self.outbox: list[tuple[bytes | bytearray, Address]] = []
        self.drops: Counter[str] = Counter()
        self.cookies_sent = 0
        self.load_threshold = LOAD_THRESHOLD
        #: an initiator re-keys its session when it is this old (tests make it shorter)
        self.rekey_after_time = REKEY_AFTER_TIME
        self._load_count = 0
        self._load_window_start = -1e18
        self._under_load_until = -1e18
        self._answers = AnswerLimiter(interval=0.05, per_second=2000.0)  # cookie replies
        self._admit = AnswerLimiter(interval=0.05, per_second=5000.0)  # proven, under load
        self._heap: list[tuple[float, int, Peer]] = []
        self._seq = 0
        #: several processes send on our keypairs (:mod:`.workers`): each keypair's send
        #: counter is a slot of this table, shared by them all (and the leader keeps the
        #: keys to hand them over)
        self.table: Table | None = None
        #: the leader of n workers picks its sessions' receiver indices so that their low
        #: byte mod n takes turns (the kernel steers by it to a worker: :mod:`.workers`)
        self.turns = 1
        self._turn = 0
        #: which worker this process is: it opens only messages for indices of its turn
        self.turn_of = 0
        #: the public keys of peers whose keypairs changed since the engine last handed
        #: them to the workers (by key: a peer removed and added again is a new object)
        self.rekeyed: set[bytes] = set()
        #: a worker's core: no handshakes, no timers; it sends and receives on keypairs the
        #: engine installs (:meth:`install`), and says what it needs in :attr:`wanted`
        #: (a handshake) and :attr:`confirmed` (a responder's session it saw used)
        self.follower = False
        self.wanted: set[Peer] = set()
        self.confirmed: dict[Peer, int] = {}

    # --- configuration -------------------------------------------------------------------
    @property
    def public(self) -> bytes | None:
        return self.local.public if self.local is not None else None

    def set_private_key(self, private: bytes | None) -> None:
        """A new identity (None or zeros: none). Sessions made under the old one end; a
        peer with our own public key is removed, as WireGuard does."""
        if private is not None and keys.is_zero(private):
            private = None
        if private is not None and self.local is not None and crypto.equal(
                private, self.local.private):
            return
        self.local = noise.Local.of(private) if private is not None else None
        self.checker = Checker(self.local.public) if self.local is not None else None
        for peer in list(self.peers.values()):
            if self.local is not None and peer.public == self.local.public:
                self.remove_peer(peer.public)
                continue
            peer.handshake.precompute(self.local)
            self._forget(peer.keypairs.clear(), peer)
            self._drop_handshake(peer)

    def add_peer(self, public: bytes) -> Peer:
        """The peer with ``public`` (created if new)."""
        peer = self.peers.get(public)
        if peer is None:
            peer = self.peers[public] = Peer(public)
            peer.handshake.precompute(self.local)
        return peer

    def remove_peer(self, public: bytes) -> None:
        """Remove a peer at once: its sessions, handshake, staged packets and routes go."""
        peer = self.peers.pop(public, None)
        if peer is None:
            return
        peer.removed = True
        self.allowed.remove_peer(peer)
        self._forget(peer.keypairs.clear(), peer)
        self._drop_handshake(peer)
        peer.staged.clear()
        peer.timers.stop()

    def remove_all_peers(self) -> None:
        for public in list(self.peers):
            self.remove_peer(public)

    def set_preshared(self, peer: Peer, key: bytes | None) -> None:
        peer.handshake.preshared = key if key is not None else crypto.ZERO_KEY

    def set_persistent(self, peer: Peer, seconds: int, now: float) -> None:
        """Persistent keepalive every ``seconds`` (0: off); turning it on sends one at once
        when the peer has an endpoint, as wireguard-go does."""
        was = peer.persistent
        peer.persistent = seconds
        if not seconds:
            peer.timers.persistent_at = None
        elif not was and peer.endpoint is not None and self.local is not None:
            self.send_keepalive(peer, now)

    def add_allowed(self, peer: Peer, network: Network) -> None:
        self.allowed.insert(network, peer)

    def clear_allowed(self, peer: Peer) -> None:
        self.allowed.remove_peer(peer)

    # --- network -> device ---------------------------------------------------------------
    def open(self, data: memoryview, source: Address, now: float, into: memoryview) -> int:
        """Take one datagram from ``source``. A transport message that authenticates is
        decrypted into ``into`` (which must hold ``len(data) - 32`` bytes) and the length
        of the inner packet is returned when it may go to the device (its source is in the
        peer's allowed IPs); 0 for anything else (a keepalive, a handshake, a drop)."""
        n = len(data) - 32
        if n >= 0:  # the type word is 4 only for a transport message (reserved bytes zero)
            t, receiver, counter = TRANSPORT_HEADER.unpack_from(data)
        if n < 0 or t != TRANSPORT or n > _TRANSPORT_MAX:
            kind = messages.kind(data)
            if isinstance(kind, str):
                self.drops[kind] += 1
            else:
                self._handshake_message(kind, data, source, now)
            return 0
        kp = self.indices.get(receiver)
        if type(kp) is not Keypair:
            self.drops["unknown-index"] += 1
            return 0
        if self.turns > 1 and (receiver & 0xFF) % self.turns != self.turn_of:
            self.drops["steered-elsewhere"] += 1  # another worker's window checks it
            return 0
        cipher = kp.receive
        if cipher is None or now - kp.created >= REJECT_AFTER_TIME:
            self.drops["expired-keypair"] += 1
            return 0
        try:
            cipher.decrypt_into(_NONCE_PAD + counter.to_bytes(8, "little"), data[16:], None,
                                into[:n])
        except InvalidTag:
            self.drops["bad-tag"] += 1
            return 0
        if not kp.window.accept(counter):
            self.drops["replay"] += 1
            return 0
        peer: Peer = kp.owner  # type: ignore[assignment]
        peer.rx_bytes += n + 32
        peer.rx_packets += 1
        if source != peer.endpoint:
            peer.endpoint = source  # roaming: the latest authenticated source
        t_ = peer.timers
        t_.new_handshake_at = None  # any authenticated packet received
        if peer.persistent:
            self._persist(peer, now)
        if kp is not peer.keypairs.current or now - kp.created > REKEY_ON_RECEIVE:
            self._received_aside(peer, kp, now)
        if n == 0:
            return 0  # a keepalive
        t_.data_received(now)
        at = t_.keepalive_at
        if at is not None and (peer.heap_at is None or at < peer.heap_at):
            self._schedule(peer, at)
        self.last_peer = peer
        if into[0] >= 0x40 and not self.tap:
            return self._inner(into, n, peer)
        return self._extension(into, n, peer)

    def _received_aside(self, peer: Peer, kp: Keypair, now: float) -> None:
        """A message on a keypair other than a young current one: the session it confirms
        (the responder's *next*), or time to keep the initiator's key fresh."""
        if kp is peer.keypairs.next:
            self._confirmed(peer, kp, now)
            return
        current, t_ = peer.keypairs.current, peer.timers
        if (current is not None and current.initiator and not t_.sent_last_minute_handshake
                and now - current.created > REKEY_ON_RECEIVE):
            t_.sent_last_minute_handshake = True  # keep the key fresh: nearly too old
            self.initiate(peer, now)

    def _inner(self, packet: memoryview, n: int, peer: Peer) -> int:
        """The inner packet's length, if its source may come from ``peer``; else 0."""
        v = packet[0] >> 4
        if v == 4 and n >= 20:
            size: int = _U16.unpack_from(packet, 2)[0]
            holder = self.allowed.lookup_v4(packet, 12)
        elif v == 6 and n >= 40:
            size = 40 + int(_U16.unpack_from(packet, 4)[0])
            holder = self.allowed.lookup_v6(packet, 8)
        else:
            self.drops["bad-inner"] += 1
            return 0
        if size > n or size < 20:
            self.drops["bad-inner"] += 1
            return 0
        if holder is not peer:
            self.drops["source-not-allowed"] += 1
            return 0
        return size

    def _extension(self, plain: memoryview, n: int, peer: Peer) -> int:
        """The length of an extension message (header included) that may go on; else 0.
        A super-packet's source must be in the peer's allowed IPs as any packet's; a frame
        goes to the engine's switch (tap: MAC learning instead of allowed IPs)."""
        if n < EXT_LEN or plain[0] >= 0x40 or not self.extensions:
            self.drops["not-a-frame" if self.tap else "bad-inner"] += 1
            return 0
        ext: int
        length: int
        ext, length = EXT_HEADER.unpack_from(plain)
        size = EXT_LEN + length
        if size > n:
            self.drops["bad-extension"] += 1
            return 0
        if ext == EXT_FRAME and self.tap and length >= 14:
            return size
        if ext == EXT_SUPER and not self.tap and length > _VNET_LEN:
            start = EXT_LEN + _VNET_LEN
            inner = self._inner(plain[start:size], length - _VNET_LEN, peer)
            if inner == length - _VNET_LEN:
                return size
            if inner == 0:
                return 0  # counted by _inner
        self.drops["bad-extension"] += 1
        return 0

    # --- device -> network ---------------------------------------------------------------
    def route(self, packet: memoryview) -> Peer | None:
        """The peer whose allowed IPs hold the packet's destination (longest prefix)."""
        v = packet[0] >> 4
        if v == 4 and len(packet) >= 20:
            return self.allowed.lookup_v4(packet, 16)
        if v == 6 and len(packet) >= 40:
            return self.allowed.lookup_v6(packet, 24)
        return None

    def seal(self, peer: Peer, slot: memoryview, size: int, now: float) -> int:
        """Seal the packet at ``slot[16:16 + size]`` in place into a transport message
        starting at ``slot[0]`` (``slot`` needs 16 + 16 bytes of padding and tag room
        behind the packet) and return its length; 0 when there is no session yet (the
        packet is kept and a handshake started)."""
        kp = peer.keypairs.current
        if kp is None or kp.send is None or now - kp.created >= REJECT_AFTER_TIME or (
                kp.send_counter >= REJECT_AFTER_MESSAGES):
            peer.staged.append(bytes(slot[16:16 + size]))
            self.initiate(peer, now)
            return 0
        counter = kp.send_counter
        if kp.shared is not None and (counter >= kp.send_limit or now > kp.reserved_until):
            counter = self._reserve(kp, kp.shared, now)
            if counter < 0:  # no counters to send with: as without a session
                peer.staged.append(bytes(slot[16:16 + size]))
                self.initiate(peer, now)
                return 0
        kp.send_counter = counter + 1
        mtu = self.mtu
        p = (size + 15) & ~15 if size <= mtu else messages.padded(size, mtu)
        if p > mtu >= size:
            p = mtu  # never padded beyond the MTU
        if p != size:
            slot[16 + size:16 + p] = _ZEROS[:p - size]
        TRANSPORT_HEADER.pack_into(slot, 0, TRANSPORT, kp.remote_index, counter)
        kp.send.encrypt_into(_NONCE_PAD + counter.to_bytes(8, "little"), slot[16:16 + p], None,
                             slot[16:32 + p])
        peer.tx_bytes += p + 32
        peer.tx_packets += 1
        t_ = peer.timers
        t_.keepalive_at = None  # any authenticated packet sent
        if peer.persistent:
            self._persist(peer, now)
        if size and t_.new_handshake_at is None:
            t_.data_sent(now, self.random.random())
            self._schedule(peer, t_.new_handshake_at)
        if counter > REKEY_AFTER_MESSAGES or (
                kp.initiator and now - kp.created > self.rekey_after_time):
            self.initiate(peer, now)
        return p + 32

    def send_keepalive(self, peer: Peer, now: float) -> None:
        """A keepalive (an empty transport message), or a handshake first."""
        if not peer.staged:
            peer.staged.append(b"")
        self.send_staged(peer, now)

    def reconnected(self, peer: Peer, now: float) -> None:
        """The link to ``peer`` is new (a TCP connection came up): a keepalive on the
        session tells the other end which path it is on, and a handshake goes at once
        (one sent while there was no path was lost, and the other end may have restarted
        and lost the session: the session goes on meanwhile, its keys kept as previous)."""
        # a new connection is a new path: no REKEY_TIMEOUT to wait (the link's reconnect
        # backoff spaces them)
        peer.last_initiation_sent = -1e18
        self.send_keepalive(peer, now)
        self.initiate(peer, now)

    def send_staged(self, peer: Peer, now: float) -> None:
        """Seal what waited for a session into the outbox (or start a handshake)."""
        kp = peer.keypairs.current
        if not peer.staged or peer.endpoint is None:
            return
        if kp is None or not kp.usable_for_sending(now):
            self.initiate(peer, now)
            return
        staged = list(peer.staged)
        peer.staged.clear()
        for packet in staged:
            slot = bytearray(16 + len(packet) + 32)
            slot[16:16 + len(packet)] = packet
            n = self.seal(peer, memoryview(slot), len(packet), now)
            if n:
                self.outbox.append((slot[:n], peer.endpoint))

    # --- handshakes ----------------------------------------------------------------------
    def initiate(self, peer: Peer, now: float, *, retry: bool = False) -> None:
        """Send a handshake initiation to ``peer``, at most one per REKEY_TIMEOUT."""
        if self.follower:  # the leader makes handshakes
            self.wanted.add(peer)
            return
        if not retry:
            peer.timers.attempts = 0
        if (self.local is None or peer.endpoint is None or peer.removed
                or now - peer.last_initiation_sent < timers.REKEY_TIMEOUT):
            return
        peer.last_initiation_sent = now
        self._drop_handshake(peer)
        index = self._new_index(peer)
        wall_ns = int((now + self.wall_offset) * 1e9)
        msg = noise.create_initiation(self.local, peer.handshake, index, noise.tai64n(wall_ns))
        if msg is None:
            del self.indices[index]
            self.drops["bad-peer-key"] += 1
            return
        peer.stamper.stamp(msg, now)
        self.outbox.append((msg, peer.endpoint))
        peer.tx_bytes += len(msg)
        t_ = peer.timers
        t_.traversal(now, peer.persistent)
        t_.authenticated_sent()
        t_.handshake_initiated(now, self.random.random())
        self._schedule(peer, t_.earliest())

    def under_load(self, now: float) -> bool:
        return now < self._under_load_until

    def _count_handshake(self, now: float) -> bool:
        """Count a handshake message; True when we are under load."""
        if now - self._load_window_start >= LOAD_WINDOW:
            self._load_window_start, self._load_count = now, 0
        self._load_count += 1
        if self._load_count > self.load_threshold:
            self._under_load_until = now + LOAD_WINDOW
        return now < self._under_load_until

    def _handshake_message(self, t: int, data: memoryview, source: Address, now: float) -> None:
        if self.follower:  # steered to the leader; one here came around the steering
            self.drops["handshake-at-worker"] += 1
            return
        checker, local = self.checker, self.local
        if checker is None or local is None:
            self.drops["no-private-key"] += 1
            return
        if t == COOKIE_REPLY:
            reply = messages.parse_cookie_reply(data)
            owner = self.indices.get(reply.receiver)
            peer = owner if type(owner) is Peer else getattr(owner, "owner", None)
            if not isinstance(peer, Peer) or not peer.stamper.take(reply, now):
                self.drops["bad-cookie-reply"] += 1
            return
        if not checker.mac1_ok(data):
            self.drops["bad-mac1"] += 1
            self.events.append((NOT_FOR_US, source, None))
            return
        if self._count_handshake(now):
            where = _source_bytes(source)
            if not checker.mac2_ok(data, where, now):
                sender = struct.unpack_from("<I", data, 4)[0]
                if self._answers.allow(where, now):
                    self.outbox.append((checker.reply(data, sender, where, now), source))
                    self.cookies_sent += 1
                self.drops["under-load"] += 1
                return
            if not self._admit.allow(source[0], now):
                self.drops["rate-limited"] += 1
                return
        if t == INITIATION:
            self._initiation(local, data, source, now)
        else:
            self._response(local, data, source, now)

    def _initiation(self, local: noise.Local, data: memoryview, source: Address,
                    now: float) -> None:
        msg = messages.parse_initiation(data)
        opened = noise.open_initiation(local, msg)
        if isinstance(opened, str):
            self.drops[opened] += 1
            return
        peer = self.peers.get(opened[0])
        if peer is None:
            self.drops["unknown-peer"] += 1
            self.events.append((UNKNOWN_PEER, source, None))
            return
        consumed = noise.consume_initiation(peer.handshake, msg, opened)
        if isinstance(consumed, str):
            self.drops[consumed] += 1
            return
        if consumed.timestamp <= peer.handshake.last_timestamp:
            self.drops["replayed-initiation"] += 1
            return
        if now - peer.last_initiation_consumed < HANDSHAKE_RATE:
            self.drops["initiation-flood"] += 1
            return
        peer.last_initiation_consumed = now
        self._drop_handshake(peer)
        noise.accept(peer.handshake, consumed)
        peer.endpoint = source
        peer.rx_bytes += len(data)
        t_ = peer.timers
        t_.traversal(now, peer.persistent)
        t_.authenticated_received()
        index = self._new_index(peer)
        response = noise.create_response(peer.handshake, index)
        if response is None:
            del self.indices[index]
            peer.handshake.clear()
            self.drops["bad-ephemeral"] += 1
            return
        remote = peer.handshake.remote_index
        send, receive, initiator = noise.derive(peer.handshake)
        kp = self._keypair(send, receive, initiator, now, index, remote, peer)
        if kp is None:  # no counter slot (workers): no session, no answer
            del self.indices[index]
            peer.handshake.clear()
            return
        self._forget(peer.keypairs.derived(kp), peer)
        t_.session_derived(now)
        peer.stamper.stamp(response, now)
        self.outbox.append((response, source))
        peer.tx_bytes += len(response)
        peer.last_initiation_sent = now  # a handshake sent: none of ours for REKEY_TIMEOUT
        t_.authenticated_sent()
        self._schedule(peer, t_.earliest())

    def _response(self, local: noise.Local, data: memoryview, source: Address,
                  now: float) -> None:
        msg = messages.parse_response(data)
        peer = self.indices.get(msg.receiver)
        if type(peer) is not Peer or peer.handshake.local_index != msg.receiver:
            self.drops["unknown-index"] += 1
            return
        why = noise.consume_response(local, peer.handshake, msg)
        if why is not None:
            self.drops[why] += 1
            return
        peer.endpoint = source
        peer.rx_bytes += len(data)
        t_ = peer.timers
        t_.traversal(now, peer.persistent)
        t_.authenticated_received()
        index = peer.handshake.local_index
        send, receive, initiator = noise.derive(peer.handshake)
        kp = self._keypair(send, receive, initiator, now, index, msg.sender, peer)
        if kp is None:  # no counter slot (workers): the handshake goes, a retry may do
            self._drop_handshake(peer)
            return
        self._forget(peer.keypairs.derived(kp), peer)
        t_.session_derived(now)
        self._complete(peer, now)
        self.send_keepalive(peer, now)  # confirms the session to the responder
        self._schedule(peer, t_.earliest())

    def _confirmed(self, peer: Peer, kp: Keypair, now: float) -> None:
        """The initiator used the session we answered: it becomes current."""
        _rotated, gone = peer.keypairs.received_with(kp)
        self._forget(gone, peer)
        if self.follower:  # the engine tells the leader, whose handshake it was
            self.confirmed[peer] = kp.local_index
            self.send_staged(peer, now)
            return
        self._complete(peer, now)
        self.send_staged(peer, now)

    def _complete(self, peer: Peer, now: float) -> None:
        peer.timers.handshake_complete()
        peer.last_handshake = now
        if peer.endpoint is not None:
            self.events.append((HANDSHAKE, peer.endpoint, peer))

    # --- timers --------------------------------------------------------------------------
    def _persist(self, peer: Peer, now: float) -> None:
        """An authenticated packet in or out: the persistent keepalive starts over."""
        peer.timers.persistent_at = at = now + peer.persistent
        if peer.heap_at is None or at < peer.heap_at:
            self._schedule(peer, at)

    def _schedule(self, peer: Peer, at: float | None) -> None:
        if at is not None and not self.follower and (peer.heap_at is None or at < peer.heap_at):
            peer.heap_at = at
            self._seq += 1
            heapq.heappush(self._heap, (at, self._seq, peer))

    @property
    def next_timer(self) -> float | None:
        """When the earliest timer is due (None: none pending)."""
        return self._heap[0][0] if self._heap else None

    def tick(self, now: float) -> float | None:
        """Fire what is due; returns when to call again (None: nothing pending)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, peer = heapq.heappop(heap)
            if peer.removed or peer.heap_at != at:
                continue
            peer.heap_at = None
            for what in peer.timers.expired(now):
                self._fire(peer, what, now)
            self._schedule(peer, peer.timers.earliest())
        return heap[0][0] if heap else None

    def _fire(self, peer: Peer, what: str, now: float) -> None:
        if what == timers.RETRANSMIT:
            self.initiate(peer, now, retry=True)
        elif what == timers.GIVE_UP:
            peer.staged.clear()
        elif what in (timers.KEEPALIVE, timers.PERSISTENT):
            if what == timers.KEEPALIVE or peer.persistent:
                self.send_keepalive(peer, now)
        elif what == timers.NEW_HANDSHAKE:
            self.initiate(peer, now)
        elif what == timers.ZERO_KEYS:
            self._forget(peer.keypairs.clear(), peer)
            self._drop_handshake(peer)
            peer.staged.clear()

    # --- workers: several processes on one interface (.workers) --------------------------
    def _keypair(self, send: bytes, receive: bytes, initiator: bool, now: float, index: int,
                 remote: int, peer: Peer) -> Keypair | None:
        """A new keypair of ours (in a shared slot when there are workers; None when the
        table is full: the session is refused, counted)."""
        table = self.table
        slot, generation = None, 0
        if table is not None:
            got = table.allocate()
            if got is None:
                self.drops["no-counter-slot"] += 1
                return None
            slot, generation = got
        kp = Keypair(send, receive, initiator=initiator, created=now, local_index=index,
                     remote_index=remote, owner=peer, shared=slot, generation=generation)
        self.indices[index] = kp
        return kp

    def _reserve(self, kp: Keypair, slot: int, now: float) -> int:
        """The next counters for ``kp`` (its counter in ``slot`` of the shared table): a
        run of :data:`RESERVE`, used for :data:`RESERVE_TIME` at most (a run held longer
        would fall behind what the other processes send, out of the peer's replay
        window); -1 when there are none to take."""
        if self.table is None:
            return -1
        start = self.table.reserve(slot, kp.generation, RESERVE)
        if start < 0:  # the leader dropped it (its message on the way), or a lock is stuck
            return -1
        kp.send_limit = start + RESERVE
        kp.reserved_until = now + RESERVE_TIME
        return start

    def shared(self, peer: Peer) -> list[SharedKeypair]:
        """Leader: ``peer``'s keypairs as its workers take them (:meth:`install`)."""
        out: list[SharedKeypair] = []
        for slot, kp in (("previous", peer.keypairs.previous),
                         ("current", peer.keypairs.current), ("next", peer.keypairs.next)):
            if kp is not None and kp.secrets is not None and kp.shared is not None:
                out.append(SharedKeypair(slot, kp.local_index, kp.remote_index,
                                         kp.secrets[0], kp.secrets[1], kp.created,
                                         kp.initiator, kp.shared, kp.generation))
        return out

    def install(self, peer: Peer, shared: list[SharedKeypair], now: float) -> None:
        """Follower: the leader's keypairs for ``peer`` (their counters in the shared
        table). One this core already holds is kept as it is; the rest are forgotten.
        Packets that waited for a session go out."""
        held = {(kp.local_index, kp.shared, kp.generation): kp
                for kp in peer.keypairs.all()}
        slots: dict[str, Keypair | None] = {"previous": None, "current": None, "next": None}
        for sk in shared:
            kp = held.pop((sk.local_index, sk.counter, sk.generation), None)
            if kp is None:
                kp = Keypair(sk.send, sk.receive, initiator=sk.initiator, created=sk.created,
                             local_index=sk.local_index, remote_index=sk.remote_index,
                             owner=peer, shared=sk.counter, generation=sk.generation)
                self.indices[sk.local_index] = kp
            slots[sk.slot] = kp
        for kp in held.values():
            kp.zero()
        self._forget(list(held.values()))
        ks = peer.keypairs
        ks.previous, ks.current, ks.next = slots["previous"], slots["current"], slots["next"]
        self.wanted.discard(peer)
        if peer.staged and ks.current is not None:
            self.send_staged(peer, now)

    def worked(self, peer: Peer, heard: bool, received: bool, sent: bool,
               now: float) -> None:
        """Leader: lately a worker heard from ``peer`` (``heard``: any authenticated
        message), received data from it (``received``: and sent nothing back since) or
        sent it data (``sent``); the timers run as if this process had. What was sent
        comes first: a message heard in the same report says the peer is there."""
        t_ = peer.timers
        current = peer.keypairs.current
        if sent:
            t_.keepalive_at = None
            if t_.new_handshake_at is None:
                t_.data_sent(now, self.random.random())
                self._schedule(peer, t_.new_handshake_at)
            if current is not None and current.initiator and (
                    now - current.created > self.rekey_after_time):
                self.initiate(peer, now)
        if heard:
            t_.new_handshake_at = None
            if current is not None and now - current.created > REKEY_ON_RECEIVE:
                self._received_aside(peer, current, now)
        if received and not sent:
            t_.data_received(now)
            self._schedule(peer, t_.keepalive_at)
        if (heard or sent) and peer.persistent:
            self._persist(peer, now)

    def confirm(self, peer: Peer, local_index: int, now: float) -> None:
        """Leader: a worker saw the initiator use the session we answered."""
        kp = peer.keypairs.next
        if kp is not None and kp.local_index == local_index:
            self._confirmed(peer, kp, now)

    # --- indices -------------------------------------------------------------------------
    def _new_index(self, peer: Peer) -> int:
        while True:
            index = secrets.randbits(32)
            if self.turns > 1:
                self._turn = (self._turn + 1) % self.turns
                low = index & 0xFF
                low += self._turn - low % self.turns
                if low > 0xFF:
                    low -= self.turns
                index = (index & ~0xFF) | low
            if index not in self.indices:
                self.indices[index] = peer
                return index

    def _drop_handshake(self, peer: Peer) -> None:
        hs = peer.handshake
        if hs.local_index and self.indices.get(hs.local_index) is peer:
            del self.indices[hs.local_index]
        hs.clear()

    def _forget(self, gone: list[Keypair], peer: Peer | None = None) -> None:
        """Drop the indices of keypairs that fell out; ``peer``'s keypairs changed (its
        workers are told)."""
        table = self.table
        for kp in gone:
            if self.indices.get(kp.local_index) is kp:
                del self.indices[kp.local_index]
            if table is not None and kp.shared is not None and not self.follower:
                table.release(kp.shared)  # its generation ends: nobody sends on it now
                kp.shared = None
        if peer is not None and table is not None and not self.follower:
            self.rekeyed.add(peer.public)  # a leader's: the followers are told

    # --- what users see ------------------------------------------------------------------
    def last_handshake_ns(self, peer: Peer) -> int:
        """UNIX time of the peer's last handshake in ns (0: never)."""
        if peer.last_handshake is None:
            return 0
        return int((peer.last_handshake + self.wall_offset) * 1e9)


class SharedKeypair(NamedTuple):
    """A keypair as a leader hands it to its workers."""

    slot: str  # "previous", "current" or "next"
    local_index: int
    remote_index: int
    send: bytes
    receive: bytes
    created: float  # monotonic (one clock for every process of the machine)
    initiator: bool
    counter: int  # its counter's slot in the shared table...
    generation: int  # ...while the slot's generation is this


def _source_bytes(source: Address) -> bytes:
    """A peer address as the bytes its cookie is computed over."""
    host = source[0]
    if host.startswith("::ffff:"):
        host = host[7:]
    return host.encode() + source[1].to_bytes(2, "big")
