"""``simpletun mktun`` and ``simpletun deltun``: persistent devices, as tunctl,
``ip tuntap add|del`` and ``openvpn --mktun|--rmtun`` make them."""

from __future__ import annotations

import click

from ..device import link, tuntap
from ..errors import DeviceBusy, SimpletunError
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
@click.option("--mtu", type=click.IntRange(68, 65535), help="Set the MTU.")
@click.option("--up", is_flag=True, help="Bring the device up.")
def mktun(name: str, tap: bool, user: str | None, group: str | None, multi_queue: bool,
          pi: bool, vnet_hdr: bool, addresses: tuple[str, ...], mtu: int | None,
          up: bool) -> None:
    """Create a persistent tun or tap device NAME (a pattern such as tun%d works too).

    It stays after this command exits, until 'simpletun deltun NAME'.
    """
    wanted = parse_addresses(addresses)
    uid = tuntap.resolve_user(user) if user is not None else None
    gid = tuntap.resolve_group(group) if group is not None else None
    with tuntap.open_device(name, tap=tap, multi_queue=multi_queue, pi=pi,
                            vnet_hdr=vnet_hdr, exclusive=True) as dev:
        try:
            if uid is not None:
                dev.set_owner(uid)
            if gid is not None:
                dev.set_group(gid)
            dev.set_persist(True)
            configure(dev.name, wanted, mtu=mtu, up=up)
        except SimpletunError:
            dev.set_persist(False)  # leave nothing half-made behind
            raise
        real = dev.name
    parts = [f"persistent {'tap' if tap else 'tun'}"]
    if multi_queue:
        parts.append("multi-queue")
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
    """Remove the persistent tun or tap device NAME (made by mktun, tunctl, ip tuntap...)."""
    tuntap.check_name(name, pattern_ok=False)
    info = link.tun_info(name)
    if info is None:
        kind = link.link_kind(name) or "non-tun"
        raise SimpletunError(f"{name} is a {kind} device, not tun/tap: remove it with ip link del")
    try:
        tuntap.delete(name)
    except DeviceBusy:
        raise DeviceBusy(
            f"{name} is in use by another process (EBUSY): stop that process, then run "
            f"deltun again"
        ) from None
    if link.exists(name):
        click.echo(f"{name}: no longer persistent; it goes away when its last user closes it")
    else:
        click.echo(f"{name}: deleted")


commands = (mktun, deltun)
