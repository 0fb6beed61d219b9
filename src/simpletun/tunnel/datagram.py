"""The tunnel over datagrams (``--transport udp`` and ``icmp``): one packet per datagram,
framed by :mod:`wire.datagram`, over an :class:`Endpoint` (:class:`transport.udp.Endpoint`,
or :mod:`transport.icmp`'s Server and Client, which carry the datagrams in echo messages).

Device to network: up to BATCH packets are read, each into a slot with room for the 9-byte
header in front, and leave with as few sendmsg calls as UDP GSO allows (same-size runs).
Network to device: one receive may hold many datagrams (UDP GRO); each is parsed, must
carry the current session id, and goes through :meth:`DeviceSide.deliver` (the same
checks as on TCP) to the device. Anything else is counted and dropped.

The server follows its client by session id: a known session from a new address is the
client roaming, and the server answers there from then on. It forgets a client it has not
heard from for the peer timeout; it answers datagrams of a session it does not know with
REJECT, upon which a client (say, after a server restart) shakes hands again at once.

While a session is live, the hello of another is refused with BUSY (until the live one has
been silent for the peer timeout); the refused client says so in one line and asks again
later, or gives up without ``--reconnect``. No answer is longer than what it answers, answers
to strangers leave at most every REJECT_INTERVAL to one address (AnswerLimiter), and every
log line the network can cause goes through a :class:`LimitedLog`.
"""

from __future__ import annotations

import select
import time
from collections import Counter
from collections.abc import Iterator
from typing import Protocol

from ..device import vnet
from ..device.side import BATCH, Counters, DeviceSide, Log, finish_checksum
from ..device.tuntap import READ_SIZE
from ..errors import HandshakeFailed
from ..packets import Malformed
from ..transport import tcp
from ..wire import datagram, native, segment
from .backoff import Backoff
from .liveness import DEAD, KEEPALIVE, Liveness
from .ratelimit import AnswerLimiter, LimitedLog
from .stream import DEAD_PEER_TIMEOUT, KEEPALIVE_INTERVAL, Session

HELLO_WAIT = 5.0  # a client without --reconnect gives up after this long without an answer
BUSY_RETRY = 5.0  # a client the server refused (BUSY) asks again after this long
REJECT_INTERVAL = 0.1  # at most this often a REJECT (it answers anyone)

Address = tuple[str, int]  # UDP: host, port; ICMP: host, echo identifier


class Endpoint(Protocol):
    """What the loop needs of a datagram transport."""

    name: str  # "UDP", "ICMP": for status lines
    hint: str  # what to check when the server does not answer
    drops: Counter[str]  # where the transport counts what it drops
    polling: bytes | None  # a client's session keepalive while it is up (ICMP polls)

    def fileno(self) -> int: ...
    def send_batch(self, frames: list[bytes | memoryview], address: Address) -> None: ...
    def send(self, data: bytes, address: Address) -> None: ...
    def receive(self, buf: bytearray) -> tuple[list[memoryview], Address] | None: ...
    def tick(self, now: float) -> float | None: ...  # timed work; seconds until more is due
    def show(self, address: Address) -> str: ...
    def same(self, a: Address, b: Address) -> bool: ...


def _earliest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


class _Path:
    """What both ends share: the endpoint, the device side and the batched send.

    With offloads (the hellos agreed FEATURE_VNET; tun devices only) the device hands over
    TCP super-packets, which leave cut into segments with partial checksums
    (:mod:`wire.segment`, DATA_PARTIAL datagrams), and packets whose checksum the kernel
    left to finish, which leave as DATA_PARTIAL too."""

    def __init__(self, side: DeviceSide, endpoint: Endpoint, session_id: bytes, *,
                 keepalive: float | None, timeout: float | None) -> None:
        self.side = side
        self.ep = endpoint
        endpoint.drops = side.counters.drops
        self.keepalive_interval, self.timeout = keepalive, timeout
        self._slots = [bytearray(datagram.HEADER_LEN + READ_SIZE) for _ in range(BATCH)]
        self._views = [memoryview(s) for s in self._slots]
        # the vnet_hdr of each read, when the device has one
        self._vhs = [bytearray(vnet.VNET_HDR_LEN) for _ in range(BATCH)]
        self.rbuf = bytearray(65536)
        self.segmenting = False
        self._partials: list[memoryview] = []  # DATA_PARTIAL of this receive, not yet written
        self.use(session_id)

    def use(self, session_id: bytes) -> None:
        """Stamp ``session_id`` into every slot's header and the keepalive (a new session:
        the buffers stay)."""
        head = datagram.header(datagram.DATA, session_id)
        for s in self._slots:
            s[:len(head)] = head
        self.keepalive = datagram.encode(datagram.KEEPALIVE, session_id)
        self._partial = datagram.header(datagram.DATA_PARTIAL, session_id)

    def offload(self, on: bool) -> None:
        """Offloads on (a session that agreed FEATURE_VNET) or off (none, or one that did
        not)."""
        side = self.side
        on = on and side.vnet and bool(side.offloads) and not side.dev.tap
        if on != self.segmenting:
            side.set_offloads(on)
            self.segmenting = on

    def to_network(self, address: Address) -> None:
        """Drain up to BATCH packets from the device and send them to ``address``."""
        hlen = datagram.HEADER_LEN
        count = self.side.read_batch(self._views, hlen, self._vhs, framing=hlen)
        if not count:
            return
        with_vnet = self.side.vnet
        frames: list[bytes | memoryview] = []
        for view, vh, size in zip(self._views[:count], self._vhs, self.side.sizes,
                                  strict=False):
            if with_vnet and (vh[0] or vh[1]):  # flags or gso_type: an offloaded packet
                if not self._offloaded(view, vh, size, frames):
                    continue
            else:
                view[0] = datagram.DATA
            frames.append(view[:hlen + size])
        if frames:
            self.ep.send_batch(frames, address)

    def _offloaded(self, view: memoryview, vh: bytearray, size: int,
                   frames: list[bytes | memoryview]) -> bool:
        """Stamp a packet with a partial checksum DATA_PARTIAL and return True (the caller
        sends it); cut a super-packet into ``frames`` and return False."""
        h = vnet.unpack(vh)
        hlen = datagram.HEADER_LEN
        packet = view[hlen:hlen + size]
        if h.gso_type == vnet.GSO_NONE:
            if self.segmenting and segment.partial(packet) == (h.csum_start, h.csum_offset):
                view[0] = datagram.DATA_PARTIAL
            else:
                finish_checksum(packet, h)
                view[0] = datagram.DATA
            return True
        try:
            cut = segment.segments(packet, h.gso_size)
        except Malformed:
            self.side.counters.drops["unsegmentable"] += 1
            return False
        head = self._partial
        frames.extend(b"".join((head, headers, chunk)) for headers, chunk in cut)
        return False

    def deliver(self, kind: int, payload: bytes | memoryview) -> str | None:
        """A datagram of the current session: to the device (DATA), or the peer's closing
        reason (CLOSE)."""
        if kind == datagram.DATA_PARTIAL:  # written with its neighbours: see flush
            if len(payload) > self.side.max_packet:
                self.side.counters.drops["oversized"] += 1
            else:
                self._partials.append(memoryview(payload))
            return None
        self.flush()
        if kind == datagram.DATA:
            if len(payload) > self.side.max_packet:
                self.side.counters.drops["oversized"] += 1
            else:
                self.side.deliver(payload, False)
        elif kind == datagram.CLOSE:
            return bytes(payload).decode(errors="replace") or "closed"
        elif kind != datagram.KEEPALIVE:
            self.side.counters.drops["unexpected-datagram"] += 1
        return None

    def incoming(self) -> Iterator[tuple[memoryview, Address]]:
        """The datagrams waiting on the socket (up to BATCH receives, each maybe a GRO
        batch) with their source; views into ``rbuf``, used before the next one."""
        for _ in range(BATCH):
            got = self.ep.receive(self.rbuf)
            if got is None:
                return
            grams, address = got
            for gram in grams:
                yield gram, address
            self.flush()  # before the next receive reuses the buffer

    def flush(self) -> None:
        """Write the segments received so far (as super-packets where they make one)."""
        if self._partials:
            self.side.deliver_partials(self._partials)
            self._partials.clear()

    def liveness(self, now: float) -> Liveness:
        return Liveness(now, interval=self.keepalive_interval, timeout=self.timeout)


def _hello_payload(payload: bytes | memoryview) -> native.Hello | str | None:
    """The handshake message in a HELLO datagram (a native handshake frame)."""
    return native.decode_handshake(bytes(payload)[2:])


def serve(endpoint: Endpoint, side: DeviceSide, session: Session, *, log: Log,
          keepalive: float | None = KEEPALIVE_INTERVAL,
          timeout: float | None = DEAD_PEER_TIMEOUT) -> None:
    """Serve one client session at a time, following it as it roams, forever.

    While a session is live, a hello of another session is refused (BUSY) until the live
    one has been silent for ``timeout`` (:data:`DEAD_PEER_TIMEOUT` when there is none)."""
    counters, dev = side.counters, side.dev
    local = session.hello(side)
    peer: datagram.Peer[Address] = datagram.Peer()
    path = _Path(side, endpoint, bytes(8), keepalive=keepalive, timeout=timeout)
    live: Liveness | None = None  # None: no session
    answers = AnswerLimiter(interval=REJECT_INTERVAL)  # to strangers: REJECT, refusals
    hellos = _Hellos(endpoint, local, peer, LimitedLog(log), counters, answers,
                     takeover=timeout if timeout is not None else DEAD_PEER_TIMEOUT)
    limited = hellos.log
    dev.set_blocking(False)
    ep_fd, dev_fd = endpoint.fileno(), dev.fileno()
    while True:
        now = time.monotonic()
        wait = endpoint.tick(now)
        if live is not None:
            wait = _earliest(wait, live.wait(now))
        readable, _, _ = select.select([ep_fd, dev_fd], [], [], wait)
        now = time.monotonic()
        if ep_fd in readable:
            for gram, address in path.incoming():
                try:
                    kind, sid, payload = datagram.parse(gram)
                except Malformed:
                    counters.drops["bad-datagram"] += 1
                    continue
                if kind == datagram.HELLO:
                    silence = live.silence(now) if live is not None else 0.0
                    agreed = hellos.answer(sid, payload, address, len(gram), silence, now)
                    if agreed is not None:
                        path.use(sid)
                        path.offload(bool(agreed.features & native.FEATURE_VNET))
                        live = path.liveness(now)
                    continue
                verdict = peer.check(sid, address)
                if not verdict.ok or live is None:
                    counters.drops[verdict.why or "unknown-session"] += 1
                    # a REJECT (9 bytes) is never longer than what it answers (a header)
                    if kind not in (datagram.REJECT, datagram.BUSY) and \
                            answers.allow(address, now):
                        endpoint.send(datagram.encode(datagram.REJECT, sid), address)
                    continue
                if verdict.roamed_from is not None:
                    limited("roamed", f"client roamed from {endpoint.show(verdict.roamed_from)} "
                            f"to {endpoint.show(address)}")
                live.received(now)
                closed = path.deliver(kind, payload)
                if closed is not None:
                    limited("left", f"client {endpoint.show(address)} disconnected: {closed} "
                            f"({counters.summary()})")
                    peer.forget()
                    live = None
                    path.offload(False)
        if dev_fd in readable:
            if live is not None and peer.address is not None:
                path.to_network(peer.address)
                live.sent(now)
            else:
                side.discard()
        if live is not None and peer.address is not None:
            due = live.due(now)
            if due == KEEPALIVE:
                endpoint.send(path.keepalive, peer.address)
                live.sent(now)
            elif due == DEAD:
                log(f"client {endpoint.show(peer.address)} disconnected: nothing heard for "
                    f"{live.silence(now):.0f} s (dead-peer timeout); forgetting it "
                    f"({counters.summary()})")
                peer.forget()
                live = None
                path.offload(False)


class _Hellos:
    """The server's answers to hellos. None is longer than the hello it answers, and those
    to hellos that start no session (refusals, BUSY) leave at most every REJECT_INTERVAL
    to one address (and at most AnswerLimiter.per_second in all)."""

    def __init__(self, endpoint: Endpoint, local: native.Hello, peer: datagram.Peer[Address],
                 log: LimitedLog, counters: Counters, answers: AnswerLimiter, *,
                 takeover: float) -> None:
        self.ep, self.local, self.peer, self.log = endpoint, local, peer, log
        self.counters, self.takeover, self.answers = counters, takeover, answers

    def _refuse(self, answer: bytes | None, address: Address, now: float) -> None:
        if answer is not None and self.answers.allow(address, now):
            self.ep.send(answer, address)

    def answer(self, sid: bytes, payload: bytes | memoryview, address: Address, size: int,
               silence: float, now: float) -> native.Hello | None:
        """Answer a hello of ``size`` bytes; what was agreed when a session (new, renewed
        or taking over a silent one) starts. ``silence``: how long the live session has
        been silent."""
        ep, peer, counters = self.ep, self.peer, self.counters
        shown = ep.show(address)
        try:
            msg = _hello_payload(payload)
        except native.HandshakeError as exc:
            counters.drops["bad-hello"] += 1
            self._refuse(datagram.refusal(sid, str(exc), size), address, now)
            self.log("bad-hello", f"refused client {shown}: {exc}")
            return None
        if not isinstance(msg, native.Hello) or msg.session != sid:
            counters.drops["bad-datagram"] += 1
            return None
        try:
            agreed = native.agree(self.local, msg)
        except native.HandshakeError as exc:  # our own hello tells the client why
            counters.drops["bad-hello"] += 1
            own = datagram.encode(datagram.HELLO, sid, native.encode_hello(self.local))
            self._refuse(own if len(own) <= size else None, address, now)
            self.log("bad-hello", f"refused client {shown}: {exc}")
            return None
        before = peer.address
        outcome = peer.admit(sid, address, silence=silence, takeover=self.takeover)
        if outcome == datagram.REFUSED:
            counters.drops["refused-busy"] += 1
            self._refuse(datagram.encode(datagram.BUSY, sid), address, now)
            assert before is not None
            self.log("busy", f"refused client {shown}: serving client {ep.show(before)}, "
                     f"heard {silence:.0f} s ago (a new client gets in after "
                     f"{self.takeover:g} s of silence)")
            return None
        if outcome == datagram.REPLACED:
            assert before is not None
            self.log("session", f"client {ep.show(before)} disconnected: silent for "
                     f"{silence:.0f} s, replaced by client {shown}")
        if outcome != datagram.RENEWED:
            self.log("session", f"client {shown} connected (native wire over {ep.name})")
        reply = native.Hello(tap=self.local.tap, mtu=self.local.mtu, features=agreed.features,
                             session=sid)
        answer = datagram.encode(datagram.HELLO, sid, native.encode_hello(reply))
        if len(answer) <= size:  # always, for a hello that decoded
            ep.send(answer, address)
        return agreed


def run_client(endpoint: Endpoint, server: Address, side: DeviceSide, session: Session, *,
               reconnect: bool, log: Log, keepalive: float | None = KEEPALIVE_INTERVAL,
               timeout: float | None = DEAD_PEER_TIMEOUT) -> None:
    """Shake hands (retrying), then pump; shake hands again when the server rejects the
    session (it restarted) or, with ``reconnect``, when it falls silent.

    Without ``reconnect`` the client gives up HELLO_WAIT seconds after it started asking,
    and at once when the server says it serves another client (BUSY); with it, it says so
    once and asks again every BUSY_RETRY seconds. Stopped (KeyboardInterrupt), it tells the
    server it is leaving (CLOSE), so that another client may take its place at once."""
    limited = LimitedLog(log)
    sid = session.session_id
    path = _Path(side, endpoint, sid, keepalive=keepalive, timeout=timeout)
    up: list[bool] = [False]
    try:
        _client_loop(endpoint, server, side, session, path, up, reconnect=reconnect,
                     log=limited)
    except KeyboardInterrupt:
        if up[0]:
            endpoint.send(datagram.encode(datagram.CLOSE, sid, b"client stopped"), server)
        raise


def _client_loop(endpoint: Endpoint, server: Address, side: DeviceSide, session: Session,
                 path: _Path, up_flag: list[bool], *, reconnect: bool, log: LimitedLog) -> None:
    """The client's loop; ``up_flag[0]`` says whether a session is up (for the caller)."""
    counters, dev = side.counters, side.dev
    shown = endpoint.show(server)
    local = session.hello(side)
    sid = session.session_id
    hello = datagram.encode(datagram.HELLO, sid, native.encode_hello(local))
    backoff = Backoff(initial=0.25, maximum=BUSY_RETRY)
    up = busy = False
    live: Liveness | None = None
    now = time.monotonic()
    next_hello, give_up = now, now + HELLO_WAIT
    dev.set_blocking(False)
    ep_fd, dev_fd = endpoint.fileno(), dev.fileno()
    while True:
        up_flag[0] = up
        now = time.monotonic()
        if not up:
            if not reconnect and now >= give_up:
                raise tcp.PeerGone(f"server {shown} did not answer over {endpoint.name} "
                                   f"within {HELLO_WAIT:g} s: {endpoint.hint}")
            if now >= next_hello:
                endpoint.send(hello, server)
                next_hello = now + backoff.next()
            # the next hello, or giving up, whichever comes first: never wait past that
            due = next_hello if reconnect else min(next_hello, give_up)
            wait: float | None = max(0.0, due - now)
        else:
            assert live is not None
            wait = live.wait(now)
        endpoint.polling = path.keepalive if up else None
        if not up:
            path.offload(False)
        wait = _earliest(wait, endpoint.tick(now))
        readable, _, _ = select.select([ep_fd, dev_fd], [], [], wait)
        now = time.monotonic()
        if ep_fd in readable:
            for gram, address in path.incoming():
                if not endpoint.same(address, server):
                    counters.drops["not-from-server"] += 1
                    continue
                try:
                    kind, their_sid, payload = datagram.parse(gram)
                except Malformed:
                    counters.drops["bad-datagram"] += 1
                    continue
                if their_sid != sid:
                    counters.drops["unknown-session"] += 1
                    continue
                if kind == datagram.HELLO:
                    if not up:
                        agreed = _client_hello(local, payload, shown)
                        path.offload(bool(agreed.features & native.FEATURE_VNET))
                        up, live, busy = True, path.liveness(now), False
                        backoff.reset()
                        log("session", f"connected to {shown} (native wire over "
                            f"{endpoint.name})")
                    continue
                if kind == datagram.BUSY:
                    if not up:
                        if not reconnect:
                            raise HandshakeFailed(
                                f"server {shown} serves another client and refused this one "
                                "(it takes a new client once the other has been silent for "
                                "its peer timeout): stop the other client, or use --reconnect "
                                "to keep trying")
                        if not busy:
                            log("busy", f"server {shown} serves another client and refused "
                                f"this one: asking again every {BUSY_RETRY:g} s")
                        busy = True
                        next_hello = max(next_hello, now + BUSY_RETRY)
                    continue
                if kind == datagram.REJECT:
                    if up:
                        log("rejected", f"server {shown} does not know this session "
                            "(restarted?): shaking hands again")
                        up, live, next_hello = False, None, now
                        give_up = now + HELLO_WAIT
                    continue
                if not up or live is None:
                    counters.drops["before-handshake"] += 1
                    continue
                live.received(now)
                closed = path.deliver(kind, payload)
                if closed is not None:
                    if not reconnect:
                        raise tcp.PeerGone(f"server {shown} went away: {closed}; use "
                                           "--reconnect to keep trying")
                    log("session", f"disconnected from {shown}: {closed}; shaking hands "
                        "again")
                    up, live, next_hello = False, None, now
        if dev_fd in readable:
            if up and live is not None:
                path.to_network(server)
                live.sent(now)
            else:
                side.discard()
        if up and live is not None:
            due_now = live.due(now)
            if due_now == KEEPALIVE:
                endpoint.send(path.keepalive, server)
                live.sent(now)
            elif due_now == DEAD:
                silence = f"nothing heard for {live.silence(now):.0f} s (dead-peer timeout)"
                if not reconnect:
                    raise tcp.PeerGone(f"server {shown} went away: {silence}; use "
                                       "--reconnect to keep trying")
                log("session", f"disconnected from {shown}: {silence}; shaking hands again")
                up, live, next_hello = False, None, now


def _client_hello(local: native.Hello, payload: bytes | memoryview, shown: str
                  ) -> native.Hello:
    """Judge the server's answer: what was agreed, or HandshakeFailed with the reason if it
    refused."""
    try:
        msg = _hello_payload(payload)
    except native.HandshakeError as exc:
        raise HandshakeFailed(f"server {shown} refused: {exc}") from None
    if isinstance(msg, str):
        raise HandshakeFailed(f"server {shown} refused: {msg}")
    if msg is None:
        raise HandshakeFailed(f"server {shown} answered with something that is not a hello")
    try:
        return native.agree(local, msg)
    except native.HandshakeError as exc:
        raise HandshakeFailed(f"server {shown} refused: {exc}") from None
