"""``simpletun dump IFACE``: one decoded line per packet, optionally a pcap file."""

from __future__ import annotations

import errno
import os
import sys
from typing import BinaryIO

import click

from ..device import link, tuntap
from ..device.holders import held_by
from ..errors import DeviceBusy, DeviceMismatch, SimpletunError
from ..tools import capture
from ..tools.pcap import PcapWriter
from ..tools.responder import Responder
from ..tools.sniff import Sniffer
from ._common import (
    address_option,
    follow_addresses,
    hold,
    mode_option,
    note,
    sigterm_as_interrupt,
)


def open_pcap(path: str) -> BinaryIO:
    """Open ``path`` for the capture before anything else is done, or say in one line why
    it cannot be written and what to do."""
    try:
        return open(path, "wb")  # closed by the command
    except OSError as exc:
        where = os.path.dirname(os.path.abspath(path))
        if exc.errno == errno.ENOENT:
            why = f"the directory {where} does not exist; create it or give another path"
        elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            why = f"{(exc.strerror or 'not allowed').lower()}; give a path you can write"
        else:
            why = f"{exc.strerror or exc}; give another path"
        raise SimpletunError(f"cannot write the capture to {path}: {why}") from None


def watch(iface: str, tap: bool | None, addresses: tuple[str, ...],
          busy: str) -> Sniffer:
    """``iface`` is held by another program (``busy`` names it): capture it with a packet
    socket, as tcpdump does, instead of attaching a queue that would take its packets.
    Its device is that program's: ``addresses`` (--address) are refused, not added."""
    if addresses:
        raise DeviceBusy(f"{iface} is held by {busy}: dump only watches it and leaves its "
                         "addresses to that program; drop --address")
    sniffer = Sniffer(iface)
    try:
        if tap is not None and tap != sniffer.tap:
            have, other = ("tap", "tun") if sniffer.tap else ("tun", "tap")
            raise DeviceMismatch(f"{iface} is a {have} device, not {other}: drop --{other}")
    except BaseException:
        sniffer.close()
        raise
    note(f"{iface} is held by {busy}: watching it through a packet socket (all queues, both "
         "directions) without attaching to it")
    sigterm_as_interrupt()
    return sniffer


@click.command("dump")
@click.argument("iface")
@mode_option
@click.option("--pcap", "pcap_path", type=click.Path(dir_okay=False, writable=True),
              help="Also write the packets to this pcap file (tcpdump/Wireshark).")
@click.option("-c", "--count", type=click.IntRange(min=1), help="Stop after COUNT packets.")
@click.option("-t", "--time", "timestamps", is_flag=True, help="Prefix each line with the time.")
@click.option("--respond", is_flag=True,
              help="Also answer pings (and ARP/ND on tap) for the other addresses of the "
                   "device's subnets, as 'simpletun respond' does; replies are shown too.")
@address_option
def command(iface: str, tap: bool | None, pcap_path: str | None, count: int | None,
            timestamps: bool, respond: bool, addresses: tuple[str, ...]) -> None:
    """Attach to IFACE and print one line per packet read from it.

    If IFACE does not exist, a temporary tun (or --tap) device is created for as long as
    this runs, as the classic tunclient does. If another program (a tunnel) holds IFACE,
    it is watched the way tcpdump does, through a packet socket, and left undisturbed;
    each line then starts with In (written into the device by that program) or Out (sent
    by this host into the device, for that program to read).
    """
    out = open_pcap(pcap_path) if pcap_path else None
    try:
        busy = "" if respond else held_by(iface)
        source: tuntap.Device | Sniffer = (
            watch(iface, tap, addresses, busy) if busy
            else hold(iface, tap, addresses, command="dump --respond" if respond else "dump"))
        with source as dev:
            if isinstance(dev, tuntap.Device) and dev.multi_queue:
                note(f"{dev.name} is multi-queue: this queue sees only the flows steered to it")
            responder = refresh = None
            if respond:
                responder = Responder(link.addresses(dev.name), tap=dev.tap)
                refresh = follow_addresses(responder, dev.name)
            writer = PcapWriter(out, capture.linktype(dev.tap)) if out is not None else None
            note(f"listening on {dev.name} ({'tap, Ethernet' if dev.tap else 'tun, raw IP'})")
            stats = capture.run(dev, out=sys.stdout, pcap=writer, responder=responder,
                                count=count, refresh=refresh, timestamps=timestamps)
    finally:
        if out is not None:
            out.close()
    summary = f"{stats.read} packets captured"
    if respond:
        summary += f", {stats.answered} answered"
    if writer is not None:
        summary += f", {writer.count} written to {pcap_path}"
    note(summary)
