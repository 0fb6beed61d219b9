"""``simpletun respond IFACE``: make every other address of the device's subnets answer
ping (and ARP / IPv6 neighbour discovery on a tap device)."""

from __future__ import annotations

import sys

import click

from ..device import link
from ..packets.ethernet import mac_str, parse_mac
from ..tools import capture
from ..tools.responder import DEFAULT_MAC, Responder
from ._common import address_option, follow_addresses, hold, mode_option, note


def _parse_mac(_ctx: click.Context, _param: click.Parameter, value: str | None) -> bytes:
    if value is None:
        return DEFAULT_MAC
    try:
        mac = parse_mac(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if mac[0] & 1:
        raise click.BadParameter(f"{value} is a multicast address; use a unicast one")
    return mac


@click.command("respond")
@click.argument("iface")
@mode_option
@address_option
@click.option("--mac", callback=_parse_mac, metavar="MAC",
              help=f"MAC to answer ARP/ND with on a tap device (default {mac_str(DEFAULT_MAC)}).")
@click.option("-c", "--count", type=click.IntRange(min=1), help="Stop after reading COUNT packets.")
@click.option("-v", "--verbose", is_flag=True, help="Print a line for every packet in and out.")
def command(iface: str, tap: bool | None, addresses: tuple[str, ...], mac: bytes,
            count: int | None, verbose: bool) -> None:
    """Answer ICMP/ICMPv6 echo requests sent into IFACE for any address of its subnets other
    than its own, so that 'ping' to them gets replies. On a tap device ARP requests and
    neighbour solicitations for those addresses are answered too. Runs until Ctrl-C.

    A missing IFACE is created for as long as this runs; give it addresses with --address.
    """
    with hold(iface, tap, addresses, command="respond") as dev:
        current = link.addresses(dev.name)
        responder = Responder(current, tap=dev.tap, mac=mac)
        if current:
            nets = ", ".join(f"{a.network} (not {a.ip})" for a in current)
            note(f"answering on {dev.name} for {nets}")
        else:
            note(f"{dev.name} has no addresses yet: nothing to answer for until one is added "
                 f"(--address CIDR)")
        stats = capture.run(dev, out=sys.stdout if verbose else None, responder=responder,
                            count=count, refresh=follow_addresses(responder, dev.name))
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(stats.by_kind.items())) or "nothing"
    note(f"{stats.read} packets read, answered {kinds}")
