"""The classic ``simpletun -i IFACE (-s | -c SERVER) [-p PORT] [-u | -a] [-d]`` tunnel,
plus long forms and what the classic lacks (--address, --mtu, --route, --once,
--reconnect). Flags become library calls here; the work is in simpletun.tunnel."""

from __future__ import annotations

import sys
import time

import click

from .. import isolate, link, tunnel, tuntap
from ..transport import tcp
from ..wire.classic import CLASSIC_PEER_MAX
from ._common import configure, parse_addresses, sigterm_as_interrupt


def log(message: str) -> None:
    click.echo(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", err=True)


def debug_line(message: str) -> None:
    sys.stderr.write(message + "\n")


def _configure(name: str, addresses: list[link.IPInterface], mtu: int | None,
               routes: list[link.IPNetwork]) -> int:
    """Addresses, MTU, up, routes; returns the MTU. Runs in a forked child (see isolate)."""
    configure(name, addresses, mtu=mtu, up=bool(routes))
    for net in routes:
        link.add_route(net, name)
    return link.state(name).mtu


def run(*, iface: str | None, server: bool, client: str | None, port: int, tap: bool,
        debug: bool, addresses: tuple[str, ...], mtu: int | None, routes: tuple[str, ...],
        once: bool, reconnect: bool, classic_wire: bool = False, offload: bool = True) -> int:
    if not iface:
        raise click.UsageError("the interface name is required: -i IFACE")
    if server == (client is not None):
        raise click.UsageError("give exactly one of -s (server) or -c SERVER (client)")
    if once and not server:
        raise click.UsageError("--once is for the server (-s)")
    if reconnect and server:
        raise click.UsageError("--reconnect is for the client (-c)")
    wanted = parse_addresses(addresses)
    nets = [link.parse_network(r) for r in routes]
    host, port = tcp.split_host_port(client, port) if client else ("", port)
    listener = tcp.listen(port) if server else None  # fail early on a busy port
    try:
        with tuntap.open_device(iface, tap=tap, vnet_hdr=offload and not classic_wire) as dev:
            dev_mtu = isolate.in_child(lambda: _configure(dev.name, wanted, mtu, nets))
            counters = tunnel.Counters()
            pump = tunnel.Pump(dev, mtu=dev_mtu, counters=counters, log=log,
                               debug=debug_line if debug else None)
            if pump.max_packet + 2 > CLASSIC_PEER_MAX:
                log(f"note: MTU {dev_mtu} allows frames over {CLASSIC_PEER_MAX} bytes, more than "
                    "the classic C simpletun accepts; fine between two simpletun peers")
            # without vnet_hdr on the device pump.offloads is 0, and the hello leaves
            # FEATURE_VNET out by itself
            session = tunnel.Session(negotiate=not classic_wire)
            sigterm_as_interrupt()
            kind = "tap" if dev.tap else "tun"
            try:
                if listener is not None:
                    log(f"{dev.name} ({kind}, mtu {dev_mtu}): listening on TCP port {port}")
                    tunnel.serve(dev, listener, pump, once=once, session=session)
                else:
                    log(f"{dev.name} ({kind}, mtu {dev_mtu}): connecting to "
                        f"{tcp.show((host, port))}")
                    tunnel.run_client(dev, host, port, pump, reconnect=reconnect,
                                      session=session)
            except KeyboardInterrupt:
                log(f"shutting down: {counters.summary()}")
                return 0
            log(f"done: {counters.summary()}")
    finally:
        if listener is not None:
            listener.close()
    return 0
