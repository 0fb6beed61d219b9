"""WireGuard hosts for the tests: an implementation (Debian's ``wireguard-go`` or our
``simpletun-wg``, the same command line) running in a namespace, driven with ``wg`` through
its UAPI socket, and pairs of such hosts on one switched underlay.

    with Lab("sttest") as lab, pair(lab, "wireguard-go", "simpletun-wg") as p:
        assert p.left.ns.ping(p.right.overlay4).ok
        p.transfer(p.left, p.right, 5 * MB)
        p.right.wg.show_dump().peers[0].rx_bytes

The underlay is a Linux bridge in a ``switch`` namespace that forgets every MAC address at
once (ageing time 0), so it floods every frame to every port, as a hub does: a third
namespace joined to it (:meth:`WgPair.add_host`) reaches every underlay address and sees
every packet on the wire (an attacker, a capture, a third peer of a hub).

The UAPI sockets live in /var/run/wireguard, which is NOT per network namespace: every
interface gets a name unique to this process (``wg<pid % 10000>x<n>``, see
:func:`interface_name`), and :meth:`WgInterface.stop` removes its socket.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..device import link
from ..errors import NoSuchDevice, SimpletunError
from ..packets import ethernet, ip, l4
from ..tools import pcap
from .netns import Lab, Namespace, PingResult, veth

SOCKET_DIR = "/var/run/wireguard"
IMPLEMENTATIONS = ("wireguard-go", "simpletun-wg")
#: wireguard-go's own default MTU, and what wg-quick picks on a 1500-byte underlay
DEFAULT_MTU = 1420
UNDERLAY4 = ipaddress.IPv4Network("192.0.2.0/24")
UNDERLAY6 = ipaddress.IPv6Network("fd00::/64")
OVERLAY = ("10.77.0.1/24", "fd77::1/64")
BASE_PORT = 51820
MB = 1024 * 1024

Endpoints = Literal["both", "left", "right", "none"]

_names = itertools.count()


class WgLabError(SimpletunError):
    """A WireGuard test host could not be set up (the message says what, with the log)."""


# --- the implementation and the wg tool ------------------------------------------------

def implementation_cmd(impl: str) -> list[str]:
    """The command that runs ``impl`` (before its ``-f IFACE`` arguments):
    ``wireguard-go`` from PATH; ``simpletun-wg`` from PATH, or this Python's
    ``-m simpletun.cli.wg`` when the console script is not installed."""
    if impl == "wireguard-go":
        exe = shutil.which("wireguard-go")
        if exe is None:
            raise WgLabError("wireguard-go is not installed: run scripts/setup "
                             "(apt-get install wireguard-go)")
        return [exe]
    if impl == "simpletun-wg":
        exe = shutil.which("simpletun-wg")
        return [exe] if exe else [sys.executable, "-m", "simpletun.cli.wg"]
    raise WgLabError(f"unknown WireGuard implementation {impl!r}: "
                     f"use one of {', '.join(IMPLEMENTATIONS)}")


def wg_exe() -> str:
    exe = shutil.which("wg")
    if exe is None:
        raise WgLabError("wg is not installed: run scripts/setup "
                         "(apt-get install wireguard-tools)")
    return exe


def _wg_tool(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run([wg_exe(), *args], input=stdin, capture_output=True, text=True,
                          timeout=10)
    if done.returncode != 0:
        raise WgLabError(f"wg {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def genkey() -> str:
    """A new private key, base64 (``wg genkey``)."""
    return _wg_tool("genkey")


def pubkey(private_key: str) -> str:
    """The public key of a base64 private key (``wg pubkey``)."""
    return _wg_tool("pubkey", stdin=private_key + "\n")


def genpsk() -> str:
    """A new preshared key, base64 (``wg genpsk``)."""
    return _wg_tool("genpsk")


def socket_path(name: str) -> str:
    return os.path.join(SOCKET_DIR, f"{name}.sock")


def _name_prefix() -> str:
    return f"wg{os.getpid() % 10000}x"


def interface_name() -> str:
    """``wg<pid % 10000>x<n>``: unique to this process (and at most 15 characters, IFNAMSIZ),
    skipping a name whose UAPI socket exists already (another run's)."""
    while True:
        name = f"{_name_prefix()}{next(_names)}"
        if len(name) > 15:
            raise WgLabError("ran out of WireGuard interface names in this process")
        if not os.path.exists(socket_path(name)):
            return name


# --- wg show dump ----------------------------------------------------------------------

def _opt(text: str) -> str | None:
    return None if text == "(none)" else text


def _off(text: str) -> int | None:
    """``off``, or a number: decimal (a keepalive) or ``0x``-hex (wg dumps a fwmark so)."""
    return None if text == "off" else int(text, 0)


@dataclass(frozen=True)
class DumpInterface:
    private_key: str | None
    public_key: str | None
    listen_port: int
    fwmark: int | None


@dataclass(frozen=True)
class DumpPeer:
    public_key: str
    preshared_key: str | None
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    latest_handshake: int  # UNIX seconds; 0: never
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int | None  # seconds; None: off


@dataclass(frozen=True)
class Dump:
    interface: DumpInterface
    peers: tuple[DumpPeer, ...]

    def peer(self, public_key: str) -> DumpPeer:
        for p in self.peers:
            if p.public_key == public_key:
                return p
        raise KeyError(f"no peer {public_key} in {[p.public_key for p in self.peers]}")


def parse_dump(text: str) -> Dump:
    """``wg show IFACE dump``: a tab-separated interface line (private key, public key,
    listen port, fwmark), then one line per peer (public key, preshared key, endpoint,
    allowed IPs, latest handshake, rx, tx, persistent keepalive)."""
    lines = [line.split("\t") for line in text.splitlines() if line]
    if not lines or len(lines[0]) != 4:
        raise ValueError(f"not a wg show dump: {text!r}")
    priv, pub, port, fwmark = lines[0]
    iface = DumpInterface(_opt(priv), _opt(pub), int(port), _off(fwmark))
    peers = []
    for f in lines[1:]:
        if len(f) != 8:
            raise ValueError(f"bad peer line in wg show dump: {f!r}")
        ips = () if f[3] == "(none)" else tuple(f[3].split(","))
        peers.append(DumpPeer(f[0], _opt(f[1]), _opt(f[2]), ips, int(f[4]), int(f[5]),
                              int(f[6]), _off(f[7])))
    return Dump(iface, tuple(peers))


# --- one interface ---------------------------------------------------------------------

class WgInterface:
    """A WireGuard implementation running in the foreground in ``ns`` on a fresh interface,
    its output in a log file (``log()``), configured with ``wg`` through its UAPI socket.
    ``stop()`` (or leaving the ``with`` block) kills it and removes its link and socket."""

    def __init__(self, ns: Namespace, impl: str = "wireguard-go", *, name: str | None = None,
                 private_key: str | None = None, listen_port: int | None = None,
                 env: Mapping[str, str] | None = None, timeout: float = 10.0) -> None:
        self.ns = ns
        self.impl = impl
        self.name = name or interface_name()
        self.private_key = private_key or genkey()
        self.public_key = pubkey(self.private_key)
        self.listen_port = listen_port
        self.proc: subprocess.Popen[bytes] | None = None
        fd, self.log_path = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log")
        os.close(fd)
        self._log_text: str | None = None
        try:
            self._start(env, timeout)
            self.set("private-key", "/dev/stdin", stdin=self.private_key + "\n")
            if listen_port is not None:
                self.set("listen-port", str(listen_port))
            self.listen_port = self.show_dump().interface.listen_port
        except BaseException:
            self.stop()
            raise

    def _start(self, env: Mapping[str, str] | None, timeout: float) -> None:
        cmd = [*implementation_cmd(self.impl), "-f", self.name]
        full_env = {**os.environ, **(env or {})}
        with open(self.log_path, "wb") as log:
            self.proc = self.ns.popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, env=full_env)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise WgLabError(f"{self.impl} -f {self.name} in {self.ns.name} exited with "
                                 f"status {self.proc.returncode}; it said:\n{self.log()}")
            if os.path.exists(socket_path(self.name)):
                done = self.wg("show", self.name, "dump", check=False)
                if done.returncode == 0:
                    return
            if time.monotonic() > deadline:
                raise WgLabError(f"{self.impl} -f {self.name} in {self.ns.name}: no answer on "
                                 f"{socket_path(self.name)} after {timeout:g} s; it said:\n"
                                 f"{self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        """What the implementation wrote so far (stdout and stderr)."""
        if self._log_text is not None:
            return self._log_text
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # -- wg ---------------------------------------------------------------------------

    def wg(self, *args: str, stdin: str | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``wg ARGS`` in this interface's namespace; WgLabError if it fails and
        ``check``."""
        done = self.ns.run([wg_exe(), *args], input=stdin, timeout=10)
        if check and done.returncode != 0:
            raise WgLabError(f"wg {' '.join(args)} in {self.ns.name} failed "
                             f"({done.returncode}): {done.stderr.strip()}\n"
                             f"{self.impl} said:\n{self.log()}")
        return done

    def set(self, *args: str, stdin: str | None = None) -> None:
        """``wg set IFACE ARGS`` (keys as files: pass ``/dev/stdin`` and ``stdin=``)."""
        self.wg("set", self.name, *args, stdin=stdin)

    def setconf(self, text: str) -> None:
        """``wg setconf IFACE`` with ``text`` (a wg config: [Interface] and [Peer]s)."""
        self.wg("setconf", self.name, "/dev/stdin", stdin=text)

    def add_peer(self, peer: WgInterface | str, *, allowed_ips: Sequence[str] = (),
                 endpoint: str | None = None, preshared_key: str | None = None,
                 keepalive: int | None = None) -> None:
        """``wg set IFACE peer KEY ...`` for another interface (or a public key)."""
        key = peer.public_key if isinstance(peer, WgInterface) else peer
        args = ["peer", key]
        if allowed_ips:
            args += ["allowed-ips", ",".join(allowed_ips)]
        if endpoint is not None:
            args += ["endpoint", endpoint]
        if keepalive is not None:
            args += ["persistent-keepalive", str(keepalive)]
        stdin = None
        if preshared_key is not None:
            args += ["preshared-key", "/dev/stdin"]
            stdin = preshared_key + "\n"
        self.set(*args, stdin=stdin)

    def show_dump(self) -> Dump:
        return parse_dump(self.wg("show", self.name, "dump").stdout)

    # -- the link ---------------------------------------------------------------------

    def address(self, cidr: str) -> None:
        link.add_address(self.name, cidr, netns=self.ns.name, nodad=True)

    def up(self, mtu: int = DEFAULT_MTU) -> None:
        link.set_mtu(self.name, mtu, netns=self.ns.name)
        link.set_up(self.name, netns=self.ns.name)

    # -- the end ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 3.0) -> int | None:
        """Stop the implementation (SIGTERM, then SIGKILL), delete its link if it left it,
        remove its socket and log; returns its exit status (None if it never started)."""
        status: int | None = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            status = self.proc.returncode
            with contextlib.suppress(ValueError):
                self.ns.procs.remove(self.proc)
        with contextlib.suppress(NoSuchDevice):
            if link.exists(self.name, netns=self.ns.name):
                from pyroute2 import IPRoute

                with IPRoute(netns=self.ns.name, flags=0) as ipr:
                    idx = ipr.link_lookup(ifname=self.name)
                    if idx:
                        ipr.link("del", index=idx[0])
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path(self.name))
        if self._log_text is None:
            self._log_text = self.log()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.log_path)
        return status

    def __enter__(self) -> WgInterface:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<WgInterface {self.impl} {self.name} in {self.ns.name}>"


# --- hosts on a switch -----------------------------------------------------------------

def _nth(cidr: str, n: int) -> str:
    """The ``n``-th address (1-based) of the network of ``cidr``, with its prefix."""
    iface = ipaddress.ip_interface(cidr)
    return f"{iface.network.network_address + n}/{iface.network.prefixlen}"


def _bare(cidr: str) -> str:
    return cidr.split("/")[0]


def endpoint_of(address: str, port: int) -> str:
    """``192.0.2.1:51820`` or ``[fd00::1]:51820``."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass
class WgHost:
    """One namespace on the switch: its underlay addresses (on ``eth0``) and, for a peer,
    its WireGuard interface and overlay addresses (empty for a bare host: an attacker)."""

    ns: Namespace
    index: int
    underlay4: str
    underlay6: str
    wg: WgInterface | None = None
    overlay: tuple[str, ...] = ()  # with prefixes
    dev: str = "eth0"

    @property
    def name(self) -> str:
        return self.ns.name

    @property
    def iface(self) -> WgInterface:
        if self.wg is None:
            raise WgLabError(f"{self.ns.name} has no WireGuard interface")
        return self.wg

    @property
    def overlay4(self) -> str:
        return next(_bare(a) for a in self.overlay if ":" not in a)

    @property
    def overlay6(self) -> str:
        return next(_bare(a) for a in self.overlay if ":" in a)

    def overlay_hosts(self) -> list[str]:
        """This host's overlay addresses as /32 and /128 (what a peer allows from it)."""
        return [f"{_bare(a)}/{32 if ':' not in a else 128}" for a in self.overlay]

    def underlay(self, family: int) -> str:
        return self.underlay6 if family == 6 else self.underlay4

    def endpoint(self, family: int) -> str:
        """Where its peers reach its WireGuard interface over the ``family`` underlay."""
        port = self.iface.listen_port
        assert port is not None
        return endpoint_of(self.underlay(family), port)

    def move_underlay(self, family: int, new_index: int) -> str:
        """Roam: give ``eth0`` the ``new_index``-th address of the ``family`` underlay and
        drop the old one, so what this host sends leaves from the new address; returns it."""
        net = UNDERLAY6 if family == 6 else UNDERLAY4
        old = self.underlay(family)
        new = str(net.network_address + new_index)
        if family == 4:  # else deleting the primary address deletes the new (secondary) too
            self.ns.sysctl(f"net.ipv4.conf.{self.dev}.promote_secondaries", "1")
        link.add_address(self.dev, f"{new}/{net.prefixlen}", netns=self.ns.name, nodad=True)
        link.del_address(self.dev, f"{old}/{net.prefixlen}", netns=self.ns.name)
        if family == 6:
            self.underlay6 = new
        else:
            self.underlay4 = new
        return new

    def ping(self, address: str, **kwargs: Any) -> PingResult:
        return self.ns.ping(address, **kwargs)


class Switch:
    """A ``switch`` namespace holding a bridge that floods every frame (a hub), and hosts
    joined to it by veth (``eth0`` on the host side, ``pN`` on the switch side), each with
    the N-th address of 192.0.2.0/24 and fd00::/64 (no duplicate address detection)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.ns = lab.host("switch")
        self.bridge = "br0"
        from pyroute2 import IPRoute

        with IPRoute(netns=self.ns.name, flags=0) as ipr:
            ipr.link("add", ifname=self.bridge, kind="bridge", br_ageing_time=0)
        link.set_up(self.bridge, netns=self.ns.name)
        self.hosts: list[WgHost] = []
        self._next = itertools.count(1)

    def join(self, label: str, index: int | None = None) -> WgHost:
        n = index if index is not None else next(self._next)
        ns = self.lab.host(label)
        a4 = f"{UNDERLAY4.network_address + n}/{UNDERLAY4.prefixlen}"
        a6 = f"{UNDERLAY6.network_address + n}/{UNDERLAY6.prefixlen}"
        port = f"p{n}"
        # no duplicate address detection on anything in this host (eth0's link-local
        # address, the WireGuard interface's): usable at once
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")
        veth(ns, "eth0", self.ns, port, a_addrs=[a4, a6])
        link.set_master(port, self.bridge, netns=self.ns.name)
        from pyroute2 import IPRoute

        with IPRoute(netns=self.ns.name, flags=0) as ipr:  # learn nothing: flood every frame
            ipr.brport("set", index=ipr.link_lookup(ifname=port)[0], learning=0)
        link.wait_usable("eth0", netns=ns.name)
        host = WgHost(ns, n, _bare(a4), _bare(a6))
        self.hosts.append(host)
        return host


@dataclass
class WgPair:
    """``left`` and ``right``, each with a WireGuard interface, peers of each other over a
    switched underlay (``family`` 4 or 6 for the endpoints). Leaving the ``with`` block (or
    ``close()``) stops every interface it started; the namespaces go with the Lab."""

    lab: Lab
    switch: Switch
    left: WgHost
    right: WgHost
    family: int
    overlay_base: tuple[str, ...] = OVERLAY  # left's overlay addresses; host N gets the N-th
    endpoints: Endpoints = "both"  # who was told where its peer is (the other must wait)
    extra: list[WgHost] = field(default_factory=list)

    @property
    def hosts(self) -> list[WgHost]:
        return [self.left, self.right, *self.extra]

    def add_host(self, label: str = "attacker", impl: str | None = None,
                 overlay_index: int | None = None,
                 env: Mapping[str, str] | None = None) -> WgHost:
        """A third namespace on the same switch: it reaches every underlay address and
        sees every frame on the wire. With ``impl`` it also gets a WireGuard interface
        (keys made, listen port fixed, no peers yet, ``env`` added to its environment)
        and overlay addresses number ``overlay_index`` (default: its underlay index)."""
        host = self.switch.join(label)
        self.extra.append(host)
        if impl is not None:
            n = overlay_index if overlay_index is not None else host.index
            _give_wg(host, impl, tuple(_nth(c, n) for c in self.overlay_base), env=env)
        return host

    def connect(self, a: WgHost, b: WgHost, *, endpoint: bool = True,
                preshared_key: str | None = None, keepalive: int | None = None,
                allowed_ips: Sequence[str] | None = None) -> None:
        """Make ``b`` a peer of ``a`` (one direction: call it both ways): allowed IPs
        ``b``'s overlay host addresses unless given, ``b``'s endpoint if ``endpoint``."""
        a.iface.add_peer(b.iface, allowed_ips=allowed_ips or b.overlay_hosts(),
                         endpoint=b.endpoint(self.family) if endpoint else None,
                         preshared_key=preshared_key, keepalive=keepalive)

    def dumps(self) -> tuple[Dump, Dump]:
        """``wg show dump`` of left and right."""
        return self.left.iface.show_dump(), self.right.iface.show_dump()

    def transfer(self, sender: WgHost, receiver: WgHost, size: int, *, family: int = 4,
                 port: int = 5001) -> tuple[int, str, float]:
        """Send ``size`` bytes over the tunnel to ``receiver``'s ``family`` overlay address
        (simpletun.lab.flow); returns (bytes, sha256, seconds) once the digests match."""
        target = receiver.overlay6 if family == 6 else receiver.overlay4
        return transfer(sender.ns, receiver.ns, target, size, port=port)

    def logs(self) -> str:
        """Every implementation's output, to show when a test fails."""
        return "\n".join(f"--- {h.iface.impl} {h.iface.name} ({h.name}):\n{h.iface.log()}"
                         for h in self.hosts if h.wg is not None)

    def close(self) -> None:
        for host in self.hosts:
            if host.wg is not None:
                host.wg.stop()

    def __enter__(self) -> WgPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _give_wg(host: WgHost, impl: str, overlay: tuple[str, ...],
             mtu: int = DEFAULT_MTU, env: Mapping[str, str] | None = None) -> WgInterface:
    wg = WgInterface(host.ns, impl, listen_port=BASE_PORT + host.index, env=env)
    host.wg = wg
    host.overlay = overlay
    for cidr in overlay:
        wg.address(cidr)
    wg.up(mtu)
    return wg


def pair(lab: Lab, left_impl: str = "wireguard-go", right_impl: str = "wireguard-go", *,
         underlay: Literal["4", "6"] | int = 4, overlay: Sequence[str] = OVERLAY,
         endpoints: Endpoints = "both", preshared_key: str | None = None,
         keepalive: int | None = None, mtu: int = DEFAULT_MTU,
         left_env: Mapping[str, str] | None = None,
         right_env: Mapping[str, str] | None = None) -> WgPair:
    """Hosts ``left`` and ``right`` on a switch, each running its implementation with fixed
    listen ports (51821, 51822), keys exchanged, allowed IPs each other's overlay host
    addresses, and endpoints set on ``endpoints`` ("left": only left knows where right is,
    so left initiates; "right"; "both"; "none"). ``overlay`` gives left's addresses
    (right gets the next one in each network). ``left_env``/``right_env``: extra
    environment variables for that side's implementation (test knobs). Ready to ping:
    interfaces up, no DAD."""
    family = int(underlay)
    if family not in (4, 6):
        raise WgLabError(f"underlay must be 4 or 6, not {underlay!r}")
    switch = Switch(lab)
    left = switch.join("left")
    right = switch.join("right")
    p = WgPair(lab, switch, left, right, family, overlay_base=tuple(overlay),
               endpoints=endpoints)
    try:
        _give_wg(left, left_impl, tuple(_nth(c, 1) for c in overlay), mtu, left_env)
        _give_wg(right, right_impl, tuple(_nth(c, 2) for c in overlay), mtu, right_env)
        p.connect(left, right, endpoint=endpoints in ("both", "left"),
                  preshared_key=preshared_key, keepalive=keepalive)
        p.connect(right, left, endpoint=endpoints in ("both", "right"),
                  preshared_key=preshared_key, keepalive=keepalive)
        for host in (left, right):
            link.wait_usable(host.iface.name, netns=host.ns.name)
    except BaseException:
        p.close()
        raise
    return p


# --- moving data, watching the wire -------------------------------------------------------

def transfer(sender: Namespace, receiver: Namespace, target: str, size: int, *,
             port: int = 5001, timeout: float = 120) -> tuple[int, str, float]:
    """Send ``size`` bytes from ``sender`` to ``target`` (an address of ``receiver``) with
    simpletun.lab.flow; returns (bytes, sha256, seconds) once the receiver's digest
    matched, or raises WgLabError."""
    recv = receiver.popen([sys.executable, "-m", "simpletun.lab.flow", "recv", target,
                           str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert recv.stdout is not None
        if recv.stdout.readline().strip() != "ready":
            raise WgLabError(f"the flow receiver on {target} in {receiver.name} did not start")
        sent = sender.run([sys.executable, "-m", "simpletun.lab.flow", "send", target,
                           str(port), str(size)], timeout=timeout)
        out, _ = recv.communicate(timeout=30)
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
        with contextlib.suppress(ValueError):
            receiver.procs.remove(recv)
    if sent.returncode != 0:
        raise WgLabError(f"transfer to {target} failed: {sent.stderr.strip() or sent.stdout}")
    got_size, got_digest = out.split()
    size_s, digest, seconds = sent.stdout.split()
    if (int(got_size), got_digest) != (int(size_s), digest):
        raise WgLabError(f"transfer to {target} corrupted: digests differ")
    return int(size_s), digest, float(seconds)


MESSAGE_TYPES = {1: "initiation", 2: "response", 3: "cookie", 4: "data"}


@dataclass(frozen=True)
class Datagram:
    """One UDP datagram seen on the wire."""

    time: float
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes

    @property
    def wg_type(self) -> str | None:
        """``initiation``, ``response``, ``cookie``, ``data`` (by the first byte and the
        three zero bytes after it), or None if it does not look like WireGuard."""
        p = self.payload
        if len(p) < 4 or p[1:4] != b"\0\0\0":
            return None
        return MESSAGE_TYPES.get(p[0])

    @property
    def is_keepalive(self) -> bool:
        """A transport message with an empty plaintext: 16 bytes header + 16 of tag."""
        return self.wg_type == "data" and len(self.payload) == 32


def ip_packets(records: Iterable[pcap.Record]
                ) -> Iterator[tuple[float, str, str, int, bytes]]:
    """(time, source, destination, protocol, transport bytes) of the unfragmented IPv4 and
    IPv6 packets in Ethernet capture records."""
    for rec in records:
        try:
            frame = ethernet.parse_frame(rec.data)
            body = rec.data[frame.offset:]
            if frame.ethertype == 0x0800:
                h4 = ip.parse_ipv4(body)
                if h4.frag_offset or h4.more_fragments:
                    continue
                yield (rec.timestamp, str(ipaddress.IPv4Address(h4.src)),
                       str(ipaddress.IPv4Address(h4.dst)), h4.proto,
                       bytes(body[h4.header_len:h4.total_len]))
            elif frame.ethertype == 0x86DD:
                h6 = ip.parse_ipv6(body)
                if h6.fragment:
                    continue
                yield (rec.timestamp, str(ipaddress.IPv6Address(h6.src)),
                       str(ipaddress.IPv6Address(h6.dst)), h6.proto,
                       bytes(body[h6.payload_offset:h6.total_len]))
        except Exception:  # anything odd on the wire is not ours to read
            continue


def udp_datagrams(records: Sequence[pcap.Record]) -> list[Datagram]:
    """The UDP datagrams (IPv4 or IPv6, unfragmented) in Ethernet capture records."""
    out: list[Datagram] = []
    for t, src, dst, proto, seg in ip_packets(records):
        if proto != 17:
            continue
        try:
            udp = l4.parse_udp(seg)
        except Exception:  # anything odd on the wire is not ours to read
            continue
        out.append(Datagram(t, src, dst, udp.sport, udp.dport, bytes(seg[8:udp.length])))
    return out


class Capture:
    """tcpdump on ``dev`` in ``ns`` while the ``with`` block runs (``filter``: a BPF
    expression, default every UDP datagram)::

        with Capture(host.ns, "eth0") as cap:
            time.sleep(3)
        keepalives = [d for d in cap.datagrams() if d.is_keepalive]
    """

    def __init__(self, ns: Namespace, dev: str = "eth0", filter: str = "udp") -> None:
        exe = shutil.which("tcpdump")
        if exe is None:
            raise WgLabError("tcpdump is not installed: run scripts/setup")
        self.ns = ns
        fd, self.path = tempfile.mkstemp(prefix="wgcap-", suffix=".pcap")
        os.close(fd)
        self.records: list[pcap.Record] = []
        # --immediate-mode: each packet reaches the file at once (not a block a second
        # later, lost if the capture ends first); -Z root: write the file as root
        self._proc = ns.popen([exe, "-i", dev, "-n", "-U", "--immediate-mode", "-Z", "root",
                               "-w", self.path, *filter.split()],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self._proc.stderr is not None
        said: list[str] = []
        while line := self._proc.stderr.readline():  # "listening on DEV, ..." once it captures
            said.append(line.strip())
            if "listening on" in line:
                return
        self._finish()
        raise WgLabError(f"tcpdump on {dev} in {ns.name} did not start: {' '.join(said)}")

    def _finish(self) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        with contextlib.suppress(ValueError):
            self.ns.procs.remove(self._proc)

    def stop(self) -> list[pcap.Record]:
        self._finish()
        try:
            with open(self.path, "rb") as f:
                blob = f.read()
            self.records = pcap.parse(blob).records if blob else []
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        return self.records

    def datagrams(self) -> list[Datagram]:
        return udp_datagrams(self.records)

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def capture(ns: Namespace, dev: str, seconds: float, filter: str = "udp") -> list[Datagram]:
    """The UDP datagrams seen on ``dev`` in ``ns`` during the next ``seconds``."""
    with Capture(ns, dev, filter) as cap:
        time.sleep(seconds)
    return cap.datagrams()


def our_sockets() -> list[str]:
    """The UAPI sockets in /var/run/wireguard named as this process names interfaces."""
    prefix = _name_prefix()
    try:
        names = os.listdir(SOCKET_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix) and n.endswith(".sock"))

