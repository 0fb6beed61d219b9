"""Options and set-up shared by the commands that hold a device open."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import click

from ..device import link, tuntap
from ..device.holders import held_by
from ..errors import DeviceBusy
from ..signals import STOP_SIGNALS
from ..tools import capture
from ..tools.responder import Responder


def mode_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--tap/--tun``: unset means "whatever the existing device is" (tun if new)."""
    return click.option("--tap/--tun", "tap", default=None,
                        help="Device kind; default: the existing device's, tun for a new one.")(f)


def address_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--address", "addresses", multiple=True, metavar="CIDR",
                        help="Add this address (IPv4 or IPv6 with prefix) and bring the "
                             "device up; repeatable.")(f)


def parse_addresses(values: tuple[str, ...]) -> list[link.IPInterface]:
    """Validate every address before anything is changed. On the command line the prefix
    length is required: a bare address would silently become a /32 (or /128), with no
    route to the rest of the network."""
    parsed = [link.parse_interface(v) for v in values]
    for value, iface in zip(values, parsed, strict=True):
        if "/" not in value:
            example = f"{value}/{24 if iface.version == 4 else 64}"
            raise click.BadParameter(f"{value} has no prefix length: give a prefix, "
                                     f"e.g. {example}", param_hint="--address")
    return parsed


def configure(name: str, addresses: list[link.IPInterface], *, mtu: int | None = None,
              up: bool = False) -> None:
    """Set the MTU, add ``addresses`` (those not there yet) and bring ``name`` up.

    The MTU goes first: below 1280 the kernel turns IPv6 off on the device and drops its
    IPv6 addresses, so an IPv6 address with such an MTU is refused before anything changes.
    """
    from ..errors import BadMtu

    ipv6_min = 1280  # RFC 8200; the kernel turns IPv6 off on a link with a smaller MTU
    ipv6 = [str(a) for a in addresses if a.version == 6]
    if ipv6:
        current = mtu if mtu is not None else link.state(name).mtu
        if current < ipv6_min:
            given = f"--mtu {mtu}" if mtu is not None else f"{name}'s MTU of {current}"
            raise BadMtu(f"IPv6 needs an MTU of at least {ipv6_min}: with {given} the "
                         f"kernel would drop {', '.join(ipv6)}; use --mtu {ipv6_min} or "
                         "more, or IPv4 addresses only")
    if mtu is not None:
        link.set_mtu(name, mtu)
    existing = set(link.addresses(name)) if addresses else set()
    for iface in addresses:
        if iface not in existing:
            link.add_address(name, iface)
    if up or addresses:
        link.set_up(name)


def sigterm_as_interrupt() -> None:
    """Let SIGTERM (a service manager, kill), SIGHUP (a closed terminal) and SIGQUIT
    (Ctrl-\\) stop a loop the same clean way Ctrl-C (SIGINT) does: a KeyboardInterrupt, so
    that every ``finally`` runs (what was changed is put back) and the summary is printed.
    A signal the process ignores (SIGHUP under nohup) stays ignored."""
    def handler(_signo: int, _frame: object) -> None:
        raise KeyboardInterrupt

    for signo in STOP_SIGNALS:  # SIGINT already does this, unless it is ignored
        if signal.getsignal(signo) != signal.SIG_IGN:
            signal.signal(signo, handler)


def note(message: str) -> None:
    click.echo(message, err=True)


def hold(iface: str, tap: bool | None, addresses: tuple[str, ...], *,
         command: str) -> tuntap.Device:
    """Validate ``addresses``, attach to ``iface`` (creating a temporary device, and saying
    so, if there is none), configure it, and let SIGTERM stop the caller's loop.

    A device another process holds is refused, naming it: attaching would add a queue that
    takes some of its packets. ``command`` names what the caller is for the message."""
    wanted = parse_addresses(addresses)
    busy = held_by(iface)
    if busy:
        raise DeviceBusy(f"{iface} is held by {busy}: {command} would take packets from it; "
                         f"stop that program first, or watch it with 'simpletun dump {iface}'")
    dev, created = capture.open_or_create(iface, tap)
    try:
        if created:
            note(f"{dev.name} did not exist: created a temporary {'tap' if dev.tap else 'tun'} "
                 "device; it is removed on exit")
        configure(dev.name, wanted)
    except BaseException:
        dev.close()
        raise
    sigterm_as_interrupt()
    return dev


def follow_addresses(responder: Responder, name: str) -> Callable[[], None]:
    """A refresh callback that keeps ``responder`` on the device's current addresses."""
    def refresh() -> None:
        responder.set_addresses(link.addresses(name))

    return refresh
