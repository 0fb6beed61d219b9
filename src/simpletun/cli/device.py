"""``simpletun mktun`` and ``simpletun deltun``: persistent devices, as tunctl,
``ip tuntap add|del`` and ``openvpn --mktun|--rmtun`` make them."""

from __future__ import annotations

import click

from ..device import link, tuntap
from ..device.holders import held_by, holders, leading
from ..errors import DeviceBusy, NotTap, NotTunTap, SimpletunError
from ._common import configure, parse_addresses


@click.command("mktun")
@click.argument("name")
@click.option("--tap", is_flag=True, help="Layer 2 (Ethernet frames); default tun (IP packets).")
@click.option("--user", "-u", "user", metavar="USER", help="Owner (name or uid) who may attach "
              "without CAP_NET_ADMIN.")
@click.option("--group", "-g", "group", metavar="GROUP", help="Group (name or gid) whose "
              "members may attach without CAP_NET_ADMIN.")
@click.option("--multi-queue", is_flag=True, help="Allow several queues (one fd each).")
@click.option("--pi", is_flag=True, help="Record the packet-info flag (a 4-byte header per "
              "packet for who opens it the same way).")
@click.option("--vnet-hdr", is_flag=True, help="Record the vnet_hdr flag (offloads).")
@click.option("--address", "addresses", multiple=True, metavar="CIDR",
              help="Add an IPv4 or IPv6 address with prefix; repeatable.")
@click.option("--mtu", type=click.IntRange(68, 65535),
              help="Set the MTU (tun 68..65535, tap 68..65521; 1280+ for IPv6).")
@click.option("--mac", metavar="MAC", help="Set the MAC address (tap only), e.g. "
              "02:53:54:00:00:01.")
@click.option("--up", is_flag=True, help="Bring the device up.")
def mktun(name: str, tap: bool, user: str | None, group: str | None, multi_queue: bool,
          pi: bool, vnet_hdr: bool, addresses: tuple[str, ...], mtu: int | None,
          mac: str | None, up: bool) -> None:
    """Create a persistent tun or tap device NAME (a pattern such as tun%d works too).

    It stays after this command exits, until 'simpletun deltun NAME'.
    """
    wanted = parse_addresses(addresses)
    if mac is not None:
        if not tap:
            raise NotTap("--mac needs a tap device: a tun device (layer 3) has no MAC "
                         "address; add --tap")
        mac = link.parse_mac(mac).hex(":")  # malformed or multicast: refused before creating
    uid = tuntap.resolve_user(user) if user is not None else None
    gid = tuntap.resolve_group(group) if group is not None else None
    try:
        dev = tuntap.open_device(name, tap=tap, multi_queue=multi_queue, pi=pi,
                                 vnet_hdr=vnet_hdr, exclusive=True)
    except DeviceBusy:
        raise DeviceBusy(f"{name} already exists: delete it first (simpletun deltun {name}) "
                         "or choose another name") from None
    with dev:
        try:
            if uid is not None:
                dev.set_owner(uid)
            if gid is not None:
                dev.set_group(gid)
            dev.set_persist(True)
            if mac is not None:
                link.set_mac(dev.name, mac)
            configure(dev.name, wanted, mtu=mtu, up=up)
        except SimpletunError:
            dev.set_persist(False)  # leave nothing half-made behind
            raise
        real = dev.name
    parts = [f"persistent {'tap' if tap else 'tun'}"]
    if multi_queue:
        parts.append("multi-queue")
    if mac is not None:
        parts.append(f"mac {mac}")
    parts.append(f"owner {uid if uid is not None else '-'}")
    parts.append(f"group {gid if gid is not None else '-'}")
    parts.extend(str(a) for a in wanted)
    if mtu is not None:
        parts.append(f"mtu {mtu}")
    if up or wanted:
        parts.append("up")
    click.echo(f"{real}: {', '.join(parts)}")


@click.command("deltun")
@click.argument("name")
def deltun(name: str) -> None:
    """Remove the persistent tun or tap device NAME (made by mktun, tunctl, ip tuntap...).

    A device that is not persistent belongs to the program holding it open: it goes away
    when that program exits, and deltun refuses it, naming the program.
    """
    tuntap.check_name(name, pattern_ok=False)  # a pattern such as tun%d is not a device
    st = link.state(name)
    if st.tun is None:
        what = link.describe(st)
        other = f"; remove a {what} device with: ip link del {name}" if st.kind else ""
        raise NotTunTap(f"{name} is a {what} device, not a tun/tap device: deltun removes "
                        f"only tun/tap devices{other}")
    if not st.tun.persist:
        who, many = _holders(name)
        exits = "those processes exit" if many else "that process exits"
        raise DeviceBusy(f"{name} is not persistent: it is held by {who} and goes away when "
                         f"{exits}; stop {'them' if many else 'it'} to remove the device")
    try:
        tuntap.delete(name)
    except DeviceBusy:
        who, many = _holders(name)
        raise DeviceBusy(f"{name} is in use by {who} (EBUSY): stop "
                         f"{'those processes' if many else 'that process'}, then run deltun "
                         "again") from None
    if link.exists(name):
        who, _many = _holders(name)
        click.echo(f"{name}: no longer persistent; it goes away when "
                   f"{who if who != 'another process' else 'its last user'} closes it")
    else:
        click.echo(f"{name}: deleted")


def _holders(name: str) -> tuple[str, bool]:
    """Who holds ``name`` ("pid 12 (simpletun)"), and whether they are several (a
    tunnel's workers are named through the process that started them)."""
    found = leading(holders(name))
    return held_by(name, found=found) or "another process", len(found) > 1


commands = (mktun, deltun)
