"""``simpletun dump IFACE``: one decoded line per packet, optionally a pcap file."""

from __future__ import annotations

import sys

import click

from ..device import link
from ..tools import capture
from ..tools.pcap import PcapWriter
from ..tools.responder import Responder
from ._common import address_option, follow_addresses, hold, mode_option, note


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
    this runs, as the classic tunclient does.
    """
    with hold(iface, tap, addresses) as dev:
        if dev.multi_queue:
            note(f"{dev.name} is multi-queue: this queue sees only the flows steered to it")
        responder = refresh = None
        if respond:
            responder = Responder(link.addresses(dev.name), tap=dev.tap)
            refresh = follow_addresses(responder, dev.name)
        writer = PcapWriter(pcap_path, capture.linktype(dev.tap)) if pcap_path else None
        note(f"listening on {dev.name} ({'tap, Ethernet' if dev.tap else 'tun, raw IP'})")
        try:
            stats = capture.run(dev, out=sys.stdout, pcap=writer, responder=responder,
                                count=count, refresh=refresh, timestamps=timestamps)
        finally:
            if writer is not None:
                writer.close()
    summary = f"{stats.read} packets captured"
    if respond:
        summary += f", {stats.answered} answered"
    if writer is not None:
        summary += f", {writer.count} written to {pcap_path}"
    note(summary)
