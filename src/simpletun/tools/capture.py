"""The loop behind ``simpletun dump`` and ``simpletun respond``: read packets from a device,
describe them, record them to pcap and/or answer them.

Packets enter at :meth:`Device.read_into` (or, for a device another program holds, at a
:class:`~.sniff.Sniffer`); replies leave at :meth:`Device.write`. What to say about a packet
is :mod:`describe`, what to answer is :mod:`responder`; this module only moves bytes between
them and the device.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TextIO, runtime_checkable

from ..device import tuntap
from ..device.pi import pack_pi, proto_of_ip
from ..errors import NoSuchDevice, PacketRejected
from .describe import describe
from .pcap import LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapWriter
from .responder import Responder
from .sniff import Sniffer


@dataclass
class Stats:
    read: int = 0
    answered: int = 0
    rejected: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class Source(Protocol):
    """Where packets are read from: a device queue (:class:`tuntap.Device`) or a
    :class:`Sniffer`."""

    @property
    def tap(self) -> bool: ...

    @property
    def header_len(self) -> int: ...

    def fileno(self) -> int: ...

    def read_into(self, buf: bytearray | memoryview) -> int: ...


@runtime_checkable
class Port(Source, Protocol):
    """A source that replies can be written back into: a device queue of our own."""

    @property
    def pi(self) -> bool: ...

    @property
    def vnet_hdr_size(self) -> int | None: ...

    def write(self, packet: bytes | bytearray | memoryview) -> int: ...


def linktype(tap: bool) -> int:
    return LINKTYPE_ETHERNET if tap else LINKTYPE_RAW


def open_or_create(name: str, tap: bool | None) -> tuple[tuntap.Device, bool]:
    """Attach to ``name`` (its own tun/tap kind unless ``tap`` says otherwise), or create a
    temporary device if there is none. Returns the device and whether it was created."""
    try:
        return tuntap.attach(name, tap=tap), False  # checks the name, looks the device up
    except NoSuchDevice:
        return tuntap.open_device(name, tap=bool(tap)), True


def run(
    dev: Source,
    *,
    out: TextIO | None = None,
    pcap: PcapWriter | None = None,
    responder: Responder | None = None,
    count: int | None = None,
    refresh: Callable[[], None] | None = None,
    refresh_every: float = 1.0,
    timestamps: bool = False,
) -> Stats:
    """Serve ``dev`` until ``count`` packets were read or KeyboardInterrupt (SIGINT, or
    SIGTERM turned into it by the caller). ``refresh`` is called about every
    ``refresh_every`` seconds, e.g. to pick up address changes for the responder.

    With a ``responder``, each reply is shown and recorded before it is written into
    ``dev`` (which must then be a :class:`Port`)."""
    if responder is not None and not isinstance(dev, Port):
        raise TypeError("a responder needs a device of our own to write replies into")
    stats = Stats()
    buf = bytearray(tuntap.READ_SIZE)
    view = memoryview(buf)
    fd = dev.fileno()
    skip = dev.header_len
    next_refresh = time.monotonic() + refresh_every

    sniffer = dev if isinstance(dev, Sniffer) else None

    def show(packet: bytes, stamp: float) -> None:
        if out is not None:
            line = describe(packet, tap=dev.tap)
            if sniffer is not None:
                line = f"{sniffer.direction:<3} {line}"
            if timestamps:
                line = time.strftime("%H:%M:%S", time.localtime(stamp)) + \
                    f".{int(stamp % 1 * 1e6):06d} {line}"
            out.write(line + "\n")
            out.flush()
        if pcap is not None:
            pcap.write(packet, stamp)

    try:
        while count is None or stats.read < count:
            ready, _, _ = select.select([fd], [], [], refresh_every)
            if refresh is not None and time.monotonic() >= next_refresh:
                refresh()
                next_refresh = time.monotonic() + refresh_every
            if not ready:
                continue
            n = dev.read_into(view)
            stats.read += 1
            packet = bytes(view[skip:n])
            show(packet, time.time())
            if responder is None:
                continue
            reply = responder.respond(packet)
            if reply is None:
                continue
            # shown and recorded before it is written: whoever watches the output (and the
            # pinger waiting for this reply) can never see more replies than lines
            show(reply, time.time())
            assert isinstance(dev, Port)
            try:
                dev.write(with_headers(dev, reply))
            except PacketRejected:
                stats.rejected += 1
                continue
            stats.answered += 1
    except KeyboardInterrupt:
        pass
    if responder is not None:
        stats.by_kind = dict(responder.counts)
    return stats


def with_headers(dev: Port, packet: bytes) -> bytes:
    """``packet`` with what ``dev`` expects in front of it: an empty vnet_hdr, a PI header."""
    if not dev.header_len:
        return packet
    head = bytes(dev.vnet_hdr_size or 0)
    if dev.pi:
        proto = int.from_bytes(packet[12:14], "big") if dev.tap else proto_of_ip(packet)
        head += pack_pi(proto)
    return head + packet
