"""The WireGuard engine: one loop joining a tun device and a dual-stack UDP socket through
the sans-IO :class:`~.core.WireGuard`, for any number of peers, with the UAPI socket
(:mod:`simpletun.control.uapi_socket`) in the same loop.

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

from ..control.uapi import DeviceSet, DeviceStatus, PeerSet, PeerStatus, UapiError
from ..control.uapi_socket import UapiServer
from ..device import vnet
from ..device.side import BATCH, OFFLOADS, DeviceSide, finish_checksum
from ..device.tuntap import Device
from ..packets import Malformed
from ..transport import tcp, udp
from ..transport.tcp import TransportError
from ..wire import datagram, segment
from .core import WireGuard
from .peer import Address, Peer

SO_MARK = 36
SIOCGIFMTU = 0x8921
ROOM = 16  # transport header in front of each packet
TAIL = 16 + 16  # padding and tag behind it
SLOT = ROOM + 65535 + TAIL
SEGMENT_SLOTS = 64
RECEIVES = 16  # receives per turn of the loop at most
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
    """One WireGuard interface on ``dev`` (a tun device, vnet_hdr for offloads), controlled
    through its UAPI socket. :meth:`run` loops until :meth:`stop` or the device goes."""

    def __init__(self, dev: Device, *, uapi_directory: str = "/var/run/wireguard",
                 listen_port: int = 0) -> None:
        self.dev = dev
        mtu = self._device_mtu() or 1420
        self.side = DeviceSide(dev, mtu=mtu)
        self.core = WireGuard(mtu=mtu, wall_offset=time.time() - time.monotonic())
        rekey = os.environ.get("SIMPLETUN_WG_REKEY_AFTER_TIME")  # a test knob: re-key sooner
        if rekey:
            self.core.rekey_after_time = float(rekey)
        load = os.environ.get("SIMPLETUN_WG_LOAD_THRESHOLD")  # handshakes/s before cookies
        if load:
            self.core.load_threshold = int(load)
        self.fwmark = 0
        self.sock = self._bind(listen_port)
        self.ep = udp.Endpoint(self.sock)
        self.uapi = UapiServer(dev.name, self, directory=uapi_directory)
        self._stopping = False
        self.stop_reason = ""
        # buffers, reused for every batch
        self._slots = [bytearray(SLOT) for _ in range(BATCH)]
        self._views = [memoryview(s) for s in self._slots]
        self._vhs = [bytearray(vnet.VNET_HDR_LEN) for _ in range(BATCH)]
        self._segs = [memoryview(bytearray(ROOM + 9216 + TAIL)) for _ in range(SEGMENT_SLOTS)]
        self._rbuf = bytearray(65536 + 64)
        self._rview = memoryview(self._rbuf)
        self._plain = bytearray(65536 + 64)
        self._plain_view = memoryview(self._plain)
        self._out: dict[Address, list[memoryview | bytes]] = {}
        # TCP super-packets only (TSO): this engine cuts TCP; UDP ones (USO) stay the
        # kernel's to segment before they reach us
        self.side.offloads &= OFFLOADS
        if self.side.vnet and self.side.offloads and not dev.tap:
            self.side.set_offloads(True)
        self._next_mtu_check = 0.0
        self._poller: select.epoll | None = None
        self._watched: set[int] = set()
        self._sock_fd = -1

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

    @property
    def listen_port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _rebind(self, port: int) -> None:
        if port == self.listen_port:
            return
        new = self._bind(port)
        self.sock.close()
        self.sock = new
        self.ep = udp.Endpoint(new)
        for peer in self.core.peers.values():  # endpoints in the new socket's form
            if peer.endpoint is not None:
                peer.endpoint = sockaddr(new, *shown(peer.endpoint))

    def _set_fwmark(self, mark: int) -> None:
        self.fwmark = mark
        self.sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)

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
        try:
            while not self._stopping:
                now = time.monotonic()
                if next_tick is not None and next_tick <= now:
                    next_tick = core.tick(now)
                    self._flush_outbox()
                if now >= self._next_mtu_check:
                    self._housekeeping(now)
                    self._sync_fds()
                wait = 1.0 if next_tick is None else min(1.0, max(0.0, next_tick - now))
                try:
                    events = poller.poll(wait)
                except InterruptedError:
                    continue
                sock_fd = self._sock_fd
                for fd, _ in events:
                    if fd == dev_fd:
                        self._from_device()
                    elif fd == sock_fd:
                        self._from_network()
                    else:
                        self.uapi.ready(fd)
                        self._flush_outbox()
                        self._sync_fds()
                next_tick = core.next_timer  # due ones fire at the top of the loop
        finally:
            poller.close()

    def _sync_fds(self) -> None:
        """Watch the socket (a new one after a rebind) and the UAPI's connections."""
        poller, watched = self._poller, self._watched
        if poller is None:
            return
        want = {self.sock.fileno(), *self.uapi.fds()}
        for fd in watched - want:
            with contextlib.suppress(OSError, ValueError):
                poller.unregister(fd)
        for fd in want - watched:
            with contextlib.suppress(OSError, ValueError):
                poller.register(fd, select.EPOLLIN)
        self._watched = want
        self._sock_fd = self.sock.fileno()

    def _housekeeping(self, now: float) -> None:
        self._next_mtu_check = now + MTU_CHECK
        mtu = self._device_mtu()
        if mtu and mtu != self.core.mtu:
            self.core.mtu = mtu
            self.side.mtu = mtu
            self.side.max_packet = mtu
        self.uapi.tick(now)

    def _queue(self, endpoint: Address, message: memoryview) -> None:
        """A sealed message for ``endpoint``, sent with the rest of the batch."""
        frames = self._out.get(endpoint)
        if frames is None:
            frames = self._out[endpoint] = []
        frames.append(message)

    def _send(self) -> None:
        out = self._out
        for address, frames in out.items():
            if len(frames) == 1:  # the common case when latency counts: no batch to build
                try:  # noqa: SIM105 (suppress() is three calls more per packet)
                    self.sock.sendto(frames[0], address)
                except OSError:  # no route now: dropped, as a network would
                    pass
            else:
                self.ep.send_batch(frames, address)  # type: ignore[arg-type]
        out.clear()

    def _flush_outbox(self) -> None:
        box = self.core.outbox
        if box:
            for msg, address in box:
                with contextlib.suppress(OSError):
                    self.sock.sendto(msg, address)
            box.clear()

    # --- device -> network ---------------------------------------------------------------
    def _from_device(self) -> None:
        side, core, views = self.side, self.core, self._views
        try:
            count = side.read_batch(views, ROOM, self._vhs if side.vnet else None)
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
        for i in range(count):
            view, size, vh = views[i], sizes[i], self._vhs[i]
            if side.vnet and (vh[0] or vh[1]):  # flags or gso_type: offloaded
                h = vnet.unpack(vh)
                packet = view[ROOM:ROOM + size]
                if h.gso_type != vnet.GSO_NONE:
                    segs_used = self._segment(packet, h.gso_size, segs_used, now)
                    continue
                finish_checksum(packet, h)
            peer = core.route(view[ROOM:ROOM + size])
            if peer is None:
                side.counters.drops["no-route"] += 1
                continue
            n = core.seal(peer, view, size, now)
            if n and peer.endpoint is not None:
                self._queue(peer.endpoint, view[:n])
        self._send()
        self._flush_outbox()

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
        core, side, plain, sock = self.core, self.side, self._plain_view, self.sock
        rbuf, rview = self._rbuf, self._rview
        for _ in range(RECEIVES):
            try:
                n, ancdata, _flags, source = sock.recvmsg_into([rbuf], 64)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # an ICMP error reported on the socket: nothing to read
                continue
            now = time.monotonic()
            gro = udp.gro_size(ancdata) if ancdata else 0
            if not gro:  # one datagram (the kernel coalesced nothing)
                size = core.open(rview[:n], source, now, plain)
                if size:
                    side.deliver_authenticated(plain[:size])
            else:
                packets: list[memoryview] = []
                at = 0
                for gram in datagram.segments(rview, n, gro):
                    size = core.open(gram, source, now, plain[at:])
                    if size:
                        packets.append(plain[at:at + size])
                        at += size
                if packets:
                    side.deliver_segments(packets)
            if core.outbox:
                self._flush_outbox()

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

    def uapi_stats(self) -> dict[str, int]:
        """Drops by reason (the network's and the device's) and cookie replies sent."""
        counts = dict(self.core.drops + self.side.counters.drops)
        counts["cookies-sent"] = self.core.cookies_sent
        return counts

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
        for ps in request.peers:
            self._set_peer(ps, now)

    def _set_peer(self, ps: PeerSet, now: float) -> None:
        core = self.core
        if ps.remove:
            core.remove_peer(ps.public_key)
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
                peer.endpoint = sockaddr(self.sock, *ps.endpoint)
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
        self.uapi.close()
        self.sock.close()
        self.core.remove_all_peers()


__all__ = ["Engine", "shown", "sockaddr"]
