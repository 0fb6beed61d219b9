"""The classic ``simpletun -i IFACE (-s | -c SERVER) [-p PORT] [-u | -a] [-d]`` tunnel,
plus long forms and what the classic lacks (--address, --mtu, --route, --once,
--reconnect). Flags become library calls here; the work is in simpletun.tunnel."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import click

from ..device import isolate, link, tuntap
from ..device.side import OFFLOADS, DeviceSide, probe_offloads
from ..errors import DeviceMismatch
from ..transport import icmp, tcp, udp
from ..tunnel import datagram as datagram_loop
from ..tunnel import stream, workers
from ..wire import datagram, native
from ..wire import icmp as icmp_wire
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


def _pump_factory(*, mtu: int, debug: bool, offloads: int, keepalive: float,
                  peer_timeout: float) -> Callable[[tuntap.Device, str], stream.Pump]:
    """What makes the pump of a device (or of one worker's queue, its lines prefixed):
    the flags' settings, 0 seconds meaning off."""

    def make(dev: tuntap.Device, prefix: str) -> stream.Pump:
        side = DeviceSide(dev, mtu=mtu, debug=debug_line if debug else None,
                          offloads=offloads)
        return stream.Pump(side, log=(lambda m: log(prefix + m)) if prefix else log,
                           keepalive=keepalive or None, timeout=peer_timeout or None)

    return make


def _workers(requested: int | None, *, server: bool, once: bool, classic_wire: bool) -> int:
    if requested is not None and requested > 1:
        if classic_wire:
            raise click.UsageError("--workers needs the native wire: drop --classic")
        if once:
            raise click.UsageError("--workers does not go with --once")
    if requested is not None:
        return requested
    return 1 if classic_wire or once else workers.default_workers()


def _open(iface: str, *, tap: bool, vnet: bool, queues: int, auto: bool) -> tuntap.Device:
    """Open the device with ``queues`` queues; an existing single-queue device gets one
    worker when the count was not asked for."""
    try:
        return tuntap.open_device(iface, tap=tap, vnet_hdr=vnet, queues=queues)
    except DeviceMismatch:
        if queues == 1 or not auto:
            raise
    dev = tuntap.open_device(iface, tap=tap, vnet_hdr=vnet)  # tun vs tap: that error
    log(f"{iface} exists without multi-queue: running one worker (recreate it with "
        "mktun --multi-queue for more)")
    return dev


def run(*, iface: str | None, server: bool, client: str | None, port: int, tap: bool,
        debug: bool, addresses: tuple[str, ...], mtu: int | None, routes: tuple[str, ...],
        once: bool, reconnect: bool, classic_wire: bool = False, offload: bool = True,
        worker_count: int | None = None, keepalive: float = stream.KEEPALIVE_INTERVAL,
        peer_timeout: float = stream.DEAD_PEER_TIMEOUT, transport: str = "tcp") -> int:
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
    if transport != "tcp":
        return _run_datagram(iface=iface, server=server, host=host, port=port, tap=tap,
                             debug=debug, addresses=wanted, mtu=mtu, routes=nets, once=once,
                             reconnect=reconnect, classic_wire=classic_wire,
                             worker_count=worker_count, keepalive=keepalive,
                             peer_timeout=peer_timeout, transport=transport, offload=offload)
    count = _workers(worker_count, server=server, once=once, classic_wire=classic_wire)
    listener = tcp.listen(port) if server else None  # fail early on a busy port
    try:
        with _open(iface, tap=tap, vnet=offload and not classic_wire, queues=count,
                   auto=worker_count is None) as dev:
            count = len(dev.queues)
            dev_mtu = isolate.in_child(lambda: _configure(dev.name, wanted, mtu, nets))
            make_pump = _pump_factory(mtu=dev_mtu, debug=debug,
                                      offloads=probe_offloads(dev),
                                      keepalive=keepalive, peer_timeout=peer_timeout)
            pump = make_pump(dev, "")
            if pump.side.max_packet + 2 > CLASSIC_PEER_MAX:
                log(f"note: MTU {dev_mtu} allows frames over {CLASSIC_PEER_MAX} bytes, more than "
                    "the classic C simpletun accepts; fine between two simpletun peers")
            # without vnet_hdr on the device side.offloads is 0, and the hello leaves
            # FEATURE_VNET out by itself
            session = stream.Session(negotiate=not classic_wire, queues=count)
            sigterm_as_interrupt()
            kind = "tap" if dev.tap else "tun"
            how = f", {count} workers" if count > 1 else ""
            try:
                if listener is not None:
                    log(f"{dev.name} ({kind}, mtu {dev_mtu}{how}): listening on TCP port {port}")
                    if count > 1:
                        return workers.serve(dev, listener, pump, make_pump, session, log)
                    stream.serve(dev, listener, pump, once=once, session=session)
                else:
                    log(f"{dev.name} ({kind}, mtu {dev_mtu}{how}): connecting to "
                        f"{tcp.show((host, port))}")
                    if count > 1:
                        return workers.run_clients(dev, host, port, pump, make_pump, session,
                                                   reconnect=reconnect, log=log)
                    stream.run_client(dev, host, port, pump, reconnect=reconnect,
                                      session=session)
            except KeyboardInterrupt:
                if count == 1:
                    log(f"shutting down: {pump.counters.summary()}")
                return 0
            log(f"done: {pump.counters.summary()}")
    finally:
        if listener is not None:
            listener.close()
    return 0


def _run_datagram(*, iface: str, server: bool, host: str, port: int, tap: bool, debug: bool,
                  addresses: list[link.IPInterface], mtu: int | None,
                  routes: list[link.IPNetwork], once: bool, reconnect: bool,
                  classic_wire: bool, worker_count: int | None, keepalive: float,
                  peer_timeout: float, transport: str, offload: bool) -> int:
    """The tunnel over UDP or ICMP: one packet per datagram (see simpletun.tunnel.datagram)."""
    if classic_wire:
        raise click.UsageError("the classic wire is TCP only: drop --classic or use "
                               "--transport tcp")
    if worker_count is not None and worker_count > 1:
        raise click.UsageError(f"--workers is for the TCP transport; {transport} runs one")
    if once:
        raise click.UsageError(f"--once is for the TCP transport; {transport} serves one "
                               "session at a time and forgets it when it goes silent")
    endpoint: datagram_loop.Endpoint
    restore = None
    if transport == "icmp":
        if server:
            icmp_server = icmp.Server()  # fails without the privilege, before any change
            icmp_server.answer_pings, restore = icmp.quiet_kernel()
            endpoint, where = icmp_server, None
        else:
            client = icmp.Client(host)
            endpoint, where = client, client.server
        default_mtu = icmp_wire.DEFAULT_MTU
    else:
        if server:
            endpoint, where = udp.server(port), None  # fail early on a busy port
        else:
            endpoint, where = udp.client(host, port)
        default_mtu = datagram.DEFAULT_MTU
    overlay_mtu = mtu if mtu is not None else default_mtu
    listening = ("listening on ICMP echo requests (the kernel's own echo replies are off "
                 "until exit)" if transport == "icmp" else f"listening on UDP port {port}")
    try:
        # offloads (tun only): TCP super-packets in, cut into segments for the datagrams
        with tuntap.open_device(iface, tap=tap, vnet_hdr=offload and not tap) as dev:
            dev_mtu = isolate.in_child(lambda: _configure(dev.name, addresses, overlay_mtu,
                                                          routes))
            side = DeviceSide(dev, mtu=dev_mtu, debug=debug_line if debug else None,
                              offloads=probe_offloads(dev) & OFFLOADS)
            timing = {"keepalive": keepalive or None, "timeout": peer_timeout or None}
            session = stream.Session(features=native.FEATURE_KEEPALIVE | native.FEATURE_VNET)
            sigterm_as_interrupt()
            kind = "tap" if dev.tap else "tun"
            try:
                if where is None:
                    log(f"{dev.name} ({kind}, mtu {dev_mtu}): {listening}")
                    datagram_loop.serve(endpoint, side, session, log=log, **timing)
                else:
                    log(f"{dev.name} ({kind}, mtu {dev_mtu}): talking to "
                        f"{endpoint.show(where)} over {endpoint.name}")
                    datagram_loop.run_client(endpoint, where, side, session,
                                             reconnect=reconnect, log=log, **timing)
            except KeyboardInterrupt:
                log(f"shutting down: {side.counters.summary()}")
                return 0
    finally:
        endpoint.close()
        if restore is not None:
            restore()
    return 0
