"""The WireGuard engine: one loop joining a tun (or tap) device and a link through the
sans-IO :class:`~.core.WireGuard`, for any number of peers, with the UAPI socket
(:mod:`simpletun.control.uapi_socket`) in the same loop. The link
(:class:`transport.link.Link`) is a dual-stack UDP socket (the standard wire, and
``simpletun-wg``'s), or simpletun's TCP or ICMP carriers of the same messages.

Where a packet goes:

- **device -> network** (:meth:`Engine._from_device`): up to BATCH reads
  (:meth:`DeviceSide.read_batch`), each into a slot with 16 bytes of room in front; with
  offloads on, a read is a TCP super-packet (vnet_hdr) that :func:`wire.segment.segments`
  cuts into segments (checksums completed: the peer may be any WireGuard). Each packet is
  routed by allowed IPs (:meth:`WireGuard.route`), sealed in place (:meth:`WireGuard.seal`)
  and the batch leaves in one GSO ``sendmsg`` per peer (:class:`transport.udp.Endpoint`).
- **network -> device** (:meth:`Engine._from_network`): GRO receives; each message is
  opened (:meth:`WireGuard.open`: index, AEAD, replay window, source in allowed IPs) into
  one plaintext buffer, and the packets of one receive are delivered together
  (:meth:`DeviceSide.deliver_segments`: segments of one flow become one super-packet write).
- **handshakes, cookies, keepalives, timers**: what the core puts in its outbox is sent
  after each step; :meth:`WireGuard.tick` runs when the next timer is due.

Between simpletun peers two extensions ride in transport messages (``messages.EXT_*``):
with ``super_packets`` (the TCP link) a TCP super-packet leaves whole, with its vnet header,
in one message of up to 64 KiB; with ``tap`` every message is an Ethernet frame, and a
:class:`.switch.Switch` learns which peer each MAC is behind and forwards between peers
(flooding broadcasts and unknown destinations to every peer and the device).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable

from ..control.status import PeerStats, Stats
from ..control.uapi import DeviceSet, DeviceStatus, PeerSet, PeerStatus, UapiError
from ..control.uapi_socket import UapiServer
from ..device import vnet
from ..device.side import BATCH, OFFLOADS, DeviceSide, finish_checksum
from ..device.tuntap import Device
from ..packets import Malformed
from ..transport import tcp, udp
from ..transport.link import Link
from ..transport.tcp import TransportError
from ..tunnel import breakdown
from ..tunnel.ratelimit import LimitedLog
from ..wire import segment
from . import keys
from .core import HANDSHAKE, NOT_FOR_US, UNKNOWN_PEER, WireGuard
from .messages import EXT_FRAME, EXT_HEADER, EXT_LEN, EXT_SUPER, padded
from .peer import Address, Peer
from .switch import DEVICE, FLOOD, Switch
from .workers import Companion

SO_MARK = 36
SIOCGIFMTU = 0x8921
ROOM = 16  # transport header in front of each packet
VNET_LEN = vnet.VNET_HDR_LEN
REFUSAL_QUIET = 60.0  # seconds: a refused handshake from one host is said once meanwhile
MESSAGE_MAX = 65535  # the TCP link's 2-byte length: a super-packet above it is cut
TAIL = 16 + 16  # padding and tag behind it
SLOT = ROOM + 65535 + TAIL
SEGMENT_SLOTS = 64
RECEIVES = 16  # receives per turn of the loop at most
BUSY = 0.001  # passes of one kind closer than this: under load, read in batches
MTU_CHECK = 1.0  # seconds between looks at the device's MTU (padding depends on it)
_DEVICE_GONE = (errno.EBADFD, errno.ENXIO, errno.ENODEV)  # the tun device was deleted


def sockaddr(sock: socket.socket, host: str, port: int) -> Address:
    """``host:port`` as ``sock`` sends to it and reports it (IPv4 mapped into a dual-stack
    socket's IPv6), so a configured endpoint compares equal to the same peer's source."""
    if sock.family == socket.AF_INET6:
        if ":" not in host:
            return (f"::ffff:{host}", port, 0, 0)
        info = socket.getaddrinfo(host, port, socket.AF_INET6, socket.SOCK_DGRAM)
        return info[0][4]  # type: ignore[return-value]
    return (host, port)


def shown(address: Address) -> tuple[str, int]:
    """An endpoint as users read it: IPv4 plain, IPv6 with its zone if any."""
    host = address[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, address[1]


class Engine:
    """One WireGuard interface on ``dev``, controlled through its UAPI socket. :meth:`run`
    loops until :meth:`stop` or the device goes.

    ``link``: the transport (None: a UDP socket, ``udp_socket`` or one bound on
    ``listen_port``, rebound when the UAPI sets another). ``tap``: ``dev`` is a tap
    device; frames travel as EXT_FRAME messages, switched by MAC. ``super_packets``: TCP
    super-packets leave whole (EXT_SUPER; the peer must be simpletun); ``extensions``: take
    them from peers (cut into segments when this device has no offloads). ``log``: status
    lines (sessions, refused handshakes), rate-limited per kind."""

    def __init__(self, dev: Device, *, uapi_directory: str = "/var/run/wireguard",
                 listen_port: int = 0, link: Link | None = None, tap: bool = False,
                 super_packets: bool = False, extensions: bool = False,
                 udp_socket: socket.socket | None = None,
                 log: Callable[[str], None] | None = None, uapi: bool = True) -> None:
        self.dev = dev
        mtu = self._device_mtu() or 1420
        self.side = DeviceSide(dev, mtu=mtu)
        self.core = WireGuard(mtu=mtu, wall_offset=time.time() - time.monotonic(), tap=tap,
                              extensions=extensions or super_packets)
        rekey = os.environ.get("SIMPLETUN_WG_REKEY_AFTER_TIME")  # a test knob: re-key sooner
        if rekey:
            self.core.rekey_after_time = float(rekey)
        load = os.environ.get("SIMPLETUN_WG_LOAD_THRESHOLD")  # handshakes/s before cookies
        if load:
            self.core.load_threshold = int(load)
        self.tap = tap
        self.super_packets = super_packets and not tap
        self.switch: Switch[Peer] | None = Switch() if tap else None
        self.fwmark = 0
        self.sock: socket.socket | None = None  # the UDP socket when the engine owns it
        if link is None:  # UDP: ``udp_socket`` (bound already), or bound here
            self.sock = udp_socket if udp_socket is not None else self._bind(listen_port)
            self.sock.setblocking(False)
            link = udp.Endpoint(self.sock)
        self.link = link
        #: what ``stats=1`` says of this tunnel: the transport (by the link's module) and
        #: the role (the CLI's tunnel sets server or client; simpletun-wg is a peer)
        module = type(link).__module__.rpartition(".")[2]
        self.transport = {"tcp_link": "tcp"}.get(module, module)
        self.role = "peer"
        self.log = LimitedLog(log) if log is not None else None
        #: the UAPI socket (a worker's engine has none: the leader's serves the interface)
        self.uapi: UapiServer | _NoUapi = (UapiServer(dev.name, self, directory=uapi_directory)
                                           if uapi else _NoUapi())
        #: the other processes of ``--workers`` (:mod:`.workers`), when there are any
        self.companion: Companion | None = None
        self._stopping = False
        self.stop_reason = ""
        #: when no session has come up by this time (monotonic), :attr:`on_deadline` runs
        #: (once; the caller's choice: give up, or say so and go on)
        self.deadline: float | None = None
        self.on_deadline: Callable[[], None] | None = None
        self._refusals: dict[tuple[str, str], float] = {}
        #: peers with a session up, and the address they were last announced at
        self.sessions: dict[Peer, Address] = {}
        # buffers, reused for every batch: each slot has ``pre`` bytes in front of the
        # packet: the transport header, and the extension header (+ vnet header) if any
        self._pre = ROOM + (EXT_LEN + VNET_LEN if self.super_packets
                            else EXT_LEN if tap else 0)
        self._slots = [bytearray(SLOT + self._pre) for _ in range(BATCH)]
        self._views = [memoryview(s) for s in self._slots]
        # the same slots seen from where a plain packet's transport header goes
        self._bases = [v[self._pre - ROOM:] for v in self._views]
        self._vhs = [bytearray(vnet.VNET_HDR_LEN) for _ in range(BATCH)]
        self._segs = [memoryview(bytearray(ROOM + 9216 + TAIL)) for _ in range(SEGMENT_SLOTS)]
        self._rbuf = bytearray(65536 + 64)
        self._plain = bytearray(4 * 65536)
        self._plain_view = memoryview(self._plain)
        self._out: dict[Address, list[memoryview | bytes]] = {}
        # Super-packets from the device only where they leave whole (TCP: EXT_SUPER); a
        # datagram link's messages must fit the path, and the kernel cuts them, checksums
        # included, in C for less than this engine cuts them in Python (enc-udp: 17.5 ->
        # 14.6 CPU s/GB). Writing super-packets to the device needs no offload set.
        self.side.offloads &= OFFLOADS
        if self.side.vnet and self.side.offloads and not dev.tap:
            self.side.set_offloads(self.super_packets)
        self._next_mtu_check = 0.0
        self._reads, self._receives = BATCH, RECEIVES  # reads in this pass at most
        self._out_at = self._in_at = 0.0  # when the last pass of each kind began
        self._poller: select.epoll | None = None
        self._watched: set[int] = set()
        self._link_fd = -1
        #: per-pass timings, only with SIMPLETUN_BREAKDOWN set (``simpletun bench
        #: --breakdown``): then the pass methods and their system calls are wrapped
        self._breakdown = breakdown.install(self)

    # --- the socket ----------------------------------------------------------------------
    def _bind(self, port: int) -> socket.socket:
        try:
            sock = tcp.listen(port, kind=socket.SOCK_DGRAM)
        except TransportError as exc:
            raise UapiError(errno.EADDRINUSE, str(exc)) from None
        sock.setblocking(False)
        if self.fwmark:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, self.fwmark)
        return sock

    def use_socket(self, sock: socket.socket) -> None:
        """Send and receive on ``sock`` from now on (the engine's own UDP socket, taken
        over into a reuseport group by :func:`.workers.start`)."""
        self.sock = sock
        self.link = udp.Endpoint(sock)
        breakdown.wrap_link(self._breakdown, self.link)

    def attach(self, companion: Companion) -> None:
        self.companion = companion

    @property
    def listen_port(self) -> int:
        if self.sock is not None:
            return int(self.sock.getsockname()[1])
        return self.link.port

    def _rebind(self, port: int) -> None:
        if port == self.listen_port:
            return
        if self.companion is not None:
            raise UapiError(errno.EINVAL, "the listen port is fixed while --workers runs "
                            "(every worker's socket is on it)")
        if self.sock is None:
            raise UapiError(errno.EINVAL, f"the {self.link.name} link's port is set by -p, "
                            "not through the UAPI")
        new = self._bind(port)
        self.sock.close()
        self.sock = new
        self.link = udp.Endpoint(new)
        breakdown.wrap_link(self._breakdown, self.link)
        for peer in self.core.peers.values():  # endpoints in the new socket's form
            if peer.endpoint is not None:
                peer.endpoint = sockaddr(new, *shown(peer.endpoint))

    def _set_fwmark(self, mark: int) -> None:
        if mark == self.fwmark:
            return
        if self.companion is not None:
            raise UapiError(errno.EINVAL, "the fwmark is fixed while --workers runs "
                            "(set it before they start)")
        self.fwmark = mark
        if self.sock is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)

    def endpoint(self, host: str, port: int) -> Address:
        """``host:port`` in the form the link reports its peers' addresses in."""
        if self.sock is not None:
            return sockaddr(self.sock, host, port)
        return (host, port)

    def _device_mtu(self) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                out = fcntl.ioctl(s, SIOCGIFMTU, struct.pack("16si12x",
                                                             self.dev.name.encode(), 0))
            except OSError:
                return 0
        return int(struct.unpack("16si12x", out)[1])

    # --- the loop ------------------------------------------------------------------------
    def stop(self, reason: str = "") -> None:
        self._stopping = True
        self.stop_reason = reason

    def run(self) -> None:
        core, dev_fd = self.core, self.dev.fileno()
        self.dev.set_blocking(False)
        poller = select.epoll()
        poller.register(dev_fd, select.EPOLLIN)
        self._poller, self._watched = poller, set()
        self._sync_fds()
        next_tick: float | None = None
        reading = True  # the device is watched (not while the link is blocked)
        try:
            while not self._stopping:
                if core.outbox:  # e.g. a first handshake queued before the loop began
                    self._flush_outbox()
                now = time.monotonic()
                if next_tick is not None and next_tick <= now:
                    next_tick = core.tick(now)
                    self._flush_outbox()
                if now >= self._next_mtu_check:
                    self._housekeeping(now)
                    self._sync_fds()
                    if self._stopping:
                        break
                link_wait = self.link.tick(now)
                for address in self.link.connected():
                    self._announce(address, now)
                wait = 1.0 if next_tick is None else min(1.0, max(0.0, next_tick - now))
                if link_wait is not None:
                    wait = min(wait, max(0.0, link_wait))
                companion = self.companion
                if companion is not None:
                    due = companion.tick(now)
                    if due is not None:
                        wait = min(wait, max(0.0, due))
                if self.link.blocked == reading:  # backpressure: leave it in the device
                    reading = not reading
                    poller.modify(dev_fd, select.EPOLLIN if reading else 0)
                try:
                    events = poller.poll(wait)
                except InterruptedError:
                    continue
                link_fd = self._link_fd
                if companion is not None and len(events) > 1:  # a worker: keys before data
                    mine = companion.fds()
                    events.sort(key=lambda event: event[0] not in mine)
                for fd, _ in events:
                    # a pass right after the last one of its kind (load) reads until
                    # the fd is empty; one after a pause (a ping, say) reads once, and
                    # leaves the read that would only learn EAGAIN to epoll
                    if fd == dev_fd:
                        self._reads = BATCH if now - self._out_at < BUSY else 1
                        self._out_at = now
                        self._from_device()
                    elif fd == link_fd:
                        self._receives = RECEIVES if now - self._in_at < BUSY else 1
                        self._in_at = now
                        self._from_network()
                    elif companion is not None and fd in companion.fds():
                        companion.ready(fd, time.monotonic())
                    else:
                        self.uapi.ready(fd)
                        self._flush_outbox()
                        self._sync_fds()
                if core.events:
                    self._events()
                next_tick = core.next_timer  # due ones fire at the top of the loop
        finally:
            poller.close()

    def _sync_fds(self) -> None:
        """Watch the link (a new one after a rebind) and the UAPI's connections."""
        poller, watched = self._poller, self._watched
        if poller is None:
            return
        want = {self.link.fileno(), *self.uapi.fds(),
                *(self.companion.fds() if self.companion is not None else ())}
        for fd in watched - want:
            with contextlib.suppress(OSError, ValueError):
                poller.unregister(fd)
        for fd in want - watched:
            with contextlib.suppress(OSError, ValueError):
                poller.register(fd, select.EPOLLIN)
        self._watched = want
        self._link_fd = self.link.fileno()

    def _housekeeping(self, now: float) -> None:
        self._next_mtu_check = now + MTU_CHECK
        mtu = self._device_mtu()
        if mtu and mtu != self.core.mtu:
            self.core.mtu = mtu
            self.side.mtu = mtu
            self.side.max_packet = mtu
        self.uapi.tick(now)
        self._tell_link_peers()
        if self.switch is not None:
            self.switch.sweep(now)
        if self.deadline is not None:
            if self.sessions:
                self.deadline = None
            elif now >= self.deadline:
                self.deadline = None
                if self.on_deadline is not None:
                    self.on_deadline()

    def _announce(self, address: Address, now: float) -> None:
        """A link's new connection to ``address``: a keepalive (or a handshake) to the
        peer there tells the other end which connection it is on."""
        for peer in self.core.peers.values():
            if peer.endpoint == address:
                self.core.reconnected(peer, now)
        self._flush_outbox()

    def _events(self) -> None:
        """Status lines for what the handshakes did (rate-limited per kind)."""
        events, log, show = self.core.events, self.log, self.link.show
        handshakes = False
        while events:
            what, source, peer = events.popleft()
            if what == HANDSHAKE and peer is not None:
                handshakes = True
                before = self.sessions.get(peer)
                self.sessions[peer] = source
                if log is not None and before != source:
                    name = keys.to_base64(peer.public)
                    verb = "session up" if before is None else f"moved from {show(before)}"
                    log("session", f"peer {name} at {show(source)}: {verb} "
                        f"({self.link.name})")
            elif log is not None and self._first_refusal(what, source):
                if what == UNKNOWN_PEER:
                    log(what, f"refused a handshake from {show(source)}: its key is not one "
                        "of this tunnel's peers (add it with --peer)")
                elif what == NOT_FOR_US:
                    log(what, f"refused a handshake from {show(source)}: it was made for "
                        "another public key than this tunnel's (the other side's --peer key "
                        "for us is wrong)")
        if handshakes:  # a TCP server keeps the new peer's connection from then on
            self._tell_link_peers()

    def _tell_link_peers(self) -> None:
        self.link.peers(frozenset(p.endpoint for p in self.core.peers.values()
                                  if p.endpoint is not None))

    def _first_refusal(self, what: str, source: Address) -> bool:
        """Whether to say so: once per kind and source host in REFUSAL_QUIET seconds (a
        peer retries every 5 s; one line says it), and never more than the LimitedLog
        lets through."""
        now = time.monotonic()
        key = (what, source[0])
        last = self._refusals.get(key)
        if last is not None and now - last < REFUSAL_QUIET:
            return False
        if len(self._refusals) >= 1024:
            self._refusals.clear()
        self._refusals[key] = now
        return True

    def _queue(self, endpoint: Address, message: memoryview) -> None:
        """A sealed message for ``endpoint``, sent with the rest of the batch."""
        frames = self._out.get(endpoint)
        if frames is None:
            frames = self._out[endpoint] = []
        frames.append(message)

    def _send(self) -> None:
        out, link = self._out, self.link
        for address, frames in out.items():
            if len(frames) == 1:  # the common case when latency counts: no batch to build
                link.send(frames[0], address)
            else:
                link.send_batch(frames, address)
        out.clear()

    def _flush_outbox(self) -> None:
        box = self.core.outbox
        if box:
            if self.companion is not None and self.core.rekeyed:
                # a new session's keys reach the workers before its handshake message
                # reaches the peer: the peer's first data may go to any of them
                self.companion.tick(time.monotonic())
            link = self.link
            for msg, address in box:
                link.send(msg, address)
            box.clear()

    # --- device -> network ---------------------------------------------------------------
    def _from_device(self) -> None:
        side, core, views, bases = self.side, self.core, self._views, self._bases
        pre = self._pre
        try:
            count = side.read_batch(views, pre, self._vhs if side.vnet else None,
                                    limit=self._reads)
        except OSError as exc:
            if exc.errno in _DEVICE_GONE:
                self.stop(f"{self.dev.name} was deleted")
                return
            raise
        if not count:
            return
        now = time.monotonic()
        segs_used = 0
        sizes = side.sizes
        if self.switch is not None:
            for i in range(count):
                self._frame_out(views[i], sizes[i], now)
            self._send()
            self._flush_outbox()
            return
        for i in range(count):
            view, size, vh = views[i], sizes[i], self._vhs[i]
            if side.vnet and (vh[0] or vh[1]):  # flags or gso_type: offloaded
                h = vnet.unpack(vh)
                packet = view[pre:pre + size]
                if h.gso_type != vnet.GSO_NONE:
                    if self.super_packets and \
                            ROOM + padded(EXT_LEN + VNET_LEN + size, core.mtu) + 16 \
                            <= MESSAGE_MAX:
                        self._super_out(view, vh, size, now)
                    else:
                        segs_used = self._segment(packet, h.gso_size, segs_used, now)
                    continue
                finish_checksum(packet, h)
            base = bases[i]
            peer = core.route(base[ROOM:ROOM + size])
            if peer is None:
                side.counters.drops["no-route"] += 1
                continue
            n = core.seal(peer, base, size, now)
            if n and peer.endpoint is not None:
                self._queue(peer.endpoint, base[:n])
        self._send()
        self._flush_outbox()

    def _super_out(self, view: memoryview, vh: bytearray, size: int, now: float) -> None:
        """A TCP super-packet, whole, in one EXT_SUPER message (its vnet header in front)."""
        core = self.core
        start = ROOM + EXT_LEN + VNET_LEN
        peer = core.route(view[start:start + size])
        if peer is None:
            self.side.counters.drops["no-route"] += 1
            return
        EXT_HEADER.pack_into(view, ROOM, EXT_SUPER, VNET_LEN + size)
        view[ROOM + EXT_LEN:start] = vh
        n = core.seal(peer, view, EXT_LEN + VNET_LEN + size, now)
        if n and peer.endpoint is not None:
            self._queue(peer.endpoint, view[:n])

    def _frame_out(self, view: memoryview, size: int, now: float) -> None:
        """A frame from the tap device: to the peer its destination MAC was learned behind,
        or (broadcast, multicast, unknown) to every peer."""
        switch, core = self.switch, self.core
        assert switch is not None
        frame = view[ROOM + EXT_LEN:ROOM + EXT_LEN + size]
        if size < 14:
            self.side.counters.drops["runt-frame"] += 1
            return
        switch.learn(frame, DEVICE, now)
        port = switch.forward(frame, DEVICE, now)
        EXT_HEADER.pack_into(view, ROOM, EXT_FRAME, size)
        if port is FLOOD:
            self._flood(view[ROOM:ROOM + EXT_LEN + size], None, now)
        elif isinstance(port, Peer):
            n = core.seal(port, view, EXT_LEN + size, now)
            if n and port.endpoint is not None:
                self._queue(port.endpoint, view[:n])

    def _flood(self, message: memoryview, source: Peer | None, now: float) -> None:
        """The extension ``message`` (plaintext) to every peer but ``source``."""
        for peer in self.core.peers.values():
            if peer is not source:
                self._seal_copy(peer, message, now)

    def _seal_copy(self, peer: Peer, message: memoryview, now: float) -> None:
        """A copy of the plaintext ``message`` sealed for ``peer`` and queued (sealing is in
        place: the original stays for the device or the next peer)."""
        if peer.endpoint is None:
            return
        size = len(message)
        slot = memoryview(bytearray(ROOM + size + TAIL))
        slot[ROOM:ROOM + size] = message
        n = self.core.seal(peer, slot, size, now)
        if n:
            self._queue(peer.endpoint, slot[:n])

    def _segment(self, packet: memoryview, mss: int, used: int, now: float) -> int:
        """Cut a super-packet into segments, seal each into a segment slot; returns how many
        slots are in use (sent and reused when they run out)."""
        try:
            cut = segment.segments(packet, mss)
        except Malformed:
            self.side.counters.drops["unsegmentable"] += 1
            return used
        core, segs = self.core, self._segs
        peer: Peer | None = None
        for headers, chunk in cut:
            if used == SEGMENT_SLOTS:
                self._send()
                used = 0
            slot = segs[used]
            h, c = len(headers), len(chunk)
            size = h + c
            if ROOM + size + TAIL > len(slot):  # an MTU above what the slots were made for
                slot = segs[used] = memoryview(bytearray(ROOM + size + TAIL))
            slot[ROOM:ROOM + h] = headers
            slot[ROOM + h:ROOM + size] = chunk
            where = segment.partial(headers)
            if where is not None:
                segment.complete(slot[ROOM:ROOM + size], *where)
            if peer is None:
                peer = core.route(slot[ROOM:ROOM + size])
                if peer is None:
                    self.side.counters.drops["no-route"] += len(cut)
                    return used
            n = core.seal(peer, slot, size, now)
            if n and peer.endpoint is not None:
                self._queue(peer.endpoint, slot[:n])
                used += 1
        return used

    # --- network -> device ---------------------------------------------------------------
    def _from_network(self) -> None:
        try:
            self._receive()
        except OSError as exc:
            if exc.errno not in _DEVICE_GONE:
                raise
            self.stop(f"{self.dev.name} was deleted")

    def _receive(self) -> None:
        core, side, plain, link = self.core, self.side, self._plain_view, self.link
        rbuf, room = self._rbuf, len(self._plain)
        for _ in range(self._receives):
            got = link.receive(rbuf)
            if got is None:
                break
            messages, source = got
            if not messages:
                continue
            now = time.monotonic()
            if len(messages) == 1:  # one datagram (the kernel coalesced nothing)
                size = core.open(messages[0], source, now, plain)
                if size:
                    if plain[0] >= 0x40 and not self.tap:
                        side.deliver_authenticated(plain[:size])
                    else:
                        self._extension_in(plain[:size], now)
            else:
                packets: list[memoryview] = []
                at = 0
                for message in messages:
                    if at + len(message) > room and packets:
                        side.deliver_segments(packets)
                        packets, at = [], 0
                    size = core.open(message, source, now, plain[at:])
                    if not size:
                        continue
                    if plain[at] >= 0x40 and not self.tap:
                        packets.append(plain[at:at + size])
                        at += size
                        continue
                    if packets:  # in order: what came before goes first
                        side.deliver_segments(packets)
                        packets = []
                    self._extension_in(plain[at:at + size], now)
                    at = 0  # nothing held in the buffer now
                if packets:
                    side.deliver_segments(packets)
            if core.outbox:
                self._flush_outbox()
        if self._out:
            self._send()  # frames the switch forwarded between peers

    def _extension_in(self, message: memoryview, now: float) -> None:
        """An extension message the core opened and checked: a super-packet to the device
        (whole with its vnet header, or cut when the device has none), or a frame to the
        switch."""
        kind = message[0]
        if kind == EXT_SUPER:
            body = message[EXT_LEN:]
            if self.side.vnet and self.side.offloads:
                self.side.deliver(body, True)
                return
            h = vnet.unpack(body[:VNET_LEN])
            packet = body[VNET_LEN:]
            if h.gso_type == vnet.GSO_NONE:
                finish_checksum(packet, h)
                self.side.deliver(packet, False)
                return
            try:
                cut = segment.segments(packet, h.gso_size)
            except Malformed:
                self.side.counters.drops["unsegmentable"] += 1
                return
            for headers, chunk in cut:
                whole = bytearray(headers) + chunk
                where = segment.partial(headers)
                if where is not None:
                    segment.complete(memoryview(whole), *where)
                self.side.deliver(memoryview(whole), False)
            return
        self._frame_in(message, now)

    def _frame_in(self, message: memoryview, now: float) -> None:
        """A frame from a peer: learned, then to the device, another peer, or (broadcast,
        unknown) the device and every other peer."""
        switch, peer = self.switch, self.core.last_peer
        assert switch is not None and peer is not None
        frame = message[EXT_LEN:]
        switch.learn(frame, peer, now)
        port = switch.forward(frame, peer, now)
        if port is DEVICE:
            self.side.deliver_authenticated(frame)
        elif port is FLOOD:
            self.side.deliver_authenticated(frame)
            self._flood(message, peer, now)
        elif isinstance(port, Peer):
            self._seal_copy(port, message, now)

    # --- the UAPI ------------------------------------------------------------------------
    def uapi_get(self) -> DeviceStatus:
        core = self.core
        local = core.local
        return DeviceStatus(
            private_key=local.private if local is not None else None,
            listen_port=self.listen_port,
            fwmark=self.fwmark,
            peers=[PeerStatus(
                public_key=p.public,
                preshared_key=p.preshared if any(p.preshared) else None,
                endpoint=shown(p.endpoint) if p.endpoint is not None else None,
                persistent_keepalive=p.persistent,
                allowed_ips=core.allowed.networks(p),
                last_handshake_ns=core.last_handshake_ns(p),
                rx_bytes=p.rx_bytes,
                tx_bytes=p.tx_bytes,
            ) for p in core.peers.values()],
        )

    def summary(self) -> str:
        """Packets each way and every drop by reason (the core's, the link's, the device
        side's), for the line a tunnel ends with."""
        counters = self.side.counters.snapshot()
        counters.drops.update(self.core.drops + self.link.drops + self._worker_drops())
        if self.companion is not None:
            return (f"{counters.summary()}; "
                    f"{self.companion.summary(counters.to_net + counters.to_dev)}")
        return counters.summary()

    def _worker_drops(self) -> Counter[str]:
        return self.companion.drops if self.companion is not None else Counter()

    def uapi_stats(self) -> Stats:
        """simpletun's ``stats=1``: transport, wire, role, drops by reason (the core's, the
        link's and the device side's), cookie replies sent, packets per peer."""
        drops = self.core.drops + self.side.counters.drops + self.link.drops \
            + self._worker_drops()
        return Stats(transport=self.transport, wire="wireguard", role=self.role,
                     counters={"cookies-sent": self.core.cookies_sent},
                     drops={k: v for k, v in drops.items() if v},
                     peers=[PeerStats(p.public.hex(), rx_packets=p.rx_packets,
                                      tx_packets=p.tx_packets)
                            for p in self.core.peers.values()])

    def uapi_set(self, request: DeviceSet) -> None:
        core = self.core
        now = time.monotonic()
        if request.private_key is not None:
            core.set_private_key(request.private_key)
        if request.listen_port is not None:
            self._rebind(request.listen_port)
        if request.fwmark is not None:
            self._set_fwmark(request.fwmark)
        if request.replace_peers:
            core.remove_all_peers()
            self.sessions.clear()
            if self.switch is not None:
                self.switch = Switch()  # nothing learned points at a removed peer
        for ps in request.peers:
            self._set_peer(ps, now)
        if self.companion is not None:
            self.companion.configured()

    def _set_peer(self, ps: PeerSet, now: float) -> None:
        core = self.core
        if ps.remove:
            gone = core.peers.get(ps.public_key)
            core.remove_peer(ps.public_key)
            if gone is not None:
                self.sessions.pop(gone, None)
                if self.switch is not None:
                    self.switch.forget_port(gone)
            return
        if ps.update_only and ps.public_key not in core.peers:
            return
        if core.public is not None and ps.public_key == core.public:
            return  # ourselves: wireguard-go ignores it too
        peer = core.add_peer(ps.public_key)
        if ps.preshared_key is not None:
            core.set_preshared(peer, ps.preshared_key)
        if ps.endpoint is not None:
            try:
                peer.endpoint = self.endpoint(*ps.endpoint)
            except OSError as exc:
                raise UapiError(errno.EINVAL, f"bad endpoint {ps.endpoint}: {exc}") from None
        if ps.replace_allowed_ips:
            core.clear_allowed(peer)
        for network in ps.allowed_ips:
            core.add_allowed(peer, network)
        if ps.persistent_keepalive is not None:
            core.set_persistent(peer, ps.persistent_keepalive, now)
        if peer.staged:  # they waited for an endpoint (wireguard-go's handlePostConfig)
            core.send_staged(peer, now)

    def close(self) -> None:
        breakdown.dump(self._breakdown)
        if self.companion is not None:
            self.companion.close()
        self.uapi.close()
        self.link.close()
        self.core.remove_all_peers()


class _NoUapi:
    """A worker engine's stand-in for the UAPI server (the leader's serves)."""

    path = ""

    def fds(self) -> list[int]:
        return []

    def ready(self, fd: int) -> None:
        pass

    def tick(self, now: float) -> None:
        pass

    def close(self) -> None:
        pass


__all__ = ["Engine", "shown", "sockaddr"]
