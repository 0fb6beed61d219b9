"""The device side of a tunnel: what every tunnel loop (over a TCP stream, over datagrams)
does with the tun/tap device, in one place.

- **Batched reads** (:meth:`DeviceSide.read_batch`): up to BATCH packets, each into a
  caller's slot with room in front for its frame header, the virtio_net_hdr (on a device
  that has one) into a separate buffer or left in line, as the caller's wire wants.
- **Checked deliveries** (:meth:`DeviceSide.deliver`, :meth:`deliver_partials`): nothing
  from the network reaches the device without :func:`packets.check.check` (and
  :func:`vnet.check` for super-packets); segments of one TCP flow are merged back into one
  super-packet write (:mod:`wire.segment`). Refusals are counted by reason in
  :class:`Counters`.
- **Offload state**: what the device takes (probed once) and whether it is switched on for
  the current session.
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from zlib import crc32

from ..errors import DeviceError
from ..packets.check import check
from ..wire import segment
from . import vnet
from .tuntap import TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_USO4, TUN_F_USO6, Device

BATCH = 32  # packets read from the device per batch at most
ETH_OVERHEAD = 18  # Ethernet header + one VLAN tag on a tap device
OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
UDP_OFFLOADS = TUN_F_USO4 | TUN_F_USO6

Log = Callable[[str], None]


def probe_offloads(dev: Device) -> int:
    """The offloads ``dev`` takes (USO only where the kernel has it), left switched off."""
    if dev.vnet_hdr_size is None:
        return 0
    for flags in (OFFLOADS | UDP_OFFLOADS, OFFLOADS):
        try:
            dev.set_offload(flags)
        except DeviceError:
            continue
        dev.set_offload(0)
        return flags
    return 0


def finish_checksum(packet: memoryview, h: vnet.VnetHeader) -> None:
    """Complete the checksum the kernel left partial (NEEDS_CSUM) in ``packet``, read with
    the vnet_hdr ``h``, for a peer whose device will not complete it."""
    if h.flags & vnet.F_NEEDS_CSUM and h.csum_start + h.csum_offset + 2 <= len(packet):
        segment.complete(packet, h.csum_start, h.csum_offset)


#: why a write was refused (tuntap.Queue.write_parts names the same errnos): the interface
#: is down (someone took it down: the tunnel carries on), or the kernel refused the packet
_REFUSED = {errno.EIO: "device-down", errno.EINVAL: "rejected", errno.EMSGSIZE: "rejected",
            errno.EFAULT: "rejected"}


@dataclass
class Counters:
    to_net: int = 0  # packets (super-packets count once) device -> network
    to_dev: int = 0  # packets network -> device
    bytes_to_net: int = 0
    bytes_to_dev: int = 0
    drops: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> Counters:
        return Counters(self.to_net, self.to_dev, self.bytes_to_net, self.bytes_to_dev,
                        Counter(self.drops))

    def since(self, before: Counters) -> Counters:
        """What happened after ``before`` was taken (one session's share)."""
        return Counters(self.to_net - before.to_net, self.to_dev - before.to_dev,
                        self.bytes_to_net - before.bytes_to_net,
                        self.bytes_to_dev - before.bytes_to_dev, self.drops - before.drops)

    def summary(self) -> str:
        drops = ", ".join(f"{n} {k}" for k, n in sorted(self.drops.items()))
        return (f"{_packets(self.to_net)} sent, {self.to_dev} received"
                + (f", dropped {drops}" if drops else ""))

    def add(self, other: Counters) -> None:
        """Add ``other``'s counts to these (workers' counters into a total)."""
        self.to_net += other.to_net
        self.to_dev += other.to_dev
        self.bytes_to_net += other.bytes_to_net
        self.bytes_to_dev += other.bytes_to_dev
        self.drops.update(other.drops)


def _packets(n: int) -> str:
    return f"{n} packet" if n == 1 else f"{n} packets"


class DeviceSide:
    """One device (or one worker's queue of it) as a tunnel loop sees it."""

    def __init__(self, dev: Device, *, mtu: int, counters: Counters | None = None,
                 debug: Log | None = None, offloads: int | None = None) -> None:
        self.dev = dev
        self.mtu = mtu
        #: the largest packet a plain frame may carry: the MTU, plus Ethernet+VLAN on tap
        self.max_packet = mtu + (ETH_OVERHEAD if dev.tap else 0)
        self.counters = counters if counters is not None else Counters()
        self.debug = debug
        self.vnet = dev.vnet_hdr_size is not None
        #: what the device takes when a session agrees on offloads (0: none); they stay
        #: off until then. Workers of one device pass the parent's probe in.
        self.offloads = probe_offloads(dev) if offloads is None else offloads
        #: payload sizes of the last :meth:`read_batch`
        self.sizes = [0] * BATCH
        self.fd = dev.fileno()
        #: where writes go: ``fd``, or with :meth:`spread` the queue of the packet's flow
        self.wfd = self.fd
        self._spread: list[int] = []

    def spread(self, fds: list[int]) -> None:
        """Write each packet into one of ``fds`` (the device's queues) by its flow. The
        kernel sends a flow's packets back out of the queue it last wrote it into
        (tun's automatic flow steering), so this is what spreads the flows of one peer,
        received by one worker, over the workers that read those queues."""
        self._spread = fds

    def _pick(self, packet: bytes | memoryview) -> None:
        """The write queue for ``packet``'s flow (addresses and ports, or what stands at
        their place: any fixed function of the flow will do)."""
        fds = self._spread
        v6 = len(packet) >= 44 and packet[0] >> 4 == 6
        mixed = (crc32(packet[8:44] if v6 else packet[12:24]) * 0x9E3779B1) >> 16 & 0xFFFF
        self.wfd = fds[mixed % len(fds)]

    # --- offloads -------------------------------------------------------------------
    def set_offloads(self, on: bool) -> None:
        if self.vnet:
            self.dev.set_offload(self.offloads if on else 0)

    # --- device -> network ------------------------------------------------------------
    def read_batch(self, views: list[memoryview], room: int,
                   vnet_headers: list[bytearray] | None = None, *, framing: int = 0,
                   limit: int = BATCH) -> int:
        """Read up to ``len(views)`` packets without blocking, packet *i* into
        ``views[i][room:]``; returns how many, their sizes in :attr:`sizes`. On a device
        with vnet_hdr the header goes to ``vnet_headers[i]`` if given, else it stays in
        line in front of the packet (and counts in its size). ``framing``: the bytes the
        caller's frame header adds (for the debug lines). ``limit``: read at most so many
        (1 after a pause: no read that only finds the device empty)."""
        sizes, readv, fd = self.sizes, os.readv, self.fd  # straight to the fd: the hot path
        heads = vnet_headers if self.vnet else None
        n = 0
        limit = min(len(views), limit)
        while n < limit:
            try:
                if heads is not None:
                    size = readv(fd, (heads[n], views[n][room:])) - vnet.VNET_HDR_LEN
                else:
                    size = readv(fd, (views[n][room:],))
            except BlockingIOError:
                break
            if size > 0:
                sizes[n] = size
                n += 1
                if self.debug is not None:
                    self._debug_read(n, size, framing, vnet_headers is None)
        if n:
            inline = self.vnet and vnet_headers is None  # the header counted in the size
            self.counters.to_net += n
            self.counters.bytes_to_net += sum(sizes[:n]) - (vnet.VNET_HDR_LEN * n if inline
                                                            else 0)
        return n

    def _debug_read(self, n: int, size: int, framing: int, inline: bool) -> None:
        """The classic program's line for the ``n``-th packet of this batch."""
        assert self.debug is not None
        packet = size - vnet.VNET_HDR_LEN if self.vnet and inline else size
        self.debug(f"TAP2NET {self.counters.to_net + n}: read {packet} bytes from "
                   f"{self.dev.name}, sending {size + framing} to the network")

    def discard(self) -> None:
        """Read and drop what the device holds while there is no peer to send it to."""
        self.dev.set_blocking(False)
        while True:
            try:
                self.dev.read()
            except BlockingIOError:
                return
            self.counters.drops["no-peer"] += 1

    # --- network -> device ------------------------------------------------------------
    def deliver(self, packet: bytes | memoryview, with_vnet: bool) -> None:
        """Check one packet from the network and give it to the device."""
        counters = self.counters
        payload = packet[vnet.VNET_HDR_LEN:] if with_vnet else packet
        why = check(payload, self.dev.tap)
        if why is None and with_vnet:
            why = vnet.check(packet)
        if why is not None:
            counters.drops[why] += 1
            return
        parts = (vnet.ZERO, packet) if self.vnet and not with_vnet else (packet,)
        if not self._write(1, len(payload), *parts):
            return
        if self.debug is not None:
            self.debug(f"NET2TAP {counters.to_dev}: read {len(payload)} bytes from the "
                       f"network, wrote {len(payload)} to {self.dev.name}")

    def deliver_authenticated(self, packet: bytes | memoryview) -> None:
        """Give the device one IP packet that a WireGuard peer sealed and the core opened
        and checked (version, length within the message, source in the peer's allowed IPs;
        the kernel checks the rest of the header as it does for any packet). For latency:
        no second parse of what the AEAD already vouches for."""
        if self._spread:
            self._pick(packet)
        if self.vnet:
            self._write(1, len(packet), vnet.ZERO, packet)
        else:
            self._write(1, len(packet), packet)

    def deliver_segments(self, packets: list[memoryview]) -> None:
        """Whole IP packets (checksums complete, e.g. decrypted from WireGuard messages), in
        arrival order: TCP segments that make a super-packet again go to the device as one
        (the kernel re-sums it), the rest one by one through :meth:`deliver`."""
        if not self.vnet or self.dev.tap or len(packets) == 1:
            for p in packets:
                if self._spread:
                    self._pick(p)
                self.deliver(p, False)
            return
        for start, end in segment.runs(packets):
            run = packets[start:end]
            if self._spread:
                self._pick(run[0])
            if end - start == 1 or not all(segment.checksum_ok(p) for p in run):
                for p in run:  # one by one: the kernel checks each checksum itself
                    self.deliver(p, False)
                continue
            self._merged(run)

    def _merged(self, run: list[memoryview]) -> None:
        why = check(run[0], False)
        if why is not None:
            self.counters.drops[why] += len(run)
            return
        m = segment.merge(run)
        gso = vnet.GSO_TCPV4 if m.v4 else vnet.GSO_TCPV6
        if m.headers[m.l4 + 13] & segment.CWR:
            gso |= vnet.GSO_ECN
        vh = vnet.pack(vnet.VnetHeader(vnet.F_NEEDS_CSUM, gso, m.hlen, m.mss, m.l4, 16))
        self._write(len(run), sum(len(p) for p in run), vh, m.headers,
                    *(p[m.hlen:] for p in run))

    def _write(self, packets: int, size: int, *parts: bytes | bytearray | memoryview) -> bool:
        """Write ``parts`` to the device as one packet (or super-packet) and count it as
        ``packets`` packets of ``size`` bytes in all; a refused one (or one the device, taken
        down meanwhile, cannot take) is counted as dropped."""
        try:
            os.writev(self.wfd, parts)  # straight to the fd: the hot path
        except OSError as exc:
            why = _REFUSED.get(exc.errno or 0)
            if why is None:
                raise
            self.counters.drops[why] += packets
            return False
        self.counters.to_dev += packets
        self.counters.bytes_to_dev += size
        return True
