"""The classic ``simpletun -i IFACE (-s | -c SERVER) [-p PORT] [-u | -a] [-d]`` tunnel,
plus long forms and what the classic lacks (--address, --mtu, --route, --once,
--reconnect). Flags become library calls here; the work is in simpletun.tunnel."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import click

from ..device import holders, isolate, link, routing, tuntap
from ..device.side import OFFLOADS, DeviceSide, probe_offloads
from ..errors import DeviceBusy, DeviceMismatch, SimpletunError
from ..signals import STOP_SIGNALS
from ..transport import icmp, tcp, udp
from ..tunnel import datagram as datagram_loop
from ..tunnel import mtu as mtu_limits
from ..tunnel import stream, workers
from ..wire import datagram, native
from ..wire import icmp as icmp_wire
from ..wire.classic import CLASSIC_PEER_MAX
from ._common import configure, parse_addresses, sigterm_as_interrupt


def log(message: str) -> None:
    click.echo(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", err=True)


def debug_line(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


UNENCRYPTED = ("warning: this tunnel is not encrypted: anyone on the path can read and inject "
               "packets; use it only on trusted networks")


@dataclass(frozen=True)
class Configured:
    """What :func:`_configure` did and found."""

    mtu: int
    up: bool
    addressed: bool
    #: host routes to the server added through the underlay (removed on exit)
    kept: list[routing.HostRoute] = field(default_factory=list)
    #: the --route networks added through the device (removed on exit; not those that
    #: were there already)
    routed: list[link.IPNetwork] = field(default_factory=list)


def _configure(name: str, addresses: list[link.IPInterface], mtu: int | None,
               routes: list[link.IPNetwork], *, servers: tuple[str, ...] = (),
               mac: str | None = None) -> Configured:
    """MAC, addresses, MTU, up; then for each of ``servers`` (the client's server
    addresses) that ``routes`` cover, a host route through the underlay; then the routes.
    Runs in a forked child (see isolate)."""
    if mac is not None:
        link.set_mac(name, mac)
    configure(name, addresses, mtu=mtu, up=bool(routes))
    kept: list[routing.HostRoute] = []
    routed: list[link.IPNetwork] = []
    try:
        for server in servers:
            if routing.covering(routes, server):
                route = routing.keep_reachable(server)
                if route is not None:
                    kept.append(route)
        routed = routing.add_routes(routes, name)
    except BaseException:
        _unroute(name, Configured(0, False, False, kept, routed))
        raise
    st = link.state(name)
    return Configured(st.mtu, st.up, bool(link.addresses(name)), kept, routed)


def _unroute(name: str, done: Configured) -> None:
    """Remove what :func:`_configure` routed: the tunnel's routes first, then the host
    routes that kept the server reachable past them."""
    try:
        routing.remove_routes(done.routed, name)
    finally:
        for route in done.kept:
            routing.forget(route)


@contextlib.contextmanager
def _stops_held() -> Iterator[None]:
    """Hold the stop signals (here and in a child forked meanwhile) while routes are added
    or removed: a stop that comes meanwhile is delivered after, once what was added is
    recorded, so that the ``finally`` removes it, and a removal is never cut short."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _set_up(name: str, addresses: list[link.IPInterface], mtu: int | None,
            routes: list[link.IPNetwork], servers: tuple[str, ...],
            mac: str | None, done: list[Configured]) -> Configured:
    """:func:`_configure` in a forked child, with the stop signals held; what it did is
    appended to ``done`` before a stop can be delivered."""
    with _stops_held():
        done.append(isolate.in_child(lambda: _configure(name, addresses, mtu, routes,
                                                        servers=servers, mac=mac)))
    return done[-1]


def _tear_down(name: str, done: list[Configured]) -> None:
    """Remove the routes :func:`_set_up` added (in a forked child, stop signals held)."""
    if done and (done[0].routed or done[0].kept):
        with _stops_held():
            isolate.in_child(lambda: _unroute(name, done[0]))


def _refuse_busy(iface: str) -> None:
    """Attaching to a device another tunnel serves would add queues that take half its
    flows (or, over UDP/ICMP, fail with a misleading message): refuse, naming the holder."""
    busy = holders.held_by(iface)
    if busy:
        raise DeviceBusy(f"{iface} is already served by {busy}; stop it first or use another "
                         "device")


def _check_mtu(mtu: int | None, transport: str, *, tap: bool, family: int | None) -> None:
    """Refuse an MTU the transport cannot carry (``family``: the underlay's IP version, None
    for a server, which may hear either: the smaller limit)."""
    if mtu is None:
        return
    families = (4, 6) if family is None else (family,)
    limit = min(mtu_limits.max_mtu(transport, tap=tap, family=f) for f in families)
    if mtu <= limit:
        return
    kind = "tap" if tap else "tun"
    if limit == mtu_limits.DEVICE_MAX[tap]:
        why = f"a {kind} device takes at most {limit}"
    else:
        over = "IPv4" if limit == mtu_limits.max_mtu(transport, tap=tap, family=4) else "IPv6"
        why = (f"{transport.upper()} over {over} carries {kind} packets of at most {limit} "
               "bytes; larger ones would be lost")
    raise click.BadParameter(f"{mtu}: {why}: use --mtu {limit} or less", param_hint="--mtu")


def _server_address(client: str, port: int | None, transport: str) -> tuple[str, int | None]:
    """The client's SERVER argument as host and port; malformed is a usage error."""
    try:
        host, given = tcp.split_host_port(client, 0)
    except SimpletunError as exc:
        raise click.BadParameter(str(exc), param_hint="-c") from None
    if transport == "icmp" and given:
        raise click.BadParameter(f"{client}: ICMP has no ports: give the server's address "
                                 "alone", param_hint="-c")
    return host, given or port


def _report(name: str, done: Configured, addresses: list[link.IPInterface],
            routes: list[link.IPNetwork], servers: tuple[str, ...]) -> None:
    """One line each: overlay addresses that overlap the server's underlay address, host
    routes kept to it, a device left without address and down, and that it is unencrypted."""
    for server in servers:
        for cidr in routing.covering(addresses, server):
            log(f"warning: --address {cidr} covers the server's underlay address {server}: "
                "its packets may go into the tunnel; use another overlay network")
        covered = routing.covering(routes, server)
        for route in done.kept:
            if covered and route.address == server:
                log(f"note: --route {', '.join(covered)} covers the server {server}: it stays "
                    f"reachable through the underlay ({route}) until exit")
    if not done.up:
        what = "has no address and " if not done.addressed else ""
        log(f"{name} {what}is down: give --address CIDR (e.g. 10.0.0.1/24), or configure it "
            f"yourself (ip addr add CIDR dev {name}; ip link set {name} up)")
    log(UNENCRYPTED)


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
        if queues == 1:
            raise
        if not auto:
            info = isolate.in_child(lambda: link.tun_info(iface))
            if info is not None and not info.multi_queue and info.tap == tap:
                raise DeviceMismatch(
                    f"{iface} is a single-queue device and --workers {queues} needs one queue "
                    f"per worker: recreate it with 'simpletun deltun {iface}; simpletun mktun "
                    f"{iface} --multi-queue{' --tap' if tap else ''}', or drop --workers"
                ) from None
            raise
    dev = tuntap.open_device(iface, tap=tap, vnet_hdr=vnet)  # tun vs tap: that error
    log(f"{iface} exists without multi-queue: running one worker (recreate it with "
        "mktun --multi-queue for more)")
    return dev


def run(*, iface: str | None, server: bool, client: str | None, port: int | None, tap: bool,
        debug: bool, addresses: tuple[str, ...], mtu: int | None, routes: tuple[str, ...],
        once: bool, reconnect: bool, classic_wire: bool = False, offload: bool = True,
        worker_count: int | None = None, keepalive: float = stream.KEEPALIVE_INTERVAL,
        peer_timeout: float = stream.DEAD_PEER_TIMEOUT, transport: str = "tcp",
        mac: str | None = None) -> int:
    """The tunnel. ``port`` None: not given (the default port; ICMP has none). Everything
    the flags say is checked, and the server's name resolved, before the device is
    touched."""
    if not iface:
        raise click.UsageError("the interface name is required: -i IFACE")
    if server == (client is not None):
        raise click.UsageError("give exactly one of -s (server) or -c SERVER (client)")
    if once and not server:
        raise click.UsageError("--once is for the server (-s)")
    if reconnect and server:
        raise click.UsageError("--reconnect is for the client (-c)")
    if transport == "icmp" and port is not None:
        raise click.UsageError("-p is not used by -t icmp (ICMP has no ports): drop it")
    if mac is not None:
        if not tap:
            raise click.UsageError("--mac is for a tap device: add -a (--tap)")
        try:
            link.parse_mac(mac)
        except SimpletunError as exc:
            raise click.BadParameter(str(exc), param_hint="--mac") from None
    wanted = parse_addresses(addresses)
    nets = routing.split_default(link.parse_network(r) for r in routes)
    host, port = _server_address(client, port, transport) if client else ("", port)
    port = tcp.DEFAULT_PORT if port is None else port
    _refuse_busy(iface)
    if transport != "tcp":
        return _run_datagram(iface=iface, server=server, host=host, port=port, tap=tap,
                             debug=debug, addresses=wanted, mtu=mtu, routes=nets, once=once,
                             reconnect=reconnect, classic_wire=classic_wire,
                             worker_count=worker_count, keepalive=keepalive,
                             peer_timeout=peer_timeout, transport=transport, offload=offload,
                             mac=mac)
    _check_mtu(mtu, transport, tap=tap, family=None)
    count = _workers(worker_count, server=server, once=once, classic_wire=classic_wire)
    # the server's addresses, resolved before the device is touched (a bad name fails here)
    servers = tuple(dict.fromkeys(a[0] for _f, a in tcp.addresses(host, port))) if client \
        else ()
    listener = tcp.listen(port) if server else None  # fail early on a busy port
    configured: list[Configured] = []
    name = iface
    # from here every stop signal is a KeyboardInterrupt: the finally removes the routes
    sigterm_as_interrupt()
    try:
        with _open(iface, tap=tap, vnet=offload and not classic_wire, queues=count,
                   auto=worker_count is None) as dev:
            count, name = len(dev.queues), dev.name
            done = _set_up(dev.name, wanted, mtu, nets, servers, mac, configured)
            dev_mtu = done.mtu
            _report(dev.name, done, wanted, nets, servers)
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
        _tear_down(name, configured)
    return 0


def _run_datagram(*, iface: str, server: bool, host: str, port: int, tap: bool, debug: bool,
                  addresses: list[link.IPInterface], mtu: int | None,
                  routes: list[link.IPNetwork], once: bool, reconnect: bool,
                  classic_wire: bool, worker_count: int | None, keepalive: float,
                  peer_timeout: float, transport: str, offload: bool,
                  mac: str | None = None) -> int:
    """The tunnel over UDP or ICMP: one packet per datagram (see simpletun.tunnel.datagram)."""
    if classic_wire:
        raise click.UsageError("the classic wire is TCP only: drop --classic or use "
                               "--transport tcp")
    if worker_count is not None and worker_count > 1:
        raise click.UsageError(f"--workers is for the TCP transport; {transport} runs one")
    if once:
        raise click.UsageError(f"--once is for the TCP transport; {transport} serves one "
                               "session at a time and forgets it when it goes silent")
    if server:  # before anything is changed (the ICMP server turns echo replies off)
        _check_mtu(mtu, transport, tap=tap, family=None)
    endpoint: datagram_loop.Endpoint
    restore = None
    if transport == "icmp":
        if server:
            icmp_server = icmp.Server()  # fails without the privilege, before any change
            # from here every stop signal is a KeyboardInterrupt: the finally below (or, if
            # it comes sooner, quiet_kernel's exit hook) puts the echo settings back
            sigterm_as_interrupt()
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
    servers: tuple[str, ...] = () if where is None else (str(where[0]),)
    if where is not None:
        try:
            _check_mtu(mtu, transport, tap=tap, family=6 if ":" in str(where[0]) else 4)
        except BaseException:
            endpoint.close()
            raise
    overlay_mtu = mtu if mtu is not None else default_mtu
    configured: list[Configured] = []
    name = iface
    listening = ("listening on ICMP echo requests (the kernel's own echo replies are off "
                 "until exit)" if transport == "icmp" else f"listening on UDP port {port}")
    # from here every stop signal is a KeyboardInterrupt: the finally puts back what changed
    sigterm_as_interrupt()
    try:
        # offloads (tun only): TCP super-packets in, cut into segments for the datagrams
        with tuntap.open_device(iface, tap=tap, vnet_hdr=offload and not tap) as dev:
            name = dev.name
            done = _set_up(dev.name, addresses, overlay_mtu, routes, servers, mac, configured)
            dev_mtu = done.mtu
            _report(dev.name, done, addresses, routes, servers)
            side = DeviceSide(dev, mtu=dev_mtu, debug=debug_line if debug else None,
                              offloads=probe_offloads(dev) & OFFLOADS)
            timing = {"keepalive": keepalive or None, "timeout": peer_timeout or None}
            session = stream.Session(features=native.FEATURE_KEEPALIVE | native.FEATURE_VNET)
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
        _tear_down(name, configured)
    return 0
