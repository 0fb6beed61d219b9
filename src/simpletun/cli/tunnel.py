"""The classic ``simpletun -i IFACE (-s | -c SERVER) [-p PORT] [-u | -a] [-d]`` tunnel,
plus long forms and what the classic lacks (--address, --mtu, --route, --once,
--reconnect). Flags become library calls here; the work is in simpletun.tunnel."""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import click

from ..control import plain
from ..control.uapi import DeviceSet, PeerSet, UapiError, format_endpoint
from ..control.uapi_socket import UapiServer
from ..device import holders, isolate, link, routing, tuntap
from ..device.side import Counters, DeviceSide, probe_offloads
from ..errors import BadKey, DeviceBusy, DeviceMismatch, HandshakeFailed, SimpletunError
from ..service import logs
from ..signals import STOP_SIGNALS
from ..transport import icmp, tcp, tcp_link
from ..transport.link import Address, Link
from ..transport.tcp import TransportError
from ..tunnel import mtu as mtu_limits
from ..tunnel import stream, workers
from ..wire.classic import CLASSIC_PEER_MAX
from ..wireguard import keys as wg_keys
from ..wireguard import workers as wg_workers
from ..wireguard.engine import Engine
from ._common import configure, parse_addresses, sigterm_as_interrupt

if TYPE_CHECKING:
    from ..service.metrics import Endpoint as MetricsEndpoint


def log(message: str) -> None:
    """A status line, through :mod:`simpletun.service.logs` (levels, timestamps, journald,
    JSON); a line starting ``warning:`` is a warning, shown under ``-q`` too."""
    logs.log(message)


def debug_line(message: str) -> None:
    """A per-packet line (``-d``): written whatever ``-q``/``-v`` say, at debug level."""
    logs.emit(message, "debug")


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


def _check_mtu(mtu: int | None, transport: str, *, tap: bool, family: int | None,
               encrypted: bool = True) -> None:
    """Refuse an MTU the transport cannot carry (``family``: the underlay's IP version, None
    for a server, which may hear either: the smaller limit)."""
    if mtu is None:
        return
    families = (4, 6) if family is None else (family,)
    limit = min(mtu_limits.max_mtu(transport, tap=tap, family=f, encrypted=encrypted)
                for f in families)
    if mtu <= limit:
        return
    kind = "tap" if tap else "tun"
    if limit == mtu_limits.DEVICE_MAX[tap]:
        why = f"a {kind} device takes at most {limit}"
    else:
        over = "IPv4" if limit == mtu_limits.max_mtu(transport, tap=tap, family=4,
                                                      encrypted=encrypted) else "IPv6"
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
            routes: list[link.IPNetwork], servers: tuple[str, ...], *,
            encrypted: bool = False) -> None:
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
    if not encrypted:
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
        mac: str | None = None, key_file: str | None = None,
        peer_specs: tuple[str, ...] = (), handshake_wait: float | None = None,
        metrics: str | None = None) -> int:
    """The tunnel. ``port`` None: not given (the default port; ICMP has none). With
    ``key_file`` (and ``peer_specs``) it is encrypted, on the WireGuard engine, over any
    transport; without, the plaintext native or classic wire over TCP. ``metrics``
    (``ADDR:PORT``): serve this tunnel's Prometheus metrics there while it runs. Everything
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
    metrics_at = _metrics_address(metrics)
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
    encrypted = key_file is not None or bool(peer_specs)
    if encrypted and key_file is None:
        raise click.UsageError("--peer needs this side's private key too: --key FILE (make "
                               "one with 'simpletun genkey > FILE')")
    if not encrypted and transport != "tcp":
        raise click.UsageError(
            f"-t {transport} is encrypted only: give --key FILE (this side's private key, "
            "'simpletun genkey > FILE') and --peer KEY (the other side's public key)")
    if handshake_wait is not None and (server or not encrypted):
        raise click.UsageError("--handshake-timeout is for an encrypted client (-c with "
                               "--key)")
    if encrypted:
        _encrypted_checks(server=server, transport=transport, classic_wire=classic_wire,
                          worker_count=worker_count, once=once, tap=tap)
    _refuse_busy(iface)
    if encrypted:
        assert key_file is not None
        return run_encrypted(iface=iface, server=server, host=host, port=port, tap=tap,
                             addresses=wanted, mtu=mtu, routes=nets, reconnect=reconnect,
                             keepalive=keepalive, transport=transport, offload=offload,
                             mac=mac, key_file=key_file, peer_specs=peer_specs,
                             handshake_wait=HANDSHAKE_WAIT if handshake_wait is None
                             else handshake_wait, worker_count=worker_count or 1,
                             metrics_at=metrics_at)
    _check_mtu(mtu, transport, tap=tap, family=None, encrypted=False)
    count = _workers(worker_count, server=server, once=once, classic_wire=classic_wire)
    # the server's addresses, resolved before the device is touched (a bad name fails here)
    servers = tuple(dict.fromkeys(a[0] for _f, a in tcp.addresses(host, port))) if client \
        else ()
    listener = tcp.listen(port) if server else None  # fail early on a busy port
    configured: list[Configured] = []
    name = iface
    endpoint: MetricsEndpoint | None = None
    # from here every stop signal is a KeyboardInterrupt: the finally removes the routes
    sigterm_as_interrupt()
    try:
        endpoint = _bind_metrics(metrics_at, iface)  # a busy port fails before any change
        with contextlib.ExitStack() as stack, \
                _open(iface, tap=tap, vnet=offload and not classic_wire, queues=count,
                      auto=worker_count is None) as dev:
            count, name = len(dev.queues), dev.name
            done = _set_up(dev.name, wanted, mtu, nets, servers, mac, configured)
            dev_mtu = done.mtu
            _report(dev.name, done, wanted, nets, servers)
            make_pump = _pump_factory(mtu=dev_mtu, debug=debug,
                                      offloads=probe_offloads(dev),
                                      keepalive=keepalive, peer_timeout=peer_timeout)
            pump = make_pump(dev, "")
            # served by this process (with workers: the parent, their counts shared)
            control = _plain_control(dev.name, pump, server=listener is not None, port=port)
            stack.callback(lambda: control.close() if control is not None else None)
            pump.control = control
            forked = partial(_start_metrics, endpoint)  # no fork after it: its thread
            if count == 1:
                forked()  # (with workers: once they are forked)
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
                        return workers.serve(dev, listener, pump, make_pump, session, log,
                                             forked=forked)
                    stream.serve(dev, listener, pump, once=once, session=session)
                else:
                    log(f"{dev.name} ({kind}, mtu {dev_mtu}{how}): connecting to "
                        f"{tcp.show((host, port))}")
                    if count > 1:
                        return workers.run_clients(dev, host, port, pump, make_pump, session,
                                                   reconnect=reconnect, log=log,
                                                   forked=forked)
                    stream.run_client(dev, host, port, pump, reconnect=reconnect,
                                      session=session)
            except KeyboardInterrupt:
                if count == 1:
                    log(f"shutting down: {pump.counters.summary()}")
                return 0
            log(f"done: {pump.counters.summary()}")
    finally:
        if endpoint is not None:
            endpoint.close()
        if listener is not None:
            listener.close()
        _tear_down(name, configured)
    return 0


def _metrics_address(metrics: str | None) -> tuple[str, int] | None:
    """--metrics ADDR:PORT, checked before anything changes."""
    if metrics is None:
        return None
    from ..service import metrics as service_metrics  # prometheus_client: only when asked

    try:
        return service_metrics.parse_address(metrics)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--metrics") from None


def _bind_metrics(at: tuple[str, int] | None, name: str) -> MetricsEndpoint | None:
    """The metrics endpoint of tunnel ``name``, bound (MetricsUnavailable: one line) but
    not serving yet: its thread starts once the tunnel has forked what it forks
    (:func:`_start_metrics`)."""
    if at is None:
        return None
    from ..service import metrics as service_metrics

    return service_metrics.Endpoint(at[0], at[1], lambda: [name])


def _start_metrics(endpoint: MetricsEndpoint | None) -> None:
    if endpoint is not None and endpoint.port:
        endpoint.start()
        log(f"metrics: serving http://{format_endpoint((endpoint.host, endpoint.port))}"
            "/metrics")


def _plain_control(name: str, pump: stream.Pump, *, server: bool,
                   port: int) -> UapiServer | None:
    """The plaintext tunnel's read-only control socket (/run/simpletun/NAME.sock), served
    from the pump's loop; None (after one line) when it cannot be."""

    def connection() -> plain.Connection | None:
        now = pump.connection
        if now is None:
            return None
        peer, wire, since = now
        return plain.Connection(peer, "native" if wire.native else "classic", since)

    def counters() -> Counters:
        if pump.shared is None:
            return pump.counters
        total = pump.counters.snapshot()  # a workers' parent: its own and theirs
        total.add(pump.shared())
        return total

    handler = plain.PlainControl(role="server" if server else "client",
                                 listen_port=port if server else 0,
                                 counters=counters, connection=connection)
    return plain.serve(name, handler, log=log)


# --- the encrypted tunnel (the WireGuard engine over any transport) --------------------------
ALL_IPS = ("0.0.0.0/0", "::/0")
HANDSHAKE_WAIT = 15.0  # default: a client without --reconnect gives up without a session


@dataclass(frozen=True)
class PeerSpec:
    """One ``--peer KEY[:ALLOWED-IPS]``: the public key and its allowed IPs."""

    public: bytes
    allowed: tuple[link.IPNetwork, ...]


def read_private_key(path: str) -> bytes:
    """The private key in ``path`` (one base64 line, as 'wg genkey' writes it)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read(4096)
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}",
                                 param_hint="--key") from None
    try:
        return wg_keys.from_base64(text.strip())
    except BadKey:
        raise click.BadParameter(f"{path} holds no WireGuard private key (make one with "
                                 "'simpletun genkey > FILE')", param_hint="--key") from None


def parse_peer(spec: str) -> PeerSpec:
    """``KEY[:NET,NET...]``: KEY is a base64 public key or a file holding one (as 'wg pubkey'
    writes it); the networks (CIDR) are the addresses the peer may send from and that are
    routed to it."""
    key_text, _, nets = spec.partition(":")
    try:
        public = wg_keys.from_base64(key_text.strip())
    except BadKey:
        try:
            with open(key_text, encoding="ascii", errors="replace") as f:
                public = wg_keys.from_base64(f.read(4096).strip())
        except (OSError, BadKey):
            raise click.BadParameter(
                f"{key_text!r} is neither a public key (base64, as 'simpletun pubkey' prints "
                "it) nor a file holding one", param_hint="--peer") from None
    allowed: list[link.IPNetwork] = []
    for net in filter(None, (n.strip() for n in nets.split(","))):
        try:
            allowed.append(link.parse_network(net))
        except SimpletunError as exc:
            raise click.BadParameter(f"{spec}: {exc}", param_hint="--peer") from None
    return PeerSpec(public, tuple(allowed))


def _peer_specs(specs: tuple[str, ...], *, server: bool, tap: bool) -> list[PeerSpec]:
    peers = [parse_peer(s) for s in specs]
    if not peers:
        raise click.UsageError("an encrypted tunnel needs the other side's public key: "
                               "--peer KEY (its 'simpletun pubkey' output)")
    if not server and len(peers) > 1:
        raise click.UsageError("a client has one peer, its server: give --peer once")
    if len({p.public for p in peers}) != len(peers):
        raise click.UsageError("--peer: the same key is given twice")
    if len(peers) == 1 and not peers[0].allowed:
        return [PeerSpec(peers[0].public, tuple(link.parse_network(n) for n in ALL_IPS))]
    if not tap:
        for p in peers:
            if not p.allowed:
                raise click.UsageError(
                    f"--peer {wg_keys.to_base64(p.public)}: give the addresses it may use "
                    "(KEY:10.0.0.2/32,...): with several peers the server routes by them")
    return peers


def _encrypted_checks(*, server: bool, transport: str, classic_wire: bool,
                      worker_count: int | None, once: bool, tap: bool = False) -> None:
    if classic_wire:
        raise click.UsageError("the classic wire is plaintext: drop --classic, or drop --key "
                               "and --peer for a plaintext TCP tunnel")
    if worker_count is not None and worker_count > 1:
        if transport != "udp":
            raise click.UsageError(f"--workers with --key runs over UDP only (the {transport} "
                                   "link is one connection per peer): use -t udp, or drop "
                                   "--workers")
        if tap:
            raise click.UsageError("--workers with --key is for tun devices (a tap's switch "
                                   "learns in one process): drop -a or --workers")
        if worker_count > wg_workers.MAX_WORKERS:
            raise click.UsageError(f"--workers: at most {wg_workers.MAX_WORKERS}")
    if once:
        raise click.UsageError("--once is for the plaintext TCP wire; an encrypted server "
                               "serves its peers until stopped")


def run_encrypted(*, iface: str, server: bool, host: str, port: int, tap: bool,
                  addresses: list[link.IPInterface], mtu: int | None,
                  routes: list[link.IPNetwork], reconnect: bool, keepalive: float,
                  transport: str, offload: bool, mac: str | None, key_file: str,
                  peer_specs: tuple[str, ...], handshake_wait: float = HANDSHAKE_WAIT,
                  worker_count: int = 1, metrics_at: tuple[str, int] | None = None) -> int:
    """The tunnel on the WireGuard engine (:mod:`simpletun.wireguard.engine`) over
    ``transport``: identity by key, peers by allowed IPs (tap: by learned MACs); with
    ``worker_count`` > 1 (UDP, tun) that many processes (:mod:`simpletun.wireguard.workers`)."""
    private = read_private_key(key_file)
    peers = _peer_specs(peer_specs, server=server, tap=tap)
    own = wg_keys.public_from_private(private)
    if any(p.public == own for p in peers):
        raise click.BadParameter(f"{wg_keys.to_base64(own)} is this side's own public key "
                                 "(of --key): give the other side's", param_hint="--peer")
    # the client's server resolved (its underlay family), and the MTU checked, before
    # anything is changed
    server_ip = ""
    family = None
    if not server:
        found_family, (server_ip, _port) = tcp.addresses(host, port)[0]
        family = 6 if found_family == socket.AF_INET6 else 4
    _check_mtu(mtu, transport, tap=tap, family=family)
    link_: Link | None = None
    restore = None
    where: Address | None = None  # the client's server, in the link's form
    udp_socket: socket.socket | None = None
    if transport == "udp":  # bound now: a busy port fails before anything changes
        udp_socket = tcp.listen(port if server else 0, kind=socket.SOCK_DGRAM)
    elif transport == "tcp":
        if server:
            link_ = tcp_link.server(port)
        else:
            client = tcp_link.client(host, port)
            link_, where = client, client.server_address
    elif transport == "icmp":
        if server:
            icmp_server = icmp.Server()  # fails without the privilege, before any change
            sigterm_as_interrupt()
            icmp_server.answer_pings, restore = icmp.quiet_kernel()
            link_ = icmp_server
        else:
            icmp_client = icmp.Client(host)
            icmp_client.polling = True
            link_, where = icmp_client, icmp_client.server
    servers: tuple[str, ...] = () if server else \
        tuple(dict.fromkeys(a[0] for _f, a in tcp.addresses(host, port)))
    overlay_mtu = mtu if mtu is not None else mtu_limits.default_mtu(transport, tap=tap)
    configured: list[Configured] = []
    name = iface
    sigterm_as_interrupt()
    engine: Engine | None = None
    endpoint: MetricsEndpoint | None = None
    failed: list[bool] = []  # the client gave up waiting for a session
    try:
        endpoint = _bind_metrics(metrics_at, iface)  # a busy port fails before any change
        with _open(iface, tap=tap, vnet=offload and not tap, queues=worker_count,
                   auto=False) if worker_count > 1 else \
                tuntap.open_device(iface, tap=tap, vnet_hdr=offload and not tap) as dev:
            name = dev.name
            done = _set_up(dev.name, addresses, overlay_mtu, routes, servers, mac, configured)
            _report(dev.name, done, addresses, routes, servers, encrypted=True)
            try:
                engine = Engine(dev, link=link_, tap=tap, udp_socket=udp_socket,
                                super_packets=transport == "tcp" and offload,
                                extensions=transport == "tcp", log=log)
            except UapiError as exc:
                raise TransportError(exc.message) from None
            link_ = engine.link
            engine.role = "server" if server else "client"
            engine.core.set_private_key(private)
            now = time.monotonic()
            for p in peers:
                ps = PeerSet(public_key=p.public, allowed_ips=list(p.allowed))
                engine.uapi_set(DeviceSet(peers=[ps]))
                peer = engine.core.peers[p.public]
                if not server:
                    if where is None:  # UDP: the server in the engine socket's form
                        peer.endpoint = engine.endpoint(server_ip, port)
                    else:
                        peer.endpoint = where
                    if keepalive:
                        engine.core.set_persistent(peer, max(1, round(keepalive)), now)
            if worker_count > 1:
                wg_workers.start_engines(engine, dev, worker_count, tap=tap)
            _start_metrics(endpoint)  # after the workers' fork
            public = wg_keys.to_base64(engine.core.public or b"")
            kind = "tap" if dev.tap else "tun"
            head = f"{dev.name} ({kind}, mtu {done.mtu}, public key {public})"
            if server:
                what = ("ICMP echo requests (the kernel's own echo replies are off until "
                        "exit)" if transport == "icmp" else
                        f"{transport.upper()} port {engine.listen_port}")
                log(f"{head}: encrypted, listening on {what}, {len(peers)} "
                    f"peer{'s' if len(peers) != 1 else ''}"
                    + (f", {worker_count} workers" if worker_count > 1 else ""))
                _note_forwarding(len(peers), tap)
            else:
                target = engine.link.show(where or engine.endpoint(server_ip, port))
                log(f"{head}: encrypted, talking to {target} over {transport.upper()}")
                for peer in engine.core.peers.values():
                    engine.core.send_keepalive(peer, now)  # the handshake, at once
                engine.deadline = now + handshake_wait
                engine.on_deadline = _on_deadline(engine, target, public, reconnect,
                                                  failed, handshake_wait)
            try:
                engine.run()
            except KeyboardInterrupt:
                log(f"shutting down: {engine.summary()}")
                return 0
            if failed:
                raise HandshakeFailed(_no_session(engine, target, public, handshake_wait))
            log(f"stopped: {engine.stop_reason} ({engine.summary()})")
            if engine.companion is not None and engine.companion.lost:
                return 1  # a worker died: not a clean end
    finally:
        if endpoint is not None:
            endpoint.close()
        if engine is not None:
            engine.close()
        elif link_ is not None:
            link_.close()
        elif udp_socket is not None:
            udp_socket.close()
        if restore is not None:
            restore()
        _tear_down(name, configured)
    return 0


def _on_deadline(engine: Engine, target: str, public: str, reconnect: bool,
                 failed: list[bool], wait: float) -> Callable[[], None]:
    """What a client does when no session came up in ``wait`` seconds: give up (the caller
    raises the line), or with --reconnect say so once and go on trying."""

    def due() -> None:
        if reconnect:
            log(f"{_no_session(engine, target, public, wait, trying=True)}")
        else:
            failed.append(True)
            engine.stop("no session")

    return due


def _no_session(engine: Engine, target: str, public: str, wait: float, *,
                trying: bool = False) -> str:
    """Why a client gave up: the link never came up, or the server did not answer."""
    last_error = getattr(engine.link, "last_error", "")
    then = "still trying" if trying else "use --reconnect to keep trying"
    if last_error and not getattr(engine.link, "up", True):
        return f"cannot reach {target}: {last_error}; {then}"
    return (f"no answer to the handshake from {target} within {wait:g} s: check "
            f"that the server runs with --peer {public} (this side's public key) and that "
            f"--peer here is the server's public key; {then}")


def _note_forwarding(count: int, tap: bool) -> None:
    """Several tun peers reach each other through this host's routing: say so if it is off."""
    if count < 2 or tap:
        return
    try:
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            on = f.read().strip() == "1"
    except OSError:
        return
    if not on:
        log("note: net.ipv4.ip_forward is 0: peers reach this host but not each other; "
            "'sysctl -w net.ipv4.ip_forward=1' (and net.ipv6.conf.all.forwarding=1) routes "
            "between them by their allowed IPs")
