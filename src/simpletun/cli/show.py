"""``simpletun show [NAME] [--json]``: every running tunnel (encrypted or not), its peers and
counters, in ``wg show``'s layout plus simpletun's lines (transport, wire, role, drops);
and ``simpletun devices``: the tun/tap devices, as ``ip tuntap show``, with who holds each.

Both read; neither changes anything. The tunnels are found by their control sockets
(:mod:`simpletun.control.status`): /var/run/wireguard (encrypted, wireguard-go's too) and
/run/simpletun (plaintext)."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any

import click

from ..control import status
from ..device import holders, isolate, link
from ..errors import ControlSocketError, SimpletunError
from ..wireguard import keys

ASK_TIMEOUT = 2.0  # seconds a tunnel has to answer


# --- formatting (pure) -------------------------------------------------------------------

def pretty_bytes(n: int) -> str:
    """As ``wg show``: "512 B", "1.50 KiB", "3.20 MiB", ... up to TiB."""
    if n < 1024:
        return f"{n} B"
    for unit, power in (("KiB", 1), ("MiB", 2), ("GiB", 3)):
        if n < 1024 ** (power + 1):
            return f"{n / 1024 ** power:.2f} {unit}"
    return f"{n / 1024 ** 4:.2f} TiB"


def pretty_time(seconds: int) -> str:
    """As ``wg show``: "1 hour, 2 minutes, 5 seconds"; "Now" for 0."""
    if seconds <= 0:
        return "Now"
    parts = []
    for unit, size in (("year", 365 * 86400), ("day", 86400), ("hour", 3600),
                       ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return ", ".join(parts)


def _ago(when: float, now: float) -> str:
    age = int(now - when)
    return "Now" if age <= 0 else f"{pretty_time(age)} ago"


def _key(key: bytes | None) -> str:
    return keys.to_base64(key) if key is not None else "(none)"


def format_tunnel(t: status.TunnelStatus, now: float) -> str:
    """One tunnel in ``wg show``'s layout, simpletun's lines after wg's."""
    out = [f"interface: {t.name}"]
    if t.public_key is not None:
        out += [f"  public key: {_key(t.public_key)}", "  private key: (hidden)"]
    if t.listen_port:
        out.append(f"  listening port: {t.listen_port}")
    if t.fwmark:
        out.append(f"  fwmark: 0x{t.fwmark:x}")
    if t.transport:
        out.append(f"  transport: {t.transport}")
    if t.wire:
        out.append(f"  wire: {t.wire}")
    if t.role:
        out.append(f"  role: {t.role}")
    if t.drops:
        out.append("  drops: " + ", ".join(f"{k} {v}" for k, v in sorted(t.drops.items())))
    for p in t.peers:
        out.append("")
        out.append(f"peer: {_key(p.public_key) if p.public_key is not None else '(plaintext)'}")
        if p.preshared_key:
            out.append("  preshared key: (hidden)")
        if p.endpoint:
            out.append(f"  endpoint: {p.endpoint}")
        if p.public_key is not None:
            out.append(f"  allowed ips: {', '.join(p.allowed_ips) or '(none)'}")
            if p.latest_handshake:
                out.append(f"  latest handshake: {_ago(p.latest_handshake, now)}")
        elif p.latest_handshake:
            out.append(f"  connected: {_ago(p.latest_handshake, now)}")
        if p.rx_bytes or p.tx_bytes:
            out.append(f"  transfer: {pretty_bytes(p.rx_bytes)} received, "
                       f"{pretty_bytes(p.tx_bytes)} sent")
        if p.rx_packets or p.tx_packets:
            out.append(f"  packets: {p.rx_packets} received, {p.tx_packets} sent")
        if p.persistent_keepalive:
            out.append(f"  persistent keepalive: every {pretty_time(p.persistent_keepalive)}")
    return "\n".join(out)


def tunnel_json(t: status.TunnelStatus) -> dict[str, Any]:
    """One tunnel for ``--json``: keys in base64, bytes and packets as numbers, times in
    seconds since the epoch (0: never)."""
    return {
        "interface": t.name, "encrypted": t.encrypted,
        "public_key": _key(t.public_key) if t.public_key is not None else None,
        "listen_port": t.listen_port, "fwmark": t.fwmark, "transport": t.transport or None,
        "wire": t.wire or None, "role": t.role or None, "drops": dict(sorted(t.drops.items())),
        "counters": dict(sorted(t.counters.items())),
        "peers": [{
            "public_key": _key(p.public_key) if p.public_key is not None else None,
            "endpoint": p.endpoint, "allowed_ips": p.allowed_ips,
            "latest_handshake": int(p.latest_handshake),
            "rx_bytes": p.rx_bytes, "tx_bytes": p.tx_bytes,
            "rx_packets": p.rx_packets, "tx_packets": p.tx_packets,
            "persistent_keepalive": p.persistent_keepalive,
            "preshared_key": p.preshared_key,
        } for p in t.peers],
    }


# --- show --------------------------------------------------------------------------------

def gather(name: str | None) -> list[status.TunnelStatus]:
    """Every running tunnel that answers (``name``: that one, which must answer:
    ControlSocketError otherwise)."""
    if name is not None:
        found = [(n, d) for n, d in status.running() if n == name]
        if not found:
            raise ControlSocketError(
                f"no tunnel {name} is running (no control socket in "
                f"{' or '.join(status.DIRECTORIES)}): 'simpletun show' lists those that are")
        tunnels: list[status.TunnelStatus] = []
        errors: list[str] = []
        for n, d in found:
            try:
                tunnels.append(status.read(n, d, timeout=ASK_TIMEOUT))
            except ControlSocketError as exc:
                errors.append(str(exc))
        if not tunnels:
            raise ControlSocketError(f"{name} does not answer: {errors[0]} (a tunnel that "
                                     "ended without removing its socket?)")
        return tunnels
    out = []
    for n, d in status.running():
        try:
            out.append(status.read(n, d, timeout=ASK_TIMEOUT))
        except ControlSocketError:
            continue  # a socket left behind: nothing runs there
    return out


@click.command("show")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True,
              help="One JSON document: a list of interfaces with their peers (bytes, "
                   "packets, seconds since the epoch).")
def show(name: str | None, as_json: bool) -> None:
    """Show running tunnels (encrypted or plaintext, NAME or all), as 'wg show' does,
    with simpletun's transport, wire and drops by reason. Nothing running: no output.

    \b
    simpletun show
    simpletun show wg0 --json
    """
    tunnels = gather(name)
    if as_json:
        click.echo(json.dumps([tunnel_json(t) for t in tunnels], indent=2))
        return
    now = time.time()
    click.echo("\n\n".join(format_tunnel(t, now) for t in tunnels) if tunnels else "",
               nl=bool(tunnels))


# --- devices -----------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceLine:
    name: str
    info: link.TunInfo


def _tun_devices() -> list[DeviceLine]:
    """Every tun/tap device in this network namespace (netlink, in a child)."""
    out = []
    for _index, name in socket.if_nameindex():
        try:
            info = link.tun_info(name)
        except SimpletunError:  # gone meanwhile: not listed
            continue
        if info is not None:
            out.append(DeviceLine(name, info))
    return out


def format_device(d: DeviceLine, held: list[holders.Holder]) -> str:
    """One line, as ``ip tuntap show`` says it, and who holds it."""
    i = d.info
    flags = ["tap" if i.tap else "tun"]
    flags += [f for f, on in (("pi", i.pi), ("multi_queue", i.multi_queue),
                              ("vnet_hdr", i.vnet_hdr), ("persist", i.persist)) if on]
    if i.owner is not None and i.owner != 0xFFFFFFFF:
        flags.append(f"user {i.owner}")
    if i.group is not None and i.group != 0xFFFFFFFF:
        flags.append(f"group {i.group}")
    lead = holders.leading(held) if held else []
    who = ", ".join(str(h) for h in lead)
    if len(held) > len(lead):  # a tunnel's workers: named through the process that started them
        more = len(held) - len(lead)
        who += f" and {more} process{'es' if more != 1 else ''} it started"
    return f"{d.name}: {' '.join(flags)}; " + (f"held by {who}" if who else "not held")


@click.command("devices")
def devices() -> None:
    """List the tun/tap devices of this network namespace, one a line, as 'ip tuntap
    show': tun or tap, pi, multi_queue, vnet_hdr, persist, user/group, and the processes
    that hold each open.

    \b
    simpletun devices
    """
    for d in isolate.in_child(_tun_devices):
        click.echo(format_device(d, holders.holders(d.name, include_self=False)))


commands: list[click.Command] = [show, devices]
